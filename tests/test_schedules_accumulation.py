"""Gradient accumulation: schedules count real updates for stock Keras optimizers.

Keras 3 calls a `LearningRateSchedule` with its micro-step counter
(``optimizer._iterations``): with ``gradient_accumulation_steps=n`` the k-th
real update evaluates the schedule at k·n + n − 1. A twin must count real
updates, so our schedules take ``gradient_accumulation_steps=n`` and evaluate
at floor(step / n).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_explr import callbacks, data, models, schedules, theory
from tests.conftest import precision

N = 4


def _all(n):
    base = keras.optimizers.schedules.CosineDecay(0.0, 90, warmup_target=0.1, warmup_steps=10)
    return [
        schedules.ExpLR(0.1, 1.01, gradient_accumulation_steps=n),
        schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, gradient_accumulation_steps=n),
        schedules.TEXP([10, 20], [0.1, 0.01, 0.001], 5e-4, 0.9, gradient_accumulation_steps=n),
        schedules.TEXP([2, 4], [0.1, 0.01, 0.001], 5e-4, 0.9, steps_per_epoch=5, gradient_accumulation_steps=n),
        schedules.EquivalentSchedule(base, 5e-4, 0.9, total_steps=100, gradient_accumulation_steps=n),
    ]


@pytest.mark.parametrize("i", range(5))
def test_schedule_evaluates_at_the_real_update(i):
    acc, plain = _all(N)[i], _all(None)[i]
    micro = np.arange(200)
    want = plain.learning_rates(micro // N)
    np.testing.assert_array_equal(acc.learning_rates(micro), want)
    eager = np.array([float(keras.ops.convert_to_numpy(acc(int(s)))) for s in micro[:60]])
    np.testing.assert_allclose(eager, want[:60], rtol=1e-6)  # floatx float32
    # The k-th real update (micro-step k·n + n − 1) sees the schedule at k.
    k = np.arange(50)
    np.testing.assert_array_equal(acc.learning_rates(k * N + N - 1), plain.learning_rates(k))
    again = type(acc).from_config(acc.get_config())
    assert again.gradient_accumulation_steps == N
    np.testing.assert_array_equal(again.learning_rates(micro), want)


def test_graph_and_jit_count_real_updates():
    acc = _all(N)[1]
    f = tf.function(acc, jit_compile=True)
    got = [float(f(tf.constant(s, tf.int64))) for s in (0, 3, 4, 7, 8, 401)]
    np.testing.assert_allclose(got, acc.learning_rates([0, 3, 4, 7, 8, 401]), rtol=1e-6)
    assert theory.accumulated_step(401, N) == 100


EPOCHS, BATCH, N_TRAIN = 20, 16, 640  # 40 micro-batches per epoch: 10 real updates, 200 in all


def _run(optimizer, x, y):
    keras.utils.set_random_seed(1)
    model = models.bn_convnet(bn_epsilon=1e-30)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rec = callbacks.FunctionRecorder(x[:128])
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[rec])
    assert int(optimizer.iterations) == EPOCHS * N_TRAIN // BATCH // N
    return rec.outputs


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="float64 fit runs on TensorFlow")
def test_stock_keras_sgd_with_accumulation_equals_its_keras_explr_twin():
    # keras.optimizers.SGD's own (decoupled) weight decay, applied once per real update,
    # and its Keras-convention ExpLR twin (momentum γ/(1−ηw)), both accumulating 4 micro-batches.
    (x, y), _ = data.load_digits(num_train=N_TRAIN)
    # np.float64 hyperparameters: Keras's TF `ops.cast(0.9, "float64")` goes through float32
    # (0.8999999761581421); float64 scalars keep both runs at float64 round-off.
    lr, wd, gam = 0.1, np.float64(2e-2), np.float64(0.9)
    with precision("float64"):
        x = x.astype("float64")
        base = _run(keras.optimizers.SGD(lr, momentum=gam, weight_decay=wd, gradient_accumulation_steps=N), x, y)
        sched = schedules.ExpLR.from_weight_decay(lr, wd, gam, convention="keras", weight_decay_mode="decoupled",
                                                  gradient_accumulation_steps=N)
        assert sched.learning_rates(EPOCHS * N_TRAIN // BATCH) / lr > 2  # the LR grows 2.2x over the run
        twin = _run(keras.optimizers.SGD(sched, momentum=np.float64(sched.momentum), gradient_accumulation_steps=N),
                    x, y)
        # Negative control: the same twin counting micro-steps (what a schedule sees by default).
        micro = schedules.ExpLR.from_weight_decay(lr, wd, gam, convention="keras", weight_decay_mode="decoupled")
        wrong = _run(keras.optimizers.SGD(micro, momentum=np.float64(micro.momentum), gradient_accumulation_steps=N),
                     x, y)
    d, d_wrong = callbacks.max_relative_difference(base, twin), callbacks.max_relative_difference(base, wrong)
    print(f"accumulation twin {d:.2e}, micro-step control {d_wrong:.2e}")
    assert d <= 1e-12, d
    assert d_wrong > 1e-3, d_wrong
