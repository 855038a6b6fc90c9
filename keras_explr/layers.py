r"""`ScaleProbe`: a layer whose trainable variables are stored at scale k.

docs/math.md#scale-probe. The layer stores \(w' = k\,w\) and computes with \(w'/k\), so
the network computes the same function, its gradient with respect to the
stored variable is \(g' = g/k\), and an optimizer sees a parameter k times larger
with a gradient k times smaller. For Adam that is exactly the run with
learning rate \(\eta/k\) and \(\epsilon k\): the parameter's scale acts as an inverse learning
rate. `keras_explr.probe.scale_model` and `keras_explr.probe.equivalent_optimizer`
build the pair of runs that are the same trajectory.
"""

import keras
import numpy as np
from keras import ops

from keras_explr import _checks
from keras_explr import _keras_internals as _internals

_SERIALIZABLE = "keras_explr"


_current_value = _internals.current_value


class _OnUnscaled:
    """Applies a regularizer or constraint of w to the stored w′ = k·w."""

    def __init__(self, fn, scale, kind):
        self.fn, self.scale, self.kind = fn, scale, kind

    def __call__(self, stored):
        w = ops.divide(stored, self.scale)
        out = self.fn(w)
        return out if self.kind == "regularizer" else ops.multiply(out, self.scale)


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class ScaleProbe(keras.layers.Wrapper):
    r"""Stores each trainable variable w of `layer` as w′ = k·w; computes with w′/k.

    The wrapped layer computes exactly what it computed before (\(w'/k = w\),
    bit for bit when k is a power of two); the optimizer sees variables k
    times larger with gradients \(g' = g/k\) (chain rule). With Adam, the run at
    scale \(k\) with learning rate \(k\eta\) and epsilon \(\epsilon/k\) is the run at scale 1 with
    \((\eta, \epsilon)\) (docs/math.md#scale-probe); `keras_explr.probe.equivalent_optimizer`
    gives the mapping for each optimizer.

    * The stored variables are not autocast: under ``mixed_float16`` w′ stays
      float32 and only w′/k reaches the layer (in the compute dtype), so a
      large k cannot overflow float16.
    * A regularizer of w in the wrapped layer (``kernel_regularizer``) is
      applied to w′/k, and a constraint c to w as k·c(w′/k): the loss and the
      feasible set are those of the unwrapped model.
    * Non-trainable state of the wrapped layer (BatchNormalization's moving
      statistics) is updated as usual.
    * Call the ScaleProbe, not ``probe.layer``: the wrapped layer's own copies
      of its trainable variables are no longer tracked, saved or updated.

    Args:
      layer (keras.layers.Layer): a layer that owns its trainable variables directly (Dense,
        Conv1D/2D/3D, EinsumDense, BatchNormalization, LayerNormalization,
        Embedding, ...). A layer whose variables live in sublayers is rejected:
        wrap the sublayers (`keras_explr.probe.scale_model` does).
      scale (float): k, a finite number > 0. Powers of two make the equivalences
        bit-exact in floating point.

    Example:

    >>> import keras, keras_explr
    >>> probe = keras_explr.layers.ScaleProbe(keras.layers.Dense(4), scale=8.0)
    >>> y = probe(keras.ops.ones((2, 3)))
    >>> [v.path for v in probe.trainable_variables]  # doctest: +SKIP
    ['scale_probe/scaled_kernel', 'scale_probe/scaled_bias']
    """

    def __init__(self, layer, scale=1.0, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"`layer` must be a keras.layers.Layer instance. Received: layer={layer!r}")
        self.scale = _checks.check_positive("scale", scale)
        super().__init__(layer, **kwargs)
        self._wrapped = []      # the wrapped layer's trainable variables (untracked)
        self._stored = []       # ours: w′ = k·w, in the same order
        self._others = []       # its other variables (moving statistics, ...)
        self._inner_order = []  # all its variables in `layer.weights` order

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        own = {id(v) for v in _internals.own_trainable_variables(self.layer)}
        trainable = list(self.layer.trainable_variables)
        if not trainable:
            raise ValueError(
                f"ScaleProbe: layer {self.layer.name!r} has no trainable variables to rescale.")
        foreign = [v.path for v in trainable if id(v) not in own]
        if foreign:
            raise ValueError(
                f"ScaleProbe wraps a layer that owns its trainable variables directly; "
                f"{self.layer.name!r} holds {foreign} in sublayers. Wrap those layers "
                "instead (keras_explr.probe.scale_model does this for a whole model).")
        self._inner_order = list(self.layer.weights)
        self._wrapped = trainable
        wrapped_ids = {id(v) for v in trainable}
        self._others = [v for v in self.layer.weights if id(v) not in wrapped_ids]
        self._stored = []
        for v in trainable:
            stored = self.add_weight(
                shape=v.shape,
                dtype=v.dtype,
                initializer="zeros",
                name=f"scaled_{v.name}",
                trainable=True,
                autocast=False,
                regularizer=_OnUnscaled(v.regularizer, self.scale, "regularizer")
                if v.regularizer is not None else None,
                constraint=_OnUnscaled(v.constraint, self.scale, "constraint")
                if v.constraint is not None else None,
            )
            stored.assign(ops.multiply(ops.convert_to_tensor(v.value, "float64"), self.scale))
            self._stored.append(stored)
            _internals.untrack(self.layer, v)
        for v in self._inner_order:  # Keras also tracks them here (created during our build)
            _internals.untrack(self, v)
        # The wrapped layer's state is ours to save: its own save (Dense saves
        # `_kernel` whether tracked or not) would store the stale copies.
        self.layer.save_own_variables = lambda store: None
        self.layer.load_own_variables = lambda store: None
        self.built = True

    def unscaled(self, index):
        """w = w′/k for the `index`-th trainable variable of the wrapped layer."""
        return ops.divide(_current_value(self._stored[index]),
                          ops.cast(self.scale, self._stored[index].dtype))

    def call(self, inputs, *args, **kwargs):
        mapping = [(v, self.unscaled(i)) for i, v in enumerate(self._wrapped)]
        given = {id(v): _current_value(v) for v in self._others}
        mapping += [(v, given[id(v)]) for v in self._others]
        outer = _internals.stateless_scope()
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            before = {id(v): scope.state_mapping[id(v)] for v in self._others}
            outputs = self.layer(inputs, *args, **kwargs)
        for v in self._others:  # state updates of the wrapped layer, e.g. moving statistics
            if scope.state_mapping[id(v)] is not before[id(v)]:
                v.assign(scope.state_mapping[id(v)])
        if scope.losses and (outer is None or outer.collect_losses):
            self.add_loss(scope.losses)
        return outputs

    def set_unscaled_weights(self, weights):
        """Sets the wrapped layer's weights, given in `layer.get_weights()` order
        and at scale 1: trainable ones are stored as k·w."""
        if len(weights) != len(self._inner_order):
            raise ValueError(
                f"`weights` must hold {len(self._inner_order)} arrays (the wrapped layer's "
                f"weights); received {len(weights)}.")
        stored = {id(v): s for v, s in zip(self._wrapped, self._stored)}
        for v, w in zip(self._inner_order, weights):
            if tuple(v.shape) != tuple(w.shape):
                raise ValueError(f"Weight {v.path!r} has shape {tuple(v.shape)}; received {w.shape}.")
        for v, w in zip(self._inner_order, weights):
            if id(v) in stored:
                stored[id(v)].assign(ops.multiply(ops.convert_to_tensor(w, "float64"), self.scale))
            else:
                v.assign(w)

    def save_own_variables(self, store):
        for i, v in enumerate(self._stored + self._others):
            store[f"{i}"] = v

    def load_own_variables(self, store):
        variables = self._stored + self._others
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"ScaleProbe {self.name!r} holds {len(variables)} variables "
                f"({[v.path for v in variables]}), but the weights file lists "
                f"{len(store.keys())} for it: the file was written by a different model.")
        values = [np.asarray(store[f"{i}"]) for i in range(len(variables))]
        for v, value in zip(variables, values):  # check everything before changing anything
            with np.errstate(over="ignore"):
                cast = value.astype(v.dtype)
            if np.all(np.isfinite(value)) and not np.all(np.isfinite(cast)):
                raise ValueError(
                    f"ScaleProbe {self.name!r}: the saved {v.path!r} (max |value| "
                    f"{float(np.max(np.abs(value))):.3g}, {value.dtype}) does not fit {v.dtype} at "
                    f"scale={self.scale:g}; load it into a {value.dtype} model or use a smaller scale.")
        for v, value in zip(variables, values):
            v.assign(value)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
