"""A loopback TCP relay between one MQTT client and the broker, for fault tests: it passes bytes through, delays
them (a slow link), or holds them (a network partition: nothing arrives either way, yet no connection is closed
or refused, as when a cable is pulled or a Wi-Fi link drops), and heals.

Held bytes are delivered, in order, when the partition heals, as TCP retransmission would deliver them; by then
the broker may have given up on the connection (keepalive) and the client may have reconnected, as on a real
network. Each direction of each connection has a reader thread (socket -> queue) and a writer thread (queue ->
socket, when the bytes are due and the link is up).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque


class _Direction:
    def __init__(self, proxy: TcpProxy, src: socket.socket, dst: socket.socket) -> None:
        self.proxy, self.src, self.dst = proxy, src, dst
        self.queue: deque[tuple[float, bytes | None]] = deque()  # (due time, bytes; None: end of stream)
        self.ready = threading.Condition()

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.src.recv(65536)
            except OSError:
                data = b""
            with self.ready:
                self.queue.append((time.monotonic() + self.proxy.delay_s, data or None))
                self.ready.notify_all()
            if not data:
                return

    def _write(self) -> None:
        while True:
            with self.ready:
                while not self.queue or self.proxy.partitioned or self.queue[0][0] > time.monotonic():
                    self.ready.wait(0.05)
                _, data = self.queue.popleft()
            if data is None:
                break
            try:
                self.dst.sendall(data)
            except OSError:
                break
        for s in (self.dst, self.src):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class TcpProxy:
    def __init__(self, target_port: int, delay_s: float = 0.0, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.delay_s = delay_s  # added to every chunk, each direction
        self.partitioned = False
        self.connections = 0
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.target[0]}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.connections += 1
            self._sockets += [client, upstream]
            _Direction(self, client, upstream).start()
            _Direction(self, upstream, client).start()

    def partition(self) -> None:
        self.partitioned = True

    def heal(self) -> None:
        self.partitioned = False

    def close(self) -> None:
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
