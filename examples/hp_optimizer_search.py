"""Your own KerasTuner search with `keras_explr.tuning.hp_optimizer`, in both parameterizations.

`hp_optimizer(hp, ...)` goes inside any ``build_model(hp)``: it registers the
learning rate and the weight decay on ``hp`` (log-uniform, named in the chosen
coordinates) and returns a ready, serializable optimizer:

* ``parameterization="new"``: ``ReparamWeightDecay(SGD(η), λ_new)``, the decay a
  fixed fraction λ_new of the weights per step whatever η is (hyperparameters
  ``learning_rate`` and ``weight_decay_new``; docs/math.md#new-parameterization);
* ``parameterization="old"``: Keras's own ``SGD(η, weight_decay=λ)``, which
  removes η·λ per step (``learning_rate`` and ``weight_decay``).

The model is what users write: a small convnet with BatchNormalization (γ/β,
Keras's default ε, moving-statistics momentum 0.9 for these short runs) and a trainable head, on scikit-learn's
real 8x8 digits
(offline). One `keras_tuner.RandomSearch` per parameterization, the same seed;
the script prints every trial, the best hyperparameters of each, the decay per
step each best trial used (λ_new, or η·λ), and reloads the best model from its
`.keras` file to check that the optimizer comes back.

    python examples/hp_optimizer_search.py              # 12 trials per parameterization, ~2 min on 2 CPU cores
    python examples/hp_optimizer_search.py --quick      # 3 trials, 3 epochs (tests)
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner
import numpy as np

from keras_explr import data
from keras_explr.tuning import hp_optimizer


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--trials must be an integer >= 1; got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"--trials must be an integer >= 1; got {value}")
    return value


def make_build_model(parameterization, input_shape):
    def build_model(hp):
        keras.utils.set_random_seed(0)  # the same init in every trial
        model = keras.Sequential([
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.Conv2D(32, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ])
        # The ranges are each coordinate's own: λ_new is a fraction per step, λ multiplies η.
        weight_decay = (1e-5, 1e-2) if parameterization == "new" else (1e-4, 1e-1)
        optimizer = hp_optimizer(hp, "sgd", learning_rate=(1e-2, 1.0), weight_decay=weight_decay,
                                 parameterization=parameterization, momentum=0.9)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model
    return build_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=_count, default=12, help="trials per parameterization")
    parser.add_argument("--epochs", type=_count, default=8)
    parser.add_argument("--quick", action="store_true", help="3 trials of 3 epochs")
    parser.add_argument("--directory", default=None, help="tuner folder (default: a temporary one)")
    args = parser.parse_args()
    trials, epochs = (3, 3) if args.quick else (args.trials, args.epochs)

    (x, y), (x_test, y_test) = data.load_digits()
    directory = args.directory or tempfile.mkdtemp(prefix="hp_optimizer_")
    print(f"digits: {len(x)} train / {len(x_test)} validation images; {trials} trials x {epochs} epochs "
          f"per parameterization; tuner folder {directory}")
    for parameterization in ("new", "old"):
        tuner = keras_tuner.RandomSearch(
            make_build_model(parameterization, x.shape[1:]), objective="val_accuracy", max_trials=trials,
            seed=0, directory=directory, project_name=parameterization, overwrite=True)
        tuner.search(x, y, validation_data=(x_test, y_test), epochs=epochs, batch_size=64, verbose=0)
        print(f"\nparameterization={parameterization!r}")
        for trial in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
            values = ", ".join(f"{k}={v:.3g}" for k, v in trial.hyperparameters.values.items())
            print(f"  trial {trial.trial_id}: {values}  val_accuracy={trial.score:.4f}")
        best = tuner.get_best_hyperparameters()[0].values
        eta = best["learning_rate"]
        per_step = best["weight_decay_new"] if parameterization == "new" else eta * best["weight_decay"]
        print(f"best {parameterization}: " + ", ".join(f"{k}={v:.3g}" for k, v in best.items())
              + f"; decay per step {per_step:.3g}")
        # Retrain the best configuration (as after any search), save it with its optimizer, reload it.
        model = tuner.hypermodel.build(tuner.get_best_hyperparameters()[0])
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        path = os.path.join(directory, f"best_{parameterization}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        state = [(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
                 for a, b in zip(model.weights + model.optimizer.variables,
                                 loaded.weights + loaded.optimizer.variables)]
        same = len(state) == len(model.weights) + len(model.optimizer.variables) and all(
            np.array_equal(a, b) for a, b in state)
        accuracy = float(np.mean(np.argmax(loaded.predict(x_test, verbose=0), -1) == y_test))
        print(f"reloaded {path}: {type(loaded.optimizer).__name__}, weights and optimizer state identical: "
              f"{same}; validation accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
