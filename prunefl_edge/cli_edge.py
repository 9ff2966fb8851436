"""``prunefl-edge start`` (the edge agent) and ``prunefl-edge check`` (configuration, data and broker).

The configuration file is ``--config``, else $PRUNEFL_EDGE_CONFIG, else /etc/prunefl-edge/edge.toml.
Exit codes: 0 ok (start: stopped by SIGTERM), 2 configuration or installation error (e.g. no C core), 3 data error,
4 broker unreachable.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import time

from prunefl_common.errors import ExitCode
from prunefl_edge.edge_config import DEFAULT_CONFIG, ConfigError, EdgeConfig, config_path, load_edge_config

log = logging.getLogger("prunefl-edge")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"the edge's TOML file (default $PRUNEFL_EDGE_CONFIG or {DEFAULT_CONFIG})")


def _load(args: argparse.Namespace) -> EdgeConfig:
    return load_edge_config(config_path(args.config))


PARENT_ENV = "PRUNEFL_EDGE_PARENT_PID"  # set by a coordinator that spawns this edge (--spawn-edges)


def die_with_parent() -> None:
    """An edge spawned by a coordinator (``PRUNEFL_EDGE_PARENT_PID`` set) gets SIGTERM when that coordinator dies,
    however it dies (``kill -9`` included): Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``), set at once,
    then a check that the parent did not die before it was set. Elsewhere (no prctl) it only logs that it cannot."""
    want = os.environ.get(PARENT_ENV)
    if not want:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as e:
        log.warning("cannot tie this edge's life to its coordinator's (%s): stop it by hand when that one is gone", e)
        return
    if str(os.getppid()) != want:  # the coordinator was gone before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def start(args: argparse.Namespace) -> int:
    from prunefl_edge.datasets import DatasetError
    from prunefl_edge.edge_agent import EdgeAgent, load_local_data
    from prunefl_edge.partition import PartitionError

    die_with_parent()
    try:
        cfg = _load(args)
    except ConfigError as e:
        print(f"prunefl-edge start: configuration error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        x, y, classes = load_local_data(cfg)
    except (DatasetError, PartitionError, OSError) as e:
        print(f"prunefl-edge start: data error: {e} (check [data] in {cfg.source})", file=sys.stderr)
        return ExitCode.DATA
    try:
        from prunefl_edge._native import NativeLibraryError, load

        load()  # now, not at the first task: a missing C core is an installation error, not a failed round
    except NativeLibraryError as e:
        print(f"prunefl-edge start: {e}", file=sys.stderr)
        return ExitCode.USAGE
    from prunefl_edge.blas_check import blas_note
    from prunefl_edge.engine import build_info

    info = build_info()
    gemm, warning = blas_note(info)
    log.info("C core: %s; dense GEMM: %s", info, gemm)
    if warning:
        log.warning("%s", warning)
    from prunefl_common.protocol.mqtt_client import BrokerConfigError

    try:
        agent = EdgeAgent(cfg, x, y, classes)
    except BrokerConfigError as e:
        print(f"prunefl-edge start: configuration error: {cfg.source}: [broker] {e}", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as e:
        print(f"prunefl-edge start: cannot use state_dir {cfg.state_dir}: {e}", file=sys.stderr)
        return ExitCode.USAGE

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s: stopping after the task in progress", signal.Signals(signum).name)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return ExitCode.OK


def _profile_line(cfg: EdgeConfig) -> str:
    from pathlib import Path

    from prunefl_edge.edge_profile import PROFILE_FILE

    if cfg.profile.file is not None:
        return f"{cfg.profile.file} (given in [profile] file)"
    if not cfg.profile.measure:
        return "none announced ([profile] measure = false)"
    cached = Path(cfg.state_dir) / PROFILE_FILE
    if cached.exists():
        return f"{cached} (measured earlier; measured again if threads, model or the C core changed)"
    return f"measured at the first start ({cfg.profile.model}), then cached in {cached}"


def check(args: argparse.Namespace) -> int:
    from prunefl_common.protocol.mqtt_client import MqttClient
    from prunefl_common.version import version
    from prunefl_edge.datasets import DatasetError
    from prunefl_edge.edge_agent import load_local_data
    from prunefl_edge.partition import PartitionError

    print(f"version ok    prunefl-edge {version()}")
    path = config_path(args.config)
    try:
        cfg = _load(args)
    except ConfigError as e:
        print(f"config  FAIL  {e}")
        return ExitCode.USAGE
    print(f"config  ok    {path}: edge {cfg.id}, federation {cfg.federation}, {cfg.threads} threads")
    try:
        x, y, classes = load_local_data(cfg)
    except (DatasetError, PartitionError, OSError) as e:
        print(f"data    FAIL  {e}")
        return ExitCode.DATA
    print(f"data    ok    {len(y)} samples of shape {tuple(x.shape[1:])}, {classes} classes")
    try:
        from prunefl_edge.blas_check import blas_note
        from prunefl_edge.engine import build_info

        info = build_info()
    except (ImportError, OSError) as e:
        print(f"core    FAIL  the C core cannot be loaded ({e}): reinstall prunefl-edge or set PRUNEFL_EDGE_LIB")
        return ExitCode.USAGE
    gemm, warning = blas_note(info)
    print(f"core    ok    {info}; dense GEMM: {gemm}")
    if warning:
        print(f"core    WARN  {warning}")
    print(f"profile ok    {_profile_line(cfg)}")
    client = MqttClient(cfg.broker, client_id=f"{cfg.id}-check")
    t0 = time.perf_counter()
    try:
        ok = client.start(wait_s=10.0)
    finally:
        client.stop()
    if not ok:
        print(f"broker  FAIL  no connection to {cfg.broker.url} within 10 s: is the broker up, the port open, "
              "and are the TLS files / credentials right? (see the log lines above)")
        return ExitCode.BROKER
    print(f"broker  ok    {cfg.broker.url} in {time.perf_counter() - t0:.2f} s")
    return ExitCode.OK
