"""Warm-up from zero: the exact WD-free twin exists (docs/math.md#exact-twin-of-any-schedule, in state form).

A zero-LR step of the paper's SGD (v ← γv + g + λθ, θ ← θ − η_t v) moves
nothing but puts g_t + λθ_t into the buffer. `theory.paper_state_step` carries
that radial λθ_t into the later LRs; the twin stands still at the same steps
with momentum γ. Checked here against an independent brute-force float64
simulation (its own scale-invariant toy loss, its own SGD loop) and inside a
float64 `model.fit`.
"""

import keras
import numpy as np
import pytest

from keras_explr import callbacks, data, models, optimizers, schedules, theory
from tests import numpy_oracle as oracle
from tests.conftest import precision

# ------------------------------------------------------------------ brute force in plain numpy
DIM, ROWS = 12, 5


def _problem(steps, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(steps, ROWS, DIM)), rng.normal(size=(steps, ROWS)), rng.normal(size=DIM)


def _grad(a, b, theta):
    """∇ of L(θ) = ½‖a θ/‖θ‖ − b‖², a scale-invariant loss: ∇L(cθ) = ∇L(θ)/c, ⟨∇L, θ⟩ = 0."""
    n = np.linalg.norm(theta)
    u = theta / n
    gu = a.T @ (a @ u - b)
    return (gu - u * (u @ gu)) / n


def _sgd(lrs, weight_decay, momentum, problem):
    """Paper-convention SGD (`tests.numpy_oracle.sgd`) from a zero buffer; returns θ_0..θ_T."""
    a, b, theta = problem
    return oracle.sgd(lambda t, th: _grad(a[t], b[t], th), theta, lrs, momentum, weight_decay)


def _direction_distance(x, y):
    ux = x / np.linalg.norm(x, axis=1, keepdims=True)
    uy = y / np.linalg.norm(y, axis=1, keepdims=True)
    return float(np.max(np.linalg.norm(ux - uy, axis=1)))


def _warmup_cosine(total, warmup, peak):
    t = np.arange(total, dtype=np.float64)
    return np.where(t < warmup, peak * t / warmup,
                    peak * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (total - warmup))))


SCHEDULES = {
    "warmup-from-zero": _warmup_cosine(400, 100, 0.1),
    "zeros-mid-run": np.where((np.arange(400) >= 150) & (np.arange(400) < 153), 0.0, _warmup_cosine(400, 100, 0.1)),
    "three-leading-zeros": np.r_[np.zeros(3), np.full(197, 0.05)],
    "ends-at-zero": np.r_[np.full(100, 0.1), np.zeros(20)],
}


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_twin_of_zero_lr_schedules_is_exact_in_plain_numpy(name, momentum):
    lrs, lam = SCHEDULES[name], 2e-2
    problem = _problem(lrs.size)
    wd = _sgd(lrs, lam, momentum, problem)
    conv = theory.exact_conversion(lrs, lam, momentum)
    assert np.all(conv.learning_rate[lrs == 0] == 0) and np.all(conv.momentum == momentum)
    twin = _sgd(conv.learning_rate, 0.0, momentum, problem)
    assert _direction_distance(wd, twin) <= 1e-12  # measured ≤ 4e-15
    # θ̃_t = c_t θ_t, with the scales the conversion reports (the twin really is WD-free and scaled).
    np.testing.assert_allclose(twin, conv.scale[:, None] * wd, rtol=0, atol=1e-12 * np.abs(twin).max())
    assert conv.scale[-1] > 1.1  # the weights do grow: the LR absorbed the decay
    # The schedule (Pieces, with its geometric/zero tail) gives the same LRs.
    pieces = theory.dense_pieces(lrs, lam, momentum)
    np.testing.assert_allclose(pieces.learning_rate(np.arange(lrs.size)), conv.learning_rate, rtol=1e-12)


def test_radial_part_of_the_zero_step_matters():
    """Negative controls: the test above can fail. Dropping the λθ_0 that the zero step
    put into the base's buffer (= the twin of the same schedule started one step later),
    or the old advice (start the warm-up at a tiny LR > 0), are not the same run."""
    lrs, lam, gam = SCHEDULES["warmup-from-zero"], 2e-2, 0.9
    problem = _problem(lrs.size)
    wd = _sgd(lrs, lam, gam, problem)
    exact = _sgd(theory.exact_conversion(lrs, lam, gam).learning_rate, 0.0, gam, problem)
    no_radial = np.r_[0.0, theory.exact_conversion(lrs[1:], lam, gam).learning_rate]
    tiny = lrs.copy()
    tiny[0] = 1e-3 * 0.1 / 100  # 1e-3 of the first warm-up increment
    tiny_twin = theory.exact_conversion(tiny, lam, gam).learning_rate
    d_exact = _direction_distance(wd, exact)
    d_no_radial = _direction_distance(wd, _sgd(no_radial, 0.0, gam, problem))
    d_tiny = _direction_distance(wd, _sgd(tiny_twin, 0.0, gam, problem))
    assert d_exact <= 1e-12 and d_no_radial > 1e-4 and d_tiny > 1e-9, (d_exact, d_no_radial, d_tiny)


def test_state_form_is_the_rho_recurrence_when_no_lr_is_zero():
    rng = np.random.default_rng(3)
    lrs, lam, gam = rng.uniform(0.01, 0.2, 300), 3e-3, 0.9
    q_rho, q_prev = [], 1.0
    for t, eta in enumerate(lrs):  # docs/math.md#exact-twin-of-any-schedule as written: ρ_t = η_t/η_{t−1}
        rho = 1.0 if t == 0 else eta / lrs[t - 1]
        q_prev = 1 + gam * rho - eta * lam - gam * rho / q_prev
        q_rho.append(q_prev)
    np.testing.assert_allclose(theory.exact_conversion(lrs, lam, gam).q, q_rho, rtol=1e-14, atol=0)


def test_cross_convention_zero_lr_cases():
    lrs = np.r_[0.0, np.full(50, 0.1)]
    # Keras base → Keras twin: its displacement form has no ρ_t; the zero step is a no-op in both.
    conv = theory.exact_conversion(lrs, 5e-3, 0.9, base="keras", target="keras")
    assert conv.learning_rate[0] == 0 and conv.q[0] == 1.0
    np.testing.assert_allclose(conv.learning_rate[1:],
                               theory.exact_conversion(lrs[1:], 5e-3, 0.9, base="keras", target="keras").learning_rate,
                               rtol=1e-13)
    # Leading zeros are fine Keras → paper (the twin clears its buffer with momentum 0) ...
    kp = theory.exact_conversion(lrs, 5e-3, 0.9, base="keras", target="paper")
    assert kp.momentum[1] == 0.0
    # ... but a paper base's zero step stores a gradient that no Keras buffer can hold.
    with pytest.raises(theory.NoEquivalentError, match=r"learning_rates`\[0\] is 0 .*target='paper'"):
        theory.exact_conversion(lrs, 5e-3, 0.9, base="paper", target="keras")
    with pytest.raises(theory.NoEquivalentError, match=r"learning_rates`\[2\] is 0 after a nonzero"):
        theory.exact_conversion([0.1, 0.1, 0.0, 0.1], 5e-3, 0.9, base="keras", target="paper")
    # Without momentum there is no buffer to disagree about.
    theory.exact_conversion(lrs, 5e-3, 0.0, base="paper", target="keras")


def test_schedule_evaluates_zero_and_keeps_the_tail():
    base = keras.optimizers.schedules.CosineDecay(0.0, 900, warmup_target=0.1, warmup_steps=100)
    twin = schedules.EquivalentSchedule(base, 5e-4, 0.9, total_steps=1000)
    steps = np.arange(1100)
    expected = theory.exact_conversion(twin.base_learning_rates, 5e-4, 0.9).learning_rate
    np.testing.assert_allclose(twin.learning_rates(steps[:1000]), expected, rtol=1e-12)
    got = np.array([float(keras.ops.convert_to_numpy(twin(int(s)))) for s in (0, 1, 999, 1000, 1099)])
    np.testing.assert_allclose(got, twin.learning_rates([0, 1, 999, 1000, 1099]), rtol=1e-6)
    assert got[0] == 0.0 and twin.total_steps == 1000
    again = schedules.EquivalentSchedule.from_config(twin.get_config())
    np.testing.assert_array_equal(again.learning_rates(steps), twin.learning_rates(steps))
    # A base that ends at LR 0: the twin stays at 0 after total_steps too.
    ends = schedules.EquivalentSchedule(list(SCHEDULES["ends-at-zero"]), 5e-4, 0.9, total_steps=120)
    assert np.all(ends.learning_rates(np.arange(100, 500)) == 0) and ends.float32_horizon is None


# ------------------------------------------------------------------ inside model.fit, float64
EPOCHS, BATCH, N_TRAIN = 20, 64, 640  # 10 steps per epoch, 200 steps


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="float64 fit runs on TensorFlow")
def test_warmup_from_zero_twin_inside_fit_float64():
    (x, y), _ = data.load_digits(num_train=N_TRAIN)

    def run(optimizer):
        keras.utils.set_random_seed(1)
        model = models.bn_convnet(bn_epsilon=1e-30)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rec = callbacks.FunctionRecorder(x[:128].astype("float64"))
        model.fit(x.astype("float64"), y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                  callbacks=[rec])
        return rec.outputs

    with precision("float64"):
        base = keras.optimizers.schedules.CosineDecay(0.0, 170, warmup_target=0.2, warmup_steps=30, alpha=0.05)
        wd, gam = 3e-3, 0.9
        wd_run = run(optimizers.SGD(base, momentum=gam, weight_decay=wd))
        twin = schedules.EquivalentSchedule(base, wd, gam, total_steps=EPOCHS * 10)
        assert float(twin.learning_rates(0)) == 0.0 and twin.learning_rates(199) / twin.base_learning_rates[199] > 2
        twin_run = run(optimizers.SGD(twin, momentum=twin.momentum))
        assert callbacks.max_relative_difference(wd_run, twin_run) <= 1e-12
