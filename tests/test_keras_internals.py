"""The Keras internals keras_explr reads (keras_explr/_keras_internals.py) and
the public route its gradient hook relies on (keras_explr/_hooks.py): if a
Keras release changes either, these fail loudly."""

import keras
import numpy as np
import pytest

from keras_explr import _hooks, _keras_internals, layers
from keras_explr.optimizers import _wrapper

pytestmark = pytest.mark.backends


def test_the_internals_are_there():
    _keras_internals.check()
    _keras_internals.check(instances=True)  # every instance attribute of the table, on fresh objects


def test_a_missing_internal_is_a_clear_error_naming_the_keras_version():
    class Renamed:  # what a Keras release that renamed the attributes would hand the getters
        pass

    for getter in (_keras_internals.own_trainable_variables, _keras_internals.inbound_nodes,
                   _keras_internals.attention_projections, _keras_internals.nodes_in_order,
                   lambda opt: _keras_internals.uses_weight_decay(opt, None)):
        with pytest.raises(RuntimeError, match=rf"private `\w+\._\w+`.*Keras {keras.__version__} no longer"):
            getter(Renamed())


def test_the_table_names_every_getter_read():
    """Every private name _keras_internals.py reads is in its table (the one `check()` tests)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(_keras_internals))
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
            and not n.attr.startswith("__") and isinstance(n.ctx, ast.Load)}
    read |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith("_") and not n.value.startswith("__") and n.value.isidentifier()}
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {"_WHY"}
    table = {name for _, names, *_ in _keras_internals.INTERNALS for name in names.split()}
    assert read - own <= table, sorted(read - own - table)


def test_weight_decay_exclusions_read_back():
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.1)
    kernel, bias = keras.Variable(np.ones((2, 2)), name="kernel"), keras.Variable(np.ones(2), name="bias")
    other = keras.Variable(np.ones((2, 2)), name="other")
    opt.exclude_from_weight_decay(var_list=[other], var_names=["bias"])
    opt.build([kernel, bias, other])
    assert _keras_internals.uses_weight_decay(opt, kernel)
    assert not _keras_internals.uses_weight_decay(opt, bias)
    assert not _keras_internals.uses_weight_decay(opt, other)
    assert _keras_internals.excluded_names(opt) == "bias"
    assert _keras_internals.excluded_variables(opt)


def test_untrack_hides_a_layers_variable():
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    kernel = _keras_internals.own_trainable_variables(dense)[0]
    _keras_internals.untrack(dense, kernel)
    assert all(v is not kernel for v in dense.trainable_variables)


def test_stateless_scope_value_is_read():
    v = keras.Variable(np.ones(2, "float32"))
    with keras.StatelessScope(state_mapping=[(v, np.full(2, 3.0, "float32"))]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(_keras_internals.current_value(v)), 3.0)
    assert _keras_internals.stateless_scope() is None
    probe = layers.ScaleProbe(keras.layers.Dense(2), scale=2.0)
    probe.build((None, 3))
    assert len(probe.trainable_variables) == 2  # the stored k·w only, not the wrapped copies


@pytest.mark.parametrize("loss_scaled", [False, True])
def test_fit_routes_every_step_through_the_optimizers_public_apply(loss_scaled):
    """Keras trainers (TF, torch: apply; JAX: stateless_apply → apply; LossScaleOptimizer →
    inner apply) must reach `apply` once per step with unscaled gradients."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    opt = keras.optimizers.SGD(0.1)
    if loss_scaled:
        opt = keras.optimizers.LossScaleOptimizer(opt, initial_scale=1024.0)
    model.compile(optimizer=opt, loss="mse")
    counter = keras.Variable(0, dtype="int32", trainable=False)
    seen = []

    def around(grads, variables, apply):
        if keras.backend.backend() == "jax":  # traced once: count at run time
            import jax

            jax.debug.callback(lambda: seen.append(1))
        else:  # a graph op on TF (traced once), eager on torch
            counter.assign_add(1)
        return apply(grads, variables)

    hook = _hooks.ApplyHook(_wrapper.unscaled(opt), around)
    try:
        model.make_train_function(force=True)
        model.fit(np.ones((12, 3), "float32"), np.zeros((12, 2), "float32"), batch_size=4, epochs=2, verbose=0)
    finally:
        hook.remove()
    if keras.backend.backend() == "jax":
        jax_effects_barrier()
        assert len(seen) == 6
    else:
        assert int(keras.ops.convert_to_numpy(counter.value)) == 6
    assert "apply" not in vars(_wrapper.unscaled(opt))


def jax_effects_barrier():
    import jax

    jax.effects_barrier()


def test_functional_graph_is_walked():
    inp = keras.Input((3,))
    dense = keras.layers.Dense(2)
    out = keras.layers.ReLU()(dense(inp))
    keras.Model(inp, out)
    hist = _keras_internals.history(out)
    assert isinstance(hist.operation, keras.layers.ReLU) and hist.node_index == 0
    (node,) = _keras_internals.inbound_nodes(dense)
    assert node.input_tensors[0] is inp
    assert [n.operation for n in _keras_internals.outbound_nodes(dense)] == [hist.operation]
    assert _keras_internals.history(np.ones(2)) is None
