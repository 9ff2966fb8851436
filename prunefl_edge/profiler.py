"""Measure a device's round-time coefficients for PruneFL's time model ``T = c + sum_l |M_l| (a_l + b)``.

On the device's own C core, one training step (forward, backward, masked SGD; batch 20) is timed:

1. all layers dense at full density (the dense reference);
2. per prunable layer, at a few densities (random masks), with the layer forced **sparse** and forced **dense**,
   the other layers dense at full density: the least-squares slope of the sparse times against kept weights is
   a_l (seconds per kept weight per iteration), and the dense time of the layer is ``T_dense - T_rest``;
3. every layer sparse at the lowest density: ``c = T - sum_l a_l k_l``, the per-iteration intercept.

The switch-over density of each layer is where its sparse time meets its dense time (linear interpolation
between measured densities); it is set in the network (``Network.set_sparse_threshold``) and written to the
profile, which the coordinator's time model reads (:mod:`prunefl_common.time_model`). Communication time per
weight (b) is not measured here (it needs the broker); it is given, by default the reference's value.
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunefl_common.model_spec import Conv2d, ModelSpec
from prunefl_common.time_model import DeviceProfile, LayerProfile

log = logging.getLogger(__name__)

REFERENCE_COMM_S_PER_WEIGHT = 5.561621025626998e-06  # PruneFL reference, configs/femnist.py
DEFAULT_DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.01)


class ProfileInterrupted(Exception):
    """The stop flag was raised between two measurements (SIGTERM during a first-start profile)."""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU as the kernel names it: a Pi's board ("Raspberry Pi 4 Model B Rev 1.4") and core ("Cortex-A72")
    from /proc/cpuinfo where it says so, else the x86 "model name", else what Python knows."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read(256 * 1024)
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip() not in fields and v.strip():
            fields[k.strip()] = v.strip()
    arm_parts = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
                 "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xc07": "Cortex-A7", "0xc08": "Cortex-A8",
                 "0xc09": "Cortex-A9", "0xc0f": "Cortex-A15"}
    core = arm_parts.get(fields.get("CPU part", "").lower(), "")
    if "Model" in fields:  # Raspberry Pi kernels name the board
        return f"{fields['Model']}{f' ({core})' if core else ''}"
    if "model name" in fields and not fields["model name"].startswith("ARMv"):
        return fields["model name"]
    return core or fields.get("model name") or platform.processor() or platform.machine() or "unknown"


def device_description(build: str, threads: int | None) -> dict[str, Any]:
    """What a profile was measured on: the C core's build (and its ISA), threads, CPU, machine, cores."""
    m = re.search(r"\bisa ([^;]+)", build)
    return {"build": build, "isa": m.group(1).strip() if m else "", "threads": threads, "cpu_model": cpu_model(),
            "machine": platform.machine(), "cpus": os.cpu_count()}


def measurement_steps(n_layers: int, n_densities: int, repeat: int) -> int:
    """Training steps a profile times (each point: a warm-up and ``repeat`` timed steps)."""
    points = 1 + 2 * n_layers * n_densities + 2
    return points * (repeat + 1)


@dataclass
class LayerSweep:
    layer: int
    name: str
    kind: str
    size: int
    densities: list[float] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    sparse_s: list[float] = field(default_factory=list)
    dense_s: list[float] = field(default_factory=list)
    slope: float = 0.0
    dense_layer_s: float = 0.0
    switch_density: float = 0.0


def _random_mask(rng: np.random.Generator, shape: tuple[int, ...], density: float) -> np.ndarray:
    n = int(np.prod(shape))
    k = max(1, round(density * n))
    m = np.zeros(n, bool)
    m[rng.choice(n, k, replace=False)] = True
    return m.reshape(shape)


def switch_over(densities: Sequence[float], sparse_s: Sequence[float], dense_s: Sequence[float]) -> float:
    """Largest density at which the sparse step is not slower than the dense one (interpolated); 0 if never."""
    # (density, sparse - dense), ascending density
    pts = sorted(zip(densities, np.subtract(sparse_s, dense_s), strict=True))
    if pts[0][1] > 0:
        return 0.0
    for (d0, g0), (d1, g1) in itertools.pairwise(pts):
        if g0 <= 0 < g1:
            return float(d0 + (d1 - d0) * (-g0) / (g1 - g0))
    return float(pts[-1][0])


def profile_network(spec: ModelSpec, net_factory: Callable[[ModelSpec], Any], sgd_config: Callable[..., Any],
                    densities: Sequence[float] = DEFAULT_DENSITIES, repeat: int = 3, batch: int = 20,
                    seed: int = 0, comm_s_per_weight: float = REFERENCE_COMM_S_PER_WEIGHT,
                    name: str = "measured", build: str | None = None, threads: int | None = None,
                    stop: Callable[[], bool] | None = None) -> tuple[DeviceProfile, list[LayerSweep]]:
    """Measure and return (profile, per-layer sweeps); the network used is closed afterwards. ``build`` and
    ``threads`` are recorded in the profile (``extra.device``, with the CPU); ``stop`` is asked before every
    measured point, and ProfileInterrupted raised when it says so (nothing is returned then)."""
    if repeat < 1 or not densities or any(not 0 < d <= 1 for d in densities):
        raise ValueError("repeat must be >= 1 and densities in (0, 1]")
    rng = np.random.default_rng(seed)
    net = net_factory(spec)
    try:
        net.init_weights(seed=seed)
        x = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)
        y = rng.integers(0, spec.num_classes, batch).astype(np.int32)
        sgd = sgd_config(1e-6)
        pshapes = spec.param_shapes()
        wparams = {p.layer: i for i, p in enumerate(pshapes) if p.prunable}
        layers = spec.prunable_layers()
        full = {wparams[li]: np.ones(pshapes[wparams[li]].shape, bool) for li in layers}

        def step_time() -> float:
            if stop is not None and stop():
                raise ProfileInterrupted("the device profile was interrupted (stop requested)")
            net.train_step(x, y, sgd)  # warm-up (buffers, CSR)
            ts = []
            for _ in range(repeat):
                t = time.perf_counter()
                net.train_step(x, y, sgd)
                ts.append(time.perf_counter() - t)
            return statistics.median(ts)

        def force(layer: int, sparse: bool) -> None:
            net.set_sparse_threshold(layer, 1.0 if sparse else 0.0)

        for li in layers:
            force(li, False)
        net.set_masks(full)
        t0 = time.perf_counter()
        t_dense_all = step_time()
        steps = measurement_steps(len(layers), len(densities), repeat)
        log.info("all layers dense: %.4f s per step; the profile times %d steps: about %.0f s in all", t_dense_all,
                 steps, (time.perf_counter() - t0) / (repeat + 1) * steps)
        total_w = sum(pshapes[wparams[li]].size for li in layers)
        sweeps: list[LayerSweep] = []
        for li in layers:
            p = wparams[li]
            sw = LayerSweep(li, spec.layer_name(li), "conv" if isinstance(spec.layers[li], Conv2d) else "linear",
                            pshapes[p].size)
            for d in densities:
                net.set_masks({**full, p: _random_mask(rng, pshapes[p].shape, d)})
                force(li, True)
                ts = step_time()
                force(li, False)
                td = step_time()
                sw.densities.append(float(d))
                sw.kept.append(round(d * sw.size) if d < 1 else sw.size)
                sw.sparse_s.append(ts)
                sw.dense_s.append(td)
            net.set_masks(full)
            k = np.asarray(sw.kept, float)
            b0 = statistics.median(sw.sparse_s)
            if len(set(sw.kept)) > 1:
                slope, b0 = (float(v) for v in np.polyfit(k, np.asarray(sw.sparse_s), 1))
                sw.slope = max(0.0, slope)
            # the sparse fit's intercept is the step without this layer's weights: the rest is its dense share
            sw.dense_layer_s = max(0.0, statistics.median(sw.dense_s) - b0)
            sw.switch_density = switch_over(sw.densities, sw.sparse_s, sw.dense_s)
            log.info("layer %s: %.3e s per kept weight (sparse), switch-over density %.3f", sw.name, sw.slope,
                     sw.switch_density)
            sweeps.append(sw)
        # intercept: every layer sparse at the lowest density
        dmin = min(densities)
        low = {wparams[li]: _random_mask(rng, pshapes[wparams[li]].shape, dmin) for li in layers}
        net.set_masks(low)
        for li in layers:
            force(li, True)
        t_low = step_time()
        # the importance step: the same sparse step with the dense gradient of every weight accumulated
        net.set_importance(True)
        try:
            t_low_imp = step_time()
        finally:
            net.set_importance(False)
        importance_s = max(0.0, t_low_imp - t_low) / max(1, total_w)
        log.info("importance: %.3e s per weight per step (sparse step %.4f s, with importance %.4f s)", importance_s,
                 t_low, t_low_imp)
        kept_low = [int(low[wparams[li]].sum()) for li in layers]
        intercept = max(0.0, t_low - sum(s.slope * k for s, k in zip(sweeps, kept_low, strict=True)))
        for sw in sweeps:  # leave the network on the measured switch-over
            net.set_sparse_threshold(sw.layer, sw.switch_density)
        if build is None:
            info = getattr(net, "build_info", None)
            build = str(info()) if callable(info) else ""
    finally:
        close = getattr(net, "close", None)
        if close is not None:
            close()
    prof = DeviceProfile(
        name=name, intercept_s=intercept, comm_s_per_weight=comm_s_per_weight,
        layers=tuple(LayerProfile(s.name, s.kind, s.size, s.slope, dense_s=s.dense_layer_s,
                                  sparse_threshold=s.switch_density)
                     for s in sweeps),
        defaults={k: float(np.mean([s.slope for s in sweeps if s.kind == k]))
                  for k in ("conv", "linear") if any(s.kind == k for s in sweeps)},
        description=f"measured by prunefl-edge profile on this device (batch {batch}, median of {repeat})",
        source="prunefl_edge.profiler: least squares of step time vs kept weights; b given, not measured",
        model=spec.name, batch_size=batch, importance_s_per_weight=importance_s,
        extra={"dense_step_s": t_dense_all, "sparse_low_step_s": t_low, "sparse_low_importance_step_s": t_low_imp,
               "build": build, "device": device_description(build, threads),
               "sweeps": [{"layer": s.name, "densities": s.densities, "kept": s.kept, "sparse_s": s.sparse_s,
                           "dense_s": s.dense_s} for s in sweeps]})
    return prof, sweeps
