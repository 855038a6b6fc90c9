"""Optimizers with the paper's (PyTorch's) SGD convention, and wrappers."""

import numbers
import types

import keras
import numpy as np
from keras import ops

from keras_explr import theory


@keras.saving.register_keras_serializable(package="keras_explr")
class SGD(keras.optimizers.Optimizer):
    """SGD with momentum as in Li & Arora's Definition 1.2 and `torch.optim.SGD`.

    **`weight_decay` is coupled L2 decay λ that enters the momentum buffer,**
    as in the paper and PyTorch. It is *not* Keras's decoupled
    ``weight_decay`` (θ ← θ − η w θ, outside the buffer), and the base class's
    decoupled decay is never applied.

    For each variable θ with gradient g, learning rate η_t, momentum γ:

    * without nesterov: v ← γ v + g + λθ;            θ ← θ − η_t v
    * with nesterov:    v ← γ v + g + λθ;            θ ← θ − η_t (g + λθ + γ v)

    with v_0 = 0. The buffer holds gradients and the LR is applied when it is
    used, so a changing LR rescales the whole step. `keras.optimizers.SGD`
    instead keeps m ← γ m − η_t g (the LR is folded into the buffer), which is
    a different algorithm as soon as η_t changes (MATH.md §1); the paper's
    theorems hold verbatim here. λ is skipped for variables excluded with
    `exclude_from_weight_decay`. Hyperparameters keep their Python-float
    precision and are cast once, at use, to each variable's dtype.

    Args:
      learning_rate: a float > 0, a `LearningRateSchedule` (e.g.
        `keras_explr.schedules.ExpLR`) or a callable.
      momentum: γ in [0, 1).
      nesterov: whether to use Nesterov momentum.
      weight_decay: coupled λ ≥ 0, or None for none.
      **kwargs: the base optimizer's arguments (clipnorm, global_clipnorm,
        use_ema, gradient_accumulation_steps, loss_scale_factor, name, ...).

    Example:

    >>> import keras, keras_explr
    >>> wd_run = keras_explr.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4)
    >>> lr = keras_explr.schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9)
    >>> twin = keras_explr.optimizers.SGD(lr, momentum=lr.momentum)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False,
                 weight_decay=None, name="SGD", **kwargs):
        if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, (bool, np.bool_)):
            learning_rate = theory.check_positive("learning_rate", learning_rate)
        elif not callable(learning_rate):
            raise ValueError(
                "`learning_rate` must be a float > 0, a LearningRateSchedule or a "
                f"callable. Received: learning_rate={learning_rate!r}"
            )
        momentum = theory.check_momentum(momentum)
        if weight_decay is not None:
            weight_decay = theory.check_non_negative("weight_decay", weight_decay)
        if not isinstance(nesterov, bool):
            raise ValueError(f"`nesterov` must be True or False. Received: nesterov={nesterov!r}")
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        self.weight_decay = weight_decay  # coupled; see _apply_weight_decay
        self.momentum = momentum
        self.nesterov = nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0.0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _apply_weight_decay(self, variables):
        # The base class would apply Keras's decoupled decay here; ours is coupled.
        return

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        d = ops.cast(gradient, dtype)
        if self.weight_decay and self._use_weight_decay(variable):
            d = ops.add(d, ops.multiply(ops.convert_to_tensor(self.weight_decay, dtype), variable))
        if self.momentum == 0.0:
            self.assign_sub(variable, ops.multiply(lr, d))
            return
        gamma = ops.convert_to_tensor(self.momentum, dtype)
        v = self.momentums[self._get_variable_index(variable)]
        new_v = ops.add(ops.multiply(gamma, v), d)
        self.assign(v, new_v)
        step = ops.add(d, ops.multiply(gamma, new_v)) if self.nesterov else new_v
        self.assign_sub(variable, ops.multiply(lr, step))

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        })
        return config


class _Wrapper(keras.optimizers.Optimizer):
    """What an optimizer that wraps ``inner_optimizer`` delegates to it, as
    `keras.optimizers.LossScaleOptimizer` does."""

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        self.inner_optimizer.apply(grads, trainable_variables)

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)


@keras.saving.register_keras_serializable(package="keras_explr")
class ReparamWeightDecay(_Wrapper):
    """Weight decay in the new parameterization: θ ← (1 − λ_new) θ − η_t · update.

    Li & Arora (blog, part 2) suggest λ_new = λ_old · η: the decay per step no
    longer rides on the learning rate, so LR and WD stop being entangled, and
    on a scale-invariant network the whole trajectory depends on (η, θ_0) only
    through η/‖θ_0‖² (MATH.md §4.2). Wraps any Keras optimizer, in the manner
    of `keras.optimizers.LossScaleOptimizer`.

    Modes (each real update, for every decayed variable θ):

    * ``"decoupled"`` (default, N2): θ ← (1 − λ_t) θ, then the inner
      optimizer's update. With a zero gradient one step gives exactly
      (1 − λ)θ for any LR, 0 included; Keras's built-in gives (1 − ηλ)θ.
    * ``"coupled"`` (N1, for momentum SGD, paper-consistent): (λ_t/η_t) θ is
      added to the (clipped) gradient, so with `keras_explr.optimizers.SGD`
      v ← γv + g + (λ_t/η_t)θ, θ ← θ − η_t v; its growth root solves
      x² − (1+γ−λ_new)x + γ = 0, independent of η.

    λ_t = λ_new, or with ``follow_schedule=True`` λ_t = λ_new · η_t/η_0, which
    "mimics step decay" as the authors suggest (divide WD with the LR). That
    rule is exactly the standard parameterization with λ_old = λ_new/η_0 (in
    coupled mode around `keras_explr.optimizers.SGD`, the paper's coupled
    λ_old; in decoupled mode, Keras's ``weight_decay=λ_new/η_0``): only the
    coordinates of the hyperparameters change. λ_new constant is the
    genuinely different algorithm.

    The decay is applied where Keras applies its own weight decay (the wrapper
    installs it in its inner optimizer's ``_apply_weight_decay`` and, in coupled
    mode, ``_clip_gradients`` hooks), so it happens once per real update with
    ``gradient_accumulation_steps``, never on a step that a
    `LossScaleOptimizer` skips, before ``use_ema`` averages, and after
    ``global_clipnorm`` clipping. Like Keras's own weight decay, an inner
    update that reads θ (e.g. Lamb's trust ratio) sees the decayed θ.

    Args:
      inner_optimizer: any Keras optimizer (SGD, `keras_explr.optimizers.SGD`,
        Adam, Lion, ...; a `LossScaleOptimizer` too) without weight decay of
        its own: one that has it is rejected, as it would decay twice.
      weight_decay: λ_new in [0, 1): the fraction removed per update.
      mode: "decoupled" or "coupled".
      follow_schedule: scale λ with the LR's shape, λ_new · η_t/η_0.
      exclude_vectors: leave variables of rank < 2 (biases, BatchNorm and
        LayerNorm γ/β) undecayed (default True). Further exclusions:
        `exclude_from_weight_decay(var_list=..., var_names=...)`.
      name: optional name.

    Example:

    >>> import keras, keras_explr
    >>> opt = keras_explr.optimizers.ReparamWeightDecay(
    ...     keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-5)
    """

    def __init__(self, inner_optimizer, weight_decay, mode="decoupled",
                 follow_schedule=False, exclude_vectors=True, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"ReparamWeightDecay does not support {sorted(kwargs)}: set them on the "
                "`inner_optimizer`."
            )
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`inner_optimizer` must be a keras.optimizers.Optimizer instance. "
                f"Received: inner_optimizer={inner_optimizer!r}"
            )
        if isinstance(inner_optimizer, ReparamWeightDecay):
            raise ValueError("`inner_optimizer` is already a ReparamWeightDecay: it would decay twice.")
        target = _innermost(inner_optimizer)
        if getattr(target, "weight_decay", None):
            raise ValueError(
                f"`inner_optimizer` ({type(target).__name__}) already has "
                f"weight_decay={target.weight_decay!r}; it would decay twice. Create it "
                "with weight_decay=None and give the decay to ReparamWeightDecay."
            )
        lam = theory.check_non_negative("weight_decay", weight_decay)
        if not lam < 1.0:
            raise ValueError(
                "`weight_decay` (λ_new, the fraction removed per step) must be in the "
                f"range [0, 1). Received: weight_decay={weight_decay!r}"
            )
        if mode not in ("decoupled", "coupled"):
            raise ValueError(f"`mode` must be 'decoupled' or 'coupled'. Received: mode={mode!r}")
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.weight_decay = lam
        self.mode = mode
        self.follow_schedule = bool(follow_schedule)
        self.exclude_vectors = bool(exclude_vectors)
        self._target = target
        self._initial_lr = None
        if self.follow_schedule:
            lr0 = target._learning_rate
            lr0 = lr0(0) if callable(lr0) else lr0
            self._initial_lr = theory.check_positive(
                "initial learning rate (for follow_schedule=True)", float(ops.convert_to_numpy(lr0)))
        _install_hooks(self, target)

    # -- the decay, computed where Keras would apply its own -----------------
    def _decayed(self, variable):
        if self.exclude_vectors and len(variable.shape) < 2:
            return False
        return self._target._use_weight_decay(variable)

    def _lambda_t(self, dtype):
        lam = ops.convert_to_tensor(self.weight_decay, dtype)
        if not self.follow_schedule:
            return lam
        lr = ops.cast(self._target.learning_rate, dtype)
        return lam * lr / ops.convert_to_tensor(self._initial_lr, dtype)

    # -- delegation, as in LossScaleOptimizer ----------------------------------
    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self.inner_optimizer.variables

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        return self.inner_optimizer.stateless_apply(optimizer_variables, grads, trainable_variables)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        self._target.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "weight_decay": self.weight_decay,
            "mode": self.mode,
            "follow_schedule": self.follow_schedule,
            "exclude_vectors": self.exclude_vectors,
        }



def _by_path(paths, variables):
    """The variables named by `paths` (saved configs name variables by path)."""
    by_path = {v.path: v for v in variables}
    return [by_path[p] for p in paths if p in by_path]


def _value(x):
    """A variable's current value (JAX cannot trace Keras variables directly)."""
    return x.value if isinstance(x, keras.Variable) else x


def _innermost(optimizer):
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _install_hooks(wrapper, target):
    """Puts the reparameterized decay where Keras applies its own weight decay."""
    backend = keras.backend.backend()
    clip = target._clip_gradients
    backend_apply = target._backend_apply_gradients
    current = {"variables": []}

    def backend_apply_gradients(grads, trainable_variables):
        # The variables that `grads` belong to (Keras may have filtered some out).
        current["variables"] = list(trainable_variables)
        return backend_apply(grads, trainable_variables)

    def apply_weight_decay(variables):
        decayed = [v for v in variables if wrapper._decayed(v)]
        if wrapper.mode != "decoupled" or not decayed or wrapper.weight_decay == 0.0:
            return
        factors = {}  # 1 − λ_t, once per dtype (a Python float unless it follows the LR)
        for v in decayed:
            if v.dtype not in factors:
                factors[v.dtype] = (1.0 - wrapper._lambda_t(v.dtype) if wrapper.follow_schedule
                                    else 1.0 - wrapper.weight_decay)
        if backend == "tensorflow":
            _tf_distributed_scale(target, decayed, lambda v: factors[v.dtype])
        elif backend == "torch":
            import torch

            with torch.no_grad():
                for dtype, f in factors.items():
                    torch._foreach_mul_([v.value for v in decayed if v.dtype == dtype], f)
        else:
            for v in decayed:
                v.assign(v * factors[v.dtype])

    def clip_gradients(grads):
        grads = clip(grads)
        if wrapper.mode != "coupled" or wrapper.weight_decay == 0.0:
            return grads
        replicas = _replicas_in_sync()
        out = []
        for g, v in zip(grads, current["variables"]):
            if g is None or not wrapper._decayed(v):
                out.append(g)
                continue
            lr = ops.cast(target.learning_rate, v.dtype)
            # (λ_t/η_t)θ, and 0 where η_t = 0 (that step moves nothing anyway).
            coef = ops.where(ops.greater(lr, 0), wrapper._lambda_t(v.dtype) / ops.where(
                ops.greater(lr, 0), lr, ops.ones_like(lr)), ops.zeros_like(lr))
            if replicas > 1:  # TF all-reduces gradients by summing over replicas
                coef = coef / replicas
            out.append(ops.add(ops.cast(g, v.dtype), ops.multiply(coef, v)))
        return out

    target._backend_apply_gradients = backend_apply_gradients
    target._apply_weight_decay = apply_weight_decay
    target._clip_gradients = clip_gradients


def _tf_distributed_scale(optimizer, variables, factor):
    """variable ← factor(variable) · variable, the way Keras's TF optimizer
    applies weight decay (through the distribution strategy)."""
    import tensorflow as tf

    def fn(distribution, variables):
        for v in variables:
            f = factor(v)
            # (tf.cast of a Python float goes through float32: convert it at the variable's dtype)
            f = tf.constant(f, dtype=v.dtype) if isinstance(f, float) else tf.cast(f, v.dtype)
            distribution.extended.update(v.value, lambda var, f=f: var.assign(var * f), group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(fn, optimizer._distribution_strategy, variables)


def _replicas_in_sync():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


@keras.saving.register_keras_serializable(package="keras_explr")
class Renormalize(_Wrapper):
    """Keeps an exponential-LR run in float range by Lemma 2's equivalent rescaling.

    On a loss that is scale-invariant in a group θ of variables, the step
    (θ, η) ↦ (θ/s, η/s²) commutes with SGD (Li & Arora, Lemma 2). Every
    ``every_n_steps`` steps, and/or whenever ‖θ‖ exceeds ``max_norm``, this
    wrapper sets s = ‖θ‖/‖θ_ref‖ (‖θ_ref‖: ``target_norm``, or the norm at the
    first step) and, after the step, rescales (MATH.md §6.3,
    `theory.equivalent_rescaling`):

    * the group's weights θ ← θ/s;
    * their momentum buffers: v ← s·v for `keras_explr.optimizers.SGD` (a
      buffer of gradients), m ← m/s for `keras.optimizers.SGD` (a buffer of
      displacements);
    * their learning rate, through the cumulative log-scale ``log_scale``
      (an optimizer variable, so it is saved, restored and distributed):
      η_t ← η_t · exp(−2·log_scale), formed in log space for this package's
      schedules so that it never overflows;
    * with ``model=...``: the moving mean and variance of every BatchNorm whose
      input has degree d in the group (mean/s^d, variance/s^(2d)).

    The run stays the same run in function space: with renormalization every
    25 steps it equals the run without it to ~1e-15 (float64), while weights
    and LR stay bounded. Variables outside the group keep their LR unscaled.

    Args:
      inner_optimizer: `keras_explr.optimizers.SGD` or `keras.optimizers.SGD`
        (optionally inside a `LossScaleOptimizer`).
      every_n_steps: renormalize after every n-th step (None: never by count).
      max_norm: renormalize after any step that leaves ‖θ‖ > max_norm.
      model: the model; lets the wrapper find the group (the trainable
        variables its loss is structurally scale-invariant in, see
        `keras_explr.invariance`) and the BatchNorm statistics to rescale.
        After `keras.saving.load_model`, call ``optimizer.set_model(model)``
        again (training refuses to go on without it rather than silently
        stop rescaling the statistics).
      variables: the group explicitly (default: found from `model`, else every
        variable the optimizer trains, the paper's setting).
      target_norm: the norm to rescale back to (default: the first step's).
      name: optional name.

    Example:

    >>> lr = keras_explr.schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9)
    >>> opt = keras_explr.optimizers.Renormalize(
    ...     keras_explr.optimizers.SGD(lr, momentum=0.9), every_n_steps=1000, model=model)
    """

    def __init__(self, inner_optimizer, every_n_steps=None, max_norm=None, model=None,
                 variables=None, target_norm=None, name=None, **kwargs):
        if kwargs:
            raise ValueError(f"Renormalize does not support {sorted(kwargs)}: set them on the `inner_optimizer`.")
        target = _innermost(inner_optimizer) if isinstance(inner_optimizer, keras.optimizers.Optimizer) else None
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
        if every_n_steps is None and max_norm is None:
            raise ValueError("Give `every_n_steps` (an integer >= 1) or `max_norm` (> 0), or both.")
        every = None if every_n_steps is None else theory.check_steps("every_n_steps", every_n_steps)
        max_norm = None if max_norm is None else theory.check_positive("max_norm", max_norm)
        target_norm = None if target_norm is None else theory.check_positive("target_norm", target_norm)
        super().__init__(learning_rate=0.0, name=name)
        self.every_n_steps, self.max_norm, self.target_norm = every, max_norm, target_norm
        self.inner_optimizer = inner_optimizer
        self.convention = convention
        self._target = target
        self._powers = theory.equivalent_rescaling(convention)
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
        _install_lr_scale_hook(self, target)

    def set_model(self, model):
        """Finds the group and the BatchNorm statistics to rescale from `model`.

        Call it again after `keras.saving.load_model` when the model has
        BatchNorm layers: a saved optimizer remembers its group but cannot hold
        references to the model's statistics.
        """
        from keras_explr import invariance

        refs = self._refs
        if refs.group_paths is not None and refs.group is None:
            refs.group = _by_path(refs.group_paths, model.trainable_variables)
        if refs.group is None:
            refs.group = _invariant_group(model)
        if any(d != 0 for d in invariance.output_degree(model, refs.group)):
            raise ValueError("the loss is not invariant to scaling `variables` jointly; "
                             "see keras_explr.invariance.scale_invariant_variables.")
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
        self.inner_optimizer.build(var_list)
        dtype = "float64" if keras.backend.backend() != "jax" else keras.config.floatx()
        self.log_scale = self.add_variable((), initializer="zeros", dtype=dtype, name="log_scale")
        self.reference_norm = self.add_variable((), initializer="zeros", dtype=dtype, name="reference_norm")
        refs = self._refs
        if refs.group is None and refs.group_paths is not None:
            refs.group = _by_path(refs.group_paths, var_list)
        if refs.group is None:
            refs.group = list(var_list)
        self._group_ids = {id(v) for v in refs.group}
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    # -- the step -----------------------------------------------------------------
    def apply(self, grads, trainable_variables=None):
        # Checked before the inner step, so that a refused step leaves the weights untouched.
        if self._refs.statistics_paths:
            raise ValueError(
                "This Renormalize optimizer was loaded from a save in which it also rescaled "
                f"BatchNorm statistics ({', '.join(self._refs.statistics_paths)}); call "
                "`model.optimizer.set_model(model)` after load_model, before training on."
            )
        super().apply(grads, trainable_variables)
        self._renormalize()

    def _renormalize(self):
        dtype = self.log_scale.dtype
        group = self._refs.group
        sq = [ops.sum(ops.square(ops.cast(_value(v), dtype))) for v in group]
        norm = ops.sqrt(ops.sum(ops.stack(sq)))
        ref = _value(self.reference_norm)
        if self.target_norm is not None:
            ref_value = ops.convert_to_tensor(self.target_norm, dtype)
        else:
            ref_value = ops.where(ops.greater(ref, 0), ref, norm)
        self.reference_norm.assign(ref_value)
        trigger = ops.convert_to_tensor(False)
        if self.every_n_steps:
            trigger = ops.logical_or(trigger, ops.equal(
                ops.mod(_value(self._target.iterations), self.every_n_steps), 0))
        if self.max_norm:
            trigger = ops.logical_or(trigger, ops.greater(norm, self.max_norm))
        if keras.backend.backend() == "jax":
            # Assignments inside lax.cond would leak tracers: rescale by s = 1 when not triggered.
            self._rescale(ops.where(trigger, norm / ref_value, ops.ones_like(norm)))
        else:  # skip the passes over weights and buffers on the (many) untriggered steps
            ops.cond(trigger, lambda: self._rescale(norm / ref_value), lambda: None)

    def _rescale(self, s):
        """Lemma 2 at a step boundary: every quantity × s**p (theory.equivalent_rescaling)."""
        p = self._powers
        buffers = getattr(self._target, "momentums", [])
        for v in self._refs.group:
            v.assign(v * ops.cast(s ** p["weights"], v.dtype))
            if buffers:
                m = buffers[self._target._get_variable_index(v)]
                m.assign(m * ops.cast(s ** p["momentum_buffer"], m.dtype))
        for mean, var, d in self._refs.statistics:
            mean.assign(mean * ops.cast(s ** (p["moving_mean"] * d), mean.dtype))
            var.assign(var * ops.cast(s ** (p["moving_variance"] * d), var.dtype))
        self.log_scale.assign_add(ops.cast(ops.log(s), self.log_scale.dtype))

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
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


def _install_lr_scale_hook(wrapper, target):
    """The group's LR is η_t·exp(−2·log_scale); the rest keep η_t."""
    update = target._backend_update_step

    def backend_update_step(grads, trainable_variables, learning_rate):
        if not wrapper.built:
            return update(grads, trainable_variables, learning_rate)
        ids = wrapper._group_ids
        inside = [(g, v) for g, v in zip(grads, trainable_variables) if id(v) in ids]
        outside = [(g, v) for g, v in zip(grads, trainable_variables) if id(v) not in ids]
        if outside:
            update(*map(list, zip(*outside)), learning_rate)
        if inside:
            log_factor = wrapper._powers["learning_rate"] * wrapper.log_scale  # η·S^-2
            schedule = target._learning_rate
            if hasattr(schedule, "scaled"):  # this package's schedules: in log space, never overflowing
                lr = schedule.scaled(target._iterations, log_factor)
            else:
                lr = ops.cast(learning_rate, wrapper.log_scale.dtype) * ops.exp(log_factor)
            update(*map(list, zip(*inside)), lr)

    target._backend_update_step = backend_update_step


@keras.saving.register_keras_serializable(package="keras_explr")
class Partitioned(keras.optimizers.Optimizer):
    """Two optimizers, one for a group of variables and one for the rest.

    The exact ExpLR twin of a network whose head or normalization affine
    parameters train (MATH.md §2.6, exact): the scale-invariant group runs
    WD-free with the exponential schedule, every other variable keeps the
    original learning rate and weight decay, because ∂L/∂φ does not change
    when the invariant group is rescaled. Build it with `Partitioned.explr_twin`.

    Args:
      group_optimizer: updates the variables in the group.
      rest_optimizer: updates every other variable.
      group: the group's variables; default: found from `model`.
      model: a functional model whose structurally scale-invariant variables
        form the group (`keras_explr.invariance`).
      name: optional name.

    Example:

    >>> opt = keras_explr.optimizers.Partitioned.explr_twin(
    ...     model, learning_rate=0.1, weight_decay=5e-4, momentum=0.9)
    >>> # == keras_explr.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4),
    >>> #    in function space, with no weight decay on the invariant kernels.
    """

    def __init__(self, group_optimizer, rest_optimizer, group=None, model=None, name=None, **kwargs):
        if kwargs:
            raise ValueError(f"Partitioned does not support {sorted(kwargs)}: set them on the inner optimizers.")
        for arg, opt in (("group_optimizer", group_optimizer), ("rest_optimizer", rest_optimizer)):
            if not isinstance(opt, keras.optimizers.Optimizer):
                raise ValueError(f"`{arg}` must be a keras.optimizers.Optimizer. Received: {opt!r}")
        if group_optimizer is rest_optimizer:
            raise ValueError("`group_optimizer` and `rest_optimizer` must be two different optimizers.")
        super().__init__(learning_rate=0.0, name=name)
        self.group_optimizer = group_optimizer
        self.rest_optimizer = rest_optimizer
        if group is None and model is not None:
            group = _invariant_group(model)
        if group is None:
            raise ValueError("Give `group` (a list of variables or variable paths) or `model`.")
        try:
            paths = [v if isinstance(v, str) else v.path for v in group]
        except (TypeError, AttributeError):
            paths = []
        if not paths:
            raise ValueError("`group` must be a non-empty list of variables or variable paths. "
                             f"Received: group={group!r}")
        self._refs = types.SimpleNamespace(paths=paths, path_set=frozenset(paths))

    @classmethod
    def explr_twin(cls, model, learning_rate, weight_decay, momentum, exact=True, name=None):
        """The WD-free twin of `keras_explr.optimizers.SGD(learning_rate, momentum,
        weight_decay)` on `model`: ExpLR on the invariant group, the rest unchanged."""
        sched = _explr_schedule(learning_rate, weight_decay, momentum, exact)
        return cls(SGD(sched, momentum=sched.momentum),
                   SGD(learning_rate, momentum=momentum, weight_decay=weight_decay),
                   model=model, name=name)

    def _split(self, items, variables):
        paths = self._refs.path_set
        inside = [(x, v) for x, v in zip(items, variables) if v.path in paths]
        outside = [(x, v) for x, v in zip(items, variables) if v.path not in paths]
        return inside, outside

    def build(self, var_list):
        paths = self._refs.path_set
        missing = paths - {v.path for v in var_list}
        if missing:
            raise ValueError(f"`group` names variables the optimizer does not train: {sorted(missing)}")
        self.group_optimizer.build([v for v in var_list if v.path in paths])
        self.rest_optimizer.build([v for v in var_list if v.path not in paths])
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.group_optimizer.variables + self.rest_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        inside, outside = self._split(grads, variables)
        for opt, pairs in ((self.group_optimizer, inside), (self.rest_optimizer, outside)):
            if pairs:
                opt.apply(*map(list, zip(*pairs)))
        self._iterations.assign_add(1)

    @property
    def learning_rate(self):
        return self.group_optimizer.learning_rate

    @property
    def iterations(self):
        return self._iterations

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


def _invariant_group(model):
    """The trainable variables the loss of `model` is structurally scale-invariant in, jointly."""
    from keras_explr import invariance

    group = invariance.invariant_group(model)
    if not group:
        raise ValueError("`model` has no trainable variable its loss is scale-invariant in "
                         "(see keras_explr.invariance.scale_invariant_variables).")
    return group


def _explr_schedule(learning_rate, weight_decay, momentum, exact):
    from keras_explr import schedules

    return schedules.ExpLR.from_weight_decay(learning_rate, weight_decay, momentum, exact=exact)
