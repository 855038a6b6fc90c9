"""Runs one phase of the save/resume experiments in its own process (tests/test_resume.py).

    python tests/resume_worker.py PHASE DIR
    PHASE: straight | first | resume | backup
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_explr  # noqa: F401  (registers the serializables)
from keras_explr import data, models, optimizers, schedules

EPOCHS, SPLIT, BATCH = 4, 2, 32
ARMS = ("explr", "texp", "texp_exact", "reparam", "renormalize")


def optimizer(arm, model):
    if arm == "explr":
        lr = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)
        return optimizers.SGD(lr, momentum=lr.momentum)
    if arm in ("texp", "texp_exact"):
        lr = schedules.TEXP([60, 120], [0.1, 0.03, 0.01], 5e-3, 0.9, exact=arm == "texp_exact")
        return optimizers.SGD(lr, momentum=0.9)
    if arm == "reparam":
        return optimizers.ReparamWeightDecay(keras.optimizers.SGD(0.1, momentum=0.9), 5e-4)
    lr = schedules.ExpLR.from_weight_decay(0.1, 5e-3, 0.9)
    return optimizers.Renormalize(optimizers.SGD(lr, momentum=lr.momentum), every_n_steps=7, model=model)


def build(arm):
    keras.utils.set_random_seed(0)
    model = models.bn_convnet(scale_invariant=True)
    model.compile(optimizer=optimizer(arm, model),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def dump(model, path):
    state = {f"w{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.weights)}
    state.update({f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
    np.savez(path, **state)


class KillOnce(keras.callbacks.Callback):
    """SIGKILLs this process mid-epoch (epoch 3, batch 5) the first time."""

    def __init__(self, marker):
        super().__init__()
        self.marker = marker

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 5 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


def main(phase, folder):
    (x, y), _ = data.load_digits()
    for arm in ARMS:
        saved = os.path.join(folder, f"{arm}.keras")
        if phase == "straight":
            model = build(arm)
            model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
        elif phase == "first":
            model = build(arm)
            model.fit(x, y, batch_size=BATCH, epochs=SPLIT, shuffle=False, verbose=0)
            model.save(saved)
            continue
        elif phase == "resume":
            model = keras.saving.load_model(saved)
            if arm == "renormalize":
                model.optimizer.set_model(model)
            model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, initial_epoch=SPLIT, shuffle=False, verbose=0)
        elif phase == "backup":
            model = build(arm)
            backup = keras.callbacks.BackupAndRestore(os.path.join(folder, f"{arm}_backup"))
            model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                      callbacks=[backup, KillOnce(os.path.join(folder, f"{arm}.killed"))])
        else:
            raise ValueError(f"unknown phase {phase!r}")
        dump(model, os.path.join(folder, f"{arm}_{phase}.npz"))


if __name__ == "__main__":
    main(*sys.argv[1:])
