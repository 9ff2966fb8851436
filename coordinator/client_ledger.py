"""One answer to "which mask version does this client hold?" and "did it come back from offline since the last
round?", for the mask updates and the straggler book alike.

A client back from offline (a restart, a healed partition) may hold another mask version than believed (its
state was saved before its last task, or it ran a queued task), and its deadline record from before says nothing
about it now. The transport counts each client's returns; the ledger compares that count with the one it saw at
the previous round. Counts start afresh with a restarted coordinator (and its transport): the first look at a
client is its baseline, never a return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

UNKNOWN = -1


class ClientLedger:
    def __init__(self) -> None:
        self._version: dict[str, int] = {}  # mask version each client holds (UNKNOWN: none / not sure)
        self._seen: dict[str, int] = {}  # the transport's return count of each client at the last look
        self.returned: frozenset[str] = frozenset()  # back from offline since the previous look

    def observe(self, clients: Iterable[str], comebacks: Callable[[str], int]) -> frozenset[str]:
        """Look at the clients at the start of a round (or of setup); returns (and keeps) those back since the
        last look."""
        back = set()
        for c in clients:
            n = comebacks(c)
            if c in self._seen and n > self._seen[c]:
                back.add(c)
            self._seen[c] = n
        self.returned = frozenset(back)
        return self.returned

    def version(self, client_id: str) -> int:
        return self._version.get(client_id, UNKNOWN)

    def holds(self, client_id: str, version: int) -> None:
        self._version[client_id] = version

    def forget(self, client_id: str) -> None:
        """Its mask version is not known: its next task carries the full mask."""
        self._version[client_id] = UNKNOWN
