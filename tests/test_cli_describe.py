"""`prunefl-edge data describe` / `model describe`: output and exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prunefl_edge.cli import main
from prunefl_edge.models import conv2_spec, init_weights
from prunefl_edge.onnx_export import export_onnx


def test_model_describe_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "describe", "builtin:conv2"]) == 0
    out = capsys.readouterr().out
    assert "6,603,710" in out and "fc1" in out and "(2048, 1, 1)" in out


def test_model_describe_pruned_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = conv2_spec(10)
    w = init_weights(spec, 0)
    masks = {i: np.random.default_rng(i).random(w[i].shape) < 0.1 for i, p in enumerate(spec.param_shapes())
             if p.prunable}
    path = export_onnx(spec, w, tmp_path / "m.onnx", masks=masks)
    assert main(["model", "describe", str(path)]) == 0
    assert "(10.0%)" in capsys.readouterr().out


def test_data_describe_and_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "describe", "digits"]) == 0
    assert "1797 training samples" in capsys.readouterr().out
    (tmp_path / "x.onnx").write_bytes(b"nope")
    assert main(["model", "describe", str(tmp_path / "x.onnx")]) == 3
    assert main(["data", "describe", str(tmp_path / "missing")]) == 3
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["data"])
    assert exc.value.code == 2
