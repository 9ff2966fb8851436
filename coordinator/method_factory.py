"""The method object (the strategy) a run's options name: ``prunefl``, ``fedavg`` and the baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.methods import FedAvg, FedDST, FixedMask, IterativeMagnitude, PruneFL, Snip
from coordinator.run_options import RunOptions, UsageError
from coordinator.strategy import Method
from prunefl_common.model_spec import ModelSpec


def load_mask_file(path: str) -> dict[int, np.ndarray]:
    p = Path(path)
    if p.is_dir():
        p = p / "final_mask.npz"
    try:
        with np.load(p, allow_pickle=False) as data:
            return {int(k[1:]): np.array(data[k], bool) for k in data.files if k.startswith("m")}
    except (OSError, ValueError) as e:
        raise UsageError(f"--mask-from {path}: cannot read a mask file ({e})") from e


def make_method(opts: RunOptions, spec: ModelSpec, init: list[np.ndarray]) -> Method:
    """The method object; ``init`` is the run's initial weights (reinit restarts from them)."""
    m = opts.method
    if m in ("prunefl", "adaptive-only", "ip-only"):
        return PruneFL(initial=(m != "adaptive-only"), adaptive=(m != "ip-only"),
                       reconfig_interval=opts.reconfig_interval, importance_window=opts.importance_window,
                       max_density=opts.max_density, initial_client=opts.initial_client,
                       ip_max_passes=opts.ip_max_passes, ip_interval=opts.ip_interval, ip_budget_s=opts.ip_budget_s,
                       importance_top=opts.importance_top if opts.importance_upload == "sparse" else None,
                       ip_masked_importance=(opts.ip_importance == "masked"), ties=opts.mask_ties,
                       importance_from=opts.importance_from, ip_deadline_s=opts.initial_deadline)
    if m == "fedavg":
        return FedAvg()
    if m == "snip":
        return Snip(opts.target_density)
    if m == "feddst":
        return FedDST(opts.target_density, interval=opts.feddst_interval, alpha=opts.feddst_alpha,
                      distribution=opts.feddst_distribution)
    if m == "imp":
        return IterativeMagnitude(opts.target_density, steps=opts.imp_steps)
    if m in ("reinit", "random-reinit"):
        assert opts.mask_from is not None
        from prunefl_edge.models import init_weights

        masks = load_mask_file(opts.mask_from)
        weights = init if m == "reinit" else init_weights(spec, opts.seed + 1_000_000)
        return FixedMask(masks, weights, m)
    raise UsageError(f"unknown method {m!r}")
