"""Federated methods (Flower-style strategies): ``setup`` / ``finish_setup``, ``configure_round``,
``aggregate_round``, ``reconfigure``, each returning what the loop applies (:mod:`coordinator.strategy`)."""

from __future__ import annotations

from coordinator.methods.base import BaseMethod, FedAvg
from coordinator.methods.baselines import FixedMask, IterativeMagnitude, Snip
from coordinator.methods.feddst import FedDST
from coordinator.methods.prunefl import PruneFL

METHOD_NAMES = ("prunefl", "adaptive-only", "ip-only", "fedavg", "snip", "imp", "reinit", "random-reinit", "feddst")

# The reference's "online" size tuner (bases/fl/simulation/online.py) is not provided: it decides the model size
# from losses of the previous, current and an auxiliary smaller model evaluated on raw samples that every client
# uploads to the server (MAX_NUM_UPLOAD = 5 per round), which this system's design forbids (data never leaves a
# client). A faithful-in-spirit version needs a client-side evaluation of the three models with a one-round lag.

__all__ = ["METHOD_NAMES", "BaseMethod", "FedAvg", "FedDST", "FixedMask", "IterativeMagnitude", "PruneFL", "Snip"]
