"""What an edge hands the mask optimiser (float32 z, kept values instead of dense weights) gives the choice the
dense float64 inputs give: initial pruning runs it on the device without dense copies."""

from __future__ import annotations

import numpy as np
import pytest

from prunefl_common.mask_optimizer import optimize_masks

SHAPES = [(30, 40), (7, 9), (64,)]


@pytest.mark.parametrize("ties", ["keep", "exact"])
def test_kept_values_and_float32_z_choose_as_dense_float64(ties):
    rng = np.random.default_rng(0)
    for trial in range(60):
        masks = [rng.random(s) < rng.random() for s in SHAPES]
        if trial % 5 == 0:
            masks[0][:] = True  # density 1: kept values are the flat weights
        w = [np.round(rng.standard_normal(s) * 4) / 4 for s in SHAPES]  # many ties at the delta-cut
        z32 = [(rng.random(s) ** 3).astype(np.float32) for s in SHAPES]
        z64 = [z.astype(np.float64) for z in z32]
        costs, c = [1e-3, 2e-3, 5e-4], 0.5
        dense = optimize_masks(z64, w, masks, costs, c, 0.3, ties=ties)
        kept = optimize_masks(z32, [wi[m].astype(np.float32) for wi, m in zip(w, masks, strict=True)], masks, costs,
                              c, 0.3, ties=ties)
        for a, b in zip(dense.masks, kept.masks, strict=True):
            np.testing.assert_array_equal(a, b)
        assert dense.kept == kept.kept and dense.regrown == kept.regrown


def test_weights_of_neither_shape_are_refused():
    from prunefl_common.mask_optimizer import MaskOptimizerError

    m = [np.ones((4, 4), bool)]
    with pytest.raises(MaskOptimizerError, match="weights"):
        optimize_masks([np.ones((4, 4))], [np.ones((3, 3))], m, [1e-3], 1.0, 0.3)
    with pytest.raises(MaskOptimizerError, match="weights"):
        optimize_masks([np.ones((4, 4))], [np.ones(5)], m, [1e-3], 1.0, 0.3)
