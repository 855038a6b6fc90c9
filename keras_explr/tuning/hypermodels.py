"""Study v3's KerasTuner comparison: searching in (η, λ_old) or in (η, λ_new), with the same trial budget.

`GridTuner` is a `keras_tuner.engine.base_tuner.BaseTuner` whose trials read their score from the
constant-LR grid of the study (a tabular benchmark): the proposal (η, λ) becomes λ_new = λ (new) or
η·λ (old), the nearest cell in log space is looked up, and the score of one seed drawn at random is
returned, as a real trial would see one noisy run. The best cell a search finds is credited with its
seed-mean score (what a user gets when rerunning it). `TrainingTuner` runs real trials of the same
searches (each trial trains its cell alone with `model.fit` and the optimizer `hp_optimizer` builds,
`fit_cell`), to confirm that the table gives what training gives (within `REAL_TOLERANCE`).

Boxes: the same centre and the same log-area in both parameterizations, each inside the grid: η over
the grid's learning rates, λ_new (or λ_old) over a window of (λ_new span − η span) decades about the
grid's centre. Searches: `RandomSearch` and `BayesianOptimization` oracles, `plan.tuner_repeats`
searches of `plan.tuner_trials` trials each, every search with its own oracle seed. The two boxes
cannot cover the same cells (a rectangle in one parameterization is a parallelogram in the other):
the record says what each can reach and how far each search ends from its own box's best.
"""

import math

import numpy as np

from keras_explr._optional import require


REAL_TOLERANCE = 0.02  # nats: a real trial confirms the table's cell within the searches' "within" margin


def boxes(plan):
    """{"new": ((η_lo, η_hi), (λ_new_lo, λ_new_hi)), "old": ((η_lo, η_hi), (λ_old_lo, λ_old_hi))}."""
    (xl, xh), (yl, yh) = plan.sgd_lr, plan.wd_new
    width = (yh - yl) - (xh - xl)
    if width <= 0:
        raise ValueError("the λ_new axis must span more decades than the η axis for equal boxes inside the grid")
    xc, yc = (xl + xh) / 2, (yl + yh) / 2
    eta = (10 ** xl, 10 ** xh)
    return {"new": (eta, (10 ** (yc - width / 2), 10 ** (yc + width / 2))),
            "old": (eta, (10 ** (yc - xc - width / 2), 10 ** (yc - xc + width / 2)))}


def nearest_cell(grid, lr, wd, parameterization):
    """(i, j) of the grid cell nearest (in log10) to a proposal."""
    lam_new = wd if parameterization == "new" else lr * wd
    i = int(np.argmin(np.abs(grid.x - math.log10(lr))))
    j = int(np.argmin(np.abs(grid.y - math.log10(lam_new))))
    return i, j


def reachable_cells(grid, box, parameterization, n=201):
    """The set of grid cells (i, j) a search in `box` can visit: the nearest cells of a dense log-grid of
    proposals covering the box."""
    (a, b), (c, d) = box
    lrs = np.logspace(math.log10(a), math.log10(b), n)
    wds = np.logspace(math.log10(c), math.log10(d), n)
    return {nearest_cell(grid, lr, wd, parameterization) for lr in lrs for wd in wds}


def _tuner_classes():
    keras_tuner = require("keras_tuner", "tuner", "the study's KerasTuner comparison")
    from keras_tuner.src.engine import base_tuner

    class GridTuner(base_tuner.BaseTuner):
        """Trials read from the grid: nearest cell, one seed drawn per trial."""

        def __init__(self, oracle, grid, parameterization, rng, **kwargs):
            super().__init__(oracle, **kwargs)
            self.grid, self.parameterization, self.rng = grid, parameterization, rng
            self.visited = []

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            i, j = nearest_cell(self.grid, hp["learning_rate"], hp["weight_decay"], self.parameterization)
            r = int(self.rng.integers(self.grid.S.shape[-1]))
            score = float(self.grid.S[i, j, r])
            self.visited.append((score, i, j, r))
            return {"score": score}

    class TrainingTuner(GridTuner):
        """Real trials: the nearest cell (one seed drawn per trial) trained alone the way a user trains it,
        `model.fit` with the optimizer `hp_optimizer` builds in the search's parameterization (`fit_cell`)."""

        def __init__(self, oracle, grid, parameterization, rng, data, steps, hidden, batch_size, **kwargs):
            super().__init__(oracle, grid, parameterization, rng, **kwargs)
            self.data, self.steps, self.hidden, self.batch_size = data, steps, hidden, batch_size

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            i, j = nearest_cell(self.grid, hp["learning_rate"], hp["weight_decay"], self.parameterization)
            r = int(self.rng.integers(self.grid.S.shape[-1]))
            score = fit_cell(self.grid.lrs[i], self.grid.wds[j], self.grid.seeds[r], self.parameterization,
                             self.steps, self.data, self.hidden, self.batch_size)
            self.visited.append((score, i, j, r, float(self.grid.S[i, j, r])))
            return {"score": score}

    return keras_tuner, GridTuner, TrainingTuner


def fit_cell(learning_rate, lambda_new, seed, parameterization, steps, data, hidden=(64, 64), batch_size=128):
    """The score (− validation cross-entropy, `keras_explr.tuning.block.score_model`) of one constant-LR cell of
    the invariant net trained by `model.fit`, with the optimizer `keras_explr.tuning.hp_optimizer` builds
    in `parameterization` with fixed values: ``ReparamWeightDecay(SGD(η, momentum=0.9), λ_new)`` ("new") or
    Keras's own ``SGD(η, momentum=0.9, weight_decay=λ_new/η)`` ("old"); the seed's initialization and batch
    order (`block.build_net`, `block.batch_order`). Independent of the block trainer that fills the table."""
    import keras
    import keras_tuner

    from keras_explr.tuning import block
    from keras_explr.tuning.search import hp_optimizer

    (x, y), _ = data
    wd = lambda_new if parameterization == "new" else lambda_new / learning_rate
    opt = hp_optimizer(keras_tuner.HyperParameters(), "sgd", learning_rate=learning_rate, weight_decay=wd,
                       parameterization=parameterization, momentum=0.9)
    net = block.build_net(int(seed), tuple(hidden), x.shape[1], int(np.max(y)) + 1, True)
    model = keras.Model(net.input, net.outputs[0])
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    order = block.batch_order(int(seed), len(x), batch_size, steps)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return len(order)

        def __getitem__(self, k):
            return x[order[k]], y[order[k]]

    model.fit(Batches(), epochs=1, shuffle=False, verbose=0)
    return -block.score_model(net, data)


def _oracle(keras_tuner, kind, box, trials, seed):
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", box[0][0], box[0][1], sampling="log")
    hp.Float("weight_decay", box[1][0], box[1][1], sampling="log")
    objective = keras_tuner.Objective("score", "max")
    cls = {"random": keras_tuner.oracles.RandomSearchOracle,
           "bayesian": keras_tuner.oracles.BayesianOptimizationOracle}[kind]
    return cls(objective=objective, max_trials=trials, hyperparameters=hp, tune_new_entries=False, seed=seed)


def _search(tuner):
    """tuner.search() without KerasTuner's per-trial printout (the study prints its own progress)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        tuner.search()
    return tuner


def _mean_ci(values, n_boot, seed=0):
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    reps = [v[rng.integers(0, len(v), len(v))].mean() for _ in range(n_boot)]
    return float(v.mean()), [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]


def _diff_ci(a, b, n_boot, seed=0):
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    reps = [a[rng.integers(0, len(a), len(a))].mean() - b[rng.integers(0, len(b), len(b))].mean()
            for _ in range(n_boot)]
    return {"value": float(a.mean() - b.mean()),
            "ci": [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]}


def tuner_study(plan, results, data, directory, log=print):
    """The tabular searches at every budget of `plan.tuner_budgets` that the constant grid has, and one real
    search per parameterization; returns the "tuner" record of results.json."""
    from keras_explr.tuning import report

    keras_tuner, GridTuner, TrainingTuner = _tuner_classes()
    bx = boxes(plan)
    out = {"boxes": {k: [list(v[0]), list(v[1])] for k, v in bx.items()}, "tabular": {},
           "description": (
               f"Boxes of equal log-area and the same centre: η in [{bx['new'][0][0]:.3g}, {bx['new'][0][1]:.3g}], "
               f"λ_new in [{bx['new'][1][0]:.3g}, {bx['new'][1][1]:.3g}] or λ_old in [{bx['old'][1][0]:.3g}, "
               f"{bx['old'][1][1]:.3g}]. Each trial reads the constant-LR grid's nearest cell and one seed drawn at "
               "random; a search's result is the seed-mean score of the cell its best trial visited. Intervals: "
               "bootstrap over searches.")}
    available = set(report.budgets(results, "constant"))
    for B in plan.tuner_budgets:
        if B not in available:
            continue
        grid = report.Grid(results["cells"], "constant", B)
        best = float(grid.A.max())
        found = {}
        for kind in ("random", "bayesian"):
            for param in ("new", "old"):
                vals = []
                for r in range(plan.tuner_repeats):
                    seed = 1000 * r + 7
                    tuner = _search(GridTuner(_oracle(keras_tuner, kind, bx[param], plan.tuner_trials, seed), grid,
                                              param, np.random.default_rng(seed), directory=directory,
                                              project_name=f"{kind}_{param}_{B}_{r}", overwrite=True))
                    score, i, j, _ = max(tuner.visited, key=lambda v: v[0])
                    vals.append(float(grid.A[i, j]))
                found[f"{kind}_{param}"] = vals
            log(f"  tuner {kind}, {B} steps: new {np.mean(found[f'{kind}_new']):.4f}, "
                f"old {np.mean(found[f'{kind}_old']):.4f} (grid best {best:.4f})")
        # What each box can reach: a search is judged against its own box's best cell too, so that P6 does
        # not only measure where the boxes sit.
        box_best = {}
        for param in ("new", "old"):
            cells = reachable_cells(grid, bx[param], param)
            box_best[param] = {"best": float(max(grid.A[c] for c in cells)), "cells": len(cells),
                               "holds_grid_best": bool(np.unravel_index(np.argmax(grid.A), grid.A.shape) in cells)}
        summary = {}
        for k, v in found.items():
            m, ci = _mean_ci(v, plan.n_boot)
            own = box_best[k.split("_")[1]]["best"]
            summary[k] = {"mean": m, "ci": ci, "within": float(np.mean(np.asarray(v) >= best - 0.02)),
                          "box_shortfall": float(own - np.mean(v))}
        out["tabular"][str(B)] = {
            "trials": plan.tuner_trials, "repeats": plan.tuner_repeats, "grid_best": best, "best_found": found,
            "box_best": box_best, "summary": summary,
            "difference": {kind: _diff_ci(found[f"{kind}_new"], found[f"{kind}_old"], plan.n_boot)
                           for kind in ("random", "bayesian")}}
    B = plan.tuner_real_budget
    if B in available:
        grid = report.Grid(results["cells"], "constant", B)
        real = {}
        for param in ("new", "old"):
            tuner = _search(TrainingTuner(_oracle(keras_tuner, "random", bx[param], plan.tuner_real_trials, 11), grid,
                                          param, np.random.default_rng(11), data, B, tuple(plan.hidden),
                                          plan.batch_size, directory=directory, project_name=f"real_{param}",
                                          overwrite=True))
            real[param] = [{"score": v[0], "table": v[4], "learning_rate": grid.lrs[v[1]],
                            "lambda_new": grid.wds[v[2]], "seed": grid.seeds[v[3]]} for v in tuner.visited]
        diffs = [abs(t["score"] - t["table"]) for p in real.values() for t in p]
        real["max_abs_difference"] = float(max(diffs))
        real["tolerance"] = REAL_TOLERANCE
        real["confirms_table"] = bool(real["max_abs_difference"] <= REAL_TOLERANCE)
        real["summary"] = (
            f"{sum(len(v) for k, v in real.items() if k in ('new', 'old'))} trials "
            f"({plan.tuner_real_trials} per parameterization, RandomSearch, {B} steps); each trained its cell alone "
            "with `model.fit` and the optimizer `hp_optimizer` builds (ReparamWeightDecay(SGD) in (η, λ_new), "
            "Keras's SGD(weight_decay=λ_old) in (η, λ_old)), not the block trainer that filled the table, and "
            f"scored {real['max_abs_difference']:.2g} nats at most from the table's value of the same cell and seed: "
            + ("the table is confirmed" if real["confirms_table"] else "**the table is not confirmed**")
            + f" (tolerance {REAL_TOLERANCE} nats, the margin of the searches' 'within' column).")
        log("  real searches: " + real["summary"])
        out["real"] = real
    return out
