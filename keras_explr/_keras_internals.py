"""Every Keras internal keras_explr reads, in one place, in one checked table.

Everything else in the package goes through Keras's public surface
(`Optimizer.build`, `variables`, `apply`, `stateless_apply`, `iterations`,
`learning_rate`, `get_config`, `Layer.stateless_call`, `Node.input_tensors`,
`Node.arguments`, ...). The questions below have no public answer in Keras
3.10–3.15; `INTERNALS` lists every private name read to answer them, with the
reason, and `tests/test_layout.py` fails on a private read of a Keras object
anywhere else in the package. All reads are read-only except `untrack`.

* **Which variables does an optimizer exclude from weight decay?**
  `Optimizer.exclude_from_weight_decay(var_list=..., var_names=...)` stores
  its arguments privately and Keras has no public getter. `ScaleMonitor` needs
  the answer to predict a variable's equilibrium, and
  `probe.equivalent_optimizer` to carry the exclusions over to the rescaled
  optimizer (through the public `exclude_from_weight_decay`).
* **Switching off the base class's decoupled decay, and a variable's slot.**
  `keras_explr.optimizers.SGD` applies its coupled λ in its own `update_step`
  and exposes it as `weight_decay`; the base class would *also* apply it as
  decoupled decay in `Optimizer._apply_weight_decay`, which `SGD` overrides
  with a no-op (were Keras to rename that hook, `SGD` would silently decay
  twice: `check()` refuses to import instead). `SGD.momentum_buffer` finds a
  variable's momentum with `Optimizer._get_variable_index`, the helper Keras's
  guide to writing an optimizer uses.
* **An optimizer's moving averages (`use_ema`).** `Renormalize` rescales the
  group's weights by 1/s and must rescale their moving averages with them.
  Keras keeps them in `_model_variables_moving_average` (in build order).
* **Which value does a variable have inside the enclosing `StatelessScope`?**
  `keras_explr.layers.ScaleProbe` computes its wrapped layer with w′/k
  substituted for w through a nested public `keras.StatelessScope`; it must
  read the *outer* scope's values (JAX training, `stateless_call`). Keras
  exports the scope class but not `in_stateless_scope` / `get_stateless_scope`,
  and a variable's own value without autocasting only as `Variable._value`.
* **A layer's own variables and sublayers, and hiding a wrapped layer's
  variables.** `ScaleProbe` replaces the wrapped layer's trainable variables
  by its stored k·w copies and must untrack the originals (Keras has no public
  way to), `probe.scale_model` refuses layers that hold variables in
  sublayers, and `keras_explr.invariance` attributes each variable to the
  layer that owns it (`_trainable_variables`, `_layers`, `_flatten_layers`).
* **Walking a functional model's graph.** `keras_explr.invariance` follows
  each symbolic tensor to the call that produced it (`KerasTensor._keras_history`),
  each layer to its calls (`Operation._inbound_nodes` / `_outbound_nodes`),
  visits the calls in Keras's own order (`Function._nodes_by_depth`), reads a
  call's constant arguments (`SymbolicArguments._flat_arguments`), a model's
  input structure (`Function._inputs_struct`), a Sequential model's graph
  (`Sequential._functional`) and a MultiHeadAttention's four projections
  (`_query_dense`, `_key_dense`, `_value_dense`, `_output_dense`); Keras's own
  `plot_model`, `clone_model` and `summary` read the same attributes.
* **Whether a class is one of Keras's per-backend subclasses** (the torch
  backend's Adam subclasses `keras.optimizers.Adam` in `keras.src.backend.torch`):
  `probe.equivalent_optimizer` looks through them to the class it knows.

A Keras upgrade that renames any of these makes `check()` raise at import
(class attributes and modules; instance attributes are read from freshly
built objects by `check(instances=True)` in `tests/test_keras_internals.py`),
and every getter raises a RuntimeError naming the attribute and the Keras
version, instead of the package silently giving a wrong answer.
"""

import importlib
import inspect
import re

import keras

_WHY = "see keras_explr/_keras_internals.py for why"
_BACKEND_MODULES = "keras.src.backend."

# (owner, name, kind[, set in]): kind "class" (an attribute of the class), "instance" (set on every
# instance, by the owner's code or, when given, by the class `set in`), "optional" (an instance attribute Keras
# sets only once the feature is used; absent means unused), "module" (an importable module; name: its attributes).
INTERNALS = (
    ("keras.optimizers.Optimizer", "_use_weight_decay", "class"),
    ("keras.optimizers.Optimizer", "_apply_weight_decay", "class"),
    ("keras.optimizers.Optimizer", "_get_variable_index", "class"),
    ("keras.optimizers.Optimizer", "_exclude_from_weight_decay", "optional"),
    ("keras.optimizers.Optimizer", "_exclude_from_weight_decay_pattern", "optional"),
    ("keras.optimizers.Optimizer", "_model_variables_moving_average", "optional"),
    ("keras.layers.Layer", "_untrack_variable", "class"),
    ("keras.layers.Layer", "_flatten_layers", "class"),
    ("keras.layers.Layer", "_trainable_variables", "instance"),
    ("keras.layers.Layer", "_layers", "instance"),
    ("keras.layers.MultiHeadAttention", "_query_dense", "instance"),
    ("keras.layers.MultiHeadAttention", "_key_dense", "instance"),
    ("keras.layers.MultiHeadAttention", "_value_dense", "instance"),
    ("keras.layers.MultiHeadAttention", "_output_dense", "instance"),
    ("keras.Variable", "_value", "instance"),
    ("keras.KerasTensor", "_keras_history", "optional", "keras.src.ops.node.Node"),
    ("keras.Operation", "_inbound_nodes", "instance"),
    ("keras.Operation", "_outbound_nodes", "instance"),
    ("keras.src.ops.symbolic_arguments.SymbolicArguments", "_flat_arguments", "instance"),
    ("keras.src.models.functional.Functional", "_nodes_by_depth", "instance"),
    ("keras.src.models.functional.Functional", "_inputs_struct", "instance"),
    ("keras.Sequential", "_functional", "instance"),
    ("keras.src.backend.common.stateless_scope", "in_stateless_scope get_stateless_scope", "module"),
    ("keras.src.models.functional", "Functional", "module"),
    ("keras.src.backend", "common", "module"),
    ("keras.optimizers.MultiOptimizer", "_optimizer_map", "instance"),
    ("keras.optimizers.MultiOptimizer", "_var_to_optimizer_idx", "optional"),
    ("keras.optimizers.MultiOptimizer", "_var_key", "class"),
    ("keras.optimizers.ScheduleFreeAdamW", "_momentums", "optional"),
)


def _missing(owner, name):
    return RuntimeError(
        f"keras_explr reads Keras's private `{owner}.{name}` ({_WHY}) and Keras {keras.__version__} no "
        "longer has it. Please report this with your Keras version.")


# Owners of `INTERNALS` that the oldest supported Keras (3.10) lacks: there the feature does not exist, so
# none of its attributes is ever read, and `check()` passes them over.
NEWER_OWNERS = ("keras.optimizers.MultiOptimizer", "keras.optimizers.ScheduleFreeAdamW")


def _resolve(dotted):
    """The class or module a dotted name in `INTERNALS` names."""
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return importlib.import_module(dotted)


def _read(obj, name, owner=None):
    """obj.<name>, or a RuntimeError naming the attribute and this Keras version."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise _missing(owner or type(obj).__name__, name) from None


def _read_optional(obj, name, default):
    """obj.<name> for an "optional" attribute of `INTERNALS`, which Keras sets only once the feature is
    used: `default` when absent (`check()` has confirmed at import that Keras still sets it)."""
    return vars(obj).get(name, default)


def _assigned_in_source(cls, name):
    """Whether Keras's source of `cls` (or of its Keras base classes) assigns ``<obj>.<name>``;
    True when the source cannot be read (a zipped install)."""
    pattern = re.compile(rf"\.{name}\s*(:[^=]*)?=[^=]|\.{name}\s*,[^=\n]*=[^=]")  # (or a, b = ...)
    try:
        sources = [inspect.getsource(inspect.getmodule(c)) for c in cls.__mro__
                   if c.__module__.startswith("keras.")]
    except (OSError, TypeError):
        return True
    return any(pattern.search(src) for src in sources)


def check(instances=False):
    """Raises RuntimeError if this Keras lacks an internal of `INTERNALS`.

    At import, without creating any Keras object (that would initialize the
    backend's devices before a user configures them): class attributes and
    modules exist, and Keras's source of each instance attribute's class still
    assigns it. ``instances=True`` also builds a small model and an optimizer
    and reads every instance attribute (tests/test_keras_internals.py).
    """
    missing = []
    for owner, name, kind, *set_in in INTERNALS:
        try:
            target = _resolve(owner)
            where = _resolve(set_in[0]) if set_in else target
        except ImportError:
            if owner not in NEWER_OWNERS:  # (an owner only newer Keras has: nothing of it can be read)
                missing.append(owner)
            continue
        if kind == "class" and not hasattr(target, name):
            missing.append(f"{owner}.{name}")
        elif kind == "module":
            missing += [f"{owner}.{n}" for n in name.split() if not hasattr(target, n)]
        elif kind in ("instance", "optional") and not _assigned_in_source(where, name):
            missing.append(f"{owner}.{name}")
    if instances:
        samples = _instances()
        missing += [f"{owner}.{name}" for owner, name, kind, *_ in INTERNALS
                    if kind in ("instance", "optional") and owner in samples
                    and not any(hasattr(s, name) for s in samples[owner])]
    if missing:
        raise RuntimeError(
            f"keras_explr reads Keras's private {missing} ({_WHY}) and Keras {keras.__version__} no longer "
            "has it. Please report this with your Keras version.")


def _instances():
    """One freshly built object per owner of an instance attribute (for `check(instances=True)`)."""
    inp = keras.Input((2, 4))
    mha = keras.layers.MultiHeadAttention(num_heads=1, key_dim=2)
    dense = keras.layers.Dense(4)
    out = dense(mha(inp, inp))
    model = keras.Model(inp, out)
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    opt = keras.optimizers.AdamW(use_ema=True)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.build(dense.trainable_variables)
    node = inbound_nodes(dense)[0]
    return {"keras.optimizers.Optimizer": [opt], "keras.layers.Layer": [dense],
            "keras.layers.MultiHeadAttention": [mha], "keras.Variable": [dense.kernel],
            "keras.KerasTensor": [out], "keras.Operation": [dense],
            "keras.src.ops.symbolic_arguments.SymbolicArguments": [node.arguments],
            "keras.src.models.functional.Functional": [model], "keras.Sequential": [seq]}


check()


# -- optimizers ------------------------------------------------------------------------
def uses_weight_decay(optimizer, variable):
    """Whether `optimizer` would apply its weight decay to `variable`
    (False for variables excluded with `exclude_from_weight_decay`)."""
    return bool(_read(optimizer, "_use_weight_decay")(variable))


def excluded_names(optimizer):
    """The `var_names` patterns given to `optimizer.exclude_from_weight_decay`
    (a regex string or None)."""
    pattern = _read_optional(optimizer, "_exclude_from_weight_decay_pattern", None)
    return None if pattern is None else pattern.pattern


def excluded_variables(optimizer):
    """Whether `exclude_from_weight_decay(var_list=...)` was given variables."""
    return bool(_read_optional(optimizer, "_exclude_from_weight_decay", ()))


def variable_index(optimizer, variable):
    """The index of `variable` in the optimizer's slot lists (Keras's helper for `update_step`)."""
    return _read(optimizer, "_get_variable_index", "Optimizer")(variable)


def moving_averages(optimizer):
    """The moving averages of `use_ema`, one per variable in build order ([] without EMA or unbuilt)."""
    if not getattr(optimizer, "use_ema", False) or not optimizer.built:
        return []
    return list(_read(optimizer, "_model_variables_moving_average", "Optimizer"))


def is_backend_class(cls):
    """Whether `cls` is one of Keras's per-backend subclasses (defined under keras.src.backend)."""
    return cls.__module__.startswith(_BACKEND_MODULES)


# -- ScaleProbe and scale_model ----------------------------------------------------
def stateless_scope():
    """The innermost enclosing `keras.StatelessScope`, or None."""
    from keras.src.backend.common import stateless_scope as scopes

    return scopes.get_stateless_scope() if scopes.in_stateless_scope() else None


def current_value(variable):
    """The variable's value as the enclosing computation sees it, never autocast:
    the enclosing StatelessScope's value if it has one, else the variable's own."""
    scope = stateless_scope()
    if scope is not None:
        value = scope.get_current_value(variable)
        if value is not None:
            return value
    return _read(variable, "_value", "Variable")


def own_trainable_variables(layer):
    """The trainable variables `layer` owns directly (not through sublayers)."""
    return list(_read(layer, "_trainable_variables", "Layer"))


def sublayers(layer):
    """`layer`'s direct sublayers."""
    return list(_read(layer, "_layers", "Layer"))


def all_sublayers(layer):
    """Every layer nested in `layer`, recursively (not `layer` itself)."""
    return list(_read(layer, "_flatten_layers", "Layer")(include_self=False, recursive=True))


def untrack(layer, variable):
    """Stops `layer` from listing `variable` among its weights."""
    _read(layer, "_untrack_variable", "Layer")(variable)


def _functional_class():
    from keras.src.models.functional import Functional

    return Functional


def is_functional(model):
    """Whether `model` is a plain functional model (built by ``keras.Model(inputs, outputs)``)."""
    return type(model) is _functional_class()


# -- the functional graph (keras_explr.invariance) ------------------------------------
def functional_graph(model):
    """The functional graph a model runs: the model itself when functional, a Sequential
    model's inner functional model, None for a subclassed model."""
    if isinstance(model, keras.Sequential):
        return _read(model, "_functional", "Sequential")
    return model if isinstance(model, _functional_class()) else None


def nodes_in_order(graph):
    """Every call (node) of a functional graph in the order Keras runs them: deepest first."""
    by_depth = _read(graph, "_nodes_by_depth", "Functional")
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def inputs_struct(model):
    """The nested structure of a functional (or Sequential) model's inputs."""
    return _read(functional_graph(model), "_inputs_struct", "Functional")


def history(tensor):
    """(operation, node_index, tensor_index) that produced a symbolic tensor, or None
    (not a symbolic tensor, or one no operation produced)."""
    if not isinstance(tensor, keras.KerasTensor):
        return None
    # A KerasTensor gets this attribute from the Node that produces it (`check()` confirms at import
    # that Keras's Node still sets it), so its absence means "produced by no operation".
    return _read_optional(tensor, "_keras_history", None)


def inbound_nodes(operation):
    """The calls of a layer/operation in the graph (each with `.input_tensors`, `.outputs`)."""
    return list(_read(operation, "_inbound_nodes", "Operation"))


def outbound_nodes(operation):
    """The calls that consume the layer's outputs (each with `.operation`)."""
    return list(_read(operation, "_outbound_nodes", "Operation"))


def flat_arguments(node):
    """Every argument of a call, flattened (constants included, unlike `node.arguments.keras_tensors`)."""
    return list(_read(node.arguments, "_flat_arguments", "SymbolicArguments"))


def attention_projections(layer):
    """A MultiHeadAttention's query, key, value and output projections (EinsumDense layers)."""
    return [_read(layer, name, "MultiHeadAttention")
            for name in ("_query_dense", "_key_dense", "_value_dense", "_output_dense")]


# -- the wrapper protocol (keras_explr/optimizers/_wrapper.py) ---------------------------------
def multi_optimizer_choice(optimizer, variable):
    """The sub-optimizer of a `keras.optimizers.MultiOptimizer` that updates `variable`.

    Keras keeps the variable-to-optimizer map privately (``_optimizer_map``, and after
    `build` the index ``_var_to_optimizer_idx``); its public ``optimizers`` lists the
    sub-optimizers without saying which variable each one updates."""
    if optimizer.built:
        index = _read(optimizer, "_var_to_optimizer_idx", "MultiOptimizer")
        return optimizer.optimizers[index[_read(optimizer, "_var_key", "MultiOptimizer")(variable)]]
    return _read(optimizer, "_optimizer_map", "MultiOptimizer")(variable)


def weight_copies(optimizer, variable):
    """The optimizer's state variables that hold the model's weights alongside `variable`
    (so that a decay of θ must scale them too): ScheduleFreeAdamW's z sequence (its
    ``_momentums``, initialized to a copy of θ; the model holds y = (1 − β₁)z + β₁x).
    [] for the other stock optimizers."""
    if not isinstance(optimizer, getattr(keras.optimizers, "ScheduleFreeAdamW", ())):  # (Keras >= 3.11)
        return []
    return [_read(optimizer, "_momentums", "ScheduleFreeAdamW")[variable_index(optimizer, variable)]]
