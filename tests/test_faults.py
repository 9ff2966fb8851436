"""Faults of a real fleet, each in a whole federation through a real Mosquitto: a network partition of one edge
that heals, an edge on a link so slow it always misses the deadline, an edge whose disk is full when it
checkpoints, a coordinator restarted during initial pruning, and a coordinator whose disk fills up. Each time
the run completes (after --resume where the coordinator stopped), nothing learned is lost, and the event shows in
the metrics or in the exit status and its message.

Small on purpose (scikit-learn's digits, the MLP): what is tested is the runtime, not the accuracy reached.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mosquitto_util import mosquitto  # noqa: F401 - fixture
from tcp_proxy import TcpProxy

from coordinator.cli_coord import CoordOptions, run
from coordinator.local_federation import LocalEdges
from prunefl_edge.inputs import load_data


def _opts(tmp_path: Path, url: str, **kw) -> CoordOptions:
    base = dict(broker=url, federation="t", dataset="digits", model="mlp", method="prunefl", rounds=14,
                min_clients=4, wait_timeout=60, clients_per_round=4, deadline=4, lr=0.1, local_steps=5,
                eval_every=2, reconfig_interval=4, ip_max_passes=3, spawn_edges=0, out=str(tmp_path / "run"),
                report=False, export_onnx=False)
    base.update(kw)
    return CoordOptions(**base)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train(out: Path) -> list[dict]:
    return [r for r in _records(out) if r["stage"] == "train"]


def _wait_offline(transport, eid: str, timeout_s: float) -> bool:
    """Until the coordinator's transport no longer lists ``eid`` (its Last Will came); whether it came in time."""
    end = time.monotonic() + timeout_s
    while eid in transport.available_clients() and time.monotonic() < end:
        time.sleep(0.05)
    return eid not in transport.available_clients()


def _status(edges_root: Path, eid: str) -> dict:
    return json.loads((edges_root / eid / "state" / "status.json").read_text())


@contextlib.contextmanager
def _edges(root: Path, url: str, **kw) -> Iterator[LocalEdges]:
    edges = LocalEdges(root, url, "t", 4, "digits", 0.2, 0, **kw)
    try:
        edges.start(load_data("digits", 0.2, 0))
        yield edges
    finally:
        edges.stop()


def _check_learned(coord, out: Path, rounds: int) -> None:
    recs = _train(out)
    assert [r["round"] for r in recs] == list(range(rounds))
    accs = [r["accuracy"] for r in _records(out) if r.get("accuracy") is not None]
    assert accs[-1] > accs[0] + 0.05 and accs[-1] > 0.6, accs
    assert coord.state.round == rounds


def test_a_partitioned_edge_misses_rounds_and_rejoins_when_the_network_heals(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    proxy = TcpProxy(broker.port)
    seen: dict[str, int] = {}

    def disturb(rec, _edges, transport):
        r = rec["round"]
        if r == 3:  # the link drops: no bytes either way, no connection closed
            proxy.partition()
            seen["partitioned_after"] = r
        elif r == 8:  # the broker publishes edge1's Last Will 1.5 keepalives after its last packet; then heal
            assert _wait_offline(transport, "edge1", 60), "the broker never published edge1's Last Will"
            proxy.heal()
            assert len(transport.wait_for_clients(4, 60)) == 4, "edge1 did not reconnect after the partition"
            seen["healed_after"] = r

    try:
        # keepalive 5 s (the least an edge accepts): after 7.5 s of silence the broker publishes its Last Will
        with _edges(tmp_path / "edges", broker.url, broker_urls={"edge1": proxy.url}, keepalive=5):
            coord = run(_opts(tmp_path, broker.url), progress=False, hook=disturb)
    finally:
        proxy.close()
    out = tmp_path / "run"
    _check_learned(coord, out, 14)
    recs = _train(out)
    assert seen == {"partitioned_after": 3, "healed_after": 8}
    # round 4 still chose edge1 (online as far as anyone knew) and closed at the deadline without it
    assert recs[4]["missed"] == {"edge1": "timeout"} and recs[4]["results"] == 3
    # then it was offline (its Last Will) or left out as a straggler, not chosen until the network healed
    assert any(r["clients"] == 3 and r["failures"] == 0 for r in recs[5:9]), [r["clients"] for r in recs]
    # back online, its record of missed deadlines forgotten: chosen and in time from the next round on
    assert all("edge1" not in r["missed"] and not r["benched"] for r in recs[9:]), [r["missed"] for r in recs[9:]]
    assert all(r["results"] == 4 for r in recs[10:]), [(r["round"], r["results"], r["benched"]) for r in recs]
    assert proxy.connections >= 2  # it reconnected through the healed link
    # the mask changes made while it was cut off reached it: it holds the last round's mask version
    assert _status(tmp_path / "edges", "edge1")["mask_version"] == recs[-1]["mask_version"] >= 3


def test_an_edge_on_a_slow_link_misses_the_deadline_and_is_left_out_for_a_while(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    proxy = TcpProxy(broker.port, delay_s=1.0)  # 1 s each way: a task and its result take > 2 s
    try:
        with _edges(tmp_path / "edges", broker.url, broker_urls={"edge1": proxy.url}):
            coord = run(_opts(tmp_path, broker.url, method="fedavg", rounds=12, deadline=1.6), progress=False)
    finally:
        proxy.close()
    out = tmp_path / "run"
    _check_learned(coord, out, 12)
    recs = _train(out)
    # chosen, waited for until the deadline, closed with the other three; after 3 misses in a row (the default
    # --straggler-misses) left out for 5 rounds (--straggler-bench), tried again, missed, left out for 10
    missed = [r["round"] for r in recs if r["missed"] == {"edge1": "timeout"}]
    benched = [r["round"] for r in recs if r["benched"] == ["edge1"]]
    assert (missed, benched) == ([0, 1, 2, 8], [3, 4, 5, 6, 7, 9, 10, 11]), [(r["missed"], r["benched"]) for r in recs]
    assert all(r["results"] == 3 and r["clients"] == (4 if r["round"] in missed else 3) for r in recs)
    # its answers came, late: each was dropped as a result of an earlier round, never aggregated
    assert sum(r["late_results"].count("edge1") for r in recs) >= 3
    assert all(set(r["late_results"]) <= {"edge1"} for r in recs)
    # it did train, just too slowly (the last task may still be on the slow link when the run ends)
    assert _status(tmp_path / "edges", "edge1")["tasks_done"] in (3, 4)


def test_an_edge_restarted_with_an_older_state_gets_the_full_mask_and_loses_no_round(mosquitto, tmp_path):  # noqa: F811
    # its state file from before the last mask changes put back, as when a kill came between its last result
    # and that task's state save, or a backup was restored
    broker = mosquitto()
    state = tmp_path / "edges" / "edge1" / "state" / "trainer_state.npz"
    seen: dict[str, int] = {}

    def disturb(rec, _edges, transport):
        r = rec["round"]
        if r == 1:
            shutil.copy(state, tmp_path / "old_state.npz")
            seen["saved_version"] = _status(tmp_path / "edges", "edge1")["mask_version"]
        elif r == 6:
            local.stop_edge("edge1", kill=True)
            _wait_offline(transport, "edge1", 30)
            shutil.copy(tmp_path / "old_state.npz", state)
            seen["version_then"] = rec["mask_version"]
            local.start_edge("edge1")
            assert len(transport.wait_for_clients(4, 60)) == 4

    with _edges(tmp_path / "edges", broker.url) as local:
        coord = run(_opts(tmp_path, broker.url, rounds=10, reconfig_interval=2), progress=False, hook=disturb)
    out = tmp_path / "run"
    _check_learned(coord, out, 10)
    recs = _train(out)
    assert seen["saved_version"] < seen["version_then"]  # the state put back was older than the coordinator knew
    # chosen in every round after the restart, and in time: the full mask applied to what it held
    assert all(r["results"] == 4 and not r["missed"] for r in recs[7:]), [r["missed"] for r in recs[7:]]
    assert _status(tmp_path / "edges", "edge1")["mask_version"] == recs[-1]["mask_version"]
    assert _status(tmp_path / "edges", "edge1")["tasks_rejected"] == 0


@contextlib.contextmanager
def _small_disk(path: Path) -> Iterator[str]:
    """A 1 MiB tmpfs at ``path`` (root), or, where mounting is not allowed, the same directory with its state's
    temporary file pointing to /dev/full; either way writes there fail with ENOSPC from the kernel."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield "tmpfs" if mounted else "dev-full"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _symlink_when_free(link: Path, target: str) -> None:
    """``link`` -> ``target`` once a save in progress (which streams into that temporary name) has renamed it."""
    t0 = time.monotonic()
    while True:
        try:
            link.symlink_to(target)
            return
        except FileExistsError:
            assert time.monotonic() - t0 < 30, f"{link} stays: a save never finished"
            time.sleep(0.005)


def _fill(path: Path, how: str) -> None:
    if how == "dev-full":
        _symlink_when_free(path / "trainer_state.npz.tmp", "/dev/full")
        return
    with open(path / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def _free(path: Path) -> None:
    for name in ("filler", "trainer_state.npz.tmp"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / name)


def test_an_edge_whose_disk_is_full_keeps_training_and_resumes_from_its_last_saved_state(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    state_dir = tmp_path / "edges" / "edge1" / "state"
    events: dict[int, str] = {}

    def disturb(rec, edges, transport):
        r = rec["round"]
        if r == 2:
            _fill(state_dir, how)
            events[r] = "disk full"
        elif r == 6:  # restarted while the disk is still full: it resumes from the state saved before
            edges.stop_edge("edge1")
            t0 = time.monotonic()
            while "edge1" in transport.available_clients() and time.monotonic() - t0 < 30:
                time.sleep(0.05)
            edges.start_edge("edge1")
            assert len(transport.wait_for_clients(4, 60)) == 4
            events[r] = "restarted"
        elif r == 8:
            _free(state_dir)
            events[r] = "space freed"

    with _small_disk(state_dir) as how, _edges(tmp_path / "edges", broker.url) as edges:
        coord = run(_opts(tmp_path, broker.url), progress=False, hook=lambda rec, _e, t: disturb(rec, edges, t))
        log = (tmp_path / "edges" / "edge1" / "edge.log").read_text()
        final_status = _status(tmp_path / "edges", "edge1")  # (in the tmpfs, unmounted below)
    out = tmp_path / "run"
    _check_learned(coord, out, 14)
    recs = _train(out)
    assert events == {2: "disk full", 6: "restarted", 8: "space freed"}, how
    # while its disk was full it still answered every round (its results were aggregated) ...
    assert all(r["results"] == 4 for r in recs[3:7]), [(r["results"], r["missed"]) for r in recs]
    # ... and said it could not save its state: the coordinator's metrics show the count it announces
    assert max(r["state_save_failures"].get("edge1", 0) for r in recs[3:7]) >= 2
    assert "cannot save the state" in log
    # after the restart it resumed from its older, consistent state: a mask it did not hold was sent in full
    # (at most one round lost to a rejected task), and from then on it trained every round
    assert all(r["results"] == 4 and not r["missed"] for r in recs[9:]), [r["missed"] for r in recs[9:]]
    assert final_status["mask_version"] == recs[-1]["mask_version"]


def _coord(out: Path, url: str, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "coordinator.cli_coord", "--broker", url, "--federation", "t", "--dataset",
            "digits", "--model", "mlp", "--method", "prunefl", "--rounds", "6", "--min-clients", "4",
            "--clients-per-round", "4", "--deadline", "30", "--lr", "0.1", "--eval-every", "2",
            "--reconfig-interval", "3", "--ip-max-passes", "400", "--out", str(out), "--no-report", "--no-onnx",
            *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_coordinator_restarted_during_initial_pruning_resumes_it(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    out = tmp_path / "run"
    with _edges(tmp_path / "edges", broker.url) as edges:
        first = _coord(out, broker.url)
        logs = {eid: tmp_path / "edges" / eid / "edge.log" for eid in edges.edge_ids()}
        t0 = time.monotonic()
        while not any("initial_prune task received" in p.read_text() for p in logs.values() if p.exists()):
            assert first.poll() is None, first.communicate()[0].decode()
            assert time.monotonic() - t0 < 120, "no edge started initial pruning"
            time.sleep(0.02)
        first.kill()  # mid initial pruning: nothing after it is checkpointed yet
        first.communicate()
        # starting afresh over it is refused (it would discard the run), --resume continues it
        fresh = _coord(out, broker.url)
        text, _ = fresh.communicate(timeout=120)
        assert fresh.returncode == 0, text.decode()  # nothing was learned yet: a fresh start is allowed ...
        assert len(_train(out)) == 6
        again = _coord(out, broker.url)
        text, _ = again.communicate(timeout=120)
        assert again.returncode == 0, text.decode()  # ... and so is one over a completed run
        # killed again during initial pruning, then resumed
        marker = sum(p.read_text().count("initial_prune task received") for p in logs.values())
        third = _coord(out, broker.url)
        while sum(p.read_text().count("initial_prune task received") for p in logs.values()) == marker:
            assert third.poll() is None, third.communicate()[0].decode()
            time.sleep(0.02)
        third.kill()
        third.communicate()
        resumed = _coord(out, broker.url, "--resume")
        text, _ = resumed.communicate(timeout=180)
        assert resumed.returncode == 0, text.decode()
    recs = _records(out)
    stages = [r["stage"] for r in recs]
    assert stages[0] == "resumed" and recs[0]["setup_done"] is False and recs[0]["round"] == 0
    assert stages.count("initial_pruning") == 1
    assert [r["round"] for r in recs if r["stage"] == "train"] == list(range(6))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] is True and summary["initial_pruning"]["passes"] >= 1
    assert summary["final_density"] < 1.0


def test_a_fresh_start_over_an_interrupted_run_is_refused(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    out = tmp_path / "run"
    with _edges(tmp_path / "edges", broker.url):
        first = _coord(out, broker.url, "--ip-max-passes", "3")
        t0 = time.monotonic()
        while not ((out / "metrics.jsonl").exists() and len(_train(out)) >= 2):
            assert time.monotonic() - t0 < 120 and first.poll() is None
            time.sleep(0.02)
        first.kill()
        first.communicate()
        before = (out / "checkpoint.npz").read_bytes()
        fresh = _coord(out, broker.url, "--ip-max-passes", "3")
        text, _ = fresh.communicate(timeout=60)
        assert fresh.returncode == 2, text.decode()
        assert b"--resume continues it" in text
        assert (out / "checkpoint.npz").read_bytes() == before  # untouched
        resumed = _coord(out, broker.url, "--ip-max-passes", "3", "--resume")
        text, _ = resumed.communicate(timeout=180)
        assert resumed.returncode == 0, text.decode()
    assert [r["round"] for r in _train(out)] == list(range(6))  # no round twice, none lost
    assert [r["stage"] for r in _records(out)].count("resumed") == 1



def test_a_coordinator_whose_disk_fills_up_stops_with_its_last_checkpoint_whole(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    out = tmp_path / "run"
    with _edges(tmp_path / "edges", broker.url):
        more = ("--ip-max-passes", "3", "--rounds", "30")  # rounds enough that it cannot finish before the fault
        first = _coord(out, broker.url, *more)
        t0 = time.monotonic()
        while not ((out / "metrics.jsonl").exists() and len(_train(out)) >= 2):
            assert time.monotonic() - t0 < 120 and first.poll() is None
            time.sleep(0.01)
        _symlink_when_free(out / "checkpoint.npz.tmp", "/dev/full")  # the next checkpoint write: ENOSPC
        text, _ = first.communicate(timeout=120)
        assert first.returncode == 3, text.decode()
        assert b"No space left on device" in text and b"--resume" in text
        (out / "checkpoint.npz.tmp").unlink()
        resumed = _coord(out, broker.url, *more, "--resume")
        text, _ = resumed.communicate(timeout=180)
        assert resumed.returncode == 0, text.decode()
    assert [r["round"] for r in _train(out)] == list(range(30))  # the round whose checkpoint failed was redone


def test_a_new_coordinator_run_does_not_resume_the_edges_state_of_an_earlier_run(mosquitto, tmp_path):  # noqa: F811
    # the same edge processes serve two runs in turn (a new run without --resume): the second run's tasks find
    # state of the first one, which is set aside, not trained on
    broker = mosquitto()
    root = tmp_path / "edges"
    with _edges(root, broker.url) as local:
        first = run(_opts(tmp_path, broker.url, rounds=3, out=str(tmp_path / "a")), progress=False)
        second = run(_opts(tmp_path, broker.url, rounds=3, out=str(tmp_path / "b")), progress=False)
        ids = local.edge_ids()
    run_a, run_b = first.state.extra["run_id"], second.state.extra["run_id"]
    assert run_a != run_b
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["run_id"] == run_b
    for eid in ids:
        assert _status(root, eid)["run"] == run_b
        assert (root / eid / "state" / f"trainer_state.npz.run-{run_a}").exists()
        log = (root / eid / "edge.log").read_text()
        assert f"belongs to run {run_a}: starting clean" in log, log[-2000:]
    assert [r["round"] for r in _train(tmp_path / "b")] == [0, 1, 2]
