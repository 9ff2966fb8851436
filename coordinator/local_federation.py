"""A federation's edges on this machine (``prunefl-coord --spawn-edges N``): each edge is a real
``prunefl-edge start`` process with its own configuration file, state directory and data file, exactly as on a
device; only the broker is local.

Each edge gets one part (iid, dirichlet or shards) of the training split the coordinator evaluates against
(the held-out part never reaches an edge), written as ``edges/<id>/train.npz``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from prunefl_edge.edge_config import write_edge_config
from prunefl_edge.partition import partition

log = logging.getLogger(__name__)


class LocalEdges:
    def __init__(self, root: Path, broker_url: str, federation: str, n: int, dataset: str, test_fraction: float,
                 seed: int, how: str = "iid", threads: int = 1, measure_profile: bool = False,
                 model: str = "conv2", broker_urls: dict[str, str] | None = None, keepalive: int = 10) -> None:
        self.root = Path(root).resolve()  # absolute: the edges run in their own directories
        self.broker_url, self.federation, self.n = broker_url, federation, n
        self.dataset, self.test_fraction, self.seed, self.how, self.threads = dataset, test_fraction, seed, how, threads
        self.measure_profile = measure_profile  # edges measure their device profile (of `model`) at first start
        self.model = model
        # per-edge broker URLs (e.g. one edge behind a proxy in a test): an edge not named uses broker_url
        self.broker_urls = dict(broker_urls or {})
        self.keepalive = keepalive  # seconds; the broker publishes an edge's Last Will after 1.5 x this of silence
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.configs: dict[str, Path] = {}

    def edge_ids(self) -> list[str]:
        width = len(str(max(0, self.n - 1)))
        return [f"edge{i:0{width}d}" for i in range(self.n)]

    def prepare(self, data: Any) -> None:
        """Write each edge's data part and configuration file."""
        parts = partition(self.how, data.y_train, self.n, seed=self.seed)
        for eid, idx in zip(self.edge_ids(), parts):
            d = self.root / eid
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / "train.npz", x_train=data.x_train[idx], y_train=data.y_train[idx])
            cfg = d / "edge.toml"
            write_edge_config(cfg, {
                "edge": {"id": eid, "federation": self.federation, "threads": self.threads,
                         "state_dir": str(d / "state")},
                "broker": {"url": self.broker_urls.get(eid, self.broker_url), "keepalive": self.keepalive},
                "data": {"path": str(d / "train.npz"), "format": "npz"},
                "profile": {"measure": self.measure_profile,
                            "model": str(Path(self.model).resolve()) if self.model.endswith(".onnx") else self.model},
            })
            self.configs[eid] = cfg

    def start_edge(self, eid: str) -> subprocess.Popen[bytes]:
        log_file = open(self.root / eid / "edge.log", "ab")  # noqa: SIM115 - the child holds it
        cmd = [sys.executable, "-m", "prunefl_edge.cli", "start", "--config", str(self.configs[eid])]
        env = dict(os.environ)
        # the edge gets SIGTERM when this process dies, even by kill -9 (Linux's parent-death signal, armed by the
        # edge at start): no orphans that a repeated --spawn-edges would double. It is tied to the thread that
        # spawns it: start edges from the main thread (as prunefl-coord does)
        env["PRUNEFL_EDGE_PARENT_PID"] = str(os.getpid())
        # the child imports the same prunefl_edge / coordinator as this process (a source tree or the install)
        import prunefl_edge

        root = str(Path(prunefl_edge.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        if env.get("PRUNEFL_EDGE_LIB"):  # relative to this process's directory, not the edge's
            env["PRUNEFL_EDGE_LIB"] = str(Path(env["PRUNEFL_EDGE_LIB"]).resolve())
        # cwd: its own directory, because `python -m` puts the cwd first on sys.path, and a source tree there (the
        # demo is run from one) would shadow the installed package, whose C core the source tree may not hold
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.root / eid)
        log_file.close()
        self.procs[eid] = proc
        return proc

    def start(self, data: Any) -> None:
        self.prepare(data)
        for eid in self.edge_ids():
            self.start_edge(eid)
        log.info("started %d edge processes (logs in %s/<id>/edge.log)", self.n, self.root)

    def stop_edge(self, eid: str, kill: bool = False, timeout_s: float = 30.0) -> int | None:
        proc = self.procs.get(eid)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop(self) -> None:
        for eid in list(self.procs):
            self.stop_edge(eid)
