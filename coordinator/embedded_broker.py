"""An MQTT broker inside this process, for one-machine federations (``--broker embedded``): amqtt (a maintained
pure-Python MQTT 3.1.1 broker) on loopback, on its own asyncio loop in a daemon thread.

Loopback only and anonymous: it is for a demo or a test on one machine. A fleet uses Mosquitto with TLS and
per-edge ACLs (firmware_scripts/provision_broker.sh).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any, Self

log = logging.getLogger(__name__)


class EmbeddedBrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> Self:
        try:
            from amqtt.broker import Broker
        except ImportError as e:
            raise EmbeddedBrokerError("--broker embedded needs amqtt: pip install 'prunefl-edge[demo]' "
                                      "(or use --broker mqtt://host:1883 with Mosquitto)") from e
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                self._broker = Broker(config, loop=loop)
                await self._broker.start()

            try:
                loop.run_until_complete(boot())
            except BaseException as e:  # reported to start()
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()
            loop.close()

        for name in ("amqtt", "transitions"):  # per-packet INFO chatter
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise EmbeddedBrokerError(f"the embedded broker did not start within {timeout_s} s")
        if self._error is not None:
            raise EmbeddedBrokerError(f"the embedded broker could not start on {self.host}:{self.port}: "
                                      f"{self._error}") from self._error
        log.info("embedded MQTT broker (amqtt) listening on %s", self.url)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or self._thread is None:
            return
        if broker is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                fut.result(timeout_s)
            except Exception as e:  # shutting down anyway
                log.warning("embedded broker shutdown: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
