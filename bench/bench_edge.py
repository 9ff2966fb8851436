#!/usr/bin/env python3
"""Memory and bytes of real `prunefl-edge start` processes through a PruneFL federation: initial pruning, rounds and
a reconfiguration (Conv-2, mnist5k, 10 classes, embedded broker, `prunefl-coord --spawn-edges`).

Each edge measures its own peak RSS per phase (:mod:`prunefl_edge.memory_phases`: the kernel's high-water mark,
reset at each phase) and announces it in its status; this script reads every edge's ``status.json`` and the run's
``metrics.jsonl`` and prints, per edge and phase, the peak RSS beside the dense model's size (the reference: what
the model's float32 weights alone take), and the bytes uploaded per round kind (ordinary rounds vs reconfiguration
rounds, which carry the importance).

Targets (issue 13): peak RSS <= 200 MiB during initial pruning, <= 120 MiB in rounds at density <= 0.2; a
reconfiguration round's upload <= 3x an ordinary round's at the same density.

    python bench/bench_edge.py [--edges 4] [--rounds 12] [--reconfig-interval 10] [--ip-max-passes 40]
                               [--out runs/bench_edge] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_edge")

TARGETS = {"initial_prune": 200.0, "rounds": 120.0, "reconfig_upload_ratio": 3.0}
ROUND_PHASES = ("task_decode", "model", "train", "train_importance", "result_encode", "state_save")


def dense_model_mib(model: str, classes: int) -> float:
    from prunefl_edge.inputs import load_model

    spec, weights = load_model(model, classes, (1, 28, 28), 0)
    return sum(w.nbytes for w in weights) / 2**20


def run_federation(args: argparse.Namespace, out: Path) -> float:
    cmd = [sys.executable, "-m", "coordinator.cli_coord", "--broker", "embedded", "--spawn-edges", str(args.edges),
           "--min-clients", str(args.edges), "--clients-per-round", str(args.edges), "--dataset", args.dataset,
           "--model", args.model, "--method", "prunefl", "--rounds", str(args.rounds), "--reconfig-interval",
           str(args.reconfig_interval), "--ip-max-passes", str(args.ip_max_passes), "--eval-every",
           str(args.rounds), "--no-report", "--wait-timeout", "300", "--out", str(out)]
    log.info("running: %s", " ".join(cmd))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        raise SystemExit(f"bench_edge: prunefl-coord exited {r.returncode}")
    return time.perf_counter() - t0


def round_bytes(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    train = [m for m in metrics if m.get("stage") == "train"]
    ups, prev = [], None
    for m in metrics:
        if prev is not None and m.get("stage") == "train":
            ups.append((m, m["bytes_up"] - prev["bytes_up"]))
        prev = m
    recon = [(m, b) for m, b in ups if m.get("reconfigured")]
    ordinary = [(m, b) for m, b in ups if not m.get("reconfigured")]
    out: dict[str, Any] = {"rounds": len(train)}
    if recon and ordinary:
        m_r, b_r = recon[0]
        # the ordinary round just before it: same mask (the reconfiguration applies after its upload)
        before = [(m, b) for m, b in ordinary if m["round"] < m_r["round"]]
        m_o, b_o = before[-1] if before else ordinary[0]
        out.update(reconfig_round=m_r["round"], reconfig_upload=b_r, ordinary_round=m_o["round"],
                   ordinary_upload=b_o, density=m_o["density"], ratio=b_r / max(1, b_o))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edges", type=int, default=4)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--reconfig-interval", type=int, default=10)
    p.add_argument("--ip-max-passes", type=int, default=40)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="conv2")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_edge"))
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    wall = run_federation(args, out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    edges = {}
    for st in sorted((out / "edges").glob("*/state/status.json")):
        info = json.loads(st.read_text())
        edges[st.parent.parent.name] = {"peak_rss_mib": info.get("peak_rss_mib", {}), "bytes_sent": info.get(
            "bytes_sent"), "bytes_received": info.get("bytes_received")}
    dense = dense_model_mib(args.model, 10)
    rb = round_bytes(metrics)
    final_density = metrics[-1]["density"]
    phases = sorted({ph for e in edges.values() for ph in e["peak_rss_mib"]})
    print(f"\nbench_edge: {args.edges} edges, {args.model} on {args.dataset}, {rb['rounds']} rounds, final density "
          f"{final_density:.3f}, wall {wall:.0f} s; dense model float32 weights: {dense:.1f} MiB")
    print(f"{'edge':8s} " + " ".join(f"{ph:>16s}" for ph in phases))
    for eid, e in edges.items():
        print(f"{eid:8s} " + " ".join(f"{e['peak_rss_mib'].get(ph, float('nan')):16.1f}" for ph in phases))
    ip = max((e["peak_rss_mib"].get("initial_prune", 0.0) for e in edges.values()), default=0.0)
    rounds = max((max([e["peak_rss_mib"].get(ph, 0.0) for ph in ROUND_PHASES] + [0.0]) for e in edges.values()),
                 default=0.0)
    print(f"peak RSS in initial pruning: {ip:.1f} MiB ({ip / dense:.1f}x the dense model; target <= "
          f"{TARGETS['initial_prune']:.0f})")
    print(f"peak RSS in rounds (any edge, any round phase): {rounds:.1f} MiB ({rounds / dense:.1f}x the dense model; "
          f"target <= {TARGETS['rounds']:.0f} at density <= 0.2)")
    if "ratio" in rb:
        per_r, per_o = rb["reconfig_upload"] / args.edges / 1e6, rb["ordinary_upload"] / args.edges / 1e6
        print(f"upload per edge-round: reconfiguration round {rb['reconfig_round']} {per_r:.2f} MB vs ordinary round "
              f"{rb['ordinary_round']} {per_o:.2f} MB at density {rb['density']:.3f}: {rb['ratio']:.1f}x (target <= "
              f"{TARGETS['reconfig_upload_ratio']:.0f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"edges": edges, "dense_model_mib": dense, "round_bytes": rb,
                                               "peak_initial_prune_mib": ip, "peak_rounds_mib": rounds,
                                               "final_density": final_density, "wall_s": wall,
                                               "targets": TARGETS}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
