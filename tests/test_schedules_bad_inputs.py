"""Bad input for the schedule pieces of issue 12 (epochs, gradient accumulation,
zero learning rates), in the style of tests/test_bad_inputs.py: every case raises
a ValueError (or TypeError) whose message names the argument and its valid range.
"""

import math
import re
from collections import namedtuple

import keras
import pytest

from keras_explr import schedules, theory

Case = namedtuple("Case", "id call arg range")
NAN = math.nan
INT1 = r"integer >= 1"
BAD_INT1 = [0, -3, 1.5, "10", True, NAN, [4]]  # None means "not given" for both arguments here


class _Negative(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return keras.ops.cast(step, "float32") * 0.0 - 0.1

    def get_config(self):
        return {}


def _int_cases(fn_id, fn, name):
    return [Case(f"{fn_id}-{name}={bad!r}", (lambda bad=bad: fn(**{name: bad})), re.escape(name), INT1)
            for bad in BAD_INT1]


def _cases():
    S = schedules
    base = keras.optimizers.schedules.CosineDecay(0.0, 90, warmup_target=0.1, warmup_steps=10)
    cases = []
    acc = "gradient_accumulation_steps"
    cases += _int_cases("ExpLR", lambda **kw: S.ExpLR(0.1, 1.001, **kw), acc)
    cases += _int_cases("ExpLR.from_weight_decay", lambda **kw: S.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, **kw), acc)
    cases += _int_cases("TEXP", lambda **kw: S.TEXP([10], [0.1, 0.01], 5e-4, 0.9, **kw), acc)
    cases += _int_cases("EquivalentSchedule", lambda **kw: S.EquivalentSchedule(base, 5e-4, 0.9, 100, **kw), acc)
    cases += _int_cases("theory.check_accumulation", lambda **kw: theory.check_accumulation(kw[acc]), acc)
    cases += _int_cases("theory.accumulated_step", lambda **kw: theory.accumulated_step(7, kw[acc]), acc)
    cases += _int_cases("TEXP", lambda **kw: S.TEXP([1, 2], [0.1, 0.01, 0.001], 5e-4, 0.9, **kw), "steps_per_epoch")
    cases += _int_cases("theory.epoch_boundaries", lambda **kw: theory.epoch_boundaries([1, 2], **kw),
                        "steps_per_epoch")
    epochs = r"integers >= 1"
    for bad in ([0, 2], [-1], [1.5], ["a"], [True], [NAN]):
        cases.append(Case(f"TEXP-epoch-boundaries={bad!r}",
                          lambda bad=bad: S.TEXP(bad, [0.1] * (len(bad) + 1), 5e-4, 0.9, steps_per_epoch=10),
                          "boundaries", epochs))
        cases.append(Case(f"theory.epoch_boundaries-boundaries={bad!r}",
                          lambda bad=bad: theory.epoch_boundaries(bad, 10), "boundaries", epochs))
    cases += [
        Case("TEXP-epoch-boundaries-not-increasing",
             lambda: S.TEXP([5, 5], [0.1, 0.01, 0.001], 5e-4, 0.9, steps_per_epoch=10),
             r"boundaries\[1\]", "strictly increasing"),
        Case("theory.epoch_boundaries-not-a-sequence", lambda: theory.epoch_boundaries(80, 10),
             "boundaries", "sequence of epochs"),
        Case("TEXP-epoch-values-length", lambda: S.TEXP([5], [0.1], 5e-4, 0.9, steps_per_epoch=10),
             "values", r"len\(boundaries\) \+ 1"),
        # Zero learning rates are valid now (warm-up from zero); negative ones are not.
        Case("theory.exact_conversion-learning_rates-negative", lambda: theory.exact_conversion([0.1, -0.1], 5e-4, 0.9),
             r"learning_rates\[1\]", "finite and >= 0"),
        Case("theory.exact_conversion-learning_rates-inf", lambda: theory.exact_conversion([0.0, math.inf], 5e-4, 0.9),
             r"learning_rates\[1\]", "finite and >= 0"),
        Case("theory.dense_pieces-learning_rates-negative", lambda: theory.dense_pieces([0.0, -0.1], 5e-4, 0.9),
             "learning_rates", "finite numbers >= 0"),
        Case("theory.dense_pieces-learning_rates-strings", lambda: theory.dense_pieces(["a"], 5e-4, 0.9),
             "learning_rates", "finite numbers >= 0"),
        Case("EquivalentSchedule-sequence-negative",
             lambda: S.EquivalentSchedule([0.0, -0.1], 5e-4, 0.9, total_steps=2),
             "schedule", "finite learning rate >= 0 at every step"),
        Case("EquivalentSchedule-sequence-nan",
             lambda: S.EquivalentSchedule([0.0, NAN], 5e-4, 0.9, total_steps=2),
             "schedule", "finite learning rate >= 0 at every step"),
        Case("EquivalentSchedule-schedule-negative",
             lambda: S.EquivalentSchedule(_Negative(), 5e-4, 0.9, total_steps=3),
             "schedule", "finite learning rate >= 0 at every step"),
        Case("EquivalentSchedule-constant-zero", lambda: S.EquivalentSchedule(0.0, 5e-4, 0.9, total_steps=3),
             "schedule", "finite number > 0"),
        # Cross-convention twins across a zero-LR step do not exist: the message says what to use.
        Case("theory.exact_conversion-paper-to-keras-after-zero",
             lambda: theory.exact_conversion([0.0, 0.1], 5e-4, 0.9, base="paper", target="keras"),
             r"learning_rates`\[0\]", r"target='paper'"),
        Case("theory.exact_conversion-keras-to-paper-zero-after-nonzero",
             lambda: theory.exact_conversion([0.1, 0.0], 5e-4, 0.9, base="keras", target="paper"),
             r"learning_rates`\[1\]", r"target='keras'.*leading zeros are fine"),
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case):
    with pytest.raises((ValueError, TypeError)) as info:
        case.call()
    msg = str(info.value)
    assert re.search(case.arg, msg), f"message does not name {case.arg!r}: {msg}"
    assert re.search(case.range, msg), f"message does not give the valid range {case.range!r}: {msg}"


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_valid_neighbours_are_accepted():
    """The matrix's good values really are good (so each case tests one bad argument)."""
    base = keras.optimizers.schedules.CosineDecay(0.0, 90, warmup_target=0.1, warmup_steps=10)
    schedules.ExpLR(0.1, 1.001, gradient_accumulation_steps=1)
    schedules.TEXP([1, 2], [0.1, 0.01, 0.001], 5e-4, 0.9, steps_per_epoch=10, gradient_accumulation_steps=4)
    schedules.EquivalentSchedule(base, 5e-4, 0.9, 100, gradient_accumulation_steps=2)
    schedules.EquivalentSchedule([0.0, 0.1], 5e-4, 0.9, total_steps=2)
    theory.exact_conversion([0.0, 0.1], 5e-4, 0.9)
    theory.exact_conversion([0.0, 0.1], 5e-4, 0.9, base="keras", target="paper")
    assert theory.accumulated_step(7, None) == 7
