"""The two Keras internals keras_explr reads, in one place, checked at import.

Everything else in the package goes through Keras's public surface
(`Optimizer.build`, `variables`, `apply`, `stateless_apply`, `iterations`,
`learning_rate`, `get_config`). Two questions have no public answer in
Keras 3.10–3.15, and both are *read-only*:

* **Which variables does an optimizer exclude from weight decay?**
  `Optimizer.exclude_from_weight_decay(var_list=..., var_names=...)` stores
  its arguments privately and Keras has no public getter. `ScaleMonitor` needs
  the answer to predict a variable's equilibrium, and
  `probe.equivalent_optimizer` needs it to carry the exclusions over to the
  rescaled optimizer (through the public `exclude_from_weight_decay`).

* **Which value does a variable have inside the enclosing `StatelessScope`,
  and is there one?** `keras.layers.ScaleProbe` computes its wrapped layer
  with w′/k substituted for w through a nested public `keras.StatelessScope`;
  it must read the *outer* scope's values (JAX training, `stateless_call`)
  and honour its ``collect_losses``. Keras exports the scope class but not
  `in_stateless_scope` / `get_stateless_scope`.
* **Hiding a wrapped layer's own variables.** `ScaleProbe` replaces the
  wrapped layer's trainable variables by its stored k·w copies; Keras has no
  public way to untrack a variable, and leaving the stale copies tracked would
  train, count and save them twice.
* **Whether a model is functional, and a layer's direct sublayers**
  (`probe.scale_model` clones functional and Sequential models layer by layer
  and must refuse layers that hold variables in sublayers).

* **Switching off the base class's decoupled decay.** `keras_explr.optimizers.SGD`
  applies its coupled λ in its own `update_step` and exposes it as
  `weight_decay`, the name users and Keras's `get_config` know; the base class
  would *also* apply `weight_decay` as decoupled decay in
  `Optimizer._apply_weight_decay`, which `SGD` therefore overrides with a no-op.
  Were Keras to rename that hook, `SGD` would silently decay twice: `check()`
  refuses to import instead.

* **Walking a functional model's graph.** `keras_explr.invariance` follows
  each symbolic tensor to the layer call that produced it and each layer to
  its calls and consumers. Keras keeps that graph in `KerasTensor._keras_history`
  and `Operation._inbound_nodes` / `_outbound_nodes` (its own `plot_model`
  and `clone_model` read them); `Node` itself is public in shape only. Read-only.

* **An optimizer's moving averages (`use_ema`).** `Renormalize` rescales the
  group's weights by 1/s and must rescale their moving averages with them, or
  the averages mix θ and θ/s. Keras keeps them in the instance attribute
  `_model_variables_moving_average` (in build order) with no public getter.

Apart from the untracking (which changes only what the wrapper's own wrapped
layer reports), nothing here assigns to a Keras object: a Keras upgrade that renames these
attributes makes `check()` raise at import with this explanation (and
`tests/test_keras_internals.py` fails loudly), instead of the package silently
treating every variable as decayed.
"""

import keras

_EXPECTED = ("_use_weight_decay", "_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern")
_CLASS_EXPECTED = ("_apply_weight_decay", "_get_variable_index")
_LAYER_EXPECTED = ("_untrack_variable", "_trainable_variables", "_layers")


def check():
    """Raises RuntimeError if this Keras lacks the internals read below (class
    attributes only: creating an optimizer or a layer here would initialize the
    backend's devices at import, before a user configures them)."""
    missing = [name for name in ("_use_weight_decay",) + _CLASS_EXPECTED
               if not hasattr(keras.optimizers.Optimizer, name)]
    missing += [name for name in ("_untrack_variable",) if not hasattr(keras.layers.Layer, name)]
    try:
        from keras.src.backend.common import stateless_scope  # noqa: F401
    except ImportError:
        missing.append("keras.src.backend.common.stateless_scope")
    if missing:
        raise RuntimeError(
            f"keras_explr reads Keras's private {missing} (see keras_explr/_keras_internals.py for why) and "
            f"Keras {keras.__version__} no longer has it. Please report this with your Keras version.")


check()


def uses_weight_decay(optimizer, variable):
    """Whether `optimizer` would apply its weight decay to `variable`
    (False for variables excluded with `exclude_from_weight_decay`)."""
    return bool(optimizer._use_weight_decay(variable))


def excluded_names(optimizer):
    """The `var_names` patterns given to `optimizer.exclude_from_weight_decay`
    (a regex string or None)."""
    pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
    return None if pattern is None else pattern.pattern


def excluded_variables(optimizer):
    """Whether `exclude_from_weight_decay(var_list=...)` was given variables."""
    return bool(getattr(optimizer, "_exclude_from_weight_decay", None))


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
    return variable._value


def own_trainable_variables(layer):
    """The trainable variables `layer` owns directly (not through sublayers)."""
    return list(layer._trainable_variables)


def sublayers(layer):
    """`layer`'s direct sublayers."""
    return list(layer._layers)


def untrack(layer, variable):
    """Stops `layer` from listing `variable` among its weights."""
    layer._untrack_variable(variable)


def is_functional(model):
    return bool(getattr(model, "_is_graph_network", False)) or type(model).__name__ == "Functional"


# -- the functional graph (keras_explr.invariance) ------------------------------------
def history(tensor):
    """(operation, node_index, tensor_index) that produced a symbolic tensor, or None."""
    return getattr(tensor, "_keras_history", None)


def inbound_nodes(operation):
    """The calls of a layer/operation in the graph (each with `.input_tensors`, `.outputs`)."""
    return list(operation._inbound_nodes)


def outbound_nodes(operation):
    """The calls that consume the layer's outputs (each with `.operation`)."""
    return list(operation._outbound_nodes)


# -- Renormalize -------------------------------------------------------------------------
def moving_averages(optimizer):
    """The moving averages of `use_ema`, one per variable in build order ([] without EMA)."""
    if not getattr(optimizer, "use_ema", False):
        return []
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if averages is None and optimizer.built:
        raise RuntimeError(
            f"keras_explr reads Keras's private `_model_variables_moving_average` (see "
            f"keras_explr/_keras_internals.py for why) and Keras {keras.__version__} no longer has it. "
            "Please report this with your Keras version.")
    return list(averages or [])


# -- the wrapper protocol (keras_explr/optimizers/_wrapper.py) ---------------------------------
def _missing(name):
    return RuntimeError(
        f"keras_explr reads Keras's private `{name}` (see keras_explr/_keras_internals.py for why) and "
        f"Keras {keras.__version__} no longer has it. Please report this with your Keras version.")


def multi_optimizer_choice(optimizer, variable):
    """The sub-optimizer of a `keras.optimizers.MultiOptimizer` that updates `variable`.

    Keras keeps the variable-to-optimizer map privately (``_optimizer_map``, and after
    `build` the index ``_var_to_optimizer_idx``); its public ``optimizers`` lists the
    sub-optimizers without saying which variable each one updates."""
    if optimizer.built:
        index = optimizer.__dict__.get("_var_to_optimizer_idx")
        if index is None:
            raise _missing("MultiOptimizer._var_to_optimizer_idx")
        return optimizer.optimizers[index[optimizer._var_key(variable)]]
    mapping = optimizer.__dict__.get("_optimizer_map")
    if mapping is None:
        raise _missing("MultiOptimizer._optimizer_map")
    return mapping(variable)


def weight_copies(optimizer, variable):
    """The optimizer's state variables that hold the model's weights alongside `variable`
    (so that a decay of θ must scale them too): ScheduleFreeAdamW's z sequence (its
    ``_momentums``, initialized to a copy of θ; the model holds y = (1 − β₁)z + β₁x).
    [] for the other stock optimizers."""
    if not isinstance(optimizer, getattr(keras.optimizers, "ScheduleFreeAdamW", ())):  # (Keras >= 3.11)
        return []
    buffers = optimizer.__dict__.get("_momentums")
    if buffers is None:
        raise _missing("ScheduleFreeAdamW._momentums")
    return [buffers[optimizer._get_variable_index(variable)]]
