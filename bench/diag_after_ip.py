#!/usr/bin/env python3
"""Why accuracy falls right after initial pruning: the model after IP, then each client's round-0 model evaluated on
the test set before averaging, then the averaged model (docs/REPRODUCTION.md section 7).

    python bench/diag_after_ip.py [--model mlp] [--lr 0.1] [--partition dirichlet] [--ip-max-passes 400]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.cli_sim import SimOptions, engine_factory
from coordinator.method_factory import make_method
from coordinator.server import ServerConfig
from coordinator.simulation import NetEvaluator, build_simulation
from coordinator.transport import Gathered
from prunefl_common.messages import TrainResult, dense_from_values
from prunefl_common.time_model import TimeModel, load_profile
from prunefl_edge.inputs import load_data, load_model
from prunefl_edge.partition import partition


def update_norm(res: TrainResult, start: list[np.ndarray], masks: dict[int, np.ndarray]) -> float:
    total = 0.0
    for i, (v, w) in enumerate(zip(res.values, start, strict=True)):
        base = w.ravel()[masks[i].ravel()] if i in masks else w.ravel()
        total += float(np.sum((np.asarray(v) - base) ** 2))
    return float(np.sqrt(total))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--partition", default="dirichlet", choices=("iid", "dirichlet", "shards"))
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--ip-max-passes", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    opts = SimOptions(dataset="mnist5k", model=args.model, clients=args.clients, partition=args.partition, alpha=0.5,
                      rounds=2, lr=args.lr, method="prunefl", ip_max_passes=args.ip_max_passes,
                      profile="pi4-reference", eval_every=1, threads=args.threads)
    data = load_data(opts.dataset, opts.test_fraction, opts.seed)
    spec, weights = load_model(opts.model, data.num_classes, tuple(data.x_train.shape[1:]), opts.seed)
    parts = partition(opts.partition, data.y_train, opts.clients, seed=opts.seed, alpha=opts.alpha)
    clients = [(data.x_train[p], data.y_train[p]) for p in parts]
    tm = TimeModel.from_profile(load_profile(opts.profile), spec, opts.local_steps)
    nf = engine_factory(args.threads)
    coord = build_simulation(spec, clients, (data.x_test, data.y_test), make_method(opts, spec, weights),
                             ServerConfig(rounds=2, clients_per_round=args.clients, lr=args.lr, eval_every=1), tm, 0,
                             nf, weights=weights)
    evaluate = NetEvaluator(nf(spec), data.x_test, data.y_test)
    captured: dict[int, list[TrainResult]] = {}
    gather = coord.transport.gather

    def spy(ids: Any, r: int, deadline: Any) -> Gathered:
        got = gather(ids, r, deadline)
        captured[r] = [x for x in got.results if isinstance(x, TrainResult)]
        return got

    coord.transport.gather = spy  # type: ignore[method-assign]
    coord.setup()
    ip = coord.records[-1]
    print(f"after IP ({coord.state.extra['initial_pruning']['passes']} passes): density {coord.state.density():.3f}, "
          f"test acc {ip['accuracy']:.4f}, test loss {ip['loss']:.3f}")
    start = [np.array(w) for w in coord.state.weights]
    masks = dict(coord.state.masks)
    for r in range(2):
        rec = coord.run_round()
        print(f"round {r}: averaged model test acc {rec['accuracy']:.4f} loss {rec['loss']:.3f}; clients' mean train "
              f"loss {rec['train_loss']:.3f}")
        if r == 0:
            accs = []
            for res in captured[0]:
                st = SimpleNamespace(masks=masks, mask_version=coord.state.mask_version,
                                     weights=dense_from_values(res.values, masks, coord.shapes, base=start))
                _, acc = evaluate(st)  # type: ignore[arg-type]
                accs.append(acc)
                print(f"   {res.client_id}: local loss {res.loss:.3f}, its model's test acc {acc:.4f}, update norm "
                      f"{update_norm(res, start, masks):.3f}")
            print(f"   mean of the local models' test accuracies {np.mean(accs):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
