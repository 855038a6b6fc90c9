"""The public API of `keras_explr.invariance`: every function is a query on one
structural walk (`graph.Analysis`), confirmed numerically (`numeric`)."""

import dataclasses

import keras
import numpy as np
from keras import layers, ops

from keras_explr import _checks, _keras_internals
from keras_explr.invariance import numeric, rules, solver
from keras_explr.invariance.graph import Analysis, check_model


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
        with numeric.tiny_epsilon(_normalizations(model)):
            return numeric.forward(model, x, numeric.base_values(model))
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
    a = Analysis(model, [v for v in model.trainable_variables if any(v is g for g in group)])
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
    check_model(model)
    a, m, bad = _joint_structure(model, group)
    return [None if mask & bad else rules.evaluate(f, m) for f, mask in a.outputs]


def tensor_degree(tensor, group, model=None):
    """The homogeneity degree of one symbolic tensor of a functional model
    (None where not homogeneous). `model` defaults to the graph the tensor ends."""
    if model is None:
        model = keras.Model(_graph_inputs(tensor), tensor)
    a, m, bad = _joint_structure(model, group)
    if id(tensor) not in a.forms:  # not a tensor of `model`'s graph: the graph it ends
        a, m, bad = _joint_structure(keras.Model(_graph_inputs(tensor), tensor), group)
    f, mask = a.forms[id(tensor)]
    return None if mask & bad else rules.evaluate(f, m)


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
    check_model(model)
    a, m, bad = _joint_structure(model, group)
    degrees = {}
    for layer, f, mask in a.norm_calls:
        degrees.setdefault(id(layer), set()).add(None if mask & bad else rules.evaluate(f, m))
    out = {}
    for layer in numeric.all_layers(model):
        degs = degrees.get(id(layer))
        if degs:
            out[layer] = degs.pop() if len(degs) == 1 else None
    return out


def default_candidates(model):
    """The variables `invariant_group` may put in the group: the kernels and
    biases of linear layers (and Embedding tables). Normalization γ/β stay out
    by default (they keep their own LR and weight decay, docs/math.md#non-invariant-parameters)."""
    out = []
    owner = {}
    for layer in numeric.all_layers(model):
        for v in _keras_internals.own_trainable_variables(layer):
            owner.setdefault(id(v), layer)
    for v in model.trainable_variables:
        layer = owner.get(id(v))
        if isinstance(layer, rules.LINEAR) and v.name in rules._MULT_NAMES | {"bias"}:
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
      model (keras.Model): a functional or Sequential Keras model.
      sample_batch (array-like | tuple | None): ``x`` or ``(x, y)`` for the numeric confirmation.
      candidates (Sequence[keras.Variable | str] | None): the variables the group may contain (default
        `default_candidates(model)`: kernels and biases; pass normalization
        γ/β too to let them in, scaled as pairs).

    Returns:
      (list[keras.Variable]): the variables, in `model.trainable_variables` order.

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
    check_model(model)
    cands = default_candidates(model) if candidates is None else [
        v for v in model.trainable_variables if any(v is c for c in candidates)]
    a = Analysis(model, cands)
    parts, _ = solver.solve(len(a.cand), [c.row() for c in a.constraints])
    parts = [[a.cand[i] for i in p] for p in parts if p]
    group = [v for p in parts for v in p]
    if not group:
        return []
    x, _ = _split_batch(numeric.synthetic_batch(model) if sample_batch is None else sample_batch)
    ok, _ = _numeric_ok(model, x, group)
    if not ok:
        keep = []
        for p in parts:
            if _numeric_ok(model, x, p)[0]:
                keep.extend(p)
        group = keep
    ids = {id(v) for v in group}
    return [v for v in model.trainable_variables if id(v) in ids]


def _normalizations(model):
    """The layers whose ε the numeric confirmation takes out: every normalizing layer (built-in or
    registered ``"normalizing"``)."""
    return [layer for layer in numeric.all_layers(model) if rules.is_normalizing(layer)]


def _numeric_ok(model, x, group, rtol=None, scales=None):
    return numeric.group_change(model, x, group, _normalizations(model), rtol, scales)


def confirm_group(model, variables, sample_batch=None, rtol=None):
    """Checks that the loss training minimizes is jointly scale-invariant in `variables`.

    Structure first (module docstring: every equation holds with the group's
    memberships, no regularizer or constraint on a member), then numerics: the
    group scaled by c = 2^±3, 2^±10 moves the training-mode outputs and
    ``sum(model.losses)`` by at most `rtol` (default τ = √u of the compute
    dtype), with ε taken out and zero-valued variables set to small random
    values. `Renormalize` and `Partitioned` call it on their group.

    Args:
      model (keras.Model): a functional or Sequential Keras model.
      variables (Sequence[keras.Variable | str]): the group (variables of `model`, or their paths).
      sample_batch (array-like | tuple | None): ``x`` or ``(x, y)``; default: a random batch of 4 built
        from the model's input specs.
      rtol (float | None): the tolerance (default τ).

    Returns:
      (Confirmation): the verdict, with the measured change.

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
    check_model(model)
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
        _checks.check_positive("rtol", rtol)
    a = Analysis(model, group)
    m = {i: 1 for i in range(len(a.cand))}
    bad = a.violated(m)
    if bad:
        lines = []
        for c in bad[:20]:
            names = sorted(a.cand[k].path for k in c.row())
            lhs, rhs = rules.evaluate(c.lhs, m), rules.evaluate(c.rhs, m)
            lines.append(f"  {names}: {c.what.replace('{lhs}', str(lhs)).replace('{rhs}', str(rhs))}")
        more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError("the loss is not jointly scale-invariant in `variables` (structure):\n"
                         + "\n".join(lines) + more)
    x, _ = _split_batch(numeric.synthetic_batch(model) if sample_batch is None else sample_batch)
    _checked_x(model, x)
    tol = numeric.tolerance(model) if rtol is None else float(rtol)
    scales = numeric.scales(model)
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
      model (keras.Model): a functional or Sequential Keras model.
      sample_batch (array-like | tuple): ``x`` or ``(x, y)``.
      report (bool): also return a list of `Decision`s, one per trainable variable.
      rtol (float | None): tolerance; default τ = √u of the compute dtype (module docstring).
      num_checks (Sequence[float]): the scale factors (default 2^-10, 2^-3, 2^3, 2^10; exact
        powers of two keep every rounding the same).

    Returns:
      (list[keras.Variable] | tuple[list[keras.Variable], list[Decision]]): the variables, or
        ``(variables, decisions)`` with ``report=True``.

    >>> import keras, numpy as np
    >>> from keras_explr import invariance
    >>> inp = keras.Input((8,))
    >>> h = keras.layers.Dense(8, use_bias=False, name="d")(inp)
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.BatchNormalization()(h)))
    >>> [v.path for v in invariance.scale_invariant_variables(m, np.ones((4, 8)))]
    ['d/kernel']
    """
    check_model(model)
    if rtol is not None:
        _checks.check_positive("rtol", rtol)
    if num_checks is None:
        factors = list(numeric.scales(model))
    else:
        try:
            factors = [_checks.check_positive("num_checks[]", c) for c in num_checks]
        except TypeError:
            factors = []
        if not factors:
            raise ValueError("`num_checks` must be a non-empty sequence of scale factors > 0. "
                             f"Received: num_checks={num_checks!r}")
    x, y = _split_batch(sample_batch)
    _checked_x(model, x)
    tol = numeric.tolerance(model) if rtol is None else float(rtol)
    tv = list(model.trainable_variables)
    a = Analysis(model, tv)  # the joint analysis; each variable's own group is the membership {i: 1}
    decisions = {}
    passing = []
    for i, v in enumerate(tv):
        bad = a.violated({i: 1})
        if bad:
            c = sorted(bad, key=lambda c: ("loss", "structure", "output").index(c.kind))[0]
            lhs, rhs = rules.evaluate(c.lhs, {i: 1}), rules.evaluate(c.rhs, {i: 1})
            decisions[i] = Decision(v, False, c.what.replace("{lhs}", str(lhs)).replace("{rhs}", str(rhs)))
        elif id(v) not in a.normalized:
            decisions[i] = Decision(v, False, "it does not reach a normalization layer")
        else:
            passing.append(i)
    if passing:
        with numeric.tiny_epsilon(_normalizations(model)):
            base_tv = numeric.base_values(model)
            base = numeric.forward(model, x, base_tv)
            changes = {i: 0.0 for i in passing}
            failed = set()
            for j in range(len(factors)):
                assign = {i: factors[(n + j) % len(factors)] for n, i in enumerate(passing)}
                numeric.bisect(model, x, base_tv, base, assign, sorted(assign), tol, changes, failed)
            grads = numeric.gradients(model, x, y)
        base_eps = numeric.forward(model, x, base_tv)
        eps_change = max(numeric.change(model, x, base_tv, base_eps,
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


def explain(decisions):
    """A printable report of `scale_invariant_variables(..., report=True)`."""
    return "\n".join(str(d) for d in decisions)


def reaches_normalization(model, v):
    """Whether the variable `v` of `model` reaches the input of a normalizing layer (a built-in
    normalization or a layer registered ``"normalizing"``) through the graph; else its effect
    on the outputs is dead or pure head.

    >>> import keras
    >>> from keras_explr import invariance
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.BatchNormalization()(keras.layers.Dense(8, name="a")(inp))
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="head")(h))
    >>> invariance.reaches_normalization(m, m.get_layer("a").kernel), invariance.reaches_normalization(
    ...     m, m.get_layer("head").kernel)
    (True, False)
    """
    check_model(model)
    return id(v) in Analysis(model, []).normalized


