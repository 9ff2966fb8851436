"""Run reports: a self-contained HTML page with inline SVG charts (no dependency), plus PNGs when matplotlib
happens to be installed (it is not a runtime dependency).

Charts: accuracy vs simulated time and accuracy vs bytes (up + down) for each method, and density per layer
vs round for each method that prunes. Input: per method, the metrics records of :mod:`coordinator.server`.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Series = tuple[str, Sequence[float], Sequence[float]]
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 12))
        v += step
    return out


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def svg_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, width: int = 560,
              height: int = 340) -> str:
    """A line chart as an SVG string (markers at points, legend at the right)."""
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys, strict=True) if y is not None and x is not None]
    ml, mr, mt, mb = 60, 150, 30, 45
    pw, ph = width - ml - mr, height - mt - mb
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">'),
           f'<text x="{ml + pw / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{ml}" y="{mt + 20}">no data</text></svg>')
        return "".join(out)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1e-3

    def sx(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return mt + ph - (v - y0) / (y1 - y0) * ph

    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in _ticks(x0, x1):
        out.append(f'<line x1="{sx(t):.1f}" y1="{mt + ph}" x2="{sx(t):.1f}" y2="{mt + ph + 4}" stroke="#333"/>'
                   f'<text x="{sx(t):.1f}" y="{mt + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{ml - 4}" y1="{sy(t):.1f}" x2="{ml + pw}" y2="{sy(t):.1f}" stroke="#eee"/>'
                   f'<text x="{ml - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">'
               f'{html.escape(ylabel)}</text>')
    for k, (label, xs, ys) in enumerate(series):
        c = COLORS[k % len(COLORS)]
        p = [(sx(x), sy(y)) for x, y in zip(xs, ys, strict=True) if y is not None and x is not None]
        if p:
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.6" points="'
                       + " ".join(f"{a:.1f},{b:.1f}" for a, b in p) + '"/>')
            out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="{c}"/>' for a, b in p[:: max(1, len(p) // 40)])
        ly = mt + 14 + 16 * k
        out.append(f'<line x1="{ml + pw + 10}" y1="{ly - 4}" x2="{ml + pw + 28}" y2="{ly - 4}" stroke="{c}" '
                   f'stroke-width="2"/><text x="{ml + pw + 32}" y="{ly}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _evaluated(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("accuracy") is not None]


def charts(runs: dict[str, Sequence[dict[str, Any]]]) -> list[tuple[str, list[Series], str, str]]:
    acc_time = [(m, [r["sim_time_s"] / 3600 for r in _evaluated(rs)], [r["accuracy"] for r in _evaluated(rs)])
                for m, rs in runs.items()]
    acc_bytes = [(m, [(r["bytes_up"] + r["bytes_down"]) / 1e6 for r in _evaluated(rs)],
                  [r["accuracy"] for r in _evaluated(rs)]) for m, rs in runs.items()]
    out = [("Accuracy vs simulated time", acc_time, "simulated time (h)", "test accuracy"),
           ("Accuracy vs bytes", acc_bytes, "bytes up + down (MB)", "test accuracy")]
    for m, rs in runs.items():
        rows = [r for r in rs if r.get("density_per_layer")]
        if not rows or all(r["density"] >= 1.0 for r in rows):
            continue
        layers = list(rows[0]["density_per_layer"])
        series = [(f"layer {name}", [r["round"] for r in rows], [r["density_per_layer"][name] for r in rows])
                  for name in layers]
        series.append(("overall", [r["round"] for r in rows], [r["density"] for r in rows]))
        out.append((f"Density per layer: {m}", series, "round (-1: before federation)", "density"))
    return out


def write_report(runs: dict[str, Sequence[dict[str, Any]]], out_dir: str | Path, title: str = "PruneFL-Edge run",
                 table_markdown: str | None = None) -> Path:
    """Write ``report.html`` (always) and ``*.png`` (if matplotlib is importable); returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
             f"<body style='font-family:sans-serif'><h1>{html.escape(title)}</h1>")]
    if table_markdown:
        parts.append(f"<pre>{html.escape(table_markdown)}</pre>")
    for name, series, xl, yl in charts(runs):
        parts.append(f"<div>{svg_chart(series, name, xl, yl)}</div>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    _write_pngs(runs, out)
    return path


def _write_pngs(runs: dict[str, Sequence[dict[str, Any]]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    for k, (name, series, xl, yl) in enumerate(charts(runs)):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, xs, ys in series:
            ax.plot(list(xs), list(ys), marker=".", label=label)
        ax.set_title(name)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"chart{k}.png", dpi=100)
        plt.close(fig)
