"""Double-float (float32 pair) arithmetic with `keras.ops`: float64-grade log
learning rates without a single 64-bit float in the compiled step (TPUs have
none; docs/math.md#float-range).

A value is a pair (hi, lo) of float32 tensors with hi + lo the number and
|lo| ≤ ulp(hi)/2, about 48 significant bits. Only two primitives are used,
and neither depends on how the compiler schedules or fuses them:

* two_sum (Knuth): s = a + b and the exact rounding error of that sum;
* products that are exact by construction: a constant with ≤ 12 significant
  bits times an integer with ≤ 12 bits (`split_constant` and `split_step`),
  so fused multiply-adds change nothing.

`exp_pair` then gives exp(hi + lo) rounded to float32 within ~0.5 ulp (Tang's
table method: exp(x) = 2^n · 2^(j/32) · e^r with |r| ≤ ln2/64 and a
degree-4 polynomial for e^r − 1). The float64 reference for every formula is
`keras_explr.theory`; this module only evaluates it in float32.
"""

import math

import numpy as np
from keras import ops

FLOAT32_MAX = float(np.finfo(np.float32).max)
LOG_FLOAT32_MAX = math.log(FLOAT32_MAX)  # 88.7228...
_J = 32  # table entries per octave
_TABLE = np.array([2.0 ** (j / _J) for j in range(_J)], dtype=np.float64)
_TABLE_HI = _TABLE.astype(np.float32)
_TABLE_LO = (_TABLE - _TABLE_HI.astype(np.float64)).astype(np.float32)
_POW2_MIN, _POW2_MAX = -80, 80  # 2^±k for half of any exponent that can matter, all normal floats
_POW2 = np.array([2.0 ** k for k in range(_POW2_MIN, _POW2_MAX + 1)], dtype=np.float32)
# One row per table entry (t_hi, t_lo, −t_hi): one gather per step (several ops each in a TF graph).
_TABLE_ROWS = np.stack([_TABLE_HI, _TABLE_LO, -_TABLE_HI], axis=1)


def round_to_bits(x, bits):
    """float64 `x` rounded to `bits` significant bits (numpy, elementwise)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    finite = np.isfinite(x) & (x != 0)
    _, e = np.frexp(x[finite])
    scale = np.ldexp(1.0, bits - e)
    out[finite] = np.round(x[finite] * scale) / scale
    out[~np.isfinite(x)] = x[~np.isfinite(x)]
    return out


def split_pair(x):
    """float64 constants as float32 (hi, lo) numpy arrays, hi + lo = x to ~2^-48.

    Non-finite entries keep their value in hi and 0 in lo.
    """
    x = np.asarray(x, dtype=np.float64)
    hi = x.astype(np.float32)
    with np.errstate(invalid="ignore"):
        lo = np.where(np.isfinite(x), x - hi.astype(np.float64), 0.0).astype(np.float32)
    return hi, lo


def split_constant(x, bits=12):
    """float64 constants as three float32 arrays (a, b, c), x = a + b + c to ~2^-48:
    a and b have at most `bits` significant bits (so a·k and b·k are exact
    float32 products for any integer k < 2^(24 − bits)), c is the float32 rest."""
    x = np.asarray(x, dtype=np.float64)
    a = round_to_bits(x, bits)
    b = round_to_bits(x - a, bits)
    c = x - a - b
    return a.astype(np.float32), b.astype(np.float32), c.astype(np.float32)


def split_step(m):
    """A non-negative integer tensor as float32 parts that are exact: m = m2 + m1 + m0
    with m2 a multiple of 2^24 (< 2^36 for exact products), m1 of 2^12 (< 2^24) and
    m0 < 2^12, each with at most 12 significant bits; also float32(m)."""
    q1 = ops.floor_divide(m, 4096)
    m0 = m - q1 * 4096
    q2 = ops.floor_divide(q1, 4096)
    m1 = q1 - q2 * 4096
    f = "float32"
    return (ops.cast(q2, f) * 16777216.0, ops.cast(m1, f) * 4096.0, ops.cast(m0, f),
            ops.cast(m, f))


def two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def accumulate(terms):
    """The sum of float32 tensors as a (hi, lo) pair, each addition compensated.

    Put the largest terms first: the error is ~2^-48 of the largest partial sum.
    """
    hi, lo = terms[0], None
    for x in terms[1:]:
        hi, e = two_sum(hi, x)
        lo = e if lo is None else lo + e
    if lo is None:
        return hi, ops.zeros_like(hi)
    return two_sum(hi, lo)


def product_with_step(parts, step_parts):
    """The terms of c · m for a constant split by `split_constant` and a step split
    by `split_step`: six exact products and c's float32 rest times float32(m)."""
    a, b, c = parts
    m2, m1, m0, mf = step_parts
    return [a * m2, a * m1, b * m2, a * m0, b * m1, b * m0, c * mf]


_LN2_OVER_J = math.log(2.0) / _J
_LN2J = split_constant(_LN2_OVER_J, bits=11)  # N·a and N·b are exact for |N| < 2^13


def exp_pair(hi, lo):
    """exp(hi + lo) as float32, saturating at float32's largest value (never inf).

    0 for hi + lo below float32's range (−inf included). hi, lo: float32 scalars.
    """
    hi = ops.convert_to_tensor(hi, "float32")
    lo = ops.convert_to_tensor(lo, "float32")
    x = ops.clip(hi, -105.0, 90.0)  # finite; |N| < 2^13 and |n/2| < 80 below
    # lo only matters inside the clip range (outside, exp saturates or is 0 whatever lo
    # is; a huge hi carries a residual of several units that would push r off its range).
    lo_ok = ops.where(ops.logical_and(ops.isfinite(lo), ops.equal(x, hi)), lo, ops.zeros_like(lo))
    n_total = ops.round(x * (_J / math.log(2.0)))        # N: x ≈ N·ln2/32
    # r = (x + lo) − N·ln2/32 from exact pieces: N·a and N·b are exact products and
    # x − N·a is exact (Sterbenz), so r keeps ~2^-24 of its own size.
    r = ((x - n_total * float(_LN2J[0])) - n_total * float(_LN2J[1])) + (
        lo_ok - n_total * float(_LN2J[2]))
    p = r + r * r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0)))  # e^r − 1, |r| ≤ ln2/64
    n_int = ops.cast(n_total, "int32")
    n = ops.floor_divide(n_int, _J)
    j = n_int - n * _J
    t_hi, t_lo, minus_t_hi = ops.unstack(ops.take(ops.convert_to_tensor(_TABLE_ROWS), j, axis=0), axis=-1)
    # 2^(j/32)·e^r = t_hi + (t_lo + t_hi·p), written with subtractions only: TF's graph
    # optimizer merges chains of additions into one AddN and may re-associate them,
    # which drops t_lo (measured: 0.95 ulp instead of 0.51 in tf.function).
    w = minus_t_hi * p - t_lo  # −(t_lo + t_hi·p)
    y = t_hi - w
    n1 = ops.floor_divide(n, 2)
    scale_up, scale_down = ops.unstack(ops.take(
        ops.convert_to_tensor(_POW2), ops.stack([n1 - _POW2_MIN, (n1 - n) - _POW2_MIN], axis=-1), axis=0),
        axis=-1)  # 2^n1 and 2^−(n − n1)
    y = y * scale_up
    y = ops.where(ops.less(hi, -105.0), ops.zeros_like(y), y)
    # The last step is a division by 2^−(n − n1) (exact): XLA treats a float division
    # as expensive and does not duplicate it, nor the ~100 cheap scalar ops before it,
    # into every loop that uses the result (a 16M-element update recomputed the LR
    # per element with a multiplication here).
    y = y / scale_down
    cap = ops.convert_to_tensor(FLOAT32_MAX, "float32")
    return ops.where(ops.less(y, cap), y, cap)            # overflow (inf) saturates


def pair_of(x):
    """A log offset as a float32 (hi, lo) pair: a pair stays a pair, a Python
    number or numpy scalar is split exactly, a tensor is cast (its own precision)."""
    if isinstance(x, (tuple, list)):
        return ops.cast(x[0], "float32"), ops.cast(x[1], "float32")
    if isinstance(x, (int, float, np.floating, np.integer)):
        hi, lo = split_pair(float(x))
        return ops.convert_to_tensor(hi), ops.convert_to_tensor(lo)
    if str(getattr(x, "dtype", "")).endswith("float64"):
        hi = ops.cast(x, "float32")
        return hi, ops.cast(x - ops.cast(hi, "float64"), "float32")
    return ops.cast(x, "float32"), ops.zeros((), "float32")
