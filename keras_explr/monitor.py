"""`ScaleMonitor`: scale, update and angle statistics of training, next to theory.

A Keras callback that reads what a callback cannot normally see, the
gradients, by hooking the model's optimizer for the duration of `fit`
(docs/math.md#monitor-quantities: Keras callbacks never see gradients). Every
``every_n_steps`` optimizer steps, for each monitored variable w (by default
every trainable variable of rank ≥ 2: kernels) it records, with w₀ the weight
before the step, w₁ after it (weight decay included) and g the loss gradient:

* ``norm``: ‖w₀‖;
* ``relative_update``: ‖w₁ − w₀‖/‖w₀‖;
* ``angular_update``: the angle between w₀ and w₁, 2·atan2(‖û₁ − û₀‖, ‖û₁ + û₀‖)
  with û = w/‖w‖ (exact where arccos of the cosine loses half the digits);
* ``grad_cosine``: cos(g, w₀), ≈ 0 for a scale-invariant weight;
* ``grad_norm``: ‖g‖; ``grad_ratio``: ‖g‖/‖w₀‖;
* ``effective_learning_rate``: η/‖w‖² for SGD, η/‖w‖ for the Adam family,
  η/RMS(w) for Lion, η for Lamb (§A.2);
* ``clock``: t·η_tλ_t, the equilibration progress (§A.4);

and, where the optimizer has a known rotational equilibrium (§A.4),
``predicted_angular_update`` (and ``predicted_norm`` for AdamW; for the SGD
rules ``predicted_grad_ratio``, the equilibrium ‖g‖/‖w‖ ≈ √(2λ/η) of Defazio
2025, `theory.equilibrium_gradient_ratio`, which rises when the LR drops), computed by
`keras_explr.theory` from the optimizer's hyperparameters at that step:

* `keras_explr.optimizers.SGD(weight_decay=λ)`, or an L2 regularizer under
  SGD: √(2ηλ/(1+α)) (SMD);
* Keras ``SGD(momentum=α, weight_decay=λ)``: √(2ηλ(1−α)/(1+α));
* Keras ``AdamW``/``Adam(weight_decay=λ)``: √(2ηλ(1−β1)/(1+β1)) (Kosson);
* Keras ``Lion(weight_decay=λ)``: Kosson's Lion formula;
* `ReparamWeightDecay(inner, λ_new)`: the inner optimizer's formula with ηλ
  replaced by λ_new: it depends on λ_new alone, not on η.

With ``per_neuron=True`` the same statistics are also kept per output neuron
(the last axis of a kernel).

Where the numbers go: ``monitor.records`` (one dict per monitored step),
``monitor.series(path, quantity)``; `History` gets, per epoch, the mean over
the epoch's monitored steps under ``"scale/<variable path>/<quantity>"``
(written into ``model.history`` directly, so the progress bar stays
readable); ``log_dir`` writes every record to TensorBoard (scalars, and
histograms of the per-neuron values). `keras_explr.plots.scale_monitor` draws
the curves with the predictions dashed.

Cost: w₀ is snapshot every step (``ops.copy``: ``convert_to_tensor`` aliases
the variable on TF and torch); the statistics are computed only on monitored
steps (``tf.cond`` / ``jax.lax.cond``; a Python branch on torch). No
batch-level callback is installed (it would make Keras sync every step): on
TF the statistics wait in a ring buffer of the monitor's own variables, read
once per epoch; on JAX they leave the compiled step through
``jax.debug.callback``. No optimizer state is added: checkpoints are unchanged.

Notes: the gradient is the one the optimizer receives, before clipping; the
gradient of a Keras ``L2``/``L1L2`` regularizer on the variable is subtracted
to give the loss gradient (other regularizers are not). Constraints applied
after the update are not in w₁. The hook is removed at the end of `fit`.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_explr import _checks, _hooks, _keras_internals, _prenorm, theory
from keras_explr import optimizers as _optimizers
from keras_explr.optimizers import _wrapper
from keras_explr.optimizers._wrapper import replicas_in_sync

QUANTITIES = ("norm", "relative_update", "angular_update", "grad_cosine", "grad_norm")
_SGD = (keras.optimizers.SGD, _optimizers.SGD)
_ADAM = (keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.Nadam,
         keras.optimizers.Adamax, keras.optimizers.RMSprop, keras.optimizers.Adagrad)


class ScaleMonitor(keras.callbacks.Callback):
    """Logs per-layer weight norms, updates, angles and cos(∇L, w) next to theory.

    See the module docstring for the quantities and the predictions.

    Args:
      every_n_steps (int): record every n optimizer steps (integer ≥ 1).
      variables (list[keras.Variable | str] | None): the variables to monitor (objects or paths); default: every
        trainable variable of rank ≥ 2.
      per_neuron (bool): also keep the statistics per output neuron (last axis).
      log_dir (str | None): a directory for TensorBoard event files (needs TensorFlow).
      epsilon_margin (float | None): the ε alarm's threshold (default 100): at the end of
        every epoch the monitor records, for every normalization layer it can
        measure, σ²/ε of its input (mean over channels and the worst channel;
        series ``"prenorm_variance_over_epsilon"`` and
        ``"prenorm_variance_over_epsilon_worst"`` under the layer's path) and
        warns once per layer with `EpsilonDominanceWarning` when the mean
        falls below ``epsilon_margin``. BatchNorm layers are read from their
        moving variance; None switches the alarm off.
      epsilon_data (ArrayLike | None): a batch of inputs on which to measure every
        BatchNormalization, LayerNormalization and GroupNormalization layer's
        input variance (`keras_explr.invariance.epsilon_margin`) instead of
        BatchNorm's moving variance.

    Example:

    >>> monitor = keras_explr.callbacks.ScaleMonitor(every_n_steps=10)  # doctest: +SKIP
    >>> model.fit(x, y, epochs=5, callbacks=[monitor])                   # doctest: +SKIP
    >>> steps, angles = monitor.series("conv2d/kernel", "angular_update")  # doctest: +SKIP
    """

    def __init__(self, every_n_steps=10, variables=None, per_neuron=False, log_dir=None,
                 epsilon_margin=_prenorm.DEFAULT_MARGIN, epsilon_data=None):
        super().__init__()
        self._epsilon_init(epsilon_margin, epsilon_data)
        self.every_n_steps = _checks.check_steps("every_n_steps", every_n_steps)
        if variables is not None and (isinstance(variables, (str, keras.Variable)) or not variables):
            raise ValueError(
                "`variables` must be a non-empty list of variables or variable paths, or None. "
                f"Received: variables={variables!r}")
        self.variables = variables
        self.per_neuron = bool(per_neuron)
        self.log_dir = None if log_dir is None else str(log_dir)
        if self.log_dir is not None:
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                raise ValueError("`log_dir` (TensorBoard) needs TensorFlow installed.") from None
        self.records = []
        self._groups = []
        self._hook = None
        self._pending = []
        self._epoch_records = 0

    # ------------------------------------------------------------ set-up
    def on_train_begin(self, logs=None):
        model = self.model
        if model.optimizer is None:
            raise ValueError("ScaleMonitor needs a compiled model (model.optimizer is None).")
        trainable = list(model.trainable_variables)
        if self.variables is None:
            watched = [v for v in trainable if len(v.shape) >= 2]
        else:
            by_path = {v.path: v for v in trainable}
            watched = []
            for v in self.variables:
                key = v if isinstance(v, str) else getattr(v, "path", None)
                if key not in by_path:
                    raise ValueError(
                        f"ScaleMonitor: {key!r} is not a trainable variable of the model. "
                        f"Trainable variables: {sorted(by_path)}")
                watched.append(by_path[key])
        if not watched:
            raise ValueError("ScaleMonitor: the model has no trainable variable of rank >= 2; "
                             "pass `variables=` to choose what to monitor.")
        self._watched = {id(v): v for v in watched}
        self._specs = {}
        groups = []
        for leaf, reparam, handled in _leaves(model.optimizer, trainable):
            mine = [v for v in handled if id(v) in self._watched]
            if not mine:
                continue
            for v in mine:
                self._specs[v.path] = _Spec(leaf, reparam, v)
            holders = self._tf_holders(mine) if keras.backend.backend() == "tensorflow" else None
            groups.append((leaf, {id(v) for v in mine}, holders, [v.path for v in mine]))
        self._groups = groups
        entry = _wrapper.unscaled(model.optimizer)
        self._hook = _hooks.ApplyHook(entry, self._make_hook(entry, trainable))
        self._writer = None
        if self.log_dir is not None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        self._epsilon_begin()
        # The step function may already be traced without the hook.
        model.make_train_function(force=True)

    def _make_hook(self, entry, trainable):
        backend = keras.backend.backend()
        every = self.every_n_steps
        per_neuron = self.per_neuron
        groups = self._groups

        def hooked(grads, trainable_variables, apply):
            # (JAX's stateless_apply passes no variables: they are the ones the optimizer
            # was built with, the model's trainable variables, in that order.)
            variables = trainable if trainable_variables is None else list(trainable_variables)
            grads = list(grads)
            picked = [[(g, v) for g, v in zip(grads, variables) if id(v) in ids and g is not None]
                      for _, ids, _, _ in groups]
            if not any(picked):
                return apply(grads, trainable_variables)
            step = entry.iterations
            if backend == "torch":
                step_value = int(ops.convert_to_numpy(step))
                if step_value % every:
                    return apply(grads, trainable_variables)
                import torch

                with torch.no_grad():
                    before = [[ops.copy(v.value) for _, v in pairs] for pairs in picked]
                    # (read before the update: the LR it uses; after it, the next step's)
                    lrs = [float(ops.convert_to_numpy(leaf.learning_rate)) if pairs else None
                           for (leaf, _, _, _), pairs in zip(groups, picked)]
                    result = apply(grads, trainable_variables)
                    for pairs, w0, lr in zip(picked, before, lrs):
                        if pairs:
                            stats = _statistics(pairs, w0, per_neuron)
                            self._record(step_value, lr,
                                         [v.path for _, v in pairs], [ops.convert_to_numpy(s) for s in stats])
                return result
            step = ops.copy(step.value) if isinstance(step, keras.Variable) else step
            lrs = [ops.cast(leaf.learning_rate, "float32") for leaf, _, _, _ in groups]
            # JAX arrays are immutable: the value before the step is kept as it is.
            before = [[v.value if backend == "jax" else ops.copy(v.value) for _, v in pairs]
                      for pairs in picked]
            result = apply(grads, trainable_variables)
            due = ops.equal(ops.mod(step, every), 0)
            for (leaf, _, holders, _), pairs, w0, lr in zip(groups, picked, before, lrs):
                if pairs:
                    self._emit(pairs, w0, step, lr, due, holders)
            return result

        return hooked

    def _emit(self, picked, before, step, lr, due, holders):
        per_neuron = self.per_neuron
        every = self.every_n_steps
        if keras.backend.backend() == "jax":
            import jax

            paths = [v.path for _, v in picked]

            def emit():
                stats = _statistics(picked, before, per_neuron)
                jax.debug.callback(
                    lambda s, r, *a: self._record(int(s), float(r), paths, [np.asarray(x) for x in a]),
                    step, lr, *stats)

            jax.lax.cond(due, emit, lambda: None)
            return
        import tensorflow as tf

        def updates(pairs):  # slot (step // N) mod capacity of each ring buffer
            stats = _statistics(pairs, before, per_neuron)
            slot = ops.mod(ops.floor_divide(ops.cast(step, "int64"), every), holders["capacity"])
            new = [(holders["stats"][v.path], ops.cast(s, "float32")[None], [slot, 0, 0])
                   for (_, v), s in zip(pairs, stats)]
            new += [(holders["step"], ops.cast(step, "int64")[None], [slot]),
                    (holders["lr"], lr[None], [slot])]
            return [(var, ops.slice_update(var.value, start, value)) for var, value, start in new]

        if replicas_in_sync() > 1:
            # tf.distribute: the gradients here are per replica (summed later), and a
            # distributed variable cannot be assigned inside tf.cond (merge_call).
            # Sum them, compute every step, write outside the cond.
            ctx = tf.distribute.get_replica_context()
            summed = ctx.all_reduce("sum", [g for g, _ in picked])
            for var, value in updates(list(zip(summed, [v for _, v in picked]))):
                var.assign(tf.where(due, value, var.value))
        else:
            def write():
                for var, value in updates(picked):
                    var.assign(value)

            tf.cond(due, write, lambda: None)

    def _tf_holders(self, watched):
        strategy = getattr(self.model, "distribute_strategy", None)
        scope = strategy.scope() if strategy is not None else _null()
        with scope:
            def var(shape, dtype, name):
                return keras.Variable(np.zeros(shape, dtype), dtype=dtype, trainable=False,
                                      aggregation="only_first_replica", name=name)

            # Read once per epoch: room for an epoch's records (4096 when the
            # epoch length is unknown; older records of a longer epoch are overwritten).
            steps = (self.params or {}).get("steps")
            capacity = -(-int(steps) // self.every_n_steps) + 1 if steps else 4096
            stats = {}
            for v in watched:
                neurons = int(v.shape[-1]) if self.per_neuron and len(v.shape) >= 2 else 0
                stats[v.path] = var((capacity, len(QUANTITIES), 1 + neurons), "float32",
                                    "scale_monitor_stats")
            step = var((capacity,), "int64", "scale_monitor_step")
            step.assign(np.full((capacity,), -1, "int64"))
            return {"stats": stats, "step": step, "capacity": capacity, "read": -1,
                    "lr": var((capacity,), "float32", "scale_monitor_lr")}

    def on_train_end(self, logs=None):
        self._drain()
        hook = getattr(self, "_hook", None)
        if hook is not None:
            hook.remove()
            self._hook = None
        self.model.make_train_function(force=True)
        if self._writer is not None:
            self._writer.flush()

    # ----------------------------------------------------------- collecting
    def _record(self, step, lr, paths, stats):
        self._pending.append((step, lr, paths, stats))

    def _read_tf_buffers(self):
        # No per-batch hook: a batch-level callback would make Keras sync every step.
        for _, _, holders, paths in getattr(self, "_groups", []):
            if holders is None:
                continue
            steps = ops.convert_to_numpy(holders["step"])
            new = np.flatnonzero(steps > holders["read"])
            if not len(new):
                continue
            lrs = ops.convert_to_numpy(holders["lr"])
            stats = {p: ops.convert_to_numpy(holders["stats"][p]) for p in paths}
            for i in new:
                self._record(int(steps[i]), float(lrs[i]), paths, [stats[p][i] for p in paths])
            holders["read"] = int(steps[new].max())

    def _drain(self):
        self._read_tf_buffers()
        if keras.backend.backend() == "jax":
            import jax

            jax.effects_barrier()
        pending, self._pending = self._pending, []
        merged = {}
        for step, lr, paths, stats in sorted(pending, key=lambda r: r[0]):
            rec = merged.setdefault(step, {"step": step, "variables": {}})
            for path, s in zip(paths, stats):
                rec["variables"][path] = self._describe(path, step, lr, np.asarray(s, np.float64))
        new = [merged[s] for s in sorted(merged)]
        self.records.extend(new)
        if self._writer is not None:
            self._write(new)
        return new

    def _describe(self, path, step, lr, stats):
        if self.per_neuron and stats.ndim == 2:
            layer, neurons = stats[:, 0], stats[:, 1:]
        else:
            layer, neurons = stats.reshape(len(QUANTITIES), -1)[:, 0], None
        out = dict(zip(QUANTITIES, (float(x) for x in layer)))
        out["grad_ratio"] = out["grad_norm"] / out["norm"] if out["norm"] > 0 else None
        out["learning_rate"] = lr
        spec = self._specs[path]
        out.update(spec.theory(step, lr, out["norm"]))
        if neurons is not None and neurons.size:
            out["per_neuron"] = dict(zip(QUANTITIES, neurons))
        return out

    def on_epoch_end(self, epoch, logs=None):
        self._epsilon_check()
        new = self._drain()
        history = getattr(self.model, "history", None)
        if history is None or not hasattr(history, "history"):
            return
        # Every key gets a value every epoch (NaN if nothing was recorded), so
        # History's lists stay aligned with its epochs.
        for path in self._specs:
            for quantity in _LOGGED:
                values = [r["variables"][path][quantity] for r in new if path in r["variables"]
                          and r["variables"][path].get(quantity) is not None]
                history.history.setdefault(f"scale/{path}/{quantity}", []).append(
                    float(np.mean(values)) if values else math.nan)

    def _write(self, records):
        import tensorflow as tf

        with self._writer.as_default():
            for rec in records:
                for path, stats in rec["variables"].items():
                    for q in _LOGGED:
                        if stats.get(q) is not None:
                            tf.summary.scalar(f"{path}/{q}", stats[q], step=rec["step"])
                    for q, values in stats.get("per_neuron", {}).items():
                        tf.summary.histogram(f"{path}/per_neuron/{q}", values, step=rec["step"])

    # -------------------------------------------------------------- reading
    def series(self, path, quantity):
        """(steps, values) of one quantity of one monitored variable, as arrays."""
        if quantity in _prenorm_quantities():
            return self._epsilon_series(path, quantity)
        if path not in getattr(self, "_specs", {}):
            raise ValueError(f"{path!r} is not a monitored variable. Monitored: "
                             f"{sorted(getattr(self, '_specs', {}))}")
        if quantity not in _LOGGED:
            raise ValueError(f"`quantity` must be one of {_LOGGED}. Received: quantity={quantity!r}")
        rows = [(r["step"], r["variables"][path].get(quantity)) for r in self.records
                if path in r["variables"]]
        steps = np.array([s for s, _ in rows], dtype=np.int64)
        values = np.array([math.nan if v is None else v for _, v in rows], dtype=np.float64)
        return steps, values

    @property
    def monitored_paths(self):
        return sorted(getattr(self, "_specs", {}))

    # ------------------------------------------------ the ε alarm and equilibration
    def _epsilon_init(self, epsilon_margin, epsilon_data):
        if epsilon_margin is not None:
            epsilon_margin = _checks.check_positive("epsilon_margin", epsilon_margin)
        self.epsilon_margin = epsilon_margin
        self.epsilon_data = epsilon_data
        self.normalization_records = []  # {"step": int, "layers": {path: (mean, worst)}}
        self._epsilon_warned = set()

    def _epsilon_begin(self):
        self._epsilon_check(log=False)

    def _epsilon_check(self, log=True):
        """Measures σ²/ε of every normalization layer now, records it, warns once per layer;
        `log`: also into History (at the end of an epoch, so that its lists follow the epochs)."""
        if self.epsilon_margin is None:
            return
        model = self.model
        if self.epsilon_data is not None:
            layers = _prenorm.normalization_layers(model)
            margins = {}
            for layer, x in zip(layers, _prenorm.layer_inputs(model, self.epsilon_data, layers)):
                if x is not None:
                    margins[layer.path] = _prenorm.margins_from_variances(
                        _prenorm.unit_variances(layer, x), layer.epsilon)
        else:
            margins = _prenorm.moving_variance_margins(model)
        if not margins:
            return
        step = int(ops.convert_to_numpy(model.optimizer.iterations))
        self.normalization_records.append({"step": step, "layers": margins})
        history = getattr(model, "history", None)
        for path, (mean, worst) in margins.items():
            if log and history is not None and hasattr(history, "history"):
                history.history.setdefault(f"scale/{path}/prenorm_variance_over_epsilon", []).append(mean)
                history.history.setdefault(f"scale/{path}/prenorm_variance_over_epsilon_worst", []).append(worst)
            if mean < self.epsilon_margin:
                _prenorm.warn_once(self._epsilon_warned, path, mean, worst, self.epsilon_margin, stacklevel=3)

    def _epsilon_series(self, path, quantity):
        rows = [(r["step"], r["layers"][path]) for r in self.normalization_records if path in r["layers"]]
        if not rows:
            known = sorted({p for r in self.normalization_records for p in r["layers"]})
            raise ValueError(f"{path!r} is not a measured normalization layer. Measured: {known}")
        which = 0 if quantity == "prenorm_variance_over_epsilon" else 1
        return (np.array([s for s, _ in rows], dtype=np.int64),
                np.array([m[which] for _, m in rows], dtype=np.float64))

    def equilibration(self, path, tolerance=0.1, jump=0.05, window=5):
        """Time to equilibrium after each learning-rate change, predicted and measured.

        For the monitored variable `path` (one with a predicted angular update), each
        change of the learning rate by more than `jump` (relative) between two
        monitored steps starts an *event*. Its prediction is
        `theory.equilibration_steps` at the new decay per step d (one equilibration
        time, 1/d steps); its measurement is the number of steps until the angular
        update, averaged over `window` monitored steps, is back within ±`tolerance`
        of the predicted equilibrium angular update (None if it never is). Each
        *decay phase* (a run of monitored steps over which the LR falls) gets its
        clock Σ d_t; a phase that ends before one equilibration time (clock < 1)
        gets a note: the weights' norm has not caught up with the LR when it ends.

        Args:
          path (str): a monitored variable's path.
          tolerance (float): the band around the predicted angular update (relative).
          jump (float): the relative LR change that starts an event.
          window (int): monitored steps the angular update is averaged over.

        Returns:
          (dict): ``{"events": [{"step", "learning_rate_before", "learning_rate", "predicted_steps",
            "measured_steps", "predicted_angular_update"}], "decay_phases": [{"start", "end",
            "clock", "note"}]}``.
        """
        spec = self._specs.get(path)
        if spec is None:
            raise ValueError(f"{path!r} is not a monitored variable. Monitored: {self.monitored_paths}")
        if spec.decay is None or spec.rule is None:
            raise ValueError(f"{path!r} has no predicted equilibrium (no weight decay with a known rule).")
        tol = _checks.check_positive("tolerance", tolerance)
        steps, lrs = self.series(path, "learning_rate")
        _, angles = self.series(path, "angular_update")
        _, predicted = self.series(path, "predicted_angular_update")
        window = _checks.check_steps("window", window)
        smooth = np.array([np.mean(angles[i:i + window]) for i in range(len(angles))])
        events = []
        for i in range(1, len(steps)):
            if not (lrs[i - 1] > 0 and abs(lrs[i] / lrs[i - 1] - 1.0) > jump):
                continue
            d = spec.decay(lrs[i])
            inside = np.flatnonzero((np.arange(len(steps)) >= i)
                                    & (np.abs(smooth / predicted - 1.0) <= tol)
                                    & (np.arange(len(steps)) + window <= len(steps)))
            events.append({
                "step": int(steps[i]), "learning_rate_before": float(lrs[i - 1]),
                "learning_rate": float(lrs[i]),
                "predicted_steps": theory.equilibration_steps(d, float(lrs[i]), "independent"),
                "measured_steps": int(steps[inside[0]] - steps[i]) if inside.size else None,
                "predicted_angular_update": float(predicted[i])})
        phases = []
        falling = np.r_[False, lrs[1:] < lrs[:-1] * (1.0 - 1e-9)]
        i = 0
        while i < len(steps):
            if not falling[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(steps) and falling[j + 1]:
                j += 1
            d = np.array([spec.decay(x) for x in lrs[i - 1:j + 1]], dtype=np.float64)
            gaps = np.diff(steps[i - 1:j + 1]).astype(np.float64)
            clock = float(np.sum(d[1:] * gaps))
            note = None
            if clock < 1.0:
                note = (f"{path}: the decay phase from step {int(steps[i - 1])} to {int(steps[j])} lasts "
                        f"{clock:.3g} equilibration times: it ends before one, so the weight norm "
                        "has not re-equilibrated to the final learning rate (the effective LR "
                        "still falls after the decay; a longer decay or more decay per step shortens the lag).")
            phases.append({"start": int(steps[i - 1]), "end": int(steps[j]), "clock": clock, "note": note})
            i = j + 1
        return {"events": events, "decay_phases": phases}


_LOGGED = QUANTITIES + ("grad_ratio", "learning_rate", "effective_learning_rate", "clock",
                        "predicted_angular_update", "predicted_norm", "predicted_grad_ratio")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _statistics(picked, before, per_neuron):
    """Per variable: [norm, relative update, angle, cos(g, w0), ‖g‖] (5, 1[+units])."""
    out = []
    for (g, v), w0 in zip(picked, before):
        w1 = ops.convert_to_tensor(v.value)
        dtype = w0.dtype
        g = ops.cast(g, dtype)
        g = _loss_gradient(g, v, w0)
        columns = [_column(w0, w1, g, None)]
        if per_neuron and len(v.shape) >= 2:
            columns.append(_column(w0, w1, g, tuple(range(len(v.shape) - 1))))
        out.append(ops.concatenate([ops.reshape(c, (len(QUANTITIES), -1)) for c in columns], axis=1))
    return out


def _column(w0, w1, g, axis):
    tiny = ops.cast(1e-30, w0.dtype)

    def norm(x):
        return ops.sqrt(ops.sum(ops.square(x), axis=axis))

    n0, n1 = norm(w0), norm(w1)
    u0, u1 = w0 / ops.maximum(n0, tiny), w1 / ops.maximum(n1, tiny)  # per neuron: broadcasts on the last axis
    angle = 2.0 * ops.arctan2(norm(u1 - u0), norm(u1 + u0))
    gn = norm(g)
    cos = ops.sum(g * w0, axis=axis) / ops.maximum(gn * n0, tiny)
    rel = norm(w1 - w0) / ops.maximum(n0, tiny)
    return ops.stack([n0, rel, angle, cos, gn])


def _loss_gradient(g, v, w):
    reg = getattr(v, "regularizer", None)
    if isinstance(reg, (keras.regularizers.L2, keras.regularizers.L1L2)):
        l2 = float(getattr(reg, "l2", 0.0) or 0.0)
        l1 = float(getattr(reg, "l1", 0.0) or 0.0)
        if l2:
            g = g - theory.l2_as_coupled_weight_decay(l2) * w
        if l1:
            g = g - l1 * ops.sign(w)
    return g


# ------------------------------------------------------ optimizer structure
def _leaves(optimizer, variables):
    """(leaf optimizer, innermost enclosing ReparamWeightDecay or None, variables it
    updates), through the wrapper protocol (`optimizers._wrapper.walk`)."""
    out = []
    for leaf, chain, vs in _wrapper.walk(optimizer, variables):
        reparam = [w for w in chain if isinstance(w, _optimizers.ReparamWeightDecay)]
        out.append((leaf, reparam[-1] if reparam else None, vs))
    return out


def _kind(optimizer):
    for cls, kind in ((_optimizers.SGD, "paper_sgd"), (keras.optimizers.SGD, "sgd"),
                      (keras.optimizers.Lion, "lion"), (keras.optimizers.Lamb, "lamb"),
                      (keras.optimizers.AdamW, "adam"), (keras.optimizers.Adam, "adam")):
        if isinstance(optimizer, cls):
            return kind
    if isinstance(optimizer, _ADAM):
        return "adaptive"
    return None


class _Spec:
    """What theory predicts for one variable under its optimizer."""

    def __init__(self, leaf, reparam, variable):
        self.kind = _kind(leaf)
        self.size = int(np.prod(variable.shape))
        self.leaf = leaf
        self.momentum = float(getattr(leaf, "momentum", 0.0) or 0.0)
        self.beta_1 = float(getattr(leaf, "beta_1", 0.9))
        self.beta_2 = float(getattr(leaf, "beta_2", 0.99))
        self.rule, self.decay = None, None  # decay(lr) -> ηλ per step
        family = {"adaptive": None}.get(self.kind, self.kind)
        if reparam is not None:
            # (a λ(t) schedule has no prediction here: the decay would need the step too)
            if (reparam.decays(variable) and not callable(reparam.weight_decay)
                    and reparam.weight_decay > 0):
                lam, ref, p = reparam.weight_decay, reparam.reference_learning_rate, reparam.lr_exponent_for(variable)
                self.decay = ((lambda lr: theory.scheduled_weight_decay(lam, lr, ref, p))
                              if p > 0 else (lambda lr: lam))
                self.rule = theory.equilibrium_rule(family, reparam.mode)
        else:
            wd = float(getattr(leaf, "weight_decay", None) or 0.0)
            reg = getattr(variable, "regularizer", None)
            if self.kind == "paper_sgd" and wd > 0:
                self.rule, self.decay = theory.equilibrium_rule(family, "coupled"), (lambda lr: lr * wd)
            elif wd > 0 and _keras_internals.uses_weight_decay(leaf, variable):
                self.rule = theory.equilibrium_rule(family, "decoupled")
                self.decay = lambda lr: lr * wd
            elif self.kind in ("sgd", "paper_sgd") and isinstance(reg, keras.regularizers.L2) and reg.l2:
                lam = theory.l2_as_coupled_weight_decay(float(reg.l2))
                self.rule, self.decay = theory.equilibrium_rule(family, "coupled"), (lambda lr: lr * lam)

    def theory(self, step, lr, norm):
        out = {"effective_learning_rate": _effective_lr(self.kind, lr, norm, self.size),
               "clock": None, "predicted_angular_update": None, "predicted_norm": None,
               "predicted_grad_ratio": None}
        if self.decay is not None:
            d = self.decay(lr)
            out["clock"] = theory.equilibration_clock(step, d)
            if self.rule is not None:
                out["predicted_angular_update"] = theory.equilibrium_angular_update(
                    self.rule, d, momentum=self.momentum, beta_1=self.beta_1, beta_2=self.beta_2)
            if self.rule in ("sgd_coupled", "sgd_decoupled") and lr > 0:
                out["predicted_grad_ratio"] = theory.equilibrium_gradient_ratio(
                    self.rule, lr, d, momentum=self.momentum)
            if self.rule == "adamw" and d > 0 and lr > 0:
                out["predicted_norm"] = theory.equilibrium_norm_adamw(lr, d, self.size)
        return out


def _effective_lr(kind, lr, norm, size):
    if norm <= 0 or kind is None:
        return None
    family = {"paper_sgd": "sgd", "adaptive": "adam"}.get(kind, kind)
    return theory.effective_learning_rate(family, lr, norm, size)


def _prenorm_quantities():
    return ("prenorm_variance_over_epsilon", "prenorm_variance_over_epsilon_worst")
