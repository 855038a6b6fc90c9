"""Many cells of a learning-rate / weight-decay grid trained at once, in one compiled program.

A *cell* is one training run: a learning rate η_0, a weight decay (λ_new, or λ_old in Keras's
parameterization), a schedule and a seed (which fixes the initialization *and* the batch order).
`train_block` trains every cell of a block together: the weights, the optimizer state and the
hyperparameters of each cell carry a leading cell axis, and one step of every cell is
`jax.vmap` of one cell's step, which is Keras's stateless API (`Model.stateless_call`,
`Optimizer.stateless_apply`) on the package's own optimizer:

* ``rule="new"``: `keras_explr.optimizers.ReparamWeightDecay(inner, λ_new)`:
  θ ← (1 − λ_new)θ − η_t·update, λ_new constant;
* ``rule="old"``: the same wrapper at λ_t = λ_old·η_t, which is Keras's ``weight_decay=λ_old``
  (θ ← θ − η_t λ_old θ before the inner update: Keras SGD/AdamW), written as a callable so that
  one compiled program holds cells with different λ_old.

``inner`` is ``keras.optimizers.SGD(momentum=0.9)`` or ``keras.optimizers.Adam()``. Each cell's
η_t = η_0·f(t) (f: `schedule_factor`) is written into the inner optimizer's learning-rate
variable before its update, which is how Keras itself evaluates a schedule (at ``iterations``,
before the step). The test suite checks that a cell of a block equals the same cell trained
alone by ``model.fit`` with the package's optimizer (tests/test_tuning_study.py).

The net (`build_net`) is an MLP on flattened 14×14 MNIST: Dense (no bias) → BatchNormalization →
ReLU per hidden layer, then a linear head. ``invariant=True`` makes every trainable weight
scale-invariant: BatchNormalization without γ/β and with ε = 1e-12 (negligible next to the
pre-normalization variance, which every cell records), and a frozen head. ``invariant=False``
is what users run: Keras's default ε = 1e-3, γ/β, a trainable head with a bias.

Needs the JAX backend (``KERAS_BACKEND=jax``).
"""

import functools

import numpy as np

INVARIANT_EPSILON = 1e-12
KERAS_EPSILON = 1e-3
SCHEDULES = ("constant", "step", "cosine")
_COMPILED = {}


def require_jax():
    """Raises a `RuntimeError` that says how to run the study unless Keras runs on JAX."""
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            "The study trains many cells at once with jax.vmap and needs the JAX backend: run it with "
            f"KERAS_BACKEND=jax (Keras's backend here is {keras.backend.backend()!r}).")


def schedule_factor(schedule, t, total):
    """f(t) in η_t = η_0·f(t) at steps t (0-based) of a run of `total` steps, float64 numpy (the block feeds
    it to the compiled program as data: `keras.ops.cos` rounds float64 through float32 on JAX): "constant" 1;
    "step" ÷10 at total/2 and again at 3·total/4; "cosine" ½(1 + cos(π t/total)) (Keras's `CosineDecay`).

    >>> schedule_factor("step", [0, 49, 50, 74, 75], 100).tolist()
    [1.0, 1.0, 0.1, 0.1, 0.01]
    """
    t = np.asarray(t, np.float64)
    if schedule == "constant":
        return np.ones_like(t)
    if schedule == "step":
        return np.where(t < total // 2, 1.0, np.where(t < (3 * total) // 4, 0.1, 0.01))
    if schedule == "cosine":
        return 0.5 * (1.0 + np.cos(np.pi * t / total))
    raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={schedule!r}")


def decay_clock(schedule, rule, lambda_new, start, stop, total):
    """Σ_t λ_t over steps start … stop − 1 of a run of `total` steps (the equilibration clock): λ_t = λ_new
    (rule "new") or λ_new·η_t/η_0 (the standard rule, decay η_t·λ_old with λ_new = η_0·λ_old). `lambda_new` may
    be an array (one clock per cell).

    >>> standard, new = decay_clock("step", "old", 0.01, 0, 100, 100), decay_clock("step", "new", 0.01, 50, 100, 100)
    >>> round(float(standard), 9), float(new)
    (0.5275, 0.5)
    """
    t = np.arange(start, stop)
    span = float(len(t)) if rule == "new" else float(np.sum(schedule_factor(schedule, t, total)))
    return np.asarray(lambda_new, np.float64) * span


def keras_schedule(schedule, learning_rate, total):
    """The same schedule as a Keras `LearningRateSchedule` (or a float for "constant"): what a user
    passes to one run (the test's reference)."""
    import keras

    if schedule == "constant":
        return learning_rate
    if schedule == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [total // 2 - 1, (3 * total) // 4 - 1],  # Keras: value i while step <= boundary i
            [learning_rate, learning_rate * 0.1, learning_rate * 0.01])
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, total)
    raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={schedule!r}")


def batch_moments(x):
    """(mean, biased variance) over axis 0, in x's dtype (`keras.ops.mean` reduces float64 in float32 on
    JAX; a sum divided by the count does not)."""
    from keras import ops

    n = ops.cast(ops.shape(x)[0], x.dtype)
    mean = ops.sum(x, axis=0) / n
    return mean, ops.sum(ops.square(x - mean), axis=0) / n


@functools.lru_cache(maxsize=None)
def _standardize_class():
    import keras
    from keras import ops

    class Standardize(keras.layers.Layer):
        """Batch normalization without γ/β, computed in the input's dtype: (x − μ_B)/√(σ²_B + ε) in training,
        (x − m)/√(v + ε) with moving statistics (momentum 0.99, as Keras's) otherwise. Keras's
        `BatchNormalization` computes float64 inputs in float32; this layer keeps float64 exact, so a cell of
        a block can be compared with the same cell trained alone to 1e-12."""

        def __init__(self, epsilon, momentum=0.99, **kwargs):
            super().__init__(**kwargs)
            self.epsilon, self.momentum = float(epsilon), float(momentum)

        def build(self, input_shape):
            self.moving_mean = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False,
                                               name="moving_mean")
            self.moving_variance = self.add_weight(shape=(input_shape[-1],), initializer="ones",
                                                   trainable=False, name="moving_variance")

        def call(self, x, training=None):
            if training:
                mean, var = batch_moments(x)
                self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
                self.moving_variance.assign(self.momentum * self.moving_variance + (1 - self.momentum) * var)
            else:
                mean, var = ops.cast(self.moving_mean, x.dtype), ops.cast(self.moving_variance, x.dtype)
            return (x - mean) * ops.rsqrt(var + ops.cast(self.epsilon, x.dtype))

    return Standardize


def build_net(seed, hidden=(64, 64), inputs=196, classes=10, invariant=True, epsilon=None):
    """The study's MLP as a Keras functional model with outputs [logits, pre-normalization
    activations of every hidden layer]; weights drawn from `seed`. The invariant net normalizes with
    `Standardize` (no γ/β, ε = 1e-12), the users' net with Keras's `BatchNormalization` (γ/β, ε = 1e-3)."""
    import keras

    eps = (INVARIANT_EPSILON if invariant else KERAS_EPSILON) if epsilon is None else float(epsilon)
    x = inp = keras.Input((inputs,))
    pre = []
    for k, width in enumerate(hidden):
        x = keras.layers.Dense(width, use_bias=False, name=f"dense{k}",
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + k))(x)
        pre.append(x)
        if invariant:
            x = _standardize_class()(eps, name=f"bn{k}")(x)
        else:
            x = keras.layers.BatchNormalization(epsilon=eps, name=f"bn{k}")(x)
        x = keras.layers.ReLU()(x)
    head = keras.layers.Dense(classes, use_bias=not invariant, name="head",
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + 99))
    head.trainable = not invariant
    logits = head(x)
    return keras.Model(inp, [logits] + pre)


def make_optimizer(optimizer, rule):
    """(the package's optimizer, the callable that holds a cell's λ_t while a step is traced)."""
    import keras

    from keras_explr.optimizers import ReparamWeightDecay

    if optimizer == "sgd":
        inner = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    elif optimizer == "adam":
        inner = keras.optimizers.Adam(learning_rate=1e-3)
    else:
        raise ValueError(f"`optimizer` must be 'sgd' or 'adam'. Received: optimizer={optimizer!r}")
    if rule not in ("new", "old"):
        raise ValueError(f"`rule` must be 'new' or 'old'. Received: rule={rule!r}")
    lam = _CellValue()
    return ReparamWeightDecay(inner, weight_decay=lam), lam


class _CellValue:
    """A weight decay λ(step) that returns the value of the cell being traced (set by the step)."""

    def __init__(self):
        self.value = None

    def __call__(self, step):
        if self.value is None:
            raise RuntimeError("no cell value set: _CellValue is only called inside a block step")
        return self.value


def batch_order(seed, n_train, batch_size, steps):
    """[steps, batch_size] training indices of a seed: a fresh permutation per epoch (epochs of
    n_train // batch_size full batches), the same in every cell that shares the seed.

    >>> order = batch_order(0, 10, 4, 3)  # 2 batches per epoch: the third step starts a new epoch
    >>> order.shape, len(set(order[:2].ravel()))
    ((3, 4), 8)
    """
    per_epoch = n_train // batch_size
    rng = np.random.default_rng(10_000 + seed)
    out = np.empty((steps, batch_size), np.int32)
    for e in range(-(-steps // per_epoch)):
        perm = rng.permutation(n_train)[: per_epoch * batch_size].reshape(per_epoch, batch_size)
        lo = e * per_epoch
        out[lo: lo + per_epoch] = perm[: max(0, min(per_epoch, steps - lo))]
    return out


def statistics_slots(net):
    """[(index of moving_mean, index of moving_variance)] of every normalization layer of a `build_net` model
    in its non-trainable variables."""
    ids = [id(v) for v in net.non_trainable_variables]
    layers = [layer for layer in net.layers if layer.name.startswith("bn")]
    return [(ids.index(id(b.moving_mean)), ids.index(id(b.moving_variance))) for b in layers]


def stateless_score(net, slots, tv, ntv, xref, xv, yv):
    """(validation cross-entropy, accuracy) of a `build_net` model's variables (tv, ntv), the study's score being
    minus the cross-entropy: the normalization statistics recomputed on the reference images `xref` (the layers
    in training mode on them: exactly their per-layer mean and variance), then the validation set in
    inference mode. Stateless (`Block` maps it over its cells)."""
    import keras.ops as ops

    outs, _ = net.stateless_call(tv, ntv, xref, training=True)
    ntv = list(ntv)
    for (im, iv), p in zip(slots, outs[1:]):
        ntv[im], ntv[iv] = batch_moments(p)
    outs, _ = net.stateless_call(tv, ntv, xv, training=False)
    logits = outs[0]
    ce = ops.mean(ops.sparse_categorical_crossentropy(yv, logits, from_logits=True))
    acc = ops.mean(ops.cast(ops.equal(ops.argmax(logits, axis=-1), yv), "float32"))
    return ce, acc


def score_model(net, data, reference=1024):
    """The validation cross-entropy of a trained `build_net` model, as `Block.evaluate` computes it
    (`stateless_score` on the model's current variables)."""
    import keras
    import keras.ops as ops

    (x, _), (xv, yv) = data
    dtype = keras.config.floatx()
    ce, _ = stateless_score(net, statistics_slots(net), [v.value for v in net.trainable_variables],
                            [v.value for v in net.non_trainable_variables],
                            ops.convert_to_tensor(np.asarray(x[:reference]), dtype),
                            ops.convert_to_tensor(np.asarray(xv), dtype), ops.convert_to_tensor(yv, "int32"))
    return float(ce)


class Block:
    """Cells that share a net and an optimizer, trained together.

    Args:
      cells (list[dict]): list of dicts with "learning_rate" (η_0), "weight_decay" (λ_new for rule "new",
        λ_old for "old") and "seed".
      optimizer (str): "sgd" or "adam".
      rule (str): "new" or "old".
      schedule (str): one of `SCHEDULES`.
      total_steps (int): the run's length (the schedule's horizon).
      data (tuple): ((x, y), (x_val, y_val)) with x flattened to (n, features).
      invariant (bool): the scale-invariant net, or the users' one (`build_net`).
      hidden (tuple[int, ...]): the hidden layers' widths (`build_net`).
      batch_size, reference (int): the batch size, and how many training images set the BatchNorm
        statistics used to score the validation set (recomputed at every checkpoint).
      epsilon (float | None): the normalization's ε (`build_net`; None: 1e-12 for the invariant
        net, 1e-3 for the users' one).
    """

    def __init__(self, cells, optimizer, rule, schedule, total_steps, data, invariant=True, hidden=(64, 64),
                 batch_size=128, reference=1024, epsilon=None):
        require_jax()
        import jax
        import jax.numpy as jnp
        import keras

        (x, y), (xv, yv) = data
        self.cells, self.rule, self.schedule, self.total = list(cells), rule, schedule, int(total_steps)
        self.batch_size = batch_size
        dtype = keras.config.floatx()
        self.x, self.y = jnp.asarray(x, dtype), jnp.asarray(y, "int32")
        self.xv, self.yv = jnp.asarray(xv, dtype), jnp.asarray(yv, "int32")
        self.xref = self.x[:reference]
        seeds = sorted({int(c["seed"]) for c in self.cells})
        nets = {s: build_net(s, hidden, x.shape[1], int(np.max(y)) + 1, invariant, epsilon) for s in seeds}
        self.model = model = nets[seeds[0]]
        self.epsilon = float(model.get_layer("bn0").epsilon)
        opt, self._lam = make_optimizer(optimizer, rule)
        opt.build(model.trainable_variables)
        self.opt = opt
        names = [v.name for v in opt.variables]
        self._lr_index = names.index("learning_rate")
        self._bn_slots = statistics_slots(model)

        def stack(values):
            return jnp.stack([jnp.asarray(v) for v in values])

        by_seed = {s: ([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables])
                   for s, m in nets.items()}
        tv = [stack([by_seed[int(c["seed"])][0][i] for c in self.cells]) for i in range(len(model.trainable_variables))]
        ntv = [stack([by_seed[int(c["seed"])][1][i] for c in self.cells])
               for i in range(len(model.non_trainable_variables))]
        ov = [jnp.broadcast_to(v.value, (len(self.cells),) + tuple(v.shape)) for v in opt.variables]
        self.state = (tv, ntv, ov, jnp.full((len(self.cells),), jnp.inf, "float32"))
        self.lr0 = jnp.asarray([c["learning_rate"] for c in self.cells], dtype)
        self.wd = jnp.asarray([c["weight_decay"] for c in self.cells], dtype)
        self.orders = {s: batch_order(s, len(x), batch_size, self.total) for s in seeds}
        self.step = 0
        self.clock = np.zeros(len(self.cells))  # Σ_t λ_t per cell (the equilibration clock)
        # One compiled program per design (not per block): blocks of the same arm and size reuse it.
        # Cells that share a seed share the batch order: the batch is then gathered once for the block, and
        # the first layer is one matrix product for every cell.
        self.shared = len(seeds) == 1
        key = (optimizer, rule, schedule, self.total, bool(invariant), self.epsilon, tuple(hidden), dtype,
               tuple(x.shape), batch_size, reference, self.shared)
        if key not in _COMPILED:
            _COMPILED[key] = (jax.jit(self._make_segment(), donate_argnums=(0,)),
                              jax.jit(jax.vmap(self._cell_eval, in_axes=(0, 0, None, None, None))))
        self._segment, self._evaluate = _COMPILED[key]

    # -- one cell ------------------------------------------------------------------
    def _cell_step(self, carry, batch, factor, lr0, wd, x, y):
        import jax
        import keras.ops as ops

        tv, ntv, ov, minvar = carry
        lr_t = lr0 * factor
        lam_t = wd if self.rule == "new" else wd * lr_t
        xb, yb = x[batch], y[batch]

        def loss_fn(tv):
            outs, ntv2 = self.model.stateless_call(tv, ntv, xb, training=True)
            ce = ops.sparse_categorical_crossentropy(yb, outs[0], from_logits=True)
            loss = ops.sum(ce) / ops.cast(ops.shape(ce)[0], ce.dtype)  # (ops.mean reduces float64 in float32)
            var = ops.min(ops.stack([ops.min(batch_moments(p)[1]) for p in outs[1:]]))
            return loss, (ntv2, var)

        grads, (ntv, var) = jax.grad(loss_fn, has_aux=True)(tv)
        ov = list(ov)
        ov[self._lr_index] = ops.cast(lr_t, ov[self._lr_index].dtype)
        self._lam.value = lam_t
        try:
            tv, ov = self.opt.stateless_apply(ov, grads, tv)
        finally:
            self._lam.value = None
        return (tv, ntv, ov, ops.minimum(minvar, ops.cast(var, "float32")))

    def _make_segment(self):
        import jax

        step = jax.vmap(self._cell_step, in_axes=(0, None if self.shared else 0, None, 0, 0, None, None))

        def segment(state, batches, ts, lr0, wd, x, y):
            def body(carry, xs):
                b, t = xs
                return step(carry, b, t, lr0, wd, x, y), None
            state, _ = jax.lax.scan(body, state, (batches, ts))
            return state
        return segment

    def _cell_eval(self, tv, ntv, xref, xv, yv):
        """(validation cross-entropy, accuracy) of one cell (`stateless_score`)."""
        return stateless_score(self.model, self._bn_slots, tv, ntv, xref, xv, yv)

    # -- the block -----------------------------------------------------------------
    def run(self, steps):
        """Trains every cell `steps` more steps (one compiled scan)."""
        import jax.numpy as jnp

        if self.step + steps > self.total:
            raise ValueError(f"`steps` runs past the block's {self.total} steps (at step {self.step}).")
        if self.shared:
            idx = self.orders[int(self.cells[0]["seed"])][self.step: self.step + steps]
        else:
            idx = np.stack([self.orders[int(c["seed"])][self.step: self.step + steps] for c in self.cells], axis=1)
        t = np.arange(self.step, self.step + steps)
        f = schedule_factor(self.schedule, t, self.total)
        self.state = self._segment(self.state, jnp.asarray(idx), jnp.asarray(f, self.lr0.dtype), self.lr0, self.wd,
                                   self.x, self.y)
        lam_new = np.array([c["weight_decay"] * (1.0 if self.rule == "new" else c["learning_rate"])
                            for c in self.cells], np.float64)
        self.clock += decay_clock(self.schedule, self.rule, lam_new, self.step, self.step + steps, self.total)
        self.step += steps

    def evaluate(self):
        """{"loss", "accuracy", "min_prenorm_variance_over_epsilon"}: numpy arrays over cells."""
        tv, ntv, _, minvar = self.state
        ce, acc = self._evaluate(tv, ntv, self.xref, self.xv, self.yv)
        return {"loss": np.asarray(ce, np.float64), "accuracy": np.asarray(acc, np.float64),
                "min_prenorm_variance_over_epsilon": np.asarray(minvar, np.float64) / self.epsilon}

    def weights(self):
        """The trainable weights, each with the leading cell axis (numpy)."""
        return [np.asarray(v) for v in self.state[0]]
