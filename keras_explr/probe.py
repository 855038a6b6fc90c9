"""The Adam scale symmetry, made checkable: `scale_model` and `equivalent_optimizer`.

docs/math.md#scale-probe. Store every trainable parameter as p′ = k·p (the
network computes with p′/k, `keras_explr.layers.ScaleProbe`). Then g′ = g/k,
and for Keras's Adam, with m′ = m/k and v′ = v/k²,

    Δp′ = −η′ c_t m′/(√v′ + ε′) = −η′ c_t m/(√v + kε′),

which is k·Δp exactly when η′ = kη and ε′ = ε/k. The other optimizers:

    =============================  ===========  =========================
    optimizer                      η′           other hyperparameters
    =============================  ===========  =========================
    Adam, AdamW, Nadam, Adamax     k·η          ε/k
    Lion                           k·η          (no ε)
    RMSprop, Adagrad               k·η          ε/k² (ε sits under the √);
                                                Adagrad's initial
                                                accumulator /k²
    SGD (Keras, keras_explr)       k²·η         keras_explr's coupled λ/k²
    Lamb                           η            ε/k
    =============================  ===========  =========================

and for all of them Keras's ``weight_decay`` (w ← w − η·wd·w) becomes
wd·η/η′, the gradient-clipping thresholds (clipnorm, clipvalue,
global_clipnorm) become threshold/k, `ReparamWeightDecay`'s λ_new is unchanged
in its decoupled mode (λ·k^(p−2) in coupled mode, η′ = k^p η), and a
`LossScaleOptimizer` keeps its loss scale. β1, β2, AMSGrad, momentum, bias
correction and the schedule's shape do not change. A regularizer in the model
(``kernel_regularizer=L2(l2)``) is applied by `ScaleProbe` to p′/k, so it
needs no change (on the stored p′ it would need l2/k²).

Lamb's trust ratio ‖w‖/‖u‖ is 1 for a variable that is exactly zero
(Keras's guard), not k: a zero-initialized bias or BatchNorm β breaks the Lamb
equivalence on the first step. Every other row holds from any initialization.

With k a power of two every one of these maps commutes with float rounding and
the two runs are bit-identical; otherwise they agree to round-off (≈1e-6 after
a few hundred float32 steps). Rescaling only some of the variables that share
one learning rate breaks the symmetry (a tested negative control). TensorFlow's
graph arithmetic optimizer can re-associate Keras SGD's momentum + weight-decay
update differently for different constants (measured 3.3e-6 on the outputs
after 112 steps at k=2; 0 eagerly or with
``tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})``).
"""

import keras
from keras import ops

from keras_explr import _keras_internals, theory
from keras_explr.optimizers import _wrapper
from keras_explr import optimizers as _optimizers
from keras_explr.layers import ScaleProbe
from keras_explr.schedules import ScaledSchedule


# class: (p with η′ = k^p η, q with ε′ = ε/k^q or None without ε)
_RULES = {cls: theory.scale_symmetry(family) for cls, family in (
    (keras.optimizers.Adam, "adam"), (keras.optimizers.AdamW, "adam"), (keras.optimizers.Nadam, "adam"),
    (keras.optimizers.Adamax, "adam"), (keras.optimizers.Lion, "lion"), (keras.optimizers.RMSprop, "rmsprop"),
    (keras.optimizers.Adagrad, "rmsprop"), (keras.optimizers.SGD, "sgd"), (_optimizers.SGD, "sgd"),
    (keras.optimizers.Lamb, "lamb"))}


def scale_model(model, scale):
    """A new model whose every trainable variable is stored as k·w.

    Each layer that owns trainable variables is cloned and wrapped in
    `keras_explr.layers.ScaleProbe(layer, scale)`, initialized from `model`'s
    current weights (so the new model computes exactly the same function);
    layers without trainable variables, and frozen layers, are cloned as they
    are. `model` itself is not changed. Nested functional/Sequential models are
    cloned recursively.

    Every trainable variable must carry the same k: rescaling only some of the
    variables that share one learning rate breaks the equivalence (see the
    module docstring).

    Args:
      model (keras.Model): a built functional or Sequential `keras.Model`. Subclassed models
        cannot be cloned layer by layer and are rejected.
      scale (float): k > 0 (a power of two makes the equivalence bit-exact).

    Returns:
      (keras.Model): the reparameterized model (not compiled). Pair it with
        ``equivalent_optimizer(optimizer, scale)``.
    """
    k = theory.check_positive("scale", scale)
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    if not model.built:
        raise ValueError("`model` must be built (call it on data or give it an Input) "
                         "before scale_model can copy its weights.")
    if not isinstance(model, (keras.Sequential,)) and not _is_functional(model):
        raise ValueError(
            f"scale_model needs a functional or Sequential model; {type(model).__name__} is "
            "subclassed. Wrap its layers in keras_explr.layers.ScaleProbe(layer, scale) yourself.")
    pairs = []

    def clone(layer):
        new = layer.__class__.from_config(layer.get_config())
        if layer.trainable_variables:
            nested = [lay.name for lay in _keras_internals.sublayers(layer) if lay.trainable_variables]
            if nested:
                raise ValueError(
                    f"scale_model: layer {layer.name!r} ({type(layer).__name__}) holds trainable "
                    f"variables in sublayers {nested}; scale_model wraps layers that own their "
                    "variables (and recurses into nested functional or Sequential models only).")
            new = ScaleProbe(new, scale=k, name=layer.name)
        pairs.append((layer, new))
        return new

    scaled = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        weights = [ops.convert_to_numpy(w) for w in old.weights]
        if isinstance(new, ScaleProbe):
            new.set_unscaled_weights(weights)
        elif weights:
            new.set_weights(weights)
    return scaled


_is_functional = _keras_internals.is_functional


def equivalent_optimizer(optimizer, scale):
    """The optimizer for `scale_model(model, scale)` that reproduces `optimizer`'s run.

    Returns a new, unbuilt optimizer of the same class whose hyperparameters
    follow the table in this module's docstring (Adam: η·k and ε/k; SGD:
    η·k²; Lamb: η and ε/k; Lion: η·k; Keras weight decay ·η/η′; clipping /k).
    A learning-rate schedule is wrapped in `ScaledSchedule`.
    `LossScaleOptimizer`, `ReparamWeightDecay` and `Partitioned` are mapped
    through to their inner optimizers.

    Raises:
      ValueError: for an optimizer it cannot map (Adadelta, Adafactor, Ftrl,
        Muon, `Renormalize`, subclasses it does not know): their updates do not
        transform covariantly with the parameter scale, or their state would
        have to be rescaled. Also for weight-decay exclusions given by variable
        (``exclude_from_weight_decay(var_list=...)``): the rescaled model's
        variables are different objects; exclude by name instead.
    """
    k = theory.check_positive("scale", scale)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"`optimizer` must be a keras.optimizers.Optimizer. Received: optimizer={optimizer!r}")
    return _equivalent(optimizer, k)


def _equivalent(opt, k):
    if isinstance(opt, keras.optimizers.LossScaleOptimizer):
        config = opt.get_config()
        config.pop("inner_optimizer")
        return type(opt)(_equivalent(opt.inner_optimizer, k), **config)
    if isinstance(opt, _optimizers.ReparamWeightDecay):
        inner = _equivalent(opt.inner_optimizer, k)
        lam = opt.weight_decay
        if not isinstance(lam, float):
            raise ValueError("equivalent_optimizer: a ReparamWeightDecay whose weight_decay is a "
                             "schedule or callable cannot be mapped; give it a float.")
        p = _lr_power(_wrapper.unscaled(opt.inner_optimizer))
        if opt.mode == "coupled":  # (λ/η)θ enters the gradient: needs (λ′/η′)·kθ = (λ/η)θ/k
            lam = lam * k ** (p - 2)
        if not lam < 1.0:
            raise ValueError(
                f"equivalent_optimizer: the coupled λ_new for scale={k} is {lam} ≥ 1; "
                "use a smaller scale or the decoupled mode.")
        config = opt.get_config()
        config.pop("inner_optimizer")
        config["weight_decay"] = lam
        if config.get("reference_learning_rate") is not None:  # η_ref moves with η′ = k^p·η
            config["reference_learning_rate"] = config["reference_learning_rate"] * k ** p
        return type(opt)(inner, **config)
    if isinstance(opt, _wrapper.MULTI_OPTIMIZER):
        raise ValueError(
            "equivalent_optimizer cannot map a keras.optimizers.MultiOptimizer: its map is keyed by "
            "variable paths (or a function of the variable), and scale_model renames the rescaled "
            "variables, so the map would send them elsewhere. Use keras_explr.optimizers.Partitioned "
            "(group, rest), which it maps.")
    if isinstance(opt, _optimizers.Partitioned):
        # scale_model stores `layer/name` as `layer/scaled_name`.
        group = ["/".join(p.split("/")[:-1] + ["scaled_" + p.split("/")[-1]]) for p in opt.group]
        return type(opt)(_equivalent(opt.group_optimizer, k), _equivalent(opt.rest_optimizer, k),
                         group=group, name=opt.name)
    rule = _rule_class(opt)
    p, q = _RULES[rule]
    if _keras_internals.excluded_variables(opt):
        raise ValueError(
            "equivalent_optimizer: the optimizer excludes variables from weight decay by "
            "variable (exclude_from_weight_decay(var_list=...)); the rescaled model's variables "
            "are new objects. Exclude them by name instead (var_names=...).")
    config = opt.get_config()
    lr = config["learning_rate"]
    if isinstance(lr, dict):  # a serialized LearningRateSchedule (or a callable)
        try:
            lr = keras.saving.deserialize_keras_object(lr)
        except (ValueError, TypeError):
            lr = None
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        config["learning_rate"] = lr if p == 0 else ScaledSchedule(lr, k ** p)
    elif not isinstance(lr, (int, float)):
        raise ValueError("equivalent_optimizer: a callable learning rate that is not a "
                         "LearningRateSchedule cannot be rescaled; use a schedule.")
    else:
        config["learning_rate"] = config["learning_rate"] * k ** p
    if q is not None:
        config["epsilon"] = config["epsilon"] / k ** q
    if rule is keras.optimizers.Adagrad:
        config["initial_accumulator_value"] = config["initial_accumulator_value"] / k ** 2
    if config.get("weight_decay"):
        # Keras: w ← w − η·wd·w needs η′wd′ = η·wd; keras_explr.SGD's coupled λθ
        # enters the gradient and needs λ′·kθ = λθ/k.
        config["weight_decay"] = config["weight_decay"] / k ** (2 if rule is _optimizers.SGD else p)
    for key in ("clipnorm", "clipvalue", "global_clipnorm"):
        if config.get(key) is not None:
            config[key] = config[key] / k
    new = type(opt).from_config(config)
    pattern = _keras_internals.excluded_names(opt)
    if pattern:
        new.exclude_from_weight_decay(var_names=[pattern])
    return new


def _lr_power(opt):
    return _RULES[_rule_class(opt)][0]


def _rule_class(opt):
    """The class in `_RULES` that `opt` is, looking through Keras's per-backend
    subclasses (the torch backend's Adam subclasses keras.optimizers.Adam)."""
    for cls in type(opt).__mro__:
        if cls in _RULES:
            return cls
        if not _keras_internals.is_backend_class(cls):
            break
    known = ", ".join(sorted(f"{c.__module__.split('.')[0]}.{c.__name__}" for c in _RULES))
    raise ValueError(
        f"equivalent_optimizer cannot map {type(opt).__name__}: its update does not "
        f"transform with the parameter scale in a way a hyperparameter change can undo, "
        f"or it is a subclass whose update is unknown. Supported: {known}, and "
        "LossScaleOptimizer, ReparamWeightDecay and Partitioned around them.")
