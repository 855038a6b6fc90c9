"""Seeing the gradients of `model.fit` from a callback, through public API only.

Keras callbacks never see gradients. Every Keras trainer hands them to the
optimizer's public `apply(grads, trainable_variables)`: TensorFlow and
PyTorch call it directly; JAX calls `stateless_apply`, which runs `apply`
inside a `StatelessScope`; `LossScaleOptimizer` calls its inner optimizer's
`apply` (or `stateless_apply`) with the unscaled gradients, and only on finite
steps. So `keras_explr.callbacks.ScaleMonitor` shadows `apply` on the optimizer
*instance* for the duration of `fit` (an instance attribute in front of the
class's method, removed afterwards) and sees exactly what the optimizer sees.
`tests/test_monitor.py` checks on every backend that the hook is called on
every step of a real `fit`: if a Keras release stops routing gradients through
`apply`, it fails loudly.
"""



class ApplyHook:
    """Calls ``around(grads, trainable_variables, apply)`` in place of
    ``optimizer.apply(grads, trainable_variables)`` until `remove()`."""

    def __init__(self, optimizer, around):
        if "apply" in vars(optimizer):
            raise ValueError(f"{optimizer.name}.apply is already hooked (two ScaleMonitors in one fit?).")
        original = optimizer.apply

        def apply(grads, trainable_variables=None):
            return around(grads, trainable_variables, original)

        self.optimizer = optimizer
        optimizer.apply = apply

    def remove(self):
        vars(self.optimizer).pop("apply", None)
