r"""Exponential learning-rate schedules that are exactly equivalent to weight decay.

Li & Arora (ICLR 2020): for a loss that is scale-invariant in the weights \(\theta\)
(every kernel followed by BatchNorm, LayerNorm or GroupNorm, head fixed), SGD
with momentum \(\gamma\), weight decay \(\lambda\) and learning rate \(\eta_t\) produces the same
networks as SGD with momentum \(\gamma\), no weight decay and the learning rate
\(\tilde\eta_t = \eta_t c_t c_{t+1}\), where \(\tilde\theta_t = c_t\theta_t\). All math is in
`keras_explr.theory`; the classes here are thin Keras faces over it.

Every schedule is a piecewise log-linear function of the step
(`keras_explr.theory.Pieces`), evaluated in log space on one of three paths
(docs/math.md#float-range). A float64 model whose device computes in float64
takes float64 tensor ops. Any other model (float32, bfloat16, mixed precision,
TPU, JAX without x64) takes float32 arithmetic only: double-float pairs, the
integer step split into float32-exact parts and exact products
(`keras_explr._float32`), within 2 float32 ulp of theory's float64 value
(measured: ≤ 0.53 ulp up to the float32 horizon), so a compiled step holds no
64-bit float. Eager PyTorch, which compiles nothing, reads the step on the host
instead and rounds theory's float64 value once (≤ 0.5 ulp); under
torch.compile the tensor paths above are kept. `keras_explr._precision` owns
that choice and the three evaluators; `_PiecewiseLogLinear.scaled` is the one
seam through which `Renormalize` and `ScaledSchedule` reach it. The result has the dtype
``keras.config.floatx()``. Past the point where the learning
rate would overflow that dtype the schedule saturates at the largest finite
value instead of returning inf; the WD equivalence ends there.
A declared ``total_steps`` past that horizon is rejected at construction.

Units. A *step* is one real optimizer update. ``total_steps`` is always in
steps; `TEXP`'s ``boundaries`` are in steps, or in epochs when
``steps_per_epoch`` is given (boundary epoch \(e\) ↦ step \(e\cdot\mathrm{steps\_per\_epoch} - 1\),
`PiecewiseConstantDecay`'s meaning). Under gradient accumulation, Keras calls a
schedule with its micro-step counter; ``gradient_accumulation_steps=n`` on a
schedule makes it count real updates (floor(step / n)) for a stock Keras
optimizer built with the same ``gradient_accumulation_steps=n``.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_explr import _precision, theory

_SERIALIZABLE = "keras_explr"


class _PiecewiseLogLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Evaluates a `theory.Pieces` schedule with `keras.ops` (any backend, jit), on the
    path the precision policy (`keras_explr._precision`) picks."""

    def __init__(self, pieces, total_steps=None, momentum=None, name=None,
                 gradient_accumulation_steps=None):
        super().__init__()
        self.name = name
        self.momentum = momentum
        self.gradient_accumulation_steps = theory.check_accumulation(gradient_accumulation_steps)
        self._pieces = pieces
        self._evaluator = _precision.Evaluator(pieces, self.gradient_accumulation_steps, name)
        self.float32_horizon = pieces.horizon()
        self.total_steps = None
        if total_steps is not None:
            self.total_steps = theory.check_steps("total_steps", total_steps)
            horizon = _precision.horizon_for_floatx(pieces)
            if horizon is not None and self.total_steps > horizon:
                raise ValueError(
                    f"`total_steps`={self.total_steps} is past this schedule's "
                    f"{keras.config.floatx()} horizon: the learning rate exceeds "
                    f"the largest {keras.config.floatx()} value at step {horizon}. "
                    f"Valid range: total_steps <= {horizon}. Remedies: train the "
                    "equivalent run with weight decay instead, lower "
                    "learning_rate * weight_decay, train in float64, or "
                    "renormalize the scale-invariant weights periodically "
                    "(math.md#equivalent-rescaling)."
                )

    def learning_rates(self, steps):
        """The schedule at `steps` as a float64 numpy array (no saturation).

        `steps` mean what the optimizer passes to ``__call__``: micro-steps
        when ``gradient_accumulation_steps`` is set.
        """
        return self._pieces.learning_rate(
            theory.accumulated_step(np.asarray(steps), self.gradient_accumulation_steps))

    def __call__(self, step):
        return self._evaluator(step)

    def scaled(self, step, log_scale=None, power=1, factor=None):
        """The LR at `step` times exp(power · log_scale), formed in log space, then
        times ``factor`` in the output dtype; saturated, never inf.

        `keras_explr.optimizers.Renormalize` divides the LR by S² after
        rescaling the weights by 1/S; adding −2 log S *before* the exp keeps
        the LR finite however far the unscaled schedule would overflow.
        `ScaledSchedule` passes ``factor``. ``log_scale``: a tensor, a number
        or a (hi, lo) pair; ``power``: an exact multiplier of it (±1, ±2).
        """
        return self._evaluator(step, log_scale, power, factor)

    def _traced(self, step, log_scale, out_dtype):
        """`scaled` with tensor ops only (the float64 or double-float path)."""
        return self._evaluator.traced(step, log_scale, out_dtype)

    @property
    def _host_cache(self):
        return self._evaluator.host.cache


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class ExpLR(_PiecewiseLogLinear):
    r"""Exponentially growing learning rate: \(\tilde\eta_t = \tilde\eta_0\, r^t\).

    The generic form, ``ExpLR(initial_learning_rate, growth_rate)``, evaluates
    \(\exp(\log\tilde\eta_0 + t\log r)\) in log space (float64 or double-float float32, see
    the module docstring). Build the schedule that is equivalent to
    a weight-decay run with `ExpLR.from_weight_decay`.

    Args:
      initial_learning_rate (float): \(\tilde\eta_0 > 0\).
      growth_rate (float): \(r > 0\), the factor per optimizer step (real update).
      total_steps (int | None): optional number of steps (real updates; epochs × steps per
        epoch) you will train; rejected if the learning rate would overflow
        float32 (float64 under a float64 floatx) before then.
      name (str): optional name.
      gradient_accumulation_steps (int | None): None (default), or the n of a stock Keras
        optimizer built with ``gradient_accumulation_steps=n``: Keras calls the
        schedule with its micro-step counter, and this makes the schedule
        evaluate at floor(step / n), the number of real updates. Leave it None
        with `keras_explr.optimizers`, which pass real updates themselves.

    Attributes:
      momentum (float | None): the momentum to give the optimizer for the equivalence
        (None for the generic form).
      float32_horizon (int | None): the first step whose LR exceeds float32's max, or None.

    Example:

    >>> import keras, keras_explr
    >>> lr = keras_explr.schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9)
    >>> opt = keras_explr.optimizers.SGD(lr, momentum=lr.momentum)
    >>> # Same networks as SGD(0.1, momentum=0.9, weight_decay=5e-4) on a
    >>> # scale-invariant loss, step for step.
    """

    def __init__(self, initial_learning_rate, growth_rate, total_steps=None, name="ExpLR",
                 gradient_accumulation_steps=None):
        eta0 = theory.check_positive("initial_learning_rate", initial_learning_rate)
        rate = theory.check_positive("growth_rate", growth_rate)
        pieces = theory.Pieces((0,), (np.zeros(0),), (math.log(eta0),), (math.log(rate),))
        super().__init__(pieces, total_steps=total_steps, name=name,
                         gradient_accumulation_steps=gradient_accumulation_steps)
        self.initial_learning_rate = eta0
        self.growth_rate = rate
        self._origin = None

    @classmethod
    def from_weight_decay(
        cls,
        learning_rate,
        weight_decay,
        momentum,
        exact=True,
        convention="paper",
        steps_per_epoch=None,
        total_steps=None,
        weight_decay_mode="coupled",
        name="ExpLR",
        gradient_accumulation_steps=None,
    ):
        r"""The ExpLR that reproduces SGD with constant LR η, weight decay λ, momentum γ.

        Theorem 1.1 of Li & Arora: \(\tilde\eta_t = \eta\,\alpha_+^{-2t-1}\), \(\alpha_+\) the larger root of
        \(x^2 - (1+\gamma-\lambda\eta)x + \gamma = 0\); \(\tilde\theta_t = \alpha_+^{-t}\theta_t\). Requires \(\lambda\eta \le (1-\sqrt{\gamma})^2\).

        Args:
          learning_rate, weight_decay, momentum (float): the weight-decay run's \(\eta\), \(\lambda\), \(\gamma\).
          exact (bool): True (default) reproduces the weight-decay run started from
            zero momentum buffers, which is what Keras does, to float64
            round-off: \(\tilde\eta_t = \eta\, c_t c_{t+1}\) from the recurrence of math.md#zero-buffers.
            False gives the paper's closed form, which from zero buffers acts
            like the WD run with a permanent +0.92 % effective LR at
            \(\eta = 0.1\), \(\lambda = 5\times 10^{-4}\), \(\gamma = 0.9\) (its first LR is \(\eta/\alpha_+\) instead of \(\eta/(1-\eta\lambda)\)).
          convention (str): "paper" for `keras_explr.optimizers.SGD` (buffer of
            gradients, coupled \(\lambda\), as in `torch.optim.SGD`); "keras" for
            `keras.optimizers.SGD`, whose buffer stores displacements.
          steps_per_epoch (int | None): optional integer >= 1, real updates per epoch (with
            gradient accumulation n over B batches: ceil(B / n)); sets
            `growth_per_epoch` = growth_rate ** steps_per_epoch. It does not
            change the schedule, which is always indexed by steps.
          total_steps (int | None): optional, in steps (epochs × steps_per_epoch);
            rejected past the float32 horizon.
          weight_decay_mode (str): "coupled" (\(\lambda\theta\) in the gradient: the paper, or an L2
            penalty \(\frac{\lambda}{2}\lVert\theta\rVert^2\)) or "decoupled" (\(\theta \leftarrow (1-\eta\lambda)\theta\) before the momentum
            step: Keras's own ``weight_decay`` argument, or
            `keras_explr.optimizers.ReparamWeightDecay` with \(\lambda_\text{new} = \eta\lambda\)); the
            decoupled twin is exact from zero buffers in both conventions.
          name (str): optional name.
          gradient_accumulation_steps (int | None): see the class docstring (for a stock
            Keras optimizer with ``gradient_accumulation_steps=n``).

        Returns:
          (ExpLR): the schedule; pass ``schedule.momentum`` to the optimizer.

        Raises:
          ValueError: bad arguments, \(\lambda\eta\) beyond the real-root bound, or (with
            convention="keras", coupled, exact=True) no constant Keras momentum
            that is exact; the message names the alternatives.
        """
        pieces, target_momentum = theory.explr_equivalent(
            learning_rate, weight_decay, momentum, exact=exact,
            convention=convention, weight_decay_mode=weight_decay_mode)
        spe = None if steps_per_epoch is None else theory.check_steps(
            "steps_per_epoch", steps_per_epoch)
        self = cls.__new__(cls)
        _PiecewiseLogLinear.__init__(
            self, pieces, total_steps=total_steps, momentum=target_momentum, name=name,
            gradient_accumulation_steps=gradient_accumulation_steps)
        self.initial_learning_rate = float(np.exp(pieces.log_learning_rate(0)))
        self.growth_rate = math.exp(pieces.slopes[-1])
        self._origin = {
            "learning_rate": float(learning_rate),
            "weight_decay": float(weight_decay),
            "momentum": float(momentum),
            "exact": bool(exact),
            "convention": convention,
            "steps_per_epoch": spe,
            "weight_decay_mode": weight_decay_mode,
        }
        return self

    @property
    def growth_per_epoch(self):
        """The asymptotic LR factor per epoch (needs ``steps_per_epoch``)."""
        spe = (self._origin or {}).get("steps_per_epoch")
        return None if spe is None else self.growth_rate ** spe

    def get_config(self):
        base = {"total_steps": self.total_steps, "name": self.name,
                "gradient_accumulation_steps": self.gradient_accumulation_steps}
        if self._origin is None:
            return {"initial_learning_rate": self.initial_learning_rate,
                    "growth_rate": self.growth_rate, **base}
        return {**self._origin, **base}

    @classmethod
    def from_config(cls, config):
        if "weight_decay" in config:
            return cls.from_weight_decay(**config)
        return cls(**config)


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class TEXP(_PiecewiseLogLinear):
    r"""Tapered exponential LR: the WD-free twin of step decay with weight decay.

    ``boundaries`` and ``values`` mean what they mean in
    `keras.optimizers.schedules.PiecewiseConstantDecay`: the base LR is
    ``values[0]`` for steps ≤ ``boundaries[0]``, ``values[1]`` up to
    ``boundaries[1]``, and so on; phase \(I\) starts at \(T_I\) = ``boundaries[I−1] + 1``.
    With ``steps_per_epoch=S`` the boundaries are epochs instead: ``values[0]``
    for the first ``boundaries[0]`` epochs, and so on; boundary epoch \(e\) ↦ step
    \(eS - 1\) (`theory.epoch_boundaries`), so phase \(I\) starts at step
    ``boundaries[I−1]·S``, the first step of that epoch.

    exact=False is the paper's TEXP (math.md#texp): with \(\alpha^*_I = \alpha_+(\eta_I, \lambda, \gamma)\),
    \(\tilde\eta_0 = \eta_0/\alpha^*_0\), \(\tilde\eta_t = \tilde\eta_{t-1}/{\alpha^*_I}^2\) inside phase \(I\) and
    \(\tilde\eta_{T_I} = \tilde\eta_{T_I-1}(\eta_I/\eta_{I-1})/(\alpha^*_{I-1}\alpha^*_I)\) at a boundary. It matches
    step decay up to the initial-buffer effect (a factor 0.9909 on the LR at
    \(\eta\) = 0.1 → 0.01 → 0.001, \(\lambda = 5\times 10^{-4}\), \(\gamma = 0.9\)) and boundary corrections \(\kappa_I \approx -2\times 10^{-7}\)
    (`theory.texp_corrections`).

    exact=True (default) is TEXP-exact (math.md#exact-twin-of-any-schedule): the zero-buffer
    recurrence, bitwise-faithful in function space to
    ``keras_explr.optimizers.SGD(PiecewiseConstantDecay(boundaries, values),
    momentum, weight_decay)`` run from zero buffers.

    Note: `PiecewiseConstantDecay` turns Python-float values into float32
    tensors (0.1 becomes 0.10000000149). Give it ``np.float64`` values, or
    use `EquivalentSchedule`, which reads the values your schedule returns,
    when you compare runs at float64 round-off.

    Args:
      boundaries (Sequence[int]): strictly increasing integers: steps (≥ 0), or epochs (≥ 1)
        when ``steps_per_epoch`` is given.
      values (Sequence[float]): the learning rates, ``len(boundaries) + 1`` of them.
      weight_decay (float): coupled \(\lambda \ge 0\) (as in `keras_explr.optimizers.SGD`).
      momentum (float): \(\gamma\) in [0, 1); also the momentum to use with this schedule.
      exact (bool): see above.
      total_steps (int | None): optional, in steps (not epochs) even with
        ``steps_per_epoch``; rejected past the float32 horizon.
      name (str): optional name.
      steps_per_epoch (int | None): optional integer ≥ 1, real updates per epoch; makes
        ``boundaries`` epochs. With gradient accumulation n over B batches per
        epoch, that is ceil(B / n).
      gradient_accumulation_steps (int | None): None, or the n of a stock Keras optimizer
        built with ``gradient_accumulation_steps=n`` (see `ExpLR`).

    Attributes:
      boundaries (list[int]): as given (steps or epochs).
      step_boundaries (list[int]): in steps.

    Example:

    >>> import keras_explr
    >>> lr = keras_explr.schedules.TEXP([80, 120], [0.1, 0.01, 0.001], weight_decay=5e-4,
    ...                                 momentum=0.9, steps_per_epoch=391)
    >>> lr.step_boundaries       # the same as TEXP([31279, 46919], ...) in steps
    [31279, 46919]
    >>> opt = keras_explr.optimizers.SGD(lr, momentum=lr.momentum)
    """

    def __init__(self, boundaries, values, weight_decay, momentum, exact=True,
                 total_steps=None, name="TEXP", steps_per_epoch=None,
                 gradient_accumulation_steps=None):
        given = boundaries
        if steps_per_epoch is not None:
            boundaries = theory.epoch_boundaries(boundaries, steps_per_epoch)
        pieces = theory.texp_pieces(boundaries, values, weight_decay, momentum, exact=exact)
        boundaries, values = theory.check_boundaries(boundaries, values)
        super().__init__(pieces, total_steps=total_steps,
                         momentum=theory.check_momentum(momentum), name=name,
                         gradient_accumulation_steps=gradient_accumulation_steps)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.boundaries = boundaries if steps_per_epoch is None else [int(e) for e in given]
        self.step_boundaries = boundaries
        self.values = values
        self.weight_decay = float(weight_decay)
        self.exact = bool(exact)

    def get_config(self):
        return {
            "boundaries": list(self.boundaries),
            "values": list(self.values),
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "exact": self.exact,
            "total_steps": self.total_steps,
            "name": self.name,
            "steps_per_epoch": self.steps_per_epoch,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class EquivalentSchedule(_PiecewiseLogLinear):
    r"""The exact WD-free twin of any learning-rate schedule with weight decay.

    Given the base run ``keras_explr.optimizers.SGD(schedule, momentum=γ,
    weight_decay=λ)`` from zero buffers, this schedule with
    ``keras_explr.optimizers.SGD(twin, momentum=twin.momentum)`` and no weight
    decay produces the same networks on a scale-invariant loss (math.md#exact-twin-of-any-schedule):
    \(\rho_t = \eta_t/\eta_{t-1}\), \(q_1 = 1 - \eta_0\lambda\), \(q_{t+1} = 1 + \gamma\rho_t - \eta_t\lambda - \gamma\rho_t/q_t\),
    \(c_{t+1} = c_t/q_{t+1}\), \(\tilde\eta_t = \eta_t c_t c_{t+1}\).

    Warm-up from zero is exact too. A zero-LR step moves nothing but puts
    \(g_t + \lambda\theta_t\) into the base's buffer. The twin takes \(\tilde\eta_t = 0\) at that step
    (it stands still too and buffers \(g_t/c_t\)); the radial part \(\lambda\theta_t\), which
    lies along \(\theta\), is carried by the state \(h_t\) of `theory.paper_state_step`
    (twin buffer \((v_t + h_t\theta_t)/c_t\)) into the later steps' \(q_{t+1}\), i.e.
    their LRs: \(q_{t+1} = 1 - \eta_t\lambda + \gamma\eta_t h_t\), \(h_{t+1} = (\gamma h_t/q_{t+1} - \lambda)/(1 - \eta_t\lambda)\).
    The momentum stays \(\gamma\). (This is the same recurrence; the \(\rho_t\) form above
    only cannot be written when \(\eta_{t-1} = 0\).)

    The base schedule is read once, at construction, for steps
    0..total_steps−1, exactly as the optimizer would see it (float32 values of
    Keras's built-in schedules included). Past ``total_steps`` the base LR is
    taken to stay at its last value, as `CosineDecay` does after
    ``decay_steps``, and the twin keeps growing geometrically.

    Args:
      schedule (LearningRateSchedule | float | Sequence[float]): a `LearningRateSchedule` (e.g. `CosineDecay` with warm-up,
        from 0 or not), a float > 0, or a sequence of ``total_steps`` per-step
        learning rates ≥ 0.
      weight_decay (float): coupled \(\lambda \ge 0\).
      momentum (float): \(\gamma\) in [0, 1); the twin's `momentum` is the same \(\gamma\).
      total_steps (int): how many steps (real updates, i.e. epochs × steps per
        epoch) to read from `schedule`; `schedule` is called with 0..total_steps−1.
      name (str): optional name.
      gradient_accumulation_steps (int | None): None, or the n of a stock Keras optimizer
        built with ``gradient_accumulation_steps=n`` (see `ExpLR`).

    Example:

    >>> import keras, keras_explr
    >>> base = keras.optimizers.schedules.CosineDecay(
    ...     0.0, decay_steps=900, warmup_target=0.1, warmup_steps=100)
    >>> twin = keras_explr.schedules.EquivalentSchedule(base, 5e-4, 0.9, total_steps=1000)
    >>> float(twin.learning_rates(0)), twin.momentum   # stands still at step 0, as the base does
    (0.0, 0.9)
    >>> opt = keras_explr.optimizers.SGD(twin, momentum=twin.momentum)
    """

    def __init__(self, schedule, weight_decay, momentum, total_steps, name="EquivalentSchedule",
                 gradient_accumulation_steps=None):
        n = theory.check_steps("total_steps", total_steps)
        theory.check_accumulation(gradient_accumulation_steps)
        lrs = _read_schedule(schedule, n)
        pieces = theory.dense_pieces(lrs, weight_decay, momentum)
        super().__init__(pieces, total_steps=n,
                         momentum=theory.check_momentum(momentum), name=name,
                         gradient_accumulation_steps=gradient_accumulation_steps)
        self.schedule = schedule
        self.weight_decay = float(weight_decay)
        self.base_learning_rates = lrs

    def get_config(self):
        if isinstance(self.schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.optimizers.schedules.serialize(self.schedule)
        elif np.ndim(self.schedule) == 0:
            schedule = float(self.schedule)
        else:
            schedule = [float(x) for x in self.base_learning_rates]
        return {
            "schedule": schedule,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "total_steps": self.total_steps,
            "name": self.name,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    r"""Warm-up–stable–decay (WSD; MiniCPM, Hägele et al. 2024): linear warm-up from 0,
    a long constant phase, then a short decay.

    With \(W, S, D\) = ``warmup_steps``, ``stable_steps``, ``decay_steps``
    (`keras_explr.theory.wsd_learning_rates`): \(\eta_t = \eta_\text{peak}\,t/W\) for \(t < W\),
    \(\eta_\text{peak}\) for \(W \le t \le W + S\), then, with \(u = (t - W - S)/D\),
    \(\eta_t = \eta_f + (\eta_\text{peak} - \eta_f)\,s(u)\), \(s(u) = 1 - u\) (``"linear"``),
    \((1 + \cos \pi u)/2\) (``"cosine"``) or \(1 - \sqrt{u}\) (``"1-sqrt"``), and \(\eta_f\) from step
    \(W + S + D\) on. Each shape is evaluated in a form with no cancellation near
    the end of the decay (`theory.wsd_shape`), from integer step offsets, so
    the float32 value is within a few ulp of theory's float64 one on every
    backend, with no 64-bit float in a compiled step; eager PyTorch rounds
    theory's value once (the precision policy, `keras_explr._precision`).

    Its exact weight-decay-free twin is
    ``EquivalentSchedule(WarmupStableDecay(...), weight_decay, momentum, total_steps)``.

    Args:
      peak_learning_rate (float): \(\eta_\text{peak} > 0\).
      warmup_steps, stable_steps, decay_steps (int): integers \(\ge 0\) (steps: real updates).
      decay (str): "linear", "cosine" or "1-sqrt".
      final_learning_rate (float): \(\eta_f\) in \([0, \eta_\text{peak}]\).
      name (str): optional name.

    Example:

    >>> import keras_explr
    >>> lr = keras_explr.schedules.WarmupStableDecay(0.1, warmup_steps=100, stable_steps=800,
    ...                                              decay_steps=100, decay="1-sqrt")
    >>> [round(float(x), 6) for x in lr.learning_rates([50, 500, 950, 1000])]
    [0.05, 0.1, 0.029289, 0.0]
    >>> twin = keras_explr.schedules.EquivalentSchedule(lr, 5e-4, 0.9, total_steps=1001)
    >>> opt = keras_explr.optimizers.SGD(twin, momentum=twin.momentum)
    """

    def __init__(self, peak_learning_rate, warmup_steps, stable_steps, decay_steps, decay="linear",
                 final_learning_rate=0.0, name="WarmupStableDecay"):
        (self.peak_learning_rate, self.warmup_steps, self.stable_steps, self.decay_steps,
         self.decay, self.final_learning_rate) = theory.check_wsd(
            peak_learning_rate, warmup_steps, stable_steps, decay_steps, decay, final_learning_rate)
        self.name = name

    def learning_rates(self, steps):
        """theory's float64 values at `steps` (numpy)."""
        return theory.wsd_learning_rates(steps, **self._args())

    def _args(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps,
                "stable_steps": self.stable_steps, "decay_steps": self.decay_steps,
                "decay": self.decay, "final_learning_rate": self.final_learning_rate}

    def __call__(self, step):
        out_dtype = keras.config.floatx()
        if _precision.on_host():  # eager PyTorch: theory's value, rounded once
            t = _precision.host_read(step)
            value = _precision.saturate_to(self.learning_rates(t), out_dtype)
            return _precision.host_tensor(value, _precision.torch_tensor(step))
        dtype = _precision.compute_dtype()
        with keras.name_scope(self.name or "schedule"):
            t = _precision.int_step(step)
            w, s, d = self.warmup_steps, self.stable_steps, self.decay_steps
            peak = ops.convert_to_tensor(self.peak_learning_rate, dtype)
            final = ops.convert_to_tensor(self.final_learning_rate, dtype)
            lr = peak
            if d:
                k = ops.clip(t - (w + s), 0, d)  # integer: exact
                u = ops.cast(k, dtype) / float(d)
                v = ops.cast(d - k, dtype) / float(d)
                half_angle = ops.cast(d - k, dtype) * (math.pi / (2.0 * d))  # one rounding of the product
                shape = theory.wsd_shape(self.decay, u, v, sin=ops.sin, sqrt=ops.sqrt, half_angle=half_angle)
                lr = ops.where(ops.greater(t, w + s), final + (peak - final) * shape, lr)
            else:
                lr = ops.where(ops.greater(t, w + s), final, lr)
            if w:
                warm = peak * ops.cast(ops.maximum(t, 0), dtype) / float(w)
                lr = ops.where(ops.less(t, w), warm, lr)
            return ops.cast(lr, out_dtype)

    def get_config(self):
        return {**self._args(), "name": self.name}


def _read_schedule(schedule, n):
    """The base learning rates at steps 0..n−1, as float64 numpy."""
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        try:  # Most schedules accept a vector of steps ...
            lrs = ops.convert_to_numpy(schedule(ops.arange(n, dtype="int32")))
            lrs = np.asarray(lrs, dtype=np.float64)
            if lrs.shape != (n,):
                raise ValueError
        except Exception:  # noqa: BLE001 (any failure: some, like CosineDecay's warm-up `cond`, need one at a time)
            lrs = None
            call = schedule
            if keras.backend.backend() == "tensorflow":  # 3× faster than eager, same values
                import tensorflow as tf

                call = tf.function(schedule, input_signature=[tf.TensorSpec((), tf.int64)])
            elif keras.backend.backend() == "jax":  # eager `cond` costs ~80 ms a step on JAX
                import jax

                try:  # vmap turns the cond into a select of the two branches' values
                    lrs = np.asarray(jax.jit(jax.vmap(schedule))(np.arange(n, dtype=np.int32)), np.float64)
                except Exception:  # noqa: BLE001 (a schedule vmap cannot trace runs one step at a time)
                    call = jax.jit(schedule)
            if lrs is None or lrs.shape != (n,):
                lrs = np.array([float(ops.convert_to_numpy(call(ops.convert_to_tensor(i, "int64"))))
                                for i in range(n)])
    elif np.ndim(schedule) == 0:
        lrs = np.full(n, theory.check_positive("schedule", schedule))
    else:
        lrs = np.asarray(schedule, dtype=np.float64)
        if lrs.shape != (n,):
            raise ValueError(
                "`schedule` given as a sequence must have exactly total_steps="
                f"{n} entries; received shape {lrs.shape}"
            )
    bad = ~(np.isfinite(lrs) & (lrs >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            "`schedule` must give a finite learning rate >= 0 at every step "
            f"0..total_steps-1; at step {i} it gives {float(lrs[i])!r}."
        )
    return lrs


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``factor · schedule(step)``: a schedule's values times a constant.

    `equivalent_optimizer` uses it for the learning rate of the rescaled run.
    The product is computed in the schedule's output dtype; a power-of-two
    factor is exact.
    """

    def __init__(self, schedule, factor):
        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                "`schedule` must be a keras.optimizers.schedules.LearningRateSchedule. "
                f"Received: schedule={schedule!r}")
        self.schedule = schedule
        self.factor = theory.check_positive("factor", factor)

    def __call__(self, step):
        if isinstance(self.schedule, _PiecewiseLogLinear):  # the precision policy's seam
            return self.schedule.scaled(step, factor=self.factor)
        return _precision.times_factor(self.schedule(step), self.factor)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(keras.saving.deserialize_keras_object(config.pop("schedule")), **config)
