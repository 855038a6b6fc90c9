"""Step-time overhead of ScaleMonitor(every_n_steps=10) against no monitor.

Both arms train the same BN convnet (trainable head and BN affine; the monitor
watches every variable of rank >= 2: three conv kernels and the head) with
momentum SGD and weight decay on synthetic 16x16x3 images; the arms
alternate, each run is one `model.fit` whose first epoch (tracing) is not
timed, and the script prints the median time per step of each arm and their
ratio, measured side by side in this run (compare ratios, not seconds).
Target: <= 1.05x at N = 10.

    python benchmarks/monitor_overhead.py
    KERAS_BACKEND=jax python benchmarks/monitor_overhead.py
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import alternating_medians, check_positive_flags, seconds_per_step_in_fit, timing_parser

from keras_explr import models, optimizers
from keras_explr.callbacks import ScaleMonitor


def time_arm(arm, x, y, epochs, batch, every, size):
    keras.utils.set_random_seed(0)
    model = models.bn_convnet(input_shape=(size, size, 3), filters=(16, 32, 64), scale_invariant=False)
    model.compile(optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [ScaleMonitor(every_n_steps=every)] if arm == "monitor" else []
    return seconds_per_step_in_fit(model, x, y, epochs, batch, callbacks)


def main():
    p = timing_parser(__doc__)
    p.add_argument("--every", type=int, default=10, help="ScaleMonitor(every_n_steps=...)")
    args = p.parse_args()
    check_positive_flags(p, args, ("repeats", "epochs", "batch", "size", "every"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    med = alternating_medians(("none", "monitor"), args.repeats,
                              lambda arm: time_arm(arm, x, y, args.epochs, args.batch, args.every, args.size))
    row = {"backend": keras.backend.backend(), "every_n_steps": args.every, "repeats": args.repeats,
           "ms_per_step_none": 1e3 * med["none"], "ms_per_step_monitor": 1e3 * med["monitor"],
           "ratio": med["monitor"] / med["none"]}
    print(f"backend={row['backend']}: no monitor {row['ms_per_step_none']:.2f} ms/step, "
          f"ScaleMonitor(every_n_steps={args.every}) {row['ms_per_step_monitor']:.2f} ms/step, "
          f"ratio {row['ratio']:.3f} (median of {args.repeats} alternating runs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([row], f, indent=1)


if __name__ == "__main__":
    main()
