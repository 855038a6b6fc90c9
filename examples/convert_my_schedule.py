"""Convert your CosineDecay + weight decay setup into its exact WD-free (ExpLR) twin.

You train with `keras_explr.optimizers.SGD(CosineDecay(...), momentum=γ,
weight_decay=λ)` (the paper's / PyTorch's coupled decay). On a network whose
loss is scale-invariant in its normalized kernels, the same networks come out
of SGD with momentum γ, **no weight decay**, and the learning rate printed
here (docs/math.md#exact-twin-of-any-schedule). The script prints the twin, the momentum to use, where it
would pass float32's range, and writes a PNG of both schedules.

    python examples/convert_my_schedule.py                 # a 100-epoch CIFAR-style setup
    python examples/convert_my_schedule.py --quick         # small, for tests
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from keras_explr import plots, schedules, theory


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learning-rate", type=float, default=0.1, help="peak LR (warm-up target)")
    p.add_argument("--warmup-start", type=float, default=0.01, help="LR at step 0 (must be > 0)")
    p.add_argument("--warmup-steps", type=int, default=1955)
    p.add_argument("--decay-steps", type=int, default=37145)
    p.add_argument("--alpha", type=float, default=0.01, help="CosineDecay's final fraction")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--out", default="convert_my_schedule.png")
    p.add_argument("--quick", action="store_true", help="a 1,000-step version (for tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup_steps, args.decay_steps = 100, 900
    total = args.warmup_steps + args.decay_steps
    base = keras.optimizers.schedules.CosineDecay(
        args.warmup_start, decay_steps=args.decay_steps, alpha=args.alpha,
        warmup_target=args.learning_rate, warmup_steps=args.warmup_steps)
    twin = schedules.EquivalentSchedule(base, args.weight_decay, args.momentum, total_steps=total)
    steps = np.arange(total)
    lr = twin.learning_rates(steps)
    print("Your run:  keras_explr.optimizers.SGD(CosineDecay(...), "
          f"momentum={args.momentum}, weight_decay={args.weight_decay})")
    print(f"Its twin:  keras_explr.optimizers.SGD(EquivalentSchedule(base, {args.weight_decay}, "
          f"{args.momentum}, total_steps={total}), momentum={twin.momentum}), no weight decay")
    for t in sorted({0, args.warmup_steps // 2, args.warmup_steps, total // 2, total - 1}):
        print(f"  step {t:>6}: base LR {twin.base_learning_rates[t]:.6g}  ->  twin LR {lr[t]:.6g}"
              f"  (x{lr[t] / twin.base_learning_rates[t]:.4g})")
    horizon = twin.float32_horizon
    print("float32 horizon: " + (f"the twin passes float32's max at step {horizon}" if horizon is not None
                                 else f"none: the twin peaks at {lr.max():.3g}, far inside float32"))
    after = theory.growth_per_epoch(twin.base_learning_rates[-1], args.weight_decay, args.momentum, 391)
    print(f"After step {total} the base LR stays at {twin.base_learning_rates[-1]:.3g}; the twin then grows "
          f"x{after:.4f} per 391-step epoch.")
    plots.learning_rates(args.out, {"CosineDecay + weight decay": twin.base_learning_rates,
                                    "exact WD-free twin": lr},
                         title="A schedule and its exact WD-free twin")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
