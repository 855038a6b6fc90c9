"""Time of `invariant_group` and `scale_invariant_variables` per model, with false positives and recall.

For each of keras.applications' ResNet50V2, ResNet50, MobileNetV2,
EfficientNetB0, ConvNeXtTiny (weights=None, 32×32×3, 10 classes) and two
Transformer encoder blocks (pre-LN with an input projection, post-LN):

* seconds of `invariant_group(model)` (float32, its own synthetic batch of 4,
  numeric confirmation included) and of `scale_invariant_variables` on a
  2-image and a 32-image batch (with the per-variable counts: they must agree);
* against brute force in float64 (ε = 1e-300, zero biases and unit γ made
  random, scales 1e-3, 0.37, 3.1, 1e3, tolerance 1e-7): false positives (0
  when the group is jointly invariant, else its size) and recall = the share
  of variables of brute-force-invariant units (each kernel or bias, each
  layer's kernel+bias, all conv/dense variables but the head) that could join
  the group and are in it (EfficientNetB0, ConvNeXtTiny: units of the stem,
  the first blocks and the head, see UNITS_FROM; their float64 passes are slow).

    python benchmarks/invariance_time.py [--models ResNet50V2,...] [--json PATH]
"""

import argparse
import json
import os
import platform
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from keras import layers

from keras_explr import _keras_internals, invariance

APPS = ["ResNet50V2", "ResNet50", "MobileNetV2", "EfficientNetB0", "ConvNeXtTiny"]
WEIGHT_NAMES = {"kernel", "bias", "depthwise_kernel", "pointwise_kernel"}
SCALES = (1e3, 1e-3, 0.37, 3.1)
# Layers whose units the recall check tries (float64 ConvNeXt forward passes take ~3.5 s on 2 cores).
UNITS_FROM = {"EfficientNetB0": r"stem|block1a|block2a|block2b|top|predictions",
              "ConvNeXtTiny": r"stem|stage_0_block_0|stage_1_block_0|downsampling_block_0|head_dense"}


def transformer(pre_ln):
    if pre_ln:
        inp = keras.Input((6, 8))
        x = layers.Dense(16, name="embed")(inp)
        h = layers.LayerNormalization()(x)
        x = layers.Add()([x, layers.MultiHeadAttention(2, 8, name="mha")(h, h)])
        h = layers.Dense(32, activation="relu", name="ff1")(layers.LayerNormalization()(x))
        h = layers.Dense(16, name="ff2")(h)
        x = layers.LayerNormalization()(layers.Add()([x, h]))
    else:
        inp = keras.Input((6, 16))
        x = layers.LayerNormalization()(layers.Add()([inp, layers.MultiHeadAttention(2, 8, name="mha")(inp, inp)]))
        h = layers.Dense(16, name="ff2")(layers.Dense(32, activation="gelu", name="ff1")(x))
        x = layers.LayerNormalization()(layers.Add()([x, h]))
    return keras.Model(inp, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D()(x)))


def build(name):
    keras.utils.set_random_seed(0)
    if name == "TransformerPreLN":
        return transformer(True)
    if name == "TransformerPostLN":
        return transformer(False)
    return getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)


class Brute:
    """Float64 brute force: assign c·w, call the model in training mode, compare."""

    def __init__(self, model, x):
        rng = np.random.default_rng(0)
        for layer in _keras_internals.all_sublayers(model):
            if isinstance(getattr(layer, "epsilon", None), float):
                layer.epsilon = 1e-300
        for v in model.trainable_variables:
            a = keras.ops.convert_to_numpy(v)
            if not np.any(a) or np.all(a == 1):
                v.assign(a + 0.1 * rng.standard_normal(a.shape))
        self.model, self.x = model, x
        self.state = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
        self.base = self.outputs()

    def outputs(self):
        for v, a in zip(self.model.non_trainable_variables, self.state):
            v.assign(a)
        out = keras.tree.flatten(self.model(self.x, training=True))
        return [np.asarray(keras.ops.convert_to_numpy(o), np.float64) for o in out] + [
            np.array([float(sum(keras.ops.convert_to_numpy(t) for t in self.model.losses))])]

    def invariant(self, variables):
        saved = [keras.ops.convert_to_numpy(v) for v in variables]
        try:
            for c in SCALES:
                for v, a in zip(variables, saved):
                    v.assign(a * c)
                for p, q in zip(self.base, self.outputs()):
                    if not np.all(np.isfinite(q)) or np.linalg.norm(p - q) > 1e-7 * max(np.linalg.norm(p), 1e-300):
                        return False
            return True
        finally:
            for v, a in zip(variables, saved):
                v.assign(a)


def measure(name):
    model = build(name)
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    group = invariance.invariant_group(model)
    t_group = time.perf_counter() - t
    per = {}
    for n in (2, 32):
        x = rng.standard_normal((n,) + shape).astype("float32")
        t = time.perf_counter()
        per[n] = (len(invariance.scale_invariant_variables(model, x)), time.perf_counter() - t)
    paths = {v.path for v in group}
    with _float64():
        m64 = build(name)
        x64 = rng.standard_normal((2,) + shape)
        brute = Brute(m64, x64)
        g64 = [v for v in m64.trainable_variables if v.path in paths]
        false_positives = 0 if not g64 or brute.invariant(g64) else len(g64)
        by_layer = [[v for v in _keras_internals.own_trainable_variables(layer) if v.name in WEIGHT_NAMES]
                    for layer in _keras_internals.all_sublayers(m64)]
        pattern = UNITS_FROM.get(name)
        by_layer = [own for own in by_layer if own and (pattern is None or re.search(pattern, own[0].path))]
        units = [[v] for own in by_layer for v in own] + [own for own in by_layer if len(own) > 1]
        if pattern is None:
            units.append([v for own in by_layer[:-1] for v in own])
        truth = set()
        for unit in units:
            if all(v.path in paths for v in unit):
                continue  # inside the group: counted with it when the group is invariant
            if brute.invariant(unit) and brute.invariant(g64 + [v for v in unit if v.path not in paths]):
                truth |= {v.path for v in unit}
        truth |= paths if false_positives == 0 else set()
    recall = len(truth & paths) / len(truth) if truth else 1.0
    weights = sum(1 for v in model.trainable_variables if v.name in WEIGHT_NAMES)
    return {"model": name, "trainable_variables": len(model.trainable_variables), "kernels_and_biases": weights,
            "group": len(group), "invariant_group_s": round(t_group, 2),
            "per_variable_batch2": per[2][0], "per_variable_batch2_s": round(per[2][1], 2),
            "per_variable_batch32": per[32][0], "per_variable_batch32_s": round(per[32][1], 2),
            "false_positives": false_positives, "brute_force_truth": len(truth), "recall": recall}


class _float64:
    def __enter__(self):
        self.saved = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")

    def __exit__(self, *exc):
        keras.config.set_floatx(self.saved[0])
        keras.config.set_dtype_policy(self.saved[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(APPS + ["TransformerPreLN", "TransformerPostLN"]))
    p.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  f"invariance_time_cpu_{keras.backend.backend()}.json"))
    args = p.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        row = measure(name)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"backend": keras.backend.backend(), "keras": keras.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "input": "32x32x3 (applications), batch 4 synthetic for invariant_group",
           "rows": rows}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
