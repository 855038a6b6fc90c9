"""The study's analysis, heat maps (PNG) and Markdown report.

`analyze` turns the per-seed results of every arm into metrics with bootstrap
intervals; `heatmaps` draws the two parameterizations side by side with the
fitted ridge; `markdown` writes the report. Every number in the report is
computed from the results; the prose around it only states what the numbers
and their intervals say (e.g. whether an interval contains −1).
"""

import math

import numpy as np

from keras_explr.tuning import metrics

SCORES = ("neg_loss", "accuracy")


def clean_json(o):
    """JSON without NaN/inf (null instead), numpy scalars as Python numbers."""
    if isinstance(o, dict):
        return {k: clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean_json(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def score_of(result, score):
    """The score array of a `GridResult`: accuracy, or minus the cross-entropy."""
    if score == "accuracy":
        return result.accuracy
    if score == "neg_loss":
        return -result.loss
    raise ValueError(f"`score` must be one of {SCORES}. Received: score={score!r}")


def _lam_new_cells(result):
    """λ_new = η·λ_old of every cell of a rectangular (η, λ_old) grid."""
    return np.asarray(result.learning_rates)[:, None] * np.asarray(result.weight_decays)[None, :]


def _grid_metrics(scores, lrs, wds, delta, n_boot, rectangular=True):
    out = {"M1_ridge_slope": metrics.ridge_slope(scores, lrs, wds, delta=delta, n_boot=n_boot).as_dict(),
           "M2_good_region_correlation": metrics.good_region_correlation(scores, lrs, wds, n_boot=n_boot).as_dict()}
    if rectangular:
        out["M3_transfer_regret"] = metrics.transfer_regret(scores, lrs, wds, delta=delta, n_boot=n_boot).as_dict()
        out["M1_transposed_slope"] = metrics.ridge_slope(np.swapaxes(scores, 0, 1), wds, lrs, delta=delta,
                                                         n_boot=n_boot).as_dict()
    return out


def _equilibration(result, steps, coords, momentum):
    """Cells whose run never feels the decay in full: t·d/(1 − γ) < 1.

    d is the decay per step at the initial LR (η·λ_old, or λ_new); coupled
    decay enters the momentum buffer, which amplifies it by 1/(1 − γ) in steady
    state, and the norm relaxes over ~(1 − γ)/(2d) steps (docs/math.md#rotational-equilibrium).
    """
    lrs = np.asarray(result.learning_rates)[:, None]
    wds = np.asarray(result.weight_decays)[None, :]
    per_step = lrs * wds if coords == "old" else np.broadcast_to(wds, (lrs.shape[0], wds.shape[1]))
    under = steps * per_step / (1 - momentum) < 1
    return {"cells": int(under.size), "cells_t_decay_below_1": int(under.sum())}


def analyze(results, plan, score="neg_loss", n_boot=2000):
    """Metrics of every arm of a study.

    Args:
      results: {name: GridResult} as the study writes them.
      plan: the study plan (dict) with "delta" (per score), "x_search"
        (M5's x, in accuracy), "total_steps".
      score: "neg_loss" (primary; minus the validation cross-entropy) or "accuracy".
      n_boot: bootstrap replicates.
    """
    delta = plan["delta"][score]
    out = {"score": score, "delta": delta}
    steps = plan["total_steps"]
    if "constant_old" in results:
        r = results["constant_old"]
        s = score_of(r, score)
        arm = {"old": _grid_metrics(s, r.learning_rates, r.weight_decays, delta, n_boot),
               "new_same_runs": _grid_metrics(s, r.learning_rates, _lam_new_cells(r), delta, n_boot,
                                              rectangular=False),
               "equilibration": _equilibration(r, steps, "old", plan["momentum"])}
        A = metrics.mean_grid(s)
        i, j = np.unravel_index(np.argmax(A), A.shape)
        arm["best_cell"] = {"learning_rate": r.learning_rates[i], "weight_decay_old": r.weight_decays[j],
                            "intrinsic_lr": r.learning_rates[i] * r.weight_decays[j], "score": float(A[i, j])}
        arm["grid_search_cost"] = metrics.search_cost(metrics.mean_grid(r.accuracy), plan["x_search"],
                                                      n_boot=0).as_dict()
        out["constant"] = arm
    if "diagonal" in results:
        r = results["diagonal"]
        s = score_of(r, score)[:, 0, :]
        out["diagonal"] = {k: v.as_dict() for k, v in metrics.diagonal_flatness(
            s, r.learning_rates, n_boot=n_boot).items()}
        out["diagonal"]["learning_rates"] = r.learning_rates
        out["diagonal"]["intrinsic_lr"] = r.config["diagonal"]
        out["diagonal"]["mean_scores"] = metrics.mean_grid(s[:, None, :])[:, 0].tolist()
        out["diagonal"]["decades"] = float(np.log10(max(r.learning_rates) / min(r.learning_rates)))
    if "step_old" in results and "step_new_constant" in results:
        a, b = results["step_old"], results["step_new_constant"]
        sa, sb = score_of(a, score), score_of(b, score)
        arm = {"standard": _grid_metrics(sa, a.learning_rates, a.weight_decays, delta, n_boot),
               "new_constant": _grid_metrics(sb, b.learning_rates, b.weight_decays, delta, n_boot),
               "new_follow_same_runs_as_standard": _grid_metrics(
                   sa, a.learning_rates, _lam_new_cells(a), delta, n_boot, rectangular=False),
               "equilibration_standard": _equilibration(a, steps, "old", plan["momentum"]),
               "equilibration_new_constant": _equilibration(b, steps, "new", plan["momentum"])}
        if sa.shape == sb.shape and sa.shape[-1] >= 2:
            arm["paired_difference_new_constant_minus_standard"] = {
                "M1_ridge_slope": metrics.paired_difference(
                    metrics.slope_statistic(b.learning_rates, b.weight_decays, delta), sb, sa, n_boot=n_boot,
                    statistic_b=metrics.slope_statistic(a.learning_rates, a.weight_decays, delta)).as_dict(),
            }
            arm["paired_difference_new_constant_minus_standard"]["M1_ridge_slope"]["note"] = (
                "statistic(new_constant grid) − statistic(standard grid), seeds paired cell by cell")
        for k, r in (("best_standard", a), ("best_new_constant", b)):
            A = metrics.mean_grid(score_of(r, score))
            acc = metrics.mean_grid(r.accuracy)
            i, j = np.unravel_index(np.argmax(A), A.shape)
            arm[k] = {"learning_rate": r.learning_rates[i], "weight_decay": r.weight_decays[j],
                      "score": float(A[i, j]), "accuracy": float(acc[i, j])}
        out["scheduled"] = arm
    if "search_old" in results and "search_new" in results:
        a, b = results["search_old"], results["search_new"]
        va, vb = a.accuracy.mean(-1), b.accuracy.mean(-1)
        ref = float(np.nanmax(np.concatenate([va, vb])))
        x = plan["x_search"]
        arm = {"reference_best_accuracy": ref, "x": x}
        n = np.arange(1, max(len(va), len(vb)) + 1)
        for k, v, r in (("old", va, a), ("new", vb, b)):
            arm[k] = {"box": {"learning_rate": r.learning_rates, "weight_decay": r.weight_decays},
                      "cost": metrics.search_cost(v, x, reference=ref, n_boot=n_boot).as_dict(),
                      "trials_to_within_in_run_order": metrics.trials_to_within(v, x, reference=ref),
                      "best": float(np.nanmax(v)),
                      "dodge_expected_best_of_n": metrics.expected_best_of_n(v, n).tolist()}
        rng = np.random.default_rng(0)
        diffs = []  # unpaired bootstrap (independent trials) of p_new − p_old
        for _ in range(n_boot):
            pa = metrics.within_fraction(va[rng.integers(0, len(va), len(va))], x, ref)
            pb = metrics.within_fraction(vb[rng.integers(0, len(vb), len(vb))], x, ref)
            diffs.append(pb - pa)
        d = metrics.within_fraction(vb, x, ref) - metrics.within_fraction(va, x, ref)
        arm["p_new_minus_p_old"] = {"value": d, "ci": [float(np.percentile(diffs, 2.5)),
                                                        float(np.percentile(diffs, 97.5))],
                                    "note": "independent trials: unpaired bootstrap"}
        out["search"] = arm
    return out


# ------------------------------------------------------------------- plots
def _edges(logv):
    logv = np.asarray(logv, dtype="float64")
    if logv.size == 1:
        return np.array([logv[0] - 0.25, logv[0] + 0.25])
    mid = (logv[1:] + logv[:-1]) / 2
    return np.concatenate([[2 * logv[0] - mid[0]], mid, [2 * logv[-1] - mid[-1]]])


def _panel(ax, A, lrs, wds, ridge, title, sheared=False, vmin=None, vmax=None):
    """One heat map over (log10 η, log10 λ); `sheared`: λ = η·λ_old per cell."""
    x = np.log10(lrs)
    xe = _edges(x)
    if sheared:
        ye_old = _edges(np.log10(wds))
        X, Y = np.meshgrid(xe, ye_old, indexing="ij")
        Y = Y + X  # log λ_new = log η + log λ_old at every corner
    else:
        ye = _edges(np.log10(wds))
        X, Y = np.meshgrid(xe, ye, indexing="ij")
    mesh = ax.pcolormesh(X, Y, A, cmap="viridis", shading="flat", vmin=vmin, vmax=vmax)
    rows = ridge.get("rows", [])
    if rows:
        ax.plot(x[rows], ridge["ridge"], "o", color="white", mec="black", ms=5, label="ridge points")
        if ridge.get("slope") is not None and np.isfinite(ridge["slope"]):
            xx = np.array([x[rows].min(), x[rows].max()])
            ci = ridge.get("ci")
            lab = f"fit: s = {ridge['slope']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            ax.plot(xx, ridge["intercept"] + ridge["slope"] * xx, "-", color="red", lw=2, label=lab)
        ax.legend(loc="lower left", fontsize=7)
    ax.set_xlabel("log10 η")
    ax.set_title(title, fontsize=9)
    return mesh


def heatmaps(path, panels, suptitle):
    """Side-by-side heat maps: panels = [(A, lrs, wds, ridge_dict, title, ylabel, sheared)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    finite = np.concatenate([np.asarray(p[0])[np.isfinite(p[0])].ravel() for p in panels])
    # The colour scale spans the better 75 % of the cells: diverged cells would flatten the rest.
    vmin, vmax = (float(np.quantile(finite, 0.25)), float(finite.max())) if finite.size else (None, None)
    for ax, (A, lrs, wds, ridge, title, ylabel, sheared) in zip(axes[0], panels):
        mesh = _panel(ax, A, lrs, wds, ridge, title, sheared, vmin, vmax)
        ax.set_ylabel(ylabel)
    fig.colorbar(mesh, ax=axes[0].tolist(), shrink=0.85, extend="min")
    fig.suptitle(suptitle, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def study_plots(out_dir, results, analysis):
    """The study's PNGs; returns their paths."""
    import os

    score = analysis["score"]
    lab = "−val cross-entropy" if score == "neg_loss" else "val accuracy"
    paths = []
    if "constant" in analysis:
        r = results["constant_old"]
        A = metrics.mean_grid(score_of(r, score))
        c = analysis["constant"]
        paths.append(heatmaps(os.path.join(out_dir, f"constant_lr_{score}.png"), [
            (A, r.learning_rates, r.weight_decays, c["old"]["M1_ridge_slope"],
             "standard: (η, λ_old)", "log10 λ_old", False),
            (A, r.learning_rates, r.weight_decays, c["new_same_runs"]["M1_ridge_slope"],
             "new: (η, λ_new = ηλ_old), the same runs", "log10 λ_new", True)],
            f"Constant LR, {lab} (mean over seeds). One family of runs in two coordinate systems."))
    if "scheduled" in analysis:
        a, b = results["step_old"], results["step_new_constant"]
        s = analysis["scheduled"]
        paths.append(heatmaps(os.path.join(out_dir, f"step_decay_{score}.png"), [
            (metrics.mean_grid(score_of(a, score)), a.learning_rates, a.weight_decays,
             s["standard"]["M1_ridge_slope"], "standard: λ_old, decay η_t·λ_old", "log10 λ_old", False),
            (metrics.mean_grid(score_of(a, score)), a.learning_rates, a.weight_decays,
             s["new_follow_same_runs_as_standard"]["M1_ridge_slope"],
             "λ_new·η_t/η_0 (= standard, λ_new = η_0 λ_old)", "log10 λ_new", True),
            (metrics.mean_grid(score_of(b, score)), b.learning_rates, b.weight_decays,
             s["new_constant"]["M1_ridge_slope"], "λ_new constant (a different algorithm)", "log10 λ_new",
             False)],
            f"Step decay (η_0 → η_0/10 at 1/2 → η_0/100 at 3/4), {lab}; x axis: log10 η_0"))
    return paths


def search_plot(path, analysis):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = analysis["search"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, style in (("old", "-"), ("new", "--")):
        curve = s[k]["dodge_expected_best_of_n"]
        ax.plot(range(1, len(curve) + 1), curve, style, label=f"{k} box")
    ax.axhline(s["reference_best_accuracy"] - s["x"], color="gray", lw=1, label=f"best − {s['x']:g}")
    ax.set_xlabel("random trials n")
    ax.set_ylabel("expected best val accuracy of n (Dodge)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------- markdown
def _fmt(e, digits=2):
    if e is None:
        return "n/a"
    v = e["value"] if isinstance(e, dict) and "value" in e else e.get("slope") if isinstance(e, dict) else e
    ci = e.get("ci") if isinstance(e, dict) else None
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        s = "undefined" if v is None or math.isnan(v) else ("∞" if v > 0 else "−∞")
    else:
        s = f"{v:.{digits}f}"
    if ci and all(c is not None and math.isfinite(c) for c in ci):
        s += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    elif ci:
        s += f" [{ci[0]}, {ci[1]}]"
    return s


def _contains(ci, value):
    return ci is not None and all(math.isfinite(c) for c in ci) and ci[0] <= value <= ci[1]


def _slope_reading(name, m1, predicted):
    ci = m1.get("ci")
    s = m1["slope"]
    if s is None or not math.isfinite(s):
        return f"- {name}: the slope is undefined: {m1.get('reason') or 'too few rows'}."
    if ci is None:
        return f"- {name}: s = {s:.2f} (one seed: no interval); prediction {predicted:g}."
    verdict = "contains" if _contains(ci, predicted) else "excludes"
    return f"- {name}: s = {s:.2f}, 95 % CI [{ci[0]:.2f}, {ci[1]:.2f}], which {verdict} the prediction {predicted:g}."


def markdown(analyses, results, plan, pngs):
    """The Markdown report: one section per arm, each metric with its CI, for each score."""
    L = [f"# LR/WD entanglement study ({plan['mode']})", ""]
    L += [f"Data: {plan['data']} ({plan['n_train']} train / {plan['n_val']} validation images); "
          f"BN convnet {tuple(plan['filters'])}, BN without affine parameters, frozen head (weight decay acts "
          f"on scale-invariant kernels only); momentum SGD γ = {plan['momentum']}, batch {plan['batch_size']}, "
          f"{plan['epochs']} epochs = {plan['total_steps']} steps per run; backend {plan['backend']}. "
          f"Scores are measured on the validation set with BatchNorm on that set's batch statistics. "
          f"Intervals: 95 % percentile bootstrap, B = {plan['n_boot']}, seeds resampled within cells. "
          f"Training time, summed over trials: {plan.get('seconds', float('nan')) / 60:.1f} min.", ""]
    few = [k for k in ("seeds", "step_seeds") if plan.get(k) is not None and len(plan[k]) < 3]
    if few:
        L += [f"**Caution:** {' and '.join(few)} = {', '.join(str(list(plan[k])) for k in few)}: with fewer than "
              "3 seeds per cell the cell-wise bootstrap has too few distinct resamples (3 per cell with 2 seeds, "
              "none with 1), so the intervals of the arms run with them understate the uncertainty (or are "
              "missing): read them as indicative only.", ""]
    L += ["Parameterizations: **old** = `keras_explr.optimizers.SGD(weight_decay=λ_old)` (coupled, decay "
          "η_t·λ_old per step); **new** = `ReparamWeightDecay(SGD, λ_new, mode='coupled')` (decay λ_new per "
          "step, whatever η is).", ""]
    for a in analyses:
        score = a["score"]
        lab = "minus validation cross-entropy" if score == "neg_loss" else "validation accuracy"
        L += [f"## Score: {lab} (δ = {a['delta']:g} for the rows used by M1/M3)", ""]
        if "constant" in a:
            c = a["constant"]
            L += ["### Arm 1: constant LR", "",
                  "With a constant LR the run at (η, λ_new) **is** the run at (η, λ_old = λ_new/η): the two "
                  "grids are one family of runs in different coordinates, so s_new = s_old + 1 holds by identity "
                  "(the 'new' column below re-expresses the same runs). The testable prediction is s_old ≈ −1 "
                  "(ηλ is what matters for scale-invariant weights).", "",
                  "| metric | standard (η, λ_old) | new (η, λ_new), same runs |", "|---|---|---|",
                  f"| M1 ridge slope s | {_fmt(c['old']['M1_ridge_slope'])} | {_fmt(c['new_same_runs']['M1_ridge_slope'])} |",
                  f"| rows used / on the edge | {len(c['old']['M1_ridge_slope']['rows'])} / "
                  f"{len(c['old']['M1_ridge_slope']['edge_rows'])} | {len(c['new_same_runs']['M1_ridge_slope']['rows'])} / "
                  f"{len(c['new_same_runs']['M1_ridge_slope']['edge_rows'])} |",
                  f"| M1 transposed (η* vs λ) | {_fmt(c['old']['M1_transposed_slope'])} | n/a (sheared grid) |",
                  f"| M2 ρ_q75 | {_fmt(c['old']['M2_good_region_correlation'])} | "
                  f"{_fmt(c['new_same_runs']['M2_good_region_correlation'])} |",
                  f"| M3 transfer regret | {_fmt(c['old']['M3_transfer_regret'], 3)} | n/a (sheared grid) |", "",
                  _slope_reading("standard", c["old"]["M1_ridge_slope"], -1),
                  _slope_reading("new (same runs)", c["new_same_runs"]["M1_ridge_slope"], 0),
                  f"- Best cell: η = {c['best_cell']['learning_rate']:.3g}, λ_old = "
                  f"{c['best_cell']['weight_decay_old']:.3g} (ηλ = {c['best_cell']['intrinsic_lr']:.3g}).",
                  f"- {c['equilibration']['cells_t_decay_below_1']} of {c['equilibration']['cells']} cells have "
                  f"t·ηλ/(1 − γ) < 1 (the decay never acts in full there).", ""]
        if "diagonal" in a:
            d = a["diagonal"]
            L += ["### Arm 1b: diagonal sweep along ηλ = const", "",
                  f"ηλ = {d['intrinsic_lr']:.3g} (the best cell of arm 1 by cross-entropy), η over {d['decades']:.1f} decades "
                  f"({', '.join(f'{v:.3g}' for v in d['learning_rates'])}).", "",
                  "| η | " + " | ".join(f"{v:.3g}" for v in d["learning_rates"]) + " |",
                  "|---|" + "---|" * len(d["learning_rates"]),
                  "| mean score | " + " | ".join(f"{v:.3f}" for v in d["mean_scores"]) + " |", "",
                  f"- range (max − min) along the diagonal: {_fmt(d['range'], 3)}",
                  f"- mean shortfall from the diagonal's best: {_fmt(d['shortfall'], 3)}",
                  f"- slope of the score per decade of η: {_fmt(d['slope'], 3)}", ""]
        if "scheduled" in a:
            s = a["scheduled"]
            L += ["### Arm 2: step decay", "",
                  "Rules: **standard** (decay η_t·λ_old); **λ_new constant**; **λ_new·η_t/η_0** "
                  "(`ReparamWeightDecay(lr_exponent=1)`). The last is the standard rule in other "
                  "coordinates: its per-step decay λ_new·η_t/η_0 equals η_t·λ_old with λ_old = λ_new/η_0 "
                  "(a test checks the trajectories agree), so it is shown as the standard runs re-expressed. "
                  "Only 'λ_new constant' is a different algorithm.", "",
                  "| metric | standard (η_0, λ_old) | λ_new·η_t/η_0 (same runs) | λ_new constant |", "|---|---|---|---|",
                  f"| M1 ridge slope s | {_fmt(s['standard']['M1_ridge_slope'])} | "
                  f"{_fmt(s['new_follow_same_runs_as_standard']['M1_ridge_slope'])} | {_fmt(s['new_constant']['M1_ridge_slope'])} |",
                  f"| M2 ρ_q75 | {_fmt(s['standard']['M2_good_region_correlation'])} | "
                  f"{_fmt(s['new_follow_same_runs_as_standard']['M2_good_region_correlation'])} | "
                  f"{_fmt(s['new_constant']['M2_good_region_correlation'])} |",
                  f"| M3 transfer regret | {_fmt(s['standard']['M3_transfer_regret'], 3)} | n/a | "
                  f"{_fmt(s['new_constant']['M3_transfer_regret'], 3)} |",
                  f"| best cell (score, accuracy) | {s['best_standard']['score']:.3f}, {s['best_standard']['accuracy']:.3f} | same | "
                  f"{s['best_new_constant']['score']:.3f}, {s['best_new_constant']['accuracy']:.3f} |", ""]
            if "paired_difference_new_constant_minus_standard" in s:
                L += [f"- Paired difference of M1 (λ_new constant − standard): "
                      f"{_fmt(s['paired_difference_new_constant_minus_standard']['M1_ridge_slope'])}"]
            L += [_slope_reading("standard", s["standard"]["M1_ridge_slope"], -1),
                  _slope_reading("λ_new constant", s["new_constant"]["M1_ridge_slope"], 0),
                  f"- Cells with t·d_0/(1 − γ) < 1 (d_0: decay per step at η_0): standard {s['equilibration_standard']['cells_t_decay_below_1']}"
                  f"/{s['equilibration_standard']['cells']}, λ_new constant "
                  f"{s['equilibration_new_constant']['cells_t_decay_below_1']}/{s['equilibration_new_constant']['cells']}.", ""]
    if analyses and "search" in analyses[0]:
        s = analyses[0]["search"]
        L += ["## Arm 3: search cost (RandomSearch, log-uniform boxes of equal log-area, constant LR)", "",
              f"Hit = validation accuracy ≥ best − {s['x']:g} (within {100 * s['x']:g} accuracy point(s), "
              f"≈ {100 * s['x'] / max(s['reference_best_accuracy'], 1e-12):.1f} % of the best), best = "
              f"{s['reference_best_accuracy']:.4f} (the best trial over both boxes). The λ_new box is the λ_old box "
              "times the geometric centre of the η range: equal log-area, the same centre in ηλ.", "",
              "| box | η range | λ range | trials | best | p(hit) | expected trials 1/p | n for 95 % | first hit (run order) |",
              "|---|---|---|---|---|---|---|---|---|"]
        for k in ("old", "new"):
            b = s[k]
            L.append(f"| {k} | {b['box']['learning_rate'][0]:.3g}–{b['box']['learning_rate'][1]:.3g} | "
                     f"{b['box']['weight_decay'][0]:.3g}–{b['box']['weight_decay'][1]:.3g} | {b['cost']['n_trials']} | "
                     f"{b['best']:.4f} | {_fmt(b['cost']['p'])} | {_fmt(b['cost']['expected_trials'], 1)} | "
                     f"{_fmt(b['cost']['n95'], 0)} | {b['trials_to_within_in_run_order']} |")
        L += ["", f"- p_new − p_old: {_fmt(s['p_new_minus_p_old'])} (unpaired bootstrap over trials).",
              "- Expected best-of-n (Dodge et al. 2019) for n = 1, 5, 10: old "
              + ", ".join(f"{s['old']['dodge_expected_best_of_n'][n - 1]:.4f}" for n in (1, 5, 10)
                          if n <= len(s['old']['dodge_expected_best_of_n']))
              + "; new " + ", ".join(f"{s['new']['dodge_expected_best_of_n'][n - 1]:.4f}" for n in (1, 5, 10)
                                     if n <= len(s['new']['dodge_expected_best_of_n'])) + ".", ""]
    if pngs:
        L += ["## Figures", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    return "\n".join(L)
