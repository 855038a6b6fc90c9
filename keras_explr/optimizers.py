"""Optimizers with the paper's (PyTorch's) SGD convention."""

import keras
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
        if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool):
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
