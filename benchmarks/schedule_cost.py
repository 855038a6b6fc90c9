"""Cost of evaluating a schedule inside the training step, against Keras's ExponentialDecay.

Times `model.fit` of the same small BN convnet with SGD driven by
`keras.optimizers.schedules.ExponentialDecay`, `ExpLR` (closed form: one
log-linear segment), `ExpLR` exact (a transient table) and `TEXP` exact
(several segments with tables). Arms alternate; the script prints the median
time per step and the ratio to ExponentialDecay, measured side by side.

    python benchmarks/schedule_cost.py
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import alternating_medians, check_positive_flags, seconds_per_step, timing_parser

from keras_explr import models, optimizers, schedules


def arms():
    return {
        "ExponentialDecay": lambda: keras.optimizers.schedules.ExponentialDecay(0.1, 1000, 1.5),
        "ExpLR closed": lambda: schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9, exact=False),
        "ExpLR exact": lambda: schedules.ExpLR.from_weight_decay(0.1, 5e-4, 0.9),
        "TEXP exact": lambda: schedules.TEXP([300, 600], [0.1, 0.01, 0.001], 5e-4, 0.9),
    }


def time_arm(make, x, y, epochs, batch):
    keras.utils.set_random_seed(0)
    model = models.bn_convnet(input_shape=x.shape[1:], filters=(8, 16))
    model.compile(optimizers.SGD(make(), momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return seconds_per_step(model, x, y, epochs, batch)


def main():
    p = timing_parser(__doc__, epochs=3, batch=32, size=8)
    args = p.parse_args()
    check_positive_flags(p, args, ("repeats", "epochs", "batch", "size"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, args.size, args.size, 1)).astype("float32")
    y = rng.integers(0, 10, len(x))
    med_of = alternating_medians(tuple(arms()), args.repeats,
                                 lambda name: time_arm(arms()[name], x, y, args.epochs, args.batch))
    base = med_of["ExponentialDecay"]
    rows = []
    for name, med in med_of.items():
        rows.append({"schedule": name, "backend": keras.backend.backend(), "ms_per_step": 1e3 * med,
                     "ratio_to_ExponentialDecay": med / base})
        print(f"{name:>18}: {1e3 * med:6.3f} ms/step, ratio {med / base:.3f} "
              f"(median of {args.repeats} alternating runs, {keras.backend.backend()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
