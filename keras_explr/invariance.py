"""Which variables is the loss scale-invariant in? Found structurally, confirmed numerically.

A loss is scale-invariant in a group S of variables when L(cS) = L(S) for all
c > 0 (Li & Arora, Lemma 1: then ⟨∇L, w⟩ = 0). Structurally: every tensor of
a functional model is homogeneous of some degree d in S, t(cS) = c^d t(S).
Inputs have d = 0; a Dense/Conv kernel in S adds 1; ReLU, pooling, dropout,
reshapes keep d; Add/Concatenate need equal degrees; a normalization layer
(BatchNorm, LayerNorm, GroupNorm) maps any degree to 0; anything else
(tanh after a scaled tensor, a bias added to a scaled kernel's output) breaks
homogeneity. The loss is invariant in S when every model output has d = 0.

Normalization layers' ε breaks exact invariance (BN(cz) uses ε/c²): the
numeric confirmation therefore runs with every normalization ε temporarily set
to 1e-30 (and restored), so that it tests the structure, and the report also
gives the output change with the real ε.
"""

import dataclasses

import keras
import numpy as np
from keras import layers, ops

NORMALIZATION = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization)
KERNEL_LAYERS = (layers.Dense, layers.EinsumDense, layers.Conv1D, layers.Conv2D, layers.Conv3D,
                 layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
HOMOGENEOUS = (layers.ReLU, layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D,
               layers.SpatialDropout3D, layers.Flatten, layers.Reshape, layers.Permute,
               layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
               layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D,
               layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D,
               layers.GlobalAveragePooling3D, layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D,
               layers.GlobalMaxPooling3D, layers.ZeroPadding1D, layers.ZeroPadding2D,
               layers.ZeroPadding3D, layers.Cropping1D, layers.Cropping2D, layers.Cropping3D,
               layers.UpSampling1D, layers.UpSampling2D, layers.Identity, layers.InputLayer)
MERGE_EQUAL = (layers.Add, layers.Subtract, layers.Average, layers.Maximum, layers.Minimum,
               layers.Concatenate)
_POS_HOMOGENEOUS_ACTIVATIONS = ("relu", "linear", "leaky_relu")


@dataclasses.dataclass
class Decision:
    """Why a variable is, or is not, scale-invariant."""

    variable: object
    invariant: bool
    reason: str
    output_change: float = float("nan")          # with ε → 0, scaled by 0.5 and 2
    output_change_with_eps: float = float("nan")  # with the layers' real ε
    grad_cosine: float = float("nan")             # |cos(∇L, w)|

    def __str__(self):
        tag = "scale-invariant" if self.invariant else "not invariant"
        nums = ""
        if not np.isnan(self.output_change):
            nums = (f" [output change {self.output_change:.1e} (ε→0), "
                    f"{self.output_change_with_eps:.1e} (real ε); |cos(∇L,w)| {self.grad_cosine:.1e}]")
        return f"{self.variable.path}: {tag}: {self.reason}{nums}"


def output_degree(model, group):
    """The homogeneity degree of each model output in the variables `group`
    (scaled jointly), or None where the structure is not homogeneous."""
    ids = {id(v) for v in group}
    return [_degree(t, ids, {}) for t in _outputs(model)]


def tensor_degree(tensor, group):
    """The homogeneity degree of one symbolic tensor of a functional model."""
    return _degree(tensor, {id(v) for v in group}, {})


def normalization_input_degrees(model, group):
    """{normalization layer: degree of its input in `group`} for a functional model."""
    ids = {id(v) for v in group}
    out = {}
    for layer in _layers(model):
        if isinstance(layer, NORMALIZATION):
            out[layer] = _degree(layer.input, ids, {})
    return out


def invariant_group(model):
    """The largest group of trainable variables the loss is *jointly* scale-invariant in.

    In a pre-activation ResNet the second conv of a block adds into the
    residual stream, so no single kernel is invariant, but all the convs
    together are (the stream is homogeneous of degree 1 in them and a final
    normalization removes it). Tried in order: every variable that reaches a
    normalization layer; the same without biases and normalization γ/β;
    else the variables that are invariant one by one (structural pass only).
    """
    cands = [v for v in model.trainable_variables if reaches_normalization(model, v)]
    plain = [v for v in cands if not _is_bias_or_affine(model, v)]
    for group in (cands, plain):
        if group and all(d == 0 for d in output_degree(model, group)):
            return group
    return [v for v in cands if all(d == 0 for d in output_degree(model, [v]))]


def _is_bias_or_affine(model, v):
    layer = _owner(model, v)
    return isinstance(layer, NORMALIZATION) or (layer is not None and v is getattr(layer, "bias", None))


def scale_invariant_variables(model, sample_batch, report=False, rtol=None, num_checks=(0.5, 2.0)):
    """The trainable variables in which `model`'s loss is scale-invariant.

    Structural pass (module docstring), then each candidate is confirmed on
    `sample_batch` (``x`` or ``(x, y)``): scaled alone by 0.5 and by 2, the
    training-mode outputs change by at most `rtol` (normalization ε set to
    1e-30 for the check), and |cos(∇L, w)| ≤ `rtol` where L is the compiled
    loss on ``(x, y)`` or, without labels, a fixed random linear function of
    the outputs (any loss of the outputs is invariant too).

    Args:
      model: a functional or Sequential Keras model.
      sample_batch: ``x`` or ``(x, y)``.
      report: also return a list of `Decision`s, one per trainable variable.
      rtol: tolerance; default 1e-4 for float32 models, 1e-9 for float64.

    Returns:
      The list of variables (the objects), or ``(variables, decisions)``.
    """
    x, y = (sample_batch if isinstance(sample_batch, (tuple, list)) and len(sample_batch) == 2
            else (sample_batch, None))
    if not hasattr(model, "outputs") or model.outputs is None:
        raise ValueError(
            "`model` must be a functional or Sequential Keras model (its graph is "
            f"needed); received {type(model).__name__}"
        )
    from keras_explr import theory

    if rtol is not None:
        theory.check_positive("rtol", rtol)
    try:
        factors = [theory.check_positive("num_checks[]", c) for c in num_checks]
    except TypeError:
        factors = []
    if not factors:
        raise ValueError("`num_checks` must be a non-empty sequence of scale factors > 0. "
                         f"Received: num_checks={num_checks!r}")
    num_checks = factors
    tv = list(model.trainable_variables)
    if rtol is None:
        rtol = 1e-9 if all(str(v.dtype) == "float64" for v in tv) else 1e-4
    decisions = []
    with _tiny_epsilon(model):
        try:
            base = _outputs_with(model, x, {})
        except (TypeError, ValueError, AttributeError) as e:
            raise ValueError(
                "`sample_batch` must be `x` or `(x, y)` with `x` an array (or structure of arrays) the model "
                f"accepts. Received: sample_batch of type {type(sample_batch).__name__}: {e}"
            ) from e
        grads = _gradients(model, x, y)
    base_eps = _outputs_with(model, x, {})
    for v, g in zip(tv, grads):
        degs = output_degree(model, [v])
        if any(d is None for d in degs):
            decisions.append(Decision(v, False, _why_not_homogeneous(model, v)))
            continue
        if any(d != 0 for d in degs):
            decisions.append(Decision(v, False, f"the output scales as c^{max(degs)}: no "
                                                "normalization between it and the output"))
            continue
        if not reaches_normalization(model, v):
            decisions.append(Decision(v, False, "it does not reach a normalization layer"))
            continue
        with _tiny_epsilon(model):
            change = max(_rel(base, _outputs_with(model, x, {id(v): c})) for c in num_checks)
        change_eps = max(_rel(base_eps, _outputs_with(model, x, {id(v): c})) for c in num_checks)
        w = np.asarray(ops.convert_to_numpy(v), dtype=np.float64).ravel()
        gv = np.asarray(g, dtype=np.float64).ravel()
        cos = float(abs(gv @ w) / max(np.linalg.norm(gv) * np.linalg.norm(w), 1e-300))
        ok = change <= rtol and cos <= rtol
        reason = ("it feeds a normalization layer through homogeneous operations" if ok else
                  f"the structure says invariant but the numeric check fails (rtol={rtol:g})")
        decisions.append(Decision(v, ok, reason, change, change_eps, cos))
    found = [d.variable for d in decisions if d.invariant]
    return (found, decisions) if report else found


def explain(decisions):
    """A printable report of `scale_invariant_variables(..., report=True)`."""
    return "\n".join(str(d) for d in decisions)


# ---------------------------------------------------------------- structure
def _outputs(model):
    return list(model.outputs)


def _layers(model):
    return list(getattr(model, "operations", None) or model.layers)


def _why_not_homogeneous(model, v):
    layer = _owner(model, v)
    if isinstance(layer, NORMALIZATION):
        return ("an affine parameter (γ or β) of a normalization layer: what follows is not "
                "invariant to its scale (the paper freezes BN's γ and β)")
    if layer is not None and v is getattr(layer, "bias", None):
        return "a bias: scaling it alone is not a rescaling of the layer's output"
    if layer is not None and getattr(layer, "bias", None) is not None and v is getattr(layer, "kernel", None):
        return ("its layer adds a bias, so scaling the kernel alone does not rescale the output "
                "(drop the bias before a normalization layer, or scale kernel and bias jointly)")
    return ("a path from it to the output is not homogeneous in its scale (a non-homogeneous "
            "activation such as tanh, or a layer this analysis does not know)")


def _own(layer, ids):
    return [v for v in layer.weights if id(v) in ids]


def reaches_normalization(model, v):
    """Whether v's layer output reaches a normalization layer (else it's dead or pure head)."""
    layer = _owner(model, v)
    return layer is not None and _reaches_norm(layer, set())


def _owner(model, v):
    """The layer of `model` that holds variable `v`, or None."""
    return next((op for op in _layers(model) if any(w is v for w in op.weights)), None)


def _reaches_norm(layer, seen):
    if id(layer) in seen:
        return False
    seen.add(id(layer))
    for node in layer._outbound_nodes:
        op = node.operation
        if isinstance(op, NORMALIZATION) or _reaches_norm(op, seen):
            return True
    return False


def _degree(tensor, ids, cache):
    key = id(tensor)
    if key in cache:
        return cache[key]
    hist = getattr(tensor, "_keras_history", None)
    if hist is None:
        return 0
    layer = hist.operation
    node = layer._inbound_nodes[hist.node_index]
    ins = [_degree(t, ids, cache) for t in node.input_tensors]
    cache[key] = d = _layer_degree(layer, ins, ids)
    return d


def _layer_degree(layer, ins, ids):
    own = _own(layer, ids)
    if any(d is None for d in ins):
        return None
    d_in = max(ins) if ins else 0
    if isinstance(layer, NORMALIZATION):
        return None if own else 0
    if isinstance(layer, KERNEL_LAYERS):
        d_k = 1 if any(v is layer.kernel for v in own) else 0
        deg = d_k + d_in
        bias = getattr(layer, "bias", None)
        if bias is not None:
            d_b = 1 if any(v is bias for v in own) else 0
            if deg != d_b:
                return None
        act = getattr(layer.activation, "__name__", "linear")
        if deg != 0 and act not in _POS_HOMOGENEOUS_ACTIVATIONS:
            return None
        return deg
    if own:
        return None
    if isinstance(layer, HOMOGENEOUS):
        return d_in
    if isinstance(layer, layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        return d_in if d_in == 0 or name in _POS_HOMOGENEOUS_ACTIVATIONS else None
    if isinstance(layer, MERGE_EQUAL):
        return ins[0] if len(set(ins)) == 1 else None
    if isinstance(layer, layers.Multiply):
        return sum(ins)
    return 0 if d_in == 0 else None


# ---------------------------------------------------------------- numerics
class _tiny_epsilon:
    """Temporarily sets every normalization layer's ε to 1e-30 (restored on exit)."""

    def __init__(self, model):
        self.layers = [layer for layer in _layers(model) if isinstance(layer, NORMALIZATION)]

    def __enter__(self):
        self.saved = [layer.epsilon for layer in self.layers]
        for layer in self.layers:
            layer.epsilon = 1e-30

    def __exit__(self, *exc):
        for layer, eps in zip(self.layers, self.saved):
            layer.epsilon = eps


def _outputs_with(model, x, scales):
    tv = [v.value * scales[id(v)] if id(v) in scales else v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    out, _ = model.stateless_call(tv, ntv, x, training=True)
    return [np.asarray(ops.convert_to_numpy(o), dtype=np.float64) for o in keras.tree.flatten(out)]


def _rel(a, b):
    return max(float(np.linalg.norm(p - q) / max(np.linalg.norm(p), 1e-300)) for p, q in zip(a, b))


def _gradients(model, x, y):
    """∇L for every trainable variable (numpy), without touching the model's state."""
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
