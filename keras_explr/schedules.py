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
torch.compile the tensor paths above are kept. The result has the dtype
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

import functools
import math

import keras
import numpy as np
from keras import ops

from keras_explr import _float32, theory

_SERIALIZABLE = "keras_explr"


def _compute_dtype():
    """"float64" where the model is float64 and the device computes in it, else
    "float32": double-float arithmetic (`keras_explr._float32`), float64-grade
    values without a 64-bit float in the compiled step (TPUs have none)."""
    if keras.config.floatx() != "float64":
        return "float32"
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "float64" if jax.config.read("jax_enable_x64") else "float32"
    if backend == "tensorflow":
        import tensorflow as tf

        if "TPU" in type(tf.distribute.get_strategy()).__name__:
            return "float32"  # TPUs have no float64.
    return "float64"


def _int_step(step):
    """The step as an integer tensor (a float step is floored), exactly; a step past
    what the widest integer available holds (int64; int32 on JAX without x64) is
    clamped to its largest value, where every schedule here has long saturated
    (a cast would wrap it to a negative or small step)."""
    wide = keras.backend.backend() != "jax" or _compute_dtype() == "float64"
    idt, top = ("int64", 2 ** 63 - 1) if wide else ("int32", 2 ** 31 - 1)
    if isinstance(step, (int, float, np.integer, np.floating)):  # a number: clamped on the host
        step = float(np.clip(np.floor(step), -top - 1, np.nextafter(float(top) + 1.0, 0.0)))
        return ops.convert_to_tensor(int(step), idt)
    t = ops.convert_to_tensor(step)
    if "int" not in str(t.dtype):
        fdt = np.dtype(keras.backend.standardize_dtype(t.dtype))
        hi = np.nextafter(np.asarray(float(top) + 1.0, fdt), np.asarray(0.0, fdt))  # largest below 2^63 (2^31)
        t = ops.cast(ops.clip(ops.floor(t), -float(top) - 1.0, float(hi)), idt)
    return t


def _horizon_for_floatx(pieces):
    if keras.config.floatx() == "float64":
        return pieces.horizon(math.log(float(np.finfo(np.float64).max)))
    return pieces.horizon()


class _PiecewiseLogLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Evaluates a `theory.Pieces` schedule with `keras.ops` (any backend, jit)."""

    def __init__(self, pieces, total_steps=None, momentum=None, name=None,
                 gradient_accumulation_steps=None):
        super().__init__()
        self.name = name
        self.momentum = momentum
        self.gradient_accumulation_steps = theory.check_accumulation(gradient_accumulation_steps)
        self._pieces = pieces
        flat, offsets = pieces.flat_table()
        self._arrays = {
            "starts": np.asarray(pieces.starts, dtype=np.float64),
            "lens": np.asarray([len(x) for x in pieces.tables], dtype=np.float64),
            "offsets": offsets,
            "intercepts": np.asarray(pieces.intercepts, dtype=np.float64),
            "slopes": np.asarray(pieces.slopes, dtype=np.float64),
            "flat": flat,
        }
        self._single = len(pieces.starts) == 1 and len(pieces.tables[0]) == 0
        # The float32 (double-float) path: pairs for the logs, 12-bit splits of the slopes.
        flat_hi, flat_lo = _float32.split_pair(flat)
        icpt_hi, icpt_lo = _float32.split_pair(pieces.intercepts)
        slope_a, slope_b, slope_c = _float32.split_constant(pieces.slopes)
        lens = np.asarray([len(x) for x in pieces.tables], dtype=np.int64)
        starts = np.asarray(pieces.starts, dtype=np.int64)
        self._arrays32 = {
            "icpt_hi": icpt_hi, "icpt_lo": icpt_lo, "slope_a": slope_a, "slope_b": slope_b, "slope_c": slope_c,
            "starts": starts, "flat_size": flat_hi.size,
            # One row per segment / table entry, so that a step costs one gather per table
            # (each gather is several ops in a TF graph, run on every step).
            "segment_ints": np.stack([starts, lens, np.asarray(offsets, dtype=np.int64)], axis=1),
            "segment_floats": np.stack([icpt_hi, icpt_lo, slope_a, slope_b, slope_c], axis=1),
            "flat_pairs": np.stack([flat_hi, flat_lo], axis=1),
        }
        self._constants = {}
        self.float32_horizon = pieces.horizon()
        self.total_steps = None
        if total_steps is not None:
            self.total_steps = theory.check_steps("total_steps", total_steps)
            horizon = _horizon_for_floatx(pieces)
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

    def _const(self, key, dtype, table=None):
        table = self._arrays if table is None else table
        if keras.backend.backend() != "torch":  # graph/jit constants; torch: avoid a copy per step
            return ops.convert_to_tensor(table[key], dtype=dtype)
        cache_key = (key, dtype, id(table))
        if cache_key not in self._constants:
            self._constants[cache_key] = ops.convert_to_tensor(table[key], dtype=dtype)
        return self._constants[cache_key]

    def __call__(self, step):
        return self.scaled(step, None)

    def scaled(self, step, log_scale):
        """The LR at `step` times exp(log_scale), formed in log space.

        `keras_explr.optimizers.Renormalize` divides the LR by S² after
        rescaling the weights by 1/S; adding −2 log S *before* the exp keeps
        the LR finite however far the unscaled schedule would overflow.
        """
        out_dtype = keras.config.floatx()
        if _on_host():
            value = self._host_lr(step, log_scale, out_dtype)
            entry = self._host_cache
            if len(entry) == 2:  # first tensor for this step
                entry = self._host_cache = entry + (_host_tensor(value, _torch_tensor(step)),)
            return entry[2]
        return self._traced(step, log_scale, out_dtype)

    def _traced(self, step, log_scale, out_dtype):
        """`scaled` with tensor ops only: float64 or double-float float32 (compiled steps)."""
        dtype = _compute_dtype()
        with keras.name_scope(self.name or "schedule"):
            if dtype == "float32":
                lr = _float32.exp_pair(*self._log_pair(step, log_scale))
                return lr if out_dtype == "float32" else _saturating_cast(lr, out_dtype)
            t = ops.cast(step, dtype)
            if self.gradient_accumulation_steps is not None:  # count real updates
                t = ops.floor(ops.divide(t, ops.convert_to_tensor(
                    float(self.gradient_accumulation_steps), dtype)))
            if self._single:
                a = self._arrays
                log_lr = ops.add(
                    ops.convert_to_tensor(a["intercepts"][0], dtype=dtype),
                    ops.multiply(ops.convert_to_tensor(a["slopes"][0], dtype=dtype), t),
                )
            else:
                starts = self._const("starts", dtype)
                seg = ops.sum(ops.cast(ops.less_equal(starts, t), "int32")) - 1
                k = t - ops.take(starts, seg)
                n = ops.take(self._const("lens", dtype), seg)
                flat = self._const("flat", dtype)
                idx = ops.clip(ops.take(self._const("offsets", dtype), seg) + k,
                               0, self._arrays["flat"].size - 1)
                in_table = ops.take(flat, ops.cast(idx, "int32"))
                tail = ops.take(self._const("intercepts", dtype), seg) + ops.take(
                    self._const("slopes", dtype), seg) * (k - n)
                log_lr = ops.where(ops.less(k, n), in_table, tail)
            if log_scale is not None:
                if isinstance(log_scale, (tuple, list)):  # a (hi, lo) pair
                    log_scale = ops.cast(log_scale[0], dtype) + ops.cast(log_scale[1], dtype)
                log_lr = log_lr + ops.cast(log_scale, dtype)
            # Saturate: an overflowing exp() becomes the largest finite value.
            # (ops.where: Keras's torch `minimum` returns float32 for two float64 tensors.)
            cap = ops.convert_to_tensor(
                min(float(np.finfo(out_dtype).max), float(np.finfo(dtype).max)), dtype)
            lr = ops.exp(log_lr)
            return ops.cast(ops.where(ops.less(lr, cap), lr, cap), out_dtype)

    def _host_lr(self, step, log_scale, out_dtype):
        """The LR as a numpy value of `out_dtype`, evaluated on the host (eager PyTorch):
        theory's float64 value (`theory.Pieces`), saturated, then rounded once (≤ 0.5 ulp).

        The step and a tensor log_scale are read once (one device sync each); the result
        (and, in `scaled`, its tensor) is cached for the step, so a second call in the
        same update costs no conversion.
        """
        t = _host_read(step)
        parts = () if log_scale is None else (
            log_scale if isinstance(log_scale, (tuple, list)) else (log_scale,))
        scale = sum((_host_read(x).astype(np.float64) for x in parts), np.zeros(()))  # a pair: exact
        key = (t.tobytes(), t.dtype.str, t.shape, scale.tobytes(), scale.shape, out_dtype)
        cache = self.__dict__.get("_host_cache")
        if cache is not None and cache[0] == key:
            return cache[1]
        if "int" not in str(t.dtype):  # floored, and clamped below 2^63 (a cast would wrap it)
            t = np.clip(np.floor(t), -2.0 ** 63, np.nextafter(2.0 ** 63, 0.0))
        k = np.asarray(theory.accumulated_step(t.astype(np.int64), self.gradient_accumulation_steps))
        with np.errstate(over="ignore"):
            lr = np.exp(self._host_log_lr(k) + scale)
        value = _saturate_to(lr, out_dtype)
        self._host_cache = (key, value)
        return value

    def _host_log_lr(self, k):
        """theory's float64 log η̃ at step(s) k (numpy). A scalar step is looked up in a
        block of _HOST_BLOCK steps that theory evaluates at once (steps mostly advance by
        one: one vectorized theory call per block instead of one per step)."""
        if k.ndim != 0 or k > np.iinfo(np.int64).max - _HOST_BLOCK:  # (a block would overflow int64)
            return self._pieces.log_learning_rate(k)
        k = int(k)
        block = self.__dict__.get("_host_block")
        if block is None or not block[0] <= k < block[0] + _HOST_BLOCK:
            block = self._host_block = (k, self._pieces.log_learning_rate(np.arange(k, k + _HOST_BLOCK)))
        return block[1][k - block[0]]

    def _log_pair(self, step, log_scale=None):
        """log η̃_t (+ log_scale) as a float32 (hi, lo) pair, from integer step
        arithmetic and exact float32 products only (`keras_explr._float32`)."""
        t = _int_step(step)
        idt = t.dtype
        if self.gradient_accumulation_steps is not None:  # count real updates
            t = ops.floor_divide(t, self.gradient_accumulation_steps)
        a = self._arrays32
        if self._single:
            m = t
            hi0 = ops.convert_to_tensor(a["icpt_hi"][0])
            lo0 = ops.convert_to_tensor(a["icpt_lo"][0])
            parts = tuple(ops.convert_to_tensor(a[k][0]) for k in ("slope_a", "slope_b", "slope_c"))
        else:
            if len(a["starts"]) == 1:
                seg = 0
            else:
                # (a vector of steps works too: one row of comparisons per step)
                starts = self._const("starts", idt, a)
                seg = ops.sum(ops.cast(ops.less_equal(starts, ops.expand_dims(t, -1)), "int32"), axis=-1) - 1
            start, n, offset = ops.unstack(ops.take(self._const("segment_ints", idt, a), seg, axis=0), axis=-1)
            icpt_hi, icpt_lo, *slope = ops.unstack(
                ops.take(self._const("segment_floats", None, a), seg, axis=0), axis=-1)
            k = t - start
            idx = ops.clip(offset + k, 0, a["flat_size"] - 1)
            in_table = ops.less(k, n)
            m = ops.maximum(k - n, 0)
            flat_hi, flat_lo = ops.unstack(ops.take(self._const("flat_pairs", None, a), idx, axis=0), axis=-1)
            hi0 = ops.where(in_table, flat_hi, icpt_hi)
            lo0 = ops.where(in_table, flat_lo, icpt_lo)
            zero = ops.zeros((), "float32")
            parts = tuple(ops.where(in_table, zero, x) for x in slope)
        terms = [hi0] + _float32.product_with_step(parts, _float32.split_step(m))
        if log_scale is not None:
            s_hi, s_lo = _float32.pair_of(log_scale)
            terms = [s_hi, hi0] + terms[1:] + [s_lo]
        hi, lo = _float32.accumulate(terms + [lo0])
        return ops.where(ops.isfinite(hi0), hi, hi0), lo  # log 0 = −inf stays −inf


_HOST_BLOCK = 1024  # steps per theory evaluation on the eager-PyTorch host path


def _on_host():
    """Whether schedules are evaluated on the host: eager PyTorch (no compiled step to keep
    free of float64, no TPU), not while torch.compile / dynamo or torch.jit traces."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return not (torch.compiler.is_compiling() or torch.jit.is_tracing())


def _torch_tensor(x):
    """The torch tensor behind a step (a Keras variable's value), or None."""
    x = x.value if isinstance(x, keras.Variable) else x
    return x if hasattr(x, "device") and hasattr(x, "detach") else None


def _host_read(x):
    """A step or log-scale (Python number, numpy, torch tensor or Keras variable) as numpy."""
    if isinstance(x, keras.Variable):
        x = x.value
    if hasattr(x, "detach"):  # a torch tensor
        return np.asarray(x.item() if x.ndim == 0 else x.detach().cpu().numpy())
    return np.asarray(x)


def _saturate_to(lr, dtype):
    """float64 `lr` rounded once to `dtype` (numpy), the overflow at its largest finite value."""
    import ml_dtypes

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    return np.minimum(lr, _finfo_max(np_dtype)).astype(np_dtype)


@functools.lru_cache(maxsize=None)
def _finfo_max(dtype):
    import ml_dtypes

    return float(ml_dtypes.finfo(dtype).max)


def _host_tensor(value, like=None):
    """A numpy value as a torch tensor of its dtype, on `like`'s device (the step's: Keras
    puts its variables on its device) — one conversion, no cast op."""
    import torch

    if like is None or value.dtype not in (np.float16, np.float32, np.float64):
        return ops.convert_to_tensor(value, dtype=str(value.dtype))
    return torch.as_tensor(value, device=like.device)


def _saturating_cast(lr, dtype):
    """float32 → a narrower float (float16, bfloat16) without inf."""
    cap = ops.convert_to_tensor(_finfo_max(dtype), "float32")
    return ops.cast(ops.where(ops.less(lr, cap), lr, cap), dtype)


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class ExpLR(_PiecewiseLogLinear):
    r"""Exponentially growing learning rate: \(\tilde\eta_t = \tilde\eta_0\, r^t\).

    The generic form, ``ExpLR(initial_learning_rate, growth_rate)``, evaluates
    \(\exp(\log\tilde\eta_0 + t\log r)\) in log space (float64 or double-float float32, see
    the module docstring). Build the schedule that is equivalent to
    a weight-decay run with `ExpLR.from_weight_decay`.

    Args:
      initial_learning_rate: \(\tilde\eta_0 > 0\).
      growth_rate: \(r > 0\), the factor per optimizer step (real update).
      total_steps: optional number of steps (real updates; epochs × steps per
        epoch) you will train; rejected if the learning rate would overflow
        float32 (float64 under a float64 floatx) before then.
      name: optional name.
      gradient_accumulation_steps: None (default), or the n of a stock Keras
        optimizer built with ``gradient_accumulation_steps=n``: Keras calls the
        schedule with its micro-step counter, and this makes the schedule
        evaluate at floor(step / n), the number of real updates. Leave it None
        with `keras_explr.optimizers`, which pass real updates themselves.

    Attributes:
      momentum: the momentum to give the optimizer for the equivalence
        (None for the generic form).
      float32_horizon: the first step whose LR exceeds float32's max, or None.

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
          learning_rate, weight_decay, momentum: the weight-decay run's \(\eta\), \(\lambda\), \(\gamma\).
          exact: True (default) reproduces the weight-decay run started from
            zero momentum buffers, which is what Keras does, to float64
            round-off: \(\tilde\eta_t = \eta\, c_t c_{t+1}\) from the recurrence of math.md#zero-buffers.
            False gives the paper's closed form, which from zero buffers acts
            like the WD run with a permanent +0.92 % effective LR at
            \(\eta = 0.1\), \(\lambda = 5\times 10^{-4}\), \(\gamma = 0.9\) (its first LR is \(\eta/\alpha_+\) instead of \(\eta/(1-\eta\lambda)\)).
          convention: "paper" for `keras_explr.optimizers.SGD` (buffer of
            gradients, coupled \(\lambda\), as in `torch.optim.SGD`); "keras" for
            `keras.optimizers.SGD`, whose buffer stores displacements.
          steps_per_epoch: optional integer >= 1, real updates per epoch (with
            gradient accumulation n over B batches: ceil(B / n)); sets
            `growth_per_epoch` = growth_rate ** steps_per_epoch. It does not
            change the schedule, which is always indexed by steps.
          total_steps: optional, in steps (epochs × steps_per_epoch);
            rejected past the float32 horizon.
          weight_decay_mode: "coupled" (\(\lambda\theta\) in the gradient: the paper, or an L2
            penalty \(\frac{\lambda}{2}\lVert\theta\rVert^2\)) or "decoupled" (\(\theta \leftarrow (1-\eta\lambda)\theta\) before the momentum
            step: Keras's own ``weight_decay`` argument, or
            `keras_explr.optimizers.ReparamWeightDecay` with \(\lambda_\text{new} = \eta\lambda\)); the
            decoupled twin is exact from zero buffers in both conventions.
          name: optional name.
          gradient_accumulation_steps: see the class docstring (for a stock
            Keras optimizer with ``gradient_accumulation_steps=n``).

        Returns:
          An `ExpLR`; pass ``schedule.momentum`` to the optimizer.

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
      boundaries: strictly increasing integers: steps (≥ 0), or epochs (≥ 1)
        when ``steps_per_epoch`` is given.
      values: the learning rates, ``len(boundaries) + 1`` of them.
      weight_decay: coupled \(\lambda \ge 0\) (as in `keras_explr.optimizers.SGD`).
      momentum: \(\gamma\) in [0, 1); also the momentum to use with this schedule.
      exact: see above.
      total_steps: optional, in steps (not epochs) even with
        ``steps_per_epoch``; rejected past the float32 horizon.
      name: optional name.
      steps_per_epoch: optional integer ≥ 1, real updates per epoch; makes
        ``boundaries`` epochs. With gradient accumulation n over B batches per
        epoch, that is ceil(B / n).
      gradient_accumulation_steps: None, or the n of a stock Keras optimizer
        built with ``gradient_accumulation_steps=n`` (see `ExpLR`).

    Attributes:
      boundaries: as given (steps or epochs); step_boundaries: in steps.

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
      schedule: a `LearningRateSchedule` (e.g. `CosineDecay` with warm-up,
        from 0 or not), a float > 0, or a sequence of ``total_steps`` per-step
        learning rates ≥ 0.
      weight_decay: coupled \(\lambda \ge 0\).
      momentum: \(\gamma\) in [0, 1); the twin's `momentum` is the same \(\gamma\).
      total_steps: how many steps (real updates, i.e. epochs × steps per
        epoch) to read from `schedule`; `schedule` is called with 0..total_steps−1.
      name: optional name.
      gradient_accumulation_steps: None, or the n of a stock Keras optimizer
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


@keras.saving.register_keras_serializable(package="keras_explr")
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
        if hasattr(self.schedule, "_host_lr") and _on_host():
            # Eager PyTorch: the same float arithmetic in numpy, one tensor out.
            value = self.schedule._host_lr(step, None, keras.config.floatx())
            scaled = value * np.asarray(self.factor, value.dtype)
            return _host_tensor(np.minimum(scaled, np.asarray(_finfo_max(value.dtype), value.dtype)),
                                _torch_tensor(step))
        value = self.schedule(step)
        dtype = ops.dtype(value)
        scaled = ops.multiply(value, ops.cast(self.factor, dtype))
        # Saturate as this package's schedules do: a saturated (largest finite)
        # value times a factor > 1 would otherwise become inf.
        import ml_dtypes

        cap = ops.convert_to_tensor(float(ml_dtypes.finfo(dtype).max), dtype)
        return ops.where(ops.greater(scaled, cap), cap, scaled)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(keras.saving.deserialize_keras_object(config.pop("schedule")), **config)
