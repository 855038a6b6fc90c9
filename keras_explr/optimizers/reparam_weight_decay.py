"""`ReparamWeightDecay`: weight decay in the new parameterization, for any optimizer."""

import re

import keras
from keras import ops

from keras_explr import _keras_internals, theory
from keras_explr.optimizers import _equilibrium, _wrapper
from keras_explr.optimizers._wrapper import Wrapper, built_on, replicas_in_sync, scale_variables

_CLIP_ARGS = ("clipnorm", "global_clipnorm", "clipvalue")


@keras.saving.register_keras_serializable(package="keras_explr")
class ReparamWeightDecay(Wrapper):
    """Weight decay in the new parameterization: θ ← (1 − λ_new) θ − η_t · update.

    Li & Arora (blog, part 2) suggest λ_new = λ_old · η: the decay per step no
    longer rides on the learning rate, so LR and WD stop being entangled, and
    on a scale-invariant network the whole trajectory depends on (η, θ_0) only
    through η/‖θ_0‖² (docs/math.md, "The new parameterization"). Wraps any
    Keras optimizer through its public surface, in the manner of
    `keras.optimizers.LossScaleOptimizer`.

    Modes (each real update, for every decayed variable θ):

    * ``"decoupled"`` (default): θ ← (1 − λ_t) θ, then the inner optimizer's
      update. With a zero gradient one step gives exactly (1 − λ)θ for any
      LR, 0 included; Keras's built-in gives (1 − ηλ)θ.
    * ``"coupled"`` (for momentum SGD, paper-consistent): (λ_t/η_t) θ is added
      to the (clipped) gradient, so with `keras_explr.optimizers.SGD`
      v ← γv + g + (λ_t/η_t)θ, θ ← θ − η_t v; its growth root solves
      x² − (1+γ−λ_new)x + γ = 0, independent of η. If the inner optimizer
      clips (``clipnorm``, ``global_clipnorm``, ``clipvalue``), the wrapper
      takes the clipping over (Keras's own clipping code, run by the wrapper
      with the inner optimizer's settings, then the decay term is added) and
      the inner optimizer no longer clips.

    λ_t = λ(t)·(η_t/η_ref)^p, with λ(t) = ``weight_decay`` (a float, a
    `keras.optimizers.schedules.LearningRateSchedule` or a callable of the step,
    the number of real updates so far: the inner optimizer's public
    ``iterations``), η_t the inner optimizer's LR and p = ``lr_exponent``
    (`keras_explr.theory.scheduled_weight_decay`; docs/math.md#new-parameterization):

    * p = 0 (default): the independent rule, λ(t) per update whatever the LR.
    * p = 1: the standard rule. λ_new·η_t/η_0 "mimics step decay" as the
      authors suggest (divide WD with the LR); it is exactly the standard
      parameterization with λ_old = λ_new/η_0 (in coupled mode around
      `keras_explr.optimizers.SGD`, the paper's coupled λ_old; in decoupled
      mode, Keras's ``weight_decay=λ_new/η_0``): only the coordinates of the
      hyperparameters change.
    * p = 2: the corrected rule (timm's ``corrected_weight_decay``, AdamC,
      Defazio 2025): the fraction removed goes as η_t².

    η_ref is ``reference_learning_rate``, by default the LR at step 0 (which
    must then be > 0). λ_new constant (p = 0) is the genuinely different
    algorithm. `keras_explr.theory.convert_weight_decay` translates the
    conventions of other libraries ("independent": p = 0, "composer": p = 1,
    "corrected": p = 2 with η_ref the peak LR).

    The decay happens once per real update: with the inner optimizer's
    ``gradient_accumulation_steps=n`` only on every n-th call, never on a step
    that a `LossScaleOptimizer` skips (inside or outside this wrapper), before
    ``use_ema`` averages. Like Keras's own weight decay, an inner update that
    reads θ (e.g. Lamb's trust ratio) sees the decayed θ.

    Args:
      inner_optimizer (keras.optimizers.Optimizer): any Keras optimizer (SGD, `keras_explr.optimizers.SGD`,
        Adam, Lion, Muon, ...; a `LossScaleOptimizer` too) without weight decay
        of its own: one that has it is rejected, as it would decay twice.
        ScheduleFreeAdamW keeps a copy of the weights in its state (z): the
        decay scales it with θ, so a zero-gradient step still gives (1 − λ)θ.
        Refused: Ftrl in decoupled mode (it recomputes θ from its own
        accumulators, overwriting a decay). Nesting: a `Renormalize` inside
        (decoupled mode only: θ ← (1 − λ)θ commutes with its rescaling), a
        `Partitioned` or `keras.optimizers.MultiOptimizer` inside (decoupled
        mode with ``lr_exponent=0`` only: they have one LR per group); for the
        coupled mode or a per-group λ, put one ReparamWeightDecay around each
        sub-optimizer instead.
      weight_decay (float | LearningRateSchedule | Callable | None): λ_new in
        [0, 1): the fraction removed per update; or a
        `LearningRateSchedule` / callable of the step giving λ(t) (serializable
        when it is a registered Keras object).
      mode (str): "decoupled" or "coupled".
      lr_exponent (float): p in [0, 2] (default 0).
      reference_learning_rate (float | None): η_ref > 0 for p > 0; default: the inner
        optimizer's LR at step 0.
      exclude_vectors (bool): leave variables of rank < 2 (biases, BatchNorm and
        LayerNorm γ/β) undecayed (default True). Further exclusions:
        `exclude_from_weight_decay(var_list=..., var_names=...)`.
      name (str | None): optional name.
      timescale (float | None): instead of ``weight_decay``: the decay's EMA timescale τ
        (Wang & Aitchison 2024), in epochs with ``steps_per_epoch``, else in
        steps; λ_new = 1/τ_steps (`keras_explr.theory.weight_decay_from_timescale`).
        At a fixed τ in epochs, 4× the data (4× ``steps_per_epoch``) gives ¼ of λ_new.
      steps_per_epoch (int | None): real updates per epoch, for ``timescale`` in epochs.
      model (keras.Model | None): apply ``lr_exponent`` only to the group of variables the model's
        loss is jointly scale-invariant in (`keras_explr.invariance.invariant_group`)
        and p = 1 (the rule users know) to every other decayed variable:
        ``lr_exponent=2, model=model`` is AdamC's corrected decay, λ·(η_t/η_ref)²
        where theory says the norm equilibrates and λ·η_t/η_ref elsewhere.
      invariant_group (list[str] | None): the group's variable paths (what ``model=`` finds; saved
        in the config).

    Example:

    >>> import keras, keras_explr
    >>> opt = keras_explr.optimizers.ReparamWeightDecay(
    ...     keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-5)
    >>> w = keras.Variable([[2.0]])
    >>> opt.apply([keras.ops.zeros((1, 1))], [w])  # a zero gradient: θ ← (1 − λ)θ
    >>> float(w.numpy()[0, 0])
    1.9999
    """

    def __init__(self, inner_optimizer, weight_decay=None, mode="decoupled", *,
                 exclude_vectors=True, name=None, lr_exponent=0.0,
                 reference_learning_rate=None, timescale=None, steps_per_epoch=None, model=None,
                 invariant_group=None, **kwargs):
        if "follow_schedule" in kwargs:
            raise TypeError(
                "ReparamWeightDecay has no `follow_schedule` argument (removed before the first "
                "release): `follow_schedule=True` is `lr_exponent=1` (λ·η_t/η_ref, the standard "
                "rule) and `follow_schedule=False` is `lr_exponent=0` (the default). Received: "
                f"follow_schedule={kwargs['follow_schedule']!r}")
        weight_decay = _equilibrium.resolve_weight_decay(weight_decay, timescale, steps_per_epoch)
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
        leaves = _wrapper.walk(inner_optimizer)
        if any(isinstance(w, ReparamWeightDecay) for _, chain, _ in leaves for w in (inner_optimizer,) + chain):
            raise ValueError("`inner_optimizer` is already a ReparamWeightDecay (or contains one): "
                             "it would decay twice.")
        target = _wrapper.unscaled(inner_optimizer)
        for leaf, _, _ in leaves:
            for attr in ("weight_decay", "adam_weight_decay"):  # (Muon has both)
                if getattr(leaf, attr, None):
                    raise ValueError(
                        f"`inner_optimizer` ({type(leaf).__name__}) already has "
                        f"{attr}={getattr(leaf, attr)!r}; it would decay twice. Create it "
                        f"with {attr}=None and give the decay to ReparamWeightDecay.")
        if target is not inner_optimizer and keras.backend.backend() == "jax":
            raise ValueError(
                "On JAX, `inner_optimizer` cannot be a LossScaleOptimizer: Keras's "
                "LossScaleOptimizer.apply cannot run inside another optimizer there (its state "
                "changes inside a traced cond). Put it outside instead: "
                "LossScaleOptimizer(ReparamWeightDecay(inner, ...)), which is what `compile` does "
                "by itself under mixed_float16.")
        if mode == "decoupled" and any(isinstance(leaf, keras.optimizers.Ftrl) for leaf, _, _ in leaves):
            raise ValueError(
                "Ftrl recomputes the weights from its own accumulators at every step (a step does not "
                "start from θ), so a decay of θ would be overwritten: mode='decoupled' cannot remove a "
                "fraction per step. Use Ftrl's own `l2_shrinkage_regularization_strength`, or "
                "mode='coupled' (adds (λ/η)θ to the gradient).")
        several = len(leaves) > 1  # a MultiOptimizer or a Partitioned inside: one LR per group
        if several and (mode == "coupled" or lr_exponent):
            raise ValueError(
                f"`inner_optimizer` ({type(target).__name__}) updates its variables with several "
                "optimizers, each with its own learning rate, and mode='coupled' / lr_exponent > 0 "
                "read one learning rate. Use mode='decoupled' with lr_exponent=0 here, or put one "
                "ReparamWeightDecay around each sub-optimizer instead (e.g. "
                "MultiOptimizer(OptimizerMap(ReparamWeightDecay(SGD(...), λ, mode='coupled'), {...})).")
        if (isinstance(target, _wrapper.MULTI_OPTIMIZER) and callable(weight_decay)
                and _wrapper.accumulation_steps(target)):
            raise ValueError(
                "A MultiOptimizer counts calls, not real updates, in `iterations`, so a λ(t) schedule "
                "would advance on every micro-batch under gradient_accumulation_steps. Give a float "
                "`weight_decay`, or use keras_explr.optimizers.Partitioned (which counts real updates).")
        if mode == "coupled" and any(isinstance(w, Wrapper) for _, chain, _ in leaves for w in chain + (target,)):
            raise ValueError(
                "mode='coupled' adds (λ/η_t)θ with the LR η_t the wrapper reads, but a Renormalize "
                "inside runs its group at the rescaled rate η_t/s², so the term would be wrong by s². "
                "Use mode='decoupled' (θ ← (1 − λ)θ commutes with the rescaling), or no Renormalize.")
        _wrapper.accumulation_steps(inner_optimizer)  # (one number for all, or a clear error)
        if isinstance(weight_decay, dict):  # a serialized schedule (get_config)
            weight_decay = keras.saving.deserialize_keras_object(weight_decay)
        if callable(weight_decay):
            lam = weight_decay
        else:
            lam = theory.check_non_negative("weight_decay", weight_decay)
            if not lam < 1.0:
                raise ValueError(
                    "`weight_decay` (λ_new, the fraction removed per step) must be in the "
                    f"range [0, 1), or a LearningRateSchedule or callable of the step. "
                    f"Received: weight_decay={weight_decay!r}"
                )
        p = theory.check_lr_exponent(lr_exponent)
        if mode not in ("decoupled", "coupled"):
            raise ValueError(f"`mode` must be 'decoupled' or 'coupled'. Received: mode={mode!r}")
        group = (_equilibrium.group_paths(model, p) if invariant_group is None
                 else sorted(invariant_group))
        clip = {}
        if mode == "coupled":
            clip = {k: getattr(target, k) for k in _CLIP_ARGS if getattr(target, k, None)}
            if clip and target.gradient_accumulation_steps:
                raise ValueError(
                    "mode='coupled' cannot be combined with clipping and gradient_accumulation_steps "
                    "on the `inner_optimizer`: Keras clips the accumulated gradient, to which the "
                    "decay term would have to be added first. Use mode='decoupled', or drop one of "
                    f"{sorted(clip)} / gradient_accumulation_steps.")
            if clip and target is not inner_optimizer:
                raise ValueError(
                    "mode='coupled' with clipping cannot sit outside a LossScaleOptimizer (the "
                    "gradients it sees are loss-scaled). Put the LossScaleOptimizer outside: "
                    "LossScaleOptimizer(ReparamWeightDecay(inner, ...)).")
            if clip and target.loss_scale_factor:
                raise ValueError(
                    "mode='coupled' with clipping cannot be combined with the inner optimizer's "
                    "`loss_scale_factor`: Keras unscales before it clips, and the decay term must "
                    "follow the clipping. Drop one of them, or use mode='decoupled'.")
        ref = None
        if reference_learning_rate is not None:
            ref = theory.check_positive("reference_learning_rate", reference_learning_rate)
        elif p > 0.0:
            lr0 = float(ops.convert_to_numpy(target.learning_rate))
            if not lr0 > 0.0:
                raise ValueError(
                    f"`reference_learning_rate` (η_ref in λ·(η_t/η_ref)^p, lr_exponent={lr_exponent!r}) "
                    f"defaults to the initial learning rate (at step 0), which is {lr0!r} here: pass "
                    "`reference_learning_rate`, a finite number > 0 (e.g. the peak learning rate of a "
                    "warm-up).")
            ref = theory.check_positive("reference_learning_rate", lr0)
        super().__init__(inner_optimizer, name=name, **clip)
        self.weight_decay = lam
        self.mode = mode
        self.lr_exponent = p
        self.exclude_vectors = bool(exclude_vectors)
        self.reference_learning_rate = ref
        self._given_reference = reference_learning_rate is not None
        self._target = target
        # Coupled mode clips (with Keras's own clipping, configured on this wrapper) before adding
        # the decay term, so the inner optimizer must not clip again.
        self._clip = clip
        for k in clip:
            setattr(target, k, None)
        self._excluded_ids, self._excluded_pattern = set(), None
        self._group_paths = group

    # -- which variables, and by how much -------------------------------------------
    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Leaves the given variables, or those whose name contains one of
        `var_names`, undecayed (as `keras.optimizers.Optimizer`'s method)."""
        if self.built:
            raise ValueError("`exclude_from_weight_decay()` can only be called before the optimizer is built.")
        self._excluded_ids = {id(v) for v in var_list or ()}
        self._excluded_pattern = re.compile("|".join(set(var_names))) if var_names else None

    def decays(self, variable):
        """Whether this wrapper decays `variable`."""
        if self.exclude_vectors and len(variable.shape) < 2:
            return False
        if id(variable) in self._excluded_ids or getattr(variable, "overwrite_with_gradient", False):
            return False
        return not (self._excluded_pattern and self._excluded_pattern.search(variable.name))

    def lr_exponent_for(self, variable):
        """p for `variable`: ``lr_exponent``, or 1 outside the invariant group under ``model=``."""
        return _equilibrium.lr_exponent_of(variable, self.lr_exponent, self._group_paths)

    def _lambda_t(self, dtype, variable=None):
        """λ(t)·(η_t/η_ref)^p for this update (a float when it is constant); p of `variable`."""
        p = self.lr_exponent_for(variable)
        lam = self.weight_decay
        if callable(lam):  # λ(t) at the step the inner optimizer is about to take
            lam = ops.cast(lam(self.iterations), dtype)
        elif p == 0.0:
            return lam
        else:
            lam = ops.convert_to_tensor(lam, dtype)
        if p == 0.0:
            return lam
        return theory.scheduled_weight_decay(
            lam, ops.cast(self._target.learning_rate, dtype),
            ops.convert_to_tensor(self.reference_learning_rate, dtype), p)

    # -- the step -------------------------------------------------------------------
    def build(self, var_list):
        super().build(var_list)
        self._untracked.variables = tuple(var_list)
        # Optimizer state that holds copies of the weights (ScheduleFreeAdamW's z): decayed with them.
        self._untracked.copies = {id(v): _keras_internals.weight_copies(leaf, v)
                                  for leaf, _, vs in _wrapper.walk(self.inner_optimizer, var_list) for v in vs}

    def apply(self, grads, trainable_variables=None):
        trainable_variables = built_on(self, trainable_variables)
        grads = list(grads)
        if self._clip:  # coupled mode: Keras's own clipping, before the decay term (even with λ = 0)
            grads = self._clip_gradients(grads)
        if callable(self.weight_decay) or self.weight_decay > 0.0:
            if self.mode == "decoupled":
                self._decay(grads, trainable_variables)
            else:
                grads = self._couple(grads, trainable_variables)
        self.inner_optimizer.apply(grads, trainable_variables)

    def _decay(self, grads, variables):
        decayed = [v for g, v in zip(grads, variables) if g is not None and self.decays(v)]
        if not decayed:
            return
        decayed += [c for v in decayed for c in self._untracked.copies.get(id(v), ())]
        update, static = self._is_update(grads)
        factors = {}
        keys = [(v.dtype, self.lr_exponent_for(v)) for v in decayed]
        for v, key in zip(decayed, keys):
            if key not in factors:
                lam = self._lambda_t(v.dtype, v)
                f = 1.0 - lam
                if not static:
                    # (a cast of a Python float goes through float32 on TF)
                    f = ops.where(update, ops.convert_to_tensor(f, v.dtype), ops.ones((), v.dtype))
                factors[key] = f
        scale_variables(decayed, [factors[key] for key in keys])

    def _couple(self, grads, variables):
        scale = 1.0
        if isinstance(self.inner_optimizer, keras.optimizers.LossScaleOptimizer):
            scale = self.inner_optimizer.dynamic_scale  # the inner optimizer divides it out
        if self._target.loss_scale_factor:
            scale = scale * self._target.loss_scale_factor
        replicas = replicas_in_sync()
        out = []
        for g, v in zip(grads, variables):
            if g is None or not self.decays(v):
                out.append(g)
                continue
            lr = ops.cast(self._target.learning_rate, v.dtype)
            # (λ_t/η_t)θ, and 0 where η_t = 0 (that step moves nothing anyway).
            safe_lr = ops.where(ops.greater(lr, 0), lr, ops.ones_like(lr))
            coef = ops.where(ops.greater(lr, 0), self._lambda_t(v.dtype, v) / safe_lr, ops.zeros_like(lr))
            if not isinstance(scale, float) or scale != 1.0:
                coef = coef * ops.cast(scale, v.dtype)
            if replicas > 1:  # TF all-reduces gradients by summing over replicas
                coef = coef / replicas
            out.append(ops.add(ops.cast(g, v.dtype), ops.multiply(coef, v)))
        return out

    def get_config(self):
        inner = keras.saving.serialize_keras_object(self.inner_optimizer)
        if self._clip:  # the inner optimizer's own clipping, which this wrapper took over
            inner = dict(inner, config=dict(inner["config"], **self._clip))
        return {
            "name": self.name,
            "inner_optimizer": inner,
            "weight_decay": (keras.saving.serialize_keras_object(self.weight_decay)
                             if callable(self.weight_decay) else self.weight_decay),
            "mode": self.mode,
            "lr_exponent": self.lr_exponent,
            "reference_learning_rate": self.reference_learning_rate if self._given_reference else None,
            "exclude_vectors": self.exclude_vectors,
            "invariant_group": self._group_paths,
        }

