"""keras_explr.theory against the paper's numbers and an independent numpy simulation."""

import math

import numpy as np
import pytest

from keras_explr import theory as th
from tests import numpy_oracle as toy

PAPER = (0.1, 5e-4, 0.9)  # η, λ, γ of Li & Arora's CIFAR-10 runs


# ---------------------------------------------------------------- paper numbers
def test_growth_root_paper_value():
    a = th.growth_root(*PAPER)
    assert a == pytest.approx(0.999497728368, abs=1e-12)
    # It is a root, and the larger one.
    eta, lam, gam = PAPER
    assert a * a - (1 + gam - lam * eta) * a + gam == pytest.approx(0.0, abs=1e-15)
    a_plus, a_minus = th.growth_roots(*PAPER)
    assert a_minus == pytest.approx(0.900452, abs=1e-6) and a_minus < a_plus


def test_growth_root_matches_numpy_roots_and_is_stable():
    for eta, lam, gam in [(0.1, 5e-4, 0.9), (0.3, 1e-3, 0.5), (1.0, 1e-12, 0.99), (0.2, 0.05, 0.0)]:
        ref = max(np.roots([1.0, -(1 + gam - lam * eta), gam]).real)
        assert th.growth_root(eta, lam, gam) == pytest.approx(ref, rel=1e-12)
    # Tiny λη: 1 − α₊ ≈ λη/(1−γ) with no cancellation, where the textbook formula loses it all.
    one_minus = 1.0 - th.growth_root(1.0, 1e-14, 0.9)
    assert one_minus == pytest.approx(1e-13, rel=1e-3)
    assert th.log_growth_root(1.0, 1e-14, 0.9) == pytest.approx(-1e-13, rel=1e-3)
    assert th.growth_root(0.2, 0.05, 0.0) == pytest.approx(1 - 0.01, abs=1e-15)


def test_growth_per_epoch_paper():
    assert round(th.growth_per_epoch(*PAPER, steps_per_epoch=391), 6) == 1.481233


def test_float32_horizon_paper():
    assert th.float32_horizon(*PAPER) == 90591
    assert th.float32_horizon(*PAPER, exact=True) == 90600
    # The horizon is where the closed form crosses float32's max.
    lr = th.explr_closed_form(*PAPER, [90590, 90591])
    assert lr[0] <= th.FLOAT32_MAX < lr[1]


def test_real_root_bound():
    assert th.real_root_bound(0.9) == pytest.approx(2.633e-3, rel=1e-3)
    assert th.real_root_bound(0.99) == pytest.approx(2.5e-5, rel=1e-2)
    th.growth_root(1.0, th.real_root_bound(0.9), 0.9)  # on the bound: a double root
    with pytest.raises(ValueError, match=r"\(1 - sqrt\(momentum\)\)\*\*2 = 0.00263"):
        th.growth_root(1.0, 2.7e-3, 0.9)
    with pytest.raises(th.NoEquivalentError):
        th.growth_root(0.1, 5e-4, 0.99)  # λη = 5e-5 > 2.5e-5


def test_texp_corrections_paper():
    k1, k2 = th.texp_corrections([31279, 46919], [0.1, 0.01, 0.001], 5e-4, 0.9)
    assert k1 == pytest.approx(-2.05e-7, rel=1e-2)
    assert k2 == pytest.approx(-2.0e-9, rel=3e-2)


def test_texp_lr_curve_matches_the_blog():
    # docs/math.md#texp: 4.46e12 at the end of epoch 80, then 4.47e11 after the drop.
    spe = 391
    p = th.texp_pieces([80 * spe - 1, 120 * spe - 1], [0.1, 0.01, 0.001], 5e-4, 0.9, exact=False)
    lr = p.learning_rate([80 * spe - 1, 80 * spe, 300 * spe - 1])
    assert lr[0] == pytest.approx(4.46e12, rel=5e-3)
    assert lr[1] == pytest.approx(4.47e11, rel=5e-3)
    assert lr[2] == pytest.approx(4.32e11, rel=5e-3)


# ---------------------------------------------------------------- pieces vs the plain recurrence
def _recurrence_longdouble(lrs, lam, gam):
    """log η̃_t from the recurrence of docs/math.md#exact-twin-of-any-schedule in 80-bit floats (a reference)."""
    L = np.longdouble
    lam, gam = L(lam), L(gam)
    out, log_c, q_prev, eta_prev = [], L(0), L(1), None
    for e in lrs:
        e = L(e)
        rho = L(1) if eta_prev is None else e / eta_prev
        q = 1 + gam * rho - e * lam - gam * rho / q_prev
        out.append(np.log(e) + 2 * log_c - np.log(q))
        log_c -= np.log(q)
        q_prev, eta_prev = q, e
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("gam", [0.0, 0.5, 0.9, 0.99])
def test_exact_explr_pieces_match_the_recurrence(gam):
    T = 4000
    p = th.explr_pieces(0.1, 1e-4, gam, exact=True)
    ref = _recurrence_longdouble(np.full(T, 0.1), 1e-4, gam)
    assert np.max(np.abs(p.log_learning_rate(np.arange(T)) - ref)) < 1e-12
    # The float64 converter agrees to its own round-off.
    conv = th.exact_conversion(np.full(T, 0.1), 1e-4, gam)
    assert np.max(np.abs(np.log(conv.learning_rate) - ref)) < 1e-9
    np.testing.assert_allclose(conv.momentum, gam, rtol=1e-13)
    # After the transient it grows like the closed form: α₊^-2 per step.
    lr = p.learning_rate([T - 2, T - 1])
    assert lr[1] / lr[0] == pytest.approx(th.growth_root(0.1, 1e-4, gam) ** -2, rel=1e-13)


def test_exact_texp_pieces_match_the_recurrence():
    b, v = [400, 900], [0.1, 0.01, 0.001]
    T = 1500
    base = np.repeat(v, [401, 500, T - 901])
    p = th.texp_pieces(b, v, 5e-4, 0.9, exact=True)
    ref = _recurrence_longdouble(base, 5e-4, 0.9)
    assert np.max(np.abs(p.log_learning_rate(np.arange(T)) - ref)) < 1e-12
    # The tables hold only the transients, not the phases.
    assert all(len(t) < 300 for t in p.tables)


def test_closed_texp_is_the_blog_construction():
    b, v, lam, gam = [99, 199], [0.1, 0.02, 0.004], 1e-3, 0.9
    p = th.texp_pieces(b, v, lam, gam, exact=False)
    lr = p.learning_rate(np.arange(300))
    a = [th.growth_root(x, lam, gam) for x in v]
    assert lr[0] == pytest.approx(v[0] / a[0], rel=1e-14)
    assert lr[50] / lr[49] == pytest.approx(a[0] ** -2, rel=1e-13)
    assert lr[100] / lr[99] == pytest.approx((v[1] / v[0]) / (a[0] * a[1]), rel=1e-13)
    assert lr[150] / lr[149] == pytest.approx(a[1] ** -2, rel=1e-13)
    assert lr[200] / lr[199] == pytest.approx((v[2] / v[1]) / (a[1] * a[2]), rel=1e-13)


def test_paper_settings_deviation_of_the_closed_form():
    # docs/math.md#zero-buffers: exact/closed → 0.99093 after the transient (the +0.92 % effective LR).
    exact = th.explr_pieces(*PAPER, exact=True).learning_rate(5000)
    closed = th.explr_pieces(*PAPER, exact=False).learning_rate(5000)
    assert exact / closed == pytest.approx(0.99093, abs=2e-5)


# ---------------------------------------------------------------- independent simulation
T = 300


def test_numpy_oracle_is_scale_invariant():
    P = toy.init()
    Q = {k: (7.3 * v if k in toy.INV else v) for k, v in P.items()}
    np.testing.assert_allclose(toy.outputs(P), toy.outputs(Q), rtol=1e-12)


@pytest.mark.parametrize("gam,eta,lam", [(0.0, 0.2, 0.02), (0.9, 0.2, 3e-3)])
def test_explr_equivalence_in_plain_numpy(gam, eta, lam):
    wd_run = toy.train(np.full(T, eta), gam, weight_decay=lam)
    lr = th.explr_pieces(eta, lam, gam, exact=True).learning_rate(np.arange(T))
    assert lr[-1] / lr[0] > 5  # the LR really grows
    assert toy.discrepancy(wd_run, toy.train(lr, gam)) < 1e-11
    if gam:
        # The paper's closed form from zero buffers is not exact ...
        closed = th.explr_closed_form(eta, lam, gam, np.arange(T))
        assert toy.discrepancy(wd_run, toy.train(closed, gam)) > 1e-3
        # ... but is, with the initial buffer ṽ_0 = −(1−α)θ_0/(ηα) (docs/math.md#zero-buffers).
        a = th.growth_root(eta, lam, gam)
        run = toy.train(closed, gam, buffer0=lambda w: -(1 - a) / (eta * a) * w)
        assert toy.discrepancy(wd_run, run) < 1e-11


def test_texp_equivalence_in_plain_numpy():
    b, v, lam, gam = [99, 199], [0.2, 0.05, 0.01], 3e-3, 0.9
    base = np.repeat(v, [100, 100, T - 200])
    wd_run = toy.train(base, gam, weight_decay=lam)
    exact = th.texp_pieces(b, v, lam, gam, exact=True).learning_rate(np.arange(T))
    assert toy.discrepancy(wd_run, toy.train(exact, gam)) < 1e-11
    closed = th.texp_pieces(b, v, lam, gam, exact=False).learning_rate(np.arange(T))
    assert 1e-4 < toy.discrepancy(wd_run, toy.train(closed, gam)) < 0.2


def test_any_schedule_equivalence_in_plain_numpy():
    t = np.arange(T)
    base = np.where(t < 30, 0.02 + 0.18 * t / 30, 0.1 * (1 + np.cos(np.pi * (t - 30) / (T - 30))) + 1e-3)
    wd_run = toy.train(base, 0.9, weight_decay=3e-3)
    twin = th.dense_pieces(base, 3e-3, 0.9).learning_rate(t)
    assert toy.discrepancy(wd_run, toy.train(twin, 0.9)) < 1e-11
    conv = th.exact_conversion(base, 3e-3, 0.9)
    np.testing.assert_allclose(conv.learning_rate, twin, rtol=1e-11)


def test_keras_convention_conversions_in_plain_numpy():
    eta, lam, gam = 0.2, 3e-3, 0.9
    # Decoupled Keras weight decay: exact from zero buffers with momentum γ/(1−ηw).
    wd_run = toy.train(np.full(T, eta), gam, convention="keras", decoupled=lam)
    pieces, mom = th.explr_equivalent(eta, lam, gam, convention="keras", weight_decay_mode="decoupled")
    assert mom == pytest.approx(gam / (1 - eta * lam), rel=1e-15)
    run = toy.train(pieces.learning_rate(np.arange(T)), mom, convention="keras")
    assert toy.discrepancy(wd_run, run) < 1e-11
    # Coupled λ with a Keras buffer: momentum γ/α², exact from m̃_0 = (1−α)θ_0.
    wd_run = toy.train(np.full(T, eta), gam, weight_decay=lam, convention="keras")
    pieces, mom = th.explr_equivalent(eta, lam, gam, exact=False, convention="keras")
    a = th.growth_root(eta, lam, gam)
    assert mom == pytest.approx(gam / a ** 2, rel=1e-15)
    run = toy.train(pieces.learning_rate(np.arange(T)), mom, convention="keras",
                    buffer0=lambda w: (1 - a) * w)
    assert toy.discrepancy(wd_run, run) < 1e-11
    # The naive port (momentum γ) is not exact.
    run = toy.train(pieces.learning_rate(np.arange(T)), gam, convention="keras",
                    buffer0=lambda w: (1 - a) * w)
    assert toy.discrepancy(wd_run, run) > 1e-3
    # Zero buffers need a time-varying Keras momentum: the converter gives it.
    conv = th.exact_conversion(np.full(T, eta), lam, gam, base="keras", target="keras")
    assert conv.momentum[1] != pytest.approx(conv.momentum[-1], rel=1e-6)
    run = toy.train(conv.learning_rate, conv.momentum, convention="keras")
    assert toy.discrepancy(wd_run, run) < 1e-11
    with pytest.raises(ValueError, match="weight_decay_mode='decoupled'"):
        th.explr_equivalent(eta, lam, gam, exact=True, convention="keras")


def test_no_equivalent_beyond_the_bound():
    # λη = 0.01 > (1−√0.9)²: q_t reaches ≤ 0 in finite time.
    with pytest.raises(th.NoEquivalentError, match="q="):
        th.exact_conversion(np.full(100, 1.0), 0.01, 0.9)
    with pytest.raises(th.NoEquivalentError, match="values\\[1\\]"):
        th.texp_pieces([10], [0.1, 10.0], 1e-3, 0.9)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("lr", [-0.1, 0.0, math.nan, math.inf, "x", None, True])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match=r"`learning_rate` must be a .*number"):
        th.growth_root(lr, 5e-4, 0.9)


@pytest.mark.parametrize("wd", [-1e-4, math.nan, math.inf])
def test_bad_weight_decay(wd):
    with pytest.raises(ValueError, match=r"`weight_decay` must be a finite number >= 0"):
        th.growth_root(0.1, wd, 0.9)


@pytest.mark.parametrize("mom", [-0.1, 1.0, 1.5, math.nan])
def test_bad_momentum(mom):
    with pytest.raises(ValueError, match=r"`momentum` must be in the range \[0, 1\)"):
        th.growth_root(0.1, 5e-4, mom)


@pytest.mark.parametrize("b,v,msg", [
    ([10, 5], [0.1, 0.01, 0.001], "strictly increasing"),
    ([10, 10], [0.1, 0.01, 0.001], "strictly increasing"),
    ([10.5], [0.1, 0.01], "non-negative integers"),
    ([-1], [0.1, 0.01], "non-negative integers"),
    ([10], [0.1], r"len\(boundaries\) \+ 1"),
    ([10], [0.1, 0.01, 0.001], r"len\(boundaries\) \+ 1"),
    ([10], [0.1, -0.01], r"`values\[1\]` must be a finite number > 0"),
])
def test_bad_boundaries(b, v, msg):
    with pytest.raises(ValueError, match=msg):
        th.texp_pieces(b, v, 5e-4, 0.9)


def test_bad_steps():
    with pytest.raises(ValueError, match="`steps_per_epoch` must be an integer >= 1"):
        th.growth_per_epoch(*PAPER, steps_per_epoch=0)
    with pytest.raises(ValueError, match=r"`learning_rates` must all be finite and >= 0"):
        th.exact_conversion([0.1, -0.1], 5e-4, 0.9)
