"""The precision policy for schedules: which of three paths evaluates a learning rate.

A schedule of this package is a `keras_explr.theory.Pieces` (piecewise
log-linear in the step). `Evaluator` is the one place that decides how it is
evaluated (docs/math.md#float-range):

* `Float64Path`: float64 tensor ops, for a float64 model on a device that
  computes in float64 (`compute_dtype` is "float64");
* `Float32Path`: float32 only, double-float pairs (`keras_explr._float32`),
  within 2 float32 ulp of theory's float64 value, so that a compiled step
  holds no 64-bit float (float32, bfloat16, mixed precision, TPU, JAX
  without x64);
* `HostPath`: eager PyTorch (`on_host`), which compiles nothing: the step is
  read on the host and theory's float64 value is rounded once (≤ 0.5 ulp).

`Evaluator.__call__(step, log_scale, power, factor)` is the seam every user
of a schedule goes through (`_PiecewiseLogLinear.scaled`, and through it
`keras_explr.optimizers.Renormalize` and `keras_explr.schedules.ScaledSchedule`):
the LR times exp(power · log_scale), formed in log space, then times a
constant ``factor`` in the output dtype, saturated at that dtype's largest
finite value. The helpers `compute_dtype`, `on_host` and `host_read` are the
same decision for other state that must follow it (Renormalize's log-scale).
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from keras_explr import _float32, theory

HOST_BLOCK = 1024  # steps per theory evaluation on the eager-PyTorch host path


# ----------------------------------------------------------------- the decision
def compute_dtype():
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


def on_host():
    """Whether schedules are evaluated on the host: eager PyTorch (no compiled step to keep
    free of float64, no TPU), not while torch.compile / dynamo or torch.jit traces."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return not (torch.compiler.is_compiling() or torch.jit.is_tracing())


def host_read(x):
    """A step or log-scale (Python number, numpy, torch tensor or Keras variable) as numpy."""
    if isinstance(x, keras.Variable):
        x = x.value
    if hasattr(x, "detach"):  # a torch tensor
        return np.asarray(x.item() if x.ndim == 0 else x.detach().cpu().numpy())
    return np.asarray(x)


def torch_tensor(x):
    """The torch tensor behind a step (a Keras variable's value), or None."""
    x = x.value if isinstance(x, keras.Variable) else x
    return x if hasattr(x, "device") and hasattr(x, "detach") else None


def host_tensor(value, like=None):
    """A numpy value as a torch tensor of its dtype, on `like`'s device (the step's: Keras
    puts its variables on its device) — one conversion, no cast op."""
    import torch

    if like is None or value.dtype not in (np.float16, np.float32, np.float64):
        return ops.convert_to_tensor(value, dtype=str(value.dtype))
    return torch.as_tensor(value, device=like.device)


@functools.lru_cache(maxsize=None)
def finfo_max(dtype):
    """The largest finite value of a float dtype (bfloat16 included)."""
    import ml_dtypes

    return float(ml_dtypes.finfo(dtype).max)


def saturate_to(lr, dtype):
    """float64 `lr` rounded once to `dtype` (numpy), the overflow at its largest finite value."""
    import ml_dtypes

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    return np.minimum(lr, finfo_max(np_dtype)).astype(np_dtype)


def saturating_cast(lr, dtype):
    """float32 → a narrower float (float16, bfloat16) without inf."""
    cap = ops.convert_to_tensor(finfo_max(dtype), "float32")
    return ops.cast(ops.where(ops.less(lr, cap), lr, cap), dtype)


def times_factor(value, factor):
    """``factor · value`` in value's dtype, saturated as the schedules are (a saturated
    value times a factor > 1 would otherwise become inf)."""
    dtype = ops.dtype(value)
    scaled = ops.multiply(value, ops.cast(factor, dtype))
    cap = ops.convert_to_tensor(finfo_max(dtype), dtype)
    return ops.where(ops.greater(scaled, cap), cap, scaled)


def int_step(step):
    """The step as an integer tensor (a float step is floored), exactly; a step past
    what the widest integer available holds (int64; int32 on JAX without x64) is
    clamped to its largest value, where every schedule here has long saturated
    (a cast would wrap it to a negative or small step)."""
    wide = keras.backend.backend() != "jax" or compute_dtype() == "float64"
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


def _scale_parts(log_scale, power):
    """A log-scale (a tensor, a number or a (hi, lo) pair) times `power` (exact for ±2)."""
    if log_scale is None or power == 1:
        return log_scale
    if isinstance(log_scale, (tuple, list)):
        return tuple(x * power for x in log_scale)
    return log_scale * power


class _Constants:
    """Tables as tensors: rebuilt in every graph/jit trace, cached on torch (no copy per step)."""

    def __init__(self):
        self._cache = {}

    def get(self, table, key, dtype):
        if keras.backend.backend() != "torch":
            return ops.convert_to_tensor(table[key], dtype=dtype)
        cache_key = (key, dtype, id(table))
        if cache_key not in self._cache:
            self._cache[cache_key] = ops.convert_to_tensor(table[key], dtype=dtype)
        return self._cache[cache_key]


# ----------------------------------------------------------------- the three paths
class Float64Path:
    """log η_t with float64 (or the compute dtype's) tensor ops."""

    def __init__(self, pieces, accumulation, constants):
        flat, offsets = pieces.flat_table()
        self.arrays = {
            "starts": np.asarray(pieces.starts, dtype=np.float64),
            "lens": np.asarray([len(x) for x in pieces.tables], dtype=np.float64),
            "offsets": offsets,
            "intercepts": np.asarray(pieces.intercepts, dtype=np.float64),
            "slopes": np.asarray(pieces.slopes, dtype=np.float64),
            "flat": flat,
        }
        self.single = len(pieces.starts) == 1 and len(pieces.tables[0]) == 0
        self.accumulation = accumulation
        self._constants = constants

    def __call__(self, step, log_scale, out_dtype, dtype):
        a = self.arrays
        t = ops.cast(step, dtype)
        if self.accumulation is not None:  # count real updates
            t = ops.floor(ops.divide(t, ops.convert_to_tensor(float(self.accumulation), dtype)))
        if self.single:
            log_lr = ops.add(
                ops.convert_to_tensor(a["intercepts"][0], dtype=dtype),
                ops.multiply(ops.convert_to_tensor(a["slopes"][0], dtype=dtype), t),
            )
        else:
            const = functools.partial(self._constants.get, a, dtype=dtype)
            starts = const("starts")
            seg = ops.sum(ops.cast(ops.less_equal(starts, t), "int32")) - 1
            k = t - ops.take(starts, seg)
            n = ops.take(const("lens"), seg)
            idx = ops.clip(ops.take(const("offsets"), seg) + k, 0, a["flat"].size - 1)
            in_table = ops.take(const("flat"), ops.cast(idx, "int32"))
            tail = ops.take(const("intercepts"), seg) + ops.take(const("slopes"), seg) * (k - n)
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


class Float32Path:
    """log η_t as a float32 (hi, lo) pair, from integer step arithmetic and exact
    float32 products only (`keras_explr._float32`), then exp of the pair."""

    def __init__(self, pieces, accumulation, constants):
        flat, offsets = pieces.flat_table()
        flat_hi, flat_lo = _float32.split_pair(flat)
        icpt_hi, icpt_lo = _float32.split_pair(pieces.intercepts)
        slope_a, slope_b, slope_c = _float32.split_constant(pieces.slopes)
        lens = np.asarray([len(x) for x in pieces.tables], dtype=np.int64)
        starts = np.asarray(pieces.starts, dtype=np.int64)
        self.arrays = {
            "icpt_hi": icpt_hi, "icpt_lo": icpt_lo, "slope_a": slope_a, "slope_b": slope_b, "slope_c": slope_c,
            "starts": starts, "flat_size": flat_hi.size,
            # One row per segment / table entry, so that a step costs one gather per table
            # (each gather is several ops in a TF graph, run on every step).
            "segment_ints": np.stack([starts, lens, np.asarray(offsets, dtype=np.int64)], axis=1),
            "segment_floats": np.stack([icpt_hi, icpt_lo, slope_a, slope_b, slope_c], axis=1),
            "flat_pairs": np.stack([flat_hi, flat_lo], axis=1),
        }
        self.single = len(pieces.starts) == 1 and len(pieces.tables[0]) == 0
        self.accumulation = accumulation
        self._constants = constants

    def __call__(self, step, log_scale, out_dtype):
        lr = _float32.exp_pair(*self.log_pair(step, log_scale))
        return lr if out_dtype == "float32" else saturating_cast(lr, out_dtype)

    def log_pair(self, step, log_scale=None):
        """log η_t (+ log_scale) as a float32 (hi, lo) pair."""
        t = int_step(step)
        idt = t.dtype
        if self.accumulation is not None:  # count real updates
            t = ops.floor_divide(t, self.accumulation)
        a = self.arrays
        if self.single:
            m = t
            hi0 = ops.convert_to_tensor(a["icpt_hi"][0])
            lo0 = ops.convert_to_tensor(a["icpt_lo"][0])
            parts = tuple(ops.convert_to_tensor(a[k][0]) for k in ("slope_a", "slope_b", "slope_c"))
        else:
            const = functools.partial(self._constants.get, a)
            if len(a["starts"]) == 1:
                seg = 0
            else:
                # (a vector of steps works too: one row of comparisons per step)
                starts = const("starts", idt)
                seg = ops.sum(ops.cast(ops.less_equal(starts, ops.expand_dims(t, -1)), "int32"), axis=-1) - 1
            start, n, offset = ops.unstack(ops.take(const("segment_ints", idt), seg, axis=0), axis=-1)
            icpt_hi, icpt_lo, *slope = ops.unstack(
                ops.take(const("segment_floats", None), seg, axis=0), axis=-1)
            k = t - start
            idx = ops.clip(offset + k, 0, a["flat_size"] - 1)
            in_table = ops.less(k, n)
            m = ops.maximum(k - n, 0)
            flat_hi, flat_lo = ops.unstack(ops.take(const("flat_pairs", None), idx, axis=0), axis=-1)
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


class HostPath:
    """Eager PyTorch: theory's float64 value (`theory.Pieces`), saturated, then rounded
    once (≤ 0.5 ulp). The step and a tensor log-scale are read once (one device sync
    each); the value (`cache`: key, value) and its tensor (`tensor`) are cached for the
    step, so a second call in the same update costs no conversion."""

    def __init__(self, pieces, accumulation):
        self.pieces = pieces
        self.accumulation = accumulation
        self.cache = None
        self.tensor = None
        self._block = None

    def value(self, step, log_scale, out_dtype, power=1):
        """The LR as a numpy value of `out_dtype`."""
        t = host_read(step)
        parts = () if log_scale is None else (
            log_scale if isinstance(log_scale, (tuple, list)) else (log_scale,))
        # (power ±2 and a pair's sum are exact in float64)
        scale = sum((host_read(x).astype(np.float64) * power for x in parts), np.zeros(()))
        key = (t.tobytes(), t.dtype.str, t.shape, scale.tobytes(), scale.shape, out_dtype)
        if self.cache is not None and self.cache[0] == key:
            return self.cache[1]
        if "int" not in str(t.dtype):  # floored, and clamped below 2^63 (a cast would wrap it)
            t = np.clip(np.floor(t), -2.0 ** 63, np.nextafter(2.0 ** 63, 0.0))
        k = np.asarray(theory.accumulated_step(t.astype(np.int64), self.accumulation))
        with np.errstate(over="ignore"):
            lr = np.exp(self._log_lr(k) + scale)
        value = saturate_to(lr, out_dtype)
        self.cache, self.tensor = (key, value), None
        return value

    def __call__(self, step, log_scale, out_dtype, power=1):
        value = self.value(step, log_scale, out_dtype, power)
        if self.tensor is None:  # first tensor for this step
            self.tensor = host_tensor(value, torch_tensor(step))
        return self.tensor

    def _log_lr(self, k):
        """theory's float64 log η_t at step(s) k. A scalar step is looked up in a block of
        HOST_BLOCK steps that theory evaluates at once (steps mostly advance by one)."""
        if k.ndim != 0 or k > np.iinfo(np.int64).max - HOST_BLOCK:  # (a block would overflow int64)
            return self.pieces.log_learning_rate(k)
        k = int(k)
        block = self._block
        if block is None or not block[0] <= k < block[0] + HOST_BLOCK:
            block = self._block = (k, self.pieces.log_learning_rate(np.arange(k, k + HOST_BLOCK)))
        return block[1][k - block[0]]


# ----------------------------------------------------------------- the policy
class Evaluator:
    """Evaluates `pieces` at a step on the path the precision policy picks.

    ``evaluator(step, log_scale=None, power=1, factor=None)`` is
    η_t · exp(power · log_scale) formed in log space (finite however far the
    unscaled η_t would overflow), rounded to ``keras.config.floatx()``, then
    times ``factor`` in that dtype, everything saturated at its largest
    finite value. ``log_scale`` is a tensor, a number or a (hi, lo) pair.
    """

    def __init__(self, pieces, accumulation=None, name=None):
        self.name = name
        self.pieces = pieces
        self.accumulation = accumulation
        self._constants = _Constants()

    # Each path builds its tables the first time it is used (a run uses one or two of them).
    @functools.cached_property
    def float64(self):
        return Float64Path(self.pieces, self.accumulation, self._constants)

    @functools.cached_property
    def float32(self):
        return Float32Path(self.pieces, self.accumulation, self._constants)

    @functools.cached_property
    def host(self):
        return HostPath(self.pieces, self.accumulation)

    def __call__(self, step, log_scale=None, power=1, factor=None):
        out_dtype = keras.config.floatx()
        if on_host():
            if factor is None:
                return self.host(step, log_scale, out_dtype, power)
            value = self.host.value(step, log_scale, out_dtype, power)
            scaled = np.minimum(value * np.asarray(factor, value.dtype),
                                np.asarray(finfo_max(value.dtype), value.dtype))
            return host_tensor(scaled, torch_tensor(step))
        lr = self.traced(step, _scale_parts(log_scale, power), out_dtype)
        return lr if factor is None else times_factor(lr, factor)

    def traced(self, step, log_scale, out_dtype):
        """Tensor ops only: float64, or double-float float32 (compiled steps)."""
        dtype = compute_dtype()
        with keras.name_scope(self.name or "schedule"):
            if dtype == "float32":
                return self.float32(step, log_scale, out_dtype)
            return self.float64(step, log_scale, out_dtype, dtype)


def horizon_for_floatx(pieces):
    """The first step whose LR exceeds floatx's largest value, or None."""
    if keras.config.floatx() == "float64":
        return pieces.horizon(math.log(float(np.finfo(np.float64).max)))
    return pieces.horizon()
