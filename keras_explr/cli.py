"""The `keras-explr` command (also `python -m keras_explr`).

Each subcommand's implementation is a function that imports its heavy modules
inside, so `--help`, `convert` and argument errors load no framework.
"""

import os

# TensorFlow's C++ log (and XLA's absl log) must be silenced before any framework import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# On CPUs with AVX-512 BF16 / AMX, TensorFlow turns on oneDNN's custom operations and says so through absl's log
# before any log level applies ("oneDNN custom operations are on", twice). The commands run TensorFlow's standard
# kernels instead: the same results on every CPU (the demo's difference is 1.97e-14 either way) and a clean
# console. A user's own TF_ENABLE_ONEDNN_OPTS wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import argparse
import sys
import time

from keras_explr import _checks


def _demo_parser(sub):
    p = sub.add_parser(
        "demo",
        help="train a BN convnet on digits with WD + constant LR and with the equivalent ExpLR",
        description=(
            "Trains a small BatchNorm convnet on scikit-learn's real 8x8 digits twice: "
            "once with SGD + momentum + weight decay at a constant LR, once with no weight "
            "decay and the equivalent exponentially growing LR (Li & Arora, Theorem 1.1). "
            "Prints, per epoch, both runs' accuracies, the max relative difference of their "
            "outputs, the LR and the weight norm, and writes a PNG with the LR, the weight norm "
            "and the relative difference of the two runs' outputs after every step. Needs the "
            "`demo` extra: pip install 'keras-explr[demo]'."
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
    p.add_argument("--verbose", action="store_true", help="show Keras's progress bar for every epoch")
    p.set_defaults(func=demo)


def _convert_parser(sub):
    from keras_explr import theory

    p = sub.add_parser(
        "convert",
        help="translate a weight decay between PyTorch, Keras, optax, Composer and the independent/corrected rules",
        description=(
            "Prints, for your weight decay, learning rate and momentum, the weight decay that "
            "gives the same decay in each convention (torch_sgd: coupled L2 in the momentum "
            "buffer; torch_adamw, keras, optax_adamw: θ ← θ − ηλθ; composer: θ ← θ − (η_t/η_0)λθ; "
            "independent: θ ← (1 − λ)θ; corrected: θ ← θ − η_t(λη_t/η_max)θ), the fraction removed "
            "per step and the timescale τ = 1/(ηλ) in iterations and epochs. 'exact' rows "
            "reproduce the run; where no exact map exists the reason is printed, and with "
            "--approximate the value with the same total decay."
        ),
    )
    p.add_argument("--weight-decay", type=float, required=True)
    p.add_argument("--learning-rate", type=float, required=True,
                   help="the (peak, constant) learning rate")
    p.add_argument("--from", dest="source", default="torch_adamw", choices=theory.WEIGHT_DECAY_CONVENTIONS,
                   help="the convention your weight decay is written in (default torch_adamw)")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--approximate", action="store_true",
                   help="also give a value where no exact map exists (the same total decay)")
    p.set_defaults(func=convert)


def convert(args):
    from keras_explr import theory

    if args.steps_per_epoch is not None:
        _checks.check_steps("--steps-per-epoch", args.steps_per_epoch)
    _checks.check_positive("--learning-rate", args.learning_rate)
    _checks.check_non_negative("--weight-decay", args.weight_decay)
    _checks.check_momentum(args.momentum, "--momentum")
    rows = theory.weight_decay_table(args.weight_decay, args.learning_rate, args.source, args.momentum,
                                     args.steps_per_epoch, approximate=args.approximate)
    print(f"weight_decay={args.weight_decay:g} in the {args.source} convention, learning_rate="
          f"{args.learning_rate:g}, momentum={args.momentum:g}"
          + (f", {args.steps_per_epoch} steps/epoch" if args.steps_per_epoch else ""))
    header = (f"{'convention':<12} {'weight_decay':>13} {'':<7} {'decay/step':>11} {'tau (iter)':>11} "
              f"{'tau (epochs)':>12}")
    print(header)
    print("-" * len(header))

    def num(x, fmt):
        return format("-" if x is None else x, fmt if x is not None else ">" + fmt.split(".")[0].rstrip("g"))

    notes = []
    for r in rows:
        kind = "exact" if r["exact"] else ("approx" if r["weight_decay"] is not None else "none")
        print(f"{r['convention']:<12} {num(r['weight_decay'], '13.6g')} {kind:<7} "
              f"{num(r['decay_per_step'], '11.4g')} {num(r['tau_iterations'], '11.5g')} "
              f"{num(r['tau_epochs'], '12.4g')}")
        if r["note"] and r["note"] not in notes:
            notes.append(r["note"])
    for n in notes:
        print(f"\nnot exact: {n}.")
    if notes and not args.approximate:
        print("Pass --approximate for the value with the same total decay.")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keras-explr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    _convert_parser(sub)
    from keras_explr import probe_cli
    from keras_explr.tuning import cli as tuning_cli

    probe_cli.add_parser(sub)
    tuning_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad arguments: say which, with the subcommand's usage, no traceback
        sub.choices[args.command].error(str(e))
    except ModuleNotFoundError as e:  # a missing optional dependency: say which extra installs it
        from keras_explr import _optional

        if e.name is None or e.name.split(".")[0] not in _optional.KNOWN:
            raise
        message = str(e) if isinstance(e, _optional.MissingOptionalDependency) else _optional.install_hint(e.name)
        print(f"{parser.prog} {args.command}: {message}", file=sys.stderr)
        return 1


def demo(args):
    from keras_explr import _optional

    # Optional dependencies first, so that a missing one costs nothing and names its extra.
    for module in ("sklearn", "matplotlib"):
        _optional.require(module, "demo", purpose="`keras-explr demo`")
    from keras_explr import theory

    for name in ("epochs", "batch_size"):
        _checks.check_steps(f"--{name.replace('_', '-')}", getattr(args, name))
    # Every argument is checked before anything changes (floatx, files) and before the framework loads.
    theory.check_real_roots(args.learning_rate, args.weight_decay, args.momentum)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out must be a folder; {args.out!r} is a file.")
    import keras
    import numpy as np

    from keras_explr import callbacks, data, models, optimizers, plots, schedules

    step_trace, test_accuracy = _callbacks()
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
    for label, lr, opt in (
        ("WD", args.learning_rate,
         optimizers.SGD(args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)),
        ("ExpLR", twin_lr, optimizers.SGD(twin_lr, momentum=twin_lr.momentum)),
    ):
        print(f"== {label}: {_describe(label, args)}", flush=True)
        model = build()
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        rec = callbacks.FunctionRecorder(x[:256], every_n_steps=1)  # the outputs after every step
        trace = step_trace(lr)
        test_acc = test_accuracy(x_test, y_test)
        start = time.perf_counter()
        hist = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=False,
                         verbose=1 if args.verbose else 0, callbacks=[rec, trace, test_acc])
        seconds = time.perf_counter() - start
        print(f"   {args.epochs} epochs, {args.epochs * steps_per_epoch} steps in {seconds:.1f} s", flush=True)
        runs[label] = {"outputs": rec.outputs, "steps": rec.steps, "acc": hist.history["accuracy"],
                       "test_acc": test_acc.values, "trace": trace, "seconds": seconds}

    wd, ex = runs["WD"], runs["ExpLR"]
    if wd["steps"] != ex["steps"]:
        raise RuntimeError("the two runs recorded their outputs at different steps")
    steps = np.asarray(wd["steps"])
    diffs = np.asarray(callbacks.relative_differences(wd["outputs"], ex["outputs"]))
    print(f"\nBackend {keras.backend.backend()}, {keras.config.floatx()}, "
          f"{len(x)} digits, {steps_per_epoch} steps/epoch. Growth root alpha = "
          f"{theory.growth_root(args.learning_rate, args.weight_decay, args.momentum):.9f}; "
          f"ExpLR grows x{twin_lr.growth_per_epoch:.4f} per epoch.")
    header = (f"{'epoch':>5} {'acc WD':>8} {'acc ExpLR':>9} {'test WD':>8} {'test ExpLR':>10} "
              f"{'max rel diff':>12} {'LR (ExpLR)':>11} {'|w| WD':>8} {'|w| ExpLR':>10}")
    print(header)
    print("-" * len(header))
    for e in range(args.epochs):
        end = (e + 1) * steps_per_epoch
        diff = float(np.max(diffs[steps <= end]))  # worst so far, as in callbacks.max_relative_difference
        i = end - 1
        print(f"{e + 1:>5} {wd['acc'][e]:>8.4f} {ex['acc'][e]:>9.4f} {wd['test_acc'][e]:>8.4f} "
              f"{ex['test_acc'][e]:>10.4f} {diff:>12.2e} {ex['trace'].lr[i]:>11.4g} "
              f"{wd['trace'].norm[i]:>8.4f} {ex['trace'].norm[i]:>10.4f}")
    worst = float(np.max(diffs))
    print(f"\nMax relative difference of the two runs' outputs over {args.epochs} epochs: {worst:.2e} "
          f"({'float64 round-off' if float64 else 'float32 round-off'} is the expectation), "
          f"checked after each of the {int(steps[-1])} steps.")
    print("Test accuracy normalizes with the test set's own batch statistics: BatchNorm's moving "
          "averages lag the growing weights of the ExpLR run (docs/math.md#bn-statistics), so "
          "inference-mode outputs of the two runs differ slightly unless the statistics are recomputed.")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "explr_demo.png")
    # Step 0 is the shared initialization (difference 0, off a log axis): plot steps 1, 2, ...
    curve = np.where(diffs[1:] > 0, diffs[1:], np.nan)
    plots.log_panels(path, [
        ("learning rate", {k: v["trace"].lr for k, v in runs.items()}),
        ("norm of the trainable weights", {k: v["trace"].norm for k, v in runs.items()}),
        ("relative output difference", {"‖f_WD − f_ExpLR‖ / ‖f_WD‖": curve}),
    ], title=f"WD {args.weight_decay:g} + LR {args.learning_rate:g} vs its ExpLR twin: "
             f"the same network at every step (max difference {worst:.1e})")
    print(f"Wrote {path}. Training took {wd['seconds']:.1f} s (WD) and {ex['seconds']:.1f} s (ExpLR).")
    return 0


def _describe(label, args):
    if label == "WD":
        return (f"keras_explr.optimizers.SGD(learning_rate={args.learning_rate}, "
                f"momentum={args.momentum}, weight_decay={args.weight_decay})")
    return (f"ExpLR.from_weight_decay({args.learning_rate}, {args.weight_decay}, {args.momentum}) "
            "with the same momentum and no weight decay")


def _callbacks():
    """The demo's two callbacks, built on first use (they subclass a Keras class)."""
    import keras
    import numpy as np

    class StepTrace(keras.callbacks.Callback):
        """The LR used by each step (`learning_rate`: the float or schedule the
        optimizer was given) and the norm of the trainable weights after it."""

        def __init__(self, learning_rate):
            super().__init__()
            self.learning_rate = learning_rate
            self.lr, self.norm = [], []

        def on_train_batch_end(self, batch, logs=None):
            opt = self.model.optimizer
            # iterations has already advanced: the step just taken used iterations − 1.
            it = int(keras.ops.convert_to_numpy(opt.iterations)) - 1
            lr = self.learning_rate
            self.lr.append(float(keras.ops.convert_to_numpy(lr(it) if callable(lr) else lr)))
            self.norm.append(float(np.sqrt(sum(np.sum(keras.ops.convert_to_numpy(v) ** 2)
                                               for v in self.model.trainable_variables))))

    class TestAccuracy(keras.callbacks.Callback):
        def __init__(self, x, y):
            super().__init__()
            self.x, self.y, self.values = x, y, []

        def on_epoch_end(self, epoch, logs=None):
            m = self.model  # BN on the test set's own batch statistics (see the demo's note)
            logits, _ = m.stateless_call([v.value for v in m.trainable_variables],
                                         [v.value for v in m.non_trainable_variables],
                                         self.x, training=True)
            logits = keras.ops.convert_to_numpy(logits)
            self.values.append(float(np.mean(np.argmax(logits, -1) == self.y)))

    return StepTrace, TestAccuracy


if __name__ == "__main__":
    sys.exit(main())
