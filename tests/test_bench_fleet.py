"""bench/bench_fleet.py stays runnable and measures what it says: a small fleet of light edges through a real
Mosquitto, every edge answering every round, no message rejected. (Its timings are not checked here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_fleet_runs_a_small_fleet(tmp_path):
    out = tmp_path / "fleet.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_fleet.py"), "--edges", "3,7", "--rounds", "2",
                        "--train-s", "0.05", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "| 7 | 7/7 |" in p.stdout
    res = json.loads(out.read_text())
    assert [s["edges"] for s in res["summary"]] == [3, 7]
    for s, run in zip(res["summary"], res["runs"], strict=True):
        assert s["results"] == s["edges"] and s["failures"] == 0
        assert run["rejected_messages"] == 0
        assert all(r["results"] == s["edges"] for r in run["rounds"])
        assert s["bytes_per_round"] > 0 and s["coord_peak_rss_mb"] > 0
