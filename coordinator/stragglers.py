"""Stragglers: an edge that misses the round deadline several rounds in a row is left out of client selection for a
while, so that rounds stop waiting the whole deadline for it. Each further miss in a row (it is tried again when its
bench ends) doubles the bench, up to a cap; one result in time clears its record.

The record is a JSON-serialisable dict ``{edge id: {"misses": n, "benches": n, "until": round}}`` kept in the
global state's ``extra`` (checkpointed with it, so ``--resume`` keeps it). Only deadline misses count: an edge that
goes offline (its Last Will) is not chosen anyway, and a rejection or an invalid result is not slowness. An edge
that went offline and came back (a partition healed, a restart; :class:`coordinator.client_ledger.ClientLedger`
tells) starts with a clean record: see :func:`forget_returned`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

Book = dict[str, dict[str, int]]


@dataclass(frozen=True)
class StragglerPolicy:
    misses: int = 0  # deadline misses in a row before an edge is benched; 0: never bench
    bench_rounds: int = 5  # length of the first bench, doubled for each further one in a row
    max_bench_rounds: int = 80

    def bench_length(self, benches_before: int) -> int:
        return min(self.max_bench_rounds, self.bench_rounds * 2 ** min(benches_before, 30))


def read_book(extra: dict[str, Any]) -> Book:
    """The record in a state's ``extra``; an entry of the wrong shape (a hand-edited checkpoint) is dropped."""
    book = extra.get("stragglers")
    if not isinstance(book, dict):
        return {}
    keys = ("misses", "benches", "until")  # (checkpoints of earlier versions also hold "back": ignored)
    return {str(c): {k: int(e[k]) for k in keys} for c, e in book.items()
            if isinstance(e, dict) and all(isinstance(e.get(k), int) for k in keys)}


def eligible(book: Book, available: Iterable[str], round_index: int, keep: int) -> tuple[list[str], list[str]]:
    """(the edges selection may choose from, the benched ones left out). At least ``keep`` edges stay eligible when
    that many are available: benched ones come back first those whose bench ends first."""
    ids = sorted(set(available))
    benched = [c for c in ids if book.get(c, {}).get("until", 0) > round_index]
    pool = [c for c in ids if c not in benched]
    if len(pool) < keep and benched:
        back = sorted(benched, key=lambda c: (book[c]["until"], c))[:keep - len(pool)]
        pool = sorted(pool + back)
        benched = [c for c in benched if c not in back]
    return pool, benched


def forget_returned(book: Book, available: Collection[str], returned: Collection[str]) -> None:
    """Drop the records of edges offline now or back from offline since the previous round."""
    for c in list(book):
        if c not in available or c in returned:
            del book[c]


def record_round(book: Book, policy: StragglerPolicy, round_index: int, timed_out: Iterable[str],
                 in_time: Iterable[str]) -> dict[str, int]:
    """Update ``book`` after a round; returns the edges benched now, with the round their bench ends (exclusive)."""
    for c in in_time:
        book.pop(c, None)
    newly: dict[str, int] = {}
    if policy.misses <= 0:
        return newly
    for c in sorted(set(timed_out)):
        e = book.setdefault(c, {"misses": 0, "benches": 0, "until": 0})
        e["misses"] += 1
        if e["misses"] >= policy.misses:
            e["until"] = round_index + 1 + policy.bench_length(e["benches"])
            e["benches"] += 1
            newly[c] = e["until"]
    return newly
