"""Bad command-line inputs of the three commands: each ends in one clear line on stderr naming the thing and the
fix, exit 2 (usage, configuration) or 3 (data, model, checkpoint), and never a traceback. One table, run in process
(the commands' main functions) so that it takes seconds; nothing here reaches a broker."""

from __future__ import annotations

import signal
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from coordinator import cli_coord, cli_sim
from prunefl_edge import cli as cli_edge

Setup = Callable[[Path], list[str]]


def _file(name: str, data: bytes | str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p
    return make


def _npz(name: str, **arrays: np.ndarray) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        np.savez(p, **arrays)
        return p
    return make


def _idx_overflow(d: Path) -> Path:
    p = d / "train-images-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 0x08, 4]) + struct.pack(">4I", 65536, 65536, 65536, 65536))
    return p


def _corrupt_checkpoint(d: Path) -> Path:
    out = d / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    return out


def _edge_config(extra_edge: str = "", broker: str = 'url = "mqtt://127.0.0.1:1"') -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        np.savez(d / "data.npz", x=np.zeros((4, 1, 2, 2), np.float32), y=np.zeros(4, np.int64))
        p = d / "edge.toml"
        p.write_text(f'[edge]\nid = "e0"\nfederation = "f"\nstate_dir = "{d / "state"}"\n{extra_edge}\n'
                     f'[broker]\n{broker}\n[data]\npath = "{d / "data.npz"}"\n[profile]\nmeasure = false\n')
        return p
    return make


NON_UTF8 = b"rounds = 3\n# \xff\xfe not utf-8\n"
CASES: list[tuple[str, str, Callable[[Path], list[str]], int, str]] = [
    # (id, command, argv given the temp dir, exit code, a fragment the one line must hold)
    ("coord config is a directory", "coord", lambda d: ["--config", str(d)], 2, "is a directory"),
    ("coord config not utf-8", "coord", lambda d: ["--config", str(_file("c.toml", NON_UTF8)(d))], 2, "UTF-8"),
    ("coord config typed wrong", "coord", lambda d: ["--config", str(_file("c.toml", 'rounds = "ten"\n')(d))], 2,
     "rounds must be an integer"),
    ("coord config float for int", "coord", lambda d: ["--config", str(_file("c.toml", "rounds = 2.5\n")(d))], 2,
     "rounds must be an integer"),
    ("coord config bool for int", "coord", lambda d: ["--config", str(_file("c.toml", "rounds = true\n")(d))], 2,
     "rounds must be an integer"),
    ("coord config [federation] table", "coord",
     lambda d: ["--config", str(_file("c.toml", '[federation]\nname = "lab"\n')(d))], 2, "federation must be a string"),
    ("coord federation a/b", "coord", lambda d: ["--federation", "a/b", "--dataset", "digits"], 2, "--federation"),
    ("coord broker bad ipv6", "coord", lambda d: ["--broker", "mqtt://[::1", "--dataset", "digits", "--model", "mlp",
                                                  "--out", str(d / "o")], 2, "broker URL"),
    ("coord resume corrupt checkpoint", "coord",
     lambda d: ["--resume", "--dataset", "digits", "--model", "mlp", "--out", str(_corrupt_checkpoint(d))], 3,
     "checkpoint"),
    ("coord missing password file", "coord",
     lambda d: ["--broker", "mqtt://127.0.0.1:1", "--username", "u", "--password-file", str(d / "nope"), "--dataset",
                "digits", "--model", "mlp", "--out", str(d / "o")], 2, "password file"),
    ("coord missing ca file", "coord",
     lambda d: ["--broker", "mqtts://127.0.0.1:1", "--ca-file", str(d / "nope.crt"), "--dataset", "digits", "--model",
                "mlp", "--out", str(d / "o")], 2, "ca"),
    ("coord ca file not a certificate", "coord",
     lambda d: ["--broker", "mqtts://127.0.0.1:1", "--ca-file", str(_file("bad.crt", "not a certificate")(d)),
                "--dataset", "digits", "--model", "mlp", "--out", str(d / "o")], 2, "ca_file"),
    ("coord idx dimensions overflow", "coord",
     lambda d: ["--dataset", str(_idx_overflow(d)), "--model", "mlp", "--out", str(d / "o")], 3, "idx"),
    ("coord npz no samples", "coord",
     lambda d: ["--dataset", str(_npz("e.npz", x=np.zeros((0, 64), np.float32), y=np.zeros(0, np.int64))(d)),
                "--model", "mlp", "--out", str(d / "o")], 3, "no samples"),
    ("coord npz zero-width x", "coord",
     lambda d: ["--dataset", str(_npz("w.npz", x=np.zeros((10, 0), np.float32), y=np.zeros(10, np.int64))(d)),
                "--model", "mlp", "--out", str(d / "o")], 3, "x"),
    ("coord npz non-scalar num_classes", "coord",
     lambda d: ["--dataset", str(_npz("n.npz", x=np.zeros((10, 64), np.float32), y=np.zeros(10, np.int64),
                                      num_classes=np.array([3, 4]))(d)), "--model", "mlp", "--out", str(d / "o")], 3,
     "num_classes"),
    ("sim config is a directory", "sim", lambda d: ["--config", str(d)], 2, "is a directory"),
    ("sim config not utf-8", "sim", lambda d: ["--config", str(_file("c.toml", NON_UTF8)(d))], 2, "UTF-8"),
    ("sim config typed wrong", "sim", lambda d: ["--config", str(_file("c.toml", 'lr = "fast"\n')(d))], 2,
     "lr must be a number"),
    ("sim npz no samples", "sim",
     lambda d: ["--dataset", str(_npz("e.npz", x=np.zeros((0, 64), np.float32), y=np.zeros(0, np.int64))(d)),
                "--model", "mlp", "--rounds", "1", "--out", str(d / "o")], 3, "no samples"),
    ("edge config is a directory", "edge", lambda d: ["start", "--config", str(d)], 2, "is a directory"),
    ("edge config not utf-8", "edge", lambda d: ["start", "--config", str(_file("e.toml", NON_UTF8)(d))], 2, "UTF-8"),
    ("edge config typed wrong", "edge", lambda d: ["start", "--config", str(_edge_config('threads = "4"')(d))], 2,
     "[edge] threads must be a int"),
    ("edge ca file not a certificate", "edge",
     lambda d: ["start", "--config", str(_edge_config(broker=f'url = "mqtts://127.0.0.1:1"\nca_file = '
                                                             f'"{_file("bad.crt", "junk")(d)}"')(d))], 2, "ca_file"),
    ("edge missing ca file", "edge",
     lambda d: ["start", "--config", str(_edge_config(broker=f'url = "mqtts://127.0.0.1:1"\nca_file = '
                                                             f'"{d / "nope.crt"}"')(d))], 2, "ca_file"),
]

MAINS = {"coord": cli_coord.main, "sim": cli_sim.main, "edge": cli_edge.main}


class _TookTooLong(Exception):
    pass


def _alarm(signum, frame):
    raise _TookTooLong("the command did not stop at the bad input (it went on, e.g. to the broker)")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_exit_2_or_3(case, tmp_path, capsys):
    _, command, argv, code, fragment = case
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)  # a bad input is found before anything slow starts
    try:
        got = MAINS[command](argv(tmp_path))
    finally:
        signal.alarm(0)
        for s, h in saved.items():  # prunefl-coord installs its own SIGTERM / SIGINT handlers
            signal.signal(s, h)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]
    assert got == code, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert fragment.lower() in lines[0].lower(), lines[0]
