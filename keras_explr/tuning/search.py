"""`hp_optimizer`: the LR/WD search space of a user's own `build_model(hp)` in one line.

The two parameterizations (docs/math.md#new-parameterization), for a learning
rate η and a weight decay searched log-uniformly:

* ``"new"``: λ_new, the fraction of the weights removed per step whatever η is:
  ``ReparamWeightDecay(Optimizer(η), weight_decay=λ_new)``. Hyperparameters
  ``learning_rate`` and ``weight_decay_new``.
* ``"old"``: the standard rule, whose decay per step is η·λ: Keras's own
  ``weight_decay=λ`` (decoupled, θ ← θ − ηλθ; `keras.optimizers.AdamW` for
  ``"adam"``), or with ``decay="coupled"`` the paper's momentum SGD
  (`keras_explr.optimizers.SGD(weight_decay=λ)`, λθ added to the gradient).
  Hyperparameters ``learning_rate`` and ``weight_decay``.

At a constant LR the two are the same family of runs in other coordinates
(λ_new = η·λ); under a schedule, λ_new constant is a different algorithm.
"""

import numbers

from keras_explr._optional import require

__all__ = ["hp_optimizer", "DEFAULT_RANGES", "HP_NAMES"]

PARAMETERIZATIONS = ("new", "old", "timescale")
DECAYS = ("decoupled", "coupled")
# Hyperparameter names in each parameterization (learning rate, weight decay).
HP_NAMES = {"new": ("learning_rate", "weight_decay_new"), "old": ("learning_rate", "weight_decay"),
            "timescale": ("learning_rate", "timescale")}
# Default log-uniform ranges: (family, what) -> (low, high). "sgd" for SGD, "adaptive" for the rest.
DEFAULT_RANGES = {
    ("sgd", "learning_rate"): (1e-3, 1.0),
    ("adaptive", "learning_rate"): (1e-5, 1e-2),
    ("sgd", "new"): (1e-6, 1e-2),        # λ_new per step
    ("adaptive", "new"): (1e-7, 1e-3),   # λ_new = η·λ with η ~ 1e-3, λ ~ 1e-4…1
    ("sgd", "old"): (1e-5, 1e-1),        # λ with decay η·λ per step
    ("adaptive", "old"): (1e-4, 1.0),    # AdamW's λ
    ("timescale", "epochs"): (0.5, 200.0),   # τ of the decay, with steps_per_epoch
    ("timescale", "steps"): (1e2, 1e6),      # τ of the decay, in steps
}
_NAMED = ("sgd", "adam")
# Keras's variable names of the vectors `exclude_vectors` leaves undecayed under "old"
# (ReparamWeightDecay excludes every variable of rank < 2 itself).
_VECTOR_NAMES = ["bias", "gamma", "beta"]


def _range(name, value, default, below_one=False):
    """(low, high, fixed): a log-uniform range, or a fixed value when a number is given."""
    if value is None:
        value = default
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if not (v > 0 and v < float("inf")) or (below_one and v >= 1):
            raise ValueError(f"`{name}` must be a number in (0, {'1' if below_one else 'inf'}) or a pair "
                             f"(low, high). Received: {name}={value!r}")
        return v, v, True
    try:
        lo, hi = value
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high) of numbers, or one number (fixed). "
                         f"Received: {name}={value!r}") from None
    top = 1.0 if below_one else float("inf")
    if not (0 < lo < hi < top):
        raise ValueError(f"`{name}` must satisfy 0 < low < high < {'1 (a fraction per step)' if below_one else 'inf'}. "
                         f"Received: {name}={value!r}")
    return lo, hi, False


def _sample(hp, name, lo, hi, fixed):
    if fixed:
        return lo
    return hp.Float(name, min_value=lo, max_value=hi, sampling="log")


def hp_optimizer(hp, optimizer="sgd", learning_rate=None, weight_decay=None, parameterization="new",
                 decay="decoupled", exclude_vectors=True, timescale=None, steps_per_epoch=None,
                 **inner_kwargs):
    """A ready optimizer whose learning rate and weight decay are KerasTuner hyperparameters.

    Call it inside any ``build_model(hp)`` (any tuner: `RandomSearch`,
    `BayesianOptimization`, `Hyperband`, `GridSearch` with its own values via
    fixed numbers): the hyperparameters are registered on `hp`, log-uniform,
    named in the chosen coordinates, and the tuner saves and reloads them with
    its trials like any other.

    >>> import keras_tuner
    >>> from keras_explr.tuning import hp_optimizer
    >>> hp = keras_tuner.HyperParameters()
    >>> opt = hp_optimizer(hp, "sgd", learning_rate=(1e-2, 1.0), weight_decay=(1e-5, 1e-3), momentum=0.9)
    >>> type(opt).__name__, sorted(hp.values)
    ('ReparamWeightDecay', ['learning_rate', 'weight_decay_new'])

    Args:
      hp (keras_tuner.HyperParameters): the `keras_tuner.HyperParameters` passed to ``build_model``.
      optimizer (str | type): "sgd" (`keras.optimizers.SGD`; the paper's SGD with
        ``decay="coupled"``), "adam" (`keras.optimizers.Adam` under "new",
        `keras.optimizers.AdamW` under "old"), or a Keras optimizer class
        (``keras.optimizers.Lion``, ...) that takes ``learning_rate`` and,
        under "old", ``weight_decay``.
      learning_rate (tuple[float, float] | float | None): (low, high) searched log-uniformly, or a number (fixed,
        not a hyperparameter). Default `DEFAULT_RANGES`: (1e-3, 1) for SGD,
        (1e-5, 1e-2) otherwise.
      weight_decay (tuple[float, float] | float | None): the same for λ_new (a fraction per step, < 1) under
        "new" or λ under "old". Defaults: "new" (1e-6, 1e-2) for SGD, (1e-7,
        1e-3) otherwise; "old" (1e-5, 0.1) for SGD, (1e-4, 1) otherwise.
      parameterization (str): "new" (hyperparameters ``learning_rate``,
        ``weight_decay_new``), "old" (``learning_rate``, ``weight_decay``) or
        "timescale" (``learning_rate``, ``timescale``: the decay's EMA timescale
        τ, Wang & Aitchison 2024, with λ_new = 1/τ_steps through
        `ReparamWeightDecay(timescale=...)`).
      timescale (tuple[float, float] | float | None): under "timescale", τ's (low, high) or a number; in epochs with
        ``steps_per_epoch``, else in steps. Defaults (0.5, 200) epochs, (1e2, 1e6) steps.
      steps_per_epoch (int | None): real updates per epoch, for τ in epochs.
      decay (str): "decoupled" (θ ← (1 − d)θ beside the update) or "coupled" (the
        decay term enters the gradient and the momentum; SGD only).
      exclude_vectors (bool): leave biases and normalization γ/β undecayed (default):
        under "new" every variable of rank < 2 (`ReparamWeightDecay`), under
        "old" the variables Keras names "bias", "gamma" or "beta".
      **inner_kwargs (Any): the optimizer's other arguments (``momentum``,
        ``beta_1``, ``clipnorm``, ...).

    Returns:
      (keras.optimizers.Optimizer): a Keras optimizer (serializable: the model saves and loads with it).
    """
    kt = require("keras_tuner", "tuner", "`hp_optimizer`")
    import keras

    from keras_explr import optimizers as kx_optimizers

    if not isinstance(hp, kt.HyperParameters):
        raise TypeError(f"`hp` must be the keras_tuner.HyperParameters given to build_model. Received: hp={hp!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"`parameterization` must be one of {PARAMETERIZATIONS}. "
                         f"Received: parameterization={parameterization!r}")
    if decay not in DECAYS:
        raise ValueError(f"`decay` must be one of {DECAYS}. Received: decay={decay!r}")
    if not isinstance(exclude_vectors, bool):
        raise TypeError(f"`exclude_vectors` must be True or False. Received: exclude_vectors={exclude_vectors!r}")
    for key in ("learning_rate", "weight_decay"):
        if key in inner_kwargs:  # (cannot happen through the signature; kept for **dict callers)
            raise TypeError(f"`{key}` is searched by hp_optimizer; give its range as `{key}=(low, high)`")
    for key in ("inner_optimizer", "mode", "adam_weight_decay"):
        if key in inner_kwargs:
            raise TypeError(f"hp_optimizer sets `{key}` itself; use `decay=` for the decay's form. "
                            f"Received: {key}={inner_kwargs[key]!r}")
    if isinstance(optimizer, str):
        if optimizer not in _NAMED:
            raise ValueError(f"`optimizer` must be one of {_NAMED} or a keras.optimizers.Optimizer subclass. "
                             f"Received: optimizer={optimizer!r}")
        family = "sgd" if optimizer == "sgd" else "adaptive"
    elif isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer):
        family = "sgd" if issubclass(optimizer, (keras.optimizers.SGD, kx_optimizers.SGD)) else "adaptive"
        if issubclass(optimizer, kx_optimizers.ReparamWeightDecay):
            raise ValueError("`optimizer` must be the optimizer to wrap, not ReparamWeightDecay itself. "
                             f"Received: optimizer={optimizer!r}")
        if parameterization != "old" and issubclass(optimizer, keras.optimizers.AdamW):
            raise ValueError("`optimizer`=AdamW carries its own weight decay; under parameterization='new' give "
                             "keras.optimizers.Adam (or 'adam'): ReparamWeightDecay does the decay")
    else:
        raise TypeError(f"`optimizer` must be 'sgd', 'adam' or a keras.optimizers.Optimizer subclass (the class, "
                        f"not an instance). Received: optimizer={optimizer!r}")
    if decay == "coupled" and family != "sgd":
        raise ValueError("`decay`='coupled' needs optimizer='sgd': for adaptive optimizers a coupled decay is an "
                         "L2 penalty that the preconditioner rescales, not a weight-decay rule")
    lr_lo, lr_hi, lr_fixed = _range("learning_rate", learning_rate, DEFAULT_RANGES[(family, "learning_rate")])
    if parameterization == "timescale":
        wd_lo, wd_hi, wd_fixed = _timescale_range(weight_decay, timescale, steps_per_epoch)
    else:
        if timescale is not None or steps_per_epoch is not None:
            raise ValueError("`timescale` and `steps_per_epoch` are for parameterization='timescale'. Received: "
                             f"timescale={timescale!r}, steps_per_epoch={steps_per_epoch!r}, "
                             f"parameterization={parameterization!r}")
        wd_lo, wd_hi, wd_fixed = _range("weight_decay", weight_decay, DEFAULT_RANGES[(family, parameterization)],
                                        below_one=parameterization == "new")
    lr_name, wd_name = HP_NAMES[parameterization]
    lr = _sample(hp, lr_name, lr_lo, lr_hi, lr_fixed)
    wd = _sample(hp, wd_name, wd_lo, wd_hi, wd_fixed)

    if optimizer == "sgd":
        cls = kx_optimizers.SGD if decay == "coupled" else keras.optimizers.SGD
    elif optimizer == "adam":
        cls = keras.optimizers.Adam if parameterization != "old" else keras.optimizers.AdamW
    else:
        cls = optimizer
        if decay == "coupled" and parameterization == "old" and cls is keras.optimizers.SGD:
            cls = kx_optimizers.SGD  # Keras's SGD decays decoupled only
    if parameterization == "timescale":
        return kx_optimizers.ReparamWeightDecay(cls(learning_rate=lr, **inner_kwargs), timescale=wd,
                                                steps_per_epoch=steps_per_epoch, mode=decay,
                                                exclude_vectors=exclude_vectors)
    if parameterization == "new":
        inner = cls(learning_rate=lr, **inner_kwargs)
        return kx_optimizers.ReparamWeightDecay(inner, weight_decay=wd, mode=decay, exclude_vectors=exclude_vectors)
    opt = cls(learning_rate=lr, weight_decay=wd, **inner_kwargs)
    if exclude_vectors:
        opt.exclude_from_weight_decay(var_names=list(_VECTOR_NAMES))
    return opt


def _timescale_range(weight_decay, timescale, steps_per_epoch):
    """τ's (low, high, fixed) under parameterization="timescale" (the hyperparameter ``timescale``)."""
    if weight_decay is not None:
        raise ValueError("parameterization='timescale' searches τ, not the weight decay: give "
                         f"`timescale=(low, high)` instead. Received: weight_decay={weight_decay!r}")
    if steps_per_epoch is not None:
        from keras_explr import theory

        theory.check_steps("steps_per_epoch", steps_per_epoch)
    unit = "steps" if steps_per_epoch is None else "epochs"
    return _range("timescale", timescale, DEFAULT_RANGES[("timescale", unit)])
