"""A real Mosquitto broker for tests: started on a free loopback port in a temporary directory, stopped after.

Two ways to use it::

    from mosquitto_util import running_mosquitto

    with running_mosquitto(tmp_path) as broker:            # anonymous plain listener on 127.0.0.1:<free port>
        client.connect(broker.host, broker.port)

    with running_mosquitto(tmp_path, config=lambda port: f"listener {port} 127.0.0.1\\nallow_anonymous true\\n"):
        ...                                                # your own listeners / TLS / ACLs

or, in a pytest module, the factory fixture (every broker it starts is stopped at teardown)::

    from mosquitto_util import mosquitto  # noqa: F401  (re-exported fixture)

    def test_x(mosquitto):
        broker = mosquitto()                               # or mosquitto(config=..., name="b2")
        broker.restart()                                   # same port, same persistence directory

``config`` is either a string (used as is: it must open ``port=...`` given to ``running_mosquitto``) or a callable
``port -> str``; with a callable, the port is chosen here and a port lost to a race is retried. The helper appends
``log_dest file``, ``persistence_location`` (persistence itself stays off unless the config turns it on) and, when
the tests run as root, ``user root`` (Mosquitto would otherwise drop to the ``mosquitto`` user, which cannot read a
pytest tmp directory). A broker that does not come up raises ``MosquittoError`` with its log. A missing
``mosquitto`` binary raises ``MosquittoMissing``: tests fail, they never skip, when the broker is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ConfigSpec = str | Callable[[int], str] | None

__all__ = ["Broker", "MosquittoError", "MosquittoMissing", "find_mosquitto", "free_port", "mosquitto",
           "running_mosquitto"]


class MosquittoError(RuntimeError):
    """The broker did not start or stop as asked; the message carries its log."""


class MosquittoMissing(MosquittoError):
    """The ``mosquitto`` binary is not installed."""


def find_mosquitto() -> str:
    """Path of the ``mosquitto`` binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                              if os.access(p, os.X_OK)), None)
    if not found:
        raise MosquittoMissing("mosquitto is not installed: run `make deps` (as root) or "
                               "`sudo apt-get install mosquitto mosquitto-clients`")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the caller binds it soon after; races are retried by callers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _default_config(port: int) -> str:
    return f"listener {port} 127.0.0.1\nallow_anonymous true\n"


@dataclass
class Broker:
    """A running Mosquitto. ``host``/``port`` is its (first) listener; paths point into ``workdir``."""

    host: str
    port: int
    workdir: Path
    config_path: Path
    log_path: Path
    start_timeout: float = 10.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen([find_mosquitto(), "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.workdir,
                                        start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MosquittoError(f"mosquitto exited with status {self.process.returncode} at start:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise MosquittoError(f"mosquitto did not listen on {self.host}:{self.port} within {self.start_timeout}s:\n"
                             f"{self.log()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Safe to call twice."""
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)

    def kill(self) -> None:
        """Abrupt death (SIGKILL): for tests of clients surviving a broker crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5.0)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files (what `systemctl reload mosquitto` does)."""
        if self.process is None or self.process.poll() is not None:
            raise MosquittoError("reload: the broker is not running")
        self.process.send_signal(signal.SIGHUP)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def _write_config(workdir: Path, body: str) -> tuple[Path, Path]:
    log_path = workdir / "mosquitto.log"
    persist = workdir / "persistence"
    persist.mkdir(exist_ok=True)
    lines = [body.rstrip("\n"), "", "# added by tests/mosquitto_util.py", f"log_dest file {log_path}",
             "log_type all", "connection_messages true", f"persistence_location {persist}/"]
    if not any(line.strip().startswith("persistence ") for line in body.splitlines()):
        lines.append("persistence false")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")
    config_path = workdir / "mosquitto.conf"
    config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config_path, log_path


@contextlib.contextmanager
def running_mosquitto(workdir: Path | str, config: ConfigSpec = None, *, port: int | None = None,
                      host: str = "127.0.0.1", start_timeout: float = 10.0, attempts: int = 3) -> Iterator[Broker]:
    """Start Mosquitto with ``config`` in ``workdir`` (created if needed); yield a ``Broker``; stop it on exit."""
    find_mosquitto()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(config, str) and port is None:
        raise ValueError("a config given as text must come with the port it listens on (or pass a callable)")
    make = config if callable(config) else (lambda _p: config) if isinstance(config, str) else _default_config
    broker: Broker | None = None
    for attempt in range(attempts if port is None else 1):
        p = port if port is not None else free_port(host)
        config_path, log_path = _write_config(workdir, make(p))
        broker = Broker(host, p, workdir, config_path, log_path, start_timeout)
        try:
            broker.start()
            break
        except MosquittoError:
            in_use = "Address already in use" in broker.log()
            if not in_use or attempt == attempts - 1 or port is not None:
                raise
            log_path.unlink(missing_ok=True)
    assert broker is not None
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory fixture: ``mosquitto(config=None, port=None, name="broker") -> Broker``; all are stopped after."""
    with contextlib.ExitStack() as stack:
        def start(config: ConfigSpec = None, *, port: int | None = None, name: str = "broker", **kw) -> Broker:
            return stack.enter_context(running_mosquitto(tmp_path / name, config, port=port, **kw))

        yield start
