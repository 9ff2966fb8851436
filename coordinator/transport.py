"""The interface between the coordinator's round logic and the clients. No PruneFL logic lives here.

Implementations: :mod:`coordinator.transport_inproc` (simulation, tests) and :mod:`coordinator.transport_mqtt`.
The round loop only ever calls these methods; a transport decides how tasks travel and when a client
counts as available, and reports failures instead of raising for a single client's problem.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from prunefl_common.messages import Result, Task


@dataclass(frozen=True)
class ClientFailure:
    client_id: str
    round: int
    reason: str  # "timeout", "error: ...", "disconnected", "rejected: ..."
    needs_full_mask: bool = False  # the client reported a mask version it does not hold


@dataclass
class Gathered:
    results: list[Result] = field(default_factory=list)
    failures: list[ClientFailure] = field(default_factory=list)
    bytes_up: int = 0  # bytes of these results as the wire carries them
    # per client whose result is in ``results``: seconds from sending its task to its result's arrival, when the
    # transport knows (the link's share is this minus the client's reported compute time)
    round_trip_s: dict[str, float] = field(default_factory=dict)
    sent_to: list[str] = field(default_factory=list)  # the clients the tasks went to (filled by the server loop)


class Transport(ABC):
    # set (by the command line, on SIGTERM): an interruptible gather (initial pruning's long wait) returns at once,
    # its clients failed with "stopped"; a round's gather finishes as usual (its deadline bounds it)
    stop: threading.Event | None = None

    @abstractmethod
    def available_clients(self) -> list[str]:
        """Ids of the clients that can take a task now."""

    def gather_interruptible(self, client_ids: Sequence[str], round_index: int,
                             deadline_s: float | None) -> Gathered:
        """:meth:`gather` that returns as soon as :attr:`stop` is set (its clients failed with "stopped"), for
        initial pruning's long wait; a transport whose gather never blocks long needs nothing more than gather."""
        return self.gather(client_ids, round_index, deadline_s)

    def client_info(self, client_id: str) -> dict[str, Any]:
        """What a client announced about itself (``n_samples``, ``profile``, ``threads`` ...); may be empty."""
        return {}

    def comebacks(self, client_id: str) -> int:
        """How often the client came back online after being offline, as this transport saw (0 if it cannot tell):
        a client back from a partition or a restart is not judged by its record from before."""
        return 0

    @abstractmethod
    def send(self, client_id: str, task: Task) -> int:
        """Hand a task to a client; returns the bytes of the message(s) as the wire carries them. Must not block on
        training."""

    @abstractmethod
    def gather(self, client_ids: Sequence[str], round_index: int, deadline_s: float | None) -> Gathered:
        """Results of ``round_index`` from these clients, waiting at most ``deadline_s`` seconds (None: no limit).

        Late, stale or duplicate messages are not the transport's business beyond passing them on: the
        coordinator checks round and mask version. A client that did not answer in time is a failure.
        """

    def counters(self) -> dict[str, int]:
        """Messages the transport dropped so far, by why (for the metrics); empty when it drops none."""
        return {}

    def close(self) -> None:
        """Release connections and threads (nothing by default)."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
