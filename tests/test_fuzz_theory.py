"""Property-based tests: `keras_explr.theory` (and the schedules) against an
independent step-by-step simulation, over random valid (η, λ, γ, schedule).

The oracle below is written from docs/math.md alone and shares no code with
`keras_explr`: a toy loss that is exactly scale-invariant, SGD in the paper
(torch) and Keras conventions run step by step in float64 (`tests.numpy_oracle.sgd`), and the growth
roots solved with 50-digit `decimal` arithmetic. A conversion is correct when
the weight-decay run and its WD-free twin give the same direction θ/‖θ‖ at
every step (the same network in function space) and the norm ratio is c_t.

Draws include the boundary of the real-root region, λη → (1−√γ)² from inside
(1 − 10^−k) and from outside (1 + 10^−k), where the documented
`NoEquivalentError` (a ValueError) must be raised.
"""

import decimal
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from keras_explr import theory as th
from tests import numpy_oracle as oracle

# derandomize: the same draws on every run (CI-stable); database=None: nothing is
# written into the shared checkout.
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=15, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow])
EPS = float(np.finfo(np.float64).eps)
DIM = 6


# ====================================================================== oracle
class Toy:
    """L_t(θ) = ½ uᵀA_t u with u = θ/‖θ‖: exactly scale-invariant, L_t(cθ) = L_t(θ).

    ∇L_t(θ) = (A_t u − (uᵀA_t u) u)/‖θ‖, so g(cθ) = g(θ)/c and ⟨g, θ⟩ = 0
    (Lemma 1). A_t is a fixed random symmetric matrix per step: the "minibatch".
    """

    def __init__(self, steps, seed=0):
        r = np.random.default_rng(seed)
        a = r.standard_normal((steps, DIM, DIM)) / math.sqrt(DIM)
        self.A = 0.5 * (a + np.transpose(a, (0, 2, 1)))
        self.theta0 = r.standard_normal(DIM)

    def grad(self, t, theta):
        n = math.sqrt(theta @ theta)
        u = theta / n
        au = self.A[t] @ u
        return (au - (u @ au) * u) / n


def run_paper(toy, lrs, momentum, weight_decay=0.0, v0=None, kicks=None):
    """Paper / torch SGD (`tests.numpy_oracle.sgd`): v ← μ_t v + g + λθ, θ ← θ − η_t v.

    `kicks`: {t: κ} adds −κθ/η_t to the new buffer at step t (TEXP's correction, §3.3).
    Returns θ_0..θ_T as a (T+1, DIM) array.
    """
    return oracle.sgd(toy.grad, toy.theta0, lrs, momentum, weight_decay, buffer0=v0, kicks=kicks)


def run_keras(toy, lrs, momentum, weight_decay=0.0, decoupled=0.0, m0=None):
    """keras.optimizers.SGD (`tests.numpy_oracle.sgd`): θ' = (1 − η_t w)θ; m ← μ_t m − η_t(g + λθ); θ ← θ' + m."""
    return oracle.sgd(toy.grad, toy.theta0, lrs, momentum, weight_decay, "keras", decoupled, buffer0=m0)


def direction_gap(a, b):
    """max_t ‖a_t/‖a_t‖ − b_t/‖b_t‖‖: zero iff the runs are the same networks."""
    ua = a / np.linalg.norm(a, axis=1, keepdims=True)
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.max(np.linalg.norm(ua - ub, axis=1)))


def round_off_tolerance(toy, run, *args, **kwargs):
    """How far round-off alone can move this trajectory.

    At large angular steps (λη near a large real-root bound, small γ) the toy is
    chaotic and amplifies float64 round-off. Rerun the base with θ_0 nudged by
    1e-14 (relative): round-off injects ~1e-16 per step, so over ≤ 150 steps the
    honest discrepancy stays far below 1e3 × that nudge's effect.
    """
    base = run(toy, *args, **kwargs)
    theta0 = toy.theta0
    try:
        toy.theta0 = theta0 * (1 + 1e-14 * np.cos(np.arange(DIM)))
        nudged = run(toy, *args, **kwargs)
    finally:
        toy.theta0 = theta0
    return base, 1e-10 + 1e3 * direction_gap(base, nudged)


def norm_ratio(twin, base):
    return np.linalg.norm(twin, axis=1) / np.linalg.norm(base, axis=1)


decimal.getcontext().prec = 50
D = decimal.Decimal


def roots_decimal(eta, lam, gam):
    """Roots of x² − (1+γ−λη)x + γ in 50-digit arithmetic from the exact float inputs.

    Returns (α₊, α₋, disc) as Decimals; disc < 0 means complex roots.
    """
    b = 1 + D(gam) - D(lam) * D(eta)
    disc = b * b - 4 * D(gam)
    if disc < 0:
        return None, None, disc
    s = disc.sqrt()
    return (b + s) / 2, (b - s) / 2, disc


def alpha_oracle(eta, lam, gam):
    a_plus, _, disc = roots_decimal(eta, lam, gam)
    assert disc >= 0
    return float(a_plus), float(a_plus.ln())


def root_tolerance(eta, lam, gam):
    """What the float64 evaluation of D costs: |ΔD| ≤ 16ε·Σ|terms| moves √D by at most
    min(√|ΔD|, |ΔD|/√D), and α₊ by no more than that (plus a few ulps)."""
    le = lam * eta
    delta = 16 * EPS * ((1 - gam) ** 2 + 2 * le * (1 + gam) + le * le)
    disc = float(roots_decimal(eta, lam, gam)[2])
    shift = math.sqrt(delta) if disc <= delta else delta / math.sqrt(disc)
    return 8 * EPS + shift


# ================================================================= strategies
momenta = st.one_of(st.just(0.0), st.just(0.9), st.floats(0.0, 0.99))
# Fraction of the real-root bound used, with the boundary (1 − 10^-k) drawn often.
inside = st.one_of(st.floats(1e-3, 1.0 - 1e-12),
                   st.integers(2, 12).map(lambda k: 1.0 - 10.0 ** -k))
# For tests that build `Pieces`: the transient near the boundary is up to 2^20 steps
# (seconds per build), so these stop at 1 − 10^-5 (one explicit case goes further).
inside_fast = st.one_of(st.floats(1e-3, 0.999),
                        st.integers(2, 5).map(lambda k: 1.0 - 10.0 ** -k))
outside = st.one_of(st.floats(1.0 + 1e-6, 50.0),
                    st.integers(3, 8).map(lambda k: 1.0 + 10.0 ** -k))
etas = st.floats(0.01, 0.5)


def _lam(eta, gam, frac):
    """λ with λη = frac·(1−√γ)², capped at λη ≤ 0.9·frac (α₊ → 0 as λη → 1 at γ ≈ 0)."""
    return frac * min((1 - math.sqrt(gam)) ** 2, 0.9) / eta


# ========================================================== growth roots (§2.3)
@FUZZ
@given(eta=etas, gam=momenta, frac=inside)
@example(eta=0.1, gam=0.9, frac=5e-4 * 0.1 / th.real_root_bound(0.9))  # the paper's point
def test_growth_roots_solve_the_quadratic(eta, gam, frac):
    lam = frac * (1.0 - math.sqrt(gam)) ** 2 / eta  # oracle's own bound, not real_root_bound
    a_true, a_minus_true, disc = roots_decimal(eta, lam, gam)
    assert disc >= 0, "strategy error: drew outside the real region"
    a_plus, a_minus = th.growth_roots(eta, lam, gam)
    tol = root_tolerance(eta, lam, gam)
    assert abs(a_plus - float(a_true)) <= tol
    assert abs(a_minus - float(a_minus_true)) <= tol + 1e-15
    assert th.growth_root(eta, lam, gam) == a_plus
    # Residual of the quadratic, and the ordering 0 < α₋ ≤ √γ ≤ α₊ < 1 (§2.4).
    b = 1 + gam - lam * eta
    assert abs(a_plus * a_plus - b * a_plus + gam) <= 4 * EPS + 2 * tol * abs(2 * a_plus - b)
    assert a_plus < 1.0 and a_plus >= math.sqrt(gam) - tol
    if gam > 0:
        assert 0 < a_minus <= math.sqrt(gam) + tol
    # log α₊ without cancellation: relative accuracy even when 1 − α₊ ~ 1e-13.
    log_true = float(a_true.ln())
    assert abs(th.log_growth_root(eta, lam, gam) - log_true) <= 2 * tol / float(a_true) + 1e-12 * abs(log_true)


@FUZZ
@given(eta=etas, gam=st.one_of(st.just(0.9), st.floats(0.01, 0.99)), frac=outside)
def test_outside_the_real_root_region_raises(eta, gam, frac):
    lam = frac * (1 - math.sqrt(gam)) ** 2 / eta  # the oracle's bound
    _, _, disc = roots_decimal(eta, lam, gam)
    if lam * eta < (1 + math.sqrt(gam)) ** 2:  # (beyond it both roots are negative)
        assert disc < 0, "oracle: this point must have complex roots"
    for fn in (th.growth_root, th.growth_roots, th.log_growth_root, th.check_real_roots,
               th.explr_pieces, th.float32_horizon):
        with pytest.raises(th.NoEquivalentError, match=r"\(1 - sqrt\(momentum\)\)\*\*2") as info:
            fn(eta, lam, gam)
        assert isinstance(info.value, ValueError)
        assert f"{th.real_root_bound(gam):.6g}" in str(info.value)
    with pytest.raises(ValueError, match="values\\[1\\]"):
        th.texp_pieces([10], [eta / 1e3, eta], lam, gam)


@FUZZ
@given(gam=st.floats(0.05, 0.99), frac=st.one_of(inside, outside), steps=st.integers(1, 400))
def test_zero_buffer_recurrence_fails_exactly_where_the_oracle_does(gam, frac, steps):
    """§2.4/§3.4: the recurrence q_{t+1} = 1+γ−λη − γ/q_t reaches q ≤ 0 in the complex
    regime; `exact_conversion` raises exactly when (and at the step where) it does."""
    eta = 0.1
    lam = frac * (1 - math.sqrt(gam)) ** 2 / eta
    q, first_bad = 1.0 - eta * lam, None
    qs = []
    for t in range(steps):
        if t > 0:
            q = 1.0 + gam - eta * lam - gam / q
        qs.append(q)
        if not q > 0:
            first_bad = t
            break
    if first_bad is None:  # log of η̃_t = η c_t c_{t+1}, c_0 = 1, c_{t+1} = c_t / q_t
        log_c = np.concatenate([[0.0], np.cumsum(-np.log(qs))])
        log_lr = np.log(eta) + log_c[:-1] + log_c[1:]
    if first_bad is None and log_lr.max() > np.log(np.finfo(np.float64).max):
        with pytest.raises(th.NoEquivalentError, match="overflows float64 at step"):
            th.exact_conversion([eta] * steps, lam, gam)  # inside the real region too: c_t ~ q^-t, q ≪ 1
    elif first_bad is None:
        conv = th.exact_conversion([eta] * steps, lam, gam)
        np.testing.assert_allclose(conv.q, qs, rtol=1e-9)
        assert np.all(np.diff(np.log(conv.scale)) >= -1e-15)  # c_t grows (q ≤ 1)
    else:
        with pytest.raises(th.NoEquivalentError, match=f"at step {first_bad} "):
            th.exact_conversion([eta] * steps, lam, gam)
        assert frac > 1.0, "inside the real region q_t must stay > 0"


# ============================================ conversions vs step-by-step SGD
def _schedule(kind, data, eta, gam, frac, steps):
    """A random base LR schedule whose every value keeps λη_t ≤ frac·bound."""
    if kind == "constant":
        return np.full(steps, eta)
    if kind == "step":
        n = data.draw(st.integers(1, min(3, steps - 1)), label="boundaries")
        cuts = sorted(data.draw(st.lists(st.integers(1, steps - 1), min_size=n, max_size=n,
                                         unique=True), label="cuts"))
        factors = data.draw(st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n), label="drops")
        lrs = np.full(steps, eta)
        level = eta
        for c, f in zip(cuts, factors):
            level = level * f
            lrs[c:] = level
        return lrs
    if kind == "cosine":
        warm = data.draw(st.integers(0, steps // 3), label="warmup")
        t = np.arange(steps)
        cos = 0.5 * (1 + np.cos(np.pi * np.clip(t - warm, 0, None) / steps))
        lrs = eta * np.where(t < warm, (t + 1) / (warm + 1), 0.01 + 0.99 * cos)
        return lrs
    # random per-step values, log-uniform within a factor 100 below η
    return eta * 10.0 ** np.array(data.draw(st.lists(st.floats(-2, 0), min_size=steps, max_size=steps),
                                            label="log10 factors"))


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["constant", "step", "cosine", "random"]),
       eta=etas, gam=momenta, frac=inside_fast, steps=st.integers(2, 120))
def test_exact_conversion_paper_reproduces_the_wd_run(data, kind, eta, gam, frac, steps):
    lam = _lam(eta, gam, frac)
    lrs = _schedule(kind, data, eta, gam, frac, steps)
    toy = Toy(steps, seed=data.draw(st.integers(0, 2 ** 16), label="seed"))
    base, tol = round_off_tolerance(toy, run_paper, lrs, gam, lam)
    conv = th.exact_conversion(lrs, lam, gam)
    np.testing.assert_allclose(conv.momentum, gam, rtol=1e-12, atol=1e-15)  # §3.5: torch→torch keeps γ
    twin = run_paper(toy, conv.learning_rate, conv.momentum)
    assert direction_gap(twin, base) < tol
    np.testing.assert_allclose(norm_ratio(twin, base), conv.scale, rtol=max(1e-9, 10 * tol))
    assert conv.scale[0] == 1.0 and np.all(np.isfinite(conv.learning_rate))
    # The same twin as `Pieces` (what the Keras schedules evaluate), for an arbitrary schedule.
    dense = th.dense_pieces(lrs, lam, gam).learning_rate(np.arange(steps))
    assert direction_gap(run_paper(toy, dense, gam), base) < tol


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["constant", "step", "random"]),
       eta=etas, gam=momenta, frac=st.floats(1e-3, 0.95), wshare=st.floats(0.0, 1.0),
       target=st.sampled_from(["paper", "keras"]), steps=st.integers(2, 100))
def test_exact_conversion_keras_base_coupled_and_decoupled(data, kind, eta, gam, frac, wshare,
                                                           target, steps):
    """Keras base with coupled λ (an L2 loss term) and decoupled w (Keras's weight_decay)."""
    total = _lam(eta, gam, frac)
    lam, w = (1 - wshare) * total, wshare * total
    lrs = _schedule(kind, data, eta, gam, frac, steps)
    toy = Toy(steps, seed=data.draw(st.integers(0, 2 ** 16), label="seed"))
    base, tol = round_off_tolerance(toy, run_keras, lrs, gam, weight_decay=lam, decoupled=w)
    try:
        conv = th.exact_conversion(lrs, lam, gam, base="keras", target=target,
                                   decoupled_weight_decay=w)
    except th.NoEquivalentError:
        # Only legitimate if the oracle's own recurrence (§3.5 table, Keras row) hits q ≤ 0.
        q = 1 - lrs[0] * (lam + w)
        for t in range(1, steps):
            q = (1 + gam - lrs[t] * (lam + w)) - gam * (1 - lrs[t - 1] * w) / q
            if not q > 0:
                return
        raise
    run = run_keras if target == "keras" else run_paper
    twin = run(toy, conv.learning_rate, conv.momentum)
    assert direction_gap(twin, base) < tol
    np.testing.assert_allclose(norm_ratio(twin, base), conv.scale, rtol=max(1e-9, 10 * tol))


@FUZZ
@given(eta=etas, gam=momenta, frac=inside_fast, steps=st.integers(1, 150), seed=st.integers(0, 999))
@example(eta=0.1, gam=0.9, frac=1.0 - 1e-10, steps=100, seed=1)  # 2^20-step transient table
def test_explr_exact_pieces_reproduce_constant_lr_wd(eta, gam, frac, steps, seed):
    lam = _lam(eta, gam, frac)
    toy = Toy(steps, seed)
    base, tol = round_off_tolerance(toy, run_paper, np.full(steps, eta), gam, lam)
    lr = th.explr_pieces(eta, lam, gam, exact=True).learning_rate(np.arange(steps))
    assert lr[0] == pytest.approx(eta / (1 - eta * lam), rel=1e-13)  # §2.5: first LR η/(1−ηλ)
    assert direction_gap(run_paper(toy, lr, gam), base) < tol


@FUZZ
@given(eta=etas, gam=momenta, frac=inside, t=st.integers(0, 10 ** 6))
def test_closed_form_matches_the_oracle_root(eta, gam, frac, t):
    """η̃_t = η α₊^(−2t−1) with α₊ from the 50-digit oracle (§2.2)."""
    lam = _lam(eta, gam, frac)
    a, log_a = alpha_oracle(eta, lam, gam)
    log_expected = math.log(eta) - (2 * t + 1) * log_a
    # log α₊ is known to `root_tolerance`/α₊ (float64 D); it is multiplied by 2t+1.
    tol = 1e-13 * max(1.0, abs(log_expected)) + (2 * t + 1) * (root_tolerance(eta, lam, gam) / a + 2 * EPS)
    if log_expected < 700:  # else float64 overflow (inf) is the documented answer
        got = th.explr_closed_form(eta, lam, gam, [t])[0]
        assert abs(math.log(got) - log_expected) <= tol
    pieces = th.explr_pieces(eta, lam, gam, exact=False)
    assert abs(pieces.log_learning_rate([t])[0] - log_expected) <= tol


@FUZZ
@given(eta=etas, gam=st.floats(0.0, 0.99), frac=inside, steps=st.integers(1, 120), seed=st.integers(0, 999))
def test_closed_form_is_exact_from_the_matched_buffers(eta, gam, frac, steps, seed):
    """§2.2 / §2.5: ηα^(−2t−1) from ṽ_0 = −(1−α)θ_0/(ηα) is the WD run from v_0 = 0, and
    from ṽ_0 = 0 it is the WD run from v_0 = +(1−α)θ_0/(ηα)."""
    lam = _lam(eta, gam, frac)
    a, _ = alpha_oracle(eta, lam, gam)
    toy = Toy(steps, seed)
    lr = th.explr_closed_form(eta, lam, gam, np.arange(steps))
    kick = (1 - a) * toy.theta0 / (eta * a)
    base, tol = round_off_tolerance(toy, run_paper, np.full(steps, eta), gam, lam)
    tol += 10 * steps * root_tolerance(eta, lam, gam) / a  # α₊ is float64 (see root_tolerance)
    assert direction_gap(run_paper(toy, lr, gam, v0=-kick), base) < tol
    shifted, tol = round_off_tolerance(toy, run_paper, np.full(steps, eta), gam, lam, v0=kick)
    tol += 10 * steps * root_tolerance(eta, lam, gam) / a
    assert direction_gap(run_paper(toy, lr, gam), shifted) < tol


@FUZZ
@given(eta=etas, gam=st.floats(0.0, 0.99), frac=inside, steps=st.integers(1, 120), seed=st.integers(0, 999),
       exact=st.booleans())
def test_keras_convention_closed_form(eta, gam, frac, steps, seed, exact):
    """§2.2, convention K: momentum γ/α², m̃_0 = (1−α)θ_0; exact=True must raise (no constant μ)."""
    lam = _lam(eta, gam, frac)
    if exact:
        with pytest.raises(th.NoEquivalentError, match="exact=False"):
            th.explr_equivalent(eta, lam, gam, exact=True, convention="keras")
        return
    a, _ = alpha_oracle(eta, lam, gam)
    pieces, mu = th.explr_equivalent(eta, lam, gam, exact=False, convention="keras")
    assert mu == pytest.approx(gam / a ** 2, rel=4 * root_tolerance(eta, lam, gam) / a, abs=1e-15)
    toy = Toy(steps, seed)
    base, tol = round_off_tolerance(toy, run_keras, np.full(steps, eta), gam, weight_decay=lam)
    tol += 10 * steps * root_tolerance(eta, lam, gam) / a  # α₊ is float64 (see root_tolerance)
    twin = run_keras(toy, pieces.learning_rate(np.arange(steps)), mu, m0=(1 - a) * toy.theta0)
    assert direction_gap(twin, base) < tol
    np.testing.assert_allclose(norm_ratio(twin, base), a ** -np.arange(steps + 1.0), rtol=max(1e-9, 10 * tol))


@FUZZ
@given(eta=etas, gam=st.floats(0.0, 0.99), ew=st.floats(1e-4, 0.5), steps=st.integers(1, 120),
       seed=st.integers(0, 999), convention=st.sampled_from(["paper", "keras"]))
def test_decoupled_weight_decay_twin(eta, gam, ew, steps, seed, convention):
    """§0.1: Keras's decoupled weight_decay=w, zero buffers: η̃_t = η(1−ηw)^(−2t−1),
    Keras momentum γ/(1−ηw) or paper momentum γ(1−ηw); exact from step 0."""
    w = ew / eta
    pieces, mu = th.explr_equivalent(eta, w, gam, convention=convention, weight_decay_mode="decoupled")
    r = 1 - eta * w
    assert mu == pytest.approx(gam / r if convention == "keras" else gam * r, rel=1e-12, abs=1e-15)
    lr = pieces.learning_rate(np.arange(steps))
    np.testing.assert_allclose(lr, eta * r ** (-2.0 * np.arange(steps) - 1), rtol=1e-11)
    toy = Toy(steps, seed)
    base, tol = round_off_tolerance(toy, run_keras, np.full(steps, eta), gam, decoupled=w)
    twin = (run_keras if convention == "keras" else run_paper)(toy, lr, mu)
    assert direction_gap(twin, base) < tol
    np.testing.assert_allclose(norm_ratio(twin, base), r ** -np.arange(steps + 1.0), rtol=max(1e-9, 10 * tol))


def _step_decay(data, eta, steps):
    n = data.draw(st.integers(1, min(3, steps - 1)), label="phases-1")
    boundaries = sorted(data.draw(st.lists(st.integers(0, steps - 2), min_size=n, max_size=n,
                                           unique=True), label="boundaries"))
    values = [eta]
    for _ in range(n):
        values.append(values[-1] * data.draw(st.floats(0.01, 3.0), label="ratio"))
    lrs = np.empty(steps)
    for t in range(steps):  # PiecewiseConstantDecay: values[i] for boundaries[i-1] < t <= boundaries[i]
        lrs[t] = values[sum(t > b for b in boundaries)]
    return boundaries, values, lrs


@FUZZ
@given(data=st.data(), eta=st.floats(0.01, 0.15), gam=momenta, frac=st.floats(1e-3, 0.3),
       steps=st.integers(3, 120), seed=st.integers(0, 999))
def test_texp(data, eta, gam, frac, steps, seed):
    """TEXP (§3.2) vs its closed form from the oracle's α*_I; TEXP with the initial buffer and
    the κ_I corrections (§3.3), and TEXP-exact (§3.4), reproduce step decay exactly."""
    lam = _lam(0.45, gam, frac)  # every phase (values up to 0.45) stays inside the real region
    boundaries, values, lrs = _step_decay(data, eta, steps)
    toy = Toy(steps, seed)
    base, tol = round_off_tolerance(toy, run_paper, lrs, gam, lam)
    # Closed form: c_{t+1} = c_t/α*_{I(t)}, η̃_t = η_{I(t)} c_t c_{t+1}, in logs.
    phase = [sum(t > b for b in boundaries) for t in range(steps)]
    log_a = [alpha_oracle(v, lam, gam)[1] for v in values]
    log_c, expected = 0.0, []
    for t in range(steps):
        expected.append(math.log(values[phase[t]]) + 2 * log_c - log_a[phase[t]])
        log_c -= log_a[phase[t]]
    log_tol = 1e-12 + steps * 4 * max(root_tolerance(v, lam, gam) for v in values)
    closed = th.texp_pieces(boundaries, values, lam, gam, exact=False)
    assert np.max(np.abs(closed.log_learning_rate(np.arange(steps)) - expected)) <= log_tol
    # Exact with ṽ_0 and κ_I at t = T_I = boundaries[I-1] + 1.
    kappas = th.texp_corrections(boundaries, values, lam, gam)
    a = [math.exp(x) for x in log_a]
    oracle_kappa = [gam / a[i] * ((1 / a[i] - 1) - values[i] / values[i - 1] * (1 / a[i - 1] - 1))
                    for i in range(1, len(values))]
    np.testing.assert_allclose(kappas, oracle_kappa, rtol=1e-6, atol=1e-12)
    kicks = {b + 1: k for b, k in zip(boundaries, kappas) if b + 1 < steps}
    v0 = -(1 - a[0]) * toy.theta0 / (values[0] * a[0])
    twin = run_paper(toy, np.exp(expected), gam, v0=v0, kicks=kicks)
    assert direction_gap(twin, base) < tol + 1e-10  # (the κ_I come from float64 α)
    exact = th.texp_pieces(boundaries, values, lam, gam, exact=True).learning_rate(np.arange(steps))
    assert direction_gap(run_paper(toy, exact, gam), base) < tol


@FEW
@given(eta=st.floats(0.05, 1.0), gam=momenta, frac=st.floats(0.05, 1.0, exclude_max=True))
def test_float32_horizon_is_the_first_overflowing_step(eta, gam, frac):
    lam = _lam(eta, gam, frac)
    _, log_a = alpha_oracle(eta, lam, gam)
    # first t with log η − (2t+1) log α₊ > log(float32 max)
    t = math.floor((th.LOG_FLOAT32_MAX - math.log(eta)) / (-2 * log_a) - 0.5) + 1
    t = max(t, 0)
    h = th.float32_horizon(eta, lam, gam)
    margin = abs((math.log(eta) - (2 * t + 1) * log_a) - th.LOG_FLOAT32_MAX)
    if margin > 1e-6 and abs((math.log(eta) - (2 * t - 1) * log_a) - th.LOG_FLOAT32_MAX) > 1e-6:
        assert h == t
    else:
        assert abs(h - t) <= 1
    lr = th.explr_closed_form(eta, lam, gam, [h - 1, h])
    assert lr[1] > th.FLOAT32_MAX * (1 - 1e-9)


@FUZZ
@given(eta=etas, lam_new=st.floats(1e-6, 0.05), gam=st.floats(0.0, 0.95))
def test_new_parameterization_growth_is_independent_of_eta(eta, lam_new, gam):
    """§4.1 N1: with λ_old = λ_new/η the root solves x² − (1+γ−λ_new)x + γ = 0 for any η."""
    assume(lam_new <= (1 - math.sqrt(gam)) ** 2 * (1 - 1e-9))
    lam_old = th.standard_weight_decay(lam_new, eta)
    true, _, _ = roots_decimal(1.0, lam_new, gam)
    assert th.growth_root(eta, lam_old, gam) == pytest.approx(float(true), abs=4 * root_tolerance(1.0, lam_new, gam))


def test_oracle_detects_a_wrong_schedule():
    """Negative control: the oracle sees a single LR off by 1e-6 and the paper's closed form
    used from zero buffers (it is not the same run, §2.5)."""
    eta, lam, gam, steps = 0.2, 0.8 * th.real_root_bound(0.9) / 0.2, 0.9, 80
    toy = Toy(steps, 3)
    base = run_paper(toy, np.full(steps, eta), gam, lam)
    lr = th.exact_conversion(np.full(steps, eta), lam, gam).learning_rate
    assert direction_gap(run_paper(toy, lr, gam), base) < 1e-11
    bad = lr.copy()
    bad[10] *= 1 + 1e-6
    assert direction_gap(run_paper(toy, bad, gam), base) > 1e-9
    closed = th.explr_closed_form(eta, lam, gam, np.arange(steps))
    assert direction_gap(run_paper(toy, closed, gam), base) > 1e-4
    # ... and a Keras-convention twin run with the paper's momentum γ (the naive port).
    a, _ = alpha_oracle(eta, lam, gam)
    naive = run_keras(toy, closed, gam, m0=(1 - a) * toy.theta0)
    assert direction_gap(naive, run_keras(toy, np.full(steps, eta), gam, weight_decay=lam)) > 1e-4


# ======================================== schedules at random (huge) steps
SCHEDULE_KINDS = ["explr", "explr_wd", "explr_wd_closed", "explr_keras", "explr_decoupled",
                  "texp", "texp_closed", "equivalent", "scaled"]


def _make_schedule(kind, eta, gam, frac):
    from keras_explr import probe, schedules

    lam = _lam(eta, gam, frac)
    if kind == "explr":
        return schedules.ExpLR(eta, 1.0 + frac * 0.01)
    if kind == "explr_wd":
        return schedules.ExpLR.from_weight_decay(eta, lam, gam)
    if kind == "explr_wd_closed":
        return schedules.ExpLR.from_weight_decay(eta, lam, gam, exact=False)
    if kind == "explr_keras":
        return schedules.ExpLR.from_weight_decay(eta, lam, gam, exact=False, convention="keras")
    if kind == "explr_decoupled":
        return schedules.ExpLR.from_weight_decay(eta, 0.5 * frac / eta, gam, weight_decay_mode="decoupled")
    if kind in ("texp", "texp_closed"):
        return schedules.TEXP([50, 120], [eta, eta / 10, eta / 100], lam, gam, exact=kind == "texp")
    if kind == "equivalent":
        lrs = eta * (0.5 + 0.5 * np.cos(np.linspace(0, 3, 60)) + 0.01)
        return schedules.EquivalentSchedule(list(lrs), lam, gam, total_steps=60)
    return probe.ScaledSchedule(schedules.ExpLR.from_weight_decay(eta, lam, gam), 4.0)


@FUZZ
@given(kind=st.sampled_from(SCHEDULE_KINDS), eta=etas, gam=st.floats(0.0, 0.99),
       frac=st.floats(0.01, 0.999),
       step=st.one_of(st.integers(0, 300), st.integers(0, 10 ** 7), st.integers(10 ** 7, 2 ** 62)))
def test_schedule_outputs_are_finite_positive_and_saturate(kind, eta, gam, frac, step):
    import keras

    s = _make_schedule(kind, eta, gam, frac)
    def call(t):
        return float(keras.ops.convert_to_numpy(s(keras.ops.convert_to_tensor(t, "int64"))))

    got = call(step)
    big = float(np.finfo(keras.config.floatx()).max)
    assert math.isfinite(got) and got > 0, (kind, step, got)
    inner = s.schedule if kind == "scaled" else s
    factor = 4.0 if kind == "scaled" else 1.0
    with np.errstate(over="ignore"):
        expected = factor * float(inner.learning_rates([step])[0])
    if kind == "explr":  # independent: η̃_0 r^t in logs
        log_expected = math.log(eta) + step * math.log1p(frac * 0.01)
        expected = math.exp(log_expected) if log_expected < 709 else math.inf
    if expected >= big:
        assert got == big  # saturated at the largest finite value
    else:
        assert got == pytest.approx(expected, rel=2e-6)
    later = call(step + 1)
    assert math.isfinite(later) and later > 0
    if kind.startswith("explr") or kind == "scaled":  # constant phase: q_t ≤ 1, never decreasing
        assert later >= got * (1 - 1e-6)
