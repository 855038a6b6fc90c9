"""‖g‖/‖w‖ at the end of a cosine-to-zero run: AdamW against corrected decay on the invariant group.

Defazio (2025) and the AdamC paper: with decoupled weight decay d_t = η_tλ, the
equilibrium ‖g‖/‖w‖ of a normalized layer's weights goes as √(2λ/η_t), so it
rises as a cosine schedule takes η_t to 0 (the gradient norm "rapidly
increases near the end of training"). The corrected rule d_t = λ_max·(η_t/η_0)²
keeps λ_t/η_t constant and the ratio flat. It only applies where the norm
equilibrates, the scale-invariant weights; elsewhere the rule users know stays.

Arms, on scikit-learn's real 8×8 digits (`keras_explr.data.load_digits`), a
`keras_explr.models.bn_convnet` (conv kernels → BatchNorm with γ/β → ReLU,
trainable Dense head), Adam with a cosine schedule from η_0 to 0, the same
seeds and batches for both:

* ``adamw``: ``keras.optimizers.AdamW(cosine, weight_decay=λ)``: d_t = η_tλ on
  every kernel (biases and γ/β excluded, as in the other arm);
* ``corrected``: ``ReparamWeightDecay(Adam(cosine), η_0λ, lr_exponent=2,
  model=model)``: d_t = η_0λ(η_t/η_0)² on the invariant group (the conv
  kernels, `keras_explr.invariance.invariant_group`), η_tλ on the head.

Reported, per arm (mean and 95 % t interval over seeds): the group's ‖g‖/‖w‖
(`ScaleMonitor`'s grad_ratio, the mean over the conv kernels) averaged over
the middle 10 % of the run and over the last 10 %, their ratio (end/middle),
and the test accuracy; and the paired (same seed) ratio corrected/adamw of the
end-of-run ‖g‖/‖w‖.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def t_interval(values):
    """mean and 95 % t half-width."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def run(arm, seed, epochs, batch, lr, lam):
    import keras

    from keras_explr import callbacks, data, models, optimizers

    (x, y), (xt, yt) = data.load_digits()
    keras.utils.set_random_seed(seed)
    model = models.bn_convnet(scale_invariant=False, filters=(16, 32))
    steps = epochs * math.ceil(len(x) / batch)
    cosine = keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.0)
    if arm == "adamw":
        opt = keras.optimizers.AdamW(cosine, weight_decay=lam)
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    else:
        opt = optimizers.ReparamWeightDecay(keras.optimizers.Adam(cosine), lr * lam, lr_exponent=2, model=model)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    kernels = [v.path for v in model.trainable_variables if v.path.split("/")[-2].startswith("conv")
               and v.path.endswith("kernel")]
    monitor = callbacks.ScaleMonitor(every_n_steps=2, variables=kernels, epsilon_margin=None)
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[monitor], shuffle=True)
    ratios = []
    for path in kernels:
        s, r = monitor.series(path, "grad_ratio")
        ratios.append(r)
    s = s / steps
    ratio = np.mean(ratios, axis=0)
    middle = float(np.mean(ratio[(s >= 0.45) & (s < 0.55)]))
    end = float(np.mean(ratio[s >= 0.9]))
    acc = float(model.evaluate(xt, yt, verbose=0)[1])
    return {"middle": middle, "end": end, "end_over_middle": end / middle, "test_accuracy": acc}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, default=0.5, help="AdamW's λ (corrected: λ_new = η_0·λ)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import keras

    results = {arm: [run(arm, seed, args.epochs, args.batch, args.learning_rate, args.weight_decay)
                     for seed in range(args.seeds)] for arm in ("adamw", "corrected")}
    summary = {"backend": keras.backend.backend(), "args": vars(args), "runs": results, "arms": {}}
    print(f"{'arm':<10} {'g/w middle':>20} {'g/w end':>20} {'end/middle':>20} {'test acc':>20}")
    for arm, runs in results.items():
        row = {k: t_interval([r[k] for r in runs]) for k in runs[0]}
        summary["arms"][arm] = row
        print(f"{arm:<10} " + " ".join(f"{m:>11.4g} ± {h:<6.2g}" for m, h in row.values()))
    paired = [c["end"] / a["end"] for a, c in zip(results["adamw"], results["corrected"])]
    summary["paired_end_ratio_corrected_over_adamw"] = t_interval(paired)
    m, h = summary["paired_end_ratio_corrected_over_adamw"]
    print(f"paired end-of-run ‖g‖/‖w‖, corrected / adamw: {m:.4g} ± {h:.2g} (95 % t, {args.seeds} seeds)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
