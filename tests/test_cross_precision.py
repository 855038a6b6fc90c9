"""Checkpoints written by a float32 run load into a float64 model and vice versa
(weights, BN statistics and optimizer state, including Renormalize's offset and
the wrapper's inner optimizer), and training continues; where the values cannot
be represented in the target dtype, loading fails with a clear error."""

import keras
import numpy as np
import pytest

from keras_explr import data, models, optimizers, schedules
from keras_explr.layers import ScaleProbe
from tests.conftest import precision

(X, Y), _ = data.load_digits()
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build(arm):
    keras.utils.set_random_seed(0)
    model = models.bn_convnet(scale_invariant=True)
    lr = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)
    if arm == "renormalize":
        opt = optimizers.Renormalize(optimizers.SGD(lr, momentum=lr.momentum), every_n_steps=10, model=model)
    else:
        opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1, momentum=0.9), 5e-4)
    model.compile(optimizer=opt, loss=LOSS)
    return model


@pytest.mark.parametrize("arm", ["renormalize", "reparam"])
@pytest.mark.parametrize("source, target", [("float32", "float64"), ("float64", "float32")])
def test_checkpoint_crosses_precisions(tmp_path, arm, source, target):
    path = str(tmp_path / "ckpt.weights.h5")
    with precision(source):
        a = build(arm)
        a.fit(X, Y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        a.save_weights(path)
        saved = [keras.ops.convert_to_numpy(v).astype(np.float64) for v in a.weights + a.optimizer.variables]
        shapes = [tuple(v.shape) for v in a.weights + a.optimizer.variables]
    with precision(target):
        b = build(arm)
        b.optimizer.build(b.trainable_variables)
        b.load_weights(path)
        loaded = b.weights + b.optimizer.variables
        assert [tuple(v.shape) for v in loaded] == shapes
        assert all(v.dtype == target for v in b.weights)  # (Renormalize keeps its offset in float64)
        for v, ref in zip(loaded, saved):
            got = keras.ops.convert_to_numpy(v).astype(np.float64)
            tol = 0 if source == "float32" else 1e-6 * max(1.0, float(np.max(np.abs(ref))))
            np.testing.assert_allclose(got, ref, rtol=0 if source == "float32" else 1e-6, atol=tol)
        if arm == "renormalize":  # the log-scale (hi + residual) crosses at its full precision
            log_scale = lambda o: sum(float(keras.ops.convert_to_numpy(v)) for v in (o.log_scale, o.log_scale_residual))
            ids = [id(v) for v in a.weights + a.optimizer.variables]
            stored = saved[ids.index(id(a.optimizer.log_scale))] + saved[ids.index(id(a.optimizer.log_scale_residual))]
            assert stored != 0 and abs(log_scale(b.optimizer) - stored) <= 2.0 ** -47 * abs(stored)  # a pair: ~48 bits
            b.optimizer.set_model(b)
        history = b.fit(X, Y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert int(b.optimizer.iterations) == 2 * int(np.ceil(len(X) / 64)) + int(np.ceil(len(X) / 64))


def test_values_beyond_the_target_dtype_are_refused(tmp_path):
    """Stored weights k·w = 2^100·1e10 ≈ 1.3e40 fit float64 but not float32 (max 3.4e38)."""
    path = str(tmp_path / "probe.weights.h5")
    with precision("float64"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), ScaleProbe(keras.layers.Dense(2), scale=2.0 ** 100)])
        model.layers[0].set_unscaled_weights([np.full((3, 2), 1e10), np.zeros(2)])
        model.save_weights(path)
    with precision("float32"):
        keras.utils.set_random_seed(1)
        small = keras.Sequential([keras.Input((3,)), ScaleProbe(keras.layers.Dense(2), scale=2.0 ** 100)])
        before = [keras.ops.convert_to_numpy(v).copy() for v in small.weights]
        with pytest.raises(ValueError, match="float32"):
            small.load_weights(path)
        for v, b in zip(small.weights, before):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), b)
