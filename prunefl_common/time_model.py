"""The round-time model of PruneFL: ``T(M) = c + sum_l |M_l| (a_l + b)``, and device profiles (JSON files).

A *device profile* holds per-iteration coefficients measured on a device (``prunefl-edge profile``) or taken
from the paper's reference implementation (the built-in ``pi4-reference``, see ``profiles/``):

* ``intercept_s``: the time of one local iteration that does not depend on the kept weights;
* per prunable layer ``s_per_weight``: the compute time of one iteration per kept weight (a_l);
* ``comm_s_per_weight``: the communication time per kept weight per round (b);
* ``importance_s_per_weight``: the extra time of one iteration per weight of the model (kept or not) while the
  importance window is open: the dense weight gradient PruneFL's importance needs, which a sparse step does not
  compute otherwise (0 in the reference's coefficients, whose every step computed it).

A :class:`TimeModel` is a profile applied to one model and ``local_steps``: per round, the intercept and the
compute terms are multiplied by ``local_steps`` (the reference: ``TIME_CONSTANT = SPARSE_TIME * 5``,
``COMP_COEFFICIENTS = COMP_COEFFICIENTS_SINGLE * 5``); communication is per round already.

When a profile was measured for another model (other number or kinds of prunable layers), each layer uses the
profile's per-kind default (``defaults.conv`` / ``defaults.linear``), which is an approximation and is logged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from prunefl_common.model_spec import Conv2d, ModelSpec

log = logging.getLogger(__name__)

PROFILE_FORMAT = "prunefl-device-profile/1"
BUILTIN_PROFILES = ("pi4-reference", "pi-proxy-mlp")


class ProfileError(ValueError):
    """A device profile that cannot be read or used."""


@dataclass(frozen=True)
class LayerProfile:
    name: str
    kind: str  # "conv" or "linear"
    weights: int
    s_per_weight: float  # a_l per local iteration (sparse: per kept weight)
    dense_s: float | None = None  # measured time of one iteration of the layer run dense (optional)
    sparse_threshold: float | None = None  # measured switch-over density (optional)


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    intercept_s: float
    comm_s_per_weight: float
    layers: tuple[LayerProfile, ...] = ()
    defaults: dict[str, float] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    model: str = ""
    batch_size: int = 20
    extra: dict[str, Any] = field(default_factory=dict)
    importance_s_per_weight: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT, "name": self.name, "description": self.description, "source": self.source,
            "model": self.model, "per": "iteration", "batch_size": self.batch_size,
            "intercept_s": self.intercept_s, "comm_s_per_weight": self.comm_s_per_weight,
            "importance_s_per_weight": self.importance_s_per_weight,
            "layers": [{k: v for k, v in vars(lp).items() if v is not None} for lp in self.layers],
            "defaults": dict(self.defaults), **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "profile") -> DeviceProfile:
        try:
            if data.get("format") != PROFILE_FORMAT:
                raise ProfileError(f"{where}: format is {data.get('format')!r}, expected {PROFILE_FORMAT!r}")
            if data.get("per", "iteration") != "iteration":
                raise ProfileError(f"{where}: coefficients must be per local iteration")
            layers = tuple(LayerProfile(name=str(lp["name"]), kind=str(lp["kind"]), weights=int(lp["weights"]),
                                        s_per_weight=float(lp["s_per_weight"]),
                                        dense_s=None if lp.get("dense_s") is None else float(lp["dense_s"]),
                                        sparse_threshold=None if lp.get("sparse_threshold") is None
                                        else float(lp["sparse_threshold"]))
                           for lp in data.get("layers", []))
            prof = cls(name=str(data["name"]), intercept_s=float(data["intercept_s"]),
                       comm_s_per_weight=float(data["comm_s_per_weight"]), layers=layers,
                       defaults={str(k): float(v) for k, v in data.get("defaults", {}).items()},
                       description=str(data.get("description", "")), source=str(data.get("source", "")),
                       model=str(data.get("model", "")), batch_size=int(data.get("batch_size", 20)),
                       extra=dict(data.get("extra", {})),
                       importance_s_per_weight=float(data.get("importance_s_per_weight", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ProfileError):
                raise
            raise ProfileError(f"{where}: missing or malformed field: {e}") from e
        values = [prof.intercept_s, prof.comm_s_per_weight, prof.importance_s_per_weight,
                  *[lp.s_per_weight for lp in layers],
                  *prof.defaults.values()]
        if not all(np.isfinite(v) and v >= 0 for v in values):
            raise ProfileError(f"{where}: coefficients must be finite and >= 0")
        return prof

    def save(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, p)


def load_profile(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """A built-in profile by name (``pi4-reference``) or a JSON file written by ``prunefl-edge profile``."""
    s = str(name_or_path)
    if s in BUILTIN_PROFILES:
        text = resources.files("prunefl_common").joinpath("profiles", f"{s}.json").read_text()
        return DeviceProfile.from_json(json.loads(text), s)
    p = Path(s)
    if not p.is_file():
        raise ProfileError(f"device profile {s!r} is neither a built-in ({', '.join(BUILTIN_PROFILES)}) nor a file; "
                           "measure one with `prunefl-edge profile --out FILE`")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ProfileError(f"{p}: not a readable JSON profile ({e})") from e
    return DeviceProfile.from_json(data, str(p))


def _kind(layer: object) -> str:
    return "conv" if isinstance(layer, Conv2d) else "linear"


def sparse_thresholds(profile: DeviceProfile, spec: ModelSpec) -> dict[int, float]:
    """Layer index -> measured switch-over density, when the profile was measured for this model's layers."""
    prunable = spec.prunable_layers()
    if len(profile.layers) != len(prunable):
        return {}
    return {li: lp.sparse_threshold for lp, li in zip(profile.layers, prunable, strict=True)
            if lp.sparse_threshold is not None and lp.kind == _kind(spec.layers[li])}


@dataclass(frozen=True)
class TimeModel:
    """Per-round coefficients for one model: ``T = intercept + sum_l kept_l * (compute_l + comm)``."""

    intercept: float  # c per round
    compute: np.ndarray  # a_l per round, one per prunable layer
    comm: float  # b per kept weight per round
    local_steps: int = 5
    importance: float = 0.0  # per weight of the model per round, in rounds that accumulate importance
    total_weights: int = 0  # prunable weights of the model (what the importance step's dense dW covers)

    @property
    def costs(self) -> np.ndarray:
        return self.compute + self.comm

    def importance_time(self) -> float:
        """What accumulating importance adds to one round: a dense weight gradient of every weight."""
        return float(self.importance * self.total_weights)

    def round_time(self, kept: list[int] | np.ndarray, importance: bool = False) -> float:
        k = np.asarray(kept, dtype=np.float64)
        return float(self.intercept + np.dot(k, self.costs) + (self.importance_time() if importance else 0.0))

    def compute_time(self, kept: list[int] | np.ndarray, iterations: int) -> float:
        """Compute-only time of ``iterations`` local iterations (no communication), e.g. initial pruning."""
        k = np.asarray(kept, dtype=np.float64)
        per_iter = (self.intercept + np.dot(k, self.compute)) / self.local_steps
        return float(iterations * per_iter)

    @classmethod
    def from_profile(cls, profile: DeviceProfile, spec: ModelSpec, local_steps: int = 5) -> TimeModel:
        prunable = spec.prunable_layers()
        shapes = {p.layer: p.size for p in spec.param_shapes() if p.prunable}
        # per-layer coefficients apply when the prunable layers correspond one to one (same count and kinds, e.g.
        # Conv-2 with 10 instead of 62 classes: coefficients are per weight); sizes that differ are logged
        matches = len(profile.layers) == len(prunable) and all(
            lp.kind == _kind(spec.layers[li]) for lp, li in zip(profile.layers, prunable, strict=True))
        per_iter = []
        if matches:
            per_iter = [lp.s_per_weight for lp in profile.layers]
            resized = [lp.name for lp, li in zip(profile.layers, prunable, strict=True) if lp.weights != shapes[li]]
            if resized:
                log.info("profile %r: layers %s have other sizes in %r; per-weight coefficients used as they are",
                         profile.name, resized, spec.name)
        else:
            for li in prunable:
                kind = _kind(spec.layers[li])
                if kind not in profile.defaults:
                    raise ProfileError(f"profile {profile.name!r} does not describe model {spec.name!r} and has no "
                                       f"default for {kind} layers; measure one with `prunefl-edge profile`")
                per_iter.append(profile.defaults[kind])
            log.info("profile %r was made for another model; using its per-kind defaults for %r",
                     profile.name, spec.name)
        return cls(intercept=profile.intercept_s * local_steps,
                   compute=np.asarray(per_iter, dtype=np.float64) * local_steps,
                   comm=profile.comm_s_per_weight, local_steps=local_steps,
                   importance=profile.importance_s_per_weight * local_steps, total_weights=sum(shapes.values()))


def slowest_announced(announced: dict[str, Any], spec: ModelSpec, local_steps: int = 5
                      ) -> tuple[str, DeviceProfile] | None:
    """Of the profiles edges announced (edge id -> profile JSON), the one whose dense round of ``spec`` takes
    longest: a synchronous round waits for its slowest participant, so its coefficients are the ones that the
    mask optimiser should trade accuracy against. Unusable profiles are logged and skipped; None if none is
    left."""
    best: tuple[float, str, DeviceProfile] | None = None
    full = [p.size for p in spec.param_shapes() if p.prunable]
    for eid, data in sorted(announced.items()):
        if data is None:
            continue
        try:
            if not isinstance(data, dict):
                raise ProfileError("not a JSON object")
            prof = DeviceProfile.from_json(data, f"edge {eid}'s profile")
            t = TimeModel.from_profile(prof, spec, local_steps).round_time(full)
        except ProfileError as e:
            log.warning("edge %s announced an unusable device profile: %s", eid, e)
            continue
        if best is None or t > best[0]:
            best = (t, eid, prof)
    return None if best is None else (best[1], best[2])
