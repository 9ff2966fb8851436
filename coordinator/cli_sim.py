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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator import run_options
from coordinator.method_factory import make_method
from coordinator.run_options import RunOptions, UsageError, typed_options
from coordinator.run_outputs import write_outputs
from coordinator.server import Coordinator, ServerConfig
from coordinator.simulation import build_simulation
from prunefl_common.errors import ExitCode, InputError
from prunefl_common.model_spec import ModelSpec
from prunefl_common.time_model import ProfileError, TimeModel, load_profile, sparse_thresholds

log = logging.getLogger("prunefl-sim")


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
    groups = run_options.add_run_arguments(
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
    return make_options(run_options.given_values(args, run_options.option_names(SimOptions))), bool(args.quiet)


def make_options(values: dict[str, Any]) -> SimOptions:
    opts = typed_options(SimOptions, values)
    run_options.check_run_options(opts, [(opts.clients > 0, "--clients must be positive")])
    return opts


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
    from prunefl_edge.inputs import load_data, load_model
    from prunefl_edge.partition import partition

    data = load_data(opts.dataset, opts.test_fraction, opts.seed)
    spec, weights = load_model(opts.model, data.num_classes, tuple(data.x_train.shape[1:]), opts.seed)
    try:
        parts = partition(opts.partition, data.y_train, opts.clients, seed=opts.seed, alpha=opts.alpha,
                          shards_per_client=opts.shards_per_client, groups=data.groups)
    except ValueError as e:
        raise InputError(f"partition {opts.partition!r}: {e}") from e
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
                       max_update_norm=opts.max_update_norm, clip_updates=opts.clip_updates)
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts, quiet = options_from_args(argv)
    except UsageError as e:
        print(f"prunefl-sim: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except TypeError as e:  # a TOML value of the wrong type
        print(f"prunefl-sim: error: bad configuration value ({e})", file=sys.stderr)
        return ExitCode.USAGE
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        res = run_simulation(opts)
    except UsageError as e:
        print(f"prunefl-sim: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except (InputError, OSError) as e:
        print(f"prunefl-sim: data/model error: {e}", file=sys.stderr)
        return ExitCode.DATA
    except KeyboardInterrupt:
        print("prunefl-sim: interrupted (metrics so far are in the output directory)", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except ImportError as e:
        print(f"prunefl-sim: the training core is not available ({e}); build it with cmake and set "
              "PRUNEFL_EDGE_LIB", file=sys.stderr)
        return ExitCode.DATA
    except RuntimeError as e:  # prunefl_edge.engine.EngineError: the C core refused the model or the data
        print(f"prunefl-sim: engine error: {e}", file=sys.stderr)
        return ExitCode.DATA
    if res.out is not None:
        print(f"prunefl-sim: done; outputs in {res.out}", file=sys.stderr)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
