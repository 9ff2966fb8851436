"""``prunefl-coord``: the coordinator of a real federation over MQTT.

    prunefl-coord --broker mqtt://10.0.0.2:1883 --federation lab --min-clients 8 --rounds 300 --out runs/lab
    prunefl-coord --broker embedded --spawn-edges 4 --out runs/local     # a whole federation on this machine
    prunefl-coord --config coord.toml [--resume]                          # a TOML file holds what flags hold

Discovers edges from their retained status, waits for --min-clients, runs PruneFL's initial pruning on one edge
(--initial-client, default the first id among those announcing at least the median sample count), then rounds
with --clients-per-round of the edges online, each closed at --deadline seconds with the results that came. After
every round the state is checkpointed atomically to OUT/checkpoint.npz; --resume continues from it. SIGTERM or
Ctrl-C finishes the round in progress, checkpoints and writes the outputs (metrics.jsonl, summary.json,
report.html, model.onnx, final_*.npz).

Exit codes: 0 done (or stopped cleanly by SIGTERM), 2 usage/configuration error, 3 data/model error or OUT not
writable (the last checkpoint stays whole: --resume),
4 broker unreachable or too few edges, 130 interrupted twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.run_options import (
    RunOptions,
    UsageError,
    add_run_arguments,
    check_run_options,
    given_values,
    option_names,
    typed_options,
)
from coordinator.server import Coordinator, Interrupted, ServerConfig
from coordinator.state import GlobalState, StateError
from coordinator.stragglers import StragglerPolicy
from prunefl_common.errors import ExitCode, InputError
from prunefl_common.protocol.topics import valid_id

log = logging.getLogger("prunefl-coord")


@dataclass
class CoordOptions(RunOptions):
    """A federation over MQTT: the shared run options (their coordinator defaults below) and the broker's."""

    rounds: int = 60
    clients_per_round: int = 4
    reconfig_interval: int = 10
    out: str | None = "runs/coord"
    broker: str = "embedded"
    federation: str = "default"
    client_id: str = "coordinator"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    max_payload_bytes: int = 4 * 2**20
    max_packet_bytes: int | None = None  # None: the limit the broker announces (MQTT 5 CONNACK), if any
    max_message_bytes: int | None = None  # None: derived from the model (Limits.for_model)
    min_clients: int = 2
    wait_timeout: float = 600.0
    deadline: float = 120.0
    straggler_misses: int = 3  # deadline misses in a row before an edge is left out of selection for a while
    straggler_bench: int = 5  # rounds it is left out the first time (doubled each further time, at most 80)
    spawn_edges: int = 0  # --broker embedded / local broker: start this many prunefl-edge processes here
    edge_threads: int = 1
    partition: str = "iid"
    resume: bool = False


def build_parser() -> argparse.ArgumentParser:
    d = CoordOptions()
    p = argparse.ArgumentParser(prog="prunefl-coord", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    g = p.add_argument_group("broker")
    g.add_argument("--broker", help=f"mqtt://host:port, mqtts://host:port, or embedded (default {d.broker})")
    g.add_argument("--federation", help=f"topic namespace prunefl/<federation>/ (default {d.federation})")
    g.add_argument("--client-id", help=f"MQTT client id / username (default {d.client_id})")
    g.add_argument("--ca-file", help="CA certificate (mqtts://)")
    g.add_argument("--cert-file", help="client certificate (mqtts:// with certificates)")
    g.add_argument("--key-file", help="client key")
    g.add_argument("--username", help="broker username")
    g.add_argument("--password-file", help="file holding the broker password")
    g.add_argument("--max-payload-bytes", type=int,
                   help=f"larger tasks go in chunks (default {d.max_payload_bytes})")
    g.add_argument("--max-packet-bytes", type=int,
                   help="the broker's packet limit when it does not announce one (an MQTT 5 broker's announced limit "
                        "is read and honoured without this)")
    g.add_argument("--max-message-bytes", type=int,
                   help="largest (reassembled) result accepted; partial chunked results held are bounded by twice this "
                        "(default: from the model, what its largest honest result can be x 1.25 + 1 MiB)")
    groups = add_run_arguments(
        p, d, data_title="model and evaluation",
        dataset_help="held-out evaluation data: mnist5k, digits or a path",
        threads_help="C core threads for evaluation",
        profile_help="device profile for the round-time model: pi4-reference (the paper's Pi coefficients), a JSON "
                     "file from `prunefl-edge profile`, or 'edges': the slowest of the profiles the edges measured and "
                     "announced",
        out_help=f"output directory (default {d.out})")
    g = groups["federation"]
    g.add_argument("--min-clients", type=int, help=f"edges online before starting (default {d.min_clients})")
    g.add_argument("--wait-timeout", type=float, help=f"seconds to wait for them (default {d.wait_timeout})")
    g.add_argument("--deadline", type=float, help=f"seconds a round waits for results (default {d.deadline})")
    g.add_argument("--straggler-misses", type=int,
                   help="an edge that misses the deadline this many rounds in a row is left out of selection for "
                        f"--straggler-bench rounds, doubled each time it misses again; 0: never (default "
                        f"{d.straggler_misses})")
    g.add_argument("--straggler-bench", type=int, help=f"rounds it is left out the first time (default "
                                                        f"{d.straggler_bench}; doubled up to 80)")
    g = groups["run"]
    g.add_argument("--resume", action="store_const", const=True, help="continue from OUT/checkpoint.npz")
    g.add_argument("--spawn-edges", type=int, help="start this many prunefl-edge processes on this machine, each "
                                                   "with an iid part of --dataset's training split (default 0)")
    g.add_argument("--edge-threads", type=int, help=f"threads per spawned edge (default {d.edge_threads})")
    g.add_argument("--partition", choices=("iid", "dirichlet", "shards"), help="spawned edges' data split")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def make_options(values: dict[str, Any]) -> CoordOptions:
    o = typed_options(CoordOptions, values)
    if not valid_id(o.federation):
        raise UsageError(f"--federation {o.federation!r} must be 1-64 characters of A-Z a-z 0-9 _ . - (it is an MQTT "
                         "topic level)")
    if not valid_id(o.client_id):
        raise UsageError(f"--client-id {o.client_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    if o.broker != "embedded":
        from prunefl_common.protocol.mqtt_client import BrokerConfig, BrokerConfigError

        try:
            BrokerConfig(url=o.broker).endpoint()
        except BrokerConfigError as e:
            raise UsageError(str(e)) from e
    check_run_options(o, [(o.min_clients > 0, "--min-clients must be positive"),
                          (o.deadline > 0, "--deadline must be positive (seconds)"),
                          (o.straggler_misses >= 0, "--straggler-misses must be >= 0 (0: never leave an edge out)"),
                          (o.straggler_bench > 0, "--straggler-bench must be positive (rounds)"),
                          (o.spawn_edges >= 0, "--spawn-edges must be >= 0"),
                          (o.edge_threads > 0, "--edge-threads > 0"),
                          (o.max_payload_bytes >= 65536, "--max-payload-bytes must be >= 65536"),
                          (o.max_packet_bytes is None or o.max_packet_bytes >= 4096,
                           "--max-packet-bytes must be >= 4096 (or left out: the broker's announced limit)"),
                          (o.max_message_bytes is None or o.max_message_bytes >= 65536,
                           "--max-message-bytes must be >= 65536 (or left out: derived from the model)"),
                          (bool(o.out), "--out must name a directory")])
    if o.spawn_edges and o.spawn_edges < o.min_clients:
        raise UsageError(f"--spawn-edges {o.spawn_edges} < --min-clients {o.min_clients}: the run would never start")
    return o


def options_from_args(argv: Sequence[str] | None) -> tuple[CoordOptions, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    return make_options(given_values(args, option_names(CoordOptions))), args


class StopFlag:
    """Set by SIGTERM / first Ctrl-C: the run stops after the round in progress."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        log.warning("%s: finishing the round in progress, then checkpointing (again to abort)",
                    signal.Signals(signum).name)
        self.event.set()


def edges_time_model(transport: Any, online: list[str], spec: Any, opts: CoordOptions, out: Path) -> Any:
    """``--profile edges``: the slowest announced profile, saved in OUT so that ``--resume`` uses the same one."""
    from prunefl_common.time_model import TimeModel, load_profile, slowest_announced

    saved = out / "time_profile.json"
    if opts.resume and saved.exists():
        prof = load_profile(saved)
        log.info("round-time model: %s (chosen when the run started)", saved)
    else:
        pick = slowest_announced({e: transport.client_info(e).get("profile") for e in online}, spec,
                                 opts.local_steps)
        if pick is None:
            log.warning("--profile edges: none of the edges online announced a usable device profile (is "
                        "[profile] measure = false on them?); using pi4-reference")
            prof = load_profile("pi4-reference")
        else:
            eid, prof = pick
            log.info("round-time model: edge %s's measured profile (the slowest of those announced): intercept "
                     "%.3e s per iteration", eid, prof.intercept_s)
            prof = dataclasses.replace(prof, name=f"edge {eid}", extra={"edge": eid})
        prof.save(saved)
    return TimeModel.from_profile(prof, spec, opts.local_steps)


def refuse_to_overwrite(ckpt: Path, out: Path) -> None:
    """Starting afresh must not destroy an interrupted run's learning: a checkpoint past round 0 (or past initial
    pruning) of a run whose summary does not say it completed is only continued (--resume) or removed by hand."""
    if not ckpt.exists():
        return
    try:
        old = GlobalState.load(ckpt)
    except StateError as e:
        raise UsageError(f"{ckpt} exists but cannot be read ({e}): remove it or choose another --out") from e
    if old.round == 0 and not old.extra.get("setup_done"):
        return  # nothing learned yet
    try:
        completed = bool(json.loads((out / "summary.json").read_text()).get("completed"))
    except (OSError, ValueError, AttributeError):
        completed = False
    if not completed:
        raise UsageError(f"{out} holds an interrupted run (checkpoint at round {old.round}): --resume continues it; "
                         f"to start over, remove {ckpt} or choose another --out")


def resumed_records(path: Path, state: GlobalState) -> list[dict[str, Any]]:
    """The metrics of the run so far, as the checkpoint has them: records of rounds the checkpoint does not hold
    (written just before a kill, redone now) and a torn last line are dropped, and the file rewritten so."""
    keep: list[dict[str, Any]] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return keep
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        stage, rnd = rec.get("stage"), rec.get("round")
        if stage == "initial_pruning" and not state.extra.get("setup_done"):
            continue
        if stage == "train" and not (isinstance(rnd, int) and rnd < state.round):
            continue
        keep.append(rec)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(path)
    return keep


def run(opts: CoordOptions, stop: StopFlag | None = None, progress: bool = True,
        hook: Callable[[dict[str, Any], Any, Any], None] | None = None) -> Coordinator:
    """One run; ``hook(record, local_edges, transport)`` is called after every round (tests use it to disturb
    the run)."""
    from coordinator.embedded_broker import EmbeddedBroker
    from coordinator.local_federation import LocalEdges
    from coordinator.method_factory import make_method
    from coordinator.run_outputs import write_outputs
    from coordinator.simulation import NetEvaluator
    from coordinator.transport_mqtt import MqttTransport
    from prunefl_common.model_spec import spec_to_dict
    from prunefl_common.protocol.mqtt_client import BrokerConfig
    from prunefl_common.protocol.wire import Limits
    from prunefl_common.run_id import new_run_id, with_run
    from prunefl_common.time_model import TimeModel, load_profile
    from prunefl_edge.engine import Network
    from prunefl_edge.inputs import load_data, load_model

    stop = stop or StopFlag()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(opts.dataset, opts.test_fraction, opts.seed)
    spec, weights = load_model(opts.model, data.num_classes, tuple(data.x_train.shape[1:]), opts.seed)
    time_model = None if opts.profile == "edges" else TimeModel.from_profile(load_profile(opts.profile), spec,
                                                                               opts.local_steps)
    method = make_method(opts, spec, weights)
    ckpt = out / "checkpoint.npz"
    if opts.resume:
        if not ckpt.exists():
            raise UsageError(f"--resume: no checkpoint at {ckpt} (start without --resume)")
        state = GlobalState.load(ckpt)
        if [w.shape for w in state.weights] != [p.shape for p in spec.param_shapes()]:
            raise StateError(f"{ckpt} holds another model than --model {opts.model}")
        log.info("resumed from %s at round %d (mask version %d, density %.4f)", ckpt, state.round,
                 state.mask_version, state.density())
    else:
        refuse_to_overwrite(ckpt, out)
        masks = {i: np.ones(p.shape, bool) for i, p in enumerate(spec.param_shapes()) if p.prunable}
        state = GlobalState.create(weights, masks, opts.seed)
    if not isinstance(state.extra.get("run_id"), str):  # a new run, or a checkpoint from before run ids
        state.extra["run_id"] = new_run_id()
    log.info("run %s (the edges resume only state of this run)", state.extra["run_id"])

    broker = None
    edges = None
    transport = None
    try:
        url = opts.broker
        if url == "embedded":
            broker = EmbeddedBroker().start()
            url = broker.url
        try:
            password = Path(opts.password_file).read_text().strip() if opts.password_file else None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--password-file {opts.password_file}: cannot read the password file "
                             f"({getattr(e, 'strerror', None) or e})") from e
        # reconnecting after a broker restart: at most a quarter of the round deadline between attempts, so the
        # round's results still come in time
        bc = BrokerConfig(url=url, ca_file=opts.ca_file, cert_file=opts.cert_file, key_file=opts.key_file,
                          username=opts.username, password=password, max_packet_bytes=opts.max_packet_bytes,
                          max_backoff_s=min(BrokerConfig.max_backoff_s, opts.deadline / 4))
        pshapes = spec.param_shapes()
        limits = Limits.for_model([p.shape for p in pshapes], [i for i, p in enumerate(pshapes) if p.prunable],
                                  "coordinator", opts.max_message_bytes)
        transport = MqttTransport(bc, opts.federation, with_run(spec_to_dict(spec), state.extra["run_id"]),
                                  client_id=opts.client_id,
                                  max_payload_bytes=opts.max_payload_bytes, limits=limits,
                                  reassembly_bytes=limits.reassembly_budget(opts.clients_per_round),
                                  sizes={i: p.size for i, p in enumerate(spec.param_shapes()) if p.prunable})
        transport.stop = stop.event  # SIGTERM ends initial pruning's long wait at once
        transport.start(fresh=not opts.resume)
        if opts.spawn_edges:
            spawn = LocalEdges(out / "edges", url, opts.federation, opts.spawn_edges, opts.dataset,
                               opts.test_fraction, opts.seed, opts.partition, opts.edge_threads,
                               measure_profile=opts.profile == "edges", model=opts.model)
            transport.settle()
            taken = [e for e in spawn.edge_ids() if e in transport.available_clients()]
            if taken:
                raise UsageError(f"--spawn-edges: {', '.join(taken)} already online in federation "
                                 f"{opts.federation!r} (edges of another coordinator, or left from an earlier run): "
                                 "stop them, or choose another --federation")
            edges = spawn
            edges.start(data)
        online = transport.wait_for_clients(opts.min_clients, opts.wait_timeout)
        if len(online) < opts.min_clients:
            raise ConnectionError(f"{len(online)} of --min-clients {opts.min_clients} edges came online within "
                                  f"{opts.wait_timeout:.0f} s ({', '.join(online) or 'none'}): check the edges' "
                                  f"broker URL and federation ({opts.federation!r}), or lower --min-clients")
        log.info("%d edges online: %s", len(online), ", ".join(online))
        if time_model is None:
            time_model = edges_time_model(transport, online, spec, opts, out)
        cfg = ServerConfig(rounds=opts.rounds, clients_per_round=opts.clients_per_round, lr=opts.lr,
                           local_steps=opts.local_steps, batch_size=opts.batch_size, eval_every=opts.eval_every,
                           deadline_s=opts.deadline, max_update_norm=opts.max_update_norm,
                           clip_updates=opts.clip_updates,
                           stragglers=StragglerPolicy(opts.straggler_misses, opts.straggler_bench,
                                                      max(80, opts.straggler_bench)))
        evaluator = NetEvaluator(Network(spec, threads=opts.threads), data.x_test, data.y_test)
        earlier = resumed_records(out / "metrics.jsonl", state) if opts.resume else []
        t0 = time.perf_counter()
        with open(out / "metrics.jsonl", "a" if opts.resume else "w") as sink:
            def on_round(rec: dict[str, Any]) -> None:
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                if hook is not None:
                    hook(rec, edges, transport)
                if progress and rec.get("stage") == "initial_pruning":
                    log.info("initial pruning: %s passes, density %.4f, acc %.4f, wall %.0fs", rec.get("passes"),
                             rec["density"], rec["accuracy"] or float("nan"), time.perf_counter() - t0)
                elif progress and rec.get("stage") == "resumed":
                    log.info("resumed at round %d (%s)", rec["round"],
                             "initial pruning done" if rec["setup_done"] else "initial pruning starts again")
                elif progress:
                    acc = "" if rec.get("accuracy") is None else f" acc {rec['accuracy']:.4f}"
                    log.info("round %d/%d%s density %.4f results %s/%s up %.2fMB down %.2fMB wall %.0fs",
                             rec["round"] + 1, opts.rounds, acc, rec["density"], rec.get("results", "-"),
                             rec.get("clients", "-"), rec["bytes_up"] / 1e6, rec["bytes_down"] / 1e6,
                             time.perf_counter() - t0)

            coord = Coordinator(transport, method, state, spec, cfg, time_model, evaluator, on_round)
            if opts.resume:  # the report and summary cover the whole run; the restart itself is a metrics record
                coord.records[:0] = earlier
                coord.record(stage="resumed", setup_done=bool(state.extra.get("setup_done")))
            if state.round == 0 and not state.extra.get("setup_done"):
                state.save(ckpt)  # a restart during initial pruning (minutes at one edge) can --resume
                try:
                    coord.setup()
                except Interrupted as e:
                    log.warning("%s: the checkpoint from before initial pruning stands; --resume starts it again", e)
                else:
                    state.extra["setup_done"] = True
                    state.save(ckpt)
            while state.round < cfg.rounds and not stop.event.is_set():
                coord.run_round()
                state.save(ckpt)
        if stop.event.is_set() and state.round < cfg.rounds:
            log.warning("stopped after round %d of %d; `--resume` continues from %s", state.round, cfg.rounds, ckpt)
        write_outputs(opts, coord, spec, out, title=f"prunefl-coord: {opts.method} over MQTT")
        summary = json.loads((out / "summary.json").read_text())
        summary.update({"transport": {"broker": opts.broker, "federation": opts.federation,
                                      **transport.counters(),
                                      "bytes_sent": transport.bytes_sent, "bytes_received": transport.bytes_received},
                        "completed": state.round >= cfg.rounds})
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return coord
    finally:
        if edges is not None:
            edges.stop()
        if transport is not None:
            transport.close()
        if broker is not None:
            broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    from coordinator.embedded_broker import EmbeddedBrokerError
    from prunefl_common.protocol.mqtt_client import BrokerConfigError
    from prunefl_common.time_model import ProfileError

    try:
        opts, args = options_from_args(argv)
    except UsageError as e:
        print(f"prunefl-coord: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        coord = run(opts, stop)
    except (UsageError, BrokerConfigError, ProfileError) as e:
        print(f"prunefl-coord: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except (InputError, StateError) as e:
        print(f"prunefl-coord: data/model error: {e}", file=sys.stderr)
        return ExitCode.DATA
    except (ConnectionError, EmbeddedBrokerError) as e:
        print(f"prunefl-coord: {e}", file=sys.stderr)
        return ExitCode.BROKER
    except OSError as e:  # OUT unwritable (disk full, read-only): the last checkpoint is whole (atomic writes)
        print(f"prunefl-coord: cannot write in {opts.out} ({e}); the last checkpoint there is intact: make room "
              "and run again with --resume", file=sys.stderr)
        return ExitCode.DATA
    except KeyboardInterrupt:
        print(f"prunefl-coord: aborted; the last checkpoint is in {opts.out}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except RuntimeError as e:  # the engine or a method (e.g. initial pruning failed at every edge)
        print(f"prunefl-coord: error: {e}", file=sys.stderr)
        return ExitCode.DATA
    trained = [r for r in coord.records if r.get("stage") == "train" and r.get("clients")]
    empty = [r["round"] + 1 for r in trained if not r.get("results")]
    if trained and len(empty) == len(trained):
        print(f"prunefl-coord: no round got a result ({len(trained)} rounds with tasks sent, 0 results): the "
              "model did not learn. Check the edges' logs and the broker's log (a result above the broker's "
              "packet limit, max_packet_size, is dropped with the connection: give --max-packet-bytes when the "
              f"broker does not announce it); outputs in {opts.out}", file=sys.stderr)
        return ExitCode.BROKER
    if empty:
        print(f"prunefl-coord: warning: {len(empty)} of {len(trained)} rounds got no result (rounds "
              f"{', '.join(map(str, empty[:20]))}{', ...' if len(empty) > 20 else ''})", file=sys.stderr)
    last = next((r for r in reversed(coord.records) if r.get("accuracy") is not None), None)
    print(f"prunefl-coord: {coord.state.round} rounds; accuracy {last['accuracy'] if last else float('nan'):.4f}, "
          f"density {coord.state.density():.4f}; outputs in {opts.out} (report.html, metrics.jsonl, model.onnx)",
          file=sys.stderr)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
