"""Step-time overhead of ReparamWeightDecay against Keras's built-in weight decay.

Both arms train the same BN convnet on the same data with momentum SGD and a
decoupled decay: `keras.optimizers.SGD(weight_decay=λ/η)` (θ ← θ − ηwθ) against
`ReparamWeightDecay(keras.optimizers.SGD(), λ)` (θ ← (1−λ)θ). The arms
alternate, each run times `--epochs` epochs after a warm-up epoch, and the
script prints the median time per step of each arm and their ratio, measured
side by side in this run (machines are noisy: compare ratios, not seconds).

    python benchmarks/wrapper_overhead.py            # CPU, TF, with and without jit
    KERAS_BACKEND=jax python benchmarks/wrapper_overhead.py --size 32
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import alternating_medians, check_positive_flags, seconds_per_step, timing_parser

from keras_explr import models, optimizers


def make_data(size, n=2048, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, n)
    return x, y


def time_arm(arm, x, y, epochs, batch, jit, size):
    keras.utils.set_random_seed(0)
    model = models.bn_convnet(input_shape=(size, size, 3), filters=(16, 32, 64), scale_invariant=False)
    lr, lam = 0.1, 5e-4
    if arm == "keras":
        opt = keras.optimizers.SGD(lr, momentum=0.9, weight_decay=lam / lr)
    else:
        opt = optimizers.ReparamWeightDecay(keras.optimizers.SGD(lr, momentum=0.9), lam)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    return seconds_per_step(model, x, y, epochs, batch)


def main():
    p = timing_parser(__doc__)
    p.add_argument("--jit", choices=["both", "on", "off"], default="both")
    args = p.parse_args()
    check_positive_flags(p, args, ("repeats", "epochs", "batch", "size"))
    x, y = make_data(args.size)
    jits = {"both": [False, True], "on": [True], "off": [False]}[args.jit]
    results = []
    for jit in jits:
        med = alternating_medians(("keras", "reparam"), args.repeats,
                                  lambda arm: time_arm(arm, x, y, args.epochs, args.batch, jit, args.size))
        ratio = med["reparam"] / med["keras"]
        row = {"backend": keras.backend.backend(), "jit": jit, "repeats": args.repeats,
               "ms_per_step_keras": 1e3 * med["keras"], "ms_per_step_reparam": 1e3 * med["reparam"],
               "ratio": ratio}
        results.append(row)
        print(f"backend={row['backend']} jit={jit}: Keras SGD(weight_decay) {row['ms_per_step_keras']:.2f} ms/step, "
              f"ReparamWeightDecay {row['ms_per_step_reparam']:.2f} ms/step, ratio {ratio:.3f} "
              f"(median of {args.repeats} alternating runs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
