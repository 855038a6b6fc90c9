"""What each layer does to degrees: the rule registry.

A tensor's *degree* is an integer linear form in the memberships m_v ∈ {0, 1}
of the candidate variables: scaling the group by c scales the tensor by c^d,
d = Σ a_v m_v (`Degree`). A rule maps one call of a layer to the degrees of its
outputs and may add equations (`LayerCall.require`), which the solver then
satisfies. The built-in rules (linear layers, normalizations, homogeneous
layers, merges, attention, activations; module tables below) and the user's
(`register_rule`) live in one registry, looked up along the layer class's
MRO: the most specific registered class wins, and at equal specificity the
user's rule overrides the built-in one. A layer no rule describes (or whose
rule returns None) gets the default treatment: its own variables stay out of
the group and a numeric check at c = 2^±3, 2^±10 decides whether it passes the
degree on, removes it, or must see degree 0.

>>> import keras
>>> from keras_explr import invariance
>>> class Doubler(keras.layers.Layer):
...     def call(self, x):
...         return 2.0 * x
>>> invariance.register_rule(Doubler, lambda call: call.inputs[0])  # f(cx) = c·f(x)
>>> invariance.register_rule(Doubler, None)                          # back to the default treatment
"""

import inspect

import keras
import numpy as np
from keras import layers

from keras_explr import _keras_internals
from keras_explr.invariance import numeric

# ------------------------------------------------------------------ layer classes
NORMALIZATION = tuple(c for c in (layers.BatchNormalization, layers.LayerNormalization,
                                  layers.GroupNormalization, getattr(layers, "UnitNormalization", None),
                                  getattr(layers, "RMSNormalization", None)) if c is not None)
LINEAR = tuple(c for c in (layers.Dense, layers.EinsumDense, layers.Conv1D, layers.Conv2D, layers.Conv3D,
                           layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose,
                           getattr(layers, "DepthwiseConv1D", None), layers.DepthwiseConv2D,
                           layers.SeparableConv1D, layers.SeparableConv2D, layers.Embedding) if c is not None)
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

RULE_NAMES = ("normalizing", "homogeneous", "opaque")


# ------------------------------------------------------------------ degrees
def add(*forms):
    out = {}
    for f in forms:
        for k, a in f.items():
            out[k] = out.get(k, 0) + a
    return {k: a for k, a in out.items() if a}


def sub(f, g):
    return add(f, {k: -a for k, a in g.items()})


def evaluate(form, m):
    return sum(a * m.get(k, 0) for k, a in form.items())


class Degree:
    """The degree of a tensor: an integer linear form in the group memberships.

    Degrees add (``a + b``: a product of tensors), subtract (a quotient),
    negate and multiply by integers; ``Degree()`` is 0 (a tensor that does not
    scale). ``form`` maps a candidate's index to its coefficient.

    >>> from keras_explr.invariance import Degree
    >>> kernel, bias = Degree({0: 1}), Degree({1: 1})
    >>> (2 * kernel - bias).form, bool(kernel - kernel)
    ({0: 2, 1: -1}, False)
    """

    __slots__ = ("form",)

    def __init__(self, form=None):
        self.form = dict(form or {})

    def __add__(self, other):
        return Degree(add(self.form, _form(other)))

    __radd__ = __add__

    def __sub__(self, other):
        return Degree(sub(self.form, _form(other)))

    def __rsub__(self, other):
        return Degree(sub(_form(other), self.form))

    def __neg__(self):
        return Degree({k: -a for k, a in self.form.items()})

    def __mul__(self, n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            return NotImplemented
        return Degree({k: a * int(n) for k, a in self.form.items() if a * int(n)})

    __rmul__ = __mul__

    def __bool__(self):
        return bool(self.form)

    def __repr__(self):
        return f"Degree({self.form})"


def _form(d):
    if isinstance(d, Degree):
        return d.form
    if isinstance(d, int) and not isinstance(d, bool) and d == 0:
        return {}
    raise TypeError(f"a degree must be a Degree (or 0). Received: {d!r}")


class Constraint:
    """One equation lhs = rhs between degrees, with the layer and the reason."""

    def __init__(self, lhs, rhs, layer, what, kind):
        self.lhs, self.rhs, self.layer, self.what, self.kind = lhs, rhs, layer, what, kind
        self.bit = 0  # kind: "structure" | "loss" | "output"

    def row(self):
        return sub(self.lhs, self.rhs)


class LayerCall:
    """One call of a layer in the graph, as a rule sees it.

    Attributes:
      layer (keras.layers.Layer | keras.Operation): the layer (or ``keras.ops`` operation) called.
      node (keras.src.ops.node.Node): the Keras node of the call (``node.arguments`` holds its arguments).
      inputs (list[Degree]): the `Degree` of each input tensor, in ``node.input_tensors`` order.
      variables (list[keras.Variable]): the trainable variables the layer owns directly.

    A rule for x ↦ x², whose output scales as c² when its input scales as c:

    >>> import keras
    >>> from keras_explr import invariance
    >>> class Square(keras.layers.Layer):
    ...     def call(self, x):
    ...         return x * x
    >>> invariance.register_rule(Square, lambda call: 2 * call.inputs[0])
    >>> inp = keras.Input((4,))
    >>> m = keras.Model(inp, Square()(keras.layers.Dense(4, use_bias=False, name="d")(inp)))
    >>> invariance.output_degree(m, [m.get_layer("d").kernel])
    [2]
    >>> invariance.register_rule(Square, None)
    """

    def __init__(self, analysis, op, node, ins, own, name, degree_of):
        self.analysis, self.layer, self.node, self.ins, self.own, self.name = analysis, op, node, ins, own, name
        self._degree_of = degree_of

    @property
    def inputs(self):
        return [Degree(f) for f in self.ins]

    @property
    def variables(self):
        return list(self.own)

    def variable(self, v):
        """The membership m_v as a `Degree` (0 for None or a variable outside the candidates)."""
        return Degree(self.analysis.m(v))

    def degree_of(self, tensor):
        """The `Degree` of a symbolic input tensor of this call."""
        return Degree(self._degree_of(tensor))

    def require(self, degree, equals=0, why="a rule's equation"):
        """Adds the equation ``degree = equals``: the group must satisfy it."""
        self.constrain(_form(degree), _form(equals),
                       f"{self.name!r}: {why} (the two sides scale as c^{{lhs}} and c^{{rhs}})")

    # -- the built-in rules' shorthand (forms as dicts)
    def constrain(self, lhs, rhs, what, kind="structure"):
        return self.analysis.constrain(Constraint(lhs, rhs, self.name, what, kind))

    def m(self, v):
        return self.analysis.m(v)

    def equal(self, ins=None):
        ins = self.ins if ins is None else ins
        for f in ins[1:]:
            self.constrain(f, ins[0], f"{self.name!r} combines inputs that scale as c^{{lhs}} and c^{{rhs}}")
        return ins[0] if ins else {}

    def breaks(self, what):
        for f in self.ins:
            self.constrain(f, {}, f"{self.name!r}: {what} is not homogeneous of degree 1, so its input must "
                                  "not scale (it scales as c^{lhs})")
        return [{}]

    def keep_out(self, variables, why):
        for v in variables:
            if self.m(v):
                self.constrain(self.m(v), {}, f"{v.path}: {why}")

    @property
    def n_out(self):
        return max(1, len(self.node.outputs))


# ------------------------------------------------------------------ the registry
_BUILTIN = {}
_USER = {}


def register_rule(layer_class, rule):
    """Tells the invariance analysis what a layer class does to the scale of its input.

    Overrides the default treatment of `layer_class` and its subclasses (for a
    layer no rule knows: a numeric check of the layer alone, its own variables
    kept out of the group), and any built-in rule of a less specific class.

    Args:
      layer_class (type): a subclass of ``keras.layers.Layer`` (or of ``keras.Operation``).
      rule (str | Callable): one of

        * ``"normalizing"``: the output is unchanged by any positive scaling of
          the input (f(cx) = f(x)); its scale/shift variables named ``gamma``/
          ``scale`` and ``beta`` may join the group as a pair, like a
          BatchNormalization's, any other own variable stays out. Its
          ``epsilon`` (if a float attribute) is taken out during the numeric
          confirmation, like a built-in normalization's.
        * ``"homogeneous"``: the output scales with the input (f(cx) = c·f(x);
          several inputs must scale alike); its own variables stay out.
        * ``"opaque"``: the input must not scale (degree 0), the output does
          not scale, and its own variables stay out.
        * a callable ``rule(call) -> degree`` for anything else: it receives a
          `LayerCall` (``call.layer``, ``call.inputs`` as `Degree`s,
          ``call.variable(v)``, ``call.require(a, equals=b, why=...)``) and
          returns the output's `Degree` (or a list, one per output), one of
          the names above to delegate, or None for the default treatment.
        * None: removes the class's registration.

    Whatever the rule says, `invariant_group` and `confirm_group` still
    confirm the group numerically, so a wrong rule can shrink the group but
    never make it wrong in the unsafe direction.

    >>> import keras
    >>> from keras_explr import invariance
    >>> class MyRMSNorm(keras.layers.Layer):
    ...     def __init__(self, **kw):
    ...         super().__init__(**kw)
    ...         self.epsilon = 1e-6
    ...     def call(self, x):
    ...         return x * keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
    >>> inp = keras.Input((8,))
    >>> h = keras.layers.Dense(8, use_bias=False, name="d")(inp)
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="head")(MyRMSNorm()(h)))
    >>> invariance.register_rule(MyRMSNorm, "opaque")
    >>> invariance.invariant_group(m)
    []
    >>> invariance.register_rule(MyRMSNorm, "normalizing")
    >>> [v.path for v in invariance.invariant_group(m)]
    ['d/kernel']
    >>> invariance.register_rule(MyRMSNorm, None)
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.Operation)):
        raise ValueError("`layer_class` must be a subclass of keras.layers.Layer (or keras.Operation). "
                         f"Received: layer_class={layer_class!r}")
    if rule is None:
        _USER.pop(layer_class, None)
        return
    if not (callable(rule) or rule in RULE_NAMES):
        raise ValueError(f"`rule` must be one of {RULE_NAMES}, a callable rule(call) -> degree, or None. "
                         f"Received: rule={rule!r}")
    _USER[layer_class] = rule


def rule_for(op):
    """The rule for a layer (the user's or the built-in one of the most specific class), or None."""
    for cls in type(op).__mro__:
        if cls in _USER:
            return _USER[cls]
        if cls in _BUILTIN:
            return _BUILTIN[cls]
    return None


def is_normalizing(op):
    """Whether `op`'s rule says it removes its input's scale (a built-in normalization or a
    layer registered ``"normalizing"``)."""
    return rule_for(op) in ("normalizing", _normalization)


def apply(call):
    """The output forms of one call (a list, one per output), or None for the default treatment."""
    rule = rule_for(call.layer)
    if rule is None:
        return _op_rule(call) if not isinstance(call.layer, layers.Layer) else None
    return _run(rule, call)


def _run(rule, call):
    if isinstance(rule, str):
        return _BUILTIN_BY_NAME[rule](call)
    if any(rule is f for f in _BUILTIN_FNS):
        return rule(call)
    out = rule(call)
    if out is None:
        return None
    if isinstance(out, str):
        if out not in RULE_NAMES:
            raise ValueError(f"the rule for {type(call.layer).__name__} returned {out!r}; a rule returns a "
                             f"Degree, a list of Degrees, None or one of {RULE_NAMES}")
        return _BUILTIN_BY_NAME[out](call)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [_form(d) for d in outs]


_BUILTIN_FNS = set()  # the built-in rules (they return forms, not Degrees)


def _builtin(*classes):
    def deco(fn):
        _BUILTIN_FNS.add(fn)
        for cls in classes:
            _BUILTIN[cls] = fn
        return fn
    return deco


# ------------------------------------------------------------------ the rules a name stands for
def _normalization(call, strict=True):
    """Any input degree → m_γ (β must scale with γ); other own variables: unknown (strict) or kept out."""
    own = call.own
    names = {v.name for v in own}
    if strict and names - _SCALE_NAMES - _SHIFT_NAMES:
        return None
    g = next((v for v in own if v.name in _SCALE_NAMES), None)
    b = next((v for v in own if v.name in _SHIFT_NAMES), None)
    call.keep_out([v for v in own if v is not g and v is not b],
                  f"{call.name!r} is registered as normalizing; its own variables other than a scale and a "
                  "shift stay out")
    out = call.m(g) if g is not None else {}
    if b is not None:
        call.constrain(call.m(b), out, f"the affine parameters of {call.name!r}: γ·x̂ + β needs β scaled with γ "
                                       "(an affine parameter scaled alone is not a rescaling)")
    return [out]


def _homogeneous(call):
    call.keep_out(call.own, f"{call.name!r} is registered as homogeneous; its own variables stay out")
    return [call.equal()] * call.n_out


def _opaque(call):
    call.keep_out(call.own, f"{call.name!r} is registered as opaque; its own variables stay out")
    call.breaks(f"{type(call.layer).__name__} (registered as opaque)")
    return [{}] * call.n_out


_BUILTIN_FNS.add(_normalization)
_BUILTIN_BY_NAME = {"normalizing": lambda call: _normalization(call, strict=False),
                    "homogeneous": _homogeneous, "opaque": _opaque}
for _cls in NORMALIZATION:
    _BUILTIN[_cls] = _normalization


# ------------------------------------------------------------------ built-in rules
@_builtin(*LINEAR)
def _linear(call):
    own, name = call.own, call.name
    if {v.name for v in own} - _MULT_NAMES - {"bias"}:
        return None
    f0 = call.ins[0] if call.ins else {}
    if isinstance(call.layer, layers.Embedding):
        call.constrain(f0, {}, f"{name!r} takes indices: its input must not scale")
        f0 = {}
    out = add(f0, *[call.m(v) for v in own if v.name in _MULT_NAMES])
    bias = next((v for v in own if v.name == "bias"), None)
    if bias is not None:
        call.constrain(call.m(bias), out, f"the bias of {name!r} is scaled as c^{{lhs}} but is added to an "
                                          "output that scales as c^{rhs} (scale kernel and bias jointly, or "
                                          "drop the bias before a normalization)")
    act = getattr(call.layer, "activation", None)
    if act is not None and not numeric.fn_homogeneous(act):
        call.constrain(out, {}, f"the activation {_fname(act)!r} of {name!r} is not homogeneous of degree 1 "
                                "(f(cz) ≠ c·f(z)), so its input must not scale (it scales as c^{lhs})")
        return [{}]
    return [out]


@_builtin(layers.MultiHeadAttention)
def _mha(call):
    op, node, name = call.layer, call.node, call.name
    if type(op) is not layers.MultiHeadAttention:
        return None
    try:
        bound = inspect.signature(op.call).bind(*node.arguments.args, **node.arguments.kwargs).arguments
    except TypeError:
        return None
    dense = _keras_internals.attention_projections(op)
    sub_ids = {id(v) for d in dense for v in d.trainable_variables}
    if any(id(v) not in sub_ids for v in op.trainable_variables):
        return None
    q, k, vv = bound.get("query"), bound.get("key"), bound.get("value")
    k = vv if k is None else k
    fq, fk, fv = (call.degree_of(t).form for t in (q, k, vv))

    def proj(d, f_in, cancelled=False):
        if {v.name for v in d.trainable_variables} - {"kernel", "bias"}:
            return None
        out = add(f_in, *[call.m(v) for v in d.trainable_variables if v.name == "kernel"])
        for v in d.trainable_variables:
            # The key bias adds q·b_k to every logit of a query: the softmax over keys cancels it.
            if v.name == "bias" and not cancelled:
                call.constrain(call.m(v), out, f"the bias of {d.name!r} in {name!r} is scaled as c^{{lhs}} but "
                                               "its projection scales as c^{rhs}")
        return out

    fq, fk = proj(dense[0], fq), proj(dense[1], fk, cancelled=True)
    val = proj(dense[2], fv)
    if None in (fq, fk, val):
        return None
    for f, which in ((fq, "query"), (fk, "key")):
        call.constrain(f, {}, f"the {which} projection of {name!r} scales as c^{{lhs}}: the attention softmax "
                              "needs query and key of degree 0")
    out = proj(dense[3], val)
    return [out, {}]


def _stateless(fn):
    """A rule for layers without variables: one with its own variables gets the default treatment."""
    def rule(call):
        return None if call.own else fn(call)
    _BUILTIN_FNS.add(rule)
    return rule


def _register_stateless(*classes):
    def deco(fn):
        wrapped = _stateless(fn)
        for cls in classes:
            _BUILTIN[cls] = wrapped
        return fn
    return deco


@_register_stateless(layers.ReLU)
def _relu(call):
    op = call.layer
    if op.max_value is None and float(op.threshold) == 0.0:
        return [call.ins[0] if call.ins else {}]
    return call.breaks(f"ReLU(max_value={op.max_value}, threshold={op.threshold}) clips or thresholds")


@_register_stateless(layers.Activation)
def _activation(call):
    if numeric.fn_homogeneous(call.layer.activation):
        return [call.ins[0] if call.ins else {}]
    return call.breaks(f"the activation {_fname(call.layer.activation)!r}")


@_register_stateless(layers.Rescaling)
def _rescaling(call):
    if np.all(np.asarray(call.layer.offset) == 0):
        return [call.ins[0] if call.ins else {}]
    return call.breaks("Rescaling with an offset")


@_register_stateless(layers.ActivityRegularization)
def _activity_regularization(call):
    f0 = call.ins[0] if call.ins else {}
    call.constrain(f0, {}, f"{call.name!r} adds an activity loss that would scale as c^{{lhs}}", "loss")
    return [f0]


@_register_stateless(layers.Dot)
def _dot(call):
    if call.layer.normalize:
        return [{}]
    return [add(*call.ins)]


@_register_stateless(*HOMOGENEOUS)
def _pass_through(call):
    return [call.ins[0] if call.ins else {}] * max(1, len(call.node.outputs))


@_register_stateless(*MERGE_EQUAL)
def _merge_equal(call):
    return [call.equal()]


@_register_stateless(layers.Multiply)
def _multiply(call):
    return [add(*call.ins)]


@_register_stateless(*NOT_HOMOGENEOUS)
def _not_homogeneous(call):
    return call.breaks(f"{type(call.layer).__name__}")


def _op_rule(call):
    """keras.ops operations (``x + y``, ``ops.mean(x)``) in a functional graph, by class name."""
    kind = type(call.layer).__name__
    node, ins = call.node, call.ins
    consts = [a for a in _keras_internals.flat_arguments(node) if _is_nonzero_constant(a)]
    if kind in _OPS_EQUAL:
        extra = [{}] if consts and kind in {"Add", "Subtract", "Maximum", "Minimum", "Concatenate", "Stack"} else []
        return [call.equal(ins + extra)] * max(1, len(node.outputs))
    if kind in _OPS_SUM:
        return [add(*ins)]
    if kind in {"Divide", "TrueDivide"} and len(ins) == 2:
        return [sub(ins[0], ins[1])]
    if kind in {"Divide", "TrueDivide"} and len(ins) == 1:
        arg0 = node.arguments.args[0] if node.arguments.args else None
        return [ins[0] if arg0 is node.input_tensors[0] else {k: -a for k, a in ins[0].items()}]
    return None


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
