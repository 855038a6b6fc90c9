"""invariant_group on keras.applications models and a Transformer encoder block, against brute force.

Ground truth, written independently of keras_explr.invariance: the model in
float64, every normalization ε set to 1e-300, zero biases/β and unit γ
replaced by random values (a zero bias hides a broken invariance), then
variables assigned c·w for c ∈ {1e-3, 0.37, 3.1, 1e3} (not powers of two)
and the training-mode outputs plus model.losses compared at 1e-7 (float64
round-off is ~1e-13 here; a broken invariance moves them by ≫ 1e-3).

Asserted per model:
* no false positive: the returned group is jointly invariant;
* recall: every brute-force unit outside the group (each kernel or bias
  alone, each layer's kernel+bias, the group of all conv/dense variables but
  the head) that is invariant is either in the group, or cannot join it (the
  group plus the unit is not invariant) while being no larger than the group.
"""

import re

import keras
import numpy as np
import pytest
from keras import layers

from keras_explr import _keras_internals, invariance

WEIGHT_NAMES = {"kernel", "bias", "depthwise_kernel", "pointwise_kernel"}
SCALES = (1e3, 1e-3, 0.37, 3.1)  # a broken invariance shows at the first, mostly


def _randomize(model, rng):
    for layer in _keras_internals.all_sublayers(model):
        if hasattr(layer, "epsilon") and isinstance(layer.epsilon, float):
            layer.epsilon = 1e-300
    for v in model.trainable_variables:
        a = keras.ops.convert_to_numpy(v)
        if not np.any(a) or np.all(a == 1):
            v.assign(a + 0.1 * rng.standard_normal(a.shape))


def _outputs(model, x):
    # Same dropout masks every call: restore the seed-generator (and BN statistics) state first.
    for v, a in zip(model.non_trainable_variables, model._brute_state):
        v.assign(a)
    out = model(x, training=True)
    flat = [np.asarray(keras.ops.convert_to_numpy(o), np.float64) for o in keras.tree.flatten(out)]
    return flat + [np.array([float(sum(keras.ops.convert_to_numpy(t) for t in model.losses))])]


def _brute_invariant(model, x, variables, base):
    saved = [keras.ops.convert_to_numpy(v) for v in variables]
    try:
        for c in SCALES:
            for v, a in zip(variables, saved):
                v.assign(a * c)
            new = _outputs(model, x)
            for p, q in zip(base, new):
                if not np.all(np.isfinite(q)) or np.linalg.norm(p - q) > 1e-7 * max(np.linalg.norm(p), 1e-300):
                    return False
        return True
    finally:
        for v, a in zip(variables, saved):
            v.assign(a)


def _transformer_block():
    inp = keras.Input((6, 8))
    x = layers.Dense(16, name="embed")(inp)
    h = layers.LayerNormalization(name="ln1")(x)
    h = layers.MultiHeadAttention(2, 8, name="mha")(h, h)
    x = layers.Add()([x, h])
    h = layers.LayerNormalization(name="ln2")(x)
    h = layers.Dense(32, activation="relu", name="ff1")(h)
    h = layers.Dense(16, name="ff2")(h)
    x = layers.Add()([x, h])
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization(name="ln3")(x))
    return keras.Model(inp, layers.Dense(3, name="head")(x))


def _post_ln_transformer_block():
    inp = keras.Input((6, 16))
    h = layers.MultiHeadAttention(2, 8, name="mha")(inp, inp)
    x = layers.LayerNormalization(name="ln1")(layers.Add()([inp, h]))
    h = layers.Dense(16, name="ff2")(layers.Dense(32, activation="gelu", name="ff1")(x))
    x = layers.LayerNormalization(name="ln2")(layers.Add()([x, h]))
    return keras.Model(inp, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D()(x)))


def _app(name):
    return lambda: getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)


# name, builder, expected group size (recorded: see benchmarks/invariance_time.py), layers whose units the
# recall check tries (None: all). EfficientNetB0 and ConvNeXtTiny repeat one block; their float64 forward
# passes are slow on CPU (ConvNeXt's grouped 7×7 convs: 3.5 s each), so the recall check tries the stem,
# the first two blocks of each kind and the head there; the false-positive check always covers the whole group.
CASES = [
    ("ResNet50V2", _app("ResNet50V2"), 74, None),
    ("ResNet50", _app("ResNet50"), 106, None),
    ("MobileNetV2", _app("MobileNetV2"), 52, None),
    ("EfficientNetB0", _app("EfficientNetB0"), 49, r"stem|block1a|block2a|block2b|top|predictions"),
    ("ConvNeXtTiny", _app("ConvNeXtTiny"), 59,
     r"stem|stage_0_block_0|stage_1_block_0|downsampling_block_0|head_dense"),
    ("TransformerPreLN", _transformer_block, 9, None),   # the key bias is free: softmax cancels q·b_k
    ("TransformerPostLN", _post_ln_transformer_block, 1, None),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, build, size, units_from", CASES, ids=[c[0] for c in CASES])
def test_group_against_brute_force(float64, name, build, size, units_from):
    keras.utils.set_random_seed(0)
    model = build()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2,) + tuple(model.inputs[0].shape[1:]))
    group = invariance.invariant_group(model, x)
    _randomize(model, rng)
    model._brute_state = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    base = _outputs(model, x)
    ids = {id(v) for v in group}
    assert len(group) == size
    # No false positive.
    assert not group or _brute_invariant(model, x, group, base)
    # Recall over brute-force units outside the group.
    by_layer = {}
    for layer in _keras_internals.all_sublayers(model):
        own = [v for v in _keras_internals.own_trainable_variables(layer) if v.name in WEIGHT_NAMES]
        if own and (units_from is None or re.search(units_from, own[0].path)):
            by_layer[layer.name] = own
    units = []
    for own in by_layer.values():
        out = [v for v in own if id(v) not in ids]
        units += [[v] for v in out] + ([out] if len(out) > 1 else [])
    head = next(reversed(by_layer.values()))
    if units_from is None:
        units.append([v for own in by_layer.values() if own is not head for v in own])
    missed = []
    for unit in units:
        if all(id(v) in ids for v in unit) or not _brute_invariant(model, x, unit, base):
            continue
        joined = group + [v for v in unit if id(v) not in ids]
        if _brute_invariant(model, x, joined, base) or len(unit) > len(group):
            missed.append([v.path for v in unit])
    assert missed == []
