"""theory.convert_weight_decay / weight_decay_timescale against brute-force numpy
simulations of each library's weight-decay rule, written out here independently."""

import itertools
import math

import numpy as np
import pytest

from keras_explr import theory

DECOUPLED = ("torch_adamw", "keras", "optax_adamw", "composer", "independent", "corrected")
STEPS = 120


def _problem(seed=0, n=6):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, n))
    a = q @ q.T / n + 0.1 * np.eye(n)
    b = rng.standard_normal((STEPS, n))
    return a, b, rng.standard_normal(n)


def simulate(convention, weight_decay, lrs, momentum=0.0, base="sgd", seed=0):
    """θ after each step of `base` ("sgd": v ← γv + g, θ ← θ − η v; "adam": torch's
    Adam) on g(θ) = Aθ − b_t, with `convention`'s weight decay written as in that library."""
    a, b, theta = _problem(seed)
    lam, lrs = weight_decay, np.asarray(lrs, np.float64)
    eta0, eta_max = lrs[0], lrs.max()
    buf, m, v = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
    b1, b2, eps = 0.9, 0.999, 1e-8
    out = []
    for t, eta in enumerate(lrs):
        g = a @ theta - b[t]
        if convention == "torch_sgd":            # torch.optim.SGD: d_p = d_p.add(p, alpha=wd)
            g = g + lam * theta
        elif convention == "torch_adamw":        # torch.optim.AdamW: p.mul_(1 - lr * wd)
            theta = theta * (1 - eta * lam)
        elif convention == "keras":              # keras Optimizer._apply_weight_decay
            theta = theta - theta * lam * eta
        elif convention == "composer":           # composer DecoupledSGDW: p.mul_(1 - lr/initial_lr * wd)
            theta = theta * (1 - (eta / eta0) * lam)
        elif convention == "independent":        # θ ← (1 − λ)θ
            theta = theta * (1 - lam)
        elif convention == "corrected":          # timm corrected_weight_decay: lr**2/max_lr * wd
            theta = theta * (1 - eta ** 2 / eta_max * lam)
        if base == "sgd":
            buf = momentum * buf + g
            u = buf
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            u = (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
        if convention == "optax_adamw":          # optax: add_decayed_weights, then scale by −η
            theta = theta - eta * (u + lam * theta)
        else:
            theta = theta - eta * u
        out.append(theta)
    return np.asarray(out)


def _rel(x, y):
    return float(np.max(np.abs(x - y)) / np.max(np.abs(x)))


def _cosine(eta=0.1, warmup=0):
    t = np.arange(STEPS)
    lrs = 0.5 * eta * (1 + np.cos(np.pi * t / STEPS))
    if warmup:
        lrs[:warmup] = eta * (t[:warmup] + 1) / warmup
    return lrs


@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("source,target", list(itertools.permutations(DECOUPLED, 2)))
def test_constant_lr_every_decoupled_pair_is_exact(source, target, base):
    lrs, lam, gam = np.full(STEPS, 0.05), 2e-3, 0.9 if base == "sgd" else 0.0
    converted = theory.convert_weight_decay(lam, 0.05, source, target, momentum=gam)
    ref = simulate(source, lam, lrs, gam, base)
    assert _rel(ref, simulate(target, converted, lrs, gam, base)) <= 1e-12
    # Control: the unconverted number is a different run.
    if not math.isclose(converted, lam, rel_tol=1e-9):
        assert _rel(ref, simulate(target, lam, lrs, gam, base)) > 1e-6


LR_SHAPED = ("torch_adamw", "keras", "optax_adamw", "composer")


@pytest.mark.parametrize("warmup", [0, 10])
@pytest.mark.parametrize("source,target", list(itertools.permutations(DECOUPLED, 2)))
def test_schedule_exact_only_between_rules_of_the_same_shape(source, target, warmup):
    lrs, lam = _cosine(warmup=warmup), 1e-2
    ref = simulate(source, lam, lrs, base="adam")
    same_shape = (source in LR_SHAPED and target in LR_SHAPED)
    if same_shape:
        converted = theory.convert_weight_decay(lam, lrs, source, target)
        assert _rel(ref, simulate(target, converted, lrs, base="adam")) <= 1e-12
        return
    with pytest.raises(theory.NoEquivalentError, match="no single"):
        theory.convert_weight_decay(lam, lrs, source, target)
    approx = theory.convert_weight_decay(lam, lrs, source, target, approximate=True)
    # The documented approximation: the same total decay Σ_t d_t.
    np.testing.assert_allclose(np.sum(theory.decay_per_step(approx, lrs, target)),
                               np.sum(theory.decay_per_step(lam, lrs, source)), rtol=1e-12)
    # ... and the runs differ (no exact map was there to find).
    assert _rel(ref, simulate(target, approx, lrs, base="adam")) > 1e-8


@pytest.mark.parametrize("target", DECOUPLED)
def test_torch_sgd_without_momentum_is_decoupled_sgd(target):
    lrs, lam = _cosine(), 1e-2
    ref = simulate("torch_sgd", lam, lrs, 0.0, "sgd")
    if target in LR_SHAPED:
        converted = theory.convert_weight_decay(lam, lrs, "torch_sgd", target)
        assert _rel(ref, simulate(target, converted, lrs, 0.0, "sgd")) <= 1e-12
        back = theory.convert_weight_decay(converted, lrs, target, "torch_sgd")
        assert math.isclose(back, lam, rel_tol=1e-12)
    else:
        with pytest.raises(theory.NoEquivalentError):
            theory.convert_weight_decay(lam, lrs, "torch_sgd", target)
        converted = theory.convert_weight_decay(lam, 0.05, "torch_sgd", target)  # constant LR: exact
        flat = np.full(STEPS, 0.05)
        assert _rel(simulate("torch_sgd", lam, flat), simulate(target, converted, flat)) <= 1e-12


@pytest.mark.parametrize("target", DECOUPLED)
def test_coupled_l2_under_momentum_has_no_decoupled_twin(target):
    lam, gam, eta = 5e-4, 0.9, 0.1
    with pytest.raises(theory.NoEquivalentError, match="momentum buffer"):
        theory.convert_weight_decay(lam, eta, "torch_sgd", target, momentum=gam)
    with pytest.raises(theory.NoEquivalentError, match="momentum buffer"):
        theory.convert_weight_decay(lam, eta, target, "torch_sgd", momentum=gam)
    flat = np.full(STEPS, eta)
    approx = theory.convert_weight_decay(lam, eta, "torch_sgd", target, momentum=gam, approximate=True)
    assert _rel(simulate("torch_sgd", lam, flat, gam), simulate(target, approx, flat, gam)) > 1e-8
    # The approximation's per-step fraction ηλ/(1−γ) is the coupled recurrence's decay rate:
    # with g = 0, ‖θ‖ shrinks by the root α of x² − (1 + γ − ηλ)x + γ = 0, 1 − α = ηλ/(1−γ) + O((ηλ)²).
    alpha = theory.growth_root(eta, lam, gam)
    d = float(theory.decay_per_step(approx, eta, target)[0])
    assert abs((1 - alpha) - d) <= 5 * (eta * lam / (1 - gam)) ** 2 / (1 - gam)
    back = theory.convert_weight_decay(approx, eta, target, "torch_sgd", momentum=gam, approximate=True)
    assert math.isclose(back, lam, rel_tol=1e-12)


def test_coupled_to_coupled_is_the_identity():
    assert theory.convert_weight_decay(5e-4, 0.1, "torch_sgd", "torch_sgd", momentum=0.9) == 5e-4


def test_reference_learning_rate_and_zero_start():
    lrs = np.concatenate([[0.0], _cosine()[1:]])  # warm-up from 0
    with pytest.raises(ValueError, match="reference_learning_rate"):
        theory.convert_weight_decay(1e-2, lrs, "keras", "composer")
    # With an explicit reference Composer is exact again (d_t = λη_t/η_ref has the shape η_t).
    c = theory.convert_weight_decay(1e-2, lrs, "keras", "composer", reference_learning_rate=0.1)
    assert math.isclose(c, 1e-3, rel_tol=1e-12)


@pytest.mark.parametrize("convention", DECOUPLED)
def test_timescale_is_the_e_folding_time_of_a_zero_gradient_run(convention):
    lam, eta, spe = 5e-4, 0.1, 391
    tau = theory.weight_decay_timescale(
        theory.convert_weight_decay(lam, eta, "torch_adamw", convention), eta, convention,
        steps_per_epoch=spe)
    assert math.isclose(tau.iterations, 1 / (eta * lam), rel_tol=1e-12)  # τ = 1/(ηλ) in every convention
    assert math.isclose(tau.epochs, tau.iterations / spe, rel_tol=1e-15)
    # Brute force: a zero gradient shrinks θ by e after τ steps (up to O(d)).
    d = float(theory.decay_per_step(theory.convert_weight_decay(lam, eta, "torch_adamw", convention),
                                    eta, convention)[0])
    norm = 1.0
    for _ in range(round(tau.iterations)):
        norm *= 1 - d
    assert abs(norm - math.exp(-1)) <= d


def test_timescale_of_coupled_momentum_and_of_no_decay():
    tau = theory.weight_decay_timescale(5e-4, 0.1, "torch_sgd", momentum=0.9)
    assert math.isclose(tau.iterations, 0.1 / (0.1 * 5e-4), rel_tol=1e-12) and tau.epochs is None
    assert theory.weight_decay_timescale(0.0, 0.1).iterations == math.inf


def test_table_lists_every_convention():
    rows = theory.weight_decay_table(5e-4, 0.1, "torch_sgd", momentum=0.9, steps_per_epoch=391,
                                     approximate=True)
    assert [r["convention"] for r in rows] == list(theory.WEIGHT_DECAY_CONVENTIONS)
    assert rows[0]["exact"] and not any(r["exact"] for r in rows[1:])
    for r in rows:
        assert math.isclose(r["tau_iterations"], 2000.0, rel_tol=1e-12)
