"""The report: self-contained HTML whose inline SVG charts are well-formed XML."""

from __future__ import annotations

import re
import xml.dom.minidom

from coordinator.report import svg_chart, write_chart_files, write_report


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


def test_comparison_chart_files_one_series_per_method(tmp_path):
    ip = {"round": -1, "stage": "initial_pruning", "accuracy": 0.3, "density": 0.4, "sim_time_s": 500.0,
          "bytes_up": 0, "bytes_down": 10}
    runs = {"fedavg": _records("fedavg", [1.0] * 10), "prunefl": [ip] + _records("prunefl", [0.4] * 10),
            "feddst": _records("feddst", [0.3] * 10)}
    paths = write_chart_files(runs, tmp_path / "charts", "pp-iid", {"strict": 0.8, "95": 0.7})
    names = sorted(p.name for p in paths)
    assert names == ["pp-iid-accuracy-vs-bytes.svg", "pp-iid-accuracy-vs-time-no-ip.svg",
                     "pp-iid-accuracy-vs-time.svg"]
    for p in paths:
        assert p.exists()
        doc = xml.dom.minidom.parseString(p.read_text())
        labels = [e.getAttribute("data-label") for e in doc.getElementsByTagName("polyline")
                  if e.getAttribute("class") == "series"]
        assert labels == ["fedavg", "prunefl", "feddst"]
        assert "target strict" in p.read_text() and "target 95" in p.read_text()
    # without initial pruning anywhere there is no "IP 0 s" chart
    assert len(write_chart_files({"fedavg": runs["fedavg"]}, tmp_path / "b", "x")) == 2
