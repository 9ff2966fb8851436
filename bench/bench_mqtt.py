"""The MQTT runtime's costs, each printed beside a reference measured in the same run.

1. Coordinator decode + aggregate of sparse updates (Conv-2, K=4 results at the given density) vs a plain
   numpy copy of the same bytes (goal: >= 50% of the copy's throughput).
2. Bytes per round (4 tasks + 4 results, wire format) at the density vs a dense FedAvg round.
3. Round overhead: time a round takes beyond its slowest edge's training, with 4 and 16 real prunefl-edge
   processes through Mosquitto (MLP on digits: short training, so the overhead shows).

    python bench/bench_mqtt.py [--density 0.1] [--rounds 10] [--edges 4,16]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from coordinator.aggregation import aggregate_results, kept_index  # noqa: E402
from prunefl_common.messages import MaskUpdate, Task, TaskKind, TrainConfig, TrainResult, kept_values  # noqa: E402
from prunefl_common.protocol.wire import decode, encode_result, encode_task  # noqa: E402
from prunefl_edge.inputs import load_model  # noqa: E402


def decode_aggregate(density: float, k: int = 4, repeat: int = 7) -> None:
    spec, weights = load_model("conv2", 62, (1, 28, 28), 0)
    rng = np.random.default_rng(0)
    masks = {i: rng.random(w.shape) < density for i, w in enumerate(weights) if w.ndim > 1}
    vals = kept_values(weights, masks)
    blobs = [encode_result(TrainResult(f"e{i}", 5, 1, 100, [v + np.float32(i) for v in vals]), federation="f",
                           sender=f"e{i}") for i in range(k)]
    nbytes = sum(len(b) for b in blobs)
    ours, ref = [], []
    index = kept_index(masks)  # the coordinator computes it once per mask version (every 50 rounds in the paper)
    for _ in range(repeat):
        t = time.perf_counter()
        results = [decode(b).body for b in blobs]
        aggregate_results(weights, masks, results, 5, 1, index)
        ours.append(time.perf_counter() - t)
        src = np.frombuffer(b"".join(blobs), np.uint8)
        t = time.perf_counter()
        src.copy()
        ref.append(time.perf_counter() - t)
    a, r = statistics.median(ours), statistics.median(ref)
    print(f"decode+aggregate  {k} Conv-2 results at density {density}: {nbytes / 1e6:.1f} MB in {a * 1e3:.1f} ms "
          f"= {nbytes / a / 1e9:.2f} GB/s; numpy copy of the same bytes {nbytes / r / 1e9:.2f} GB/s; "
          f"ratio {r / a:.2f} (goal >= 0.5)")


def bytes_per_round(density: float, k: int = 4) -> None:
    spec, weights = load_model("conv2", 62, (1, 28, 28), 0)
    rng = np.random.default_rng(1)

    def one(d: float) -> int:
        masks = {i: (rng.random(w.shape) < d) if d < 1 else np.ones(w.shape, bool)
                 for i, w in enumerate(weights) if w.ndim > 1}
        vals = kept_values(weights, masks)
        task = encode_task(Task(5, TaskKind.TRAIN, MaskUpdate(1), vals, TrainConfig(lr=0.1)), federation="f",
                           sender="c")
        res = encode_result(TrainResult("e", 5, 1, 100, vals), federation="f", sender="e")
        return k * (len(task) + len(res))

    ours, dense = one(density), one(1.0)
    print(f"bytes per round   {k} edges, Conv-2 at density {density}: {ours / 1e6:.1f} MB; dense FedAvg round "
          f"{dense / 1e6:.1f} MB; ratio {ours / dense:.3f}")


def round_overhead(n_edges: int, rounds: int) -> None:
    from mosquitto_util import running_mosquitto

    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp) / "broker") as broker:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "coordinator.cli_coord", "--broker", broker.url, "--spawn-edges", str(n_edges),
               "--min-clients", str(n_edges), "--clients-per-round", str(n_edges), "--dataset", "digits",
               "--model", "mlp", "--method", "fedavg", "--rounds", str(rounds), "--eval-every", str(rounds),
               "--out", str(out), "--no-report", "--no-onnx", "-q"]
        subprocess.run(cmd, check=True)
        import json

        recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        walls = np.diff([0.0] + [r["wall_time_s"] for r in recs])[1:]  # round 0 includes connecting
        comp = [r["max_compute_s"] or 0.0 for r in recs[1:]]
        over = [w - c for w, c in zip(walls, comp)]
        print(f"round overhead    {n_edges} edges through Mosquitto: median round {statistics.median(walls) * 1e3:.0f} "
              f"ms, slowest edge's training {statistics.median(comp) * 1e3:.0f} ms, overhead "
              f"{statistics.median(over) * 1e3:.0f} ms (2-core machine: the edges share the cores)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--edges", default="4,16")
    args = p.parse_args()
    decode_aggregate(args.density)
    bytes_per_round(args.density)
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        print("round overhead    skipped: mosquitto is not installed (apt-get install mosquitto)")
        return 0
    for n in (int(x) for x in args.edges.split(",")):
        round_overhead(n, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
