"""`Partitioned`: one optimizer for a group of variables, another for the rest."""

import types

import keras
from keras import ops

from keras_explr.optimizers._wrapper import accumulation_steps, built_on, forwarded_loss_scale_factor, value
from keras_explr.optimizers.renormalize import invariant_group
from keras_explr.optimizers.sgd import SGD


@keras.saving.register_keras_serializable(package="keras_explr")
class Partitioned(keras.optimizers.Optimizer):
    """Two optimizers, one for a group of variables and one for the rest.

    The exact ExpLR twin of a network whose head or normalization affine
    parameters train (docs/math.md, "Parameters that are not scale-invariant"):
    the scale-invariant group runs WD-free with the exponential schedule, every
    other variable keeps the original learning rate and weight decay, because
    ∂L/∂φ does not change when the invariant group is rescaled. Build it with
    `Partitioned.explr_twin`.

    It has the public shape of Keras's multi-optimizer: ``optimizers`` lists
    the two inner optimizers (Keras's `LearningRateScheduler` sets each one's
    rate), ``learning_rate`` reads the group optimizer's, and *setting*
    ``learning_rate`` raises an error that says what to do: the two rates of
    an ExpLR twin are tied by the theorem, so no single number can be set.
    With ``gradient_accumulation_steps`` both inner optimizers must accumulate
    the same number of micro-batches, and ``iterations`` counts real updates,
    as it does for Keras's own optimizers. Keras's callbacks log one
    ``learning_rate_<name>`` per inner optimizer: two inner optimizers that share a
    name (two ``SGD``s) are renamed ``<name>_group`` and ``<name>_rest``.

    `keras.optimizers.MultiOptimizer` does the same job with a map from variable
    paths to optimizers; use `Partitioned` when the group comes from the model's
    invariance analysis (`model=`), for `explr_twin`, or when ``iterations`` must
    count real updates under gradient accumulation (MultiOptimizer counts calls).

    Args:
      group_optimizer (keras.optimizers.Optimizer): updates the variables in the group.
      rest_optimizer (keras.optimizers.Optimizer): updates every other variable.
      group (list[keras.Variable | str] | None): the group's variables (objects or paths); default: found from
        `model`.
      model (keras.Model | None): a functional model whose largest jointly scale-invariant set of
        variables forms the group (`keras_explr.invariance.invariant_group`).
      name (str | None): optional name.

    Example:

    >>> import keras, keras_explr
    >>> inputs = keras.Input((8,))
    >>> h = keras.layers.Dense(16, use_bias=False, name="hidden")(inputs)
    >>> h = keras.layers.BatchNormalization(center=False, scale=False)(h)
    >>> model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    >>> opt = keras_explr.optimizers.Partitioned.explr_twin(
    ...     model, learning_rate=0.1, weight_decay=5e-4, momentum=0.9)
    >>> opt.group
    ['hidden/kernel']
    """

    def __init__(self, group_optimizer, rest_optimizer, group=None, model=None, name=None, **kwargs):
        if kwargs:
            raise ValueError(f"Partitioned does not support {sorted(kwargs)}: set them on the inner optimizers.")
        for arg, opt in (("group_optimizer", group_optimizer), ("rest_optimizer", rest_optimizer)):
            if not isinstance(opt, keras.optimizers.Optimizer):
                raise ValueError(f"`{arg}` must be a keras.optimizers.Optimizer. Received: {opt!r}")
        if group_optimizer is rest_optimizer:
            raise ValueError("`group_optimizer` and `rest_optimizer` must be two different optimizers.")
        steps = [accumulation_steps(o) for o in (group_optimizer, rest_optimizer)]
        if steps[0] != steps[1]:
            raise ValueError(
                "`group_optimizer` and `rest_optimizer` must accumulate the same number of micro-batches "
                f"(gradient_accumulation_steps={steps[0]!r} and {steps[1]!r}): a real update of the "
                "partitioned optimizer is one in which both update. Give both the same value.")
        if group is None and model is not None:
            group = invariant_group(model)
        elif group is not None and model is not None:
            from keras_explr import invariance

            invariance.confirm_group(model, group)
        if group is None:
            raise ValueError("Give `group` (a list of variables or variable paths) or `model`.")
        try:
            paths = [v if isinstance(v, str) else v.path for v in group]
        except (TypeError, AttributeError):
            paths = []
        if not paths:
            raise ValueError("`group` must be a non-empty list of variables or variable paths. "
                             f"Received: group={group!r}")
        super().__init__(learning_rate=0.0, name=name)
        if group_optimizer.name == rest_optimizer.name:
            # Keras's callbacks log one `learning_rate_<name>` per sub-optimizer: two equal
            # names would overwrite each other (e.g. two SGDs, both named "SGD").
            for role, opt in (("group", group_optimizer), ("rest", rest_optimizer)):
                if opt.built:
                    raise ValueError(
                        f"`group_optimizer` and `rest_optimizer` are both named {opt.name!r} and are "
                        "already built (so they cannot be renamed): give them distinct `name`s.")
            base = group_optimizer.name
            group_optimizer.name, rest_optimizer.name = f"{base}_group", f"{base}_rest"
        self.group_optimizer = group_optimizer
        self.rest_optimizer = rest_optimizer
        self._refs = types.SimpleNamespace(paths=paths, path_set=frozenset(paths))
        self._untracked = types.SimpleNamespace(variables=())

    @classmethod
    def explr_twin(cls, model, learning_rate, weight_decay, momentum, exact=True, name=None,
                   **optimizer_kwargs):
        """The WD-free twin of `keras_explr.optimizers.SGD(learning_rate, momentum,
        weight_decay, **optimizer_kwargs)` on `model`: ExpLR on the invariant group,
        the rest unchanged.

        `optimizer_kwargs` (e.g. ``gradient_accumulation_steps``, ``use_ema``) go to
        both inner optimizers, as they went to the weight-decay run. Gradient clipping
        is refused: a threshold does not transform with the group's scale, so the
        clipped twin would not be the same run.

        Args:
          model (keras.Model): the model whose invariant group gets ExpLR.
          learning_rate, weight_decay, momentum (float): the weight-decay run's η, coupled λ and γ.
          exact (bool): True: the twin of the run from zero momentum buffers (what Keras
            does); False: the paper's closed form (`keras_explr.schedules.ExpLR.from_weight_decay`).
          name (str | None): optional name.
          **optimizer_kwargs (Any): passed to both inner `SGD`s.

        Returns:
          (Partitioned): the twin.
        """
        from keras_explr import schedules

        clipping = sorted(k for k in ("clipnorm", "global_clipnorm", "clipvalue") if optimizer_kwargs.get(k))
        if clipping:
            raise ValueError(
                f"Partitioned.explr_twin cannot clip gradients ({', '.join(clipping)}): the group's "
                "gradients scale as 1/c_t in the twin, so a clipping threshold would clip the two runs "
                "differently. Remove the clipping.")
        sched = schedules.ExpLR.from_weight_decay(learning_rate, weight_decay, momentum, exact=exact)
        return cls(SGD(sched, momentum=sched.momentum, **optimizer_kwargs),
                   SGD(learning_rate, momentum=momentum, weight_decay=weight_decay, **optimizer_kwargs),
                   model=model, name=name)

    @property
    def group(self):
        """The paths of the group's variables."""
        return list(self._refs.paths)

    def inner_optimizers(self, variables=()):
        """The wrapper protocol: [(group_optimizer, the group's variables), (rest_optimizer, the rest)]."""
        paths = self._refs.path_set
        variables = list(variables)
        return [(self.group_optimizer, [v for v in variables if v.path in paths]),
                (self.rest_optimizer, [v for v in variables if v.path not in paths])]

    loss_scale_factor = forwarded_loss_scale_factor("group_optimizer", "rest_optimizer")

    @property
    def optimizers(self):
        """[group_optimizer, rest_optimizer], as Keras's multi-optimizer lists them."""
        return [self.group_optimizer, self.rest_optimizer]

    def build(self, var_list):
        if self.built:
            return
        paths = self._refs.path_set
        missing = paths - {v.path for v in var_list}
        if missing:
            raise ValueError(f"`group` names variables the optimizer does not train: {sorted(missing)}")
        self.group_optimizer.build([v for v in var_list if v.path in paths])
        self.rest_optimizer.build([v for v in var_list if v.path not in paths])
        super().build(var_list)
        self._untracked.variables = tuple(var_list)

    @property
    def variables(self):
        return super().variables + self.group_optimizer.variables + self.rest_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        variables = built_on(self, trainable_variables)
        paths = self._refs.path_set
        inside = [(g, v) for g, v in zip(grads, variables) if v.path in paths]
        outside = [(g, v) for g, v in zip(grads, variables) if v.path not in paths]
        for opt, pairs in ((self.group_optimizer, inside), (self.rest_optimizer, outside)):
            if pairs:
                opt.apply(*map(list, zip(*pairs)))
        # `iterations` counts real updates, as Keras's own (with gradient_accumulation_steps=n
        # only every n-th call is one): the group optimizer's count.
        self.iterations.assign(ops.cast(value(self.group_optimizer.iterations), self.iterations.dtype))

    def scale_loss(self, loss):
        return self.group_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        for opt in self.optimizers:
            opt.finalize_variable_values([v for v in var_list if (v.path in self._refs.path_set)
                                          == (opt is self.group_optimizer)])

    @property
    def learning_rate(self):
        return self.group_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        raise TypeError(
            "Partitioned has two learning rates, so `learning_rate` cannot be set as one number. "
            "Set it on one of `optimizer.optimizers` (group_optimizer, rest_optimizer); Keras's "
            "LearningRateScheduler does that for you. For an ExpLR twin (Partitioned.explr_twin) "
            "the two rates are tied by the theorem: to change the original LR mid-run, build the "
            "twin of the whole schedule (keras_explr.schedules.TEXP or EquivalentSchedule) instead.")

    def get_config(self):
        return {
            "name": self.name,
            "group_optimizer": keras.saving.serialize_keras_object(self.group_optimizer),
            "rest_optimizer": keras.saving.serialize_keras_object(self.rest_optimizer),
            "group": list(self._refs.paths),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = [keras.saving.deserialize_keras_object(config.pop(k), custom_objects=custom_objects)
                 for k in ("group_optimizer", "rest_optimizer")]
        return cls(*inner, **config)
