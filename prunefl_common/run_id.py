"""A coordinator run's id, carried to the edges in every task's model description (key ``run``).

A new coordinator run (no ``--resume``) draws a new id and keeps it in its checkpoint, so a resumed run has the
same one. An edge binds its saved state (mask, mask version, importance, batch position) to the run it was
trained in: state of another run is not resumed (it would mix an earlier federation's mask into this one), it is
kept aside and the edge starts clean. A task without a run id (an older coordinator) binds by model only.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

RUN_KEY = "run"


def new_run_id() -> str:
    """Time of day (readable in logs) and 48 random bits (unique): ``20261203T141553-9f2c41a07b3e``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)


def valid_run_id(v: Any) -> bool:
    """1-64 of [A-Za-z0-9_.-] (it also names a file kept aside on the edge)."""
    from prunefl_common.protocol.topics import valid_id

    return valid_id(v)


def with_run(model: dict[str, Any], run: str) -> dict[str, Any]:
    """The model description a coordinator sends: the model's, plus the run id."""
    if not valid_run_id(run):
        raise ValueError(f"run id {run!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return {**model, RUN_KEY: run}


def split_run(model: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the model description without the run id, the run id or None); ValueError on a malformed id."""
    if RUN_KEY not in model:
        return model, None
    run = model[RUN_KEY]
    if not valid_run_id(run):
        raise ValueError(f"the task's run id must be 1-64 characters of A-Z a-z 0-9 _ . -, got {str(run)[:80]!r}")
    return {k: v for k, v in model.items() if k != RUN_KEY}, run
