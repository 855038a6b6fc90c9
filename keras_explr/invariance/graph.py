"""The structural pass: one walk over a model's graph in Keras's node order.

`Analysis` visits every call (node) of a functional or Sequential model in the
order Keras itself runs them (deepest first, as ``Functional.call`` does),
nested models included, with a loop rather than recursion, so a deep network
never meets the interpreter's recursion limit. For each call it asks the rule
registry (`rules`) for the degrees of the outputs, falling back to the default
treatment (a numeric check of the layer alone) for a layer no rule describes,
and collects every equation the group must satisfy (`Constraint`). It also
records which variables reach a normalizing layer and the degree of each
normalizing layer's input, so every public function is a query on one walk.
"""

import keras
from keras import layers

from keras_explr import _keras_internals
from keras_explr.invariance import numeric, rules


def excluded(v):
    """Why a variable can never be scaled (a regularizer, a constraint other than NonNeg), or None."""
    if getattr(v, "regularizer", None) is not None:
        return ("it has a regularizer, so the loss training minimizes (data loss + model.losses) "
                "changes with its scale")
    con = getattr(v, "constraint", None)
    if con is not None and not isinstance(con, keras.constraints.NonNeg):
        return (f"it has a constraint ({type(con).__name__}) that training applies after each step and "
                "that does not commute with scaling")
    return None


def layer_name(op):
    return getattr(op, "name", type(op).__name__)


def check_model(model):
    if not isinstance(model, keras.Model) or getattr(model, "outputs", None) is None:
        raise ValueError(
            "`model` must be a functional or Sequential Keras model (its graph is "
            f"needed); received {type(model).__name__}"
        )


def flat_outputs(model):
    return list(keras.tree.flatten(model.outputs))


class Analysis:
    """Degrees of every tensor of a functional model as linear forms in the
    memberships of `candidates` (a list of trainable variables of `model`).

    Attributes:
      cand: the candidates; a form's keys index this list.
      constraints: every equation (`rules.Constraint`), each with its bit.
      forms: id(tensor) → (form, mask): the degree of each tensor and the bits
        of the equations upstream of it (a tensor is homogeneous only where
        none of them is violated).
      outputs: (form, mask) of each model output.
      normalized: the trainable variables (a set of ids) that reach the input
        of a normalizing layer.
      norm_calls: (layer, form, mask) of the input of every call of a
        normalizing layer.
    """

    def __init__(self, model, candidates):
        self.model = model
        self.tv = list(model.trainable_variables)
        self.cand = list(candidates)
        self.index = {id(v): i for i, v in enumerate(self.cand)}
        self.constraints = []
        self.forms = {}
        self.normalized = set()
        self.norm_calls = []
        self._probe_cache = {}
        owner = {}
        for layer in numeric.all_layers(model):
            for v in _keras_internals.own_trainable_variables(layer):
                owner.setdefault(id(v), layer)
        pending = [rules.Constraint({self.index[id(v)]: 1}, {}, layer_name(owner.get(id(v))),
                                    f"{v.path}: {why}", "loss")
                   for v in self.cand for why in [excluded(v)] if why]
        graph = _keras_internals.functional_graph(model)
        self._walk(graph, self.forms, {}, top=True)
        outs = flat_outputs(model)
        self.outputs = [self.forms.get(id(t), ({}, 0)) for t in outs]
        for c in pending:
            self.constrain(c)
        for t, (f, _) in zip(outs, self.outputs):
            self.constrain(rules.Constraint(f, {}, layer_name(_keras_internals.history(t).operation),
                                            f"the model output {t.name!r} scales as c^{{lhs}}: no normalization "
                                            "between the group and it", "output"))

    # -- bookkeeping
    def constrain(self, c):
        if not c.row():
            return 0
        c.bit = 1 << len(self.constraints)
        self.constraints.append(c)
        return c.bit

    def m(self, v):
        i = self.index.get(id(v)) if v is not None else None
        return {} if i is None else {i: 1}

    def violated(self, m, kinds=("structure", "loss", "output")):
        return [c for c in self.constraints if c.kind in kinds and rules.evaluate(c.row(), m) != 0]

    # -- the walk
    def _walk(self, graph, forms, reach, top=False):
        """Visits every call of `graph` in Keras's order; `forms`/`reach` map id(tensor) to its
        (form, mask) and to the ids of the variables it depends on."""
        for node in _keras_internals.nodes_in_order(graph):
            op = node.operation
            if op is None or isinstance(op, layers.InputLayer):
                for t in node.outputs:
                    forms.setdefault(id(t), ({}, 0))
                    reach.setdefault(id(t), frozenset())
                continue
            ins = [forms.get(id(t), ({}, 0)) for t in node.input_tensors]
            in_reach = frozenset().union(*[reach.get(id(t), frozenset()) for t in node.input_tensors])
            mask = 0
            for _, mk in ins:
                mask |= mk
            if rules.is_normalizing(op):
                self.normalized |= in_reach
                f0, m0 = ins[0] if ins else ({}, 0)
                self.norm_calls.append((op, f0, m0))
            n0 = len(self.constraints)
            nested = _keras_internals.functional_graph(op) if isinstance(op, keras.Model) else None
            if nested is not None:
                outs, out_reach = self._nested(nested, [f for f, _ in ins], mask, node, reach)
            else:
                outs = self._node(op, node, [f for f, _ in ins], forms)
                own = op.trainable_variables if isinstance(op, layers.Layer) else []
                out_reach = [in_reach | {id(v) for v in own}] * len(node.outputs)
            for c in self.constraints[n0:]:
                mask |= c.bit
            for t, f, r in zip(node.outputs, outs, out_reach):
                forms[id(t)] = (f, mask)
                reach[id(t)] = r
                if not top:
                    self.forms.setdefault(id(t), (f, mask))

    def _nested(self, graph, ins, mask, node, reach):
        """A call of a nested functional model: its own walk, its inputs given the call's degrees."""
        inner, inner_reach = {}, {}
        for t, outer, f in zip(keras.tree.flatten(graph.inputs), node.input_tensors, ins):
            inner[id(t)] = (f, mask)
            inner_reach[id(t)] = reach.get(id(outer), frozenset())
        self._walk(graph, inner, inner_reach)
        outs = keras.tree.flatten(graph.outputs)
        return ([inner.get(id(t), ({}, 0))[0] for t in outs],
                [inner_reach.get(id(t), frozenset()) for t in outs])

    def _node(self, op, node, ins, forms):
        """One call of one layer or operation: output forms, equations added."""
        own = _keras_internals.own_trainable_variables(op) if isinstance(op, layers.Layer) else []
        call = rules.LayerCall(self, op, node, ins, own, layer_name(op),
                               degree_of=lambda t: forms.get(id(t), ({}, 0))[0])
        outs = rules.apply(call)
        if outs is None:
            outs = self._unknown(call)
        if getattr(op, "activity_regularizer", None) is not None:
            for f in outs:
                call.constrain(f, {}, f"{call.name!r} has an activity regularizer: model.losses would scale as "
                                      "c^{lhs}", "loss")
        return outs + [{}] * (len(node.outputs) - len(outs))

    def _unknown(self, call):
        """The default treatment: own variables stay out; a numeric check decides the degree."""
        op, name = call.layer, call.name
        for v in call.own:
            if id(v) in self.index:
                call.constrain(call.m(v), {}, f"{v.path}: this analysis does not know how {name!r} "
                                              f"({type(op).__name__}) scales with it")
        if not any(call.ins):
            return [{}] * call.n_out
        key = (id(op), id(call.node))
        if key not in self._probe_cache:
            self._probe_cache[key] = numeric.probe_degree(op, call.node)
        k = self._probe_cache[key]
        if k == 1:
            return [call.equal()] * call.n_out
        if k == 0:
            return [{}] * call.n_out
        return call.breaks(f"{type(op).__name__} (unknown to this analysis, and a numeric check at "
                           "c = 2^±3, 2^±10 found f(cx) ≠ c·f(x))")
