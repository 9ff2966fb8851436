"""MQTT topic names of a federation, in one place (the broker's ACL in firmware_scripts/provision_broker.sh
follows them: an edge may read only its task topic and write only its result and status topics).

    prunefl/<federation>/edge/<id>/task     coordinator -> edge, QoS 1
    prunefl/<federation>/edge/<id>/result   edge -> coordinator, QoS 1
    prunefl/<federation>/edge/<id>/status   edge, retained, QoS 1; its Last Will is an "offline" status
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "prunefl"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def valid_id(name: str) -> bool:
    """A federation or edge id: 1-64 of [A-Za-z0-9_.-] (a topic level and a broker username: no wildcards)."""
    return isinstance(name, str) and _ID.fullmatch(name) is not None


def check_id(name: str, what: str) -> str:
    if not valid_id(name):
        raise ValueError(f"{what} {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . - (it is an MQTT topic level)")
    return name


@dataclass(frozen=True)
class Topics:
    federation: str

    def __post_init__(self) -> None:
        check_id(self.federation, "federation")

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.federation}"

    def task(self, edge: str) -> str:
        return f"{self.base}/edge/{check_id(edge, 'edge id')}/task"

    def result(self, edge: str) -> str:
        return f"{self.base}/edge/{check_id(edge, 'edge id')}/result"

    def status(self, edge: str) -> str:
        return f"{self.base}/edge/{check_id(edge, 'edge id')}/status"

    @property
    def all_results(self) -> str:
        return f"{self.base}/edge/+/result"

    @property
    def all_status(self) -> str:
        return f"{self.base}/edge/+/status"

    def edge_of(self, topic: str) -> tuple[str, str] | None:
        """(edge id, leaf) of a topic of this federation, None for anything else."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != ROOT or parts[1] != self.federation or parts[2] != "edge":
            return None
        if not valid_id(parts[3]) or parts[4] not in ("task", "result", "status"):
            return None
        return parts[3], parts[4]
