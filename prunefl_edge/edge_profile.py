"""The edge's device profile: measured at its first start, cached in ``state_dir``, announced in its status.

The coordinator's round-time model (``T = c + sum_l |M_l| (a_l + b)``) needs per-layer compute coefficients of
the devices that train. ``prunefl-edge start`` measures them once, for the model named by ``[profile] model``
(default Conv-2, built for the edge's own input shape and number of classes), with
:func:`prunefl_edge.profiler.profile_network`, and writes ``state_dir/profile.json``. Later starts reuse the
file while what it was measured under (model, input shape, classes, threads, C core build) is unchanged;
anything else measures again. ``[profile] file`` names a profile measured by hand (``prunefl-edge profile``)
and skips the measurement; ``measure = false`` announces none.

The measured switch-over densities are applied to the edge's network whenever the task's model has the
profiled model's layers (:func:`prunefl_common.time_model.sparse_thresholds`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunefl_common.time_model import DeviceProfile, ProfileError, load_profile

log = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
FIRST_START_DENSITIES = (1.0, 0.3, 0.1, 0.03, 0.01)


@dataclass(frozen=True)
class ProfileConfig:
    measure: bool = True  # measure at first start (cached); false: announce no profile
    model: str = "conv2"  # conv2, mlp, vgg11 or an .onnx file: the model timed
    file: str | None = None  # a profile measured by hand: announced as it is, nothing measured
    comm_s_per_weight: float | None = None  # b; default the reference's (the link is not measured here)
    repeat: int = 3


def cache_key(cfg: ProfileConfig, input_shape: tuple[int, ...], num_classes: int, threads: int,
              build: str) -> dict[str, Any]:
    """What a cached profile was measured under; a different key means measuring again."""
    return {"model": cfg.model, "input_shape": [int(d) for d in input_shape], "num_classes": int(num_classes),
            "threads": int(threads), "build": build, "comm_s_per_weight": cfg.comm_s_per_weight}


def _cached(path: Path, key: dict[str, Any]) -> DeviceProfile | None:
    if not path.exists():
        return None
    try:
        prof = DeviceProfile.from_json(json.loads(path.read_text()), str(path))
    except (OSError, json.JSONDecodeError, ProfileError) as e:
        log.warning("cached device profile %s unreadable (%s): measuring again", path, e)
        return None
    if prof.extra.get("measured_under") != key:
        log.info("cached device profile %s was measured under other settings: measuring again", path)
        return None
    return prof


def device_profile(cfg: ProfileConfig, state_dir: Path, input_shape: tuple[int, ...], num_classes: int,
                   threads: int, net_factory: Any = None,
                   stop: Callable[[], bool] | None = None) -> DeviceProfile | None:
    """This edge's profile: the configured file, the cached measurement, or a new measurement (cached).
    ``stop`` (the agent's stop flag) is asked between measurements: a stop raises
    :class:`prunefl_edge.profiler.ProfileInterrupted` and nothing is cached (the next start measures)."""
    if cfg.file is not None:
        return load_profile(cfg.file)
    if not cfg.measure:
        return None
    from prunefl_edge.engine import Network, SGDConfig, build_info
    from prunefl_edge.inputs import load_model
    from prunefl_edge.profiler import REFERENCE_COMM_S_PER_WEIGHT, measurement_steps, profile_network

    key = cache_key(cfg, input_shape, num_classes, threads, build_info())
    path = Path(state_dir) / PROFILE_FILE
    prof = _cached(path, key)
    if prof is not None:
        log.info("device profile: %s (measured %s)", path, prof.extra.get("measured_at", "earlier"))
        return prof
    spec, _ = load_model(cfg.model, num_classes, tuple(input_shape), 0)  # type: ignore[arg-type]
    factory = net_factory or (lambda s: Network(s, threads=threads))
    log.info("measuring this device's profile on %s (%d threads, %d timed steps; the estimated time follows the "
             "first step): once, cached in %s; a stop (SIGTERM) ends it between two measurements", spec.name,
             threads, measurement_steps(len(spec.prunable_layers()), len(FIRST_START_DENSITIES), cfg.repeat), path)
    t0 = time.perf_counter()
    prof, _ = profile_network(spec, factory, SGDConfig, FIRST_START_DENSITIES, cfg.repeat,
                              comm_s_per_weight=cfg.comm_s_per_weight or REFERENCE_COMM_S_PER_WEIGHT,
                              name="edge-measured", build=key["build"], threads=threads, stop=stop)
    prof = dataclasses.replace(prof, extra={
        **prof.extra, "measured_under": key, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "measure_s": round(time.perf_counter() - t0, 3)})
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.save(path)
    log.info("device profile measured in %.1f s: intercept %.2e s, per kept weight %s", time.perf_counter() - t0,
             prof.intercept_s, ", ".join(f"{lp.name} {lp.s_per_weight:.2e}" for lp in prof.layers))
    return prof


def announced(prof: DeviceProfile | None) -> dict[str, Any] | None:
    """The profile as the status carries it: the coefficients, without the raw sweeps."""
    if prof is None:
        return None
    data = prof.to_json()
    data.pop("extra", None)
    return data
