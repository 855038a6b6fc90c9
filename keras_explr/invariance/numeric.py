"""The numeric side of the invariance analysis: the confirmation of a group
and the numeric checks of layers and activations no rule describes.

The group is scaled by exact powers of two with every normalization's ε set
to the smallest normal number (`tiny_epsilon`), zero-valued variables set to
small random values (`base_values`), and the training-mode outputs and
``model.losses`` compared (`change`) against the tolerance τ = √u of the least
precise compute dtype (`tolerance`); the package docstring explains why.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_explr import _keras_internals

SCALES = (2.0 ** -10, 2.0 ** -3, 2.0 ** 3, 2.0 ** 10)
SCALES_HALF = (2.0 ** -3, 2.0 ** -1, 2.0, 2.0 ** 3)  # float16 compute: stay inside its range


def all_layers(model):
    """Every layer nested in `model` (not `model` itself)."""
    return _keras_internals.all_sublayers(model)


def unit_roundoff(dtype):
    return 2.0 ** -7 if dtype == "bfloat16" else float(np.finfo(np.dtype(dtype)).eps)


def compute_dtype(model):
    """The least precise floating compute dtype among the model's layers."""
    dts = {str(getattr(layer, "compute_dtype", "") or "") for layer in all_layers(model)}
    dts = {d for d in dts if "float" in d} or {keras.config.floatx()}
    return max(sorted(dts), key=unit_roundoff)


def tolerance(model):
    """τ = √u of the least precise compute dtype of `model` (see `keras_explr.invariance`).

    >>> import keras
    >>> from keras_explr import invariance
    >>> invariance.tolerance(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))  # float32: √(2^-23)
    0.000345...
    """
    return float(np.sqrt(unit_roundoff(compute_dtype(model))))


def scales(model):
    return SCALES_HALF if compute_dtype(model) in ("float16",) else SCALES


class tiny_epsilon:
    """Temporarily sets the ε of `normalizations` (layers with a float ``epsilon``)
    to the smallest normal number of float32 (float64 for float64 layers); restored on exit."""

    def __init__(self, normalizations):
        self.layers = [layer for layer in normalizations
                       if isinstance(getattr(layer, "epsilon", None), (int, float))]

    def __enter__(self):
        self.saved = [layer.epsilon for layer in self.layers]
        for layer in self.layers:
            dt = np.float64 if str(getattr(layer, "compute_dtype", "")) == "float64" else np.float32
            layer.epsilon = float(np.finfo(dt).tiny)

    def __exit__(self, *exc):
        for layer, eps in zip(self.layers, self.saved):
            layer.epsilon = eps


def base_values(model):
    """The trainable values, with every all-zero float variable set to small random values."""
    rng = np.random.default_rng(7)
    out = []
    for v in model.trainable_variables:
        val = v.value
        dt = keras.backend.standardize_dtype(v.dtype)
        if "float" in dt:
            a = ops.convert_to_numpy(val)
            if not np.any(a):
                val = ops.convert_to_tensor(0.1 * rng.standard_normal(a.shape), dt)
        out.append(val)
    return out


def forward(model, x, tv):
    """(training-mode outputs as float64 arrays, sum of model.losses) with trainable values `tv`."""
    ntv = [v.value for v in model.non_trainable_variables]
    out, _, losses = model.stateless_call(tv, ntv, x, training=True, return_losses=True)
    outs = [np.asarray(ops.convert_to_numpy(o), dtype=np.float64) for o in keras.tree.flatten(out)]
    loss = float(sum(float(np.sum(ops.convert_to_numpy(term))) for term in losses)) if losses else 0.0
    return outs, loss


def rel(a, b):
    """The largest relative distance ‖p − q‖/‖p‖ over pairs of arrays (inf if any is not finite)."""
    worst = 0.0
    for p, q in zip(a, b):
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            return float("inf")
        den = np.linalg.norm(p)
        num = np.linalg.norm(p - q)
        worst = max(worst, float(num / den) if den > 0 else float(num))
    return worst


def change(model, x, base_tv, base, scale_of):
    """The relative change of outputs and model.losses with variable i scaled by scale_of[i]."""
    tv = [val * scale_of[i] if i in scale_of else val for i, val in enumerate(base_tv)]
    outs, loss = forward(model, x, tv)
    return max(rel(base[0], outs), rel([np.array(base[1])], [np.array(loss)]))


def group_change(model, x, group, normalizations, rtol=None, scales_=None):
    """(change ≤ tolerance, change): `group` scaled jointly by each of `scales_`, ε taken out."""
    ids = {id(v) for v in group}
    idx = [i for i, v in enumerate(model.trainable_variables) if id(v) in ids]
    tol = tolerance(model) if rtol is None else rtol
    scales_ = scales(model) if scales_ is None else scales_
    with tiny_epsilon(normalizations):
        base_tv = base_values(model)
        base = forward(model, x, base_tv)
        worst = max(change(model, x, base_tv, base, {i: c for i in idx}) for c in scales_)
    return worst <= tol, worst


def bisect(model, x, base_tv, base, assign, idx, tol, changes, failed):
    """Finds the variables of `idx` whose scaling by assign[i] moves the outputs by more than `tol`
    (one joint pass; a failing pass is halved, with an explicit stack)."""
    stack = [list(idx)]
    while stack:
        idx = stack.pop()
        ch = change(model, x, base_tv, base, {i: assign[i] for i in idx})
        if ch <= tol:
            for i in idx:
                changes[i] = max(changes[i], ch)
            continue
        if len(idx) == 1:
            changes[idx[0]] = max(changes[idx[0]], ch)
            failed.add(idx[0])
            continue
        half = len(idx) // 2
        stack.extend([idx[half:], idx[:half]])  # the first half first, as before


def probe_degree(op, node):
    """1 if op(c·x) = c·op(x), 0 if op(c·x) = op(x), else None (random inputs, c = 2^±3, 2^±10)."""
    rng = np.random.default_rng(1234)
    values = {}
    for kt in node.arguments.keras_tensors:
        shape = tuple(2 if d is None else d for d in kt.shape)
        dtype = keras.backend.standardize_dtype(kt.dtype)
        if "float" in dtype:
            x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, shape)
        else:
            x = np.zeros(shape)
        values[id(kt)] = (x, dtype)

    def run(c):
        filled = {k: ops.convert_to_tensor(x * c if "float" in dt else x, dt) for k, (x, dt) in values.items()}
        args, kwargs = node.arguments.fill_in(filled)
        if isinstance(op, layers.Layer):
            out, _ = op.stateless_call([v.value for v in op.trainable_variables],
                                       [v.value for v in op.non_trainable_variables], *args, **kwargs)
        else:
            out = op(*args, **kwargs)
        return [np.asarray(ops.convert_to_numpy(o), dtype=np.float64) for o in keras.tree.flatten(out)]

    try:
        base = run(1.0)
        tol = np.sqrt(np.finfo(np.float32).eps)
        for k in (1, 0):
            if all(rel(base, [o / c ** k for o in run(c)]) <= tol for c in SCALES):
                return k
    except Exception:  # noqa: BLE001 (whatever fails to run is not homogeneous)
        return None
    return None


_FN_CACHE = {}


def fn_homogeneous(fn):
    """Whether an elementwise activation satisfies f(cz) = c·f(z) for c > 0 (numeric over 12 decades)."""
    if fn is None or fn in (keras.activations.relu, keras.activations.linear, keras.activations.leaky_relu):
        return True
    key = id(fn)
    if key not in _FN_CACHE:
        z = np.concatenate([-np.logspace(-6, 6, 97), [0.0], np.logspace(-6, 6, 97)])
        try:
            base = np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(z, "float32"))), np.float64)
            tol = np.sqrt(np.finfo(np.float32).eps)
            ok = all(rel([base], [np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(z * c, "float32"))),
                                             np.float64) / c]) <= tol for c in SCALES)
        except Exception:  # noqa: BLE001 (an activation that fails to run is not homogeneous)
            ok = False
        _FN_CACHE[key] = (fn, ok)  # fn kept alive so its id is not reused
    return _FN_CACHE[key][1]


def synthetic_batch(model, batch_size=4):
    """A random batch built from the model's input specs (floats N(0,1), integers in range)."""
    rng = np.random.default_rng(0)
    dims = {}
    for layer in all_layers(model):
        if isinstance(layer, layers.Embedding):
            dims[id(layer)] = layer.input_dim
    arrays = []
    for t in keras.tree.flatten(model.inputs):
        shape = tuple(batch_size if i == 0 and d is None else (8 if d is None else d) for i, d in enumerate(t.shape))
        dt = keras.backend.standardize_dtype(t.dtype)
        if "float" in dt:
            arrays.append(rng.standard_normal(shape).astype(dt if dt != "bfloat16" else "float32"))
        else:
            hi = min(dims.values()) if dims else 2
            arrays.append(rng.integers(0, hi, shape).astype(dt if dt != "bool" else "int32"))
    try:
        return keras.tree.pack_sequence_as(_keras_internals.inputs_struct(model), arrays)
    except (TypeError, ValueError):
        return arrays[0] if len(arrays) == 1 else arrays


def gradients(model, x, y):
    """∇L for every trainable variable (numpy), without touching the model's state: the compiled
    loss when `y` is given, else a fixed random projection of the outputs."""
    tv0 = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    loss_fn = getattr(model, "loss", None) if y is not None else None
    rng = np.random.default_rng(0)

    def loss_of(tv):
        out, _ = model.stateless_call(tv, ntv, x, training=True)
        if callable(loss_fn):
            return ops.mean(loss_fn(y, out))
        outs = keras.tree.flatten(out)
        return sum(ops.sum(o * ops.convert_to_tensor(rng_vals[i], o.dtype)) for i, o in enumerate(outs))

    outs0, _ = model.stateless_call(tv0, ntv, x, training=True)
    rng_vals = [rng.standard_normal(tuple(o.shape)) for o in keras.tree.flatten(outs0)]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(tv0)
            loss = loss_of(tv0)
        grads = tape.gradient(loss, tv0)
    elif backend == "jax":
        import jax

        grads = jax.grad(loss_of)(tv0)
    elif backend == "torch":
        leaves = [t.detach().clone().requires_grad_(True) for t in tv0]
        loss_of(leaves).backward()
        grads = [t.grad for t in leaves]
    else:
        raise NotImplementedError(f"gradients on the {backend!r} backend")
    return [np.zeros(tuple(v.shape)) if g is None else ops.convert_to_numpy(g)
            for g, v in zip(grads, model.trainable_variables)]
