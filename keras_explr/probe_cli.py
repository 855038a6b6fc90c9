"""`keras-explr probe`: a ScaleMonitor run on real digits, measured against theory."""

import os

from keras_explr import _checks

OPTIMIZERS = ("sgd", "keras-sgd", "adamw", "reparam-sgd", "reparam-adam")
_DEFAULT_LR = {"sgd": 0.1, "keras-sgd": 0.1, "adamw": 1e-2, "reparam-sgd": 0.1, "reparam-adam": 1e-2}


def add_parser(sub):
    p = sub.add_parser(
        "probe",
        help="train a BN convnet on digits with ScaleMonitor; compare angular updates with theory",
        description=(
            "Trains the scale-invariant BN convnet on scikit-learn's real 8x8 digits with each "
            "chosen optimizer, at the same weight decay per step (ηλ, or λ_new for the "
            "reparameterized wrapper), records per-layer weight norms, relative and angular "
            "updates, cos(grad, w), effective LR and the clock t·ηλ with "
            "keras_explr.callbacks.ScaleMonitor, prints the measured RMS angular update past "
            "clock 0.5 next to the predicted equilibrium, and writes one PNG per optimizer "
            "(theory dashed)."
        ),
    )
    p.add_argument("--optimizers", default="sgd,reparam-sgd",
                   help=f"comma-separated, from {', '.join(OPTIMIZERS)} (default: sgd,reparam-sgd)")
    p.add_argument("--decay-per-step", type=float, default=5e-4,
                   help="ηλ, the fraction of the weights decayed per step (default 5e-4)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="η (default 0.1 for SGD, 1e-2 for Adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--every", type=int, default=5, help="record every N steps (default 5)")
    p.add_argument("--per-neuron", action="store_true", help="also record per output neuron")
    p.add_argument("--out", default="keras-explr-probe", help="folder for the PNGs (created)")
    p.set_defaults(func=run)


def _optimizer(name, lr, decay, momentum):
    import keras

    from keras_explr import optimizers

    if name == "sgd":
        return optimizers.SGD(lr, momentum=momentum, weight_decay=decay / lr)
    if name == "keras-sgd":
        return keras.optimizers.SGD(lr, momentum=momentum, weight_decay=decay / lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=decay / lr)
    if name == "reparam-sgd":
        return optimizers.ReparamWeightDecay(keras.optimizers.SGD(lr, momentum=momentum), decay)
    return optimizers.ReparamWeightDecay(keras.optimizers.Adam(lr), decay)


def run(args):
    from keras_explr import _optional

    # Optional dependencies first: a missing one names its extra before any training or file.
    for module in ("sklearn", "matplotlib"):
        _optional.require(module, "demo", purpose="`keras-explr probe`")

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise ValueError(f"--optimizers must be a comma-separated list from {OPTIMIZERS}. "
                         f"Received: {args.optimizers!r}")
    decay = _checks.check_positive("--decay-per-step", args.decay_per_step)
    if not decay < 1:
        raise ValueError(f"--decay-per-step must be in (0, 1). Received: {decay}")
    if args.learning_rate is not None:
        _checks.check_positive("--learning-rate", args.learning_rate)
    _checks.check_momentum(args.momentum, "--momentum")
    for flag in ("epochs", "batch_size", "every"):
        _checks.check_steps(f"--{flag.replace('_', '-')}", getattr(args, flag))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out must be a folder; {args.out!r} is a file.")
    import keras  # the framework loads once every argument has been checked
    import numpy as np

    from keras_explr import data, models, plots
    from keras_explr.monitor import ScaleMonitor

    os.makedirs(args.out, exist_ok=True)
    (x, y), _ = data.load_digits()
    steps = args.epochs * int(np.ceil(len(x) / args.batch_size))
    print(f"{len(x)} real digits, {args.epochs} epochs = {steps} steps, ηλ = {decay:g} per step "
          f"(clock at the end: {steps * decay:.2f})")
    rows = []
    for name in names:
        lr = args.learning_rate if args.learning_rate is not None else _DEFAULT_LR[name]
        keras.utils.set_random_seed(0)
        model = models.bn_convnet(scale_invariant=True)
        model.compile(optimizer=_optimizer(name, lr, decay, args.momentum),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        monitor = ScaleMonitor(every_n_steps=args.every, per_neuron=args.per_neuron)
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=[monitor])
        png = plots.scale_monitor(os.path.join(args.out, f"probe_{name}.png"), monitor,
                                  title=f"{name}: η={lr:g}, ηλ={decay:g} (theory dashed)")
        for path in monitor.monitored_paths:
            _, angle = monitor.series(path, "angular_update")
            _, predicted = monitor.series(path, "predicted_angular_update")
            _, clock = monitor.series(path, "clock")
            _, cosine = monitor.series(path, "grad_cosine")
            late = clock >= 0.5
            measured = float(np.sqrt(np.mean(angle[late] ** 2))) if late.any() else float("nan")
            rows.append((name, path, measured, float(predicted[-1]), float(np.max(np.abs(cosine)))))
        print(f"  {name}: wrote {png}")
    print(f"\n{'optimizer':<14}{'variable':<16}{'measured':>11}{'theory':>11}{'ratio':>8}{'max|cos(g,w)|':>15}")
    for name, path, measured, predicted, cos in rows:
        print(f"{name:<14}{path:<16}{measured:>11.5f}{predicted:>11.5f}{measured / predicted:>8.3f}{cos:>15.2e}")
    print("\nmeasured: RMS angular update per step once the clock t·ηλ ≥ 0.5 (nan: never reached);"
          " theory: docs/math.md#rotational-equilibrium.")
    return 0
