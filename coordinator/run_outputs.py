"""What a finished (or stopped) run leaves in its output directory: the final mask and weights, the pruned model
as ONNX, ``summary.json`` and the HTML report."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from coordinator.report import write_report
from coordinator.run_options import RunOptions
from coordinator.server import Coordinator
from prunefl_common.model_spec import ModelSpec

log = logging.getLogger(__name__)


def write_outputs(opts: RunOptions, coord: Coordinator, spec: ModelSpec, out: Path,
                  title: str | None = None) -> None:
    from prunefl_edge.onnx_export import export_onnx

    st = coord.state
    np.savez(out / "final_mask.npz", **{f"m{p}": m for p, m in st.masks.items()})
    np.savez(out / "final_weights.npz", **{f"w{i}": w for i, w in enumerate(st.masked_weights())})
    onnx_path = None
    if opts.export_onnx:
        try:
            onnx_path = str(export_onnx(spec, st.masked_weights(), out / "model.onnx", masks=st.masks))
        except (OSError, ValueError) as e:
            log.warning("ONNX export failed (the model is in final_weights.npz / final_mask.npz): %s", e)
    last = next((r for r in reversed(coord.records) if r.get("accuracy") is not None), None)
    summary = {"options": {k: v for k, v in asdict(opts).items() if k != "extra"}, "rounds": st.round,
               "final_accuracy": last["accuracy"] if last else None, "final_density": st.density(),
               "sim_time_s": st.sim_time_s, "bytes_up": st.bytes_up, "bytes_down": st.bytes_down,
               "onnx": onnx_path, "initial_pruning": st.extra.get("initial_pruning"), "run_id": st.extra.get("run_id")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if opts.report:
        path = write_report({opts.method: coord.records}, out, title=title or f"prunefl-sim: {opts.method}")
        log.info("report: %s", path)
