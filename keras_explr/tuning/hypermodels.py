"""KerasTuner HyperModels of a BN convnet whose hyperparameters are (η, λ).

Three weight-decay parameterizations of momentum SGD (γ = `momentum`), for
every conv kernel θ with gradient g and learning rate η_t:

* ``"old"`` (the paper's, `keras_explr.optimizers.SGD(weight_decay=λ_old)`):
  v ← γv + g + λ_old θ;  θ ← θ − η_t v. The decay per step is η_t·λ_old.
* ``"keras"`` (Keras's decoupled `keras.optimizers.SGD(weight_decay=λ)`):
  θ ← θ − η_t λ θ, then m ← γm − η_t g; θ ← θ + m. Also η_t·λ per step.
* ``"new"`` (Li & Arora's λ_new, `ReparamWeightDecay` around the paper's SGD):
  by default in its ``"coupled"`` mode, v ← γv + g + (λ_t/η_t)θ; θ ← θ − η_t v,
  so the decay per step is λ_t, whatever η is. λ_t = λ_new (decay rule
  ``"constant"``) or λ_new·η_t/η_0 (``"follow"``, ``lr_exponent=1``).

With a constant LR, "new" at (η, λ_new) *is* "old" at (η, λ_new/η) (the same
update, up to float rounding), and with a step schedule "new"+"follow" at
(η_0, λ_new) *is* "old" at (η_0, λ_new/η_0): (λ_new·η_t/η_0)/η_t = λ_new/η_0.
Only "new"+"constant" under a schedule is a different algorithm.

The network is `keras_explr.models.bn_convnet(scale_invariant=True)`: BN
without affine parameters and a frozen head, so weight decay acts only on
scale-invariant kernels (docs/math.md#study-design).
"""

import keras
import numpy as np

from keras_explr import _checks, models, optimizers, theory
from keras_explr._optional import require

keras_tuner = require("keras_tuner", "tuner", "keras_explr.tuning")

PARAMETERIZATIONS = ("old", "keras", "new")
SCHEDULES = ("constant", "step")
DECAY_RULES = ("constant", "follow")


def _check_values(name, values):
    v = [float(x) for x in values]
    if len(v) < 1 or not all(np.isfinite(x) and x > 0 for x in v) or len(set(v)) != len(v):
        raise ValueError(f"`{name}` must be distinct finite numbers > 0. Received: {name}={values!r}")
    return sorted(v)


def _check_range(name, bounds):
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high). Received: {name}={bounds!r}") from None
    if not (0 < lo < hi and np.isfinite(hi)):
        raise ValueError(f"`{name}` must satisfy 0 < low < high < inf. Received: {name}={bounds!r}")
    return lo, hi


def _check_training_args(epochs, steps_per_epoch, batch_size, input_shape, num_classes, filters):
    """The training budget and the network of a study HyperModel, checked: (epochs, steps_per_epoch,
    batch_size, input_shape, num_classes, filters) with integers ≥ 1 (num_classes ≥ 2) and ≥ 1 conv block."""
    checked = (_checks.check_steps("epochs", epochs), _checks.check_steps("steps_per_epoch", steps_per_epoch),
               _checks.check_steps("batch_size", batch_size), tuple(int(d) for d in input_shape),
               _checks.check_steps("num_classes", num_classes, minimum=2),
               tuple(_checks.check_steps("filters", f) for f in filters))
    if not checked[-1]:
        raise ValueError("`filters` must name at least one conv block")
    return checked


class EntanglementHyperModel(keras_tuner.HyperModel):
    """A BN convnet trained with momentum SGD; hyperparameters η and λ.

    Hyperparameters: ``learning_rate`` (η, or η_0 under a schedule) and
    ``weight_decay`` (λ in the chosen parameterization). Give explicit values
    (``hp.Choice``, for `GridSearch`) or log-uniform ranges (``hp.Float`` with
    ``sampling="log"``, for `RandomSearch`).

    The step schedule is `keras.optimizers.schedules.PiecewiseConstantDecay`
    with η_0 for the first half of the steps, η_0/10 to three quarters, η_0/100
    after.

    Args:
      parameterization: "old", "keras" or "new" (module docstring).
      learning_rates / weight_decays: explicit grid values (> 0), or
      lr_range / wd_range: (low, high) log-uniform ranges; one of each pair.
      momentum: γ in [0, 1).
      schedule: "constant" or "step".
      decay_rule: for "new" under "step": "constant" (λ_new) or "follow"
        (λ_new·η_t/η_0). Must stay "constant" for the other parameterizations,
        whose decay follows η_t by construction.
      epochs, steps_per_epoch, batch_size: the training budget (integers ≥ 1).
      input_shape, num_classes, filters: the network.
      new_mode: `ReparamWeightDecay`'s mode, "coupled" (default) or "decoupled".
      diagonal: c > 0 for a diagonal sweep along ηλ = c (per-step decay c):
        then only η is a hyperparameter and λ = c/η ("old", "keras") or
        λ_new = c ("new"); give neither `weight_decays` nor `wd_range`.
    """

    def __init__(self, parameterization="old", learning_rates=None, weight_decays=None,
                 lr_range=None, wd_range=None, momentum=0.9, schedule="constant",
                 decay_rule="constant", epochs=20, steps_per_epoch=11, batch_size=128,
                 input_shape=(8, 8, 1), num_classes=10, filters=(16, 32, 64),
                 new_mode="coupled", diagonal=None, name=None):
        super().__init__(name=name, tunable=True)
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"`parameterization` must be one of {PARAMETERIZATIONS}. "
                             f"Received: parameterization={parameterization!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={schedule!r}")
        if decay_rule not in DECAY_RULES:
            raise ValueError(f"`decay_rule` must be one of {DECAY_RULES}. Received: decay_rule={decay_rule!r}")
        if decay_rule == "follow" and parameterization != "new":
            raise ValueError("`decay_rule='follow'` applies to parameterization='new' only: the "
                             f"'{parameterization}' decay already follows η_t. Received: decay_rule='follow'")
        if new_mode not in ("coupled", "decoupled"):
            raise ValueError(f"`new_mode` must be 'coupled' or 'decoupled'. Received: new_mode={new_mode!r}")
        if (learning_rates is None) == (lr_range is None):
            raise ValueError("Give exactly one of `learning_rates` (grid values) and `lr_range` (low, high).")
        if diagonal is not None:
            diagonal = _checks.check_positive("diagonal", diagonal)
            if weight_decays is not None or wd_range is not None:
                raise ValueError("With `diagonal` (λ = diagonal/η) give neither `weight_decays` nor `wd_range`.")
            weight_decays = [diagonal] if parameterization == "new" else None
        elif (weight_decays is None) == (wd_range is None):
            raise ValueError("Give exactly one of `weight_decays` (grid values) and `wd_range` (low, high).")
        self.diagonal = diagonal
        self.learning_rates = None if learning_rates is None else _check_values("learning_rates", learning_rates)
        self.weight_decays = None if weight_decays is None else _check_values("weight_decays", weight_decays)
        self.lr_range = None if lr_range is None else _check_range("lr_range", lr_range)
        self.wd_range = None if wd_range is None else _check_range("wd_range", wd_range)
        top = max(self.weight_decays or ([self.wd_range[1]] if self.wd_range else [0.0]))
        if parameterization == "new" and top >= 1:
            raise ValueError("λ_new is a fraction per step and must be < 1. "
                             f"Received a largest weight decay of {top!r}")
        self.parameterization = parameterization
        self.momentum = _checks.check_momentum(momentum)
        self.schedule = schedule
        self.decay_rule = decay_rule
        (self.epochs, self.steps_per_epoch, self.batch_size, self.input_shape, self.num_classes,
         self.filters) = _check_training_args(epochs, steps_per_epoch, batch_size, input_shape, num_classes, filters)
        self.new_mode = new_mode

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def config(self):
        """The arguments, JSON-serializable (for the study's records)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in {
            "parameterization": self.parameterization, "learning_rates": self.learning_rates,
            "weight_decays": self.weight_decays, "lr_range": self.lr_range, "wd_range": self.wd_range,
            "momentum": self.momentum, "schedule": self.schedule, "decay_rule": self.decay_rule,
            "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
            "input_shape": self.input_shape, "num_classes": self.num_classes, "filters": self.filters,
            "new_mode": self.new_mode, "diagonal": self.diagonal}.items()}

    # -- the search space and the optimizer ------------------------------------
    def hyperparameter_values(self, hp):
        if self.learning_rates is not None:
            lr = hp.Choice("learning_rate", self.learning_rates, ordered=True)
        else:
            lr = hp.Float("learning_rate", *self.lr_range, sampling="log")
        if self.diagonal is not None:
            return float(lr), (self.diagonal if self.parameterization == "new" else self.diagonal / float(lr))
        if self.weight_decays is not None:
            wd = hp.Choice("weight_decay", self.weight_decays, ordered=True)
        else:
            wd = hp.Float("weight_decay", *self.wd_range, sampling="log")
        return float(lr), float(wd)

    def learning_rate(self, lr):
        """η (constant) or the step schedule starting at η_0 = lr."""
        if self.schedule == "constant":
            return lr
        t = self.total_steps
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, t // 2), max(2, (3 * t) // 4)], [lr, lr / 10, lr / 100])

    def optimizer(self, lr, wd):
        """The optimizer for (η, λ) in this parameterization."""
        sched = self.learning_rate(lr)
        if self.parameterization == "old":
            return optimizers.SGD(sched, momentum=self.momentum, weight_decay=wd)
        if self.parameterization == "keras":
            opt = keras.optimizers.SGD(sched, momentum=self.momentum, weight_decay=wd)
            return opt
        return optimizers.ReparamWeightDecay(
            optimizers.SGD(sched, momentum=self.momentum), weight_decay=wd, mode=self.new_mode,
            lr_exponent=1.0 if self.decay_rule == "follow" else 0.0)

    def build(self, hp):
        lr, wd = self.hyperparameter_values(hp)
        model = models.bn_convnet(input_shape=self.input_shape, num_classes=self.num_classes,
                                  filters=self.filters, scale_invariant=True)
        opt = self.optimizer(lr, wd)
        if self.parameterization == "keras":
            # Keras decays every variable by default; the frozen head and the
            # affine-free BN leave only the kernels, but say so explicitly.
            opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def fit(self, hp, model, x, y, verbose=0, **kwargs):
        """Trains for the budget; shuffles with the global seed (set per seed run)."""
        return model.fit(x, y, batch_size=self.batch_size, epochs=self.epochs, shuffle=True,
                         verbose=verbose, **kwargs)


def evaluate(model, x, y, batch_size=1024):
    """(accuracy, cross-entropy) on (x, y), BatchNorm on the evaluation set's own
    batch statistics.

    The kernels' norms move during training (weight decay shrinks them, the
    gradient steps grow them), so BN's moving averages lag the network actually
    trained; normalizing with the statistics of the evaluation batch scores the
    function the optimizer reached (as the demo does). The loss is computed in
    float64 from the logits: −(1/n) Σ log softmax(z_n)[y_n]; non-finite logits
    give a NaN loss (a diverged run) and count as wrong.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) > batch_size:  # statistics over at most `batch_size` images at a time
        parts = [evaluate_logits(model, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        z = np.concatenate(parts)
    else:
        z = evaluate_logits(model, x)
    finite = np.isfinite(z).all(axis=-1)
    pred = np.where(finite, np.argmax(np.where(np.isfinite(z), z, -np.inf), axis=-1), -1)
    acc = float(np.mean(pred == y))
    if not finite.all():
        return acc, float("nan")
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return acc, float(-np.mean(logp[np.arange(len(y)), y]))


def evaluate_logits(model, x):
    """Logits of `model` on x with BN in training mode, without touching its state."""
    logits, _ = model.stateless_call([v.value for v in model.trainable_variables],
                                     [v.value for v in model.non_trainable_variables],
                                     x, training=True)
    return keras.ops.convert_to_numpy(logits).astype("float64")


# ---------------------------------------------------------------- study v2
OPTIMIZERS = ("sgd", "adam")
RULES = ("old", "new")
SCHEDULES_V2 = ("constant", "step", "cosine")
MODELS = ("invariant", "user")


class StudyHyperModel(keras_tuner.HyperModel):
    """Study v2: one grid in (η_0, λ_new), every seed trained side by side in one model.

    Hyperparameters ``learning_rate`` (η_0) and ``weight_decay_new`` (λ_new,
    the fraction removed per step at η_0), explicit grid values. The grid is
    rectangular in λ_new so that every cell's equilibration clock
    (`equilibration_clock`) can be set by design; the standard rule runs as
    itself with λ = λ_new/η_0:

    * optimizer "sgd", rule "old": `keras_explr.optimizers.SGD(η_t, γ,
      weight_decay=λ_new/η_0)` (coupled, decay η_t·λ per step, the paper's);
    * "sgd", "new": `ReparamWeightDecay(SGD(η_t, γ), λ_new, mode="coupled")`
      (λ_new per step whatever η_t is);
    * "adam", "old": `keras.optimizers.AdamW(η_t, weight_decay=λ_new/η_0)`
      (decay η_t·λ, biases and BN γ/β excluded);
    * "adam", "new": `ReparamWeightDecay(Adam(η_t), λ_new)` (decoupled).

    At a constant LR "old" and "new" are the same runs (λ_new = η·λ). Schedules
    over the run's T steps: "step" (η_0, η_0/10 after T/2, η_0/100 after 3T/4)
    and "cosine" (η_0·½(1 + cos(πt/T))). Models: "invariant" (BN without
    affine parameters, frozen head: weight decay acts on scale-invariant kernels
    only) and "user" (trainable head, BN γ/β, Keras's default ε).

    The seeds live in one Keras model as independent towers: tower s is built
    right after `keras.utils.set_random_seed(s)` (the initialization of a
    single run with seed s), all towers see the same batches (data order from
    the trial's first seed), and the loss is the sum of the towers' losses,
    so each tower's gradient, optimizer state and decay are its own.
    """

    def __init__(self, optimizer="sgd", rule="new", schedule="constant", model="invariant",
                 learning_rates=(0.1,), weight_decays=(1e-3,), momentum=0.9, epochs=8, steps_per_epoch=32,
                 batch_size=128, input_shape=(14, 14, 1), num_classes=10, filters=(8, 16, 32), name=None):
        super().__init__(name=name, tunable=True)
        for arg, value, allowed in (("optimizer", optimizer, OPTIMIZERS), ("rule", rule, RULES),
                                    ("schedule", schedule, SCHEDULES_V2), ("model", model, MODELS)):
            if value not in allowed:
                raise ValueError(f"`{arg}` must be one of {allowed}. Received: {arg}={value!r}")
        self.optimizer_name, self.rule, self.schedule, self.model = optimizer, rule, schedule, model
        self.learning_rates = _check_values("learning_rates", learning_rates)
        self.weight_decays = _check_values("weight_decays", weight_decays)
        if max(self.weight_decays) >= 1:
            raise ValueError(f"`weight_decays` are λ_new, fractions per step < 1. Received: {weight_decays!r}")
        self.momentum = _checks.check_momentum(momentum)
        (self.epochs, self.steps_per_epoch, self.batch_size, self.input_shape, self.num_classes,
         self.filters) = _check_training_args(epochs, steps_per_epoch, batch_size, input_shape, num_classes, filters)
        self.diagonal = None  # (the grid loader's interface)
        self.seeds = (0,)

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def config(self):
        return {"optimizer": self.optimizer_name, "rule": self.rule, "schedule": self.schedule,
                "model": self.model, "learning_rates": self.learning_rates, "weight_decays": self.weight_decays,
                "momentum": self.momentum, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "batch_size": self.batch_size, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "filters": list(self.filters), "diagonal": None}

    # -- the LR, the decay per step and the clock ----------------------------------
    def schedule_factors(self):
        """η_t/η_0 for t = 0..T−1 (float64)."""
        t = np.arange(self.total_steps, dtype="float64")
        T = self.total_steps
        if self.schedule == "constant":
            return np.ones(T)
        if self.schedule == "step":
            return np.where(t < T // 2, 1.0, np.where(t < (3 * T) // 4, 0.1, 0.01))
        return 0.5 * (1.0 + np.cos(np.pi * t / T))

    def learning_rate(self, lr):
        if self.schedule == "constant":
            return lr
        T = self.total_steps
        if self.schedule == "step":
            return keras.optimizers.schedules.PiecewiseConstantDecay(
                [T // 2 - 1, (3 * T) // 4 - 1], [lr, lr / 10, lr / 100])
        return keras.optimizers.schedules.CosineDecay(lr, T, alpha=0.0)

    def decay_per_step(self, lr, wd_new):
        """d_t, the steady-state fraction of a decayed kernel removed at each step t
        (`keras_explr.theory.decay_per_step` in the convention this optimizer follows)."""
        lrs = lr * self.schedule_factors()
        if self.optimizer_name == "sgd":
            if self.rule == "old":  # coupled λ_old = λ_new/η_0 in the momentum buffer
                return theory.decay_per_step(wd_new / lr, lrs, "torch_sgd", self.momentum)
            # coupled (λ_new/η_t)θ at LR η_t: torch_sgd's λ_new/η_t, i.e. λ_new/(1 − γ) every step
            return theory.decay_per_step(wd_new, np.ones_like(lrs), "torch_sgd", self.momentum)
        if self.rule == "old":
            return theory.decay_per_step(wd_new / lr, lrs, "keras")
        return theory.decay_per_step(wd_new, lrs, "independent")

    def equilibration_clock(self, lr, wd_new):
        """Σ_t d_t: the run's length in equilibration times 1/d (`theory.equilibration_clock`
        for a constant d; the sum for a schedule)."""
        d = self.decay_per_step(lr, wd_new)
        if np.all(d == d[0]):
            return float(theory.equilibration_clock(self.total_steps, float(d[0])))
        return float(np.sum(d))

    # -- the model ---------------------------------------------------------------------
    def optimizer(self, lr, wd_new):
        sched = self.learning_rate(lr)
        if self.optimizer_name == "sgd":
            if self.rule == "old":
                return optimizers.SGD(sched, momentum=self.momentum, weight_decay=wd_new / lr)
            return optimizers.ReparamWeightDecay(optimizers.SGD(sched, momentum=self.momentum), weight_decay=wd_new,
                                                 mode="coupled")
        if self.rule == "old":
            opt = keras.optimizers.AdamW(sched, weight_decay=wd_new / lr)
            opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
            return opt
        return optimizers.ReparamWeightDecay(keras.optimizers.Adam(sched), weight_decay=wd_new)

    def tower(self, seed):
        keras.utils.set_random_seed(seed)
        return models.bn_convnet(input_shape=self.input_shape, num_classes=self.num_classes, filters=self.filters,
                                 scale_invariant=self.model == "invariant", name=f"seed{seed}")

    def build(self, hp, seeds=None):
        """A model whose output stacks the logits of one tower per seed: shape (batch, S, classes)."""
        seeds = list(self.seeds if seeds is None else seeds)
        lr = float(hp.Choice("learning_rate", self.learning_rates, ordered=True))
        wd = float(hp.Choice("weight_decay_new", self.weight_decays, ordered=True))
        inputs = keras.Input(self.input_shape)
        towers = [self.tower(s) for s in seeds]
        outputs = keras.layers.Concatenate(axis=1)(
            [keras.layers.Reshape((1, self.num_classes))(t(inputs)) for t in towers])
        model = keras.Model(inputs, outputs, name="towers")
        model.compile(optimizer=self.optimizer(lr, wd), loss=summed_tower_loss)
        return model

    def fit(self, hp, model, x, y, verbose=0, **kwargs):
        return model.fit(x, y, batch_size=self.batch_size, epochs=self.epochs, shuffle=True, verbose=verbose,
                         **kwargs)


def summed_tower_loss(y_true, logits):
    """Σ over towers of each tower's cross-entropy (from logits): each tower's gradient is its own."""
    n = keras.ops.shape(logits)[1]
    y = keras.ops.repeat(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1, 1)), n, axis=1)
    ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    return keras.ops.sum(ce, axis=1)
