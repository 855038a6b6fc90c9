"""Time of one optimizer update, every package optimizer and wrapper against stock Keras.

Each arm updates the same float32 variables (a 4096×4096 kernel, 16.8M
parameters, and a 4096 bias) with the same fixed gradient, in the mode given:

    python benchmarks/update_step.py --backend tensorflow --mode graph   # tf.function
    python benchmarks/update_step.py --backend tensorflow --mode xla     # tf.function(jit_compile=True)
    python benchmarks/update_step.py --backend jax --mode jit            # jax.jit(stateless_apply), donated
    python benchmarks/update_step.py --backend torch --mode eager        # (torch: eager)

Every arm is built and compiled once; then the arms take turns, round-robin in
one run (the order reversed every other round, so that drifts in machine speed
cancel), each turn timing --steps updates. The script prints, per arm, the
median time per update and two paired ratios: to `keras.optimizers.SGD(0.1,
momentum=0.9, weight_decay=5e-4)` (the issue's table) and to the arm's stock
Keras counterpart doing the same math (for a wrapper: the optimizer it wraps).
A paired ratio is the median, over rounds, of the arm's time over the other
arm's time in the same round, with a distribution-free 95 % confidence interval
of that median (binomial order statistics), so that a slow round slows both.
Machines are noisy: compare ratios measured side by side, never seconds
across runs, and use enough --repeats (>= 6 for an interval).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default="tensorflow")
    p.add_argument("--mode", choices=["graph", "xla", "jit", "eager"], default=None,
                   help="tensorflow: graph (default), xla or eager; jax: jit (default) or eager; torch: eager")
    p.add_argument("--repeats", type=int, default=15, help="round-robin rounds (median taken)")
    p.add_argument("--steps", type=int, default=10, help="updates timed per arm per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates per arm before the rounds")
    p.add_argument("--size", type=int, default=4096, help="the kernel is size×size")
    p.add_argument("--arms", default=None, help="semicolon-separated subset of the arms (names as printed)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--table", nargs="+", default=None, metavar="JSON",
                   help="print the markdown table of these result files (one column per file) and exit")
    args = p.parse_args()
    if args.table:
        print(markdown_table(args.table))
        raise SystemExit(0)
    allowed = {"tensorflow": ("graph", "xla", "eager"), "jax": ("jit", "eager"), "torch": ("eager",)}
    args.mode = args.mode or allowed[args.backend][0]
    if args.mode not in allowed[args.backend]:
        p.error(f"--mode {args.mode} is not a mode of --backend {args.backend}; "
                f"valid: {', '.join(allowed[args.backend])}")
    for flag in ("repeats", "steps", "size"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be an integer >= 1. Received: {getattr(args, flag)}")
    if args.warmup < 1:
        p.error(f"--warmup must be an integer >= 1 (compilation). Received: {args.warmup}")
    return args


def paired_ratio(times, other):
    """Median over rounds of times[i] / other[i], and its 95 % interval (None below 6 rounds).

    The interval is the distribution-free one for a median: order statistics
    j < k of the n per-round ratios with P(j <= Binomial(n, 1/2) < k) >= 0.95.
    """
    ratios = sorted(a / b for a, b in zip(times, other))
    n = len(ratios)
    median = statistics.median(ratios)
    cdf, j = 0.0, 0
    while cdf + math.comb(n, j) / 2 ** n <= 0.025:  # the largest j with P(B < j) <= 2.5 %
        cdf += math.comb(n, j) / 2 ** n
        j += 1
    if j == 0:
        return median, None
    return median, (ratios[j - 1], ratios[n - j])


def markdown_table(paths):
    """Two markdown tables, one column per result file: every arm's paired ratio to the
    reference (the issue's table), then each package arm's paired ratio to its stock
    counterpart with the 95 % interval."""
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    arms = []
    for r in results:
        arms += [row["arm"] for row in r["rows"] if row["arm"] not in arms]
    columns = [f"{r['backend']} {r['mode']} ({r['device']})" for r in results]

    def table(first, rows, cell):
        lines = ["| " + " | ".join(first + columns) + " |", "|" + "---|" * (len(first) + len(columns))]
        for arm in rows:
            found = [next((x for x in r["rows"] if x["arm"] == arm), None) for r in results]
            counterpart = next((x["counterpart"] for x in found if x is not None), None)
            head = [f"`{arm}`"] + ([f"`{counterpart}`"] if len(first) > 1 else [])
            lines.append("| " + " | ".join(head + ["" if x is None else cell(x) for x in found]) + " |")
        return "\n".join(lines)

    def to_counterpart(row):
        ci = row.get("ratio_to_counterpart_ci")
        return f"{row['ratio_to_counterpart']:.3f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")

    paired = [a for a in arms if any(x["arm"] == a and x["counterpart"] for r in results for x in r["rows"])]
    return (f"Ratio to `{results[0]['reference']}`:\n\n"
            + table(["Arm"], arms, lambda row: f"{row['ratio_to_reference']:.3f}")
            + "\n\nRatio to the stock counterpart doing the same math [95 % interval]:\n\n"
            + table(["Arm", "Counterpart"], paired, to_counterpart))


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["KERAS_BACKEND"] = ARGS.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_explr import optimizers, schedules  # noqa: E402

LR, WD, MOM = 0.1, 5e-4, 0.9
REFERENCE = "keras SGD(momentum, weight_decay)"


def _explr():
    return schedules.ExpLR.from_weight_decay(LR, WD, MOM)


def _keras_exp_decay():
    # The same exponential schedule, computed the stock Keras way (float32 pow).
    return keras.optimizers.schedules.ExponentialDecay(LR, decay_steps=1, decay_rate=_explr().growth_rate)


def _cosine():
    return keras.optimizers.schedules.CosineDecay(0.0, 900, warmup_target=LR, warmup_steps=100)


class _ByHand:
    """Two stock optimizers, each applied by hand to its own variables (the kernel / the rest):
    the stock-Keras way to do what `keras_explr.optimizers.Partitioned` does."""

    def __init__(self, group_optimizer, rest_optimizer, kernel):
        self.optimizers, self.kernel = (group_optimizer, rest_optimizer), kernel

    def _split(self, xs, variables):
        inside = [v is self.kernel for v in variables]
        return ([x for x, i in zip(xs, inside) if i], [x for x, i in zip(xs, inside) if not i])

    def build(self, variables):
        for opt, part in zip(self.optimizers, self._split(variables, variables)):
            opt.build(part)
        self._variables = list(variables)

    @property
    def variables(self):
        return self.optimizers[0].variables + self.optimizers[1].variables

    def apply(self, grads, variables):
        for opt, g, v in zip(self.optimizers, self._split(grads, variables), self._split(variables, variables)):
            opt.apply(g, v)

    def stateless_apply(self, opt_values, grads, values):
        n = len(self.optimizers[0].variables)
        out_values, out_opt = [None] * len(values), []
        index = self._split(list(range(len(values))), self._variables)
        for opt, own, idx in zip(self.optimizers, (opt_values[:n], opt_values[n:]), index):
            new, own = opt.stateless_apply(own, [grads[i] for i in idx], [values[i] for i in idx])
            for i, x in zip(idx, new):
                out_values[i] = x
            out_opt += list(own)
        return out_values, out_opt


def arms():
    """name -> (factory(kernel, bias), counterpart arm)."""
    K = keras.optimizers
    return {
        REFERENCE: (lambda k, b: K.SGD(LR, momentum=MOM, weight_decay=WD), None),
        # The noise control: the reference again, compared with itself (the paired ratio
        # of two identical arms: how far from 1.00 the run's noise alone moves a ratio).
        "keras SGD(momentum, weight_decay), a second copy": (
            lambda k, b: K.SGD(LR, momentum=MOM, weight_decay=WD), REFERENCE),
        "keras SGD(ExponentialDecay)": (lambda k, b: K.SGD(_keras_exp_decay(), momentum=MOM), None),
        "keras SGD(PiecewiseConstantDecay)": (lambda k, b: K.SGD(K.schedules.PiecewiseConstantDecay(
            [300, 600], [LR, LR / 10, LR / 100]), momentum=MOM), None),
        "keras SGD(CosineDecay)": (lambda k, b: K.SGD(_cosine(), momentum=MOM), None),
        "keras SGD(ExponentialDecay, weight_decay)": (
            lambda k, b: K.SGD(_keras_exp_decay(), momentum=MOM, weight_decay=WD), None),
        # Coupled L2 (λθ added to the gradient, in the compiled step): the same math and the
        # same memory traffic as the paper's SGD (Keras's weight_decay is decoupled).
        "keras SGD(momentum) on g + λθ": (lambda k, b: (K.SGD(LR, momentum=MOM), WD), None),
        "SGD(momentum, weight_decay)": (
            lambda k, b: optimizers.SGD(LR, momentum=MOM, weight_decay=WD), "keras SGD(momentum) on g + λθ"),
        "SGD(ExpLR)": (lambda k, b: optimizers.SGD(_explr(), momentum=MOM), "keras SGD(ExponentialDecay)"),
        "SGD(ScaledSchedule(ExpLR))": (
            lambda k, b: optimizers.SGD(schedules.ScaledSchedule(_explr(), 0.5), momentum=MOM),
            "keras SGD(ExponentialDecay)"),
        "SGD(TEXP)": (lambda k, b: optimizers.SGD(
            schedules.TEXP([300, 600], [LR, LR / 10, LR / 100], WD, MOM), momentum=MOM),
            "keras SGD(PiecewiseConstantDecay)"),
        "SGD(EquivalentSchedule(CosineDecay))": (lambda k, b: optimizers.SGD(
            schedules.EquivalentSchedule(_cosine(), WD, MOM, total_steps=1000), momentum=MOM),
            "keras SGD(CosineDecay)"),
        "ReparamWeightDecay(keras SGD(momentum))": (lambda k, b: optimizers.ReparamWeightDecay(
            K.SGD(LR, momentum=MOM), LR * WD), REFERENCE),
        "ReparamWeightDecay(keras SGD(ExponentialDecay), lr_exponent=1)": (
            lambda k, b: optimizers.ReparamWeightDecay(
                K.SGD(_keras_exp_decay(), momentum=MOM), LR * WD, lr_exponent=1),
            "keras SGD(ExponentialDecay, weight_decay)"),
        "ReparamWeightDecay(keras SGD, weight_decay=schedule)": (
            lambda k, b: optimizers.ReparamWeightDecay(
                K.SGD(LR, momentum=MOM), K.schedules.ExponentialDecay(LR * WD, 1000, 0.5)),
            REFERENCE),
        "Renormalize(SGD(ExpLR), every_n_steps=1000)": (
            lambda k, b: optimizers.Renormalize(optimizers.SGD(_explr(), momentum=MOM), every_n_steps=1000),
            "SGD(ExpLR)"),
        "Renormalize(SGD(ExpLR), max_norm)": (
            lambda k, b: optimizers.Renormalize(optimizers.SGD(_explr(), momentum=MOM), max_norm=1e30),
            "SGD(ExpLR)"),
        "keras SGD(ExponentialDecay) + keras SGD, by hand": (
            lambda k, b: _ByHand(K.SGD(_keras_exp_decay(), momentum=MOM),
                                 K.SGD(LR, momentum=MOM, weight_decay=WD), k), None),
        "Partitioned(SGD(ExpLR), keras SGD)": (
            lambda k, b: optimizers.Partitioned(optimizers.SGD(_explr(), momentum=MOM),
                                                K.SGD(LR, momentum=MOM, weight_decay=WD), group=[k]),
            "keras SGD(ExponentialDecay) + keras SGD, by hand"),
    }


class Arm:
    """One optimizer on its own copy of the variables, with a compiled update."""

    def __init__(self, factory, size, mode):
        rng = np.random.default_rng(0)
        self.mode = mode
        self.kernel = keras.Variable(rng.standard_normal((size, size)).astype("float32"), name="kernel")
        self.bias = keras.Variable(np.zeros(size, "float32"), name="bias")
        self.variables = [self.kernel, self.bias]
        self.grads = [keras.ops.convert_to_tensor(1e-3 * rng.standard_normal(v.shape).astype("float32"))
                      for v in self.variables]
        self.optimizer = factory(self.kernel, self.bias)
        self.l2 = 0.0
        if isinstance(self.optimizer, tuple):
            self.optimizer, self.l2 = self.optimizer
        self.optimizer.build(self.variables)
        self.step = self._compile()

    def _compile(self):
        backend = keras.backend.backend()
        opt, variables, grads, l2 = self.optimizer, self.variables, self.grads, self.l2

        def coupled(grads, values):
            return grads if not l2 else [g + l2 * v for g, v in zip(grads, values)]

        if backend == "tensorflow":
            import tensorflow as tf

            def update():
                opt.apply(coupled(grads, [v.value for v in variables]), variables)

            if self.mode == "eager":
                return update
            return tf.function(update, jit_compile=self.mode == "xla")
        if backend == "jax" and self.mode == "jit":
            import jax

            # What model.fit does on JAX: stateless_apply under jit, state donated.
            @jax.jit
            def pure(opt_values, values, grads):
                return opt.stateless_apply(opt_values, coupled(grads, values), values)

            pure = self._jitted = jax.jit(pure.__wrapped__, donate_argnums=(0, 1))
            state = {"opt": [v.value for v in opt.variables], "vars": [v.value for v in variables]}

            def update():
                state["vars"], state["opt"] = pure(state["opt"], state["vars"], grads)

            self._state = state
            return update
        import torch

        def update():
            with torch.no_grad():  # as Keras's torch trainer applies the optimizer
                opt.apply(coupled(grads, [v.value for v in variables]), variables)

        return update

    def optimized_hlo(self):
        """The optimized XLA module of this arm's update (TF --mode xla, JAX --mode jit);
        tests/test_compiled_update.py counts its passes over the weights."""
        if keras.backend.backend() == "tensorflow":
            return self.step.experimental_get_compiler_ir()(stage="optimized_hlo")
        state = self._state
        return self._jitted.lower(state["opt"], state["vars"], self.grads).compile().as_text()

    def sync(self):
        backend = keras.backend.backend()
        if backend == "jax" and self.mode == "jit":
            self._state["vars"][0].block_until_ready()
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
        else:
            keras.ops.convert_to_numpy(self.kernel.value[0, 0])

    def time(self, steps):
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return (time.perf_counter() - start) / steps


def main(args):
    table = arms()
    names = list(table) if args.arms is None else [n.strip() for n in args.arms.split(";")]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; valid: {list(table)}")
    for n in names:  # every counterpart is timed too (the list grows while we walk it)
        ref = table[n][1]
        if ref is not None and ref not in names:
            names.append(ref)
    if REFERENCE not in names:
        names.append(REFERENCE)
    built = {}
    for n in names:
        built[n] = Arm(table[n][0], args.size, args.mode)
        for _ in range(args.warmup):
            built[n].step()
        built[n].sync()
    times = {n: [] for n in names}
    for r in range(args.repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(built[n].time(args.steps))
    med = {n: statistics.median(v) for n, v in times.items()}
    to_ref = {n: paired_ratio(times[n], times[REFERENCE]) for n in names}
    to_cp = {n: paired_ratio(times[n], times[table[n][1]]) for n in names if table[n][1] is not None}
    rows = []
    device = "cpu"
    if keras.backend.backend() == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0].platform
    else:
        import tensorflow as tf

        device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    print(f"backend={keras.backend.backend()} mode={args.mode} device={device} kernel={args.size}x{args.size} "
          f"float32; median of {args.repeats} round-robin rounds of {args.steps} updates")
    print(f"{'arm':66s} {'ms/update':>9s} {'vs ref':>7s} {'vs counterpart [95 % CI]':>30s}")
    for n in names:
        ref = table[n][1]
        row = {"arm": n, "ms_per_update": 1e3 * med[n], "ratio_to_reference": to_ref[n][0],
               "counterpart": ref, "ratio_to_counterpart": None if ref is None else to_cp[n][0],
               "ratio_to_counterpart_ci": None if ref is None else to_cp[n][1],
               "spread_ms": [1e3 * min(times[n]), 1e3 * max(times[n])],
               "round_ms": [1e3 * t for t in times[n]]}
        rows.append(row)
        vs = ""
        if ref is not None:
            ci = row["ratio_to_counterpart_ci"]
            vs = f"{row['ratio_to_counterpart']:.3f}" + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")
            vs += f" ({ref.split('(')[0] if ref != REFERENCE else 'ref'})"
        print(f"{n:66s} {row['ms_per_update']:9.2f} {row['ratio_to_reference']:7.3f} {vs:>30s}")
    if args.json:
        out = {"backend": keras.backend.backend(), "mode": args.mode, "device": device, "size": args.size,
               "repeats": args.repeats, "steps": args.steps, "reference": REFERENCE,
               "keras": keras.__version__, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(ARGS)
