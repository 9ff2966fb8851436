"""firmware_scripts/: the systemd unit, install.sh and provision_broker.sh's command line, without touching the system.

`systemd-analyze verify` refuses a unit whose ExecStart binary does not exist ("Command ... is not executable"), and
/opt/prunefl-edge/venv/bin/prunefl-edge exists only on an installed Pi, so the unit is verified as a copy whose
ExecStart names a stub executable in a tmp directory; every other line is the shipped unit's. install.sh runs with
`--root TMP` (DESTDIR-style) and without apt, useradd, pip and systemctl, so only the files it lays down are checked.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware_scripts"
UNIT = FW / "systemd" / "prunefl-edge.service"
INSTALL = FW / "install.sh"
PROVISION = FW / "provision_broker.sh"
CROSS = FW / "cross_build.sh"
SCRIPTS = [INSTALL, PROVISION, CROSS]
VENV_EXEC = "/opt/prunefl-edge/venv/bin/prunefl-edge"


def systemd_version() -> int:
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[1])


def need_systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: sudo apt-get install systemd"
    return exe


def verifiable_copy(tmp_path: Path, unit_text: str, name: str = "prunefl-edge.service") -> Path:
    stub = tmp_path / "bin" / "prunefl-edge"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    assert VENV_EXEC in unit_text
    unit = tmp_path / name
    unit.write_text(unit_text.replace(VENV_EXEC, str(stub)))
    return unit


def verify(*units: Path) -> subprocess.CompletedProcess:
    return subprocess.run([need_systemd_analyze(), "verify", *map(str, units)], capture_output=True, text=True,
                          timeout=120)


def run(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


# -- the unit ---------------------------------------------------------------------------------------------------
def test_unit_passes_systemd_analyze_verify_without_warnings(tmp_path: Path) -> None:
    unit = verifiable_copy(tmp_path, UNIT.read_text())
    r = verify(unit)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert unit.name not in out, f"systemd-analyze warns about the unit:\n{out}"


def test_unit_settings() -> None:
    lines = {line.strip() for line in UNIT.read_text().splitlines()}
    for want in (f"ExecStart={VENV_EXEC} start --config /etc/prunefl-edge/edge.toml", "User=prunefl", "Group=prunefl",
                 "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "ReadWritePaths=/var/lib/prunefl-edge", "StateDirectory=prunefl-edge",
                 "StandardOutput=journal", "KillSignal=SIGTERM", "WantedBy=multi-user.target",
                 "ProtectProc=invisible", "PrivateMounts=yes", "RemoveIPC=yes",
                 "SystemCallFilter=~@privileged @resources"):
        assert want in lines, want
    for key in ("RestartSec=", "StartLimitIntervalSec=", "StartLimitBurst=", "MemoryMax=", "TimeoutStopSec="):
        assert any(line.startswith(key) for line in lines), key
    # not ProcSubset=pid: it hides /proc/cpuinfo, which the profile's CPU model (and OpenBLAS) read
    assert not any(line.startswith("ProcSubset=") for line in lines)
    # keys this systemd (252: Debian 12, Pi OS bookworm) does not know live in the >= 254 drop-in only
    assert not any(line.startswith(("RestartSteps", "RestartMaxDelaySec")) for line in lines)


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    unit = verifiable_copy(tmp_path, UNIT.read_text())
    r = subprocess.run([need_systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 1.3, r.stdout


def test_backoff_dropin(tmp_path: Path) -> None:
    dropin = (FW / "systemd" / "backoff.conf").read_text()
    assert "RestartSteps=" in dropin and "RestartMaxDelaySec=" in dropin
    if systemd_version() >= 254:
        unit = verifiable_copy(tmp_path, UNIT.read_text() + "\n" + dropin)
        r = verify(unit)
        assert r.returncode == 0 and unit.name not in r.stdout + r.stderr, r.stdout + r.stderr


# -- install.sh -------------------------------------------------------------------------------------------------
OFFLINE = ("--no-apt", "--no-useradd", "--no-systemctl", "--no-pip")


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def provisioned(tmp_path: Path, *extra: str) -> Path:
    pki = tmp_path / "pki"
    r = run(PROVISION, "init", "--dir", str(pki), "--federation", "lab", "--edges", "pi-07", *extra)
    assert r.returncode == 0, r.stderr
    return pki


def test_install_lays_down_files(tmp_path: Path) -> None:
    pki = provisioned(tmp_path)
    root = tmp_path / "root"
    r = run(INSTALL, "--root", str(root), *OFFLINE, "--edge-id", "pi-07", "--federation", "lab",
            "--broker", "mqtts://broker.lan:8883", "--credentials", str(pki / "clients" / "pi-07"),
            env={"SYSTEMD_VERSION": "252"})
    assert r.returncode == 0, r.stdout + r.stderr
    conf = root / "etc/prunefl-edge/edge.toml"
    cfg = tomllib.loads(conf.read_text())
    assert cfg["edge"]["id"] == "pi-07" and cfg["edge"]["federation"] == "lab"
    assert cfg["broker"]["url"] == "mqtts://broker.lan:8883"
    assert mode(conf) == 0o640
    tls = root / "etc/prunefl-edge/tls"
    assert (tls / "client.crt").read_bytes() == (pki / "clients/pi-07/client.crt").read_bytes()
    assert mode(tls / "client.key") == 0o640 and mode(tls) == 0o750
    for d in ("var/lib/prunefl-edge", "var/lib/prunefl-edge/data", "etc/prunefl-edge"):
        assert mode(root / d) == 0o750, d
    assert (root / "opt/prunefl-edge/venv/bin/python").exists()
    unit = root / "etc/systemd/system/prunefl-edge.service"
    assert unit.read_text() == UNIT.read_text()
    assert not (root / "etc/systemd/system/prunefl-edge.service.d/backoff.conf").exists()

    # idempotent: a second run keeps an edited config, refreshes credentials, adds the drop-in on systemd >= 254
    conf.write_text(conf.read_text().replace("threads = 4", "threads = 3"))
    r = run(INSTALL, "--root", str(root), *OFFLINE, "--edge-id", "other", "--credentials",
            str(pki / "clients" / "pi-07"), env={"SYSTEMD_VERSION": "256"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping existing" in r.stdout and "ignored" in r.stdout
    assert tomllib.loads(conf.read_text())["edge"] == {**cfg["edge"], "threads": 3}
    assert (root / "etc/systemd/system/prunefl-edge.service.d/backoff.conf").exists()


def test_install_prefix_rewrites_the_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = run(INSTALL, "--root", str(root), "--prefix", "/srv/pf", *OFFLINE)
    assert r.returncode == 0, r.stdout + r.stderr
    unit = (root / "etc/systemd/system/prunefl-edge.service").read_text()
    assert "ExecStart=/srv/pf/venv/bin/prunefl-edge start --config /etc/prunefl-edge/edge.toml" in unit
    assert (root / "srv/pf/venv/bin/python").exists()
    assert tomllib.loads((root / "etc/prunefl-edge/edge.toml").read_text())["edge"]["id"] == "CHANGE-ME"


def test_install_password_credentials_switch_the_config(tmp_path: Path) -> None:
    if not shutil.which("mosquitto_passwd"):
        pytest.fail("mosquitto_passwd is not installed: sudo apt-get install mosquitto")
    pki = provisioned(tmp_path, "--auth", "password")
    root = tmp_path / "root"
    r = run(INSTALL, "--root", str(root), *OFFLINE, "--edge-id", "pi-07", "--credentials",
            str(pki / "clients" / "pi-07"))
    assert r.returncode == 0, r.stdout + r.stderr
    broker = tomllib.loads((root / "etc/prunefl-edge/edge.toml").read_text())["broker"]
    assert broker["username"] == "pi-07" and broker["password_file"] == "/etc/prunefl-edge/tls/password"
    assert "cert_file" not in broker and "key_file" not in broker
    assert mode(root / "etc/prunefl-edge/tls/password") == 0o640


def test_install_offline_from_wheels(tmp_path: Path) -> None:
    wheels = tmp_path / "deps"
    wheels.mkdir()
    r = run(INSTALL, "--root", str(tmp_path / "root"), "--dry-run", "--no-apt", "--no-useradd", "--wheels", str(wheels))
    assert r.returncode == 0, r.stderr
    assert re.search(r"pip install --upgrade --no-input --no-index --find-links \S*deps ", r.stdout), r.stdout


def test_install_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = run(INSTALL, "--root", str(root), "--dry-run", "--no-apt", "--no-useradd")
    assert r.returncode == 0, r.stderr
    # (with --root, enabling is the image's wants link, not the host's systemctl enable)
    assert "pip install" in r.stdout and "multi-user.target.wants/prunefl-edge.service" in r.stdout
    assert "not started" in r.stdout
    assert not root.exists() or not any(root.iterdir())


def test_install_dry_run_with_an_edge_id_does_not_claim_it_started() -> None:
    # on the real system (no --root): a dry run only prints, so this changes nothing here either
    r = run(INSTALL, "--dry-run", "--no-apt", "--no-useradd", "--no-pip", "--edge-id", "pi-07")
    assert r.returncode == 0, r.stderr
    assert "systemctl restart" in r.stdout and "dry run: not started" in r.stdout
    assert "started:" not in r.stdout and r.stdout.rstrip().endswith("dry run: nothing changed")


def test_install_on_32_bit_arm_says_it_runs_portable_c(tmp_path: Path) -> None:
    r = run(INSTALL, "--root", str(tmp_path / "root"), "--dry-run", *OFFLINE, env={"PRUNEFL_MACHINE": "armv7l"})
    assert r.returncode == 0, r.stderr
    assert "portable C kernels (isa portable-c), not the NEON kernels" in r.stdout
    r = run(INSTALL, "--root", str(tmp_path / "root"), "--dry-run", *OFFLINE, env={"PRUNEFL_MACHINE": "aarch64"})
    assert "portable C" not in r.stdout


def foreign_root(root: Path) -> Path:
    """A root whose /usr/bin/python3 is an aarch64 ELF (its header only: nothing runs it)."""
    py = root / "usr/bin/python3"
    py.parent.mkdir(parents=True)
    py.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + (183).to_bytes(2, "little")
                   + bytes(44))
    return root


def test_install_root_for_an_image_never_runs_the_hosts_systemctl(tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >>{tmp_path / 'systemctl.log'}\nexit 1\n")
    (stubs / "systemctl").chmod(0o755)
    root = tmp_path / "root"
    r = run(INSTALL, "--root", str(root), "--no-apt", "--no-useradd", "--no-pip", "--edge-id", "pi-07",
            env={"PATH": f"{stubs}:{os.environ['PATH']}", "SYSTEMD_VERSION": "252"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "systemctl.log").exists(), (tmp_path / "systemctl.log").read_text()
    link = root / "etc/systemd/system/multi-user.target.wants/prunefl-edge.service"
    assert link.is_symlink() and os.readlink(link) == "/etc/systemd/system/prunefl-edge.service"
    assert "the host's systemctl not run" in r.stdout and "started:" not in r.stdout


def test_install_root_of_another_architecture_refuses_the_hosts_python(tmp_path: Path) -> None:
    root = foreign_root(tmp_path / "root")
    r = run(INSTALL, "--root", str(root), "--no-apt", "--no-useradd", "--no-systemctl",
            "--wheel", str(fake_wheel(tmp_path / "w", "0.1.0", "x")))
    assert r.returncode == 3 and "another architecture's Python" in r.stderr and "qemu-user-static" in r.stderr
    assert not (root / "opt/prunefl-edge/venv").exists()
    # the files alone (--no-pip): laid down, no venv of the host's Python in the image
    r = run(INSTALL, "--root", str(root), *OFFLINE, "--edge-id", "pi-07")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "virtualenv not made" in r.stdout and not (root / "opt/prunefl-edge/venv").exists()
    assert (root / "etc/prunefl-edge/edge.toml").exists()
    assert (root / "etc/systemd/system/prunefl-edge.service").exists()


def fake_wheel(d: Path, version: str, marker: str, openblas: bool = False) -> Path:
    """A minimal prunefl-edge wheel (pure Python, no dependencies) whose package says which build it is; its
    "library" names libopenblas among its strings when ``openblas``, as a BLAS build's ELF does."""
    import zipfile

    d.mkdir(parents=True, exist_ok=True)
    whl = d / f"prunefl_edge-{version}-py3-none-any.whl"
    info = f"prunefl_edge-{version}.dist-info"
    files = {"prunefl_edge/__init__.py": f"BUILD = {marker!r}\n",
             "prunefl_edge/_lib/libprunefl.so": "\x7fELF" + ("\0libopenblas.so.0\0" if openblas else "\0libm.so.6\0"),
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: prunefl-edge\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(whl, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]))
    return whl


def test_install_upgrades_a_rebuilt_wheel_and_says_from_which_version_to_which(tmp_path: Path) -> None:
    root = tmp_path / "root"
    deps = tmp_path / "deps"
    deps.mkdir()
    steps = ("--root", str(root), "--no-apt", "--no-useradd", "--no-systemctl", "--wheels", str(deps))
    site = root / "opt/prunefl-edge/venv/lib"

    def build() -> str:
        (init,) = site.glob("python3*/site-packages/prunefl_edge/__init__.py")
        return init.read_text()

    r = run(INSTALL, *steps, "--wheel", str(fake_wheel(tmp_path / "w1", "0.1.0+g1", "one")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installing prunefl-edge 0.1.0+g1" in r.stdout and "prunefl-edge 0.1.0+g1 installed" in r.stdout
    assert "'one'" in build()
    # rebuilt with the same version: reinstalled (pip alone would say "already installed" and keep the old code)
    r = run(INSTALL, *steps, "--wheel", str(fake_wheel(tmp_path / "w2", "0.1.0+g1", "two")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reinstalling prunefl-edge 0.1.0+g1" in r.stdout and "--force-reinstall" in r.stdout
    assert "'two'" in build()
    # a new version: an upgrade, from which to which
    r = run(INSTALL, *steps, "--wheel", str(fake_wheel(tmp_path / "w3", "0.1.0+g2", "three")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "upgrading prunefl-edge from 0.1.0+g1 to 0.1.0+g2" in r.stdout and "0.1.0+g1 -> 0.1.0+g2" in r.stdout
    assert "--force-reinstall" not in r.stdout
    assert "'three'" in build()


def apt_stubs(tmp_path: Path, installed: set[str], apt_fails: bool = False) -> dict[str, str]:
    """dpkg-query that reports ``installed`` as installed, apt-get that logs its arguments (and fails: offline)."""
    bin_dir = tmp_path / "stubs"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "installed").write_text("".join(f"{p}\n" for p in sorted(installed)))
    dpkg = bin_dir / "dpkg-query"
    dpkg.write_text(f'#!/bin/sh\nfor p; do :; done\ngrep -qx "$p" {tmp_path / "installed"} && printf "install ok '
                    'installed"\nexit 0\n')
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >>{tmp_path / "apt.log"}\nexit {100 if apt_fails else 0}\n')
    for f in (dpkg, apt):
        f.chmod(0o755)
    return {"DPKG_QUERY": str(dpkg), "APT_GET": str(apt)}


def apt_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(("openblas", "installed", "apt_fails", "asked"), [
    (False, {"python3", "python3-venv"}, True, None),  # offline, nothing missing: apt never runs
    (False, {"python3"}, False, ["python3-venv"]),  # only what is missing, and no OpenBLAS for a wheel without it
    (True, {"python3", "python3-venv"}, False, ["libopenblas0"]),  # a wheel whose core links OpenBLAS
])
def test_install_with_a_wheel_asks_apt_only_for_what_the_wheel_needs(tmp_path: Path, openblas: bool,
                                                                    installed: set[str], apt_fails: bool,
                                                                    asked: list[str] | None) -> None:
    whl = fake_wheel(tmp_path / "w", "0.1.0", "x", openblas=openblas)
    r = run(INSTALL, "--root", str(tmp_path / "root"), "--no-useradd", "--no-pip", "--no-systemctl", "--wheel",
            str(whl), env=apt_stubs(tmp_path, installed, apt_fails))
    assert r.returncode == 0, r.stdout + r.stderr
    calls = apt_calls(tmp_path)
    if asked is None:
        assert calls == [] and "apt: nothing missing" in r.stdout
    else:
        install = [c for c in calls if c.startswith("install")]
        assert len(install) == 1 and install[0].split()[-len(asked):] == asked, calls
        assert "libopenblas0" not in install[0] or openblas


def test_install_offline_with_something_missing_fails_saying_what(tmp_path: Path) -> None:
    whl = fake_wheel(tmp_path / "w", "0.1.0", "x")
    r = run(INSTALL, "--root", str(tmp_path / "root"), "--no-useradd", "--no-pip", "--no-systemctl", "--wheel",
            str(whl), env=apt_stubs(tmp_path, {"python3"}, apt_fails=True))
    assert r.returncode == 4 and "python3-venv" in r.stderr and "libopenblas0" not in r.stdout + r.stderr


def test_install_plain_mqtt_without_credentials_writes_a_config_that_check_accepts(tmp_path: Path) -> None:
    from prunefl_edge.edge_config import load_edge_config

    root = tmp_path / "root"
    r = run(INSTALL, "--root", str(root), *OFFLINE, "--edge-id", "pi-07", "--broker", "mqtt://broker.lan:1883")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not encrypted" in r.stdout
    conf = root / "etc/prunefl-edge/edge.toml"
    broker = tomllib.loads(conf.read_text())["broker"]
    assert broker["url"] == "mqtt://broker.lan:1883"
    assert not {"ca_file", "cert_file", "key_file"} & broker.keys()
    load_edge_config(str(conf)).broker.check()  # what `prunefl-edge check` checks of the broker settings
    # certificates cannot go without TLS: refused before anything is written
    pki = provisioned(tmp_path)
    r = run(INSTALL, "--root", str(tmp_path / "root2"), *OFFLINE, "--broker", "mqtt://broker.lan:1883",
            "--credentials", str(pki / "clients" / "pi-07"))
    assert r.returncode == 2 and "use mqtts://" in r.stderr


@pytest.mark.parametrize(("args", "code"), [
    (["--help"], 0), (["--bogus"], 2), (["--prefix", "relative"], 2), (["--edge-id", "a/b"], 2),
    (["--broker", "http://x"], 2), (["--wheel", "/nonexistent.whl"], 3), (["--source", "/"], 3),
    (["--credentials", "/nonexistent"], 3), (["--wheels", "/nonexistent"], 3)])
def test_install_command_line(tmp_path: Path, args: list[str], code: int) -> None:
    r = run(INSTALL, "--root", str(tmp_path / "root"), *OFFLINE, *args)
    assert r.returncode == code, r.stdout + r.stderr
    if code:
        assert "error:" in r.stderr


# -- provision_broker.sh command line ---------------------------------------------------------------------------
def test_provision_command_line(tmp_path: Path) -> None:
    d = str(tmp_path / "pki")
    assert run(PROVISION, "--help").returncode == 0
    assert run(PROVISION, "bogus").returncode == 2
    assert run(PROVISION, "add-edge", "--dir", d, "pi-1").returncode == 3          # not initialised
    assert run(PROVISION, "init", "--dir", d, "--federation", "a/b").returncode == 2
    assert run(PROVISION, "init", "--dir", d, "--federation", "lab", "--edges", "pi+1").returncode == 2
    assert run(PROVISION, "init", "--dir", d, "--federation", "lab", "--edges", "coordinator").returncode == 2
    r = run(PROVISION, "init", "--dir", d, "--federation", "lab", "--edges", "pi-1", "--host", "broker.lan",
            "--ip", "10.0.0.2")
    assert r.returncode == 0, r.stderr
    assert run(PROVISION, "init", "--dir", d, "--federation", "lab").returncode == 3  # no --force
    san = subprocess.run(["openssl", "x509", "-in", f"{d}/broker/server.crt", "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("DNS:broker.lan", "IP Address:10.0.0.2", "DNS:localhost", "IP Address:127.0.0.1"):
        assert name in san
    cn = subprocess.run(["openssl", "x509", "-in", f"{d}/clients/pi-1/client.crt", "-noout", "-subject"],
                        capture_output=True, text=True, check=True).stdout
    assert "CN = pi-1" in cn or "CN=pi-1" in cn
    assert run(PROVISION, "add-edge", "--dir", d, "pi-1", "pi-2").returncode == 0   # pi-1 again: a no-op
    acl = Path(d, "broker", "acl").read_text()
    assert acl.count("user pi-1\n") == 1 and "topic read prunefl/lab/edge/pi-2/task" in acl
    old = Path(d, "clients/pi-2/client.crt").read_bytes()
    assert run(PROVISION, "rotate-edge", "--dir", d, "pi-2").returncode == 0
    assert Path(d, "clients/pi-2/client.crt").read_bytes() != old
    assert run(PROVISION, "rotate-edge", "--dir", d, "pi-9").returncode == 3
    assert run(PROVISION, "revoke-edge", "--dir", d, "pi-1").returncode == 0
    assert "user pi-1\n" not in Path(d, "broker", "acl").read_text()
    listing = run(PROVISION, "list", "--dir", d).stdout
    assert "edge pi-2" in listing and "edge pi-1" not in listing


# -- shell hygiene ----------------------------------------------------------------------------------------------
def shellcheck_required() -> bool:
    """Once .ci/setup.sh installs shellcheck, a missing shellcheck fails this test instead of falling back."""
    return "shellcheck" in (ROOT / ".ci" / "setup.sh").read_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script} is not executable"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
    else:
        assert not shellcheck_required(), "shellcheck is missing: sudo apt-get install shellcheck (make deps)"


def test_edge_toml_example() -> None:
    cfg = tomllib.loads((FW / "edge.toml.example").read_text())
    assert cfg["edge"]["id"] == "CHANGE-ME"
    assert cfg["broker"]["url"].startswith("mqtts://")
    assert {"ca_file", "cert_file", "key_file"} <= cfg["broker"].keys()
    assert cfg["data"]["format"] in ("idx", "leaf", "cifar10", "npz")


# -- cross_build.sh: what a Pi installs, built here ---------------------------------------------------------------
def test_cross_build_makes_a_wheel_per_pi_isa_that_pip_accepts_for_that_platform(tmp_path: Path) -> None:
    import sys
    import zipfile

    dist = tmp_path / "dist"
    kept = dist / "aarch64" / "deps" / "numpy-1.0-cp311-cp311-linux_aarch64.whl"  # an offline set from earlier
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"not touched")
    r = subprocess.run([str(CROSS), "--arch", "all", "--dist", str(dist), "--python", sys.executable],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert kept.read_bytes() == b"not touched"  # a rebuild without --deps keeps the dependency set
    assert re.search(r"armhf: building the wheel .*portable C kernels", r.stdout), r.stdout
    for arch, tag, machine in (("aarch64", "linux_aarch64", 183), ("armhf", "linux_armv7l", 40)):
        (whl,) = (dist / arch).glob("prunefl_edge-*.whl")
        assert whl.name.endswith(f"-py3-none-{tag}.whl")
        with zipfile.ZipFile(whl) as z:
            so = z.read("prunefl_edge/_lib/libprunefl.so")
            assert so[:4] == b"\x7fELF" and int.from_bytes(so[18:20], "little") == machine  # e_machine
            # what it runs, as its build info says: armhf has no NEON kernels, and the build says so
            assert (b"isa aarch64-neon" if arch == "aarch64" else b"isa portable-c") in so
            names = z.namelist()
            assert "prunefl_edge/_lib/include/prunefl/prunefl.h" in names
            assert "prunefl_common/profiles/pi4-reference.json" in names
            assert not any(n.startswith("coordinator/") for n in names)  # the device wheel carries no server
            scripts = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
            assert "prunefl-edge = prunefl_edge.cli:main" in scripts
            assert "prunefl-coord" not in scripts and "prunefl-sim" not in scripts
        # pip, told it installs for that platform, takes the wheel (tag, metadata and RECORD are sound)
        target = tmp_path / f"site-{arch}"
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                            "--only-binary=:all:", "--platform", tag, "--target", str(target), str(whl)],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert (target / "prunefl_edge" / "_lib" / "libprunefl.so").is_file()
    bad = subprocess.run([str(CROSS), "--arch", "mips"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--arch mips" in bad.stderr


def test_make_pi_wheels_needs_the_cross_tool_chain_only() -> None:
    r = subprocess.run(["make", "-n", "-C", str(ROOT), "pi-wheels"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cmds = r.stdout.splitlines()
    setup = [c for c in cmds if "setup.sh" in c]
    assert setup and all("--build-only" in c for c in setup), cmds  # not `make deps` (PyTorch, valgrind, ...)
    assert any("cross_build.sh" in c and "--deps" in c for c in cmds), cmds  # the wheels and their offline set
    text = (ROOT / ".ci" / "setup.sh").read_text()
    build_only = text[text.index('if [ "$BUILD_ONLY" = 1 ]; then\n    DEB_PACKAGES'):]
    build_only = build_only[:build_only.index("fi\n")]
    for tool in ("valgrind", "mosquitto", "qemu", "torch", "shellcheck"):
        assert tool not in build_only, tool
    assert text.index('echo "setup: ok (build only') < text.index("torch==")  # it stops before PyTorch


def test_cross_build_from_a_read_only_checkout_builds_outside_it(tmp_path: Path) -> None:
    import sys

    ro = tmp_path / "checkout"
    ro.mkdir()
    mounted = (subprocess.run(["mount", "--bind", str(ROOT), str(ro)], capture_output=True).returncode == 0
               and subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode == 0)
    try:
        src = ro if mounted else ROOT  # (where bind mounts are not allowed: the same with an explicit --build-dir)
        build = tmp_path / "build"
        args = [] if mounted else ["--build-dir", str(build)]
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        r = subprocess.run([str(src / "firmware_scripts/cross_build.sh"), "--arch", "armhf", "--dist",
                            str(tmp_path / "dist"), "--python", sys.executable, *args],
                           capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        (whl,) = (tmp_path / "dist" / "armhf").glob("prunefl_edge-*.whl")
        if mounted:
            assert "is read-only: building in" in r.stdout
            (build,) = tmp_path.glob("prunefl-build.*")
        assert (build / "stage-edge-armhf" / "pyproject.toml").is_file() and (build / "wheel-armhf").is_dir()
        # without --dist, a read-only checkout is a clear error, not a half build
        if mounted:
            r = subprocess.run([str(ro / "firmware_scripts/cross_build.sh"), "--arch", "armhf", "--python",
                                sys.executable], capture_output=True, text=True, timeout=300, env=env)
            assert r.returncode == 3 and "give --dist" in r.stderr
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
