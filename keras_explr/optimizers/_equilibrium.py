"""`ReparamWeightDecay`'s equilibrium-aware options, kept apart from its step.

* ``timescale=``: λ_new from the EMA timescale τ of the decay (Wang &
  Aitchison 2024; `keras_explr.theory.weight_decay_from_timescale`), in epochs
  with ``steps_per_epoch``, else in steps.
* ``model=``: the corrected rule on the scale-invariant group only (AdamC's
  rule: λ·(η_t/η_ref)² on the group `keras_explr.invariance.invariant_group`
  finds, λ·η_t/η_ref, the rule users know, on every other decayed variable).
"""

from keras_explr import theory

# The exponent of the variables outside the invariant group under ``model=``: the standard rule.
REST_LR_EXPONENT = 1.0


def resolve_weight_decay(weight_decay, timescale, steps_per_epoch):
    """λ_new from `weight_decay`, or from `timescale` (τ epochs × steps_per_epoch, or τ steps):
    λ_new = 1/τ_steps, the fraction removed per step whose EMA timescale is τ."""
    if timescale is None:
        if steps_per_epoch is not None:
            raise ValueError("`steps_per_epoch` is only used with `timescale` (τ in epochs). "
                             f"Received: steps_per_epoch={steps_per_epoch!r} without timescale.")
        if weight_decay is None:
            raise ValueError("Give `weight_decay` (λ_new, the fraction removed per step, a finite number >= 0 "
                             "in the range [0, 1), or a schedule) or `timescale` (its EMA timescale τ > 0). "
                             "Received neither (weight_decay=None).")
        return weight_decay
    if weight_decay is not None:
        raise ValueError("Give `weight_decay` or `timescale`, not both (λ_new = 1/τ_steps). "
                         f"Received: weight_decay={weight_decay!r}, timescale={timescale!r}")
    return theory.weight_decay_from_timescale(
        timescale, 1.0, "independent", steps_per_epoch=steps_per_epoch,
        unit="steps" if steps_per_epoch is None else "epochs")


def group_paths(model, lr_exponent):
    """The paths of the variables `model`'s loss is jointly scale-invariant in, or None
    without a model. Only meaningful with lr_exponent > 1 (the corrected rule)."""
    if model is None:
        return None
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    if lr_exponent == REST_LR_EXPONENT:
        raise ValueError("`model=` applies lr_exponent to the invariant group and lr_exponent=1 to "
                         f"the rest; with lr_exponent={lr_exponent!r} it changes nothing. Pass e.g. "
                         "lr_exponent=2 (the corrected rule) or drop `model`.")
    from keras_explr import invariance

    return sorted(v.path for v in invariance.invariant_group(model))


def lr_exponent_of(variable, lr_exponent, paths):
    """p for `variable`: lr_exponent in the group (or everywhere without a group), 1 elsewhere."""
    if paths is None or variable is None or variable.path in paths:
        return lr_exponent
    return REST_LR_EXPONENT
