"""The update makes no more weight-sized passes than stock Keras doing the same math.

Timing on shared machines is noisy (`benchmarks/update_step.py` reports paired
ratios with intervals); this is its deterministic counterpart. For every arm of
that benchmark, its update (the benchmark's own step, on a 384×384 kernel) is inspected:

* under XLA (TensorFlow ``jit_compile``; JAX ``jit`` with the state donated, as
  ``model.fit`` does), the instructions of the optimized module's entry
  computation that read or write a kernel-shaped array: each is one pass over
  the weights' memory (a fusion, a copy, a reduction). Inside a loop (`Renormalize`'s rare
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
import pytest

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.backends

_spec = importlib.util.spec_from_file_location(
    "update_step", os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "update_step.py"))
update_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_step)
ARMS = update_step.arms()

SIZE = 384  # the benchmark's arms on a 384×384 kernel (and a 384 bias)
KERNEL = re.compile(rf"^f32\[{SIZE},{SIZE}\]")
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s+([\w\-]+)\((.*?)\)")
NOT_A_PASS = {"parameter", "bitcast", "get-tuple-element", "tuple"}
EXTRA_PASSES = {("tensorflow", "Renormalize(SGD(ExpLR), max_norm)"): 1,  # its norm
                ("torch", "Renormalize(SGD(ExpLR), max_norm)"): 1}
MODE = {"tensorflow": "xla", "jax": "jit", "torch": "eager"}[BACKEND]


def kernel_passes(hlo):
    """Opcodes of the entry computation's instructions that read or write a kernel-shaped array."""
    body = hlo[hlo.index("\nENTRY"):].splitlines()[1:]
    shapes, passes = {}, []
    for line in body:
        if line.startswith("}"):
            break
        match = INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, opcode, operands = match.groups()
        shapes[name] = shape
        touched = [shape] + [shapes.get(x.split()[-1].lstrip("%"), "") for x in operands.split(",") if x.strip()]
        if opcode not in NOT_A_PASS and any(KERNEL.match(x) for x in touched):
            passes.append(opcode)
    return passes


def passes(factory):
    """The kernel-sized passes of one update, as the benchmark runs it (see the module's docstring)."""
    arm = update_step.Arm(factory, SIZE, MODE)
    if BACKEND != "torch":
        return kernel_passes(arm.optimized_hlo())
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if not func.is_view and any(isinstance(t, torch.Tensor) and t.numel() == SIZE * SIZE
                                        for t in tree_leaves((args, kwargs))):  # (a reshaped view too)
                self.ops.append(func.__name__)
            return func(*args, **kwargs)

    arm.step()  # the first update may build state
    with Recorder() as recorder:
        arm.step()
    return recorder.ops


class _NormalizeAfter:
    """Control: an optimizer that divides the updated kernel by its norm in the same step.
    That needs the whole update first, so it is at least one more pass."""

    def __init__(self, inner, kernel):
        self.inner, self.kernel = inner, kernel

    def build(self, variables):
        self.inner.build(variables)

    @property
    def variables(self):
        return self.inner.variables

    def apply(self, grads, variables):
        self.inner.apply(grads, variables)
        self.kernel.assign(_normalized(self.kernel.value))

    def stateless_apply(self, opt_values, grads, values):
        values, opt_values = self.inner.stateless_apply(opt_values, grads, values)
        return [_normalized(values[0])] + list(values[1:]), opt_values


def _normalized(k):
    return k / keras.ops.sqrt(keras.ops.sum(k * k))


def test_the_count_sees_an_extra_pass():
    sgd = ARMS["SGD(ExpLR)"][0]
    plain, normed = passes(sgd), passes(lambda k, b: _NormalizeAfter(sgd(k, b), k))
    assert plain, "the count finds the update's own passes"
    assert len(normed) > len(plain), (plain, normed)


@pytest.mark.parametrize("arm", [name for name, (_, counterpart) in ARMS.items()
                                 if counterpart is not None and not name.startswith("keras ")])
def test_no_more_weight_passes_than_stock_keras(arm):
    counterpart = ARMS[arm][1]
    ours, theirs = passes(ARMS[arm][0]), passes(ARMS[counterpart][0])
    allowed = len(theirs) + EXTRA_PASSES.get((BACKEND, arm), 0)
    assert len(ours) <= allowed, (
        f"{arm}: {len(ours)} kernel-sized passes per update {ours}, against {len(theirs)} {theirs} "
        f"for {counterpart}")
