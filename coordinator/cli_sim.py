"""``prunefl-sim``: a whole federation in one process (in-process transport, the real coordinator and trainer).

    prunefl-sim --dataset mnist5k --model conv2 --clients 10 --partition dirichlet --method prunefl \\
                --rounds 200 --out runs/prunefl
    prunefl-sim --config sim.toml            # a TOML file holds what the flags hold (flags win)

Writes to --out: ``metrics.jsonl`` (one record per round), ``final_mask.npz`` and ``final_weights.npz``,
``model.onnx`` (the pruned model, when the ONNX exporter is available), ``summary.json`` and ``report.html``.
Exit codes: 0 ok, 2 usage or configuration error, 3 data or model error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.methods import FedAvg, FixedMask, IterativeMagnitude, PruneFL, Snip
from coordinator.report import write_report
from coordinator.run_options import (
    RunOptions,
    UsageError,
    add_run_arguments,
    check_run_options,
    given_values,
    option_names,
)
from coordinator.server import Coordinator, Method, ServerConfig
from coordinator.simulation import build_simulation
from coordinator.time_model import ProfileError, TimeModel, load_profile, sparse_thresholds
from prunefl_edge.model_spec import ModelSpec

log = logging.getLogger("prunefl-sim")

EXIT_OK, EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED = 0, 2, 3, 130


@dataclass
class SimOptions(RunOptions):
    """Everything a simulation run needs; the flags and the TOML keys are these field names."""

    clients: int = 10
    partition: str = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    engine_profile: str | None = None  # a profile measured on THIS machine: its switch-over densities are used
    extra: dict[str, Any] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    d = SimOptions()
    p = argparse.ArgumentParser(prog="prunefl-sim", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Exit codes: 0 ok, 2 usage/config error, 3 data/model error, 130 interrupted.")
    groups = add_run_arguments(
        p, d, data_title="data and model", dataset_help="mnist5k, digits, or a data file/directory",
        threads_help="C core threads per network",
        profile_help="device profile for simulated time: pi4-reference or a JSON file from `prunefl-edge profile`",
        out_help="output directory (metrics.jsonl, final model, report); default: none")
    g = groups["data"]
    g.add_argument("--clients", type=int, help=f"number of simulated clients (default {d.clients})")
    g.add_argument("--partition", choices=("iid", "dirichlet", "shards", "natural"),
                   help=f"how the training data is split (default {d.partition})")
    g.add_argument("--alpha", type=float, help=f"Dirichlet concentration (default {d.alpha})")
    g.add_argument("--shards-per-client", type=int, help=f"shards partition (default {d.shards_per_client})")
    groups["run"].add_argument("--engine-profile", help="a profile measured on this machine (`prunefl-edge "
                               "profile`) whose dense/sparse switch-over densities the simulated clients use (wall "
                               "time only; simulated time comes from --profile)")
    return p


def options_from_args(argv: Sequence[str] | None) -> tuple[SimOptions, bool]:
    args = build_parser().parse_args(argv)
    return make_options(given_values(args, option_names(SimOptions))), bool(args.quiet)


def make_options(values: dict[str, Any]) -> SimOptions:
    try:
        opts = SimOptions(**values)
    except TypeError as e:
        raise UsageError(str(e)) from e
    check_run_options(opts, [(opts.clients > 0, "--clients must be positive")])
    return opts


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
    if m in ("prunefl", "adaptive-only"):
        return PruneFL(initial=(m == "prunefl"), reconfig_interval=opts.reconfig_interval,
                       importance_window=opts.importance_window, max_density=opts.max_density,
                       initial_client=opts.initial_client, ip_max_passes=opts.ip_max_passes)
    if m == "fedavg":
        return FedAvg()
    if m == "snip":
        return Snip(opts.target_density)
    if m == "imp":
        return IterativeMagnitude(opts.target_density, steps=opts.imp_steps)
    if m in ("reinit", "random-reinit"):
        assert opts.mask_from is not None
        from coordinator.sim_inputs import random_weights

        masks = load_mask_file(opts.mask_from)
        weights = init if m == "reinit" else random_weights(spec, opts.seed + 1_000_000)
        return FixedMask(masks, weights, m)
    raise UsageError(f"unknown method {m!r}")


def engine_factory(threads: int) -> Callable[[ModelSpec], Any]:
    from prunefl_edge.engine import Network

    return lambda spec: Network(spec, threads=threads)


@dataclass
class SimResult:
    records: list[dict[str, Any]]
    coordinator: Coordinator
    out: Path | None


def run_simulation(opts: SimOptions, net_factory: Callable[[ModelSpec], Any] | None = None,
                   sgd_config: Callable[..., Any] | None = None, progress: bool = True) -> SimResult:
    """Run one simulation; writes the outputs when ``opts.out`` is set. Raises InputError / UsageError."""
    from coordinator.sim_inputs import load_data, load_model, partition

    data = load_data(opts.dataset, opts.test_fraction, opts.seed)
    spec, weights = load_model(opts.model, data.num_classes, tuple(data.x_train.shape[1:]), opts.seed)
    parts = partition(data.y_train, opts.clients, opts.partition, opts.seed, opts.alpha, opts.shards_per_client,
                      data.groups)
    clients = [(data.x_train[p], data.y_train[p]) for p in parts]
    try:
        profile = load_profile(opts.profile)
        time_model = TimeModel.from_profile(profile, spec, opts.local_steps)
        thresholds = sparse_thresholds(load_profile(opts.engine_profile) if opts.engine_profile else profile, spec)
    except ProfileError as e:
        raise UsageError(str(e)) from e
    net_factory = net_factory or engine_factory(opts.threads)
    method = make_method(opts, spec, weights)
    out = Path(opts.out) if opts.out else None
    sink = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        sink = open(out / "metrics.jsonl", "w")  # noqa: SIM115 - closed in finally
    t0 = time.perf_counter()

    def on_round(rec: dict[str, Any]) -> None:
        if sink is not None:
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
        if progress:
            acc = "" if rec.get("accuracy") is None else f" acc {rec['accuracy']:.4f}"
            log.info("%s round %d/%d%s density %.4f sim %.2fh up %.1fMB down %.1fMB wall %.0fs", rec["method"],
                     rec["round"] + 1, opts.rounds, acc, rec["density"], rec["sim_time_s"] / 3600,
                     rec["bytes_up"] / 1e6, rec["bytes_down"] / 1e6, time.perf_counter() - t0)

    cfg = ServerConfig(rounds=opts.rounds, clients_per_round=opts.clients_per_round, lr=opts.lr,
                       local_steps=opts.local_steps, batch_size=opts.batch_size, eval_every=opts.eval_every,
                       max_update_norm=opts.max_update_norm)
    coord = build_simulation(spec, clients, (data.x_test, data.y_test), method, cfg, time_model, opts.seed,
                             net_factory, weights=weights, sgd_config=sgd_config, on_round=on_round,
                             sparse_thresholds=thresholds)
    try:
        coord.run()
    finally:
        if sink is not None:
            sink.close()
        if out is not None:
            write_outputs(opts, coord, spec, out)
        coord.transport.close()
    return SimResult(coord.records, coord, out)


def write_outputs(opts: RunOptions, coord: Coordinator, spec: ModelSpec, out: Path,
                  title: str | None = None) -> None:
    from coordinator.sim_inputs import export_model

    st = coord.state
    np.savez(out / "final_mask.npz", **{f"m{p}": m for p, m in st.masks.items()})
    np.savez(out / "final_weights.npz", **{f"w{i}": w for i, w in enumerate(st.masked_weights())})
    onnx_path = None
    if opts.export_onnx:
        try:
            if export_model(spec, st.weights, st.masks, str(out / "model.onnx")):
                onnx_path = str(out / "model.onnx")
        except (OSError, ValueError) as e:
            log.warning("ONNX export failed (the model is in final_weights.npz / final_mask.npz): %s", e)
    last = next((r for r in reversed(coord.records) if r.get("accuracy") is not None), None)
    summary = {"options": {k: v for k, v in asdict(opts).items() if k != "extra"}, "rounds": st.round,
               "final_accuracy": last["accuracy"] if last else None, "final_density": st.density(),
               "sim_time_s": st.sim_time_s, "bytes_up": st.bytes_up, "bytes_down": st.bytes_down,
               "onnx": onnx_path, "initial_pruning": st.extra.get("initial_pruning")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if opts.report:
        path = write_report({opts.method: coord.records}, out, title=title or f"prunefl-sim: {opts.method}")
        log.info("report: %s", path)


def main(argv: Sequence[str] | None = None) -> int:
    from coordinator.sim_inputs import InputError

    try:
        opts, quiet = options_from_args(argv)
    except UsageError as e:
        print(f"prunefl-sim: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TypeError as e:  # a TOML value of the wrong type
        print(f"prunefl-sim: error: bad configuration value ({e})", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        res = run_simulation(opts)
    except UsageError as e:
        print(f"prunefl-sim: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (InputError, OSError) as e:
        print(f"prunefl-sim: data/model error: {e}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print("prunefl-sim: interrupted (metrics so far are in the output directory)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as e:
        print(f"prunefl-sim: the training core is not available ({e}); build it with cmake and set "
              "PRUNEFL_EDGE_LIB", file=sys.stderr)
        return EXIT_DATA
    except RuntimeError as e:  # prunefl_edge.engine.EngineError: the C core refused the model or the data
        print(f"prunefl-sim: engine error: {e}", file=sys.stderr)
        return EXIT_DATA
    if res.out is not None:
        print(f"prunefl-sim: done; outputs in {res.out}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
