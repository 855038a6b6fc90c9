"""CIFAR-10 with a pre-activation ResNet: step decay + weight decay against its exact TEXP twin.

The paper's setting (Li & Arora, §5): a PreResNet whose BatchNorm layers have
no γ/β and whose last Dense layer is frozen at its random init, so the loss is
invariant to the scale of all convolution kernels together. Two runs from the
same init on the same batches:

* step decay: ``keras_explr.optimizers.SGD(PiecewiseConstantDecay(...),
  momentum=γ, weight_decay=λ)`` (the paper's / PyTorch's SGD, coupled WD);
* TEXP: ``keras_explr.optimizers.SGD(TEXP(boundaries, values, λ, γ), momentum=γ)``,
  **no weight decay**; its LR grows exponentially inside each phase.

After every epoch it prints both runs' test accuracy (inference mode), the
relative distance of their outputs on a fixed batch (training mode, where the
two runs are the same function up to round-off) and both LRs, and it writes a
PNG of the learning rates and the test accuracies.

The distribution is picked automatically: TPUStrategy on a TPU (TensorFlow),
MirroredStrategy on several GPUs (TensorFlow), keras.distribution.DataParallel
on several devices (JAX), otherwise the default single device.

    python examples/cifar10_texp.py                  # CIFAR-10 via keras.datasets (downloads once)
    python examples/cifar10_texp.py --synthetic      # offline: a learnable synthetic 32x32x3 task
    python examples/cifar10_texp.py --digits         # offline: scikit-learn's real 8x8 digits
    python examples/cifar10_texp.py --synthetic --quick   # seconds, for tests
"""

import argparse
import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from keras_explr import callbacks, data, models, optimizers, schedules


def _positive(kind, name, upper=None):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__} > 0; got {text!r}")
        if not value > 0 or (upper is not None and not value < upper):
            rng = f"(0, {upper})" if upper is not None else "> 0"
            raise argparse.ArgumentTypeError(f"{name} must be in {rng}; got {value}")
        return value
    return parse


def distribution():
    """A function returning the strategy scope for this machine (TensorFlow), and what it picked.

    On JAX it sets a keras.distribution where there are several devices.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # Only look for a TPU where one can be (a TPU VM or a named TPU): the
        # resolver would otherwise wait on a metadata server.
        if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0"):
            try:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", "local"))
                tf.config.experimental_connect_to_cluster(resolver)
                tf.tpu.experimental.initialize_tpu_system(resolver)
                return tf.distribute.TPUStrategy(resolver).scope, "TPUStrategy"
            except (ValueError, RuntimeError, tf.errors.OpError) as e:
                print(f"No TPU ({type(e).__name__}: {e}); falling back.")
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
            return strategy.scope, f"MirroredStrategy over {strategy.num_replicas_in_sync} GPUs"
        return tf.distribute.get_strategy().scope, f"single device ({gpus[0].name if gpus else 'CPU'})"
    if backend == "jax":
        devices = keras.distribution.list_devices()
        if len(devices) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            return contextlib.nullcontext, f"keras.distribution.DataParallel over {len(devices)} devices"
        return contextlib.nullcontext, f"single device ({devices[0]})"
    return contextlib.nullcontext, f"single device ({backend})"


def load(args):
    if args.digits:
        (x, y), (x_test, y_test) = data.load_digits()
        return x, y, x_test, y_test, "scikit-learn digits (8x8, real)"
    if args.synthetic:
        # Ten classes, each a fixed random smooth 32x32x3 pattern; images are a
        # randomly scaled, shifted pattern plus noise (learnable, not trivial).
        rng = np.random.default_rng(0)
        n, n_test = (512, 256) if args.quick else (10000, 2000)
        coarse = rng.standard_normal((10, 8, 8, 3))
        templates = coarse.repeat(4, axis=1).repeat(4, axis=2)
        y_all = rng.integers(0, 10, n + n_test)
        shift = rng.integers(-3, 4, (n + n_test, 2))
        x_all = np.stack([np.roll(templates[c], tuple(s), axis=(0, 1)) for c, s in zip(y_all, shift)])
        x_all = (rng.uniform(0.5, 1.5, (len(x_all), 1, 1, 1)) * x_all
                 + 1.5 * rng.standard_normal(x_all.shape)).astype("float32")
        return x_all[:n], y_all[:n], x_all[n:], y_all[n:], f"synthetic 32x32x3 ({n} train)"
    try:
        (x, y), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as e:  # noqa: BLE001 (offline: urllib, HTTP and archive errors alike)
        raise SystemExit(f"Could not load CIFAR-10 ({type(e).__name__}: {e}). Offline, run with "
                         "--synthetic or --digits.")
    mean, std = x.mean((0, 1, 2)), x.std((0, 1, 2))
    x, x_test = ((x - mean) / std).astype("float32"), ((x_test - mean) / std).astype("float32")
    return x, y.ravel().astype("int64"), x_test, y_test.ravel().astype("int64"), "CIFAR-10"


def train(make_optimizer, x, y, x_test, y_test, args, scope, seed=0):
    with scope():
        keras.utils.set_random_seed(seed)
        model = models.preact_resnet(input_shape=x.shape[1:], widths=args.widths,
                                     blocks_per_stage=args.blocks, bn_epsilon=args.bn_epsilon)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # PyTorch's default (0.1 there), which the paper used. Keras's 0.99
                # lets the moving statistics lag ~100 steps behind the TEXP run's
                # growing weights, which inference-mode accuracy would see.
                layer.momentum = 0.9
        model.compile(make_optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    recorder = callbacks.FunctionRecorder(x_test[:128])
    rng = np.random.default_rng(seed)  # both runs see the same batches
    accuracy = []
    for epoch in range(args.epochs):
        order = rng.permutation(len(x))
        model.fit(x[order], y[order], batch_size=args.batch, epochs=epoch + 1, initial_epoch=epoch,
                  shuffle=False, verbose=0, callbacks=[recorder])
        accuracy.append(float(model.evaluate(x_test, y_test, batch_size=512, verbose=0,
                                             return_dict=True)["accuracy"]))
    return accuracy, recorder.outputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    offline = p.add_mutually_exclusive_group()
    offline.add_argument("--synthetic", action="store_true", help="offline: synthetic 32x32x3 data")
    offline.add_argument("--digits", action="store_true", help="offline: scikit-learn's real 8x8 digits")
    p.add_argument("--quick", action="store_true", help="4 tiny epochs on 512 images (for tests)")
    p.add_argument("--epochs", type=_positive(int, "--epochs"), default=None, help="default 40 (--quick: 4)")
    p.add_argument("--batch", type=_positive(int, "--batch"), default=None, help="default 128 (--quick: 32)")
    p.add_argument("--learning-rate", type=_positive(float, "--learning-rate"), default=0.1)
    p.add_argument("--weight-decay", type=_positive(float, "--weight-decay", 1.0), default=5e-4)
    p.add_argument("--momentum", type=_positive(float, "--momentum", 1.0), default=0.9)
    p.add_argument("--widths", type=_positive(int, "--widths"), nargs="+", default=None,
                   help="channels per stage (default 16 32 64; --quick: 8 16)")
    p.add_argument("--blocks", type=_positive(int, "--blocks"), default=None,
                   help="residual blocks per stage (default 3, PreResNet20-like; --quick: 1)")
    p.add_argument("--bn-epsilon", type=_positive(float, "--bn-epsilon"), default=1e-5,
                   help="BatchNorm ε (it bends scale invariance by ε/‖z‖²; 1e-5 as in PyTorch)")
    p.add_argument("--out", default="cifar10_texp.png")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (4 if args.quick else 40)
    args.batch = args.batch or (32 if args.quick else 128)
    args.widths = tuple(args.widths or ((8, 16) if args.quick else (16, 32, 64)))
    args.blocks = args.blocks or (1 if args.quick else 3)
    if args.epochs < 3:
        p.error(f"--epochs must be >= 3 (two LR drops, at 50 % and 75 %); got {args.epochs}")

    scope, where = distribution()
    x, y, x_test, y_test, name = load(args)
    if args.quick:
        x, y = x[:512], y[:512]
    if args.batch > len(x):
        p.error(f"--batch must be in [1, {len(x)}] (the training set); got {args.batch}")
    steps = -(-len(x) // args.batch)
    boundaries = [(args.epochs // 2) * steps - 1, ((3 * args.epochs) // 4) * steps - 1]
    values = [np.float64(args.learning_rate), np.float64(args.learning_rate / 10),
              np.float64(args.learning_rate / 100)]  # np.float64: PiecewiseConstantDecay keeps them exact
    try:
        texp = schedules.TEXP(boundaries, values, args.weight_decay, args.momentum)
    except ValueError as e:  # e.g. λ·η beyond the real-root bound (1−√γ)²
        p.error(f"--weight-decay {args.weight_decay}, --learning-rate {args.learning_rate}, "
                f"--momentum {args.momentum}: {e}")
    print(f"{name}: {len(x)} train / {len(x_test)} test, {steps} steps/epoch, {args.epochs} epochs; "
          f"{where}; PreResNet widths {args.widths} x {args.blocks} blocks, BN without γ/β, head frozen")
    print(f"step decay: SGD(PiecewiseConstantDecay({boundaries}, [{', '.join(f'{v:g}' for v in values)}]), "
          f"momentum={args.momentum}, weight_decay={args.weight_decay})")
    print(f"TEXP:       SGD(TEXP({boundaries}, ..., {args.weight_decay}, {args.momentum}), "
          f"momentum={texp.momentum}), no weight decay")

    def step_decay():
        return optimizers.SGD(keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values),
                              momentum=args.momentum, weight_decay=args.weight_decay)

    def texp_sgd():
        return optimizers.SGD(schedules.TEXP(boundaries, values, args.weight_decay, args.momentum),
                              momentum=texp.momentum)

    acc_step, out_step = train(step_decay, x, y, x_test, y_test, args, scope)
    acc_texp, out_texp = train(texp_sgd, x, y, x_test, y_test, args, scope)
    lr_texp = texp.learning_rates(np.arange(args.epochs * steps))
    t = np.arange(args.epochs * steps)
    lr_step = np.select([t <= boundaries[0], t <= boundaries[1]], values[:2], values[2]).astype(float)
    print(f"{'epoch':>5} {'acc step':>9} {'acc TEXP':>9} {'rel. diff':>10} {'LR step':>9} {'LR TEXP':>10}")
    for e in range(args.epochs):
        a, b = out_step[e + 1], out_texp[e + 1]
        last = (e + 1) * steps - 1
        print(f"{e + 1:>5} {acc_step[e]:9.4f} {acc_texp[e]:9.4f} "
              f"{np.linalg.norm(a - b) / np.linalg.norm(a):10.2e} {lr_step[last]:9.3g} {lr_texp[last]:10.4g}")
    print(f"Final test accuracy: step decay {acc_step[-1]:.4f}, TEXP {acc_texp[-1]:.4f}; max relative output "
          f"difference {callbacks.max_relative_difference(out_step, out_texp):.2e} (float32 round-off, amplified "
          f"by training); TEXP's LR peaked at {lr_texp.max():.4g}")
    plot(args.out, acc_step, acc_texp, lr_step, lr_texp, steps, name)
    print(f"Wrote {args.out}")


def plot(path, acc_step, acc_texp, lr_step, lr_texp, steps, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    t = np.arange(1, len(lr_step) + 1) / steps
    ax_lr.plot(t, lr_step, label="step decay + WD")
    ax_lr.plot(t, lr_texp, "--", label="TEXP, no WD")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    epochs = np.arange(1, len(acc_step) + 1)
    ax_acc.plot(epochs, acc_step, "o-", label="step decay + WD")
    ax_acc.plot(epochs, acc_texp, "x--", label="TEXP, no WD")
    ax_acc.set_ylabel("test accuracy")
    for ax in (ax_lr, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{name}: step decay and its TEXP twin")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
