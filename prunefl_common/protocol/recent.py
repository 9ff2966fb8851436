"""The last N message ids seen, for recognising a QoS-1 redelivery (at-least-once) without growing forever."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RecentIds:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._ids: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: Hashable) -> bool:
        """Remember ``key`` (forgetting the oldest beyond capacity); False if it was already there."""
        if key in self._ids:
            return False
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True
