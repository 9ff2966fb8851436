"""The edge's configuration file: what is accepted, and that everything else is a ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from mosquitto_util import mosquitto  # noqa: F401 - fixture

from prunefl_edge.edge_config import ConfigError, load_edge_config, write_edge_config

BASE = {"edge": {"id": "pi-07", "federation": "lab", "threads": 2}, "broker": {"url": "mqtt://127.0.0.1:1883"},
        "data": {"path": "digits"}}


def _write(tmp_path: Path, **sections: dict) -> str:
    doc = {k: dict(v) for k, v in BASE.items()}
    for k, v in sections.items():
        doc.setdefault(k, {}).update(v)
    p = tmp_path / "edge.toml"
    write_edge_config(p, doc)
    return str(p)


def test_a_minimal_config_gets_the_defaults(tmp_path: Path) -> None:
    cfg = load_edge_config(_write(tmp_path))
    assert (cfg.id, cfg.federation, cfg.threads, cfg.state_dir) == ("pi-07", "lab", 2, "/var/lib/prunefl-edge")
    assert cfg.profile.measure and cfg.profile.model == "conv2" and cfg.profile.file is None


def test_the_example_file_is_a_valid_config_once_its_id_is_set(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "firmware_scripts" / "edge.toml.example").read_text()
    p = tmp_path / "edge.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="id must be set"):
        load_edge_config(str(p))
    for name in ("ca.crt", "client.crt", "client.key"):  # what install.sh --credentials puts there
        (tmp_path / name).write_text("x")
        text = text.replace(f"/etc/prunefl-edge/tls/{name}", str(tmp_path / name))
    p.write_text(text.replace('id = "CHANGE-ME"', 'id = "pi-01"'))
    cfg = load_edge_config(str(p))
    assert cfg.id == "pi-01" and cfg.broker.url.startswith("mqtts://")


def test_profile_section(tmp_path: Path) -> None:
    prof = tmp_path / "p.json"
    prof.write_text("{}")
    cfg = load_edge_config(_write(tmp_path, profile={"measure": False, "model": "mlp", "file": str(prof),
                                                     "comm_s_per_weight": 1e-6}))
    assert (cfg.profile.measure, cfg.profile.model, cfg.profile.file, cfg.profile.comm_s_per_weight) == (
        False, "mlp", str(prof), 1e-6)


@pytest.mark.parametrize("sections, words", [
    ({"edge": {"colour": "red"}}, "unknown keys ['colour']"),
    ({"extras": {"a": 1}}, "unknown section [extras]"),
    ({"edge": {"threads": 0}}, "threads must be 1..256"),
    ({"edge": {"threads": True}}, "[edge] threads must be a int"),
    ({"edge": {"id": "a/b"}}, "id must be set"),
    ({"edge": {"max_payload_bytes": 100}}, "max_payload_bytes must be >= 65536"),
    ({"data": {"partition": "zipf"}}, "partition must be iid, dirichlet or shards"),
    ({"data": {"num_partitions": 2, "partition_index": 2}}, "partition_index must be in"),
    ({"broker": {"url": "http://x"}}, "[broker]"),
    ({"broker": {"password_file": "/nonexistent/pw"}}, "password_file /nonexistent/pw"),
    ({"profile": {"measure": "yes"}}, "[profile] measure must be a bool"),
    ({"profile": {"file": "/nonexistent/profile.json"}}, "measure one with `prunefl-edge profile"),
    ({"profile": {"comm_s_per_weight": -1.0}}, "comm_s_per_weight must be"),
    ({"profile": {"comm_s_per_weight": True}}, "must be a int or float"),
])
def test_bad_configs_name_the_key(tmp_path: Path, sections: dict, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_edge_config(_write(tmp_path, **sections))
    assert words in str(e.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_edge_config(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[edge\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_edge_config(str(bad))


def _check(cfg: str, capsys) -> tuple[int, str]:
    from prunefl_edge.cli import main

    code = main(["check", "--config", cfg])
    return code, capsys.readouterr().out


def test_check_reports_each_part_and_exits_with_its_code(tmp_path: Path, mosquitto, capsys) -> None:  # noqa: F811
    broker = mosquitto()
    good = _write(tmp_path, edge={"state_dir": str(tmp_path / "state")}, broker={"url": broker.url})
    code, out = _check(good, capsys)
    assert code == 0, out
    for part in ("config  ok", "data    ok    1797 samples", "core    ok", "dense GEMM: ",
                 "profile ok    measured at the first start", "broker  ok"):
        assert part in out, out
    # each failure: its line says what is wrong, the exit code says which part
    bad = _write(tmp_path, edge={"threads": 0})
    assert _check(bad, capsys)[0] == 2
    nodata = _write(tmp_path, data={"path": str(tmp_path / "missing.npz")}, broker={"url": broker.url})
    code, out = _check(nodata, capsys)
    assert code == 3 and "data    FAIL" in out
    from mosquitto_util import free_port

    nobroker = _write(tmp_path, broker={"url": f"mqtt://127.0.0.1:{free_port()}"})
    code, out = _check(nobroker, capsys)
    assert code == 4 and "broker  FAIL" in out and "is the broker up" in out


def test_start_without_the_c_core_is_an_installation_error_not_a_crash_at_the_first_task(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    cfg = _write(tmp_path, edge={"state_dir": str(tmp_path / "state")}, profile={"measure": False})
    env = {**os.environ, "PRUNEFL_EDGE_LIB": str(tmp_path / "nowhere" / "libprunefl.so")}
    p = subprocess.run([sys.executable, "-m", "prunefl_edge.cli", "start", "--config", cfg], env=env,
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2, p.stderr  # the systemd unit does not restart on 2: restarting cannot fix it
    assert "PRUNEFL_EDGE_LIB" in p.stderr and "does not exist" in p.stderr


def test_check_without_the_c_core_says_so_with_exit_2(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    cfg = _write(tmp_path, edge={"state_dir": str(tmp_path / "state")}, profile={"measure": False})
    env = {**os.environ, "PRUNEFL_EDGE_LIB": str(tmp_path / "nowhere" / "libprunefl.so")}
    p = subprocess.run([sys.executable, "-m", "prunefl_edge.cli", "check", "--config", cfg], env=env,
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2, p.stdout + p.stderr
    assert "core    FAIL" in p.stdout and "PRUNEFL_EDGE_LIB" in p.stdout
