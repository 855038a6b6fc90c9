"""Input checks shared by the whole package: each returns the value in a
canonical type or raises a ValueError naming the argument and its valid range,
before any state changes.

Pure Python and numpy (no Keras), so `keras_explr.theory` validates its own
arguments with them and still imports no Keras.

>>> from keras_explr import _checks
>>> _checks.check_positive("learning_rate", 0.1)
0.1
>>> _checks.check_steps("steps", -1)
Traceback (most recent call last):
  ...
ValueError: `steps` must be an integer >= 1. Received: steps=-1
"""

import math

import numpy as np


def check_positive(name, value):
    """Returns `value` as a float if it is finite and > 0, else raises."""
    v = as_float(name, value, "a finite number > 0")
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={value!r}"
        )
    return v


def check_non_negative(name, value):
    """Returns `value` as a float if it is finite and ≥ 0, else raises."""
    v = as_float(name, value, "a finite number >= 0")
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: {name}={value!r}"
        )
    return v


def check_momentum(value, name="momentum"):
    """Returns the momentum γ as a float if 0 ≤ γ < 1, else raises."""
    v = as_float(name, value, "in the range [0, 1)")
    if not (0.0 <= v < 1.0):
        raise ValueError(
            f"`{name}` must be in the range [0, 1). Received: {name}={value!r}"
        )
    return v


def check_steps(name, value, minimum=1):
    """Returns `value` as an int if it is an integer ≥ `minimum`, else raises."""
    if isinstance(value, bool) or not is_integer(value) or int(value) < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def check_boundaries(boundaries, values):
    """Validates a step-decay schedule in `PiecewiseConstantDecay`'s terms.

    `boundaries` must be strictly increasing non-negative integers and
    `len(values) == len(boundaries) + 1`; every value must be a finite LR > 0.
    Returns (list of int, list of float).
    """
    try:
        boundaries = list(boundaries)
        values = list(values)
    except TypeError:
        raise ValueError(
            "`boundaries` and `values` must be sequences. Received: "
            f"boundaries={boundaries!r}, values={values!r}"
        ) from None
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            "`values` must have exactly len(boundaries) + 1 entries. Received: "
            f"len(boundaries)={len(boundaries)}, len(values)={len(values)}"
        )
    out_b = []
    for i, b in enumerate(boundaries):
        if isinstance(b, bool) or not is_integer(b) or int(b) < 0:
            raise ValueError(
                "`boundaries` must be non-negative integers (optimizer steps). "
                f"Received: boundaries[{i}]={b!r}"
            )
        if out_b and int(b) <= out_b[-1]:
            raise ValueError(
                "`boundaries` must be strictly increasing. Received: "
                f"boundaries[{i - 1}]={out_b[-1]} >= boundaries[{i}]={int(b)}"
            )
        out_b.append(int(b))
    out_v = [check_positive(f"values[{i}]", v) for i, v in enumerate(values)]
    return out_b, out_v


def check_accumulation(value):
    """Returns None or the int n ≥ 1 of ``gradient_accumulation_steps``, else raises."""
    if value is None:
        return None
    if isinstance(value, bool) or not is_integer(value) or int(value) < 1:
        raise ValueError(
            "`gradient_accumulation_steps` must be None or an integer >= 1. "
            f"Received: gradient_accumulation_steps={value!r}"
        )
    return int(value)


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def as_float(name, value, what="a number"):
    if isinstance(value, (bool, str, bytes)):  # float("0.1") would accept text silently
        raise ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be {what}. Received: {name}={value!r}"
        ) from None


def is_integer(value):
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def check_lr_exponent(value, name="lr_exponent"):
    """Returns p as a float if 0 ≤ p ≤ 2, else raises."""
    v = as_float(name, value, "in the range [0, 2]")
    if not (0.0 <= v <= 2.0):
        raise ValueError(f"`{name}` must be in the range [0, 2]. Received: {name}={value!r}")
    return v


def check_fraction(name, value, lo=0.0, hi=1.0, closed_hi=False):
    """Returns `value` as a float if lo < value < hi (or value = hi when `closed_hi`), else raises."""
    v = as_float(name, value, f"in ({lo}, {hi}{']' if closed_hi else ')'}")
    if not (lo < v < hi or (closed_hi and v == hi)):
        raise ValueError(f"`{name}` must be in ({lo}, {hi}{']' if closed_hi else ')'}. "
                         f"Received: {name}={value!r}")
    return v


def check_int(name, value, minimum):
    """Returns `value` as an int if it is an int (not a bool, not a float) >= `minimum`, else raises."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


WSD_DECAYS = ("linear", "cosine", "1-sqrt")


def check_wsd(peak_learning_rate, warmup_steps, stable_steps, decay_steps, decay, final_learning_rate):
    """Checks the arguments of a warm-up–stable–decay schedule (`keras_explr.theory.wsd_learning_rates`,
    `keras_explr.schedules.WarmupStableDecay`); returns them as numbers.

    >>> check_wsd(0.1, 10, 80, 10, "cosine", 0.0)
    (0.1, 10, 80, 10, 'cosine', 0.0)
    >>> check_wsd(0.1, 10, 80, 10, "cosine", 0.2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    ValueError: `final_learning_rate` must be in the range [0, peak_learning_rate=0.1]. Received: ...=0.2
    """
    peak = check_positive("peak_learning_rate", peak_learning_rate)
    warm = check_steps("warmup_steps", warmup_steps, minimum=0)
    stable = check_steps("stable_steps", stable_steps, minimum=0)
    dec = check_steps("decay_steps", decay_steps, minimum=0)
    if decay not in WSD_DECAYS:
        raise ValueError(f"`decay` must be one of {WSD_DECAYS}. Received: decay={decay!r}")
    final = check_non_negative("final_learning_rate", final_learning_rate)
    if final > peak:
        raise ValueError("`final_learning_rate` must be in the range [0, peak_learning_rate="
                         f"{peak!r}]. Received: final_learning_rate={final_learning_rate!r}")
    return peak, warm, stable, dec, decay, final
