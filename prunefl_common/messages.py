"""Messages between the coordinator and an edge: plain dataclasses of numpy arrays (no pickle, ever).

A transport moves these objects; the MQTT transport encodes them into binary envelopes (issue 5), the
in-process one hands them over as they are. Conventions shared by both sides:

* Parameters are numbered in the C core's order (``ModelSpec.param_shapes()``): per layer weight, then bias.
* A *weight* (prunable) travels as its values at kept positions only, flattened, in ascending flat-index order
  of the mask the message refers to; a bias (never pruned) travels whole, flattened.
* Masks are keyed by parameter index (weights only), bool arrays of the weight's shape.
* ``round`` and ``mask_version`` identify what a result answers, so stale or duplicate results are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from prunefl_common.mask_delta import MaskDelta


class TaskKind(StrEnum):
    TRAIN = "train"  # local masked SGD; returns the new kept values (and importance when asked)
    GRADIENT = "gradient"  # no update: sum of dense gradients over local_steps batches (SNIP scores)
    INITIAL_PRUNE = "initial_prune"  # PruneFL's initial pruning on this client's data
    # no training: send the importance accumulated since the last upload (a client that trained earlier in the
    # reconfiguration interval but is not selected in the reconfiguration round); values are not needed
    IMPORTANCE = "importance"


@dataclass
class MaskUpdate:
    """How the task's mask reaches the client: in full, as a change from a version it holds, or unchanged."""

    version: int
    full: dict[int, np.ndarray] | None = None
    delta: MaskDelta | None = None

    def __post_init__(self) -> None:
        if self.full is not None and self.delta is not None:
            raise ValueError("a MaskUpdate carries a full mask or a delta, not both")


@dataclass
class TrainConfig:
    lr: float
    local_steps: int = 5
    batch_size: int = 20
    momentum: float = 0.0
    weight_decay: float = 0.0
    collect_importance: bool = False  # accumulate z_j += n * (sum_k g_kj)^2 this round (costs a dense dW)
    upload_importance: bool = False  # send the accumulated z with the result, then reset it
    # None: z goes dense (every position); a number f: z at every kept position and, per prunable parameter, the
    # largest z at pruned positions, at most f x its kept count (what the mask choice can use; SparseImportance)
    importance_top: float | None = None


@dataclass
class InitialPruneConfig:
    """PruneFL's initial pruning (reference ``AdaptiveServer.initial_pruning``), run by one client."""

    lr: float
    costs: list[float]  # per prunable layer: a_l + b per round (the federation's round-time model)
    intercept: float  # c per round
    n_batches: int = 10
    batch_size: int = 20
    reconfig_interval: int = 50  # passes between reconfigurations
    max_passes: int = 1000
    acc_threshold: float = 0.15  # 1.5 / number of classes: reconfigure only from this training accuracy on
    delta: float = 0.3
    stop_change: float = 0.1  # stop when |density / previous - 1| <= this ...
    stop_count: int = 5  # ... for this many reconfigurations in a row
    max_density: float | None = None
    seed: int = 0  # which local samples form the 10 batches
    # True (reference, bases/nn/linear.py DenseLinear.forward multiplies weight by mask): z = 0 at pruned weights,
    # so IP never regrows, and no dense dW is needed; False: z from the dense gradient (pruned weights included)
    masked_importance: bool = True


@dataclass
class Task:
    round: int
    kind: TaskKind
    mask: MaskUpdate
    values: list[np.ndarray]  # per parameter, see the module doc (empty only if the client holds the weights)
    config: TrainConfig | InitialPruneConfig


@dataclass
class SparseImportance:
    """A client's z without its dense form (the mask optimiser only ever adds a pruned weight whose z is among the
    largest, and sums the z of the weights that stay): per parameter, z at every kept position in mask order
    (biases: every entry); per prunable parameter, the largest z at pruned positions with their flat indices
    (sorted). Positions not sent count as z = 0."""

    kept: list[np.ndarray]  # float32, one per parameter
    pruned_index: dict[int, np.ndarray]  # int64 sorted flat positions, per prunable parameter
    pruned_z: dict[int, np.ndarray]  # float32, same lengths
    sizes: dict[int, int]  # number of weights of each prunable parameter (the positions' range)

    def nbytes(self) -> int:
        return sum(int(k.nbytes) for k in self.kept) + sum(int(v.nbytes) for v in self.pruned_z.values())


@dataclass
class TrainResult:
    client_id: str
    round: int
    mask_version: int
    n_samples: int
    values: list[np.ndarray]  # kept values per parameter (TRAIN); empty for GRADIENT
    # z (TRAIN): dense per parameter or SparseImportance; gradient sums (GRADIENT): dense
    importance: list[np.ndarray] | SparseImportance | None = None
    loss: float = float("nan")  # mean training loss over the local steps
    accuracy: float = float("nan")  # training accuracy over the local steps
    compute_s: float = 0.0  # wall time on the device


@dataclass
class InitialPruneResult:
    client_id: str
    round: int
    masks: dict[int, np.ndarray]
    values: list[np.ndarray]  # kept values per parameter under `masks`
    passes: int
    kept_history: list[list[int]] = field(default_factory=list)  # kept weights per prunable layer, each pass
    densities: list[float] = field(default_factory=list)  # overall density after each reconfiguration
    train_accuracy: float = float("nan")
    compute_s: float = 0.0
    mask_version: int = 0


Result = TrainResult | InitialPruneResult


def kept_values(weights: list[np.ndarray], masks: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Per parameter: float32 values at kept positions (weights) or the whole flat tensor (biases)."""
    out = []
    for i, w in enumerate(weights):
        flat = np.asarray(w, dtype=np.float32).ravel()
        out.append(flat[np.asarray(masks[i]).ravel()] if i in masks else flat.copy())
    return out


def dense_from_values(values: list[np.ndarray], masks: dict[int, np.ndarray],
                      shapes: list[tuple[int, ...]], base: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Inverse of :func:`kept_values`: dense float32 arrays, pruned positions from ``base`` (or zero)."""
    if len(values) != len(shapes):
        raise ValueError(f"expected {len(shapes)} parameter value arrays, got {len(values)}")
    out = []
    for i, (v, shape) in enumerate(zip(values, shapes, strict=True)):
        size = int(np.prod(shape))
        if i in masks:
            m = np.asarray(masks[i], dtype=bool).ravel()
            if m.size != size:
                raise ValueError(f"parameter {i}: mask has {m.size} entries, shape {shape} has {size}")
            if v.size != int(m.sum()):
                raise ValueError(f"parameter {i}: {v.size} values for {int(m.sum())} kept weights")
            d = np.zeros(size, np.float32) if base is None else np.asarray(base[i], np.float32).ravel().copy()
            d[m] = v
        else:
            if v.size != size:
                raise ValueError(f"parameter {i}: {v.size} values for shape {shape}")
            d = np.asarray(v, np.float32).ravel().copy()
        out.append(d.reshape(shape))
    return out
