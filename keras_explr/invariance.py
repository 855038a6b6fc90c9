"""Which variables is the loss scale-invariant in? Found structurally, confirmed numerically.

A loss is scale-invariant in a group S of variables when L(cS) = L(S) for
every c > 0 (Li & Arora, Lemma 1: then ⟨∇L, w⟩ = 0 and, with weight decay,
SGD on S is an exponential-LR schedule in disguise). "The loss" is the one
training minimizes: the data loss of the training-mode outputs **plus
`model.losses`**, so a variable with a `kernel_regularizer` is never invariant.

**The rule (structural pass).** Every tensor t of a functional model gets a
degree, an integer linear form in the memberships m_v ∈ {0, 1} of the
variables (t(cS) = c^d t(S), d = Σ a_v m_v):

* model inputs have degree 0; a kernel of a linear layer (Dense, EinsumDense,
  Conv*, Conv*Transpose, DepthwiseConv*, SeparableConv* with both its kernels,
  Embedding) adds m_kernel; the layer's bias must have the degree of the
  output it is added to (m_bias = d_out), so a biased conv before a
  normalization scales with its kernel *jointly*;
* known positively homogeneous layers pass the degree on: ReLU (only with
  ``max_value=None`` and ``threshold=0``; any ``negative_slope``), LeakyReLU,
  PReLU, pooling, padding, cropping, reshapes, dropout, up-sampling,
  Rescaling without offset; Add/Subtract/Average/Maximum/Minimum/Concatenate
  need equal degrees, Multiply/Dot add them;
* BatchNormalization, LayerNormalization, GroupNormalization,
  UnitNormalization, RMSNormalization map any degree to m_γ (0 unless γ is in
  the group, and then β must be too);
* MultiHeadAttention: the attention logits need query and key projections of
  degree 0 (the key bias is free: it adds q·b_k to all of a query's logits,
  which the softmax cancels); value and output projections add their kernels
  (biases must match);
* anything else (clipping ReLU6, thresholds, tanh, GELU, ``hard_sigmoid``,
  softmax, unknown or custom layers, Lambda) must see degree 0, unless a
  numeric check at c = 2^±3, 2^±10 on inputs spread over twelve decades shows
  f(cx) = c·f(x) (then it passes the degree on) or f(cx) = f(x) (degree 0);
* every model output must have degree 0; a variable with a regularizer or a
  constraint (other than NonNeg) stays out, and a layer with an activity
  regularizer must output degree 0.

The group is the largest set of memberships satisfying every equation, found
by branch and bound with bound propagation on each connected set of
equations (`invariant_group`).

**The numeric confirmation and its tolerance.** The group is scaled by the
exact powers of two c = 2^±3, 2^±10 (2^±1, 2^±3 for float16), every
normalization ε set to the smallest normal number of float32 (float64 for
float64 layers), zero-valued variables (fresh biases, β) set to small random
values (a zero bias hides a non-invariance), and the training-mode outputs and
`model.losses` are compared with the unscaled ones. Multiplying by a power of
two is exact in binary floating point and commutes with every rounding, so an
invariant group changes nothing except through ε, whose relative effect
ε'/(c^{2d}σ²) is below the dtype's unit round-off u for every channel whose
variance σ² is not itself denormal, and is 0 for a constant channel. On
deterministic kernels the change is therefore exactly 0, whatever the batch;
non-deterministic reductions (some GPU kernels) add a few units of round-off.
A broken invariance, a term of relative size r, moves the output by
≈ r·(2^10 − 1). The tolerance is τ = √u of the least precise compute dtype
(float64 1.5e-8, float32 3.5e-4, bfloat16 8.8e-2, float16 3.1e-2): it is set
by the dtype alone, and since ε is taken out and nothing is estimated from
the batch, the decisions do not depend on the batch size.

Example:

>>> import keras
>>> from keras_explr import invariance
>>> inp = keras.Input((8,))
>>> h = keras.layers.Dense(16, name="d1")(inp)          # biased: scales with its kernel
>>> h = keras.layers.BatchNormalization()(h)
>>> h = keras.layers.ReLU(max_value=6.0)(h)             # ReLU6 sees degree 0: harmless here
>>> out = keras.layers.Dense(3, name="head")(h)
>>> model = keras.Model(inp, out)
>>> [v.path for v in invariance.invariant_group(model)]
['d1/kernel', 'd1/bias']
"""

import dataclasses
import inspect
import sys

import keras
import numpy as np
from keras import layers, ops

from keras_explr import _keras_internals

# ------------------------------------------------------------------ layer classes
NORMALIZATION = tuple(c for c in (layers.BatchNormalization, layers.LayerNormalization,
                                  layers.GroupNormalization, getattr(layers, "UnitNormalization", None),
                                  getattr(layers, "RMSNormalization", None)) if c is not None)
LINEAR = tuple(c for c in (layers.Dense, layers.EinsumDense, layers.Conv1D, layers.Conv2D, layers.Conv3D,
                           layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose,
                           getattr(layers, "DepthwiseConv1D", None), layers.DepthwiseConv2D,
                           layers.SeparableConv1D, layers.SeparableConv2D, layers.Embedding) if c is not None)
KERNEL_LAYERS = LINEAR  # the old name
HOMOGENEOUS = (layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
               layers.GaussianDropout, layers.Flatten, layers.Reshape, layers.Permute, layers.RepeatVector,
               layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
               layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D,
               layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D, layers.GlobalAveragePooling3D,
               layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D,
               layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D,
               layers.Cropping1D, layers.Cropping2D, layers.Cropping3D,
               layers.UpSampling1D, layers.UpSampling2D, layers.UpSampling3D,
               layers.Identity, layers.InputLayer, layers.LeakyReLU, layers.PReLU)
MERGE_EQUAL = (layers.Add, layers.Subtract, layers.Average, layers.Maximum, layers.Minimum,
               layers.Concatenate)
NOT_HOMOGENEOUS = (layers.Softmax, layers.ELU, layers.GaussianNoise, layers.AlphaDropout)
# keras.ops operations that appear in functional graphs (``x + y``, ``ops.mean(x)``), by class name.
_OPS_EQUAL = {"Add", "Subtract", "Maximum", "Minimum", "Negative", "Absolute", "Abs", "Reshape", "Transpose",
              "ExpandDims", "Squeeze", "Concatenate", "Stack", "GetItem", "Mean", "Sum", "Max", "Min",
              "Relu", "LeakyRelu", "Flatten", "Tile", "Repeat", "Split", "MoveAxis", "SwapAxes",
              "BroadcastTo", "Average", "Roll", "Flip", "MaxPool", "AveragePool"}
_OPS_SUM = {"Multiply", "Matmul", "Einsum", "Dot", "Tensordot", "Outer"}
_MULT_NAMES = {"kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"}
_SCALE_NAMES = {"gamma", "scale"}
_SHIFT_NAMES = {"beta"}

SCALES = (2.0 ** -10, 2.0 ** -3, 2.0 ** 3, 2.0 ** 10)
SCALES_HALF = (2.0 ** -3, 2.0 ** -1, 2.0, 2.0 ** 3)  # float16 compute: stay inside its range


# ------------------------------------------------------------------ public records
@dataclasses.dataclass
class Decision:
    """Why a variable is, or is not, scale-invariant."""

    variable: object
    invariant: bool
    reason: str
    output_change: float = float("nan")          # ε → 0, scaled by the exact powers of two
    output_change_with_eps: float = float("nan")  # the layers' real ε, scaled by 0.5 and 2
    grad_cosine: float = float("nan")             # |cos(∇L, w)| (reported, not decided on)

    def __str__(self):
        tag = "scale-invariant" if self.invariant else "not invariant"
        nums = ""
        if not np.isnan(self.output_change):
            nums = (f" [output change {self.output_change:.1e} (ε→0), "
                    f"{self.output_change_with_eps:.1e} (real ε); |cos(∇L,w)| {self.grad_cosine:.1e}]")
        return f"{self.variable.path}: {tag}: {self.reason}{nums}"


@dataclasses.dataclass
class Confirmation:
    """What `confirm_group` measured: the largest relative change of the
    training-mode outputs and of ``sum(model.losses)`` over `scales`."""

    variables: list
    scales: tuple
    output_change: float
    tolerance: float
    output_change_with_eps: float = float("nan")


# ------------------------------------------------------------------ the structural pass
@dataclasses.dataclass
class _Constraint:
    lhs: dict
    rhs: dict
    layer: str
    what: str
    kind: str  # "structure" | "loss" | "output"
    bit: int = 0

    def row(self):
        return _sub(self.lhs, self.rhs)


def _add(*forms):
    out = {}
    for f in forms:
        for k, a in f.items():
            out[k] = out.get(k, 0) + a
    return {k: a for k, a in out.items() if a}


def _sub(f, g):
    return _add(f, {k: -a for k, a in g.items()})


def _eval(form, m):
    return sum(a * m.get(k, 0) for k, a in form.items())


class _Analysis:
    """Degrees of every tensor of a functional model as linear forms in the
    memberships of `candidates` (a list of trainable variables)."""

    def __init__(self, model, candidates):
        self.model = model
        self.tv = list(model.trainable_variables)
        self.cand = [v for v in candidates]
        self.index = {id(v): i for i, v in enumerate(self.cand)}
        self.constraints = []
        self.forms = {}   # id(KerasTensor) -> (form, mask)
        self.norm_inputs = {}  # layer -> list of input forms (one per call)
        self.owner = {}
        for layer in _all_layers(model):
            for v in getattr(layer, "_trainable_variables", []) + getattr(layer, "_non_trainable_variables", []):
                self.owner.setdefault(id(v), layer)
        self._probe_cache = {}
        # Variables that cannot be scaled whatever the structure says.
        self._pending = []
        for v in self.cand:
            reason = _excluded(v)
            if reason:
                self._pending.append(_Constraint({self.index[id(v)]: 1}, {}, _name(self.owner.get(id(v))),
                                                 f"{v.path}: {reason}", "loss"))
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 20000))
        try:
            self.outputs = [self._form(t) for t in _flat_outputs(model)]
        finally:
            sys.setrecursionlimit(old)
        for c in self._pending:
            self._constrain(c)
        for t, (f, _) in zip(_flat_outputs(model), self.outputs):
            self._constrain(_Constraint(f, {}, _name(_keras_internals.history(t).operation),
                                        f"the model output {t.name!r} scales as c^{{lhs}}: no normalization "
                                        "between the group and it", "output"))

    # -- bookkeeping
    def _constrain(self, c):
        if not c.row():
            return 0
        c.bit = 1 << len(self.constraints)
        self.constraints.append(c)
        return c.bit

    def _m(self, v):
        i = self.index.get(id(v))
        return {} if i is None else {i: 1}

    def _form(self, tensor, inner=None):
        key = id(tensor)
        if inner is not None and key in inner:
            return inner[key]
        if key in self.forms:
            return self.forms[key]
        hist = _keras_internals.history(tensor)
        if hist is None or isinstance(hist.operation, layers.InputLayer):
            self.forms[key] = ({}, 0)
            return self.forms[key]
        op = hist.operation
        node = _keras_internals.inbound_nodes(op)[hist.node_index]
        ins = [self._form(t, inner) for t in node.input_tensors]
        n0 = len(self.constraints)
        outs = self._node(op, node, [f for f, _ in ins], inner)
        mask = 0
        for _, mk in ins:
            mask |= mk
        for c in self.constraints[n0:]:
            mask |= c.bit
        for t, f in zip(node.outputs, outs):
            self.forms[id(t)] = (f, mask)
        return self.forms[key]

    # -- one call of one operation: output forms, constraints added
    def _node(self, op, node, ins, inner):
        n_out = len(node.outputs)
        name = _name(op)
        own = [v for v in getattr(op, "_trainable_variables", [])]
        if isinstance(op, keras.Model) and hasattr(op, "outputs") and not isinstance(op, keras.Sequential):
            return self._nested(op, op, node, ins)
        if isinstance(op, keras.Sequential):
            fn = getattr(op, "_functional", None)
            if fn is not None:
                return self._nested(op, fn, node, ins)
        reg = getattr(op, "activity_regularizer", None)
        outs = self._known(op, node, ins, own, name, inner)
        if outs is None:
            outs = self._unknown(op, node, ins, own, name)
        if reg is not None:
            for f in outs:
                self._constrain(_Constraint(f, {}, name, f"{name!r} has an activity regularizer: model.losses "
                                            "would scale as c^{lhs}", "loss"))
        return outs + [{}] * (n_out - len(outs))

    def _nested(self, op, fn, node, ins):
        inner = {id(t): (f, 0) for t, f in zip(keras.tree.flatten(fn.inputs), ins)}
        return [self._form(t, inner)[0] for t in keras.tree.flatten(fn.outputs)]

    def _known(self, op, node, ins, own, name, inner=None):
        names = {v.name for v in own}
        f0 = ins[0] if ins else {}
        if isinstance(op, NORMALIZATION):
            if names - _SCALE_NAMES - _SHIFT_NAMES:
                return None
            self.norm_inputs.setdefault(op, []).append(f0)
            g = next((v for v in own if v.name in _SCALE_NAMES), None)
            b = next((v for v in own if v.name in _SHIFT_NAMES), None)
            out = self._m(g) if g is not None else {}
            if b is not None:
                self._constrain(_Constraint(self._m(b), out, name,
                                            f"the affine parameters of {name!r}: γ·x̂ + β needs β scaled with γ "
                                            "(an affine parameter scaled alone is not a rescaling)", "structure"))
            return [out]
        if isinstance(op, LINEAR):
            if names - _MULT_NAMES - {"bias"}:
                return None
            if isinstance(op, layers.Embedding):
                self._constrain(_Constraint(f0, {}, name, f"{name!r} takes indices: its input must not scale",
                                            "structure"))
                f0 = {}
            out = _add(f0, *[self._m(v) for v in own if v.name in _MULT_NAMES])
            bias = next((v for v in own if v.name == "bias"), None)
            if bias is not None:
                self._constrain(_Constraint(self._m(bias), out, name,
                                            f"the bias of {name!r} is scaled as c^{{lhs}} but is added to an "
                                            "output that scales as c^{rhs} (scale kernel and bias jointly, or "
                                            "drop the bias before a normalization)", "structure"))
            act = getattr(op, "activation", None)
            if act is not None and not _fn_homogeneous(act):
                self._constrain(_Constraint(out, {}, name, f"the activation {_fname(act)!r} of {name!r} is not "
                                            "homogeneous of degree 1 (f(cz) ≠ c·f(z)), so its input must "
                                            "not scale (it scales as c^{lhs})", "structure"))
                return [{}]
            return [out]
        if isinstance(op, layers.MultiHeadAttention) and type(op) is layers.MultiHeadAttention:
            return self._mha(op, node, own, name, inner)
        if own:
            return None
        if isinstance(op, layers.ReLU):
            if op.max_value is None and float(op.threshold) == 0.0:
                return [f0]
            return self._breaks(ins, name, f"ReLU(max_value={op.max_value}, threshold={op.threshold}) clips or "
                                           "thresholds")
        if isinstance(op, layers.Activation):
            if _fn_homogeneous(op.activation):
                return [f0]
            return self._breaks(ins, name, f"the activation {_fname(op.activation)!r}")
        if isinstance(op, layers.Rescaling):
            if np.all(np.asarray(op.offset) == 0):
                return [f0]
            return self._breaks(ins, name, "Rescaling with an offset")
        if isinstance(op, layers.ActivityRegularization):
            self._constrain(_Constraint(f0, {}, name, f"{name!r} adds an activity loss that would scale as "
                                        "c^{lhs}", "loss"))
            return [f0]
        if isinstance(op, layers.Dot):
            if op.normalize:
                return [{}]
            return [_add(*ins)]
        if isinstance(op, HOMOGENEOUS):
            return [f0] * max(1, len(node.outputs))
        if isinstance(op, MERGE_EQUAL):
            return [self._equal(ins, name)]
        if isinstance(op, layers.Multiply):
            return [_add(*ins)]
        if isinstance(op, NOT_HOMOGENEOUS):
            return self._breaks(ins, name, f"{type(op).__name__}")
        if not isinstance(op, layers.Layer):  # a keras.ops operation
            kind = type(op).__name__
            consts = [a for a in node.arguments._flat_arguments if _is_nonzero_constant(a)]
            if kind in _OPS_EQUAL:
                return [self._equal(ins + ([{}] if consts and kind in
                                           {"Add", "Subtract", "Maximum", "Minimum", "Concatenate", "Stack"}
                                           else []), name)] * max(1, len(node.outputs))
            if kind in _OPS_SUM:
                return [_add(*ins)]
            if kind in {"Divide", "TrueDivide"} and len(ins) == 2:
                return [_sub(ins[0], ins[1])]
            if kind in {"Divide", "TrueDivide"} and len(ins) == 1:
                arg0 = node.arguments.args[0] if node.arguments.args else None
                return [ins[0] if arg0 is node.input_tensors[0] else {k: -a for k, a in ins[0].items()}]
        return None

    def _equal(self, ins, name):
        for f in ins[1:]:
            self._constrain(_Constraint(f, ins[0], name, f"{name!r} combines inputs that scale as c^{{lhs}} and "
                                        "c^{rhs}", "structure"))
        return ins[0] if ins else {}

    def _breaks(self, ins, name, what):
        for f in ins:
            self._constrain(_Constraint(f, {}, name, f"{name!r}: {what} is not homogeneous of degree 1, so its "
                                        "input must not scale (it scales as c^{lhs})", "structure"))
        return [{}]

    def _mha(self, op, node, own, name, inner=None):
        try:
            bound = inspect.signature(op.call).bind(*node.arguments.args, **node.arguments.kwargs).arguments
        except TypeError:
            return None
        dense = [getattr(op, a, None) for a in ("_query_dense", "_key_dense", "_value_dense", "_output_dense")]
        if any(d is None for d in dense):
            return None
        sub = {id(v) for d in dense for v in d.trainable_variables}
        if any(id(v) not in sub for v in op.trainable_variables):
            return None
        q, k, vv = bound.get("query"), bound.get("key"), bound.get("value")
        k = vv if k is None else k
        fq, fk, fv = (self._form(t, inner)[0] for t in (q, k, vv))

        def proj(d, f_in, cancelled=False):
            if {v.name for v in d.trainable_variables} - {"kernel", "bias"}:
                return None
            out = _add(f_in, *[self._m(v) for v in d.trainable_variables if v.name == "kernel"])
            for v in d.trainable_variables:
                # The key bias adds q·b_k to every logit of a query: the softmax over keys cancels it.
                if v.name == "bias" and not cancelled:
                    self._constrain(_Constraint(self._m(v), out, name, f"the bias of {d.name!r} in {name!r} is "
                                                "scaled as c^{lhs} but its projection scales as c^{rhs}",
                                                "structure"))
            return out

        fq, fk = proj(dense[0], fq), proj(dense[1], fk, cancelled=True)
        val = proj(dense[2], fv)
        if None in (fq, fk, val):
            return None
        for f, which in ((fq, "query"), (fk, "key")):
            self._constrain(_Constraint(f, {}, name, f"the {which} projection of {name!r} scales as c^{{lhs}}: "
                                        "the attention softmax needs query and key of degree 0", "structure"))
        out = proj(dense[3], val)
        return [out, {}]

    def _unknown(self, op, node, ins, own, name):
        for v in own:
            if id(v) in self.index:
                self._constrain(_Constraint(self._m(v), {}, name, f"{v.path}: this analysis does not know how "
                                            f"{name!r} ({type(op).__name__}) scales with it", "structure"))
        if not any(ins):
            return [{}] * max(1, len(node.outputs))
        k = self._probe(op, node)
        if k == 1:
            return [self._equal(ins, name)] * max(1, len(node.outputs))
        if k == 0:
            return [{}] * max(1, len(node.outputs))
        return self._breaks(ins, name, f"{type(op).__name__} (unknown to this analysis, and a numeric check at "
                                       "c = 2^±3, 2^±10 found f(cx) ≠ c·f(x))")

    def _probe(self, op, node):
        key = (id(op), id(node))
        if key not in self._probe_cache:
            self._probe_cache[key] = _probe_degree(op, node)
        return self._probe_cache[key]

    # -- queries
    def violated(self, m, kinds=("structure", "loss", "output")):
        return [c for c in self.constraints if c.kind in kinds and _eval(c.row(), m) != 0]


def _probe_degree(op, node):
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
            if all(_rel(base, [o / c ** k for o in run(c)]) <= tol for c in SCALES):
                return k
    except Exception:  # noqa: BLE001 - anything that cannot be probed is not homogeneous
        return None
    return None


_FN_CACHE = {}


def _fn_homogeneous(fn):
    """Whether an elementwise activation satisfies f(cz) = c·f(z) for c > 0 (numeric over 12 decades)."""
    if fn is None or fn in (keras.activations.relu, keras.activations.linear, keras.activations.leaky_relu):
        return True
    key = id(fn)
    if key not in _FN_CACHE:
        z = np.concatenate([-np.logspace(-6, 6, 97), [0.0], np.logspace(-6, 6, 97)])
        try:
            base = np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(z, "float32"))), np.float64)
            tol = np.sqrt(np.finfo(np.float32).eps)
            ok = all(_rel([base], [np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(z * c, "float32"))),
                                              np.float64) / c]) <= tol for c in SCALES)
        except Exception:  # noqa: BLE001
            ok = False
        _FN_CACHE[key] = (fn, ok)
    return _FN_CACHE[key][1]


def _fname(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def _is_nonzero_constant(a):
    if a is None or isinstance(a, (bool, str)) or isinstance(a, keras.KerasTensor):
        return False
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.any(arr != 0))


def _excluded(v):
    if getattr(v, "regularizer", None) is not None:
        return ("it has a regularizer, so the loss training minimizes (data loss + model.losses) "
                "changes with its scale")
    con = getattr(v, "constraint", None)
    if con is not None and not isinstance(con, keras.constraints.NonNeg):
        return (f"it has a constraint ({type(con).__name__}) that training applies after each step and "
                "that does not commute with scaling")
    return None


def _name(op):
    return getattr(op, "name", type(op).__name__)


def _all_layers(model):
    try:
        return list(model._flatten_layers(include_self=False, recursive=True))
    except AttributeError:
        return list(model.layers)


def _flat_outputs(model):
    return list(keras.tree.flatten(model.outputs))


def _check_model(model):
    if not isinstance(model, keras.Model) or getattr(model, "outputs", None) is None:
        raise ValueError(
            "`model` must be a functional or Sequential Keras model (its graph is "
            f"needed); received {type(model).__name__}"
        )


# ------------------------------------------------------------------ the solver
def _solve(analysis, node_budget=200000):
    """The largest m ∈ {0,1}^n with every constraint row = 0 (branch and bound per component)."""
    n = len(analysis.cand)
    rows = [c.row() for c in analysis.constraints]
    rows = [r for r in rows if r]
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r in rows:
        ks = list(r)
        for k in ks[1:]:
            parent[find(k)] = find(ks[0])
    comps = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    by_var = {}
    for ri, r in enumerate(rows):
        for k in r:
            by_var.setdefault(k, []).append(ri)
    chosen, exhaustive = [], True
    for comp in comps.values():
        comp_rows = sorted({ri for k in comp for ri in by_var.get(k, [])})
        if not comp_rows:
            chosen.append(comp)
            continue
        sol, done = _branch_and_bound(comp, [rows[ri] for ri in comp_rows], node_budget)
        exhaustive &= done
        chosen.append([k for k in comp if sol.get(k)])
    return chosen, exhaustive


def _branch_and_bound(comp, rows, budget):
    by_var = {}
    for ri, r in enumerate(rows):
        for k in r:
            by_var.setdefault(k, []).append(ri)
    best = [{k: 0 for k in comp}, 0]
    count = [0]

    def propagate(assign, queue):
        queue = list(queue)
        while queue:
            ri = queue.pop()
            r = rows[ri]
            lo = hi = 0
            free = []
            for k, a in r.items():
                if k in assign:
                    lo += a * assign[k]
                    hi += a * assign[k]
                else:
                    free.append((k, a))
                    if a > 0:
                        hi += a
                    else:
                        lo += a
            if lo > 0 or hi < 0:
                return False
            for k, a in free:
                # Setting m_k to 1 moves [lo, hi] up by a (a > 0) or down by |a|; to 0 the other way.
                if a > 0:
                    val = 0 if lo + a > 0 else (1 if hi - a < 0 else None)
                else:
                    val = 0 if hi + a < 0 else (1 if lo - a > 0 else None)
                if val is not None:
                    assign[k] = val
                    queue.extend(by_var[k])
        return True

    def rec(assign):
        count[0] += 1
        if count[0] > budget:
            return
        ones = sum(assign.values())
        free = [k for k in comp if k not in assign]
        if ones + len(free) <= best[1]:
            return
        if not free:
            best[0], best[1] = dict(assign), ones
            return
        k = free[0]
        for val in (1, 0):
            a2 = dict(assign)
            a2[k] = val
            if propagate(a2, list(by_var[k])):
                rec(a2)

    start = {}
    if propagate(start, list(range(len(rows)))):
        rec(start)
    return best[0], count[0] <= budget


# ------------------------------------------------------------------ numerics
def _unit_roundoff(dtype):
    return 2.0 ** -7 if dtype == "bfloat16" else float(np.finfo(np.dtype(dtype)).eps)


def _compute_dtype(model):
    """The least precise floating compute dtype among the model's layers."""
    dts = {str(getattr(layer, "compute_dtype", "") or "") for layer in _all_layers(model)}
    dts = {d for d in dts if "float" in d} or {keras.config.floatx()}
    return max(sorted(dts), key=_unit_roundoff)


def tolerance(model):
    """τ = √u of the least precise compute dtype of `model` (module docstring)."""
    return float(np.sqrt(_unit_roundoff(_compute_dtype(model))))


def _scales(model):
    return SCALES_HALF if _compute_dtype(model) in ("float16",) else SCALES


class _tiny_epsilon:
    """Temporarily sets every normalization layer's ε to the smallest normal
    number of float32 (float64 for float64 layers); restored on exit."""

    def __init__(self, model):
        self.layers = [layer for layer in _all_layers(model)
                       if isinstance(layer, NORMALIZATION) and hasattr(layer, "epsilon")]

    def __enter__(self):
        self.saved = [layer.epsilon for layer in self.layers]
        for layer in self.layers:
            dt = np.float64 if str(getattr(layer, "compute_dtype", "")) == "float64" else np.float32
            layer.epsilon = float(np.finfo(dt).tiny)

    def __exit__(self, *exc):
        for layer, eps in zip(self.layers, self.saved):
            layer.epsilon = eps


def _base_values(model):
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


def _forward(model, x, tv):
    ntv = [v.value for v in model.non_trainable_variables]
    out, _, losses = model.stateless_call(tv, ntv, x, training=True, return_losses=True)
    outs = [np.asarray(ops.convert_to_numpy(o), dtype=np.float64) for o in keras.tree.flatten(out)]
    loss = float(sum(float(np.sum(ops.convert_to_numpy(term))) for term in losses)) if losses else 0.0
    return outs, loss


def _rel(a, b):
    worst = 0.0
    for p, q in zip(a, b):
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            return float("inf")
        den = np.linalg.norm(p)
        num = np.linalg.norm(p - q)
        worst = max(worst, float(num / den) if den > 0 else float(num))
    return worst


def _change(model, x, base_tv, base, scale_of):
    tv = [val * scale_of[i] if i in scale_of else val for i, val in enumerate(base_tv)]
    outs, loss = _forward(model, x, tv)
    return max(_rel(base[0], outs), _rel([np.array(base[1])], [np.array(loss)]))


def _synthetic_batch(model, batch_size=4):
    """A random batch built from the model's input specs (floats N(0,1), integers in range)."""
    rng = np.random.default_rng(0)
    dims = {}
    for layer in _all_layers(model):
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
    struct = getattr(model, "_inputs_struct", None)
    if struct is not None:
        try:
            return keras.tree.pack_sequence_as(struct, arrays)
        except (TypeError, ValueError):
            pass
    return arrays[0] if len(arrays) == 1 else arrays


def _split_batch(sample_batch):
    if isinstance(sample_batch, tuple) and len(sample_batch) in (2, 3):
        return sample_batch[0], sample_batch[1]
    if isinstance(sample_batch, list) and len(sample_batch) == 2 and not _is_array_like(sample_batch):
        return sample_batch[0], sample_batch[1]
    return sample_batch, None


def _is_array_like(x):
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        return False
    return arr.dtype != object and arr.ndim >= 1


def _checked_x(model, x, name="sample_batch"):
    """Runs the model once on x, turning a bad batch into a ValueError naming `name`."""
    if x is None or isinstance(x, (str, bytes, int, float)):
        raise ValueError(f"`{name}` must be `x` or `(x, y)` with `x` an array (or structure of arrays) the model "
                         f"accepts. Received: {name} of type {type(x).__name__}")
    try:
        with _tiny_epsilon(model):
            return _forward(model, x, _base_values(model))
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"`{name}` must be `x` or `(x, y)` with `x` an array (or structure of arrays) the model "
            f"accepts. Received: {name} of type {type(x).__name__}: {e}"
        ) from e


def _joint_structure(model, group):
    """The analysis of `model` with every variable of `group` scaled jointly
    (multiplicity 1 each), and the bit mask of the structural constraints that
    scaling violates."""
    group = list(group)
    a = _Analysis(model, [v for v in model.trainable_variables if any(v is g for g in group)])
    m = {i: 1 for i in range(len(a.cand))}
    bad = 0
    for c in a.violated(m, kinds=("structure",)):
        bad |= c.bit
    return a, m, bad


# ------------------------------------------------------------------ public API
def output_degree(model, group):
    """The homogeneity degree of each model output in the variables `group`
    (scaled jointly), or None where the structure is not homogeneous.

    >>> import keras
    >>> from keras_explr import invariance
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.Dense(8, use_bias=False, name="a")(inp)
    >>> out = keras.layers.Dense(2, use_bias=False, name="b")(keras.layers.ReLU()(h))
    >>> m = keras.Model(inp, out)
    >>> invariance.output_degree(m, m.trainable_variables)
    [2]
    """
    _check_model(model)
    a, m, bad = _joint_structure(model, group)
    return [None if mask & bad else _eval(f, m) for f, mask in a.outputs]


def tensor_degree(tensor, group, model=None):
    """The homogeneity degree of one symbolic tensor of a functional model
    (None where not homogeneous). `model` defaults to the graph the tensor ends."""
    if model is None:
        model = keras.Model(_graph_inputs(tensor), tensor)
    a, m, bad = _joint_structure(model, group)
    f, mask = a._form(tensor)
    return None if mask & bad else _eval(f, m)


def _graph_inputs(tensor):
    seen, out, stack = set(), [], [tensor]
    while stack:
        t = stack.pop()
        hist = _keras_internals.history(t)
        if hist is None or id(t) in seen:
            continue
        seen.add(id(t))
        if isinstance(hist.operation, layers.InputLayer):
            out.append(t)
            continue
        stack.extend(_keras_internals.inbound_nodes(hist.operation)[hist.node_index].input_tensors)
    return out[0] if len(out) == 1 else out


def normalization_input_degrees(model, group):
    """{normalization layer: degree of its input in `group`} (None where not
    homogeneous, or where two calls of a shared layer disagree).

    `Renormalize` rescales a BatchNorm's moving mean by s^d and variance by
    s^(2d) with these d.

    >>> import keras
    >>> from keras_explr import invariance
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.Dense(8, name="a")(inp)
    >>> bn = keras.layers.BatchNormalization(name="bn")
    >>> m = keras.Model(inp, keras.layers.Dense(2)(bn(h)))
    >>> {layer.name: d for layer, d in invariance.normalization_input_degrees(
    ...     m, m.get_layer("a").trainable_variables).items()}
    {'bn': 1}
    """
    _check_model(model)
    a, m, bad = _joint_structure(model, group)
    out = {}
    for layer in _all_layers(model):
        if not isinstance(layer, NORMALIZATION):
            continue
        degs = set()
        for node in _keras_internals.inbound_nodes(layer):
            if not node.input_tensors:
                continue
            f, mask = a.forms.get(id(node.input_tensors[0]), ({}, 0))
            degs.add(None if mask & bad else _eval(f, m))
        if degs:
            out[layer] = degs.pop() if len(degs) == 1 else None
    return out


def default_candidates(model):
    """The variables `invariant_group` may put in the group: the kernels and
    biases of linear layers (and Embedding tables). Normalization γ/β stay out
    by default (they keep their own LR and weight decay, docs/math.md#non-invariant-parameters)."""
    out = []
    owner = {}
    for layer in _all_layers(model):
        for v in getattr(layer, "_trainable_variables", []):
            owner.setdefault(id(v), layer)
    for v in model.trainable_variables:
        layer = owner.get(id(v))
        if isinstance(layer, LINEAR + (layers.EinsumDense,)) and v.name in _MULT_NAMES | {"bias"}:
            out.append(v)
    return out


def invariant_group(model, sample_batch=None, candidates=None):
    """The largest group of trainable variables the loss is *jointly* scale-invariant in, confirmed.

    The structural pass (module docstring) writes every degree as a linear form
    in the memberships; the group is the largest membership vector that makes
    every model output degree 0 and satisfies every bias, merge, attention and
    loss equation, found exactly by branch and bound on each connected set of
    equations (within 200,000 nodes per set; real architectures need a few).
    In a pre-activation ResNet that is every conv kernel and bias: the residual
    stream is homogeneous of degree 1 in them and the final normalization
    removes it; in a ConvNeXt stage the stream scales with the downsampling
    conv, the second pointwise convs and the depthwise convs' *biases*.

    The group is then confirmed numerically (`confirm_group`) on `sample_batch`
    (default: a random batch of 4 built from the model's input specs); if a
    part fails, it is dropped (the union of disjoint invariant parts is
    invariant), so the answer is never wrong in the unsafe direction.

    Args:
      model: a functional or Sequential Keras model.
      sample_batch: ``x`` or ``(x, y)`` for the numeric confirmation.
      candidates: the variables the group may contain (default
        `default_candidates(model)`: kernels and biases; pass normalization
        γ/β too to let them in, scaled as pairs).

    Returns:
      The list of variables, in `model.trainable_variables` order.

    >>> import keras
    >>> from keras_explr import invariance
    >>> inp = keras.Input((8, 8, 1))
    >>> h = keras.layers.Conv2D(4, 3, name="stem")(inp)
    >>> r = keras.layers.Conv2D(4, 3, padding="same", name="branch")(
    ...     keras.layers.ReLU()(keras.layers.BatchNormalization()(h)))
    >>> h = keras.layers.Add()([h, r])            # no single conv is invariant, the two jointly are
    >>> h = keras.layers.GlobalAveragePooling2D()(keras.layers.LayerNormalization()(h))
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="head")(h))
    >>> [v.path for v in invariance.invariant_group(m)]
    ['stem/kernel', 'stem/bias', 'branch/kernel', 'branch/bias']
    """
    _check_model(model)
    cands = default_candidates(model) if candidates is None else [
        v for v in model.trainable_variables if any(v is c for c in candidates)]
    a = _Analysis(model, cands)
    parts, _ = _solve(a)
    parts = [[a.cand[i] for i in p] for p in parts if p]
    group = [v for p in parts for v in p]
    if not group:
        return []
    x, _ = _split_batch(_synthetic_batch(model) if sample_batch is None else sample_batch)
    ok, _ = _numeric_ok(model, x, group)
    if not ok:
        keep = []
        for p in parts:
            if _numeric_ok(model, x, p)[0]:
                keep.extend(p)
        group = keep
    ids = {id(v) for v in group}
    return [v for v in model.trainable_variables if id(v) in ids]


def _numeric_ok(model, x, group, rtol=None, scales=None):
    ids = {id(v) for v in group}
    idx = [i for i, v in enumerate(model.trainable_variables) if id(v) in ids]
    tol = tolerance(model) if rtol is None else rtol
    scales = _scales(model) if scales is None else scales
    with _tiny_epsilon(model):
        base_tv = _base_values(model)
        base = _forward(model, x, base_tv)
        change = max(_change(model, x, base_tv, base, {i: c for i in idx}) for c in scales)
    return change <= tol, change


def confirm_group(model, variables, sample_batch=None, rtol=None):
    """Checks that the loss training minimizes is jointly scale-invariant in `variables`.

    Structure first (module docstring: every equation holds with the group's
    memberships, no regularizer or constraint on a member), then numerics: the
    group scaled by c = 2^±3, 2^±10 moves the training-mode outputs and
    ``sum(model.losses)`` by at most `rtol` (default τ = √u of the compute
    dtype), with ε taken out and zero-valued variables set to small random
    values. `Renormalize` and `Partitioned` call it on their group.

    Args:
      model: a functional or Sequential Keras model.
      variables: the group (variables of `model`, or their paths).
      sample_batch: ``x`` or ``(x, y)``; default: a random batch of 4 built
        from the model's input specs.
      rtol: the tolerance (default τ).

    Returns:
      A `Confirmation` with the measured change.

    Raises:
      ValueError: naming the offending variables and why, when the loss is not
        jointly invariant in `variables`.

    >>> import keras
    >>> from keras_explr import invariance
    >>> inp = keras.Input((8,))
    >>> h = keras.layers.Dense(8, use_bias=False, name="d")(inp)
    >>> h = keras.layers.ReLU(threshold=0.5)(h)          # thresholds are not homogeneous
    >>> m = keras.Model(inp, keras.layers.Dense(2)(keras.layers.BatchNormalization()(h)))
    >>> invariance.confirm_group(m, [m.get_layer("d").kernel])
    Traceback (most recent call last):
      ...
    ValueError: the loss is not jointly scale-invariant in `variables` ...
    """
    _check_model(model)
    tv = list(model.trainable_variables)
    try:
        items = list(variables)
    except TypeError:
        items = []
    if not items:
        raise ValueError("`variables` must be a non-empty list of trainable variables of `model` (or their "
                         f"paths). Received: variables={variables!r}")
    by_path = {v.path: v for v in tv}
    group, unknown = [], []
    for item in items:
        if isinstance(item, str):
            v = by_path.get(item)
        else:
            v = next((w for w in tv if w is item), None)
        if v is None:
            unknown.append(item if isinstance(item, str) else getattr(item, "path", repr(item)))
        elif not any(v is g for g in group):
            group.append(v)
    if unknown:
        raise ValueError(f"`variables` must be trainable variables of `model`; not among them: {unknown}. "
                         f"Trainable variables: {sorted(by_path)}")
    if rtol is not None:
        from keras_explr import theory

        theory.check_positive("rtol", rtol)
    a = _Analysis(model, group)
    m = {i: 1 for i in range(len(a.cand))}
    bad = a.violated(m)
    if bad:
        lines = []
        for c in bad[:20]:
            names = sorted(a.cand[k].path for k in c.row())
            lhs, rhs = _eval(c.lhs, m), _eval(c.rhs, m)
            lines.append(f"  {names}: {c.what.replace('{lhs}', str(lhs)).replace('{rhs}', str(rhs))}")
        more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError("the loss is not jointly scale-invariant in `variables` (structure):\n"
                         + "\n".join(lines) + more)
    x, _ = _split_batch(_synthetic_batch(model) if sample_batch is None else sample_batch)
    _checked_x(model, x)
    tol = tolerance(model) if rtol is None else float(rtol)
    scales = _scales(model)
    ok, change = _numeric_ok(model, x, group, rtol=tol, scales=scales)
    if not ok:
        raise ValueError(
            "the loss is not jointly scale-invariant in `variables` (numeric check): scaling them by "
            f"c = {', '.join(f'2^{int(np.log2(c))}' for c in scales)} changes the training-mode outputs or "
            f"model.losses by {change:.3g} (relative) > tolerance {tol:.3g}. Variables: "
            f"{[v.path for v in group]}")
    return Confirmation([v for v in group], tuple(scales), change, tol)


def scale_invariant_variables(model, sample_batch, report=False, rtol=None, num_checks=None):
    """The trainable variables in which `model`'s loss is scale-invariant, each one alone.

    Structure (module docstring) with each variable's membership alone, then a
    numeric confirmation on `sample_batch` (``x`` or ``(x, y)``): every
    structurally invariant variable is scaled by its own factor from
    `num_checks` in a few joint passes (each variable meets each factor once;
    a loss invariant in each variable is invariant under any such combination),
    and any pass that moves the outputs or ``model.losses`` by more than `rtol`
    is bisected down to the variables responsible. |cos(∇L, w)| (Lemma 1) and
    the change with the real ε at factors ½ and 2 are reported, not decided on.

    Args:
      model: a functional or Sequential Keras model.
      sample_batch: ``x`` or ``(x, y)``.
      report: also return a list of `Decision`s, one per trainable variable.
      rtol: tolerance; default τ = √u of the compute dtype (module docstring).
      num_checks: the scale factors (default 2^-10, 2^-3, 2^3, 2^10; exact
        powers of two keep every rounding the same).

    Returns:
      The list of variables, or ``(variables, decisions)``.

    >>> import keras, numpy as np
    >>> from keras_explr import invariance
    >>> inp = keras.Input((8,))
    >>> h = keras.layers.Dense(8, use_bias=False, name="d")(inp)
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.BatchNormalization()(h)))
    >>> [v.path for v in invariance.scale_invariant_variables(m, np.ones((4, 8)))]
    ['d/kernel']
    """
    _check_model(model)
    from keras_explr import theory

    if rtol is not None:
        theory.check_positive("rtol", rtol)
    if num_checks is None:
        factors = list(_scales(model))
    else:
        try:
            factors = [theory.check_positive("num_checks[]", c) for c in num_checks]
        except TypeError:
            factors = []
        if not factors:
            raise ValueError("`num_checks` must be a non-empty sequence of scale factors > 0. "
                             f"Received: num_checks={num_checks!r}")
    x, y = _split_batch(sample_batch)
    _checked_x(model, x)
    tol = tolerance(model) if rtol is None else float(rtol)
    tv = list(model.trainable_variables)
    a = _Analysis(model, tv)
    decisions = {}
    passing = []
    for i, v in enumerate(tv):
        bad = a.violated({i: 1})
        if bad:
            c = sorted(bad, key=lambda c: ("loss", "structure", "output").index(c.kind))[0]
            lhs, rhs = _eval(c.lhs, {i: 1}), _eval(c.rhs, {i: 1})
            decisions[i] = Decision(v, False, c.what.replace("{lhs}", str(lhs)).replace("{rhs}", str(rhs)))
        elif not reaches_normalization(model, v):
            decisions[i] = Decision(v, False, "it does not reach a normalization layer")
        else:
            passing.append(i)
    if passing:
        with _tiny_epsilon(model):
            base_tv = _base_values(model)
            base = _forward(model, x, base_tv)
            changes = {i: 0.0 for i in passing}
            failed = set()
            for j in range(len(factors)):
                assign = {i: factors[(n + j) % len(factors)] for n, i in enumerate(passing)}
                _bisect(model, x, base_tv, base, assign, sorted(assign), tol, changes, failed)
            grads = _gradients(model, x, y)
        base_eps = _forward(model, x, base_tv)
        eps_change = max(_change(model, x, base_tv, base_eps,
                                 {i: (0.5, 2.0)[(n + j) % 2] for n, i in enumerate(passing)}) for j in range(2))
        for i in passing:
            v = tv[i]
            w = np.asarray(ops.convert_to_numpy(v), dtype=np.float64).ravel()
            gv = np.asarray(grads[i], dtype=np.float64).ravel()
            cos = float(abs(gv @ w) / max(np.linalg.norm(gv) * np.linalg.norm(w), 1e-300))
            ok = i not in failed
            reason = ("it feeds a normalization layer through homogeneous operations" if ok else
                      f"the structure says invariant but scaling it changes the outputs by "
                      f"{changes[i]:.2g} > {tol:.2g}")
            decisions[i] = Decision(v, ok, reason, changes[i], eps_change, cos)
    decisions = [decisions[i] for i in range(len(tv))]
    found = [d.variable for d in decisions if d.invariant]
    return (found, decisions) if report else found


def _bisect(model, x, base_tv, base, assign, idx, tol, changes, failed):
    ch = _change(model, x, base_tv, base, {i: assign[i] for i in idx})
    if ch <= tol:
        for i in idx:
            changes[i] = max(changes[i], ch)
        return
    if len(idx) == 1:
        changes[idx[0]] = max(changes[idx[0]], ch)
        failed.add(idx[0])
        return
    half = len(idx) // 2
    _bisect(model, x, base_tv, base, assign, idx[:half], tol, changes, failed)
    _bisect(model, x, base_tv, base, assign, idx[half:], tol, changes, failed)


def explain(decisions):
    """A printable report of `scale_invariant_variables(..., report=True)`."""
    return "\n".join(str(d) for d in decisions)


def reaches_normalization(model, v):
    """Whether v's layer output reaches a normalization layer (else it's dead or pure head)."""
    layer = _owner(model, v)
    return layer is not None and _reaches_norm(layer, set())


def _owner(model, v):
    """The outermost layer of `model` whose weights hold `v`, or None."""
    return next((op for op in (getattr(model, "operations", None) or model.layers)
                 if any(w is v for w in op.weights)), None)


def _reaches_norm(layer, seen):
    if id(layer) in seen:
        return False
    seen.add(id(layer))
    if isinstance(layer, keras.Model):
        if any(isinstance(sub, NORMALIZATION) for sub in _all_layers(layer)):
            return True
    for node in _keras_internals.outbound_nodes(layer):
        op = node.operation
        if isinstance(op, NORMALIZATION) or _reaches_norm(op, seen):
            return True
    return False


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

from keras_explr._prenorm import epsilon_margin  # noqa: E402,F401  (the ε trap: keras_explr._prenorm)
