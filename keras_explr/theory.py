r"""The math of Li & Arora (ICLR 2020) in float64: the single source of truth.

Pure Python and numpy; this module imports nothing from Keras and, from
`keras_explr`, only the shared input checks (`keras_explr._checks`). Every
Keras-facing class calls it, so that a formula exists in exactly one place.

Indexing (math.md#notation): steps are \(t = 0, 1, 2, \dots\); step \(t\) maps \(\theta_t\) to \(\theta_{t+1}\)
with the gradient \(g_t\) and the learning rate \(\eta_t\). Two momentum conventions:

* ``"paper"`` (Def. 1.2 = ``torch.optim.SGD`` = `keras_explr.optimizers.SGD`):
  \(v \leftarrow \gamma v + g + \lambda\theta\), \(\theta \leftarrow \theta - \eta_t v\), \(v_0 = 0\).
* ``"keras"`` (``keras.optimizers.SGD``): \(m \leftarrow \mu m - \eta_t (g + \lambda\theta)\),
  \(\theta \leftarrow (1 - \eta_t w)\theta + m\); ``w`` is Keras's decoupled ``weight_decay``.

For a loss that is scale-invariant in \(\theta\), SGD with weight decay is equivalent in
function space to SGD without it, with the learning rate \(\tilde\eta_t = \eta_t c_t c_{t+1}\)
and \(\tilde\theta_t = c_t\theta_t\). The constructions below give \(c_t\) and \(\tilde\eta_t\).
"""

import dataclasses
import math

import numpy as np

# The input checks live in keras_explr/_checks.py; the math validates its arguments with them.
from keras_explr._checks import check_bool as _check_bool
from keras_explr._checks import is_integer as _is_integer
from keras_explr._checks import (check_accumulation, check_boundaries, check_momentum, check_non_negative,
                                 check_positive, check_steps)
from keras_explr._checks import check_lr_exponent as check_lr_exponent  # re-exported: theory.check_lr_exponent
from keras_explr._checks import WSD_DECAYS as _WSD_DECAYS
from keras_explr._checks import check_wsd as check_wsd  # re-exported: theory.check_wsd

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)
LOG_FLOAT32_MAX = math.log(FLOAT32_MAX)

# A transient of the exact recurrence has converged once q_t is within a few
# float64 ulps of its fixed point α₊ (scaled by the iteration's conditioning).
_CONVERGED = 8.0 * np.finfo(np.float64).eps
# Longest transient table kept for one constant phase (see `_build_pieces`).
MAX_TRANSIENT_STEPS = 1 << 20

CONVENTIONS = ("paper", "keras")


class NoEquivalentError(ValueError):
    r"""No WD-free schedule reproduces the run (complex roots, \(q_t \le 0\), ...)."""


# --------------------------------------------------------------- validation
def check_convention(value):
    if value not in CONVENTIONS:
        raise ValueError(
            f"`convention` must be one of {CONVENTIONS}. Received: convention={value!r}"
        )
    return value


def epoch_boundaries(boundaries, steps_per_epoch):
    r"""Step boundaries for epoch boundaries, in `PiecewiseConstantDecay`'s meaning.

    With S steps (optimizer updates) per epoch, ``values[0]`` holds for the
    first \(e_0\) epochs, i.e. steps \(0, \dots, e_0 S - 1\), and ``values[1]`` from epoch \(e_0\)
    (step \(e_0 S\)) on: boundary epoch \(e\) ↦ step \(eS - 1\). `boundaries` must be
    strictly increasing integers ≥ 1 (epochs), `steps_per_epoch` an integer ≥ 1.

    >>> from keras_explr.theory import epoch_boundaries
    >>> epoch_boundaries([80, 120], 391)
    [31279, 46919]
    """
    spe = check_steps("steps_per_epoch", steps_per_epoch)
    try:
        epochs = list(boundaries)
    except TypeError:
        raise ValueError(
            f"`boundaries` must be a sequence of epochs. Received: boundaries={boundaries!r}"
        ) from None
    out = []
    for i, e in enumerate(epochs):
        if isinstance(e, bool) or not _is_integer(e) or int(e) < 1:
            raise ValueError(
                "`boundaries` are epochs when steps_per_epoch is given and must be integers >= 1 "
                f"(epoch e becomes step e * steps_per_epoch - 1). Received: boundaries[{i}]={e!r}"
            )
        if out and int(e) * spe - 1 <= out[-1]:
            raise ValueError(
                "`boundaries` must be strictly increasing. Received: "
                f"boundaries[{i - 1}]={epochs[i - 1]!r} >= boundaries[{i}]={e!r}"
            )
        out.append(int(e) * spe - 1)
    return out


def accumulated_step(step, gradient_accumulation_steps):
    r"""The real-update count k seen by a schedule under gradient accumulation.

    Keras 3 calls a `LearningRateSchedule` with its micro-step counter
    (``optimizer._iterations``); with ``gradient_accumulation_steps=n`` the
    \(k\)-th real update (\(k = 0, 1, \dots\)) is applied at micro-step \(kn + n - 1\), so
    floor(step / n) = k. ``None`` (no accumulation) returns `step`.

    >>> from keras_explr.theory import accumulated_step
    >>> [accumulated_step(s, 4) for s in (0, 3, 4, 7, 11)]
    [0, 0, 1, 1, 2]
    """
    n = check_accumulation(gradient_accumulation_steps)
    if n is None:
        return step
    out = np.floor_divide(step, n)
    return int(out) if np.ndim(out) == 0 and _is_integer(step) else out


# --------------------------------------------------------------- growth roots
def real_root_bound(momentum):
    r"""\((1 - \sqrt{\gamma})^2\): the largest \(\lambda\eta\) for which \(x^2 - (1+\gamma-\lambda\eta)x + \gamma\) has real roots.

    math.md#real-roots. Beyond it no WD-free exponential equivalent exists.
    """
    g = check_momentum(momentum)
    return (1.0 - math.sqrt(g)) ** 2


def check_real_roots(learning_rate, weight_decay, momentum):
    r"""Raises `NoEquivalentError` if \(\lambda\eta > (1 - \sqrt{\gamma})^2\); returns \((\eta, \lambda, \gamma)\)."""
    eta = check_positive("learning_rate", learning_rate)
    lam = check_non_negative("weight_decay", weight_decay)
    gam = check_momentum(momentum)
    bound = real_root_bound(gam)
    if lam * eta > bound:
        raise NoEquivalentError(
            "learning_rate * weight_decay must be <= (1 - sqrt(momentum))**2 = "
            f"{bound:.6g} for momentum={gam!r}; received learning_rate * "
            f"weight_decay = {eta!r} * {lam!r} = {lam * eta:.6g}. Beyond this "
            "bound the roots of x^2 - (1+momentum-lr*wd) x + momentum are "
            "complex and no WD-free exponential schedule is equivalent "
            "(math.md#real-roots). Lower the learning rate or the weight decay."
        )
    return eta, lam, gam


def growth_roots(learning_rate, weight_decay, momentum):
    r"""Both roots \((\alpha_+, \alpha_-)\) of \(x^2 - (1+\gamma-\lambda\eta)x + \gamma = 0\) (math.md#the-growth-root).

    Numerically stable: \(1 - \alpha_+ = 2\lambda\eta / (1 - \gamma + \lambda\eta + \sqrt{D})\) with
    \(D = (1-\gamma)^2 - 2\lambda\eta(1+\gamma) + (\lambda\eta)^2\), and \(\alpha_- = \gamma/\alpha_+\).
    """
    a_plus = 1.0 - _one_minus_growth_root(learning_rate, weight_decay, momentum)
    return a_plus, float(momentum) / a_plus


def _one_minus_growth_root(learning_rate, weight_decay, momentum):
    r"""\(1 - \alpha_+ = 2\lambda\eta / (1 - \gamma + \lambda\eta + \sqrt{D})\), without cancellation (validates)."""
    eta, lam, gam = check_real_roots(learning_rate, weight_decay, momentum)
    le = lam * eta
    disc = max((1.0 - gam) ** 2 - 2.0 * le * (1.0 + gam) + le * le, 0.0)
    return 2.0 * le / (1.0 - gam + le + math.sqrt(disc))


def growth_root(learning_rate, weight_decay, momentum):
    r"""\(\alpha_+\), the larger root of \(x^2 - (1+\gamma-\lambda\eta)x + \gamma = 0\) (Theorem 1.1).

    SGD with constant LR \(\eta\), weight decay \(\lambda\) and momentum \(\gamma\) is equivalent to SGD
    with momentum \(\gamma\), no weight decay and LR \(\tilde\eta_t = \eta\,\alpha_+^{-2t-1}\). \(\gamma = 0\) gives
    \(\alpha_+ = 1 - \lambda\eta\). Raises `NoEquivalentError` beyond `real_root_bound`.

    >>> round(growth_root(0.1, 5e-4, 0.9), 12)
    0.999497728368
    """
    return growth_roots(learning_rate, weight_decay, momentum)[0]


def log_growth_root(learning_rate, weight_decay, momentum):
    r"""\(\log\alpha_+\), computed as \(\operatorname{log1p}(-(1 - \alpha_+))\) without cancellation."""
    return math.log1p(-_one_minus_growth_root(learning_rate, weight_decay, momentum))


def growth_per_epoch(learning_rate, weight_decay, momentum, steps_per_epoch):
    r"""The ExpLR factor per epoch, \(\alpha_+^{-2\cdot\mathrm{steps\_per\_epoch}}\).

    >>> round(growth_per_epoch(0.1, 5e-4, 0.9, 391), 6)
    1.481233
    """
    n = check_steps("steps_per_epoch", steps_per_epoch)
    return math.exp(-2.0 * n * log_growth_root(learning_rate, weight_decay, momentum))


def explr_closed_form(learning_rate, weight_decay, momentum, steps):
    r"""The paper's ExpLR, \(\tilde\eta_t = \eta\,\alpha_+^{-2t-1}\), at the given steps (float64).

    Exact when the WD-free run starts from \(\tilde v_0 = -(1-\alpha)\theta_0/(\eta\alpha)\); from zero
    buffers it is the WD run started from \(v_0 = +(1-\alpha)\theta_0/(\eta\alpha)\) (math.md#zero-buffers).
    """
    eta = check_positive("learning_rate", learning_rate)
    la = log_growth_root(learning_rate, weight_decay, momentum)
    try:
        t = np.asarray(steps, dtype=np.float64)
    except (TypeError, ValueError):
        t = np.asarray(np.nan)
    if not np.all(np.isfinite(t) & (t >= 0)):
        raise ValueError(f"`steps` must be finite numbers >= 0. Received: steps={steps!r}")
    return np.exp(math.log(eta) - (2.0 * t + 1.0) * la)


# --------------------------------------------------------------- conversion
@dataclasses.dataclass(frozen=True)
class Conversion:
    r"""The exact WD-free equivalent of a run (math.md#the-general-converter).

    Attributes:
      scale: \(c_0, \dots, c_T\), with \(\tilde\theta_t = c_t\theta_t\) (length \(T+1\)).
      learning_rate: \(\tilde\eta_0, \dots, \tilde\eta_{T-1}\).
      momentum: the target optimizer's momentum hyperparameter per step.
      q: \(q_1, \dots, q_T\), with \(c_{t+1} = c_t / q_{t+1}\).
    """

    scale: np.ndarray
    learning_rate: np.ndarray
    momentum: np.ndarray
    q: np.ndarray


def exact_conversion(
    learning_rates,
    weight_decay,
    momentum,
    base="paper",
    target="paper",
    decoupled_weight_decay=0.0,
):
    r"""The general converter of math.md#the-general-converter, for any LR sequence (zeros included).

    The base run is linear in \((\theta_t, \theta_{t-1}, g_t)\) for a scale-invariant loss:
    \(\theta_{t+1} = a_t\theta_t - b_t\theta_{t-1} - \eta_t g_t\), with

    * ``base="paper"`` (coupled \(\lambda\)): \(a_t = 1 + \gamma\rho_t - \eta_t\lambda\), \(b_t = \gamma\rho_t\), \(\rho_t = \eta_t/\eta_{t-1}\);
    * ``base="keras"`` (coupled \(\lambda\) and decoupled \(w\)): \(a_t = 1 + \gamma - \eta_t(\lambda+w)\),
      \(b_t = \gamma(1 - \eta_{t-1}w)\).

    With zero buffers in both runs: \(q_1 = 1 - \eta_0(\lambda+w)\), \(q_{t+1} = a_t - b_t/q_t\),
    \(c_0 = 1\), \(c_{t+1} = c_t/q_{t+1}\), \(\tilde\eta_t = \eta_t c_t c_{t+1}\), and the displacement
    momentum \(\tilde\beta_t = b_t/(q_t q_{t+1})\); the target's momentum hyperparameter is
    \(\tilde\beta_t\tilde\eta_{t-1}/\tilde\eta_t\) (``target="paper"``) or \(\tilde\beta_t\) (``target="keras"``).

    For ``base="paper"`` the scales come from the state form of the same
    recurrence (`paper_state_step`), which needs no \(\rho_t\) and so also holds
    across zero-LR steps (a warm-up from 0): \(q_{t+1} = 1 - \eta_t\lambda + \gamma\eta_t h_t\),
    \(h_{t+1} = (\gamma h_t/q_{t+1} - \lambda)/(1 - \eta_t\lambda)\), \(h_0 = 0\). Zero LRs are allowed
    where an exact twin exists:

    * paper → paper: always. The twin's LR is 0 at the same steps and its
      momentum is \(\gamma\) at every step.
    * keras → keras: always (the Keras displacement form has no \(\rho_t\)).
    * paper → keras: not if \(\gamma > 0\) and a zero-LR step is followed by a nonzero
      one: the base then uses \(\gamma\eta_{t+1}g_t\), and a Keras buffer, which holds
      displacements only, cannot hold g_t from a step that did not move.
    * keras → paper: not if \(\gamma > 0\) and a zero-LR step comes after a nonzero
      one: the base still moves by \(\gamma m_t\) there, and a paper-convention twin
      moves only if its LR is > 0, which would add a gradient the base does
      not use. Leading zeros are allowed (the twin clears its buffer with
      momentum 0 at the first nonzero step).

    Args:
      learning_rates (Sequence[float]): 1-D sequence of the base run's \(\eta_t\) (all ≥ 0, finite).
      weight_decay (float | Sequence[float]): coupled \(\lambda\) (a float, or one value per step).
      momentum (float): \(\gamma\) (for ``base="keras"``, Keras's momentum hyperparameter).
      base, target (str): ``"paper"`` or ``"keras"``.
      decoupled_weight_decay (float): Keras's decoupled w (``base="keras"`` only).

    Returns:
      (Conversion): the scales, learning rates and momenta of the twin.

    Raises:
      NoEquivalentError: if some \(q_t \le 0\) (then no positive scaling exists), if
        \(\tilde\eta_t\) overflows float64, or for the zero-LR cases above.

    Example:

    >>> import numpy as np
    >>> from keras_explr import theory
    >>> warmup = np.linspace(0.0, 0.1, 10, endpoint=False)   # starts at LR 0
    >>> conv = theory.exact_conversion(np.r_[warmup, [0.1] * 90], 5e-4, 0.9)
    >>> float(conv.learning_rate[0]), bool(np.all(conv.momentum == 0.9))
    (0.0, True)
    """
    try:
        eta = np.asarray(learning_rates, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("`learning_rates` must be a 1-D sequence of finite numbers >= 0. Received: "
                         f"learning_rates={learning_rates!r}") from None
    if eta.ndim != 1 or eta.size == 0:
        raise ValueError(
            "`learning_rates` must be a non-empty 1-D sequence. Received shape "
            f"{eta.shape}"
        )
    if not np.all(np.isfinite(eta) & (eta >= 0)):
        i = int(np.argmin(np.isfinite(eta) & (eta >= 0)))
        raise ValueError(
            "`learning_rates` must all be finite and >= 0. Received: "
            f"learning_rates[{i}]={eta[i]!r}"
        )
    if base not in CONVENTIONS or target not in CONVENTIONS:
        raise ValueError(
            f"`base` and `target` must be in {CONVENTIONS}. Received: "
            f"base={base!r}, target={target!r}"
        )
    gam = check_momentum(momentum)
    n = eta.size
    lam = _per_step("weight_decay", weight_decay, n)
    w = _per_step("decoupled_weight_decay", decoupled_weight_decay, n)
    if base == "paper" and np.any(w != 0):
        raise ValueError(
            "`decoupled_weight_decay` is Keras's decoupled decay and needs "
            "base='keras'; the paper's SGD has coupled weight decay only."
        )
    zero = eta == 0.0
    if base != target and gam > 0 and zero.any():
        _check_zero_steps(zero, base, target)
    q = np.empty(n)
    b = np.zeros(n)
    if base == "paper":
        h = 0.0
        for t in range(n):
            q[t], h = paper_state_step(eta[t], lam[t], gam, h, t)
            if t and eta[t - 1] > 0:  # b_t = γρ_t (only a Keras target reads it)
                b[t] = gam * eta[t] / eta[t - 1]
    else:
        q[0] = 1.0 - eta[0] * (lam[0] + w[0])
        _check_q(q[0], 0)
        for t in range(1, n):
            a_t = 1.0 + gam - eta[t] * (lam[t] + w[t])
            b[t] = gam * (1.0 - eta[t - 1] * w[t - 1])
            q[t] = a_t - b[t] / q[t - 1]
            _check_q(q[t], t)
    with np.errstate(over="ignore"):
        scale = np.concatenate([[1.0], np.cumprod(1.0 / q)])
        lr = eta * scale[:-1] * scale[1:]
    if not np.all(np.isfinite(lr)):
        t = int(np.argmin(np.isfinite(lr)))
        raise NoEquivalentError(
            f"the equivalent learning rate eta_t * c_t * c_(t+1) overflows float64 at step {t} "
            f"(c_t = {scale[t]:.3g}, q_t = {q[t]:.3g}): no representable WD-free equivalent. Convert fewer "
            "steps, or lower the learning rate or the weight decay."
        )
    mom = np.full(n, gam)
    beta = b[1:] / (q[:-1] * q[1:])
    if target == "keras":
        mom[1:] = beta
    elif base == "keras":
        with np.errstate(divide="ignore", invalid="ignore"):
            mom[1:] = np.where(lr[1:] > 0, beta * lr[:-1] / lr[1:], 0.0)
        mom[1:][(lr[:-1] == 0) | (lr[1:] == 0)] = 0.0  # leading zeros (checked above) or γ = 0
    # base == target == "paper": the momentum is γ at every step (math.md#the-general-converter).
    return Conversion(scale=scale, learning_rate=lr, momentum=mom, q=q)


def paper_state_step(learning_rate, weight_decay, momentum, h, step=0):
    r"""One step of the zero-buffer conversion of the paper's SGD, in state form.

    Base: \(v_{t+1} = \gamma v_t + g_t + \lambda\theta_t\), \(\theta_{t+1} = \theta_t - \eta_t v_{t+1}\), \(v_0 = 0\).
    Twin: \(\tilde v_{t+1} = \gamma\tilde v_t + \tilde g_t\), \(\tilde\theta_{t+1} = \tilde\theta_t - \tilde\eta_t\tilde v_{t+1}\), no weight decay.
    With the ansatz \(\tilde\theta_t = c_t\theta_t\) and \(\tilde v_t = (v_t + h_t\theta_t)/c_t\) (\(\tilde g_t = g_t/c_t\) on
    a scale-invariant loss), matching the coefficients of \(v_t\), \(\theta_t\) and \(g_t\)
    gives, for any \(\eta_t \ge 0\):

    \[q_{t+1} = \frac{c_t}{c_{t+1}} = 1 - \eta_t\lambda + \gamma\eta_t h_t,\quad
    h_{t+1} = \frac{\gamma h_t/q_{t+1} - \lambda}{1 - \eta_t\lambda},\quad h_0 = 0,\quad
    \tilde\eta_t = \eta_t c_t c_{t+1}.\]

    \(h_t c_t\theta_t\) is the radial part \(\lambda\theta\) that the base keeps in its buffer and
    the twin does not. When \(\eta_{t-1} > 0\), \(h_t = (1 - 1/q_t)/\eta_{t-1}\) and this is
    the recurrence \(q_{t+1} = 1 + \gamma\rho_t - \eta_t\lambda - \gamma\rho_t/q_t\) of math.md#exact-twin-of-any-schedule. At a
    zero-LR step (\(\eta_t = 0\)) the base does not move but puts \(g_t + \lambda\theta_t\) into its
    buffer; the twin takes \(\tilde\eta_t = 0\), keeps \(c\), puts \(\tilde g_t\) into its buffer, and
    \(h\) carries the radial part \(\lambda\theta_t\) into the later steps' \(q\), i.e. their LRs.
    So a warm-up that starts at LR 0 has an exact WD-free twin with constant
    momentum \(\gamma\). \(h_t \le 0\) for all \(t\), so \(q_{t+1} > 0\) implies \(1 - \eta_t\lambda > 0\).

    Returns:
      (tuple[float, float]): \((q_{t+1}, h_{t+1})\).

    Raises:
      NoEquivalentError: if \(q_{t+1} \le 0\) (`step` names \(t\) in the message).
    """
    q = 1.0 - learning_rate * weight_decay + momentum * learning_rate * h
    _check_q(q, step)
    return q, (momentum * h / q - weight_decay) / (1.0 - learning_rate * weight_decay)


def _check_zero_steps(zero, base, target):
    """Raises where a zero-LR step makes a cross-convention twin impossible."""
    if base == "paper":  # a zero step followed by a nonzero one
        bad = np.nonzero(zero[:-1] & ~zero[1:])[0]
        if bad.size:
            t = int(bad[0])
            raise NoEquivalentError(
                f"`learning_rates`[{t}] is 0 and learning_rates[{t + 1}] is > 0: the paper-convention "
                f"base puts the gradient of step {t} into its buffer without moving, and uses it at "
                f"step {t + 1}; a keras.optimizers.SGD twin's buffer holds displacements only and "
                "cannot hold it, so no exact Keras-convention twin exists for momentum > 0. Use "
                "target='paper' (exact, keras_explr.optimizers.SGD), or start the schedule above 0."
            )
    else:  # a zero step after a nonzero one
        first = int(np.argmin(zero)) if not zero.all() else zero.size
        bad = np.nonzero(zero[first:])[0]
        if bad.size:
            t = first + int(bad[0])
            raise NoEquivalentError(
                f"`learning_rates`[{t}] is 0 after a nonzero learning rate: keras.optimizers.SGD "
                "still moves by momentum * m there, which a paper-convention twin can do only with "
                "an LR > 0 that would add a gradient the base does not use; no exact twin exists "
                "for momentum > 0. Use target='keras', or keep the learning rate > 0 after the "
                "first nonzero step (leading zeros are fine)."
            )


def _per_step(name, value, n):
    try:
        if isinstance(value, (bool, np.bool_, str, bytes)):
            raise TypeError
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a finite number >= 0, or one such number per step ({n} values). "
            f"Received: {name}={value!r}"
        ) from None
    if not np.all(np.isfinite(arr) & (arr >= 0)):
        raise ValueError(f"`{name}` must be a finite number >= 0, or one such number per step. "
                         f"Received: {name}={value!r}")
    return arr


def _check_q(q, t):
    if not q > 0.0:
        raise NoEquivalentError(
            f"no WD-free equivalent exists: the scale recurrence gives q={q:.6g} "
            f"<= 0 at step {t} (math.md#real-roots, §3.4). This happens when "
            "learning_rate * weight_decay exceeds (1 - sqrt(momentum))**2 for "
            "long enough; lower the learning rate or the weight decay."
        )


def texp_corrections(boundaries, values, weight_decay, momentum):
    r"""The momentum corrections \(\kappa_I\) of exact TEXP at \(t = T_I\) (math.md#texp-exactness).

    \(\kappa_I = (\gamma/\alpha^*_I)[(1/\alpha^*_I - 1) - (\eta_I/\eta_{I-1})(1/\alpha^*_{I-1} - 1)]\), \(I \ge 1\).
    With the initial buffer of §2.2 and \(\tilde v_{t+1} \mathrel{-}= \kappa_I\tilde\theta_t/\tilde\eta_t\) at each \(t = T_I\),
    the closed-form TEXP equals step decay exactly.
    """
    boundaries, values = check_boundaries(boundaries, values)
    lam = check_non_negative("weight_decay", weight_decay)
    gam = check_momentum(momentum)
    alphas = []
    for i, v in enumerate(values):
        try:
            alphas.append(growth_root(v, lam, gam))
        except NoEquivalentError as e:
            raise NoEquivalentError(f"values[{i}]: {e}") from None
    return [
        gam / alphas[i] * ((1.0 / alphas[i] - 1.0)
                           - values[i] / values[i - 1] * (1.0 / alphas[i - 1] - 1.0))
        for i in range(1, len(values))
    ]


# --------------------------------------------------------------- piecewise log-linear schedules
@dataclasses.dataclass(frozen=True)
class Pieces:
    r"""A learning-rate schedule stored as piecewise log-linear segments.

    Segment \(i\) covers steps ``starts[i]`` ≤ \(t\) < ``starts[i+1]``. With \(k = t\) − ``starts[i]``
    and n_i = len(tables[i]):

    * \(\log\tilde\eta_t\) = ``tables[i][k]`` if \(k < n_i\);
    * \(\log\tilde\eta_t\) = ``intercepts[i] + slopes[i] * (k - n_i)`` otherwise.

    Every schedule of this package has this form: ExpLR and closed-form TEXP
    are log-linear (empty tables); the exact variants add a transient table
    after each LR change; the twin of an arbitrary schedule is one table.
    """

    starts: tuple
    tables: tuple
    intercepts: tuple
    slopes: tuple

    def log_learning_rate(self, steps):
        r"""\(\log\tilde\eta_t\) at the given (non-negative) steps, in float64."""
        t = np.asarray(steps, dtype=np.float64)
        starts = np.asarray(self.starts, dtype=np.float64)
        seg = np.searchsorted(starts, t, side="right") - 1
        k = t - starts[seg]
        lens = np.array([len(x) for x in self.tables], dtype=np.float64)[seg]
        flat, offsets = self.flat_table()
        idx = np.clip(offsets[seg] + k, 0, flat.size - 1).astype(np.int64)
        tail = np.asarray(self.intercepts)[seg] + np.asarray(self.slopes)[seg] * (k - lens)
        return np.where(k < lens, flat[idx], tail)

    def learning_rate(self, steps):
        r"""\(\tilde\eta_t\) at the given steps, in float64 (inf past float64's range)."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_learning_rate(steps))

    def flat_table(self):
        """All tables concatenated (one 0.0 placeholder if all are empty), and offsets."""
        lens = [len(x) for x in self.tables]
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.float64)
        flat = np.concatenate([np.asarray(x, dtype=np.float64) for x in self.tables] + [[0.0]])
        return flat, offsets

    def horizon(self, log_max=LOG_FLOAT32_MAX):
        r"""The first step \(t\) with \(\log\tilde\eta_t\) > ``log_max`` (float32 overflow by default), or None."""
        ends = list(self.starts[1:]) + [math.inf]
        for start, end, table, a, s in zip(
            self.starts, ends, self.tables, self.intercepts, self.slopes
        ):
            over = np.nonzero(np.asarray(table) > log_max)[0]
            if over.size and start + over[0] < end:
                return int(start + over[0])
            first_tail = start + len(table)
            if first_tail >= end:
                continue
            if a > log_max:
                return int(first_tail)
            if s > 0:
                k = math.floor((log_max - a) / s) + 1
                while k > 0 and a + s * (k - 1) > log_max:  # guard the division's rounding
                    k -= 1
                while a + s * k <= log_max:
                    k += 1
                if first_tail + k < end:
                    return int(first_tail + k)
        return None


def _build_pieces(phases, weight_decay, momentum):
    r"""Runs the exact zero-buffer recurrence (paper convention) phase by phase.

    `phases` is a list of (start, lr): `lr` is a float (constant until the next
    phase, the last one forever) or a 1-D array with one LR per step that fills
    its phase exactly. LRs may be 0 (a warm-up from 0): the twin's LR is 0 there.

    Each step is `paper_state_step` (math.md#exact-twin-of-any-schedule in state form):
    \(q_{t+1} = 1 - \eta_t\lambda + \gamma\eta_t h_t\), \(\log\tilde\eta_t = \log\eta_t + 2\log c_t - \log q_{t+1}\),
    \(\log c_{t+1} = \log c_t - \log q_{t+1}\).

    Inside a constant phase \(\eta > 0\) (after its first step) it is run in its
    deviation form \(d = q - \alpha_+\), \(d \leftarrow \gamma d/(\alpha_+(\alpha_+ + d))\), which follows from
    \(\alpha_+ + \gamma/\alpha_+ = 1 + \gamma - \eta\lambda\): rounding errors then shrink with \(d\) instead of piling
    up against the fixed point. Once \(\lvert d\rvert\) ≤ a few ulps the segment continues
    geometrically (slope \(-2\log\alpha_+\)), so no table is longer than the transient.
    A constant phase at \(\eta = 0\) has \(\tilde\eta = 0\) throughout (\(q = 1\), \(h \leftarrow \gamma h - \lambda\)).
    """
    lam, gam = weight_decay, momentum
    starts, tables, intercepts, slopes = [], [], [], []
    log_c, h = 0.0, 0.0
    ends = [p[0] for p in phases[1:]] + [None]
    for (start, lr), end in zip(phases, ends):
        dense = np.ndim(lr) > 0
        lrs = np.asarray(lr, dtype=np.float64) if dense else np.full(1, float(lr))
        table = []
        t = start
        # Dense phases (and the first step of a constant one): the state form.
        while t < (start + lrs.size if dense else start + 1) and (end is None or t < end):
            eta = float(lrs[t - start])
            q, h = paper_state_step(eta, lam, gam, h, t)
            table.append(math.log(eta) + 2.0 * log_c - math.log(q) if eta > 0 else -math.inf)
            log_c -= math.log(q)
            t += 1
        eta = float(lrs[-1])
        starts.append(start)
        tables.append(np.asarray(table, dtype=np.float64))
        if eta == 0.0:  # the twin stands still too; h_{t+1} = γh_t − λ
            intercepts.append(-math.inf)
            slopes.append(0.0)
            if end is not None and t < end:
                k = end - t
                h = gam ** k * h - lam * (k if gam == 1.0 else (1.0 - gam ** k) / (1.0 - gam))
            continue
        log_a = log_growth_root(eta, lam, gam)
        one_minus_a = _one_minus_growth_root(eta, lam, gam)
        alpha = 1.0 - one_minus_a
        if not dense:
            d = q - alpha
            while (end is None or t < end) and abs(d) > _CONVERGED * alpha:
                if len(table) >= MAX_TRANSIENT_STEPS:
                    break
                d = gam * d / (alpha * (alpha + d))
                log_q = log_a + math.log1p(d / alpha)
                table.append(math.log(eta) + 2.0 * log_c - log_q)
                log_c -= log_q
                t += 1
            # h_t = (1 − 1/q_t)/η inside a constant phase, with q_t − 1 = d − (1 − α₊).
            h = (d - one_minus_a) / ((alpha + d) * eta)
            tables[-1] = np.asarray(table, dtype=np.float64)
        # Geometric tail from step t on (q ≡ α₊): log c falls by log α₊ per step.
        intercepts.append(math.log(eta) + 2.0 * log_c - log_a)
        slopes.append(-2.0 * log_a)
        if end is not None and t < end:
            log_c -= (end - t) * log_a
            h = -one_minus_a / (alpha * eta)
    return Pieces(tuple(starts), tuple(tables), tuple(intercepts), tuple(slopes))


def explr_pieces(learning_rate, weight_decay, momentum, exact=True):
    r"""ExpLR for constant \((\eta, \lambda, \gamma)\), paper convention, as `Pieces`.

    exact=True: the zero-buffer recurrence (bitwise-faithful to the WD run from
    zero buffers). exact=False: the paper's closed form \(\eta\,\alpha_+^{-2t-1}\).
    """
    eta, lam, gam = check_real_roots(learning_rate, weight_decay, momentum)
    _check_bool("exact", exact)
    if exact:
        return _build_pieces([(0, eta)], lam, gam)
    log_a = log_growth_root(eta, lam, gam)
    return Pieces((0,), (np.zeros(0),), (math.log(eta) - log_a,), (-2.0 * log_a,))


def standard_weight_decay(weight_decay, learning_rate):
    r"""\(\lambda_\text{old} = \lambda_\text{new}/\eta\): the standard (LR-coupled) weight decay of a
    `ReparamWeightDecay` run with \(\lambda_\text{new}\) at the constant LR \(\eta\) (blog, part 2:
    \(\lambda_\text{new} = \lambda_\text{old}\,\eta\)). With it, ``explr_equivalent(η, λ_old, γ, ...)`` gives the
    wrapper's WD-free twin: weight_decay_mode="coupled" for mode="coupled" (N1),
    "decoupled" for mode="decoupled" (N2).
    """
    lam = check_non_negative("weight_decay", weight_decay)
    return lam / check_positive("learning_rate", learning_rate)


def explr_equivalent(
    learning_rate,
    weight_decay,
    momentum,
    exact=True,
    convention="paper",
    weight_decay_mode="coupled",
):
    r"""The WD-free ExpLR twin of constant-LR SGD, and the momentum it needs.

    Returns (pieces, target_momentum), for these bases and targets (math.md#keras-convention):

    * ``convention="paper"``, coupled \(\lambda\) (`keras_explr.optimizers.SGD`):
      target momentum \(\gamma\); exact=True is the zero-buffer recurrence, exact=False
      the closed form \(\eta\,\alpha_+^{-2t-1}\) (a constant +0.92 % effective LR at
      \(\eta = 0.1\), \(\lambda = 5\times 10^{-4}\), \(\gamma = 0.9\), from the initial buffer it leaves out).
    * ``convention="keras"``, coupled \(\lambda\) (an L2 term \(\frac{\lambda}{2}\lVert\theta\rVert^2\) in the loss, with
      ``keras.optimizers.SGD``): closed form with Keras momentum \(\gamma/\alpha_+^2\), exact
      only from the buffer \(\tilde m_0 = (1-\alpha_+)\theta_0\); exact=True raises, because no
      constant Keras momentum reproduces the zero-buffer run.
    * ``weight_decay_mode="decoupled"``, \(\theta \leftarrow (1-\eta w)\theta\) before the momentum step
      (Keras's own ``weight_decay=w``, or `ReparamWeightDecay` with \(\lambda_\text{new} = \eta w\)):
      the roots are \(1-\eta w\) and \(\gamma\), so \(\tilde\eta_t = \eta(1-\eta w)^{-2t-1}\) is exact from zero
      buffers, with Keras momentum \(\gamma/(1-\eta w)\) or paper momentum \(\gamma(1-\eta w)\).
    """
    check_convention(convention)
    _check_bool("exact", exact)
    if weight_decay_mode not in ("coupled", "decoupled"):
        raise ValueError(
            "`weight_decay_mode` must be 'coupled' or 'decoupled'. Received: "
            f"weight_decay_mode={weight_decay_mode!r}"
        )
    eta = check_positive("learning_rate", learning_rate)
    lam = check_non_negative("weight_decay", weight_decay)
    gam = check_momentum(momentum)
    if weight_decay_mode == "decoupled":
        if not lam * eta < 1.0:
            raise NoEquivalentError(
                "learning_rate * weight_decay must be < 1 for decoupled weight "
                f"decay; received {eta!r} * {lam!r} = {eta * lam:.6g}"
            )
        log_r = math.log1p(-eta * lam)
        pieces = Pieces((0,), (np.zeros(0),), (math.log(eta) - log_r,), (-2.0 * log_r,))
        shrink = 1.0 - eta * lam
        return pieces, (gam / shrink if convention == "keras" else gam * shrink)
    if convention == "paper":
        return explr_pieces(eta, lam, gam, exact=exact), gam
    if exact:
        raise NoEquivalentError(
            "no constant momentum of keras.optimizers.SGD makes ExpLR exactly "
            "equivalent to a coupled-weight-decay run started from zero buffers: "
            "the Keras buffer stores displacements, so the needed momentum "
            "varies during the first few hundred steps (math.md#the-general-converter). "
            "Alternatives: use keras_explr.optimizers.SGD with convention='paper' "
            "(exact); or exact=False (closed form, momentum gamma/alpha**2, exact "
            "only from the buffer (1 - alpha) * theta_0); or, if your base run "
            "uses Keras's own `weight_decay` argument, weight_decay_mode='decoupled' "
            "(exact from zero buffers)."
        )
    alpha = growth_root(eta, lam, gam)
    return explr_pieces(eta, lam, gam, exact=False), gam / (alpha * alpha)


def texp_pieces(boundaries, values, weight_decay, momentum, exact=True):
    r"""TEXP for step decay with `PiecewiseConstantDecay`'s (boundaries, values).

    Phase \(I\) starts at \(T_I\) = ``boundaries[I−1] + 1``. exact=True: the TEXP-exact
    recurrence of math.md#exact-twin-of-any-schedule (zero buffers, no corrections needed).
    exact=False: the closed form of §3.2, \(c_{t+1} = c_t/\alpha^*_{I(t)}\),
    \(\tilde\eta_t = \eta_{I(t)}\, c_t c_{t+1}\).
    """
    boundaries, values = check_boundaries(boundaries, values)
    lam = check_non_negative("weight_decay", weight_decay)
    gam = check_momentum(momentum)
    _check_bool("exact", exact)
    for i, v in enumerate(values):
        try:
            check_real_roots(v, lam, gam)
        except NoEquivalentError as e:
            raise NoEquivalentError(f"values[{i}]: {e}") from None
    starts = [0] + [b + 1 for b in boundaries]
    if exact:
        return _build_pieces(list(zip(starts, values)), lam, gam)
    intercepts, slopes, log_c = [], [], 0.0
    ends = starts[1:] + [None]
    for start, end, v in zip(starts, ends, values):
        log_a = log_growth_root(v, lam, gam)
        intercepts.append(math.log(v) + 2.0 * log_c - log_a)
        slopes.append(-2.0 * log_a)
        if end is not None:
            log_c -= (end - start) * log_a
    empty = tuple(np.zeros(0) for _ in starts)
    return Pieces(tuple(starts), empty, tuple(intercepts), tuple(slopes))


def dense_pieces(learning_rates, weight_decay, momentum):
    """The exact WD-free twin (paper convention) of any LR sequence, as `Pieces`.

    Steps 0..len−1 are one table (the recurrence of math.md#exact-twin-of-any-schedule, in the state
    form of `paper_state_step`, so zero LRs, e.g. a warm-up from 0, are exact
    too: the twin's LR is 0 at those steps); past the end, the base LR is taken
    to stay at its last value (as `CosineDecay` does after `decay_steps`), and
    the twin continues geometrically (or stays at 0 if that value is 0).
    """
    lam = check_non_negative("weight_decay", weight_decay)
    gam = check_momentum(momentum)
    try:
        lrs = np.asarray(learning_rates, dtype=np.float64)
    except (TypeError, ValueError):
        lrs = np.asarray([np.nan])
    if lrs.ndim != 1 or lrs.size == 0 or not np.all(np.isfinite(lrs) & (lrs >= 0)):
        raise ValueError(
            "`learning_rates` (the base schedule at every step 0..total_steps-1) must "
            "be a non-empty 1-D sequence of finite numbers >= 0; got "
            f"min={np.min(lrs) if lrs.size else None!r}"
        )
    if lrs[-1] > 0:
        check_real_roots(float(lrs[-1]), lam, gam)
    return _build_pieces([(0, lrs), (lrs.size, float(lrs[-1]))], lam, gam)


def float32_horizon(learning_rate, weight_decay, momentum, exact=False):
    r"""The first step at which ExpLR's LR exceeds float32's max (3.40e38).

    exact=False (the API's meaning): the paper's closed form \(\eta\,\alpha_+^{-2t-1}\);
    exact=True: the zero-buffer recurrence variant, which starts slower.

    >>> float32_horizon(0.1, 5e-4, 0.9), float32_horizon(0.1, 5e-4, 0.9, exact=True)
    (90591, 90600)
    """
    return explr_pieces(learning_rate, weight_decay, momentum, exact=exact).horizon()


def equivalent_rescaling(convention):
    r"""Lemma 2's equivalent scaling, as powers of s (math.md#equivalent-rescaling).

    For the scale-invariant group at a step boundary, with s > 0: every
    quantity \(q\) becomes \(q\,s^p\) with \(p\) from this table. The moving statistics
    of a normalization layer whose input has degree d in the group scale with
    \(p\,d\). Non-invariant parameters and their buffers are unchanged.

    >>> equivalent_rescaling("paper")["momentum_buffer"], equivalent_rescaling("keras")["momentum_buffer"]
    (1, -1)
    """
    check_convention(convention)
    return {
        "weights": -1,
        # A gradient buffer (paper/torch) holds ∇L(θ/s) = s∇L(θ); a Keras buffer holds displacements.
        "momentum_buffer": 1 if convention == "paper" else -1,
        "learning_rate": -2,
        "moving_mean": -1,
        "moving_variance": -2,
    }


# ------------------------------------------- rotational equilibria (probe)
EQUILIBRIUM_RULES = ("sgd_coupled", "sgd_decoupled", "adamw", "lion")


def equilibrium_angular_update(rule, decay_per_step, momentum=0.0, beta_1=0.9, beta_2=0.99):
    r"""Predicted steady-state angular update per step of a scale-invariant weight.

    math.md#rotational-equilibrium (random-walk, noise-dominated model; valid past
    the transient, \(t\,\eta\lambda \gtrsim 1\)). With \(\eta\lambda\) the fraction of the weight the decay
    removes per step (``decay_per_step``; \(\lambda_\text{new}\) for `ReparamWeightDecay`):

    * ``"sgd_coupled"``: \(\lambda\theta\) inside the momentum buffer, \(v \leftarrow \gamma v + g + \lambda\theta\)
      (`keras_explr.optimizers.SGD`, PyTorch, an L2 regularizer with Keras
      SGD; SMD, Wan et al.): \(\sqrt{2\eta\lambda/(1+\gamma)}\).
    * ``"sgd_decoupled"``: \(\theta \leftarrow (1 - \eta\lambda)\theta\), then the heavy-ball step (Keras
      ``SGD(momentum=γ, weight_decay=λ)``; derived): \(\sqrt{2\eta\lambda(1-\gamma)/(1+\gamma)}\).
    * ``"adamw"``: Adam with \(\theta \leftarrow (1 - \eta\lambda)\theta\) (Keras ``AdamW``/``Adam(weight_decay)``;
      Kosson et al.): \(\sqrt{2\eta\lambda(1-\beta_1)/(1+\beta_1)}\).
    * ``"lion"``: Lion with decoupled decay (Kosson et al.'s code):
      \(\sqrt{\pi/2}\cdot\sqrt{2\eta\lambda}\cdot\sqrt{(1-\beta_1)^2 + \beta_1^2(1-\beta_2)/(1+\beta_2)}\).

    >>> round(equilibrium_angular_update("sgd_coupled", 0.1 * 5e-4, momentum=0.9), 6)
    0.007255
    """
    if rule not in EQUILIBRIUM_RULES:
        raise ValueError(f"`rule` must be one of {EQUILIBRIUM_RULES}. Received: rule={rule!r}")
    d = check_non_negative("decay_per_step", decay_per_step)
    a = check_momentum(momentum)
    b1 = check_momentum(beta_1, "beta_1")
    b2 = check_momentum(beta_2, "beta_2")
    if rule == "sgd_coupled":
        return math.sqrt(2.0 * d / (1.0 + a))
    if rule == "sgd_decoupled":
        return math.sqrt(2.0 * d * (1.0 - a) / (1.0 + a))
    if rule == "adamw":
        return math.sqrt(2.0 * d * (1.0 - b1) / (1.0 + b1))
    return math.sqrt(math.pi / 2.0) * math.sqrt(2.0 * d) * math.sqrt(
        (1.0 - b1) ** 2 + b1 ** 2 * (1.0 - b2) / (1.0 + b2))


def equilibrium_norm_adamw(learning_rate, decay_per_step, size):
    r"""Predicted steady-state \(\lVert w\rVert\) of a scale-invariant weight under AdamW.

    \(\lVert w\rVert \approx \sqrt{\eta C/(2\lambda)} = \eta\sqrt{C/(2\eta\lambda)}\) (Kosson et al.; math.md#rotational-equilibrium),
    with \(C\) the number of entries and \(\eta\lambda\) = ``decay_per_step``.

    >>> round(equilibrium_norm_adamw(1e-3, 1e-3 * 0.1, 100), 4)
    0.7071
    """
    lr = check_positive("learning_rate", learning_rate)
    d = check_positive("decay_per_step", decay_per_step)
    c = check_steps("size", size)
    return lr * math.sqrt(c / (2.0 * d))


def equilibration_clock(step, decay_per_step):
    r"""\(t\,\eta\lambda\): steps elapsed in units of the decay's time scale \(1/(\eta\lambda)\).

    The weight norm relaxes at rate \(\approx 2\eta\lambda\) per step (math.md#rotational-equilibrium),
    so the equilibrium predictions apply once the clock is ≳ 1.
    """
    return check_non_negative("step", step) * check_non_negative("decay_per_step", decay_per_step)


EFFECTIVE_LR_KINDS = ("sgd", "adam", "lion", "lamb")


def effective_learning_rate(kind, learning_rate, norm, size):
    r"""The effective LR on a scale-invariant weight of norm \(\lVert w\rVert\) and `size` entries.

    math.md#effective-learning-rate: \(\eta/\lVert w\rVert^2\) for SGD, \(\eta/\lVert w\rVert\) for the Adam family,
    \(\eta/\operatorname{RMS}(w) = \eta\sqrt{C}/\lVert w\rVert\) for Lion (sign update), \(\eta\) for Lamb (its trust ratio
    fixes \(\lVert\Delta w\rVert/\lVert w\rVert\)).

    >>> effective_learning_rate("sgd", 0.1, 2.0, 4), effective_learning_rate("lion", 0.1, 2.0, 4)
    (0.025, 0.1)
    """
    if kind not in EFFECTIVE_LR_KINDS:
        raise ValueError(f"`kind` must be one of {EFFECTIVE_LR_KINDS}. Received: kind={kind!r}")
    lr = check_non_negative("learning_rate", learning_rate)
    n = check_positive("norm", norm)
    c = check_steps("size", size)
    if kind == "sgd":
        return lr / n ** 2
    if kind == "adam":
        return lr / n
    if kind == "lion":
        return lr * math.sqrt(c) / n
    return lr


# ---------------------------------------------------------------------------
# Weight decay per step, the monitor's mappings, the probe's scale symmetry
# (formulas the Keras classes call; written once, here).
# ---------------------------------------------------------------------------
def scheduled_weight_decay(weight_decay, learning_rate, reference_learning_rate, lr_exponent=1):
    r"""\(\lambda_t = \lambda\,(\eta_t/\eta_\text{ref})^p\): decay that follows the LR's shape (math.md#new-parameterization).

    \(p\) = ``lr_exponent`` in [0, 2]: 0 the independent rule (\(\lambda\) per step), 1 the
    standard one (\(\lambda\eta_t/\eta_\text{ref}\), the fraction Keras/PyTorch remove, up to the
    constant \(\eta_\text{ref}\)), 2 the corrected one (timm's ``corrected_weight_decay``,
    AdamC: \(\lambda\eta_t^2/\eta_\text{ref}^2\)). \(p = 1\) is computed as \(\lambda\eta_t/\eta_\text{ref}\) exactly. Plain
    arithmetic, so it serves floats and backend tensors alike
    (`ReparamWeightDecay(lr_exponent=p)` and `ScaleMonitor` call it).

    >>> scheduled_weight_decay(1e-4, 0.05, 0.1)
    5e-05
    >>> scheduled_weight_decay(1e-4, 0.05, 0.1, lr_exponent=2)
    2.5e-05
    """
    if lr_exponent == 1:
        return weight_decay * learning_rate / reference_learning_rate
    if lr_exponent == 0:
        return weight_decay
    ratio = learning_rate / reference_learning_rate
    if lr_exponent == 2:
        return weight_decay * (ratio * ratio)
    return weight_decay * ratio ** lr_exponent


def l2_as_coupled_weight_decay(l2):
    r"""A ``keras.regularizers.L2(l2)`` penalty \(l_2\lVert\theta\rVert^2\) adds \(2 l_2\theta\) to the
    gradient: coupled weight decay \(\lambda = 2 l_2\) under SGD.

    >>> l2_as_coupled_weight_decay(5e-4)
    0.001
    """
    return 2.0 * l2


# (optimizer family, how its decay enters) -> EQUILIBRIUM_RULES entry, or absent: no prediction
_EQUILIBRIUM_RULE = {
    ("paper_sgd", "coupled"): "sgd_coupled", ("sgd", "coupled"): "sgd_coupled",
    ("paper_sgd", "decoupled"): "sgd_decoupled", ("sgd", "decoupled"): "sgd_decoupled",
    ("adam", "decoupled"): "adamw", ("lion", "decoupled"): "lion",
}


def equilibrium_rule(family, decay):
    r"""Which rotational equilibrium (`equilibrium_angular_update`'s ``rule``)
    an optimizer family reaches with decay applied ``"coupled"`` (inside the
    gradient/buffer) or ``"decoupled"`` (\(\theta \leftarrow (1 - d)\theta\)); None where no
    prediction is known (math.md#rotational-equilibrium).

    >>> equilibrium_rule("adam", "decoupled")
    'adamw'
    >>> equilibrium_rule("adam", "coupled") is None
    True
    """
    return _EQUILIBRIUM_RULE.get((family, decay))


# family -> (p, q): with parameters stored at scale k, η′ = k^p·η and ε′ = ε/k^q
# (q None: no ε) reproduce the run (math.md#scale-probe).
SCALE_SYMMETRY = {
    "adam": (1, 1),       # Adam, AdamW, Nadam, Adamax: √v scales as 1/k
    "lion": (1, None),    # sign update
    "rmsprop": (1, 2),    # RMSprop, Adagrad: ε sits under the √
    "sgd": (2, None),     # g′ = g/k and Δθ′ = kΔθ
    "lamb": (0, 1),       # the trust ratio ‖w‖/‖u‖ absorbs k
}


def scale_symmetry(family):
    r"""\((p, q)\) for an optimizer family: \(\eta' = k^p\eta\), \(\epsilon' = \epsilon/k^q\) (`SCALE_SYMMETRY`).

    >>> scale_symmetry("sgd")
    (2, None)
    """
    if family not in SCALE_SYMMETRY:
        raise ValueError(f"`family` must be one of {sorted(SCALE_SYMMETRY)}. Received: family={family!r}")
    return SCALE_SYMMETRY[family]


# ---------------------------------------------------------------------------
# Weight-decay conventions: the same number means different decay in each
# library (math.md#new-parameterization). Written once, here.
# ---------------------------------------------------------------------------
WEIGHT_DECAY_CONVENTIONS = (
    "torch_sgd", "torch_adamw", "keras", "optax_adamw", "composer", "independent", "corrected")

# Decoupled conventions: the fraction removed per step is d_t = λ·η_t^a / η_ref^b,
# (a, b, which reference): η_ref the first LR ("initial") or the largest ("peak").
_DECOUPLED = {
    "torch_adamw": (1, 0, None),        # torch.optim.AdamW: θ ← θ − η_t λ θ
    "keras": (1, 0, None),              # keras.optimizers.*(weight_decay=λ): θ ← θ − η_t λ θ
    "optax_adamw": (1, 0, None),        # optax.adamw: update −η_t (u + λθ)
    "composer": (1, 1, "initial"),      # DecoupledSGDW/AdamW: θ ← θ − (η_t/η_0) λ θ
    "independent": (0, 0, None),        # θ ← (1 − λ)θ (ReparamWeightDecay, lr_exponent=0)
    "corrected": (2, 1, "peak"),        # timm corrected_weight_decay / AdamC: λ_t = λ η_t/η_max
}


def check_weight_decay_convention(name, value):
    if value not in WEIGHT_DECAY_CONVENTIONS:
        raise ValueError(
            f"`{name}` must be one of {WEIGHT_DECAY_CONVENTIONS}. Received: {name}={value!r}")
    return value


def _learning_rates(learning_rate):
    """A float (constant LR) or a sequence of per-step LRs η_0, η_1, ... → float64 array."""
    if np.ndim(learning_rate) == 0:
        return np.asarray([check_non_negative("learning_rate", learning_rate)])
    try:
        lrs = np.asarray(learning_rate, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "`learning_rate` must be a number >= 0 or a 1-D sequence of per-step learning "
            f"rates >= 0. Received: learning_rate={learning_rate!r}") from None
    if lrs.ndim != 1 or lrs.size == 0 or not np.all(np.isfinite(lrs)) or np.any(lrs < 0):
        raise ValueError(
            "`learning_rate` must be a number >= 0 or a non-empty 1-D sequence of finite "
            f"per-step learning rates >= 0. Received: learning_rate={learning_rate!r}")
    return lrs


def _reference(convention, lrs, reference_learning_rate):
    which = _DECOUPLED[convention][2]
    if which is None:
        return 1.0
    if reference_learning_rate is not None:
        return check_positive("reference_learning_rate", reference_learning_rate)
    ref = float(lrs[0] if which == "initial" else np.max(lrs))
    if not ref > 0.0:
        raise ValueError(
            f"The {convention!r} convention divides by the {which} learning rate, which is 0 "
            "here: pass `reference_learning_rate` > 0.")
    return ref


def _decay_shape(convention, lrs, reference_learning_rate):
    """f_t with d_t = λ·f_t for a decoupled convention (or torch_sgd without momentum)."""
    if convention == "torch_sgd":
        return lrs.copy()
    a, b, _ = _DECOUPLED[convention]
    ref = _reference(convention, lrs, reference_learning_rate)
    return lrs ** a / ref ** b


def decay_per_step(weight_decay, learning_rate, convention, momentum=0.0, reference_learning_rate=None):
    r"""\(d_t\), the fraction of \(\theta\) each step removes (zero gradient), under `convention`.

    For ``"torch_sgd"`` (coupled L2 in the momentum buffer) with momentum \(\gamma > 0\)
    no per-step fraction exists; this returns the steady-state one,
    \(\eta_t\lambda/(1 - \gamma)\) (the buffer accumulates \(\lambda\theta\) over \(\approx 1/(1 - \gamma)\) steps; the same
    factor equates the rotational equilibria, math.md#rotational-equilibrium).

    >>> [round(float(d), 8) for d in decay_per_step(5e-4, [0.1, 0.05], "composer")]
    [0.0005, 0.00025]
    """
    check_weight_decay_convention("convention", convention)
    lam = check_non_negative("weight_decay", weight_decay)
    gam = check_momentum(momentum)
    lrs = _learning_rates(learning_rate)
    d = lam * _decay_shape(convention, lrs, reference_learning_rate)
    if convention == "torch_sgd":
        d = d / (1.0 - gam)
    return d


def convert_weight_decay(weight_decay, learning_rate, source, target, momentum=0.0,
                         reference_learning_rate=None, approximate=False):
    r"""The `target` convention's weight decay that reproduces `source`'s.

    Conventions (\(\gamma\) the momentum, \(\eta_t\) the LR of step \(t\), \(u_t\) the base update):

    * ``"torch_sgd"``: coupled L2, ``torch.optim.SGD(weight_decay=λ)``:
      \(v \leftarrow \gamma v + g + \lambda\theta\), \(\theta \leftarrow \theta - \eta_t v\).
    * ``"torch_adamw"``, ``"keras"``, ``"optax_adamw"``: decoupled, \(\theta \leftarrow \theta - \eta_t\lambda\theta - \eta_t u_t\)
      (``torch.optim.AdamW``, ``keras.optimizers.AdamW``/``SGD(weight_decay=λ)``,
      ``optax.adamw``).
    * ``"composer"``: \(\theta \leftarrow \theta - (\eta_t/\eta_0)\lambda\theta - \eta_t u_t\) (Composer's DecoupledSGDW/AdamW).
    * ``"independent"``: \(\theta \leftarrow (1 - \lambda)\theta - \eta_t u_t\) (`ReparamWeightDecay`, lr_exponent=0).
    * ``"corrected"``: \(\theta \leftarrow \theta - \eta_t(\lambda\eta_t/\eta_\text{max})\theta - \eta_t u_t\) (timm's
      ``corrected_weight_decay``, AdamC; `ReparamWeightDecay` lr_exponent=2).

    `learning_rate` is a constant LR or the sequence η_0, η_1, ... of the whole
    run (\(\eta_0\) is Composer's reference, \(\max\eta_t\) the corrected rule's, unless
    `reference_learning_rate` is given). The map is exact when the target
    removes the same fraction d_t as the source at every step: always for a
    constant LR between decoupled rules, and for a schedule only between rules
    whose \(d_t\) has the same shape in \(\eta_t\) (torch_adamw = keras = optax_adamw ∝
    composer; independent, corrected only to themselves). ``"torch_sgd"`` with
    momentum 0 is plain SGD with \(d_t = \eta_t\lambda\) (exact to a decoupled rule over the
    same SGD update); with momentum > 0 its decay sits in the buffer and no
    decoupled rule reproduces it. Where no exact map exists this raises
    `NoEquivalentError` with the reason, unless ``approximate=True``: then the
    target gets the same total decay \(\sum_t d_t\) over the given LRs, torch_sgd
    counting \(\eta_t\lambda/(1 - \gamma)\) per step (`decay_per_step`).

    >>> convert_weight_decay(5e-4, 0.1, "torch_adamw", "independent")
    5e-05
    >>> round(convert_weight_decay(5e-4, [0.1, 0.05, 0.01], "keras", "composer"), 12)
    5e-05
    >>> try:
    ...     convert_weight_decay(5e-4, 0.1, "torch_sgd", "keras", momentum=0.9)
    ... except NoEquivalentError as e:
    ...     print(str(e)[:66])
    torch_sgd with momentum=0.9 puts λθ inside the momentum buffer, so
    >>> round(convert_weight_decay(5e-4, 0.1, "torch_sgd", "keras", momentum=0.9, approximate=True), 10)
    0.005
    """
    check_weight_decay_convention("source", source)
    check_weight_decay_convention("target", target)
    lam = check_non_negative("weight_decay", weight_decay)
    gam = check_momentum(momentum)
    lrs = _learning_rates(learning_rate)
    if reference_learning_rate is not None:
        check_positive("reference_learning_rate", reference_learning_rate)
    _check_bool("approximate", approximate)
    if source == target:
        return lam
    coupled = gam > 0.0 and "torch_sgd" in (source, target)
    f_src = _decay_shape(source, lrs, reference_learning_rate)
    f_tgt = _decay_shape(target, lrs, reference_learning_rate)
    d_src = lam * f_src
    if not coupled:
        live = f_tgt > 0.0
        if not np.any(live):
            if np.all(d_src == 0.0):
                return lam
            reason = f"the {target} rule removes nothing at these learning rates (all 0)"
        else:
            cand = d_src[live] / f_tgt[live]
            out = float(cand[0])
            scale = max(abs(out), np.finfo(np.float64).tiny)
            if (np.all(np.abs(cand - out) <= 1e-12 * scale)
                    and np.all(d_src[~live] == 0.0)):
                return out
            reason = (f"{source} removes d_t ∝ {_shape_text(source)} per step and {target} "
                      f"d_t ∝ {_shape_text(target)}: with this learning-rate schedule no single "
                      f"{target} weight decay matches every step")
    else:
        reason = (f"torch_sgd with momentum={gam!r} puts λθ inside the momentum buffer, so its "
                  "decay acts through the buffer over later steps; no decoupled rule (θ ← (1 − d_t)θ "
                  "each step) reproduces it")
    if not approximate:
        raise NoEquivalentError(reason + ". Pass approximate=True for the same total decay.")
    total_src = float(np.sum(d_src / (1.0 - gam if source == "torch_sgd" else 1.0)))
    per_unit = float(np.sum(f_tgt / (1.0 - gam if target == "torch_sgd" else 1.0)))
    if not per_unit > 0.0:
        raise NoEquivalentError(
            f"the {target} rule removes nothing at these learning rates (all 0); no weight decay matches.")
    return total_src / per_unit


def _shape_text(convention):
    if convention == "torch_sgd":
        return "η_t"
    return {(1, 0): "η_t", (1, 1): "η_t/η_0", (0, 0): "1", (2, 1): "η_t²/η_max"}[_DECOUPLED[convention][:2]]


class WeightDecayTimescale(tuple):
    r"""(iterations, epochs): \(\tau = 1/d\), \(d\) the fraction removed per step."""

    __slots__ = ()

    def __new__(cls, iterations, epochs):
        return tuple.__new__(cls, (iterations, epochs))

    iterations = property(lambda self: self[0])
    epochs = property(lambda self: self[1])

    def __repr__(self):
        return f"WeightDecayTimescale(iterations={self[0]!r}, epochs={self[1]!r})"


def weight_decay_timescale(weight_decay, learning_rate, convention="torch_adamw", momentum=0.0,
                           steps_per_epoch=None, reference_learning_rate=None):
    r"""\(\tau\), the EMA timescale of decoupled weight decay: \(\tau_\text{iter} = 1/(\eta\lambda)\) (Wang &
    Aitchison 2024), in iterations and (with `steps_per_epoch`) in epochs.

    Generally \(\tau_\text{iter} = 1/d\) with \(d\) = `decay_per_step` at the constant LR
    `learning_rate` (\(1/\lambda\) for ``"independent"``; \((1 - \gamma)/(\eta\lambda)\) for ``"torch_sgd"``
    with momentum \(\gamma\), its steady-state decay). It is the quantity to keep fixed
    across model and data size; ``inf`` when nothing decays.

    >>> weight_decay_timescale(5e-4, 0.1, "torch_adamw", steps_per_epoch=391)
    WeightDecayTimescale(iterations=20000.0, epochs=51.150895140664964)
    """
    lr = check_non_negative("learning_rate", learning_rate)
    if steps_per_epoch is not None:
        steps_per_epoch = check_steps("steps_per_epoch", steps_per_epoch)
    d = float(decay_per_step(weight_decay, lr, convention, momentum, reference_learning_rate)[0])
    tau = 1.0 / d if d > 0.0 else math.inf
    return WeightDecayTimescale(tau, None if steps_per_epoch is None else tau / steps_per_epoch)


def weight_decay_table(weight_decay, learning_rate, source, momentum=0.0, steps_per_epoch=None,
                       reference_learning_rate=None, approximate=False):
    """One row per convention: what `source`'s setting is in each (`keras-explr convert`).

    Each row is a dict: convention, weight_decay (None where no map exists and
    `approximate` is False), exact (bool), decay_per_step (at the first LR),
    tau_iterations, tau_epochs, note (the reason where not exact).
    """
    check_weight_decay_convention("source", source)
    lrs = _learning_rates(learning_rate)
    rows = []
    for target in WEIGHT_DECAY_CONVENTIONS:
        row = {"convention": target, "weight_decay": None, "exact": False, "decay_per_step": None,
               "tau_iterations": None, "tau_epochs": None, "note": ""}
        try:
            row["weight_decay"] = convert_weight_decay(
                weight_decay, learning_rate, source, target, momentum, reference_learning_rate)
            row["exact"] = True
        except NoEquivalentError as e:
            row["note"] = str(e).split(". Pass approximate")[0]
            if approximate:
                row["weight_decay"] = convert_weight_decay(
                    weight_decay, learning_rate, source, target, momentum, reference_learning_rate,
                    approximate=True)
        if row["weight_decay"] is not None:
            ref = reference_learning_rate
            if ref is None and target in ("composer", "corrected"):
                ref = _reference(target, lrs, None)
            d = float(decay_per_step(row["weight_decay"], lrs[:1], target, momentum, ref)[0])
            row["decay_per_step"] = d
            row["tau_iterations"] = 1.0 / d if d > 0.0 else math.inf
            if steps_per_epoch is not None:
                row["tau_epochs"] = row["tau_iterations"] / check_steps("steps_per_epoch", steps_per_epoch)
        rows.append(row)
    return rows


def equilibrium_gradient_ratio(rule, learning_rate, decay_per_step, momentum=0.0):
    r"""Predicted steady-state \(\lVert g\rVert/\lVert w\rVert\) of a scale-invariant weight under SGD.

    Defazio (2025): without momentum the norm is stationary when
    \((1 - \eta\lambda)^2\lVert w\rVert^2 + \eta^2\lVert g\rVert^2 = \lVert w\rVert^2\) (\(g \perp w\)), so \(\lVert g\rVert/\lVert w\rVert \approx \sqrt{2\lambda/\eta} = \sqrt{2d}/\eta\)
    with \(d = \eta\lambda\) = ``decay_per_step``: the gradient norm rises as the LR decays
    (by \(\sqrt{\eta_\text{before}/\eta_\text{after}}\) at fixed \(\lambda\), by \(\eta_\text{before}/\eta_\text{after}\) for a fixed
    fraction \(d = \lambda_\text{new}\)). With momentum \(\gamma\), the same random-walk model as
    `equilibrium_angular_update` (\(\lVert v\rVert^2 \approx \lVert g\rVert^2/(1 - \gamma^2)\); derived,
    math.md#rotational-equilibrium) gives \(\sqrt{2d(1 - \gamma)}/\eta\) for ``"sgd_coupled"``
    and \(\sqrt{2d}\,(1 - \gamma)/\eta\) for ``"sgd_decoupled"``. Other rules: ValueError.

    >>> round(equilibrium_gradient_ratio("sgd_coupled", 0.1, 0.1 * 5e-4), 6)
    0.1
    """
    if rule not in ("sgd_coupled", "sgd_decoupled"):
        raise ValueError("`rule` must be 'sgd_coupled' or 'sgd_decoupled' (no gradient-norm "
                         f"prediction for adaptive updates). Received: rule={rule!r}")
    lr = check_positive("learning_rate", learning_rate)
    d = check_non_negative("decay_per_step", decay_per_step)
    a = check_momentum(momentum)
    if rule == "sgd_coupled":
        return math.sqrt(2.0 * d * (1.0 - a)) / lr
    return math.sqrt(2.0 * d) * (1.0 - a) / lr


# ---------------------------------------------------------------------------
# Equilibrium-aware training: the timescale parameterization, the time to
# equilibrium, warm-up–stable–decay (math.md#rotational-equilibrium).
# ---------------------------------------------------------------------------
TIMESCALE_UNITS = ("epochs", "steps", "fraction")


def timescale_in_steps(timescale, unit="epochs", steps_per_epoch=None, total_steps=None):
    r"""\(\tau\) in optimizer steps: \(\tau\cdot\)``steps_per_epoch`` (``"epochs"``), \(\tau\) (``"steps"``)
    or \(\tau\cdot\)``total_steps`` (``"fraction"`` of the run).

    >>> timescale_in_steps(5, "epochs", steps_per_epoch=391)
    1955.0
    """
    tau = check_positive("timescale", timescale)
    if unit not in TIMESCALE_UNITS:
        raise ValueError(f"`unit` must be one of {TIMESCALE_UNITS}. Received: unit={unit!r}")
    if unit == "epochs":
        if steps_per_epoch is None:
            raise ValueError("`steps_per_epoch` (an integer >= 1) is needed for unit='epochs'. "
                             "Received: steps_per_epoch=None")
        return tau * check_steps("steps_per_epoch", steps_per_epoch)
    if unit == "fraction":
        if total_steps is None:
            raise ValueError("`total_steps` (an integer >= 1) is needed for unit='fraction'. "
                             "Received: total_steps=None")
        return tau * check_steps("total_steps", total_steps)
    return tau


def weight_decay_from_timescale(timescale, learning_rate, convention="torch_adamw", steps_per_epoch=None,
                                unit="epochs", total_steps=None, momentum=0.0, reference_learning_rate=None):
    r"""\(\lambda\) whose EMA timescale is \(\tau\) (Wang & Aitchison 2024): the inverse of
    `weight_decay_timescale`.

    \(\tau_\text{iter}\) = `timescale_in_steps` (\(\tau\) epochs \(\times\) ``steps_per_epoch``, \(\tau\)
    steps, or \(\tau \times\) ``total_steps`` for unit ``"fraction"``), \(d = 1/\tau_\text{iter}\) the
    fraction removed per step, and \(\lambda = d / f(\eta)\) with \(f\) the convention's decay per unit
    \(\lambda\) at the constant LR \(\eta\) (`decay_per_step`): \(\lambda = 1/(\eta\tau_\text{iter})\) for
    ``"torch_adamw"``, ``"keras"``, ``"optax_adamw"``; \(1/\tau_\text{iter}\) for ``"independent"``
    (\(\lambda_\text{new}\) of `keras_explr.optimizers.ReparamWeightDecay`);
    \((1 - \gamma)/(\eta\tau_\text{iter})\) for ``"torch_sgd"`` with momentum \(\gamma\). With \(\tau\) in
    epochs held fixed, 4\(\times\) the data (4\(\times\) ``steps_per_epoch``) gives exactly \(\lambda/4\).

    >>> weight_decay_from_timescale(51.150895140664964, 0.1, steps_per_epoch=391)
    0.0005
    >>> weight_decay_from_timescale(0.25, 1e-3, unit="fraction", total_steps=4000)
    1.0
    """
    tau_iter = timescale_in_steps(timescale, unit, steps_per_epoch, total_steps)
    lr = check_positive("learning_rate", learning_rate)
    per_unit = float(decay_per_step(1.0, lr, convention, momentum, reference_learning_rate)[0])
    if not per_unit > 0.0:
        raise ValueError(f"The {convention!r} convention removes nothing at learning_rate={learning_rate!r}: "
                         "no weight decay has a finite timescale there.")
    return (1.0 / tau_iter) / per_unit


def equilibration_steps(weight_decay, learning_rate, convention, momentum=0.0, clock=1.0,
                        reference_learning_rate=None):
    r"""The steps a run needs to reach ``clock`` equilibration times (the inverse of
    `equilibration_clock`): the clock is \(\sum_t d_t\), \(d_t\) the fraction of a decayed
    weight removed at step \(t\) (`decay_per_step`; math.md#rotational-equilibrium).

    A constant `learning_rate` gives ``clock``\(/d\) (a float, inf when nothing decays);
    a sequence of per-step LRs (a schedule) gives the first step count \(n\) with
    \(\sum_{t<n} d_t \ge\) ``clock``, or None when the sequence never gets there.

    >>> equilibration_steps(5e-4, 0.1, "torch_adamw")
    20000.0
    >>> equilibration_steps(0.01, [0.1] * 50 + [0.01] * 100, "composer", clock=0.6)
    150
    """
    c = check_non_negative("clock", clock)
    d = decay_per_step(weight_decay, learning_rate, convention, momentum, reference_learning_rate)
    if np.ndim(learning_rate) == 0:
        d0 = float(d[0])
        return c / d0 if d0 > 0.0 else (0.0 if c == 0.0 else math.inf)
    total = np.cumsum(d)
    reached = np.nonzero(total >= c * (1.0 - 1e-12))[0]
    if c == 0.0:
        return 0
    return int(reached[0]) + 1 if reached.size else None




WSD_DECAYS = _WSD_DECAYS  # the decay shapes of warm-up–stable–decay (checked by `check_wsd`)


def wsd_learning_rates(steps, peak_learning_rate, warmup_steps, stable_steps, decay_steps,
                       decay="linear", final_learning_rate=0.0):
    r"""Warm-up–stable–decay (MiniCPM; Hägele et al. 2024) at integer `steps`, float64.

    With \(W, S, D\) the warm-up, stable and decay steps (Keras's `CosineDecay`
    warm-up convention): \(\eta_t = \eta_\text{peak}\,t/W\) for \(t < W\) (from 0), \(\eta_\text{peak}\) for
    \(W \le t \le W + S\), then with \(u = (t - W - S)/D \in [0, 1]\)
    \(\eta_t = \eta_f + (\eta_\text{peak} - \eta_f)\,s(u)\), \(s(u) = 1 - u\) (``"linear"``),
    \((1 + \cos \pi u)/2\) (``"cosine"``) or \(1 - \sqrt{u}\) (``"1-sqrt"``); \(\eta_t = \eta_f\) from step
    \(W + S + D\) on.

    >>> [float(x) for x in wsd_learning_rates(range(8), 1.0, 2, 2, 2)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    """
    peak, warm, stable, dec, decay, final = check_wsd(
        peak_learning_rate, warmup_steps, stable_steps, decay_steps, decay, final_learning_rate)
    t = np.floor(np.asarray(steps, dtype=np.float64))
    out = np.full(t.shape, peak)
    if warm:
        out = np.where(t < warm, peak * np.maximum(t, 0.0) / warm, out)
    k = np.clip(t - warm - stable, 0.0, dec)
    s = wsd_shape(decay, k / dec, (dec - k) / dec) if dec else np.zeros(t.shape)
    return np.where(t > warm + stable, final + (peak - final) * s, out)


def wsd_shape(decay, u, v, sin=np.sin, sqrt=np.sqrt, half_angle=None):
    r"""\(s(u)\) of a WSD decay, 1 at \(u = 0\) and 0 at \(u = 1\), given \(u\) and \(v = 1 - u\) (each
    exact from integers): \(v\) (``"linear"``), \(\sin^2(\pi v/2) = (1 + \cos \pi u)/2\) (``"cosine"``),
    \(v/(1 + \sqrt{u}) = 1 - \sqrt{u}\) (``"1-sqrt"``), written so that no value near the end of the
    decay is a difference of nearly equal numbers. `sin`, `sqrt`: numpy's, or
    `keras.ops`' for tensors (`keras_explr.schedules.WarmupStableDecay`);
    `half_angle`: \(\pi v/2\) if the caller forms it with fewer roundings.

    >>> [round(float(wsd_shape(d, 0.25, 0.75)), 6) for d in WSD_DECAYS]
    [0.75, 0.853553, 0.5]
    """
    if decay == "linear":
        return v
    if decay == "cosine":
        h = sin((np.pi / 2.0) * v if half_angle is None else half_angle)
        return h * h
    return v / (1.0 + sqrt(u))
