"""A paho-mqtt 2.x client set up the way both sides of a federation need it.

* broker URLs ``mqtt://host[:1883]`` and ``mqtts://host[:8883]`` (TLS with a CA file, optionally a client
  certificate), username/password;
* MQTT 3.1.1 with a persistent session (``clean_session=False``) and QoS 1, so messages published while a side
  is reconnecting are delivered when it is back;
* automatic reconnection by paho's network thread with exponential back-off, the first connection included: the
  first retry after a random 10-100 % of ``min_backoff_s`` (so a fleet does not reconnect in step), doubling up to
  ``max_backoff_s`` (default 2 s: a broker restart of a few seconds costs a round's results at most that much;
  the coordinator bounds it by a quarter of its round deadline); subscriptions are renewed on every connection;
* an optional Last Will (the edge's "offline" status);
* TCP_NODELAY on every connection (``BrokerConfig.tcp_nodelay``).

Received messages go to the ``on_message(topic, payload)`` callback, called on paho's network thread: keep it
short (put the payload in a queue).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


class BrokerConfigError(ValueError):
    """A broker URL or TLS/credential setting that cannot work; the message says what to change."""


@dataclass(frozen=True)
class BrokerConfig:
    url: str = "mqtt://127.0.0.1:1883"
    keepalive: int = 30
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    min_backoff_s: float = 0.5
    max_backoff_s: float = 2.0
    # Nagle's algorithm off: a small packet (an ack, a status, a small result) leaves at once instead of waiting for
    # the peer's delayed ack (bench/bench_fleet.py, 10 light edges: round overhead 47 ms with Nagle, 12 ms without
    # it on the clients and in Mosquitto, whose config provision_broker.sh writes with set_tcp_nodelay)
    tcp_nodelay: bool = True

    def endpoint(self) -> tuple[str, int, bool]:
        """(host, port, tls) of the URL."""
        try:
            u = urlsplit(self.url)
            u.hostname  # noqa: B018 - parses the netloc: a bad IPv6 literal raises here
        except ValueError as e:
            raise BrokerConfigError(f"broker URL {self.url!r} cannot be parsed ({e}): use mqtt://host:port or "
                                    "mqtts://host:port, IPv6 as mqtt://[::1]:1883") from e
        if u.scheme not in ("mqtt", "mqtts"):
            raise BrokerConfigError(f"broker URL {self.url!r}: use mqtt://host:port or mqtts://host:port")
        if not u.hostname:
            raise BrokerConfigError(f"broker URL {self.url!r} names no host (e.g. mqtt://192.168.1.10:1883)")
        try:
            port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        except ValueError as e:
            raise BrokerConfigError(f"broker URL {self.url!r}: bad port ({e})") from e
        return u.hostname, port, u.scheme == "mqtts"

    def check(self) -> None:
        host, port, tls = self.endpoint()
        if self.keepalive < 5:
            raise BrokerConfigError(f"keepalive {self.keepalive} s is too short: use >= 5")
        if (self.cert_file is None) != (self.key_file is None):
            raise BrokerConfigError("cert_file and key_file go together: set both (client certificate) or neither")
        if (self.cert_file or self.ca_file) and not tls:
            raise BrokerConfigError(f"TLS files are set but the URL {self.url!r} is not mqtts://: use mqtts://")
        if self.password is not None and self.username is None:
            raise BrokerConfigError("a password without a username: set username too")
        for what in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, what)
            if path is not None:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as e:
                    raise BrokerConfigError(f"{what} {path!r} cannot be read: {e.strerror}") from e


MessageHandler = Callable[[str, bytes], None]


def _set_nodelay(client: mqtt.Client, userdata: object, sock: object) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except (OSError, AttributeError) as e:  # not a TCP socket (a test's socketpair): Nagle does not apply
        log.debug("TCP_NODELAY not set: %s", e)


class MqttClient:
    """One connection to the broker; thread-safe publish; ``connected`` is an Event."""

    def __init__(self, config: BrokerConfig, client_id: str, subscriptions: Sequence[str] = (),
                 on_message: MessageHandler | None = None, will: tuple[str, bytes] | None = None,
                 on_connect: Callable[[], None] | None = None) -> None:
        config.check()
        self.config = config
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connect_cb = on_connect
        self.connected = threading.Event()
        self.connects = 0
        self._started = False
        self._host, self._port, _ = config.endpoint()
        c = self._paho(clean_session=False)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        first = config.min_backoff_s * random.uniform(0.1, 1.0)  # jittered: a fleet does not reconnect in step
        c.reconnect_delay_set(min_delay=first, max_delay=max(first, config.max_backoff_s))
        c.max_inflight_messages_set(64)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        self._client = c

    def _paho(self, clean_session: bool) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=clean_session,
                        protocol=mqtt.MQTTv311)
        if self.config.endpoint()[2]:
            try:
                ctx = ssl.create_default_context(cafile=self.config.ca_file)
            except (ssl.SSLError, OSError) as e:
                raise BrokerConfigError(f"ca_file {self.config.ca_file}: not a usable CA certificate ({e})") from e
            if self.config.cert_file is not None:
                try:
                    ctx.load_cert_chain(self.config.cert_file, self.config.key_file)
                except (ssl.SSLError, OSError) as e:
                    raise BrokerConfigError(f"cert_file {self.config.cert_file} / key_file {self.config.key_file}: "
                                            f"not a usable certificate and key (PEM) ({e})") from e
            c.tls_set_context(ctx)
        if self.config.username is not None:
            c.username_pw_set(self.config.username, self.config.password)
        if self.config.tcp_nodelay:
            c.on_socket_open = _set_nodelay  # on every (re)connection, before CONNECT is sent
        return c

    def discard_session(self, timeout_s: float = 10.0) -> bool:
        """Drop what the broker kept for this client id (subscriptions, messages queued while it was away): one
        connection with a clean session, closed at once. For a new run that must not receive an earlier run's
        leftovers; call before :meth:`start`. Returns whether the broker was reached."""
        c = self._paho(clean_session=True)
        done = threading.Event()
        c.on_connect = lambda *_a: done.set()
        try:
            c.connect(self._host, self._port, keepalive=self.config.keepalive)
        except (OSError, ValueError) as e:
            log.warning("could not clear the session of %s: %s", self.client_id, e)
            return False
        c.loop_start()
        try:
            return done.wait(timeout_s)
        finally:
            c.disconnect()
            c.loop_stop()

    # ---- paho callbacks (network thread) ---------------------------------------------------------------
    def _handle_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                        reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%d refused %s: %s", self._host, self._port, self.client_id, reason_code)
            return
        self.connects += 1
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        log.info("connected to %s:%d as %s (session present: %s)", self._host, self._port, self.client_id,
                 flags.session_present)
        self.connected.set()
        if self._on_connect_cb is not None:
            self._on_connect_cb()

    def _handle_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                           reason_code: mqtt.ReasonCode, properties: object) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and self._started:
            log.warning("disconnected from %s:%d (%s); reconnecting with back-off", self._host, self._port,
                        reason_code)

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(msg.topic, bytes(msg.payload))
        except Exception:  # a handler bug must not kill paho's network thread
            log.exception("handler failed on a message for %s", msg.topic)

    # ---- use ------------------------------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> bool:
        """Connect in the background (retrying with back-off); with ``wait_s``, wait that long for the first
        connection and return whether it came."""
        if not self._started:
            self._client.connect_async(self._host, self._port, keepalive=self.config.keepalive)
            self._client.loop_start()
            self._started = True
        return self.connected.wait(wait_s) if wait_s is not None else self.connected.is_set()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Queue a QoS-1 message; paho delivers it (again after a reconnect) until the broker acknowledges."""
        return self._client.publish(topic, payload, qos=1, retain=retain)

    def stop(self, final: tuple[str, bytes] | None = None, timeout_s: float = 5.0) -> None:
        """Publish ``final`` (retained; e.g. an "offline" status) if connected, then disconnect cleanly."""
        if not self._started:
            return
        if final is not None and self.connected.is_set():
            info = self._client.publish(final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
