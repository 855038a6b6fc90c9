"""What every keras_explr wrapper shares: owning an inner optimizer through
Keras's public surface, as `keras.optimizers.LossScaleOptimizer` does.

The wrapper builds its inner optimizer (`build`), lists its state
(`variables`), and applies it (`apply`; `stateless_apply` is Keras's own,
which runs `apply` in a `StatelessScope`). It knows on its own which call
completes a real update: with ``gradient_accumulation_steps=n`` every n-th
call (it counts calls in its own variable, since Keras's public `iterations`
counts real updates only), and inside a `LossScaleOptimizer` only a call
whose gradients are finite (`LossScaleOptimizer.check_finite`).
"""

import types

import keras
from keras import ops


# -- the wrapper protocol ------------------------------------------------------------
# Every optimizer that delegates its update, Keras's and this package's, is read in one
# way: `inner_optimizers(optimizer, variables)` lists (inner optimizer, the variables it
# updates). This package's wrappers (`Wrapper` subclasses and `Partitioned`) expose it
# as their own `inner_optimizers(variables)` method; Keras's `LossScaleOptimizer` and
# `MultiOptimizer` are read through their public `inner_optimizer` / `optimizers`
# (and, for MultiOptimizer, its variable-to-optimizer map: keras_explr/_keras_internals.py).
# Every caller (ScaleMonitor, the probe, the wrappers' own checks) walks this, never
# its own list of classes.

MULTI_OPTIMIZER = getattr(keras.optimizers, "MultiOptimizer", ())  # (Keras >= 3.15)


def inner_optimizers(optimizer, variables=()):
    """[(inner optimizer, the variables of `variables` it updates)], [] for a leaf."""
    variables = list(variables)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return [(optimizer.inner_optimizer, variables)]
    if isinstance(optimizer, MULTI_OPTIMIZER):
        from keras_explr import _keras_internals

        subs = list(optimizer.optimizers)
        parts = {id(o): [] for o in subs}
        for v in variables:
            chosen = _keras_internals.multi_optimizer_choice(optimizer, v)
            if id(chosen) not in parts:
                subs.append(chosen)
                parts[id(chosen)] = []
            parts[id(chosen)].append(v)
        return [(o, parts[id(o)]) for o in subs]
    own = getattr(type(optimizer), "inner_optimizers", None)
    if callable(own):  # this package's wrappers
        return optimizer.inner_optimizers(variables)
    return []


def walk(optimizer, variables=()):
    """Every leaf optimizer under `optimizer`, depth first: (leaf, the wrappers from the
    outermost down to it, the variables it updates)."""
    out, todo = [], [(optimizer, (), list(variables))]
    while todo:
        opt, chain, vs = todo.pop()
        inner = inner_optimizers(opt, vs)
        if not inner:
            out.append((opt, chain, vs))
        todo.extend((o, chain + (opt,), part) for o, part in reversed(inner))
    return out


def unscaled(optimizer):
    """The optimizer inside any `LossScaleOptimizer`s: where gradients arrive unscaled,
    and whose ``learning_rate``, ``iterations`` and clipping a one-inner wrapper reads."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def accumulation_steps(optimizer):
    """The ``gradient_accumulation_steps`` of every leaf under `optimizer` (None for none);
    a clear error when they differ (no call would be a real update of all of them)."""
    steps = {leaf.gradient_accumulation_steps or None for leaf, _, _ in walk(optimizer)}
    if len(steps) > 1:
        raise ValueError(
            f"The optimizers inside {optimizer.name} accumulate different numbers of micro-batches "
            f"(gradient_accumulation_steps {sorted(steps, key=str)}): a real update is one in which all "
            "update. Give them all the same value.")
    return steps.pop() if steps else None


def forwarded_loss_scale_factor(*inner):
    """A ``loss_scale_factor`` property that lives on the inner optimizers named `inner`
    (each divides it out in its own `apply`; Keras's MultiOptimizer sets it on its
    sub-optimizers, so a wrapper there must pass it on)."""

    def get(self):
        opt = self.__dict__.get(inner[0])
        return None if opt is None else opt.loss_scale_factor

    def set_(self, factor):
        for name in inner:
            if self.__dict__.get(name) is not None:
                self.__dict__[name].loss_scale_factor = factor

    return property(get, set_, doc="The inner optimizers' loss_scale_factor (set on all of them).")


def value(x):
    """A variable's current value (JAX cannot trace Keras variables directly)."""
    return x.value if isinstance(x, keras.Variable) else x


def replicas_in_sync():
    """How many replicas sum their gradients (tf.distribute), 1 elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


def scale_variables(variables, factors):
    """variable ← factor · variable for each (factor: a float or a scalar
    tensor), through the distribution strategy on TensorFlow (as Keras applies
    its own weight decay), with one fused multiply per dtype on PyTorch."""
    if not variables:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def as_tensor(f, dtype):
            # (tf.cast of a Python float goes through float32: convert it at the variable's dtype)
            return tf.constant(f, dtype=dtype) if isinstance(f, float) else tf.cast(f, dtype)

        def update(strategy, variables, factors):
            # Inside merge_call a tensor factor arrives per replica: `update` hands
            # each device its own component, so the cast happens there.
            for v, f in zip(variables, factors):
                strategy.extended.update(v.value, lambda var, f: var.assign(var * as_tensor(f, var.dtype)),
                                         args=(f,), group=False)

        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            tf.distribute.get_replica_context().merge_call(update, args=(variables, factors))
        else:
            for v, f in zip(variables, factors):
                v.assign(v.value * as_tensor(f, v.dtype))
    elif backend == "torch":
        import torch

        groups = {}
        for v, f in zip(variables, factors):
            groups.setdefault((v.dtype, id(f) if not isinstance(f, float) else f), (f, []))[1].append(v.value)
        with torch.no_grad():
            for f, tensors in groups.values():
                torch._foreach_mul_(tensors, f)
    else:
        for v, f in zip(variables, factors):
            v.assign(v * ops.cast(f, v.dtype))


def built_on(optimizer, trainable_variables):
    """The variables an `apply` call updates (those the optimizer was built on when
    none are given, as Keras's `stateless_apply` calls it), building it on first use."""
    if trainable_variables is None:
        if not optimizer.built:
            raise ValueError("Pass `trainable_variables` to the first `apply` (or build the optimizer).")
        return list(optimizer._untracked.variables)
    trainable_variables = list(trainable_variables)
    if not optimizer.built:
        with keras.name_scope(optimizer.name, caller=optimizer):
            optimizer.build(trainable_variables)
        optimizer.built = True
    return trainable_variables


class Wrapper(keras.optimizers.Optimizer):
    """An optimizer that owns ``inner_optimizer`` through its public surface."""

    def __init__(self, inner_optimizer, name=None, **clipping):
        super().__init__(learning_rate=0.0, name=name, **clipping)
        self.inner_optimizer = inner_optimizer
        # Plain holder: Keras tracks lists of variables assigned to an optimizer as its state.
        self._untracked = types.SimpleNamespace(variables=(), own_state=[])

    # -- state -----------------------------------------------------------------
    def build(self, var_list):
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._untracked.own_state = []
        if accumulation_steps(self.inner_optimizer):
            self.update_calls = self.add_variable((), initializer="zeros", dtype="int",
                                                  name="update_calls")
            self._untracked.own_state.append(self.update_calls)

    @property
    def variables(self):
        """The inner optimizer's variables, and the wrapper's own state (a call
        counter with gradient accumulation; Renormalize's scale)."""
        return self.inner_optimizer.variables + list(self._untracked.own_state)

    # -- which call is a real update --------------------------------------------
    def _is_update(self, grads):
        """(is_update, static): whether this call will update the weights; `static`
        is True when it always does (no accumulation, no loss scaling inside)."""
        steps = accumulation_steps(self.inner_optimizer)
        lso = self.inner_optimizer if isinstance(
            self.inner_optimizer, keras.optimizers.LossScaleOptimizer) else None
        if not steps and lso is None:
            return True, True
        counted = ops.convert_to_tensor(True)
        if lso is not None:
            counted = lso.check_finite(grads)  # a skipped step is not even a micro-step
        update = counted
        if steps:
            calls = value(self.update_calls)
            update = ops.logical_and(counted, ops.equal(ops.mod(calls + 1, steps), 0))
            self.update_calls.assign(calls + ops.cast(counted, calls.dtype))
        return update, False

    # -- delegation ----------------------------------------------------------------
    def inner_optimizers(self, variables=()):
        """The wrapper protocol: [(inner_optimizer, variables)] (it updates them all)."""
        return [(self.inner_optimizer, list(variables))]

    loss_scale_factor = forwarded_loss_scale_factor("inner_optimizer")

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
