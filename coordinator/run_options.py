"""The options a run of PruneFL takes, whether simulated (``prunefl-sim``) or over MQTT (``prunefl-coord``): the
data and model evaluated against, the method, rounds, local SGD, pruning, the round-time model and the outputs.

Each command line extends :class:`RunOptions` with its own fields (and its own defaults where they differ), adds
the shared flags with :func:`add_run_arguments`, reads a TOML file of the same keys with :func:`load_config` and
checks values with :func:`check_run_options`, so that a flag means the same in both and is defined once.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from typing import Any

from coordinator.methods import METHOD_NAMES
from prunefl_common.toml_file import read_toml


class UsageError(ValueError):
    """Bad flags or configuration (exit 2)."""


@dataclass
class RunOptions:
    dataset: str = "mnist5k"  # the simulator's clients' data; the coordinator evaluates on its held-out part
    test_fraction: float = 0.2
    model: str = "conv2"
    method: str = "prunefl"
    rounds: int = 200
    clients_per_round: int = 10
    lr: float = 0.25
    max_update_norm: float | None = None  # results with a larger update (L2) are rejected, not aggregated
    clip_updates: float | None = None  # robust aggregate: clip updates to this x the round's median norm
    local_steps: int = 5
    batch_size: int = 20
    eval_every: int = 10
    reconfig_interval: int = 50
    importance_window: int | None = None
    importance_upload: str = "sparse"  # "sparse": kept positions + the top pruned z; "dense": every position
    importance_top: float = 1.0  # sparse: pruned positions sent per layer, as a multiple of its kept count (raised
    # by PruneFL when a reconfiguration regrows close to it)
    max_density: float | None = None
    target_density: float = 0.13  # snip / imp / feddst
    feddst_interval: int = 10  # rounds between FedDST's readjustments (the reference's R_adj)
    feddst_distribution: str = "erk"  # FedDST's per-layer densities: "erk" (the reference's default) or "uniform"
    feddst_alpha: float = 0.05  # FedDST's readjusted fraction of kept weights (cosine-annealed to 0 at half the run)
    imp_steps: int = 20
    initial_client: str | None = None
    ip_max_passes: int = 1000
    ip_interval: int | None = None  # passes between initial pruning's reconfigurations (None: --reconfig-interval)
    ip_budget_s: float | None = None  # device-time budget of initial pruning (simulated seconds, compute only)
    initial_deadline: float | None = None  # seconds; None: from the time model (see PruneFL)
    # the reference's semantics by default (docs/REPRODUCTION.md); the other value of each is an option to measure
    ip_importance: str = "masked"  # initial pruning's z: "masked" (0 at pruned weights, no regrowth) or "dense"
    mask_ties: str = "keep"  # weights tied with the delta-cut magnitude: "keep" (reference) or "exact"
    importance_from: str = "interval"  # whose z a reconfiguration sums: "interval" (every client that trained in
    # the importance window) or "selected" (only the clients selected in the reconfiguration round)
    mask_from: str | None = None  # reinit / random-reinit: a run directory or final_mask.npz
    profile: str = "pi4-reference"
    seed: int = 0
    threads: int = 1
    out: str | None = None
    report: bool = True
    export_onnx: bool = True


def option_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.name != "extra"]


def add_run_arguments(p: argparse.ArgumentParser, d: RunOptions, *, data_title: str, dataset_help: str,
                      threads_help: str, profile_help: str, out_help: str) -> dict[str, argparse._ArgumentGroup]:
    """The shared flags, in groups ``data``, ``federation``, ``pruning`` and ``run`` (returned, for each command's
    own flags). Defaults shown are ``d``'s; a flag not given stays None so that a config file can set it."""
    p.add_argument("--config", help="TOML file whose keys are these options (dashes or underscores); flags win")
    groups = {"data": p.add_argument_group(data_title)}
    g = groups["data"]
    g.add_argument("--dataset", help=f"{dataset_help} (default {d.dataset})")
    g.add_argument("--test-fraction", type=float, help=f"held-out fraction when the data has no test split "
                                                       f"(default {d.test_fraction})")
    g.add_argument("--model", help=f"conv2, mlp, vgg11 or a .onnx file (default {d.model})")
    g = groups["federation"] = p.add_argument_group("federation")
    g.add_argument("--method", choices=METHOD_NAMES, help=f"(default {d.method})")
    g.add_argument("--rounds", type=int, help=f"(default {d.rounds})")
    g.add_argument("--clients-per-round", type=int, help=f"K clients per round (default {d.clients_per_round})")
    g.add_argument("--lr", type=float, help=f"SGD learning rate (default {d.lr})")
    g.add_argument("--local-steps", type=int, help=f"local SGD steps per round (default {d.local_steps})")
    g.add_argument("--batch-size", type=int, help=f"(default {d.batch_size})")
    g.add_argument("--eval-every", type=int, help=f"evaluate every k rounds (default {d.eval_every})")
    g.add_argument("--max-update-norm", type=float, help="reject results whose update (L2 norm over all parameters "
                                                         "of returned minus sent values) is larger (default: no bound)")
    g.add_argument("--clip-updates", type=float, metavar="FACTOR",
                   help="robust aggregate: scale every update whose L2 norm exceeds FACTOR x the median norm of the "
                        "round's updates down to that norm (e.g. 2; default off)")
    g = groups["pruning"] = p.add_argument_group("pruning")
    g.add_argument("--reconfig-interval", type=int, help=f"rounds between reconfigurations (default "
                                                         f"{d.reconfig_interval})")
    g.add_argument("--importance-window", type=int, help="rounds before a reconfiguration in which clients "
                                                         "accumulate importance (default: the whole interval)")
    g.add_argument("--importance-upload", choices=("sparse", "dense"),
                   help=f"what clients upload for a reconfiguration: z at kept positions plus the largest z at "
                        f"pruned ones (sparse), or every position (dense, for checking) "
                        f"(default {d.importance_upload})")
    g.add_argument("--importance-top", type=float, help=f"sparse upload: pruned positions per layer, as a fraction "
                                                        f"of its kept weights (default {d.importance_top})")
    g.add_argument("--max-density", type=float, help="cap on the density chosen by PruneFL")
    g.add_argument("--target-density", type=float, help=f"density of snip / imp / feddst (default {d.target_density})")
    g.add_argument("--feddst-interval", type=int,
                   help=f"rounds between FedDST's readjustments (default {d.feddst_interval})")
    g.add_argument("--feddst-alpha", type=float,
                   help=f"fraction of kept weights FedDST readjusts, annealed to 0 (default {d.feddst_alpha})")
    g.add_argument("--feddst-distribution", choices=("erk", "uniform"),
                   help=f"FedDST's per-layer densities (default {d.feddst_distribution})")
    g.add_argument("--imp-steps", type=int, help=f"pruning steps of imp (default {d.imp_steps})")
    g.add_argument("--initial-client", help="client id for initial pruning (default: the first id among the "
                                            "clients announcing at least the median sample count)")
    g.add_argument("--initial-deadline", type=float, metavar="SECONDS",
                   help="seconds the initial-pruning client has to answer before the next one is asked (two others "
                        "at most; default: 3 x the time model's estimate of --ip-max-passes dense passes + 300)")
    g.add_argument("--ip-max-passes", type=int, help=f"initial-pruning pass limit (default {d.ip_max_passes})")
    g.add_argument("--ip-interval", type=int, help="passes between initial pruning's reconfigurations (default: "
                                                  "--reconfig-interval, as the reference)")
    g.add_argument("--ip-budget-s", type=float,
                   help="device-time budget of initial pruning (compute only, by the time model): its pass limit "
                        "becomes the passes of the dense model that fit in it (default: none)")
    g.add_argument("--ip-importance", choices=("masked", "dense"),
                   help="initial pruning's importance: masked (the reference: z = 0 at pruned weights, no regrowth) "
                        f"or dense (default {d.ip_importance})")
    g.add_argument("--mask-ties", choices=("keep", "exact"),
                   help="kept weights tied with the delta-cut magnitude: keep (the reference) or exact (exactly "
                        f"int(delta * kept) removal candidates) (default {d.mask_ties})")
    g.add_argument("--importance-from", choices=("interval", "selected"),
                   help="whose importance a reconfiguration sums: interval (every client that trained in the "
                        "window, the reference) or selected (the reconfiguration round's clients only) "
                        f"(default {d.importance_from})")
    g.add_argument("--mask-from", help="reinit / random-reinit: a run directory or its final_mask.npz")
    g.add_argument("--profile", help=f"{profile_help} (default {d.profile})")
    g = groups["run"] = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help=f"(default {d.seed})")
    g.add_argument("--threads", type=int, help=f"{threads_help} (default {d.threads})")
    g.add_argument("--out", help=out_help)
    g.add_argument("--no-report", dest="report", action="store_const", const=False, help="skip report.html")
    g.add_argument("--no-onnx", dest="export_onnx", action="store_const", const=False, help="skip model.onnx")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return groups


def given_values(args: argparse.Namespace, config_known: Collection[str]) -> dict[str, Any]:
    """The config file's values (if ``--config``), overridden by every flag given."""
    values: dict[str, Any] = load_config(args.config, config_known) if args.config else {}
    for k, v in vars(args).items():
        if k in ("config", "quiet", "verbose") or v is None:
            continue
        values[k] = v
    return values


def load_config(path: str, known: Collection[str]) -> dict[str, Any]:
    """A TOML options file whose keys (dashes or underscores) must be in ``known``."""
    data = read_toml(path, UsageError, f"config file {path}")
    out = {}
    for k, v in data.items():
        key = k.replace("-", "_")
        if key not in known:
            raise UsageError(f"{path}: unknown key {k!r}; known keys: {', '.join(sorted(known))}")
        out[key] = v
    return out


_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def typed_options(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)`` after checking each value against its field's type (a TOML file can hold anything): a
    UsageError names the key, what it must be and what it is. Integers are accepted where numbers are, and given as
    floats; booleans are not integers."""
    hints = {f.name: str(f.type) for f in fields(cls)}
    out = {}
    for k, v in values.items():
        if k not in hints:
            raise UsageError(f"unknown option {k!r}")
        parts = [p.strip() for p in hints[k].split("|")]
        if v is None and "None" in parts:
            out[k] = v
            continue
        kinds = [p for p in parts if p in _KINDS]
        ok = next((p for p in kinds if isinstance(v, _KINDS[p]) and (p == "bool" or not isinstance(v, bool))), None)
        if ok is None:
            want = " or ".join(_NAMES[p] for p in kinds) or hints[k]
            flag = "--" + k.replace("_", "-")
            raise UsageError(f"{k} must be {want}, got {v!r} ({type(v).__name__}): fix {flag} or the key {k} in the "
                             "--config file")
        out[k] = float(v) if ok == "float" else v
    return cls(**out)


def check_run_options(o: RunOptions, extra: Sequence[tuple[bool, str]] = ()) -> None:
    """UsageError naming the first option out of range (the shared checks, then ``extra``)."""
    checks = [(o.rounds > 0, "--rounds must be positive"),
              (o.clients_per_round > 0, "--clients-per-round must be positive"),
              (o.lr > 0, "--lr must be positive"), (o.local_steps > 0, "--local-steps must be positive"),
              (o.batch_size > 0, "--batch-size must be positive"), (o.eval_every > 0, "--eval-every > 0"),
              (o.reconfig_interval > 0, "--reconfig-interval must be positive"),
              (o.importance_upload in ("sparse", "dense"), "--importance-upload must be sparse or dense"),
              (isinstance(o.importance_top, int | float) and 0 <= o.importance_top <= 1e6,
               "--importance-top must be a number >= 0"),
              (0 < o.target_density <= 1, "--target-density must be in (0, 1]"),
              (o.ip_interval is None or o.ip_interval > 0, "--ip-interval must be positive"),
              (o.ip_budget_s is None or o.ip_budget_s > 0, "--ip-budget-s must be positive"),
              (o.feddst_interval > 0, "--feddst-interval must be positive"),
              (o.feddst_distribution in ("erk", "uniform"), "--feddst-distribution must be erk or uniform"),
              (0 <= o.feddst_alpha < 1, "--feddst-alpha must be in [0, 1)"),
              (o.max_density is None or 0 < o.max_density <= 1, "--max-density must be in (0, 1]"),
              (o.max_update_norm is None or o.max_update_norm > 0, "--max-update-norm must be positive"),
              (o.clip_updates is None or o.clip_updates >= 1, "--clip-updates must be >= 1 (a multiple of the "
                                                                "round's median update norm)"),
              (0 < o.test_fraction < 1, "--test-fraction must be in (0, 1)"),
              (o.threads > 0, "--threads must be positive"),
              (o.initial_deadline is None or o.initial_deadline > 0, "--initial-deadline must be positive (seconds)"),
              (o.ip_importance in ("masked", "dense"), "--ip-importance must be masked or dense"),
              (o.mask_ties in ("keep", "exact"), "--mask-ties must be keep or exact"),
              (o.importance_from in ("interval", "selected"), "--importance-from must be interval or selected"),
              (o.method in METHOD_NAMES, f"--method must be one of {', '.join(METHOD_NAMES)}"), *extra]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    if o.method in ("reinit", "random-reinit") and not o.mask_from:
        raise UsageError(f"--method {o.method} needs --mask-from RUN_DIR (the final mask of a PruneFL run)")
