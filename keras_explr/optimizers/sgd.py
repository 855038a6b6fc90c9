"""`keras_explr.optimizers.SGD`: momentum SGD with the paper's (PyTorch's) buffer."""

import numbers

import keras
import numpy as np
from keras import ops

from keras_explr import _keras_internals, theory


@keras.saving.register_keras_serializable(package="keras_explr")
class SGD(keras.optimizers.Optimizer):
    """SGD with momentum as in Li & Arora's Definition 1.2 and `torch.optim.SGD`.

    **`weight_decay` is coupled L2 decay λ that enters the momentum buffer,**
    as in the paper and PyTorch. It is *not* Keras's decoupled
    ``weight_decay`` (θ ← θ − η w θ, outside the buffer): this class never
    hands its λ to the Keras base class, so Keras's decoupled decay is never
    applied.

    For each variable θ with gradient g, learning rate η_t, momentum γ:

    * without nesterov: v ← γ v + g + λθ;            θ ← θ − η_t v
    * with nesterov:    v ← γ v + g + λθ;            θ ← θ − η_t (g + λθ + γ v)

    with v_0 = 0. The buffer holds gradients and the LR is applied when it is
    used, so a changing LR rescales the whole step. `keras.optimizers.SGD`
    instead keeps m ← γ m − η_t g (the LR is folded into the buffer), which is
    a different algorithm as soon as η_t changes (docs/math.md, "The update
    rule"); the paper's theorems hold verbatim here. λ is skipped for variables
    excluded with `exclude_from_weight_decay`. Hyperparameters keep their
    Python-float precision and are cast once, at use, to each variable's dtype.

    With ``gradient_accumulation_steps=n`` a `LearningRateSchedule` is
    evaluated at the number of *real* updates (`iterations`), not at Keras's
    micro-step counter, so a schedule means the same thing with and without
    accumulation.

    Args:
      learning_rate (float | LearningRateSchedule | Callable): a float > 0, a
        `LearningRateSchedule` (e.g. `keras_explr.schedules.ExpLR`) or a callable.
      momentum (float): γ in [0, 1).
      nesterov (bool): whether to use Nesterov momentum.
      weight_decay (float | None): coupled λ ≥ 0, or None for none.
      **kwargs (Any): the base optimizer's arguments (clipnorm, global_clipnorm,
        use_ema, gradient_accumulation_steps, loss_scale_factor, name, ...).

    Example:

    >>> import keras_explr
    >>> wd_run = keras_explr.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4)
    >>> lr = keras_explr.schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9)
    >>> twin = keras_explr.optimizers.SGD(lr, momentum=lr.momentum)
    >>> twin.momentum
    0.9
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
        self._schedule = _schedule_or_none(learning_rate)
        self.weight_decay = weight_decay  # coupled: applied in update_step, never by the base class
        self.momentum = momentum
        self.nesterov = nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0.0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    @property
    def learning_rate(self):
        if getattr(self, "_schedule", None) is not None and self.gradient_accumulation_steps:
            # Keras evaluates schedules at its micro-step counter; count real updates.
            return self._schedule(self.iterations)
        return super().learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        super(SGD, type(self)).learning_rate.__set__(self, value)
        self._schedule = _schedule_or_none(value)

    def momentum_buffer(self, variable):
        """The momentum buffer v of `variable` (None without momentum)."""
        if not self.momentums:
            return None
        # (the base class's helper for subclasses' update_step, as in Keras's guide to
        # writing an optimizer: on TF, update_step gets tf.Variables.)
        return self.momentums[_keras_internals.variable_index(self, variable)]

    def _apply_weight_decay(self, variables):
        # The base class would apply Keras's decoupled decay with `self.weight_decay`;
        # ours is coupled (update_step). `_keras_internals.check()` fails at import if
        # Keras renames this hook, so it can never silently decay twice.
        return

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() == "torch":
            return self._torch_update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        d = ops.cast(gradient, dtype)
        if self.weight_decay and _keras_internals.uses_weight_decay(self, variable):
            d = ops.add(d, ops.multiply(ops.convert_to_tensor(self.weight_decay, dtype), variable))
        if self.momentum == 0.0:
            self.assign_sub(variable, ops.multiply(lr, d))
            return
        gamma = ops.convert_to_tensor(self.momentum, dtype)
        v = self.momentum_buffer(variable)
        new_v = ops.add(ops.multiply(gamma, v), d)
        self.assign(v, new_v)
        step = ops.add(d, ops.multiply(gamma, new_v)) if self.nesterov else new_v
        self.assign_sub(variable, ops.multiply(lr, step))

    def _torch_update_step(self, gradient, variable, learning_rate):
        """The same rule with in-place torch ops, as Keras's own torch SGD does: the generic
        path allocates a weight-sized tensor per operation (4.7x Keras's SGD at 16.8M
        parameters, mostly fresh-page faults). Rounding differs from the generic path only
        in the order of the sums (float32 round-off)."""
        import torch

        with torch.no_grad():
            p = variable.value
            lr = ops.cast(learning_rate, p.dtype)
            g = ops.cast(gradient, p.dtype)
            lam = self.weight_decay if (
                self.weight_decay and _keras_internals.uses_weight_decay(self, variable)) else 0.0
            if self.momentum == 0.0:  # θ − η(g + λθ) (not (1 − ηλ)θ − ηg: 1 − ηλ rounds λ away)
                p.addcmul_(torch.add(g, p, alpha=lam) if lam else g, lr, value=-1)
                return
            v = self.momentum_buffer(variable).value
            v.mul_(self.momentum).add_(g)  # v ← γv + g + λθ, without a weight-sized temporary
            if lam:
                v.add_(p, alpha=lam)
            if self.nesterov:  # θ − η(g + λθ + γv)
                step = torch.add(g, v, alpha=self.momentum)
                if lam:
                    step.add_(p, alpha=lam)
                p.addcmul_(step, lr, value=-1)
            else:
                p.addcmul_(v, lr, value=-1)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        })
        return config


def _schedule_or_none(learning_rate):
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return None
    if getattr(learning_rate, "gradient_accumulation_steps", None):
        raise ValueError(
            "keras_explr.optimizers.SGD evaluates its schedule at the number of real updates "
            "already; leave the schedule's `gradient_accumulation_steps` at None (it is for "
            "stock Keras optimizers, which count micro-steps) and set "
            "gradient_accumulation_steps on the optimizer only.")
    return learning_rate
