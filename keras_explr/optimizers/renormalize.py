"""`Renormalize`: Lemma 2's equivalent rescaling, so exponential runs stay in range."""

import types

import keras
import numpy as np
from keras import ops

from keras_explr import _float32, _keras_internals, _precision, theory
from keras_explr.optimizers import _wrapper
from keras_explr.optimizers._wrapper import Wrapper, built_on, value
from keras_explr.optimizers.sgd import SGD


@keras.saving.register_keras_serializable(package="keras_explr")
class Renormalize(Wrapper):
    """Keeps an exponential-LR run in float range by Lemma 2's equivalent rescaling.

    On a loss that is scale-invariant in a group θ of variables, the step
    (θ, η) ↦ (θ/s, η/s²) commutes with SGD (Li & Arora, Lemma 2). Every
    ``every_n_steps`` real updates, and/or whenever ‖θ‖ exceeds ``max_norm``,
    this wrapper sets s = ‖θ‖/‖θ_ref‖ (‖θ_ref‖: ``target_norm``, or the norm
    after the first update) and, after the update, rescales (docs/math.md,
    "Renormalization"; `theory.equivalent_rescaling`):

    * the group's weights θ ← θ/s;
    * their momentum buffers: v ← s·v for `keras_explr.optimizers.SGD` (a
      buffer of gradients), m ← m/s for `keras.optimizers.SGD` (a buffer of
      displacements);
    * their learning rate, through the cumulative log-scale ``log_scale``
      (an optimizer variable, so it is saved, restored and distributed):
      η_t ← η_t · exp(−2·log_scale), formed in log space for this package's
      schedules so that it never overflows. The wrapper gives its inner
      optimizer this learning rate (through the public ``learning_rate``
      setter); variables outside the group get their gradient multiplied by
      exp(2·log_scale) instead, which is the same update at their own LR η_t;
    * with ``model=...``: the moving mean and variance of every BatchNorm whose
      input has degree d in the group (mean/s^d, variance/s^(2d)).

    The run stays the same run in function space: with renormalization every
    25 steps it equals the run without it to ~1e-15 (float64), while weights
    and LR stay bounded. The norm is computed only on the steps that
    renormalize (and once, after the first update, for the reference); with
    ``max_norm`` it is computed after every update (one pass over the group's
    weights per step).

    Args:
      inner_optimizer (keras.optimizers.Optimizer): `keras_explr.optimizers.SGD` or `keras.optimizers.SGD`
        (optionally inside a `LossScaleOptimizer`), without weight decay or
        gradient clipping (clipping thresholds do not transform under Lemma 2).
      every_n_steps (int | None): renormalize after every n-th real update (None: never by
        count).
      max_norm (float | None): renormalize after any update that leaves ‖θ‖ > max_norm.
      model (keras.Model | None): the model; lets the wrapper find the group (the largest set of
        trainable variables its loss is jointly scale-invariant in, see
        `keras_explr.invariance.invariant_group`) and the BatchNorm statistics
        to rescale. After `keras.saving.load_model`, call
        ``optimizer.set_model(model)`` again (training refuses to go on
        without it rather than silently stop rescaling the statistics).
      variables (list[keras.Variable] | None): the group explicitly (default: found from `model`, else every
        variable the optimizer trains, the paper's setting).
      target_norm (float | None): the norm to rescale back to (default: the first update's).
      name (str | None): optional name.

    Example:

    >>> import keras, keras_explr
    >>> lr = keras_explr.schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9)
    >>> opt = keras_explr.optimizers.Renormalize(
    ...     keras_explr.optimizers.SGD(lr, momentum=0.9), every_n_steps=1000)
    >>> opt.every_n_steps
    1000
    """

    def __init__(self, inner_optimizer, every_n_steps=None, max_norm=None, model=None,
                 variables=None, target_norm=None, name=None, **kwargs):
        if kwargs:
            raise ValueError(f"Renormalize does not support {sorted(kwargs)}: set them on the `inner_optimizer`.")
        target = _wrapper.unscaled(inner_optimizer) if isinstance(inner_optimizer, keras.optimizers.Optimizer) else None
        if target is not None and _wrapper.inner_optimizers(target):
            raise ValueError(
                f"`inner_optimizer` is a {type(target).__name__}, which delegates to other optimizers: "
                "Renormalize must wrap one SGD directly (optionally in a LossScaleOptimizer). It already "
                "keeps the variables outside its group (`variables=` / `model=`) at their own LR η_t; "
                "a weight decay goes outside it: ReparamWeightDecay(Renormalize(SGD(...)), λ) "
                "(decoupled mode).")
        if isinstance(target, SGD):
            convention = "paper"
        elif isinstance(target, keras.optimizers.SGD):
            convention = "keras"
        else:
            raise ValueError(
                "`inner_optimizer` must be keras_explr.optimizers.SGD or keras.optimizers.SGD "
                "(optionally in a LossScaleOptimizer): Lemma 2's rescaling (θ/s, η/s²) is an "
                f"equivalence for SGD only. Received: {inner_optimizer!r}"
            )
        if getattr(target, "weight_decay", None):
            raise ValueError(
                "`inner_optimizer` has weight decay: renormalize the WD-free (ExpLR/TEXP) twin "
                "instead; with weight decay the weights do not grow."
            )
        clipping = sorted(k for k in ("clipnorm", "global_clipnorm", "clipvalue") if getattr(target, k, None))
        if clipping:
            raise ValueError(
                f"`inner_optimizer` clips gradients ({', '.join(clipping)}): a clipping threshold "
                "does not transform under Lemma 2's rescaling (the group's gradients grow by s when "
                "its weights shrink by s), so the renormalized run would not be the same run. "
                "Remove the clipping.")
        if every_n_steps is None and max_norm is None:
            raise ValueError("Give `every_n_steps` (an integer >= 1) or `max_norm` (> 0), or both.")
        every = None if every_n_steps is None else theory.check_steps("every_n_steps", every_n_steps)
        max_norm = None if max_norm is None else theory.check_positive("max_norm", max_norm)
        target_norm = None if target_norm is None else theory.check_positive("target_norm", target_norm)
        base = _learning_rate_of(target)
        super().__init__(inner_optimizer, name=name)
        self.every_n_steps, self.max_norm, self.target_norm = every, max_norm, target_norm
        self.convention = convention
        self._target = target
        self._powers = theory.equivalent_rescaling(convention)
        self._base = base  # the LR the user gave: a float or a LearningRateSchedule
        # Plain holder: Keras would track lists of variables assigned to the optimizer
        # as optimizer state (and then fail to reload it).
        self._refs = types.SimpleNamespace(
            group=None if variables is None else list(variables),
            statistics=[],           # (moving_mean, moving_variance, degree)
            group_paths=None,        # from a saved config: the group, by variable path
            statistics_paths=[],     # from a saved config: BN statistics still to attach
        )
        if model is not None:
            self.set_model(model)
        target.learning_rate = _RenormalizedLearningRate(self)

    def set_model(self, model):
        """Finds the group and the BatchNorm statistics to rescale from `model`.

        Call it again after `keras.saving.load_model` when the model has
        BatchNorm layers: a saved optimizer remembers its group but cannot hold
        references to the model's statistics.
        """
        from keras_explr import invariance

        refs = self._refs
        if refs.group_paths is not None and refs.group is None:
            by_path = {v.path: v for v in model.trainable_variables}
            refs.group = [by_path[p] for p in refs.group_paths if p in by_path]
        if refs.group is None:
            refs.group = invariant_group(model)
        invariance.confirm_group(model, refs.group)
        refs.statistics = []
        for layer, d in invariance.normalization_input_degrees(model, refs.group).items():
            if d is None:
                raise ValueError(f"cannot tell how the input of {layer.name} scales with the group")
            if d and isinstance(layer, keras.layers.BatchNormalization):
                refs.statistics.append((layer.moving_mean, layer.moving_variance, d))
        refs.statistics_paths = []
        if refs.statistics and keras.backend.backend() == "jax":
            raise ValueError(
                "On JAX the optimizer cannot rescale BatchNorm's moving statistics (they are not "
                "optimizer state under jit). Pass `variables=` instead of `model=` and recompute the "
                "statistics before inference, or use the TensorFlow or PyTorch backend."
            )

    # -- state ------------------------------------------------------------------
    def build(self, var_list):
        if self.built:
            return
        # float64 for a float64 model where the device has it; otherwise float32 with
        # the log-scale kept as a double-float pair (log_scale + log_scale_residual),
        # so that no 64-bit float enters the compiled step (TPUs have none).
        dtype = _precision.compute_dtype()
        self._pair = dtype == "float32"
        self.log_scale = self.add_variable((), initializer="zeros", dtype=dtype, name="log_scale")
        self.reference_norm = self.add_variable((), initializer="zeros", dtype=dtype, name="reference_norm")
        if not isinstance(self._base, keras.optimizers.schedules.LearningRateSchedule):
            # (its value as the initializer: `fit` may build the optimizer inside a scope
            # that discards assignments, and an assigned value was lost there)
            self._base = self.add_variable((), initializer=keras.initializers.Constant(self._base),
                                           dtype=dtype, name="base_learning_rate")
        # (a float64 model keeps it too, at zero, so that checkpoints cross precisions)
        self.log_scale_residual = self.add_variable(
            (), initializer="zeros", dtype=dtype, name="log_scale_residual")
        super().build(var_list)
        self._untracked.own_state += [self.log_scale, self.reference_norm] + (
            [self._base] if isinstance(self._base, keras.Variable) else []) + [self.log_scale_residual]
        refs = self._refs
        if refs.group is None and refs.group_paths is not None:
            by_path = {v.path: v for v in var_list}
            refs.group = [by_path[p] for p in refs.group_paths if p in by_path]
        if refs.group is None:
            refs.group = list(var_list)
        ids = {id(v) for v in refs.group}
        self._rest_ids = {id(v) for v in var_list} - ids
        self._index = {id(v): i for i, v in enumerate(var_list)}
        self._untracked.variables = tuple(var_list)

    def load_own_variables(self, store):
        if not self.built:
            return super().load_own_variables(store)
        n = len(self.variables)
        values = [np.asarray(store[str(i)]) for i in range(len(store.keys()))]
        if len(values) == n - 1:  # a save from before the log-scale residual (the last variable)
            values.append(np.zeros((), values[-1].dtype))
        if len(values) != n:
            return super().load_own_variables(store)  # (Keras's own error)
        ids = [id(v) for v in self.variables]
        hi, lo = ids.index(id(self.log_scale)), ids.index(id(self.log_scale_residual))
        if self._pair and values[hi].dtype == np.float64:
            # A float64 log-scale into a float32 pair: split it, keeping ~48 bits of it.
            total = values[hi] + values[lo].astype(np.float64)
            values[hi] = total.astype(np.float32)
            values[lo] = (total - values[hi].astype(np.float64)).astype(np.float32)
        for variable, x in zip(self.variables, values):
            variable.assign(ops.cast(x, variable.dtype))

    def _log_scale_pair(self, power=1):
        """power × the cumulative log-scale: a float32 (hi, lo) pair, or a float64 tensor."""
        hi, lo = value(self.log_scale), value(self.log_scale_residual)
        if not self._pair:  # (the residual is zero unless a float32 checkpoint was loaded)
            return (hi + lo) * power if power != 1 else hi + lo
        if power == 1:
            return hi, lo
        p = ops.convert_to_tensor(float(power), "float32")  # ±2: exact
        return hi * p, lo * p

    @property
    def learning_rate(self):
        """The learning rate the run would have without renormalization, η_t."""
        if isinstance(self._base, keras.optimizers.schedules.LearningRateSchedule):
            return self._base(self._target.iterations)
        return value(self._base) if isinstance(self._base, keras.Variable) else self._base

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if isinstance(self._base, keras.optimizers.schedules.LearningRateSchedule):
            raise TypeError(
                "This Renormalize optimizer's learning rate is a LearningRateSchedule, so it is "
                "not settable (as for any Keras optimizer built with a schedule).")
        learning_rate = theory.check_positive("learning_rate", float(learning_rate))
        if isinstance(self._base, keras.Variable):
            self._base.assign(learning_rate)
        else:
            self._base = learning_rate

    # -- the step -----------------------------------------------------------------
    def apply(self, grads, trainable_variables=None):
        # Checked before the inner step, so that a refused step leaves the weights untouched.
        if self._refs.statistics_paths:
            raise ValueError(
                "This Renormalize optimizer was loaded from a save in which it also rescaled "
                f"BatchNorm statistics ({', '.join(self._refs.statistics_paths)}); call "
                "`model.optimizer.set_model(model)` after load_model, before training on."
            )
        trainable_variables = built_on(self, trainable_variables)
        grads = list(grads)
        if self._rest_ids:  # their update at the group's LR η_t·e^(−2L): gradient × e^(2L)
            factor = self._log_scale_pair(-self._powers["learning_rate"])
            factor = _float32.exp_pair(*factor) if self._pair else ops.exp(factor)
            grads = [g if g is None or id(v) not in self._rest_ids else g * ops.cast(factor, g.dtype)
                     for g, v in zip(grads, trainable_variables)]
        if _precision.on_host():  # eager PyTorch: the decision on the host, no tensor op on a plain step
            before = int(_precision.host_read(self._target.iterations))
            self.inner_optimizer.apply(grads, trainable_variables)
            self._renormalize_on_host(before, int(_precision.host_read(self._target.iterations)))
            return
        before = ops.copy(value(self._target.iterations))
        self.inner_optimizer.apply(grads, trainable_variables)
        self._renormalize(ops.greater(value(self._target.iterations), before))

    def _renormalize_on_host(self, before, iterations):
        """`_renormalize` for eager PyTorch: the same rule, decided with Python numbers
        (the update counts before and after the inner update)."""
        if iterations == before:  # no real update (an accumulation micro-step, a skipped step)
            return
        trigger = bool(self.every_n_steps) and iterations % self.every_n_steps == 0
        norm = None
        if self.max_norm:
            norm = self._group_norm()
            trigger = trigger or float(_precision.host_read(norm)) > self.max_norm
        ref = value(self.reference_norm)
        if trigger or (self.target_norm is None and float(_precision.host_read(ref)) == 0.0):
            targets = self._state()
            self._assign(targets, self._renormalized_values(
                targets, self._current(targets, ref), ops.convert_to_tensor(trigger), ref, norm))

    def _group_norm(self):
        return self._norm_of([value(v) for v in self._refs.group])

    def _norm_of(self, tensors):
        """The 2-norm of `tensors` together, in the log-scale's dtype: one norm op per
        tensor (one pass over it, no weight-sized temporary on eager PyTorch)."""
        dtype = self.log_scale.dtype
        norms = [ops.norm(ops.reshape(ops.cast(x, dtype), (-1,))) for x in tensors]
        return norms[0] if len(norms) == 1 else ops.norm(ops.stack(norms))

    def _renormalize(self, updated):
        ref = value(self.reference_norm)
        trigger = ops.convert_to_tensor(False)
        if self.every_n_steps:
            trigger = ops.logical_and(updated, ops.equal(
                ops.mod(value(self._target.iterations), self.every_n_steps), 0))
        norm = None
        if self.max_norm:  # needs the norm after every update
            norm = self._group_norm()
            trigger = ops.logical_or(trigger, ops.logical_and(updated, ops.greater(norm, self.max_norm)))
        need = trigger
        if self.target_norm is None:  # the reference: the norm after the first update
            need = ops.logical_or(need, ops.logical_and(updated, ops.equal(ref, 0)))
        targets = self._state()

        def renormalized():  # (read inside the loop body: after the inner update)
            return self._renormalized_values(targets, self._current(targets, ref), trigger, ref, norm)

        # The passes over weights and buffers run only on the (few) renormalizing steps.
        # A loop that runs `need` (0 or 1) times, not a cond: under XLA (TF jit_compile,
        # JAX) a conditional whose untaken branch passes the weights through copies
        # them on every step (2.5x the inner update at 16M parameters), while a loop
        # updates its carried buffers in place.
        backend = keras.backend.backend()
        times = ops.cast(need, "int32")
        if backend == "jax":
            # Assignments inside a traced loop would leak tracers: the body returns values.
            current = self._current(targets, ref)

            def body(i, state):
                return i + 1, self._renormalized_values(targets, state, trigger, ref, norm)

            _, new = ops.while_loop(lambda i, state: i < times, body, (ops.zeros((), "int32"), current),
                                    maximum_iterations=1)
            self._assign(targets, new)
        elif backend == "tensorflow":
            def body(i):
                self._assign(targets, renormalized())
                return i + 1

            ops.while_loop(lambda i: i < times, body, ops.zeros((), "int32"), maximum_iterations=1)
        else:  # torch under torch.compile (eager PyTorch decides on the host)
            if bool(ops.convert_to_numpy(need)):
                self._assign(targets, renormalized())

    def _renormalized_values(self, targets, state, trigger, ref, norm):
        """Lemma 2 at a step boundary on values (theory.equivalent_rescaling): every target × s**p,
        the log-scale + log s, and the reference; state = the targets' values, log-scale, reference."""
        k = len(targets)
        group_ids = {id(v) for v in self._refs.group}
        if norm is None:
            norm = self._norm_of([x for (v, _), x in zip(targets, state[:k]) if id(v) in group_ids])
        if self.target_norm is not None:
            r = ops.convert_to_tensor(self.target_norm, norm.dtype)
        else:
            r = ops.where(ops.greater(ref, 0), ref, norm)
        s = ops.where(trigger, norm / r, ops.ones_like(norm))
        out = [x * ops.cast(s ** p, x.dtype) for (_, p), x in zip(targets, state[:k])]
        return out + self._next_log_scale(state[k:-1], s) + [r]

    def _current(self, targets, ref):
        """The state `_renormalized_values` rescales: the targets' values, the log-scale pair, ref."""
        return [value(v) for v, _ in targets] + [value(self.log_scale), value(self.log_scale_residual), ref]

    def _assign(self, targets, new):
        """Writes what `renormalized` computed: the rescaled state, the log-scale, the reference."""
        for (v, _), x in zip(targets, new[:len(targets)]):
            v.assign(x)
        k = len(targets)
        self.log_scale.assign(new[k])
        self.log_scale_residual.assign(new[k + 1])
        self.reference_norm.assign(new[-1])

    def _buffer(self, variable):
        if self.convention == "paper":
            return self._target.momentum_buffer(variable)
        buffers = getattr(self._target, "momentums", None)  # Keras SGD: one per variable, in build order
        return buffers[self._index[id(variable)]] if buffers else None

    def _state(self):
        """(variable, power of s it is multiplied by) for everything a renormalization rescales."""
        p = self._powers
        out = []
        averages = _keras_internals.moving_averages(self._target)  # use_ema: rescaled with the weights
        for v in self._refs.group:
            out.append((v, p["weights"]))
            if averages:
                out.append((averages[self._index[id(v)]], p["weights"]))
            b = self._buffer(v)
            if b is not None:
                out.append((b, p["momentum_buffer"]))
        if self.convention == "paper":  # the rest's buffers hold gradients × e^(2L)
            for v in self._untracked.variables:
                b = self._buffer(v) if id(v) in self._rest_ids else None
                if b is not None:
                    out.append((b, -p["learning_rate"]))
        for mean, var, d in self._refs.statistics:
            out.append((mean, p["moving_mean"] * d))
            out.append((var, p["moving_variance"] * d))
        return out

    def _next_log_scale(self, current, s):
        """The log-scale after rescaling by s: [L + log s], or a (hi, lo) pair."""
        log_s = ops.cast(ops.log(s), self.log_scale.dtype)
        if not self._pair:
            return [current[0] + current[1] + log_s, ops.zeros_like(log_s)]
        # double-float: (hi, lo) + log s, so that the offset keeps ~48 bits however large
        hi, e = _float32.two_sum(current[0], log_s)
        return list(_float32.two_sum(hi, current[1] + e))

    def get_config(self):
        inner = keras.saving.serialize_keras_object(self.inner_optimizer)
        base = self._base
        if isinstance(base, keras.Variable):
            base = float(ops.convert_to_numpy(base))
        elif isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = keras.saving.serialize_keras_object(base)
        inner = _with_learning_rate(inner, base)  # the user's LR, not the renormalized one
        return {
            "name": self.name,
            "inner_optimizer": inner,
            "every_n_steps": self.every_n_steps,
            "max_norm": self.max_norm,
            "target_norm": self.target_norm,
            # (unbuilt after from_config: the group is still only known by path)
            "group": (self._refs.group_paths if self._refs.group is None
                      else [v.path for v in self._refs.group]),
            "statistics": [m.path for m, _, _ in self._refs.statistics] + self._refs.statistics_paths,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        group, statistics = config.pop("group", None), config.pop("statistics", [])
        self = super().from_config(config, custom_objects=custom_objects)
        self._refs.group_paths = group
        self._refs.statistics_paths = list(statistics)
        return self


class _RenormalizedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """η_t·exp(−2·log_scale), in log space for this package's schedules (never overflowing)."""

    def __init__(self, owner):
        self._owner = owner

    def __call__(self, step):
        owner = self._owner
        base = owner._base
        if not owner.built:
            return base(step) if callable(base) else base
        if hasattr(base, "scaled"):  # this package's schedules: the precision policy's seam
            return base.scaled(step, (value(owner.log_scale), value(owner.log_scale_residual)),
                               power=owner._powers["learning_rate"])
        log_factor = owner._log_scale_pair(owner._powers["learning_rate"])
        lr = base(step) if callable(base) else value(base)
        if owner._pair:
            return ops.cast(lr, "float32") * _float32.exp_pair(*log_factor)
        return ops.cast(lr, log_factor.dtype) * ops.exp(log_factor)

    def get_config(self):
        # Renormalize.get_config puts the user's learning rate in its place.
        return {}


def _learning_rate_of(optimizer):
    """The learning rate `optimizer` was given: a float or a LearningRateSchedule."""
    config = optimizer.get_config()["learning_rate"]
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    if isinstance(config, (int, float)):
        return float(config)
    raise ValueError(
        "`inner_optimizer`'s learning rate must be a float or a LearningRateSchedule, so that "
        f"Renormalize can rescale it. Received: {config!r}")


def _with_learning_rate(serialized, learning_rate):
    config = dict(serialized["config"])
    if "inner_optimizer" in config:  # LossScaleOptimizer
        config["inner_optimizer"] = _with_learning_rate(config["inner_optimizer"], learning_rate)
    else:
        config["learning_rate"] = learning_rate
    return dict(serialized, config=config)


def invariant_group(model):
    """The largest group of trainable variables the loss of `model` is jointly scale-invariant in."""
    from keras_explr import invariance

    group = invariance.invariant_group(model)
    if not group:
        raise ValueError("`model` has no trainable variable its loss is scale-invariant in "
                         "(see keras_explr.invariance.scale_invariant_variables).")
    return group
