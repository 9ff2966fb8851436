from __future__ import annotations

import json

import numpy as np
import pytest

from prunefl_common.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU
from prunefl_common.time_model import DeviceProfile, ProfileError, TimeModel, load_profile

CONV2 = ModelSpec((1, 28, 28), (Conv2d(32, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)),
                                Conv2d(64, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)), Flatten(),
                                Linear(2048), ReLU(), Linear(62)), name="conv2")


def test_pi4_reference_matches_paper_config():
    prof = load_profile("pi4-reference")
    tm = TimeModel.from_profile(prof, CONV2, local_steps=5)
    # reference: TIME_CONSTANT = 1.2492789765 * 5, COMP_COEFFICIENTS = single * 5, COMM = 5.5616e-6
    assert tm.intercept == pytest.approx(1.2492789765 * 5)
    np.testing.assert_allclose(tm.compute, np.array([0.0, 7.098850e-6, 1.927325e-7, 1.782308e-7]) * 5)
    assert tm.comm == pytest.approx(5.561621025626998e-06)
    kept = [800, 51200, 6422528, 126976]
    expect = 1.2492789765 * 5 + sum(k * (a * 5 + 5.561621025626998e-06) for k, a in
                                    zip(kept, [0.0, 7.098850e-6, 1.927325e-7, 1.782308e-7], strict=True))
    assert tm.round_time(kept) == pytest.approx(expect)
    a_iter = [0.0, 7.098850e-6, 1.927325e-7, 1.782308e-7]
    assert tm.compute_time(kept, 10) == pytest.approx(
        10 * (1.2492789765 + sum(k * a for k, a in zip(kept, a_iter, strict=True))))


def test_conv2_with_ten_classes_uses_per_layer_coefficients():
    conv2_10 = ModelSpec(CONV2.input_shape, (*CONV2.layers[:-1], Linear(10)), name="conv2")
    tm = TimeModel.from_profile(load_profile("pi4-reference"), conv2_10, local_steps=5)
    np.testing.assert_allclose(tm.compute, np.array([0.0, 7.098850e-6, 1.927325e-7, 1.782308e-7]) * 5)


def test_other_model_uses_kind_defaults():
    mlp = ModelSpec((64, 1, 1), (Linear(32), ReLU(), Linear(10)), name="mlp")
    tm = TimeModel.from_profile(load_profile("pi4-reference"), mlp, local_steps=5)
    np.testing.assert_allclose(tm.compute, [1.927325e-7 * 5] * 2)


def test_profile_file_round_trip_and_errors(tmp_path):
    prof = load_profile("pi4-reference")
    prof.save(tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == prof
    with pytest.raises(ProfileError, match="neither a built-in"):
        load_profile(tmp_path / "missing.json")
    bad = prof.to_json()
    bad["intercept_s"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ProfileError, match=">= 0"):
        load_profile(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ProfileError, match="JSON"):
        load_profile(tmp_path / "junk.json")
    with pytest.raises(ProfileError, match="malformed"):
        DeviceProfile.from_json({"format": "prunefl-device-profile/1"})
