"""One side of the distribution checks (tests/test_distributed.py), in its own process.

    python tests/distributed_worker.py MODE OUT.npz
    MODE: single | mirrored (TF, 2 logical CPUs) | data_parallel (JAX, 8 host devices)
"""

import os
import sys

MODE, OUT = sys.argv[1], sys.argv[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if MODE == "data_parallel":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_explr import data, models, optimizers, schedules  # noqa: E402
from keras_explr.callbacks import ScaleMonitor  # noqa: E402

ARMS = ("explr", "texp_exact", "reparam", "reparam_coupled", "renormalize", "monitor")


def optimizer(arm, model):
    explr = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)
    if arm == "explr":
        return optimizers.SGD(explr, momentum=explr.momentum)
    if arm == "texp_exact":
        return optimizers.SGD(schedules.TEXP([20, 30], [0.1, 0.03, 0.01], 5e-3, 0.9), momentum=0.9)
    if arm == "reparam":
        return optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1, momentum=0.9), 5e-4)
    if arm == "reparam_coupled":
        return optimizers.ReparamWeightDecay(optimizers.SGD(0.1, momentum=0.9), 5e-4, mode="coupled")
    if arm == "renormalize":
        return optimizers.Renormalize(optimizers.SGD(explr, momentum=explr.momentum), every_n_steps=7,
                                      model=model if keras.backend.backend() != "jax" else None)
    return optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-3)


def main():
    (x, y), _ = data.load_digits()
    x, y = x[:1280], y[:1280]
    scope = None
    if MODE == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        scope = strategy.scope
    elif MODE == "data_parallel":
        import jax

        assert len(jax.devices()) == 8
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    out = {}
    for arm in ARMS:
        ctx = scope() if scope else _Null()
        with ctx:
            keras.utils.set_random_seed(0)
            model = models.bn_convnet(scale_invariant=True, activation="tanh", pooling="average",
                                      synchronized=MODE == "mirrored")
            model.compile(optimizer=optimizer(arm, model),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        monitor = ScaleMonitor(every_n_steps=5) if arm == "monitor" else None
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0,
                  callbacks=[monitor] if monitor else [])
        out[f"{arm}/outputs"] = model.predict(x[:128], batch_size=64, verbose=0)
        opt = model.optimizer
        for i, v in enumerate(opt.variables):
            if v is getattr(opt, "log_scale_residual", None):
                continue  # a round-off term: compared as part of the log-scale below
            out[f"{arm}/opt{i}"] = keras.ops.convert_to_numpy(v)
            if v is getattr(opt, "log_scale", None):  # the double-float pair's value, hi + residual
                out[f"{arm}/opt{i}"] = (out[f"{arm}/opt{i}"].astype(np.float64) +
                                        keras.ops.convert_to_numpy(opt.log_scale_residual).astype(np.float64))
        if monitor:
            for path in monitor.monitored_paths:
                for q in ("norm", "angular_update", "grad_cosine"):
                    steps, values = monitor.series(path, q)
                    out[f"{arm}/{path}/{q}"] = values
                    out[f"{arm}/steps"] = steps
    np.savez(OUT, **out)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
