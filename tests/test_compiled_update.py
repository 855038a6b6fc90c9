"""The compiled update makes no more weight-sized passes than stock Keras doing the same math.

Timing on shared machines is noisy (`benchmarks/update_step.py` reports paired
ratios with intervals); this is its deterministic counterpart. For every arm of
that benchmark, the optimizer's update on a (384, 256) kernel is compiled by XLA
(TensorFlow ``jit_compile``; JAX ``jit`` with the state donated, as
``model.fit`` does), and the test counts the instructions of the optimized
module's entry computation that produce a kernel-shaped array: each is one pass
over the weights' memory (a fusion, a copy), which is what an update of a large
model costs. Inside a loop (`Renormalize`'s rare rescaling, run 0 or 1 times a
step) nothing is counted. Each package arm must make no more passes than the
stock-Keras arm it is compared with there. The one stated exception is
`Renormalize(max_norm=...)`, whose per-step norm is one more pass on TensorFlow
(docs/results/performance.md).
"""

import importlib.util
import os
import re

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
pytestmark = [pytest.mark.backends,
              pytest.mark.skipif(BACKEND == "torch", reason="torch has no XLA module to read")]

_spec = importlib.util.spec_from_file_location(
    "update_step", os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "update_step.py"))
update_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_step)
ARMS = update_step.arms()

SHAPE = (384, 256)
KERNEL = re.compile(r"^f32\[384,256\]")
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(\S+)\s+([\w\-]+)\(")
NOT_A_PASS = {"parameter", "bitcast", "get-tuple-element", "tuple"}
EXTRA_PASSES = {("tensorflow", "Renormalize(SGD(ExpLR), max_norm)"): 1}  # its norm


def kernel_passes(hlo):
    """Opcodes of the entry computation's instructions that produce a kernel-shaped array."""
    body = hlo[hlo.index("\nENTRY"):].splitlines()[1:]
    passes = []
    for line in body:
        if line.startswith("}"):
            break
        match = INSTRUCTION.match(line)
        if match and KERNEL.match(match.group(1)) and match.group(2) not in NOT_A_PASS:
            passes.append(match.group(2))
    return passes


def compiled_update(arm, normalize_after=False):
    """The optimized HLO of `arm`'s update of a kernel and a bias (the benchmark's step).

    `normalize_after` (the control) divides the updated kernel by its norm in the
    same step: that needs the whole update first, so it is one more pass."""
    kernel = keras.Variable(np.ones(SHAPE, "float32"), name="kernel")
    bias = keras.Variable(np.zeros(SHAPE[1], "float32"), name="bias")
    opt, l2 = ARMS[arm][0](kernel, bias), 0.0
    if isinstance(opt, tuple):
        opt, l2 = opt
    opt.build([kernel, bias])
    grads = [keras.ops.ones(SHAPE) * 1e-3, keras.ops.ones(SHAPE[1]) * 1e-3]

    def coupled(values):
        return grads if not l2 else [g + l2 * v for g, v in zip(grads, values)]

    def normalized(k):
        return k / keras.ops.sqrt(keras.ops.sum(k * k))

    if BACKEND == "tensorflow":
        import tensorflow as tf

        def tf_step():
            opt.apply(coupled([kernel.value, bias.value]), [kernel, bias])
            if normalize_after:
                kernel.assign(normalized(kernel.value))

        return tf.function(tf_step, jit_compile=True).experimental_get_compiler_ir()(stage="optimized_hlo")
    import jax

    def pure(opt_values, values):
        values, opt_values = opt.stateless_apply(opt_values, coupled(values), values)
        if normalize_after:
            values = [normalized(values[0])] + list(values[1:])
        return values, opt_values

    step = jax.jit(pure, donate_argnums=(0, 1))
    return step.lower([v.value for v in opt.variables], [kernel.value, bias.value]).compile().as_text()


def test_the_count_sees_an_extra_pass():
    """Control: dividing the updated kernel by its norm, in the same step, costs more passes."""
    plain, normed = compiled_update("SGD(ExpLR)"), compiled_update("SGD(ExpLR)", normalize_after=True)
    assert kernel_passes(plain), "the count finds the update's own passes"
    assert len(kernel_passes(normed)) > len(kernel_passes(plain)), (kernel_passes(plain), kernel_passes(normed))


@pytest.mark.parametrize("arm", [name for name, (_, counterpart) in ARMS.items()
                                 if counterpart is not None and not name.startswith("keras ")])
def test_no_more_weight_passes_than_stock_keras(arm):
    counterpart = ARMS[arm][1]
    ours, theirs = kernel_passes(compiled_update(arm)), kernel_passes(compiled_update(counterpart))
    allowed = len(theirs) + EXTRA_PASSES.get((BACKEND, arm), 0)
    assert len(ours) <= allowed, (
        f"{arm}: {len(ours)} kernel-sized passes per update {ours}, against {len(theirs)} {theirs} "
        f"for {counterpart}")
