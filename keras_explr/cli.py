"""The `keras-explr` command (also `python -m keras_explr`)."""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _demo_parser(sub):
    p = sub.add_parser(
        "demo",
        help="train a BN convnet on digits with WD + constant LR and with the equivalent ExpLR",
        description=(
            "Trains a small BatchNorm convnet on scikit-learn's real 8x8 digits twice: "
            "once with SGD + momentum + weight decay at a constant LR, once with no weight "
            "decay and the equivalent exponentially growing LR (Li & Arora, Theorem 1.1). "
            "Prints, per epoch, both runs' accuracies, the max relative difference of their "
            "outputs, the LR and the weight norm, and writes a PNG of LR and weight norm."
        ),
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--float32", action="store_true",
                   help="train in float32 (default: float64 on TensorFlow, to show round-off agreement)")
    p.add_argument("--out", default="keras-explr-demo", help="folder for the PNG (created)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=demo)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keras-explr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    from keras_explr import probe_cli
    from keras_explr.tuning import cli as tuning_cli

    probe_cli.add_parser(sub)
    tuning_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad arguments: say which, no traceback
        parser.error(str(e))


def demo(args):
    import keras
    import numpy as np

    from keras_explr import callbacks, data, models, optimizers, plots, schedules, theory

    for name in ("epochs", "batch_size"):
        theory.check_steps(f"--{name.replace('_', '-')}", getattr(args, name))
    # Every argument is checked before anything changes (floatx, files).
    theory.check_real_roots(args.learning_rate, args.weight_decay, args.momentum)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out must be a folder; {args.out!r} is a file.")
    float64 = keras.backend.backend() == "tensorflow" and not args.float32
    keras.config.set_floatx("float64" if float64 else "float32")
    keras.config.set_dtype_policy(keras.config.floatx())
    # The ExpLR twin, validated before any training starts.
    (x, y), (x_test, y_test) = data.load_digits()
    x, x_test = x.astype(keras.config.floatx()), x_test.astype(keras.config.floatx())
    steps_per_epoch = -(-len(x) // args.batch_size)
    twin_lr = schedules.ExpLR.from_weight_decay(args.learning_rate, args.weight_decay, args.momentum,
                                                steps_per_epoch=steps_per_epoch)

    def build():
        keras.utils.set_random_seed(0)
        if float64:
            return models.bn_convnet(filters=(16, 32, 64), bn_epsilon=1e-30)
        return models.bn_convnet(filters=(16, 32, 64), bn_epsilon=1e-12,
                                 activation="tanh", pooling="average")

    runs = {}
    for label, opt in (
        ("WD", optimizers.SGD(args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)),
        ("ExpLR", optimizers.SGD(twin_lr, momentum=twin_lr.momentum)),
    ):
        print(f"\n== {label}: {_describe(label, args)}")
        model = build()
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        rec = callbacks.FunctionRecorder(x[:256])
        trace = _StepTrace()
        test_acc = _TestAccuracy(x_test, y_test)
        start = time.perf_counter()
        hist = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=False,
                         verbose=0 if args.quiet else 1, callbacks=[rec, trace, test_acc])
        runs[label] = {"outputs": rec.outputs, "acc": hist.history["accuracy"],
                       "test_acc": test_acc.values, "trace": trace, "seconds": time.perf_counter() - start}

    wd, ex = runs["WD"], runs["ExpLR"]
    print(f"\nBackend {keras.backend.backend()}, {keras.config.floatx()}, "
          f"{len(x)} digits, {steps_per_epoch} steps/epoch. Growth root alpha = "
          f"{theory.growth_root(args.learning_rate, args.weight_decay, args.momentum):.9f}; "
          f"ExpLR grows x{twin_lr.growth_per_epoch:.4f} per epoch.")
    header = (f"{'epoch':>5} {'acc WD':>8} {'acc ExpLR':>9} {'test WD':>8} {'test ExpLR':>10} "
              f"{'max rel diff':>12} {'LR (ExpLR)':>11} {'|w| WD':>8} {'|w| ExpLR':>10}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for e in range(args.epochs):
        diff = callbacks.max_relative_difference(wd["outputs"][: e + 2], ex["outputs"][: e + 2])
        worst = max(worst, diff)
        i = (e + 1) * steps_per_epoch - 1
        print(f"{e + 1:>5} {wd['acc'][e]:>8.4f} {ex['acc'][e]:>9.4f} {wd['test_acc'][e]:>8.4f} "
              f"{ex['test_acc'][e]:>10.4f} {diff:>12.2e} {ex['trace'].lr[i]:>11.4g} "
              f"{wd['trace'].norm[i]:>8.4f} {ex['trace'].norm[i]:>10.4f}")
    print(f"\nMax relative difference of the two runs' outputs over {args.epochs} epochs: {worst:.2e} "
          f"({'float64 round-off' if float64 else 'float32 round-off'} is the expectation).")
    print("Test accuracy normalizes with the test set's own batch statistics: BatchNorm's moving "
          "averages lag the growing weights of the ExpLR run (MATH.md §6.2), so inference-mode "
          "outputs of the two runs differ slightly unless the statistics are recomputed.")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "explr_demo.png")
    plots.lr_and_norm(path, {k: (v["trace"].lr, v["trace"].norm) for k, v in runs.items()},
                      title=f"WD {args.weight_decay:g} + LR {args.learning_rate:g} vs its ExpLR twin")
    print(f"Wrote {path}. Training took {wd['seconds']:.1f} s (WD) and {ex['seconds']:.1f} s (ExpLR).")
    return 0


def _describe(label, args):
    if label == "WD":
        return (f"keras_explr.optimizers.SGD(learning_rate={args.learning_rate}, "
                f"momentum={args.momentum}, weight_decay={args.weight_decay})")
    return (f"ExpLR.from_weight_decay({args.learning_rate}, {args.weight_decay}, {args.momentum}) "
            "with the same momentum and no weight decay")


def _callback_base():
    import keras

    return keras.callbacks.Callback


class _StepTrace(_callback_base()):
    """The LR used by each step and the norm of the trainable weights after it."""

    def __init__(self):
        super().__init__()
        self.lr, self.norm = [], []

    def on_train_batch_end(self, batch, logs=None):
        import keras
        import numpy as np

        opt = self.model.optimizer
        # iterations has already advanced: the step just taken used iterations − 1.
        it = int(keras.ops.convert_to_numpy(opt.iterations)) - 1
        lr = opt._learning_rate
        self.lr.append(float(keras.ops.convert_to_numpy(lr(it) if callable(lr) else lr)))
        self.norm.append(float(np.sqrt(sum(np.sum(keras.ops.convert_to_numpy(v) ** 2)
                                           for v in self.model.trainable_variables))))


class _TestAccuracy(_callback_base()):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.values = x, y, []

    def on_epoch_end(self, epoch, logs=None):
        import keras
        import numpy as np

        m = self.model  # BN on the test set's own batch statistics (see the demo's note)
        logits, _ = m.stateless_call([v.value for v in m.trainable_variables],
                                     [v.value for v in m.non_trainable_variables],
                                     self.x, training=True)
        logits = keras.ops.convert_to_numpy(logits)
        self.values.append(float(np.mean(np.argmax(logits, -1) == self.y)))


if __name__ == "__main__":
    sys.exit(main())
