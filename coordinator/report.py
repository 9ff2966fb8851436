"""Run reports: a self-contained HTML page with inline SVG charts (no dependency), plus PNGs when matplotlib
happens to be installed (it is not a runtime dependency).

Charts: accuracy vs simulated time (initial pruning at the device rate, and at 0 s as the reference counts it) and
accuracy vs bytes (up + down), all methods in one chart each, and density per layer vs round for each method that
prunes; :func:`write_chart_files` writes the comparison charts as SVG files. Input: per method, the metrics
records of :mod:`coordinator.server`.
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
              height: int = 340, hlines: Sequence[tuple[str, float]] = ()) -> str:
    """A line chart as an SVG string (markers at points, legend at the right); each series is one ``<polyline
    class="series" data-label=...>``; ``hlines``: labelled dashed horizontal lines (e.g. target accuracies)."""
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys, strict=True) if y is not None and x is not None]
    pts += [(pts[0][0], v) for _, v in hlines] if pts else []
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
    for label, v in hlines:
        out.append(f'<line x1="{ml}" y1="{sy(v):.1f}" x2="{ml + pw}" y2="{sy(v):.1f}" stroke="#555" '
                   f'stroke-dasharray="4 3"/><text x="{ml + pw - 4}" y="{sy(v) - 3:.1f}" text-anchor="end" '
                   f'fill="#555">{html.escape(label)}</text>')
    for k, (label, xs, ys) in enumerate(series):
        c = COLORS[k % len(COLORS)]
        p = [(sx(x), sy(y)) for x, y in zip(xs, ys, strict=True) if y is not None and x is not None]
        if p:
            out.append(f'<polyline class="series" data-label="{html.escape(label)}" fill="none" stroke="{c}" '
                       f'stroke-width="1.6" points="'
                       + " ".join(f"{a:.1f},{b:.1f}" for a, b in p) + '"/>')
            out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="{c}"/>' for a, b in p[:: max(1, len(p) // 40)])
        ly = mt + 14 + 16 * k
        out.append(f'<line x1="{ml + pw + 10}" y1="{ly - 4}" x2="{ml + pw + 28}" y2="{ly - 4}" stroke="{c}" '
                   f'stroke-width="2"/><text x="{ml + pw + 32}" y="{ly}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _evaluated(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("accuracy") is not None]


def _ip_time(records: Sequence[dict[str, Any]]) -> float:
    r = next((r for r in records if r.get("stage") == "initial_pruning"), None)
    return 0.0 if r is None else float(r["sim_time_s"])


Chart = tuple[str, list[Series], str, str]


def comparison_charts(runs: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Chart]:
    """The methods side by side, one series per method: accuracy vs simulated time (initial pruning at the device
    rate), vs simulated time with initial pruning at 0 s (the reference's accounting; only when some method ran it)
    and vs bytes up + down. Keys name the chart files (``STEM-KEY.svg``)."""
    acc_time = [(m, [r["sim_time_s"] / 3600 for r in _evaluated(rs)], [r["accuracy"] for r in _evaluated(rs)])
                for m, rs in runs.items()]
    acc_bytes = [(m, [(r["bytes_up"] + r["bytes_down"]) / 1e6 for r in _evaluated(rs)],
                  [r["accuracy"] for r in _evaluated(rs)]) for m, rs in runs.items()]
    out: dict[str, Chart] = {"accuracy-vs-time": ("Accuracy vs simulated time", acc_time, "simulated time (h)",
                                                  "test accuracy")}
    if any(_ip_time(rs) for rs in runs.values()):
        no_ip = [(m, [(r["sim_time_s"] - _ip_time(rs)) / 3600 for r in _evaluated(rs)],
                  [r["accuracy"] for r in _evaluated(rs)]) for m, rs in runs.items()]
        out["accuracy-vs-time-no-ip"] = ("Accuracy vs simulated time, initial pruning 0 s (as the reference)",
                                         no_ip, "simulated time without initial pruning (h)", "test accuracy")
    out["accuracy-vs-bytes"] = ("Accuracy vs bytes", acc_bytes, "bytes up + down (MB)", "test accuracy")
    return out


def charts(runs: dict[str, Sequence[dict[str, Any]]]) -> list[Chart]:
    out = list(comparison_charts(runs).values())
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


def _hlines(targets: dict[str, float] | None, ylabel: str) -> list[tuple[str, float]]:
    return [(f"target {k}", float(v)) for k, v in (targets or {}).items()] if ylabel == "test accuracy" else []


def write_chart_files(runs: dict[str, Sequence[dict[str, Any]]], out_dir: str | Path, stem: str,
                      targets: dict[str, float] | None = None) -> list[Path]:
    """The comparison charts as SVG files ``out_dir/STEM-KEY.svg`` (targets as dashed lines); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, (name, series, xl, yl) in comparison_charts(runs).items():
        path = out / f"{stem}-{key}.svg"
        path.write_text(svg_chart(series, name, xl, yl, width=640, height=380, hlines=_hlines(targets, yl)) + "\n")
        paths.append(path)
    return paths


def write_report(runs: dict[str, Sequence[dict[str, Any]]], out_dir: str | Path, title: str = "PruneFL-Edge run",
                 table_markdown: str | None = None, targets: dict[str, float] | None = None) -> Path:
    """Write ``report.html`` (always) and ``*.png`` (if matplotlib is importable); returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
             f"<body style='font-family:sans-serif'><h1>{html.escape(title)}</h1>")]
    if table_markdown:
        parts.append(f"<pre>{html.escape(table_markdown)}</pre>")
    for name, series, xl, yl in charts(runs):
        parts.append(f"<div>{svg_chart(series, name, xl, yl, hlines=_hlines(targets, yl))}</div>")
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
