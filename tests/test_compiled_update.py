"""The update makes no more weight-sized passes than stock Keras doing the same math.

Timing on shared machines is noisy (`benchmarks/update_step.py` reports paired
ratios with intervals); this is its deterministic counterpart. For every arm of
that benchmark, the optimizer's update of a (384, 256) kernel is inspected:

* under XLA (TensorFlow ``jit_compile``; JAX ``jit`` with the state donated, as
  ``model.fit`` does), the instructions of the optimized module's entry
  computation that produce a kernel-shaped array: each is one pass over the
  weights' memory (a fusion, a copy). Inside a loop (`Renormalize`'s rare
  rescaling, run 0 or 1 times a step) nothing is counted;
* on eager PyTorch, the aten operations that read or write a kernel-sized
  tensor (a `TorchDispatchMode` sees each one; taking a view is not a pass).

Each package arm must make no more passes than the stock-Keras arm it is
compared with there. The one stated exception is `Renormalize(max_norm=...)`,
whose per-step norm costs passes (docs/results/performance.md).
"""

import importlib.util
import os
import re

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.backends

_spec = importlib.util.spec_from_file_location(
    "update_step", os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "update_step.py"))
update_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_step)
ARMS = update_step.arms()

SHAPE = (384, 256)
KERNEL_SIZE = SHAPE[0] * SHAPE[1]
KERNEL = re.compile(r"^f32\[384,256\]")
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(\S+)\s+([\w\-]+)\(")
NOT_A_PASS = {"parameter", "bitcast", "get-tuple-element", "tuple"}
EXTRA_PASSES = {("tensorflow", "Renormalize(SGD(ExpLR), max_norm)"): 1,  # its norm
                ("torch", "Renormalize(SGD(ExpLR), max_norm)"): 1}


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


def passes(arm, normalize_after=False):
    """The kernel-sized passes of one update of `arm` (see the module's docstring)."""
    if BACKEND == "torch":
        return _torch_kernel_ops(arm, normalize_after)
    return kernel_passes(compiled_update(arm, normalize_after))


def _torch_kernel_ops(arm, normalize_after):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if not func.is_view and any(isinstance(t, torch.Tensor) and t.numel() == KERNEL_SIZE
                                        for t in tree_leaves((args, kwargs))):  # (a reshaped view too)
                self.ops.append(func.__name__)
            return func(*args, **kwargs)

    kernel, bias, opt, l2 = _built(arm)
    grads = [keras.ops.ones(SHAPE) * 1e-3, keras.ops.ones(SHAPE[1]) * 1e-3]

    def step():
        with torch.no_grad():  # as Keras's torch trainer applies the optimizer
            values = [kernel.value, bias.value]
            opt.apply(grads if not l2 else [g + l2 * v for g, v in zip(grads, values)], [kernel, bias])
            if normalize_after:
                kernel.assign(_normalized(kernel.value))

    step()  # the first update may build state
    with Recorder() as recorder:
        step()
    return recorder.ops


def _normalized(k):
    return k / keras.ops.sqrt(keras.ops.sum(k * k))


def _built(arm):
    kernel = keras.Variable(np.ones(SHAPE, "float32"), name="kernel")
    bias = keras.Variable(np.zeros(SHAPE[1], "float32"), name="bias")
    opt, l2 = ARMS[arm][0](kernel, bias), 0.0
    if isinstance(opt, tuple):
        opt, l2 = opt
    opt.build([kernel, bias])
    return kernel, bias, opt, l2


def compiled_update(arm, normalize_after=False):
    """The optimized HLO of `arm`'s update of a kernel and a bias (the benchmark's step).

    `normalize_after` (the control) divides the updated kernel by its norm in the
    same step: that needs the whole update first, so it is one more pass."""
    kernel, bias, opt, l2 = _built(arm)
    grads = [keras.ops.ones(SHAPE) * 1e-3, keras.ops.ones(SHAPE[1]) * 1e-3]

    def coupled(values):
        return grads if not l2 else [g + l2 * v for g, v in zip(grads, values)]

    if BACKEND == "tensorflow":
        import tensorflow as tf

        def tf_step():
            opt.apply(coupled([kernel.value, bias.value]), [kernel, bias])
            if normalize_after:
                kernel.assign(_normalized(kernel.value))

        return tf.function(tf_step, jit_compile=True).experimental_get_compiler_ir()(stage="optimized_hlo")
    import jax

    def pure(opt_values, values):
        values, opt_values = opt.stateless_apply(opt_values, coupled(values), values)
        if normalize_after:
            values = [_normalized(values[0])] + list(values[1:])
        return values, opt_values

    step = jax.jit(pure, donate_argnums=(0, 1))
    return step.lower([v.value for v in opt.variables], [kernel.value, bias.value]).compile().as_text()


def test_the_count_sees_an_extra_pass():
    """Control: dividing the updated kernel by its norm, in the same step, costs more passes."""
    plain, normed = passes("SGD(ExpLR)"), passes("SGD(ExpLR)", normalize_after=True)
    assert plain, "the count finds the update's own passes"
    assert len(normed) > len(plain), (plain, normed)


@pytest.mark.parametrize("arm", [name for name, (_, counterpart) in ARMS.items()
                                 if counterpart is not None and not name.startswith("keras ")])
def test_no_more_weight_passes_than_stock_keras(arm):
    counterpart = ARMS[arm][1]
    ours, theirs = passes(arm), passes(counterpart)
    allowed = len(theirs) + EXTRA_PASSES.get((BACKEND, arm), 0)
    assert len(ours) <= allowed, (
        f"{arm}: {len(ours)} kernel-sized passes per update {ours}, against {len(theirs)} {theirs} "
        f"for {counterpart}")
