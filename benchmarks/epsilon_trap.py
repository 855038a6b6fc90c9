"""The ε trap and its alarm: a strong ReparamWeightDecay(Adam) with BatchNorm's default ε.

With λ_new held at 0.056 per step, Adam's updates (≈ η per coordinate whatever
the weight's scale) cannot hold the kernels up: their norm settles where the
variance entering BatchNorm is far below ε = 1e-3 (Keras's default). BatchNorm
then no longer normalizes, the network stops being scale-invariant, and
training collapses; with ε → 0 (1e-8 here) the same run trains. `ScaleMonitor`
records σ²/ε of every BatchNorm input each epoch and raises
`EpsilonDominanceWarning` the first time it falls below 100.

Same seed, data (scikit-learn's real 8×8 digits) and model for both arms:
`keras_explr.models.bn_convnet` in the paper's setting (BatchNorm without γ/β,
the head frozen), so that only the conv kernels, each followed by BatchNorm,
decay. The ε alarm measures on 256 test images in training mode.
Writes the figure benchmarks/results/epsilon_trap_cpu_tf.png (served in the docs) (validation cross-entropy of
both arms, with BatchNorm's batch statistics; σ²/ε of each BatchNorm of the ε = 1e-3 arm with the margin and the
alarm) and prints the numbers; ``--json`` saves them.
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _TrainModeValidation(x, y):
    """Validation cross-entropy and accuracy with BatchNorm's batch statistics (training mode,
    through ``stateless_call``: nothing is updated). In inference mode Keras's moving
    statistics (momentum 0.99) lag far behind kernels that shrink by several % a step, which
    would put both arms at chance whatever ε is."""
    import keras

    class Validation(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.loss, self.accuracy = [], []

        def on_epoch_end(self, epoch, logs=None):
            m = self.model
            logits, _ = m.stateless_call([v.value for v in m.trainable_variables],
                                         [v.value for v in m.non_trainable_variables], x, training=True)
            logits = np.asarray(keras.ops.convert_to_numpy(logits), np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            self.loss.append(float(-logp[np.arange(len(y)), y].mean()))
            self.accuracy.append(float((logits.argmax(axis=1) == y).mean()))

    return Validation()


def run(epsilon, epochs, lam, lr, seed=0):
    import keras

    from keras_explr import callbacks, data, models, optimizers

    (x, y), (xt, yt) = data.load_digits()
    keras.utils.set_random_seed(seed)
    model = models.bn_convnet(filters=(16, 32), bn_epsilon=epsilon)
    model.compile(optimizers.ReparamWeightDecay(keras.optimizers.Adam(lr), weight_decay=lam),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    monitor = callbacks.ScaleMonitor(every_n_steps=50, epsilon_data=xt[:256])
    val = _TrainModeValidation(xt, yt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[monitor, val])
    alarms = [(str(w.message).split(":")[0], monitor.normalization_records[-1]["step"])
              for w in caught if issubclass(w.category, callbacks.EpsilonDominanceWarning)]
    first_alarm = None
    for w in caught:
        if issubclass(w.category, callbacks.EpsilonDominanceWarning):
            first_alarm = str(w.message)
            break
    layers = sorted({p for r in monitor.normalization_records for p in r["layers"]})
    series = {p: [monitor.series(p, q)[1].tolist() for q in ("prenorm_variance_over_epsilon",
                                                               "prenorm_variance_over_epsilon_worst")]
              for p in layers}
    steps = monitor.series(layers[0], "prenorm_variance_over_epsilon")[0].tolist()
    # The epoch (record index) at which each layer first fell below the margin.
    below = {p: next((i for i, v in enumerate(series[p][0]) if v < monitor.epsilon_margin), None) for p in layers}
    return {"epsilon": epsilon, "loss": history.history["loss"], "val_loss": val.loss,
            "val_accuracy": val.accuracy, "steps": steps, "ratio": series,
            "alarmed_layers": sorted({a for a, _ in alarms}), "first_below": below,
            "first_alarm": first_alarm}


def figure(trap, zero, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = np.arange(1, len(trap["val_loss"]) + 1)
    a.plot(epochs, trap["val_loss"], "o-", label=f"ε = {trap['epsilon']:g} (Keras default)")
    a.plot(epochs, zero["val_loss"], "s-", label=f"ε = {zero['epsilon']:g} (→ 0)")
    a.axhline(np.log(10), color="gray", ls=":", label="chance (ln 10)")
    a.set_xlabel("epoch")
    a.set_ylabel("validation cross-entropy (BN batch statistics)")
    a.set_title("ReparamWeightDecay(Adam), λ_new = 0.056")
    a.legend(fontsize=8)
    for p, (mean, worst) in trap["ratio"].items():
        line, = b.semilogy(trap["steps"], mean, "o-", label=f"{p.split('/')[-1]} mean")
        b.semilogy(trap["steps"], worst, ":", color=line.get_color(), label=f"{p.split('/')[-1]} worst channel")
        i = trap["first_below"][p]
        if i is not None:
            b.plot(trap["steps"][i], mean[i], "r*", ms=14)
    b.axhline(100, color="red", ls="--", label="epsilon_margin = 100 (alarm: ★)")
    b.set_xlabel("step")
    b.set_ylabel("σ² / ε of the BatchNorm input")
    b.set_title(f"ScaleMonitor's ε alarm, ε = {trap['epsilon']:g}")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.056, help="λ_new per step")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--figure", default=os.path.join(ROOT, "benchmarks", "results", "epsilon_trap_cpu_tf.png"))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    trap = run(1e-3, args.epochs, args.weight_decay, args.learning_rate)
    zero = run(1e-8, args.epochs, args.weight_decay, args.learning_rate)
    for r in (trap, zero):
        print(f"ε = {r['epsilon']:g}: final val CE {r['val_loss'][-1]:.3f}, val accuracy "
              f"{r['val_accuracy'][-1]:.3f}; alarms on {r['alarmed_layers'] or 'no layer'}")
    print("first alarm:", trap["first_alarm"])
    if args.figure:
        figure(trap, zero, args.figure)
        print("figure:", args.figure)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trap": trap, "epsilon_to_zero": zero, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
