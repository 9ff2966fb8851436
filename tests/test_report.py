"""The report: self-contained HTML whose inline SVG charts are well-formed XML."""

from __future__ import annotations

import re
import xml.dom.minidom

from coordinator.report import svg_chart, write_report


def _records(method, dens):
    return [{"round": r, "method": method, "accuracy": 0.1 + 0.08 * r if r % 2 else None, "density": d,
             "density_per_layer": {"fc1": d, "fc2": min(1.0, 2 * d)}, "sim_time_s": 60.0 * (r + 1),
             "bytes_up": 1000 * r, "bytes_down": 2000 * r} for r, d in enumerate(dens)]


def test_html_report_with_svg(tmp_path):
    runs = {"fedavg": _records("fedavg", [1.0] * 10), "prunefl": _records("prunefl", [1.0, 0.5, 0.3] + [0.2] * 7)}
    path = write_report(runs, tmp_path, title="t <&>", table_markdown="| a |")
    html = path.read_text()
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 3  # accuracy vs time, vs bytes, density of prunefl (fedavg stays dense)
    for s in svgs:
        xml.dom.minidom.parseString(s)
    assert "t &lt;&amp;&gt;" in html


def test_empty_chart():
    xml.dom.minidom.parseString(svg_chart([("x", [], [])], "empty", "x", "y"))
