"""The PruneFL mask optimiser against hand-computed cases and a literal (heap-free) transcription of the greedy."""

from __future__ import annotations

import time

import numpy as np
import pytest

from prunefl_common.mask_optimizer import MaskOptimizerError, delta_for_round, optimize_masks


def naive_greedy(z, w, m, costs, c, delta, fixed=0.0, max_density=None, ties="exact"):
    """Literal transcription of the reference: sort candidates by z/cost, add one by one while ratio > N/D.

    ties="keep": the reference's stay set (``control/algorithm.py`` ``process_layer``): ``thr = sort(|w_kept|)
    [int(delta * kept)]``, kept weights with ``|w| >= thr`` stay; "exact": the ``int(delta * kept)`` smallest go."""
    stay, cands = [], []
    num, den = fixed, c
    for li, (zl, wl, ml) in enumerate(zip(z, w, m, strict=True)):
        zl, wl, ml = zl.ravel(), wl.ravel(), ml.ravel().astype(bool)
        kept = np.flatnonzero(ml)
        n_dec = int(delta * kept.size)
        s = ml.copy()
        if ties == "keep":
            if 0 < n_dec < kept.size:
                thr = np.sort(np.abs(wl[kept]))[n_dec]
                s = ml & (np.abs(wl) >= thr)
            elif n_dec >= kept.size:
                s[:] = False
        else:
            order = kept[np.argsort(np.abs(wl[kept]), kind="stable")]
            s[order[:n_dec]] = False
        stay.append(s)
        num += zl[s].sum()
        den += s.sum() * costs[li]
        for j in np.flatnonzero(~s):
            r = np.inf if costs[li] == 0 else zl[j] / costs[li]
            cands.append((r, li, j))
    cands.sort(key=lambda t: -t[0])
    total = sum(x.size for x in m)
    n_kept = sum(int(s.sum()) for s in stay)
    for r, li, j in cands:
        if max_density is not None and n_kept >= int(np.floor(max_density * total)):
            break
        if not r > num / den:
            break
        stay[li][j] = True
        n_kept += 1
        num += z[li].ravel()[j]
        den += costs[li]
    return [s.reshape(x.shape) for s, x in zip(stay, m, strict=True)]


def test_delta_schedule():
    assert delta_for_round(0) == pytest.approx(0.3)
    assert delta_for_round(10000) == pytest.approx(0.15)
    assert delta_for_round(50) == pytest.approx(0.3 * 0.5 ** (50 / 10000))


def test_hand_case_removal_and_regrowth():
    # one layer of 6 weights: 4 kept, 2 pruned. delta 0.5 -> the 2 smallest |w| among kept are candidates.
    w = [np.array([0.1, -0.2, 3.0, 4.0, 0.0, 0.0], np.float32)]
    m = [np.array([1, 1, 1, 1, 0, 0], bool)]
    # stay = {2, 3}: N = 1 + 1 = 2; D = c + 2*cost = 1 + 2 = 3 -> N/D = 0.667
    # candidates: 0 (z 0.1), 1 (z 5.0), 4 (z 2.0), 5 (z 0.5), cost 1 -> ratios 5, 2, 0.5, 0.1
    # add 1: 5 > 0.667 -> N 7, D 4 (1.75); add 4: 2 > 1.75 -> N 9, D 5 (1.8); 0.5 < 1.8 stop.
    z = [np.array([0.1, 5.0, 1.0, 1.0, 2.0, 0.5])]
    res = optimize_masks(z, w, m, costs=[1.0], intercept=1.0, delta=0.5)
    np.testing.assert_array_equal(res.masks[0], [0, 1, 1, 1, 1, 0])
    assert res.objective == pytest.approx(9 / 5)
    assert res.removed == [1] and res.regrown == [1] and res.kept == [4]
    np.testing.assert_array_equal(res.masks[0], naive_greedy(z, w, m, [1.0], 1.0, 0.5)[0])


def test_bias_importance_counts_in_numerator_only():
    w = [np.array([1.0, 2.0], np.float32)]
    m = [np.array([1, 0], bool)]
    z = [np.array([1.0, 1.5])]
    # without fixed: N/D = 1/(1+1) = 0.5 < 1.5 -> add. with fixed 10: N/D = 11/2 > 1.5 -> not added
    assert optimize_masks(z, w, m, [1.0], 1.0, 0.0).masks[0].tolist() == [True, True]
    assert optimize_masks(z, w, m, [1.0], 1.0, 0.0, fixed_importance=10.0).masks[0].tolist() == [True, False]


def test_delta_limits():
    rng = np.random.default_rng(1)
    w = [rng.standard_normal(20).astype(np.float32)]
    m = [np.ones(20, bool)]
    z = [np.zeros(20)]  # nothing is worth adding back
    assert optimize_masks(z, w, m, [1.0], 1.0, 0.0).kept == [20]  # delta 0: no removal candidate
    res = optimize_masks(z, w, m, [1.0], 1.0, 0.3)
    assert res.kept == [14] and res.removed == [6]  # int(0.3*20) = 6 smallest |w| removed
    removed = np.flatnonzero(~res.masks[0])
    assert set(removed) == set(np.argsort(np.abs(w[0]))[:6])
    assert optimize_masks(z, w, m, [1.0], 1.0, 1.0).kept == [0]
    with pytest.raises(MaskOptimizerError):
        optimize_masks(z, w, m, [1.0], 1.0, 1.5)


def test_zero_cost_layer_keeps_everything():
    # layer 0 costs nothing (a_l = 0 and b = 0): every candidate is added even with zero importance
    w = [np.array([0.1, 0.2, 0.3], np.float32), np.array([0.1, 0.2, 0.3], np.float32)]
    m = [np.array([1, 0, 1], bool), np.array([1, 0, 1], bool)]
    z = [np.zeros(3), np.zeros(3)]
    res = optimize_masks(z, w, m, [0.0, 1.0], 1.0, 0.5)
    assert res.masks[0].tolist() == [True, True, True]
    assert res.masks[1].tolist() == [False, False, True]


def test_layer_with_compute_cost_zero_uses_comm_cost():
    # a_l = 0 but b > 0: cost = b, the ratio is z/b (conv1 of the reference profile)
    w = [np.array([1.0, 0.0], np.float32), np.array([1.0, 0.0], np.float32)]
    m = [np.array([1, 0], bool), np.array([1, 0], bool)]
    z = [np.array([1.0, 1.0]), np.array([1.0, 1.0])]
    b = 0.5
    res = optimize_masks(z, w, m, [0.0 + b, 10.0 + b], 1.0, 0.0)
    # N/D = 2 / (1 + 0.5 + 10.5) = 0.167; layer 0 candidate ratio 2 -> added; then N/D = 3/12.5 = 0.24;
    # layer 1 candidate ratio 1/10.5 = 0.095 < 0.24 -> not added
    assert res.masks[0].tolist() == [True, True] and res.masks[1].tolist() == [True, False]


def test_max_density_cap():
    w = [np.ones(10, np.float32)]
    m = [np.zeros(10, bool)]
    z = [np.arange(10, dtype=np.float64) + 100]
    res = optimize_masks(z, w, m, [1.0], 1.0, 0.0, max_density=0.3)
    assert res.kept == [3]
    assert res.masks[0][-3:].all()  # the three highest ratios
    np.testing.assert_array_equal(res.masks[0], naive_greedy(z, w, m, [1.0], 1.0, 0.0, max_density=0.3)[0])


@pytest.mark.parametrize("seed", range(6))
def test_matches_literal_greedy(seed):
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (5, 6), (30,)]
    w = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    m = [rng.random(s) < 0.5 for s in shapes]
    z = [rng.exponential(size=s) ** 3 for s in shapes]
    costs = [0.0, 0.3, 0.05] if seed % 2 else [0.2, 0.3, 0.05]
    md = 0.4 if seed % 3 == 0 else None
    res = optimize_masks(z, w, m, costs, 2.0, 0.3, fixed_importance=0.5, max_density=md)
    ref = naive_greedy(z, w, m, costs, 2.0, 0.3, fixed=0.5, max_density=md)
    for a, b in zip(res.masks, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv2_scale_is_fast():
    rng = np.random.default_rng(0)
    shapes = [(32, 1, 5, 5), (64, 32, 5, 5), (2048, 3136), (62, 2048)]
    w = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    m = [rng.random(s) < 0.3 for s in shapes]
    z = [(rng.standard_normal(s) ** 2).astype(np.float32) for s in shapes]
    costs = list(np.array([0, 7.098850e-6, 1.927325e-7, 1.782308e-7]) * 5 + 5.561621025626998e-6)
    t0 = time.perf_counter()
    res = optimize_masks(z, w, m, costs, 1.2492789765 * 5, 0.3)
    assert time.perf_counter() - t0 < 2.0  # ~0.3 s alone; generous for a shared machine
    assert sum(res.kept) > 0


def test_bad_inputs():
    with pytest.raises(MaskOptimizerError, match="shape"):
        optimize_masks([np.zeros(3)], [np.zeros(3)], [np.ones(4, bool)], [1.0], 1.0, 0.1)
    with pytest.raises(MaskOptimizerError, match="finite"):
        optimize_masks([np.array([np.nan])], [np.zeros(1)], [np.ones(1, bool)], [1.0], 1.0, 0.1)
    with pytest.raises(MaskOptimizerError, match="costs"):
        optimize_masks([np.zeros(1)], [np.zeros(1)], [np.ones(1, bool)], [-1.0], 1.0, 0.1)


def _tied_case(seed: int):
    rng = np.random.default_rng(100 + seed)
    shapes = [(6, 5), (40,), (3, 3, 3)]
    # magnitudes on a coarse grid: many weights tie with the delta-cut magnitude
    w = [(rng.integers(-4, 5, size=s) / 4).astype(np.float32) for s in shapes]
    m = [rng.random(s) < 0.7 for s in shapes]
    z = [rng.exponential(size=s) ** 2 for s in shapes]
    return w, m, z


def _reference_stay_torch(w: np.ndarray, m: np.ndarray, delta: float) -> np.ndarray:
    """The reference's process_layer stay set, transcribed with torch (an independent implementation)."""
    torch = pytest.importorskip("torch")
    weight, mask = torch.from_numpy(w.copy()), torch.from_numpy(m.copy())
    iu = mask
    max_dec_num = int(delta * int(iu.sum()))
    w_thr = torch.sort(torch.abs(weight[iu]))[0][max_dec_num]
    return ((torch.abs(weight) >= w_thr) & iu).numpy()


@pytest.mark.parametrize("seed", range(12))
def test_ties_with_the_cut_magnitude_stay_as_in_the_reference(seed):
    w, m, z = _tied_case(seed)
    costs, c, delta = [0.2, 0.3, 0.05], 2.0, 0.3
    res = optimize_masks(z, w, m, costs, c, delta, fixed_importance=0.5)  # default ties="keep"
    ref = naive_greedy(z, w, m, costs, c, delta, fixed=0.5, ties="keep")
    for a, b in zip(res.masks, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    # no weight tied with the cut is removed: a removed weight is strictly below the torch transcription's threshold
    for wl, ml, nm in zip(w, m, res.masks, strict=True):
        stay = _reference_stay_torch(wl, ml, delta)
        assert not (stay & ~nm).any()  # every weight the reference keeps stays kept
        removed = ml & ~nm
        if removed.any() and (ml & stay).any():
            assert np.abs(wl[removed]).max() < np.abs(wl[ml & stay]).min()


def test_tie_rule_exact_removes_exactly_int_delta_kept():
    w = [np.array([0.5, 0.5, 0.5, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)]
    m = [np.ones(10, bool)]
    z = [np.zeros(10)]  # nothing is worth regrowing: the stay set is the answer
    keep = optimize_masks(z, w, m, [1.0], 1.0, 0.3, fixed_importance=1.0)
    exact = optimize_masks(z, w, m, [1.0], 1.0, 0.3, fixed_importance=1.0, ties="exact")
    assert keep.removed == [0]  # thr = sorted |w| [3] = 0.5: all four tied weights stay
    assert exact.removed == [3]
    assert exact.masks[0][4:].all() and exact.masks[0][:4].sum() == 1
    with pytest.raises(MaskOptimizerError):
        optimize_masks(z, w, m, [1.0], 1.0, 0.3, ties="nearest")
