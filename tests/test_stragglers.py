"""Stragglers: an edge that keeps missing the deadline is left out of selection for a while (doubling), comes back
when its bench ends, is cleared by one result in time or by going offline and coming back; rejections do not count;
the record survives a checkpoint."""

from __future__ import annotations

import dataclasses

from test_server import _coord

from coordinator.client_ledger import ClientLedger
from coordinator.methods import FedAvg
from coordinator.state import GlobalState
from coordinator.stragglers import StragglerPolicy, eligible, forget_returned, read_book, record_round

POLICY = StragglerPolicy(misses=2, bench_rounds=3, max_bench_rounds=10)


def test_benched_after_misses_in_a_row_doubling_up_to_the_cap():
    book: dict = {}
    assert record_round(book, POLICY, 0, ["a"], []) == {}  # one miss: still chosen
    assert record_round(book, POLICY, 1, ["a"], []) == {"a": 5}  # second in a row: out for rounds 2, 3, 4
    assert eligible(book, ["a", "b", "c"], 2, 1) == (["b", "c"], ["a"])
    assert eligible(book, ["a", "b", "c"], 4, 1) == (["b", "c"], ["a"])
    assert eligible(book, ["a", "b", "c"], 5, 1) == (["a", "b", "c"], [])  # bench over: tried again
    assert record_round(book, POLICY, 5, ["a"], []) == {"a": 12}  # missed again at once: 6 rounds
    assert record_round(book, POLICY, 12, ["a"], []) == {"a": 23}  # then 12, capped at 10
    assert record_round(book, POLICY, 23, [], ["a"]) == {} and book == {}  # one result in time clears it


def test_a_miss_between_results_in_time_does_not_bench():
    book: dict = {}
    for r in range(6):
        record_round(book, POLICY, r, ["a"] if r % 2 else [], [] if r % 2 else ["a"])
    assert eligible(book, ["a", "b"], 6, 1) == (["a", "b"], [])


def test_enough_edges_stay_eligible_those_released_first_come_back():
    book = {"a": {"misses": 2, "benches": 1, "until": 9}, "b": {"misses": 2, "benches": 1, "until": 7},
            "c": {"misses": 2, "benches": 1, "until": 8}}
    assert eligible(book, ["a", "b", "c", "d"], 5, 1) == (["d"], ["a", "b", "c"])
    assert eligible(book, ["a", "b", "c", "d"], 5, 3) == (["b", "c", "d"], ["a"])
    assert eligible(book, ["a", "b"], 5, 5) == (["a", "b"], [])  # fewer available than asked: all of them


def test_policy_off_never_benches_and_bad_records_are_dropped():
    book: dict = {}
    for r in range(10):
        assert record_round(book, StragglerPolicy(), r, ["a"], []) == {}
    assert book == {}
    extra = {"stragglers": {"a": {"misses": 2, "benches": 0, "until": 4, "back": 1}, "b": {"misses": "x"}, "c": 3,
                            "d": {"misses": 2, "until": 4}}}
    assert read_book(extra) == {"a": {"misses": 2, "benches": 0, "until": 4}}  # an older checkpoint's "back" goes
    assert read_book({"stragglers": [1, 2]}) == {} and read_book({}) == {}


def test_records_of_edges_offline_or_back_since_are_forgotten():
    back = {"a": 2, "b": 0, "c": 5}
    ledger = ClientLedger()
    assert ledger.observe(["a", "b", "c"], back.get) == set()  # the first look is the baseline
    book: dict = {}
    record_round(book, POLICY, 0, ["a", "b", "c"], [])
    forget_returned(book, ["a", "b", "c"], ledger.observe(["a", "b", "c"], back.get))  # nothing changed
    assert sorted(book) == ["a", "b", "c"]
    back.update(a=3)  # a came back from offline
    forget_returned(book, ["a", "c"], ledger.observe(["a", "b", "c"], back.get))  # and b is offline now
    assert book == {"c": {"misses": 1, "benches": 0, "until": 0}}
    # a restarted coordinator counts afresh: its first look is a baseline, so c's record stays
    fresh = ClientLedger()
    forget_returned(book, ["c"], fresh.observe(["c"], {"c": 0}.get))
    assert book == {"c": {"misses": 1, "benches": 0, "until": 0}}
    assert fresh.observe(["c"], {"c": 1}.get) == {"c"}


def test_round_loop_leaves_a_straggler_out_then_tries_it_again(tmp_path):
    # c1 never answers in time; K = 3 of 4 clients
    coord, spy = _coord(FedAvg(), fail=lambda cid, r: cid == "c1", rounds=14)
    coord.config = dataclasses.replace(coord.config, stragglers=POLICY)
    chosen: list[list[str]] = []
    recs = []
    for _ in range(14):
        n_sent = len(spy.sent)
        recs.append(coord.run_round())
        chosen.append(sorted(cid for cid, _ in spy.sent[n_sent:]))
        if coord.state.round == 7:  # a checkpoint and a restart keep the record
            coord.state.save(tmp_path / "ckpt.npz")
            coord.state = GlobalState.load(tmp_path / "ckpt.npz")
    picked = [r for r, c in enumerate(chosen) if "c1" in c]
    misses = [r for r in range(14) if recs[r]["missed"].get("c1") == "timeout"]
    assert picked == misses  # whenever chosen, it missed
    benched = [r for r in range(14) if recs[r]["benched"] == ["c1"]]
    assert benched and not set(benched) & set(picked)
    # benched from the round after its second miss (every time chosen is a miss in a row here) for 3 rounds
    assert benched[:3] == [misses[1] + 1, misses[1] + 2, misses[1] + 3]
    # then eligible again; chosen again, it missed once more and was benched for 6 rounds
    again = [r for r in picked if r > misses[1]]
    assert again and benched[3:] == [r for r in range(again[0] + 1, min(again[0] + 7, 14))], (picked, benched)
    assert all(len(c) == 3 and "c1" not in c for r, c in enumerate(chosen) if r in benched)
    assert all(recs[r]["results"] == 3 for r in benched)  # those rounds lost no one
    assert "c1" in coord.state.extra["stragglers"]


def test_an_edge_back_from_offline_starts_with_a_clean_record():
    seen: dict[str, int] = {}  # "offline": the round c1 is away (its Last Will), after which it reconnects
    coord, spy = _coord(FedAvg(), fail=lambda cid, r: cid == "c1" and "offline" not in seen, rounds=10)
    coord.config = dataclasses.replace(coord.config, stragglers=StragglerPolicy(misses=1, bench_rounds=50))
    listed = spy.available_clients
    spy.available_clients = lambda: [c for c in listed()
                                     if not (c == "c1" and seen.get("offline") == coord.state.round)]
    recs = []
    for r in range(10):
        recs.append(coord.run_round())
        if "offline" not in seen and "c1" in coord.state.extra.get("stragglers", {}):
            assert recs[r]["missed"] == {"c1": "timeout"}
            seen["offline"] = r + 1
    assert seen["offline"] <= 8, "c1 was never chosen"
    # back after one round away: eligible at once, though its bench was to last 50 rounds; in time from then on
    assert all(rec["benched"] == [] for rec in recs[seen["offline"]:])
    assert "c1" not in coord.state.extra["stragglers"]
    back = recs[seen["offline"]:]
    assert not any("c1" in rec["missed"] for rec in back) and any(rec["clients"] == 3 for rec in back)
