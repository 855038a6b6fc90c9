"""The ε trap: how far the variance entering each normalization layer sits above its ε.

A normalization layer computes (z − μ)/√(σ² + ε). It is scale-invariant in the
weights before it only while σ² ≫ ε: shrinking those weights by c divides σ²
by c², and once σ² is comparable to ε the layer stops normalizing (the
network is no longer scale-invariant, and training with weight decay or
`ReparamWeightDecay` degrades or collapses). σ²/ε is the margin; this module
measures it on a batch (`epsilon_margin`) and from BatchNorm's moving variance
(`moving_variance_margins`), and formats the warning `ScaleMonitor` gives
(`EpsilonDominanceWarning`; docs/guides/equilibrium.md).

Per layer, σ² is taken over what the layer normalizes over: for
BatchNormalization one variance per channel (over every axis but ``axis``),
for LayerNormalization one per sample (over ``axis``), for GroupNormalization
one per (sample, group). The margin of the layer is the mean of σ²/ε over those
units; the worst unit is reported too.
"""

import warnings

import keras
import numpy as np
from keras import ops

DEFAULT_MARGIN = 100.0
_KINDS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
          keras.layers.GroupNormalization)


class EpsilonDominanceWarning(UserWarning):
    r"""A normalization layer's input variance \(\sigma^2\) fell below ``epsilon_margin``\(\,\cdot\,\epsilon\),
    \(\epsilon\) the layer's ``epsilon``: the layer no longer makes the network scale-invariant (the
    \(\epsilon\) trap)."""


def normalization_layers(model):
    """The BatchNormalization, LayerNormalization and GroupNormalization layers of `model`
    (nested models included), in `model` order."""
    layers = [layer for layer in _flatten(model) if isinstance(layer, _KINDS)]
    return layers


def _flatten(layer):
    out = []
    stack = [layer]
    while stack:
        current = stack.pop()
        out.append(current)
        children = [x for x in getattr(current, "layers", ()) if x is not current]
        stack.extend(reversed(children))
    seen, ordered = set(), []
    for x in out:
        if id(x) not in seen:
            seen.add(id(x))
            ordered.append(x)
    return ordered


def _axes(layer, rank):
    axis = layer.axis
    axis = [axis] if isinstance(axis, int) else list(axis)
    return sorted(a % rank for a in axis)


def unit_variances(layer, x):
    """σ² of the input `x` (numpy, float64) per unit the layer normalizes: channels for
    BatchNormalization, samples for LayerNormalization, (sample, group) for GroupNormalization."""
    x = np.asarray(x, dtype=np.float64)
    rank = x.ndim
    if isinstance(layer, keras.layers.BatchNormalization):
        keep = _axes(layer, rank)
        reduce = tuple(a for a in range(rank) if a not in keep)
        return x.var(axis=reduce).reshape(-1)
    if isinstance(layer, keras.layers.LayerNormalization):
        return x.var(axis=tuple(_axes(layer, rank))).reshape(-1)
    axis = layer.axis % rank
    channels = x.shape[axis]
    moved = np.moveaxis(x, axis, -1)
    grouped = moved.reshape(moved.shape[0], -1, layer.groups, channels // layer.groups)
    return grouped.var(axis=(1, 3)).reshape(-1)


def margins_from_variances(variances, epsilon):
    """(mean, worst) of σ²/ε over the units."""
    ratio = np.asarray(variances, dtype=np.float64) / float(epsilon)
    return float(np.mean(ratio)), float(np.min(ratio))


def layer_inputs(model, x, layers):
    """The inputs each of `layers` receives when `model` runs on `x` in training mode (batch
    statistics, as the layers normalize while training; through ``stateless_call``, so no
    moving statistic changes), as numpy arrays: each layer's public ``call`` is wrapped for
    the duration."""
    seen = {}
    originals = {}

    def recorder(layer, call):
        def recorded(inputs, *args, **kwargs):
            seen.setdefault(id(layer), ops.convert_to_numpy(inputs))
            return call(inputs, *args, **kwargs)
        return recorded

    try:
        for layer in layers:
            originals[id(layer)] = (layer, layer.__dict__.get("call"))
            object.__setattr__(layer, "call", recorder(layer, layer.call))
        model.stateless_call([v.value for v in model.trainable_variables],
                             [v.value for v in model.non_trainable_variables], x, training=True)
    finally:
        for layer, own in originals.values():
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)
    return [seen.get(id(layer)) for layer in layers]


def epsilon_margin(model, x, reduce="mean"):
    r"""\(\sigma^2/\epsilon\) of the input of every normalization layer of `model`, on the batch `x`.

    \(\sigma^2\) is the variance the layer normalizes by, per unit (a channel for
    BatchNormalization, a sample for LayerNormalization, a (sample, group) for
    GroupNormalization), measured in training mode (batch statistics: an
    upstream BatchNorm's lagging moving statistics would distort it; nothing is
    updated); \(\epsilon\) the layer's
    ``epsilon``. A ratio \(\gg 1\) means the layer normalizes (the network is
    scale-invariant in the weights before it); below ~100 \(\epsilon\) starts to
    dominate (the \(\epsilon\) trap: docs/guides/equilibrium.md).

    Args:
      model (keras.Model): a built Keras model.
      x (array-like): a batch of inputs.
      reduce (str): "mean" (over the units, default) or "min" (the worst unit).

    Returns:
      (dict[str, float]): ``{layer path: ratio}``.

    Example:

    >>> import keras, numpy as np
    >>> from keras_explr import invariance
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.BatchNormalization(name="bn")])
    >>> ratio = invariance.epsilon_margin(model, np.random.default_rng(0).normal(size=(64, 4)))
    >>> [(path.split("/")[-1], bool(r > 100)) for path, r in ratio.items()]
    [('bn', True)]
    """
    if reduce not in ("mean", "min"):
        raise ValueError(f"`reduce` must be 'mean' or 'min'. Received: reduce={reduce!r}")
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    layers = normalization_layers(model)
    out = {}
    for layer, inputs in zip(layers, layer_inputs(model, x, layers)):
        if inputs is None:
            continue
        mean, worst = margins_from_variances(unit_variances(layer, inputs), layer.epsilon)
        out[layer.path] = mean if reduce == "mean" else worst
    return out


def moving_variance_margins(model):
    """{layer path: (mean, worst)} of moving_variance/ε for every BatchNormalization layer:
    BatchNorm's running estimate of its input variance, free to read (no batch)."""
    out = {}
    for layer in normalization_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "moving_variance", None) is not None:
            out[layer.path] = margins_from_variances(ops.convert_to_numpy(layer.moving_variance), layer.epsilon)
    return out


def warn_once(warned, path, ratio, worst, margin, stacklevel=2):
    """Issues `EpsilonDominanceWarning` for `path` unless `warned` already holds it."""
    if path in warned:
        return
    warned.add(path)
    warnings.warn(EpsilonDominanceWarning(
        f"{path}: the variance entering this normalization layer is only {ratio:.3g}× its epsilon "
        f"(worst unit {worst:.3g}×; margin {margin:g}). Epsilon now dominates, so the layer no "
        "longer makes the network scale-invariant and weight decay shrinks the function, not just "
        "the weights (the ε trap). Fixes: a smaller epsilon on this layer (e.g. 1e-8), less weight "
        "decay (a smaller λ or λ_new, or a longer timescale), or keras_explr.optimizers.Renormalize "
        "to hold the weight norm up."), stacklevel=stacklevel)
