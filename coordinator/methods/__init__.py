"""Federated methods (Flower-style strategies): ``setup``, ``configure_round``, ``aggregate_round``,
``maybe_reconfigure``. See :mod:`coordinator.server` for the loop that calls them."""

from __future__ import annotations

from coordinator.methods.base import BaseMethod, FedAvg
from coordinator.methods.baselines import FixedMask, IterativeMagnitude, Snip
from coordinator.methods.prunefl import PruneFL

METHOD_NAMES = ("prunefl", "adaptive-only", "fedavg", "snip", "imp", "online", "reinit", "random-reinit")

__all__ = ["METHOD_NAMES", "BaseMethod", "FedAvg", "FixedMask", "IterativeMagnitude", "PruneFL", "Snip"]
