"""In-process transport: clients are :class:`prunefl_edge.trainer.Trainer` objects in this process.

Tasks run one after another inside :meth:`gather` (deterministic order: by client id), so a seeded simulation
is reproducible bit for bit. Objects are handed over as they are, but every byte count is that of the message the
wire would carry (:func:`~prunefl_common.protocol.codec.task_nbytes` / ``result_nbytes``: the encoder's own
layout, without building the bytes). The one field of a result that is not reproducible, its measured
``compute_s``, is counted at its longest decimal form (:data:`COUNTED_COMPUTE_S`, 19 characters), so that seeded
runs count the same bytes. ``fail`` lets tests make a client miss a round.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from coordinator.transport import ClientFailure, Gathered, Transport
from prunefl_common.messages import Task
from prunefl_common.protocol.codec import result_nbytes, task_nbytes
from prunefl_edge.trainer import MaskVersionError, TaskError, Trainer

log = logging.getLogger(__name__)

COUNTED_COMPUTE_S = 0.12345678901234568  # a float whose JSON form is as long as a compute time's can be


class InProcTransport(Transport):
    def __init__(self, trainers: Sequence[Trainer], fail: Callable[[str, int], bool] | None = None,
                 sizes: dict[int, int] | None = None, federation: str = "sim", sender: str = "coordinator") -> None:
        """``sizes``: parameter -> number of weights, as the MQTT transport gives the encoder (mask changes)."""
        self.trainers = {t.client_id: t for t in trainers}
        self.sizes, self.federation, self.sender = sizes, federation, sender
        if len(self.trainers) != len(trainers):
            raise ValueError("client ids must be unique")
        self._pending: dict[str, Task] = {}
        self._fail = fail

    def available_clients(self) -> list[str]:
        return sorted(self.trainers)

    def client_info(self, client_id: str) -> dict[str, Any]:
        return {"n_samples": self.trainers[client_id].n_samples}

    def send(self, client_id: str, task: Task) -> int:
        if client_id not in self.trainers:
            raise KeyError(f"unknown client {client_id!r}")
        self._pending[client_id] = task
        return task_nbytes(task, federation=self.federation, sender=self.sender, sizes=self.sizes)

    def gather(self, client_ids: Sequence[str], round_index: int, deadline_s: float | None) -> Gathered:
        out = Gathered()
        for cid in sorted(client_ids):
            task = self._pending.pop(cid, None)
            if task is None:
                out.failures.append(ClientFailure(cid, round_index, "no task sent"))
                continue
            if self._fail is not None and self._fail(cid, round_index):
                out.failures.append(ClientFailure(cid, round_index, "timeout"))
                continue
            try:
                res = self.trainers[cid].execute(task)
                out.results.append(res)
                out.bytes_up += result_nbytes(dataclasses.replace(res, compute_s=COUNTED_COMPUTE_S),
                                              federation=self.federation, sender=cid)
            except MaskVersionError as e:
                out.failures.append(ClientFailure(cid, round_index, f"rejected: {e}", needs_full_mask=True))
            except TaskError as e:
                log.warning("client %s failed round %d: %s", cid, round_index, e)
                out.failures.append(ClientFailure(cid, round_index, f"error: {e}"))
        return out

    def close(self) -> None:
        for t in self.trainers.values():
            close = getattr(t.net, "close", None)
            if close is not None:
                close()
        self.trainers.clear()
