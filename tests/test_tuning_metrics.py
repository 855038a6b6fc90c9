"""Entanglement metrics on synthetic (η, λ) surfaces with known ridge slopes."""

import math

import numpy as np
import pytest

from keras_explr.tuning import metrics

LRS = np.logspace(-2.0, 0.5, 8)       # η spans 2.5 decades
WDS = np.logspace(-4.5, -1.5, 8)      # λ spans 3 decades


def surface(slope, lrs=LRS, wds=WDS, seeds=3, noise=0.01, rng=0, cliff=False):
    """Accuracy 0.55–0.92 with a Gaussian valley whose best log10 λ is
    y*(x) = -3 + slope·(x + 0.75); per-seed noise σ = `noise` (1 point)."""
    x = np.log10(lrs)[:, None]
    y = np.log10(wds)[None, :]
    ridge = -3.0 + slope * (x + 0.75)
    a = 0.55 + 0.37 * np.exp(-((y - ridge) ** 2) / (2 * 0.6 ** 2) - (x + 0.75) ** 2 / (2 * 1.2 ** 2))
    gen = np.random.default_rng(rng)
    s = a[..., None] + noise * gen.standard_normal(a.shape + (seeds,))
    if cliff:  # divergence: chance level (and some NaN runs) far above the ridge in λ
        mask = np.broadcast_to(y - ridge > 1.3, a.shape)
        s[mask] = 0.1
        s[mask & (np.arange(a.shape[0])[:, None] % 2 == 0), 0] = np.nan
    return s


@pytest.mark.parametrize("true_slope", [-1.0, -0.5, 0.0])
def test_ridge_slope_recovers_known_slopes(true_slope):
    for rng in range(5):
        s = surface(true_slope, rng=rng)
        m = metrics.ridge_slope(s, LRS, WDS, n_boot=300, seed=rng)
        assert abs(m.slope - true_slope) < 0.1, (rng, m.slope)
        assert len(m.rows) >= 3
        lo, hi = m.ci
        assert lo <= m.slope <= hi and hi - lo < 0.5


def test_ridge_slope_separates_entangled_from_decoupled_under_noise():
    # σ = 2 points, a single seed: still far apart.
    a = [metrics.ridge_slope(surface(-1, seeds=1, noise=0.02, rng=r), LRS, WDS).slope for r in range(10)]
    b = [metrics.ridge_slope(surface(0, seeds=1, noise=0.02, rng=r), LRS, WDS).slope for r in range(10)]
    assert max(a) < -0.7 and min(b) > -0.3


def test_parabolic_refinement_moves_off_the_grid_points():
    # Exact parabola in y: the vertex is recovered between grid points.
    x = np.log10(LRS)[:, None]
    y = np.log10(WDS)[None, :]
    true = -3.1 - 0.5 * x
    a = 1.0 - (y - true) ** 2
    m = metrics.ridge_slope(a, LRS, WDS, delta=10.0, refine="parabola")
    np.testing.assert_allclose(m.ridge, true.ravel()[m.rows], atol=1e-9)
    assert m.slope == pytest.approx(-0.5, abs=1e-9)
    assert m.ci is None and m.edge_rows == [] and m.reason == ""
    # The default (log-domain) refinement is exact for Gaussian peaks, close on a parabola.
    m_log = metrics.ridge_slope(a, LRS, WDS, delta=10.0)
    np.testing.assert_allclose(m_log.ridge, true.ravel()[m_log.rows], atol=0.01)
    assert m_log.slope == pytest.approx(-0.5, abs=0.01)
    argmax_only = np.polyfit(np.log10(LRS), np.log10(WDS)[np.argmax(a, 1)], 1)[0]
    assert abs(argmax_only + 0.5) > 1e-3  # the grid alone cannot resolve it


@pytest.mark.parametrize("true_slope", [-1.0, -0.5, 0.0])
def test_ridge_slope_unchanged_by_a_divergence_cliff(true_slope):
    for rng in range(3):
        clean = metrics.ridge_slope(surface(true_slope, rng=rng), LRS, WDS, n_boot=0)
        cliff_scores = surface(true_slope, rng=rng, cliff=True)
        assert np.isnan(cliff_scores).any() and (cliff_scores == 0.1).sum() > 5
        cliff = metrics.ridge_slope(cliff_scores, LRS, WDS, n_boot=0)
        assert cliff.slope == pytest.approx(clean.slope, abs=0.02)
        assert abs(cliff.slope - true_slope) < 0.1


def test_sheared_coordinates_shift_the_slope_by_one():
    # The same runs in λ_new = η·λ_old: every ridge point moves by x_i, so s_new = s_old + 1.
    s = surface(-1.0)
    old = metrics.ridge_slope(s, LRS, WDS, n_boot=200)
    new = metrics.ridge_slope(s, LRS, LRS[:, None] * WDS[None, :], n_boot=200)
    assert new.slope == pytest.approx(old.slope + 1, abs=1e-9)
    assert new.ci[0] == pytest.approx(old.ci[0] + 1, abs=1e-9)
    assert abs(new.slope) < 0.1


def test_transposed_slope_is_the_inverse_for_a_diagonal():
    s = surface(-1.0, noise=0.0, seeds=1)
    t = metrics.ridge_slope(s.swapaxes(0, 1), WDS, LRS, delta=0.05)
    assert -1.5 < t.slope < -0.6


def test_good_region_correlation():
    rho_diag = metrics.good_region_correlation(surface(-1), LRS, WDS, n_boot=200)
    rho_half = metrics.good_region_correlation(surface(-0.5), LRS, WDS, n_boot=0)
    rho_flat = metrics.good_region_correlation(surface(0), LRS, WDS, n_boot=200)
    assert rho_diag.value < -0.85 and rho_diag.ci[1] < -0.7
    assert -0.95 < rho_half.value < -0.4
    assert abs(rho_flat.value) < 0.15 and rho_flat.ci[0] < 0 < rho_flat.ci[1]
    assert rho_half.ci is None
    # Invariant to rescaling an axis (λ → 100 λ shifts log λ only).
    assert metrics.good_region_correlation(surface(-1), LRS, 100 * WDS, n_boot=0).value == pytest.approx(
        rho_diag.value)


def test_transfer_regret():
    diag = metrics.transfer_regret(surface(-1, noise=0.003), LRS, WDS, n_boot=200)
    flat = metrics.transfer_regret(surface(0, noise=0.003), LRS, WDS, n_boot=200)
    assert diag.value > 0.05 and diag.ci[0] > 0.03
    assert flat.value < 0.02
    # By hand on a 2×3 grid: best row 0, ĵ = 2; row 1 is within δ, loses 0.9 − 0.7.
    a = np.array([[0.1, 0.5, 1.0], [0.9, 0.5, 0.7]])
    assert metrics.transfer_regret(a, [1, 2], [1, 2, 3], delta=0.2).value == pytest.approx(0.1)
    assert metrics.transfer_regret(a, [1, 2], [1, 2, 3], delta=0.05).value == 0.0
    with pytest.raises(ValueError, match="rectangular"):
        metrics.transfer_regret(a, [1, 2], np.ones((2, 3)))


def test_paired_difference():
    a, b = surface(-1, rng=1), surface(0, rng=1)
    stat = metrics.slope_statistic(LRS, WDS)
    d = metrics.paired_difference(stat, a, b, n_boot=300)
    assert d.value == pytest.approx(metrics.ridge_slope(a, LRS, WDS).slope
                                    - metrics.ridge_slope(b, LRS, WDS).slope)
    assert d.ci[0] < d.value < d.ci[1] < -0.7
    # A grid against itself: exactly zero in every replicate.
    z = metrics.paired_difference(stat, a, a.copy(), n_boot=50)
    assert z.value == 0 and z.ci == (0.0, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.paired_difference(stat, a, b[:, :, :2])


def test_cellwise_bootstrap_resamples_within_cells():
    # Cell (0, 0) has seeds {0, 1}; every other cell is constant: replicate means
    # of that cell can only be 0, 0.5 or 1, with probabilities ¼, ½, ¼.
    s = np.zeros((2, 2, 2))
    s[0, 0] = [0.0, 1.0]
    reps = metrics.cellwise_bootstrap(lambda A: A[0, 0], s, n_boot=4000, seed=1)
    values, counts = np.unique(reps, return_counts=True)
    np.testing.assert_array_equal(values, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)
    with pytest.raises(ValueError, match="2 seeds"):
        metrics.cellwise_bootstrap(lambda A: 0.0, s[..., :1])


def test_expected_best_of_n_matches_brute_force():
    v = np.array([0.3, 0.9, 0.5, 0.7, 0.1])
    rng = np.random.default_rng(0)
    for n in (1, 2, 5):
        sim = v[rng.integers(0, 5, size=(200000, n))].max(1).mean()
        assert metrics.expected_best_of_n(v, n) == pytest.approx(sim, abs=3e-3)
    assert metrics.expected_best_of_n(v, 1) == pytest.approx(v.mean())
    curve = metrics.expected_best_of_n(v, np.arange(1, 30))
    assert np.all(np.diff(curve) >= 0) and curve[-1] == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(ValueError, match="`n`"):
        metrics.expected_best_of_n(v, 0)


def test_search_cost_and_trials_to_within():
    v = np.array([0.2, 0.95, 0.5, 0.99, 0.985, 0.3, 0.1, 0.2, 0.4, 0.6])
    assert metrics.within_fraction(v, 0.01) == pytest.approx(0.2)
    assert metrics.trials_to_within(v, 0.01) == 4
    assert metrics.trials_to_within(v, 0.05) == 2
    assert metrics.trials_to_within(v, 0.0, reference=1.0) is None
    c = metrics.search_cost(v, 0.01, n_boot=500)
    assert c.p.value == pytest.approx(0.2) and c.expected_trials.value == pytest.approx(5.0)
    assert c.n95.value == math.ceil(math.log(0.05) / math.log(0.8))
    assert c.p.ci[0] <= 0.2 <= c.p.ci[1]
    assert c.expected_trials.ci[0] <= 5 <= c.expected_trials.ci[1]
    none = metrics.search_cost(v, 0.0, reference=1.5, n_boot=0)
    assert none.p.value == 0 and math.isinf(none.expected_trials.value) and math.isinf(none.n95.value)


def test_diagonal_flatness():
    lrs = np.logspace(-2, 1, 7)
    flat = metrics.diagonal_flatness(np.full((7, 3), 0.9) + 0.001 * np.arange(3), lrs, n_boot=100)
    assert flat["range"].value == pytest.approx(0, abs=1e-12) and flat["slope"].value == pytest.approx(0, abs=1e-12)
    tilted = metrics.diagonal_flatness(0.5 + 0.1 * np.log10(lrs), lrs)
    assert tilted["slope"].value == pytest.approx(0.1) and tilted["range"].value == pytest.approx(0.3)
    assert tilted["shortfall"].value == pytest.approx(0.15) and tilted["range"].ci is None


def test_ridge_slope_reports_too_few_rows_and_edges():
    a = np.full((4, 4), 0.1)
    a[1, 0] = 0.9  # one good row, argmax on the edge
    m = metrics.ridge_slope(a, [1, 2, 3, 4], [1, 2, 3, 4])
    assert math.isnan(m.slope) and m.rows == [] and m.edge_rows == [1]
    assert "inside the grid" in m.reason and "min_rows=3" in m.reason


@pytest.mark.parametrize("kwargs, match", [
    (dict(scores=np.zeros(3)), "shape"),
    (dict(learning_rates=[1, 2]), "learning_rates"),
    (dict(learning_rates=[1, -2, 3]), "learning_rates"),
    (dict(weight_decays=[1, 2, 0]), "weight_decays"),
    (dict(weight_decays=np.ones((2, 3))), "weight_decays"),
    (dict(delta=-1), "delta"),
    (dict(min_rows=1), "min_rows"),
    (dict(n_boot=-1), "n_boot"),
    (dict(ci=1.5), "ci"),
    (dict(scores=np.full((3, 3), np.nan)), "finite"),
    (dict(refine="cubic"), "refine"),
])
def test_ridge_slope_validates_arguments(kwargs, match):
    args = dict(scores=np.random.default_rng(0).random((3, 3, 2)), learning_rates=[1, 2, 3],
                weight_decays=[1, 2, 3])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        metrics.ridge_slope(**args)
