"""Study v3's analysis, predictions, figures and report, all from results.json (`keras_explr.tuning.study`).

Every verdict reads a 95 % jackknife-t interval over seeds (`seed_interval`): each replicate leaves the
same seed out of every grid it compares (a seed fixes the initialization and the batch order of all
cells and arms), so paired differences keep their pairing. The percentile bootstrap (`bootstrap`), too
narrow with few seeds, is reported beside it (docs/math.md#confidence-intervals).
"""

import functools
import math
import os

import numpy as np

from keras_explr.tuning import design

NAMES = {  # plain names for figures and tables
    "constant": "SGD, constant LR",
    "step_standard": "SGD step decay, standard rule",
    "step_new": "SGD step decay, λ_new constant",
    "eps_step_standard": "users' net (ε=1e-3), step decay, standard rule",
    "eps_step_new": "users' net (ε=1e-3), step decay, λ_new constant",
    "adam_standard": "AdamW, cosine (standard rule)",
    "adam_new": "ReparamWeightDecay(Adam), cosine, λ_new constant",
    "cosine_standard": "SGD cosine, standard rule",
    "cosine_new": "SGD cosine, λ_new constant",
}
PAIRS = (("step", "step_standard", "step_new"), ("cosine", "cosine_standard", "cosine_new"),
         ("adam", "adam_standard", "adam_new"), ("eps_step", "eps_step_standard", "eps_step_new"))


# ------------------------------------------------------------------ grids
class Grid:
    """The cells of one arm at one budget: learning rates (rows), λ_new (columns), per-seed scores
    S[i, j, r] over the seeds every cell has, the clock and the minimum pre-normalization variance / ε."""

    def __init__(self, cells, arm, steps):
        cs = [c for c in cells if c["arm"] == arm and c["steps"] == steps]
        if not cs:
            raise ValueError(f"no cells of arm {arm!r} at {steps} steps")
        self.arm, self.steps, self.total = arm, steps, int(cs[0].get("total_steps", steps))
        self.lrs = sorted({c["learning_rate"] for c in cs})
        self.wds = sorted({c["lambda_new"] for c in cs})
        seeds = set.intersection(*[set(c["seeds"]) for c in cs])
        self.seeds = sorted(seeds)
        n, m, r = len(self.lrs), len(self.wds), len(self.seeds)
        self.S = np.full((n, m, r), np.nan)
        self.clock = np.full((n, m), np.nan)
        self.minvar = np.full((n, m), np.nan)
        for c in cs:
            i, j = self.lrs.index(c["learning_rate"]), self.wds.index(c["lambda_new"])
            by_seed = dict(zip(c["seeds"], c["scores"]))
            self.S[i, j] = [np.nan if by_seed[s] is None else by_seed[s] for s in self.seeds]
            var = dict(zip(c["seeds"], c["min_prenorm_variance_over_epsilon_per_seed"]))
            # null (a diverged seed) stays NaN: such a cell fails every "≥ threshold" test below
            self.minvar[i, j] = np.min([np.nan if var[s] is None else var[s] for s in self.seeds])
            self.clock[i, j] = c["clock"]
        # A run that failed (NaN) counts as the worst score of the grid.
        worst = np.nanmin(self.S) if np.isfinite(self.S).any() else -10.0
        self.S = np.where(np.isfinite(self.S), self.S, worst)
        self.x = np.log10(self.lrs)
        self.y = np.log10(self.wds)

    @property
    def A(self):
        return self.S.mean(-1)


def budgets(results, arm):
    """The budgets (steps) at which an arm's cells were scored, ascending."""
    return sorted({c["steps"] for c in results["cells"] if c["arm"] == arm})


def has(results, arm):
    """Whether results.json holds cells of `arm`."""
    return any(c["arm"] == arm for c in results["cells"])


# ------------------------------------------------------------------ statistics (of mean grids)
def _diagonals(A, x, y):
    """Full-length fixed-λ_old sweeps: lists of (i, j) with log λ_new − log η constant, one cell per row."""
    n, m = A.shape
    h = round(float(y[1] - y[0]), 9) if m > 1 else 1.0
    out = []
    for k in range(-n - m, n + m):
        cells = []
        for i in range(n):
            yy = x[i] + (y[0] - x[0]) + k * h  # log λ_new of this λ_old in row i
            j = int(round((yy - y[0]) / h))
            if 0 <= j < m and abs(y[j] - yy) < 1e-6:
                cells.append((i, j))
        if len(cells) == n:
            out.append(cells)
    return out


def sweeps(A, x, y, kind):
    """The sweeps over every learning rate at a fixed λ_new (columns) or a fixed λ_old (full diagonals)."""
    if kind == "new":
        return [[(i, j) for i in range(A.shape[0])] for j in range(A.shape[1])]
    return _diagonals(A, x, y)


def best_sweep(A, x, y, kind):
    """The best fixed λ of that kind: the sweep with the highest mean score over the learning rates (what a
    user who fixes λ and then varies η gets on average)."""
    ss = sweeps(A, x, y, kind)
    if not ss:
        return None
    return max(ss, key=lambda s: float(np.mean([A[c] for c in s])))


def shortfall(A, sweep):
    """Mean over a sweep's cells of (best of the sweep − score): Wortsman et al.'s LR sensitivity.

    >>> import numpy as np
    >>> shortfall(np.array([[1.0], [0.5], [0.0]]), [(0, 0), (1, 0), (2, 0)])
    0.5
    """
    v = np.array([A[c] for c in sweep])
    return float(np.mean(v.max() - v))


def shortfall_stat(x, y, kind):
    """A statistic of a mean grid: the shortfall along the best fixed λ of `kind` ("new" or "old")."""
    def stat(A):
        s = best_sweep(A, x, y, kind)
        return math.nan if s is None else shortfall(A, s)
    return stat


@functools.lru_cache(maxsize=None)
def expected_max_normal(n):
    """E[max of n independent standard normals] (numerical integration).

    >>> round(expected_max_normal(2), 4), round(expected_max_normal(7), 4)
    (0.5642, 1.3522)
    """
    z = np.linspace(-9.0, 9.0, 20001)
    pdf = np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in z]))
    return float(np.sum(z * n * pdf * cdf ** (n - 1)) * (z[1] - z[0]))


def noise_floor(S):
    """The shortfall a column of S (rows × columns × R seeds) shows from seed noise alone when its true scores
    are all equal: σ/√R · E[max of n normals], n rows. σ is the cells' own seed-to-seed standard deviation,
    pooled over the columns after removing each seed's offset of each column (a column's shortfall reads
    differences within the column, where such an offset cancels): (n − 1)(R − 1) degrees of freedom per
    column. It assumes the rows' noise independent once that offset is gone."""
    n, m, R = S.shape
    if R < 2 or n < 2:
        return math.nan
    resid = S - S.mean(-1, keepdims=True)
    resid = resid - resid.mean(axis=0, keepdims=True)  # each seed's offset of each column
    sigma = math.sqrt(float(np.sum(resid ** 2)) / (m * (n - 1) * (R - 1)))
    return sigma / math.sqrt(R) * expected_max_normal(n)


def lag_stat(j):
    """Lag of the smallest learning rate behind the column's best, at column j."""
    def stat(A):
        return float(A[:, j].max() - A[0, j])
    return stat


def movement(A, x, y, kind):
    """Decades over which the best λ (per learning-rate row) moves across the rows."""
    ys = []
    for i in range(A.shape[0]):
        j = int(np.argmax(A[i]))
        ys.append(y[j] if kind == "new" else y[j] - x[i])
    return float(max(ys) - min(ys))


# t(0.975, df) for df = 1..30 degrees of freedom (beyond: 1.96 + 2.4/df, within 0.003 of the exact quantile).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df):
    """The 97.5 % quantile of Student's t with `df` degrees of freedom.

    >>> t975(3), round(t975(1000), 3)
    (3.182, 1.962)
    """
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def seed_interval(stat, grids):
    """(point, [lo, hi]): stat(*mean grids) with its 95 % jackknife-t interval over the seeds the grids share.

    Each of the R leave-one-seed-out replicates drops the same seed from every grid (the pairing), the
    standard error is the jackknife's, sqrt((R − 1)/R · Σ_k (θ_(k) − θ_(·))²), and the interval is
    θ ± t(0.975, R − 1)·SE: exact for a mean of normal seeds. (A percentile bootstrap over 4 seeds covers
    ≈ 80 % of the time, not 95 %: `bootstrap`.)
    """
    R = grids[0].shape[-1]
    point = stat(*[g.mean(-1) for g in grids])
    if R < 2:
        return point, [None, None]
    loo = np.array([stat(*[np.delete(g, k, axis=-1).mean(-1) for g in grids]) for k in range(R)], float)
    if not np.isfinite(loo).all() or not math.isfinite(point):
        return point, [None, None]
    se = math.sqrt((R - 1) / R * float(np.sum((loo - loo.mean()) ** 2)))
    return point, [point - t975(R - 1) * se, point + t975(R - 1) * se]


def bootstrap(stat, grids, n_boot, seed=0):
    """(point, [lo, hi]) of stat(*mean grids) with a 95 % percentile bootstrap over the seeds shared by
    `grids` (each replicate resamples the seed indices once for every grid). Kept for comparison: with
    few seeds it is too narrow (`seed_interval` is the study's interval)."""
    R = grids[0].shape[-1]
    point = stat(*[g.mean(-1) for g in grids])
    if R < 2 or n_boot < 1:
        return point, [None, None]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, R, R)
        reps[b] = stat(*[g[..., idx].mean(-1) for g in grids])
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return point, [None, None]
    return point, [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]


def verdict_positive(ci):
    """"holds" if the interval lies above 0, "fails" if below, else "inconclusive".

    >>> verdict_positive([0.01, 0.05]), verdict_positive([-0.02, 0.01])
    ('holds', 'inconclusive')
    """
    if ci[0] is None:
        return "inconclusive"
    if ci[0] > 0:
        return "holds"
    if ci[1] < 0:
        return "fails"
    return "inconclusive"


def invariant_cells(g, cells):
    """Whether every cell of `cells` kept its pre-normalization variance ≥ 100·ε (an arm that claims
    invariance needs it; NaN, a diverged cell, fails)."""
    return bool(all(g.minvar[c] >= 100 for c in cells))


def on_edge(g):
    """The sides of the grid the best cell lies on ("η low", "λ_new high", ...): where the optimum is not
    bracketed by the grid."""
    i, j = np.unravel_index(np.argmax(g.A), g.A.shape)
    n, m = g.A.shape
    return [name for name, hit in (("η low", i == 0), ("η high", i == n - 1), ("λ_new low", j == 0),
                                   ("λ_new high", j == m - 1)) if hit]


def _common(*grids):
    """The grids restricted to the seeds they all have (so a bootstrap can pair them)."""
    seeds = sorted(set.intersection(*[set(g.seeds) for g in grids]))
    return [g.S[..., [g.seeds.index(s) for s in seeds]] for g in grids], seeds


# ------------------------------------------------------------------ predictions
def analyse(results):
    """Every measure of the report: a dict by prediction."""
    plan = results["plan"]
    n_boot = int(plan["n_boot"])
    out = {}
    if has(results, "constant"):
        rows = []
        for B in budgets(results, "constant"):
            g = Grid(results["cells"], "constant", B)
            x, y = g.x, g.y
            diff = lambda A: shortfall_stat(x, y, "old")(A) - shortfall_stat(x, y, "new")(A)
            d, dci = seed_interval(diff, [g.S])
            dci_boot = bootstrap(diff, [g.S], n_boot)[1]
            sn, snci = seed_interval(shortfall_stat(x, y, "new"), [g.S])
            so, soci = seed_interval(shortfall_stat(x, y, "old"), [g.S])
            A = g.A
            bn, bo = best_sweep(A, x, y, "new"), best_sweep(A, x, y, "old")
            i0, j0 = np.unravel_index(np.argmax(A), A.shape)
            rows.append({"steps": B, "S_new": sn, "S_new_ci": snci, "S_old": so, "S_old_ci": soci,
                         "diff": d, "diff_ci": dci, "diff_ci_bootstrap": dci_boot, "best_lambda_new": g.wds[bn[0][1]],
                         "best_lambda_old": (g.wds[bo[0][1]] / g.lrs[bo[0][0]]) if bo else None,
                         "move_new": movement(A, x, y, "new"), "move_old": movement(A, x, y, "old"),
                         "best": float(A.max()), "best_cell": (g.lrs[i0], g.wds[j0]),
                         "seeds": len(g.seeds), "noise_floor": noise_floor(g.S), "best_on_edge": on_edge(g),
                         "sweeps_invariant": invariant_cells(g, bn + (bo or []))})
        out["P1"] = rows
        # P2: the lag of the smallest η at the best column of the longest budget.
        Bs = budgets(results, "constant")
        glong = Grid(results["cells"], "constant", Bs[-1])
        j = best_sweep(glong.A, glong.x, glong.y, "new")[0][1]
        lags = []
        for B in Bs:
            g = Grid(results["cells"], "constant", B)
            v, ci = seed_interval(lag_stat(j), [g.S])
            lags.append({"steps": B, "lag": v, "ci": ci, "clock": float(B * g.wds[j])})
        short = [B for B in Bs if B >= 1000][0] if any(B >= 1000 for B in Bs) else Bs[0]
        gs = Grid(results["cells"], "constant", short)
        (Ss, Sl), _ = _common(gs, glong)
        lagdiff = lambda a, b: lag_stat(j)(a) - lag_stat(j)(b)
        d, dci = seed_interval(lagdiff, [Ss, Sl])
        out["P2"] = {"lambda_new": glong.wds[j], "lags": lags, "short": short, "long": Bs[-1], "diff": d,
                     "sweeps_invariant": invariant_cells(glong, [(i, j) for i in range(len(glong.lrs))]),
                     "ci": dci, "ci_bootstrap": bootstrap(lagdiff, [Ss, Sl], n_boot)[1]}
    for name, std, new in PAIRS:
        if not (has(results, std) and has(results, new)):
            continue
        T = budgets(results, std)[-1]
        gs, gn = Grid(results["cells"], std, T), Grid(results["cells"], new, T)
        (Ss, Sn), seeds = _common(gs, gn)
        x, y = gs.x, gs.y
        sf_s, ci_s = seed_interval(shortfall_stat(x, y, "new"), [Ss])
        sf_n, ci_n = seed_interval(shortfall_stat(x, y, "new"), [Sn])
        boot_s = bootstrap(shortfall_stat(x, y, "new"), [Ss], n_boot)[1]
        boot_n = bootstrap(shortfall_stat(x, y, "new"), [Sn], n_boot)[1]
        bvb, bvb_ci = seed_interval(lambda a, b: float(a.max() - b.max()), [Ss, Sn])
        cols = [best_sweep(g.A, x, y, "new") for g in (gs, gn)]
        read = invariant_cells(gs, cols[0]) and invariant_cells(gn, cols[1])
        per_col = []
        for j, w in enumerate(gs.wds):
            per_col.append({"lambda_new": w, "post_drop_clock_standard": post_drop_clock(gs, j),
                            "post_drop_clock_new": post_drop_clock(gn, j),
                            "best_standard": float(gs.A[:, j].max()), "best_new": float(gn.A[:, j].max()),
                            "shortfall_standard": shortfall(gs.A, [(i, j) for i in range(len(gs.lrs))]),
                            "shortfall_new": shortfall(gn.A, [(i, j) for i in range(len(gn.lrs))])})
        out[name] = {"steps": T, "seeds": len(seeds), "shortfall_standard": sf_s, "ci_standard": ci_s,
                     "shortfall_new": sf_n, "ci_new": ci_n,
                     "ci_standard_bootstrap": boot_s, "ci_new_bootstrap": boot_n,
                     "noise_floor_standard": noise_floor(Ss), "noise_floor_new": noise_floor(Sn),
                     "sweeps_invariant": read, "best_on_edge": {std: on_edge(gs), new: on_edge(gn)},
                     "best_lambda_new": {std: gs.wds[cols[0][0][1]], new: gn.wds[cols[1][0][1]]}, "best_standard": float(gs.A.max()),
                     "best_new": float(gn.A.max()), "best_vs_best": bvb, "best_vs_best_ci": bvb_ci,
                     "columns": per_col, "minvar_below_100": {
                         std: int((~(gs.minvar >= 100)).sum()), new: int((~(gn.minvar >= 100)).sum())},
                     "cells": int(gs.minvar.size)}
    if "eps_step" in out and "step" in out:
        ge = Grid(results["cells"], "eps_step_new", out["eps_step"]["steps"])
        gi = Grid(results["cells"], "step_new", out["step"]["steps"])
        (Se, Si), _ = _common(ge, gi)
        st = shortfall_stat(ge.x, ge.y, "new")
        d, ci = seed_interval(lambda a, b: st(a) - st(b), [Se, Si])
        ci_boot = bootstrap(lambda a, b: st(a) - st(b), [Se, Si], n_boot)[1]
        # Where the pre-normalization variance fell below ε the layer stopped normalizing.
        low = [(ge.lrs[i], ge.wds[j], float(ge.minvar[i, j]), float(ge.A[i, j] - gi.A[i, j]))
               for i in range(len(ge.lrs)) for j in range(len(ge.wds)) if not ge.minvar[i, j] >= 1]
        gse = Grid(results["cells"], "eps_step_standard", out["eps_step"]["steps"])
        # The control: the standard rule on the same two nets. The users' net differs from the invariant one in
        # its trainable head and γ/β as well as in ε; what is specific to λ_new constant is the difference of
        # the two differences.
        gis = Grid(results["cells"], "step_standard", out["step"]["steps"])
        (Se4, Si4, Sse, Sis), _ = _common(ge, gi, gse, gis)
        d_std, ci_std = seed_interval(lambda a, b, c, e: st(c) - st(e), [Se4, Si4, Sse, Sis])
        d_dd, ci_dd = seed_interval(lambda a, b, c, e: (st(a) - st(b)) - (st(c) - st(e)), [Se4, Si4, Sse, Sis])
        out["P5"] = {"diff": d, "ci": ci, "ci_bootstrap": ci_boot, "low_cells": low,
                     "control_standard": d_std, "control_standard_ci": ci_std,
                     "specific_to_new": d_dd, "specific_to_new_ci": ci_dd,
                     "loss_low": float(np.mean([c[3] for c in low])) if low else None,
                     "loss_high": float(np.mean((ge.A - gi.A)[ge.minvar >= 1])) if (ge.minvar >= 1).any()
                     else None,
                     "standard_low": int((~(gse.minvar >= 1)).sum()),
                     "below_100": int((~(ge.minvar >= 100)).sum()), "cells": int(ge.minvar.size),
                     "minvar_range": [float(np.nanmin(ge.minvar)), float(np.nanmax(ge.minvar))]}
    # every arm that claims invariance: min pre-normalization variance / ε over its cells
    inv = {}
    for arm, (_, _, _, invariant) in design.ARMS.items():
        cs = [c for c in results["cells"] if c["arm"] == arm and c["steps"] == c["total_steps"]]
        if cs and invariant:
            mv = [math.nan if c["min_prenorm_variance_over_epsilon"] is None else c["min_prenorm_variance_over_epsilon"]
                  for c in cs]
            scores = [[v for v in c["scores"] if v is not None] for c in cs]
            # a cell fails the check below 100, and when it diverged (NaN: no variance to measure)
            inv[arm] = {"min": float(np.nanmin(mv)) if np.isfinite(mv).any() else math.nan,
                        "diverged": int(sum(not math.isfinite(v) for v in mv)),
                        "below_100": [(c["learning_rate"], c["lambda_new"], v,
                                       float(np.mean(s)) if s else math.nan)
                                      for c, v, s in zip(cs, mv, scores) if not v >= 100]}
    out["invariance"] = inv
    if results.get("tuner"):
        out["P6"] = results["tuner"]
    return out


def post_drop_clock(g, j):
    """Σ λ_t over the steps after the first LR drop (half the run) of column j (every row has the same)."""
    from keras_explr.tuning import block

    _, rule, schedule, _ = design.ARMS[g.arm]
    return float(block.decay_clock(schedule, rule, g.wds[j], g.total // 2, g.total, g.total))


def _gate(verdict, invariant):
    """A verdict on an invariant arm stands only if the sweeps it reads kept variance ≥ 100·ε in every cell."""
    return verdict if invariant else "inconclusive"


NOT_INVARIANT = " [inconclusive by the invariance check: the sweeps it reads include cells below 100·ε]"


def predictions(results):
    """The prediction objects of results.json: name, estimate, ci (jackknife-t over seeds), ci_bootstrap
    (the percentile bootstrap, for comparison), verdict and a statement."""
    a = analyse(results)
    out = []
    if "P1" in a:
        longest = a["P1"][-1]["steps"]
        for r in a["P1"]:
            if r["steps"] < min(500, longest):
                continue
            ok = r["sweeps_invariant"]
            out.append({"name": f"P1 constant LR, {r['steps']} steps{' (headline)' if r['steps'] == longest else ''}: "
                                "S_old − S_new", "estimate": r["diff"], "ci": r["diff_ci"],
                        "ci_bootstrap": r["diff_ci_bootstrap"], "verdict": _gate(verdict_positive(r["diff_ci"]), ok),
                        "statement": "shortfall over η at the best fixed λ_old minus at the best fixed λ_new > 0"
                                     + ("" if ok else NOT_INVARIANT)})
    if "P2" in a:
        p = a["P2"]
        ok = p["sweeps_invariant"]
        out.append({"name": f"P2 transient: lag of η_min at λ_new = {p['lambda_new']:.3g}, "
                            f"{p['short']} − {p['long']} steps", "estimate": p["diff"], "ci": p["ci"],
                    "ci_bootstrap": p["ci_bootstrap"], "verdict": _gate(verdict_positive(p["ci"]), ok),
                    "statement": "the small-η lag closes as the clock grows" + ("" if ok else NOT_INVARIANT)})
    for name, label in (("step", "P3 step decay"), ("cosine", "P3 cosine"), ("adam", "P4 Adam (cosine)")):
        if name not in a:
            continue
        p = a[name]
        if p["ci_standard"][0] is None or p["ci_new"][0] is None:
            verdict = "inconclusive"
        elif p["ci_standard"][1] < design.TOL and p["ci_new"][1] < design.TOL:
            verdict = "holds"
        elif p["ci_standard"][0] > design.TOL or p["ci_new"][0] > design.TOL:
            verdict = "fails"
        else:
            verdict = "inconclusive"
        worst = "standard" if p["shortfall_standard"] >= p["shortfall_new"] else "new"
        out.append({"name": f"{label}: η_0-shortfall at the best fixed λ_new, the worse rule ({worst})",
                    "estimate": max(p["shortfall_standard"], p["shortfall_new"]),
                    "ci": p["ci_standard"] if worst == "standard" else p["ci_new"],
                    "ci_bootstrap": p["ci_standard_bootstrap"] if worst == "standard" else p["ci_new_bootstrap"],
                    "verdict": _gate(verdict, p["sweeps_invariant"]),
                    "statement": f"both rules below {design.TOL} nats (standard {p['shortfall_standard']:.3f}, "
                                 f"λ_new constant {p['shortfall_new']:.3f}; seed-noise floor "
                                 f"{p['noise_floor_standard']:.3f} and {p['noise_floor_new']:.3f})"
                                 + ("" if p["sweeps_invariant"] else NOT_INVARIANT)})
    if "P5" in a:
        p = a["P5"]
        out.append({"name": "P5 ε arm: η_0-shortfall of λ_new constant, users' net − invariant net",
                    "estimate": p["diff"], "ci": p["ci"], "ci_bootstrap": p["ci_bootstrap"],
                    "verdict": verdict_positive(p["ci"]),
                    "statement": "λ_new constant loses η_0-insensitivity with Keras's ε = 1e-3 (control: the standard "
                                 f"rule, users' − invariant net, {p['control_standard']:.3f} "
                                 f"{_ci(p['control_standard_ci'])}; the part specific to λ_new constant "
                                 f"{p['specific_to_new']:.3f} {_ci(p['specific_to_new_ci'])})"})
    if "P6" in a:
        # The table stands in for training only where real searches confirmed it.
        confirmed = bool((a["P6"].get("real") or {}).get("confirms_table"))
        for B, t in sorted(a["P6"]["tabular"].items(), key=lambda kv: int(kv[0])):
            bb = t.get("box_best")
            boxes_gap = (f"; the best cells the two boxes can reach differ by "
                         f"{bb['new']['best'] - bb['old']['best']:.3f}" if bb else "")
            for tuner, d in t["difference"].items():
                out.append({"name": f"P6 KerasTuner {tuner}, {B} steps, {t['trials']} trials: best found, "
                                    "(η, λ_new) − (η, λ_old)", "estimate": d["value"], "ci": d["ci"],
                            "verdict": _gate(verdict_positive(d["ci"]), confirmed),
                            "statement": "searching in (η, λ_new) finds a better cell (interval: bootstrap over "
                                         "the repeated searches of one fixed table, whose own seed noise it does not "
                                         f"include{boxes_gap})" + ("" if confirmed else
                                                                    " [inconclusive: no real search confirmed the table]")})
    return out


# ------------------------------------------------------------------ figures
def _edges(v):
    v = np.asarray(v, float)
    if len(v) == 1:
        return np.array([v[0] - 0.25, v[0] + 0.25])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def _panel(ax, g, coords, vmin, vmax, title, mark_clock=True):
    """One heat map of grid g in (log η, log λ_new) or (log η, log λ_old): cells as quadrilaterals, iso-score
    contours, the best cell, the best fixed-λ sweep, the transient boundary (clock t·λ_new = 1 and 3)."""
    A = g.A
    xe, ye = _edges(g.x), _edges(g.y)
    X, Y = np.meshgrid(xe, ye, indexing="ij")
    Xc, Yc = np.meshgrid(g.x, g.y, indexing="ij")
    if coords == "old":
        Y = Y - X
        Yc = Yc - Xc
    im = ax.pcolormesh(X, Y, A, vmin=vmin, vmax=vmax, cmap="viridis", shading="flat")
    if A.shape[0] > 1 and A.shape[1] > 1:
        levels = np.linspace(vmin, vmax, 12)[1:-1]
        cs = ax.contour(Xc, Yc, A, levels=levels, colors="white", linewidths=0.7, alpha=0.8)
        ax.clabel(cs, fmt="%.2f", fontsize=6)
    i0, j0 = np.unravel_index(np.argmax(A), A.shape)
    ax.plot(Xc[i0, j0], Yc[i0, j0], marker="*", color="red", markersize=12, markeredgecolor="k")
    if mark_clock:
        # The clock Σ_t λ_t is λ_new·T (λ_new constant) or λ_new·Σ_t η_t/η_0 (standard rule): a function of the
        # column alone, so clock c is the row λ_new = c / (T or Σ_t η_t/η_0) in (η, λ_new) for every arm.
        from keras_explr.tuning import block

        _, rule, schedule, _ = design.ARMS[g.arm]
        span = float(block.decay_clock(schedule, rule, 1.0, 0, g.steps, g.total))
        for c, ls in ((1.0, "--"), (3.0, ":")):
            lw = math.log10(c / span)
            xs = np.array([xe[0], xe[-1]])
            ys = np.full(2, lw) if coords == "new" else lw - xs
            ax.plot(xs, ys, ls, color="orange", lw=1.3, label=f"clock {c:g}")
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(float(Y.min()), float(Y.max()))
    ax.set_xlabel("log10 η" + ("_0" if g.arm != "constant" else ""))
    ax.set_ylabel("log10 λ_new (fraction removed per step)" if coords == "new" else
                  "log10 λ_old = λ_new/η" + ("" if g.arm == "constant" else "_0") + " (Keras weight_decay)")
    ax.set_title(title, fontsize=9)
    return im


def heatmap_figure(path, grids, titles, suptitle):
    """Rows: grids; columns: (η, λ_new) and (η, λ_old) coordinates; one colour scale over every cell shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmin = min(float(g.A.min()) for g in grids)
    vmax = max(float(g.A.max()) for g in grids)
    fig, axes = plt.subplots(len(grids), 2, figsize=(11, 4.6 * len(grids)), squeeze=False, layout="constrained")
    for r, (g, t) in enumerate(zip(grids, titles)):
        for c, coords in enumerate(("new", "old")):
            im = _panel(axes[r, c], g, coords, vmin, vmax, f"{t}\nin (η, λ_{coords})")
        if axes[r, 0].get_legend_handles_labels()[0]:
            axes[r, 0].legend(loc="lower left", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label="− validation cross-entropy (higher is better); full range")
    fig.suptitle(suptitle, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def sensitivity_figure(path, results):
    """Score against η along the best fixed λ_new (a column) and the best fixed λ_old (a diagonal), per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Bs = [B for B in budgets(results, "constant") if B >= 500] or budgets(results, "constant")[-1:]
    fig, axes = plt.subplots(1, len(Bs), figsize=(3.2 * len(Bs), 3.6), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, B in zip(axes[0], Bs):
        g = Grid(results["cells"], "constant", B)
        for kind, color, lab in (("new", "C0", "best fixed λ_new"), ("old", "C3", "best fixed λ_old")):
            s = best_sweep(g.A, g.x, g.y, kind)
            if s is None:
                continue
            v = np.array([g.S[c] for c in s])  # rows × seeds
            m = v.mean(-1)
            lo, hi = v.min(-1), v.max(-1)
            w = g.wds[s[0][1]] if kind == "new" else g.wds[s[0][1]] / g.lrs[s[0][0]]
            ax.errorbar(g.x, m, yerr=[m - lo, hi - m], color=color, marker="o", ms=3, capsize=2,
                        label=f"{lab} = {w:.2g}")
        ax.set_title(f"{B} steps", fontsize=9)
        ax.set_xlabel("log10 η")
        ax.legend(fontsize=6, loc="lower right")
    axes[0, 0].set_ylabel("− val cross-entropy (seed mean, bars: seed range)")
    fig.suptitle("Constant LR: sensitivity to η at the best fixed λ_new and at the best fixed λ_old", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def clock_figure(path, a):
    """Best over η_0 per λ_new column against the post-drop clock, both rules, each schedule pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, _, _ in PAIRS if n in a]
    fig, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names), 3.6), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], names):
        cols = a[n]["columns"]
        for rule, color, lab in (("standard", "C3", "standard rule"), ("new", "C0", "λ_new constant")):
            xs = [max(c[f"post_drop_clock_{rule}"], 1e-6) for c in cols]
            ax.plot(np.log10(xs), [c[f"best_{rule}"] for c in cols], "o-", color=color, ms=3, label=lab)
        ax.set_xlabel("log10 post-drop clock Σλ_t (second half)")
        ax.set_title(NAMES[f"{n}_standard"].split(",")[0] + f", {a[n]['steps']} steps", fontsize=9)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("best over η_0 of the column (− val CE)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def epsilon_figure(path, results, a):
    """The users' net: min pre-normalization variance / ε per cell, and its score minus the invariant net's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = a["eps_step"]["steps"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.6), squeeze=False, layout="constrained")
    for r, (eps_arm, inv_arm) in enumerate((("eps_step_standard", "step_standard"), ("eps_step_new", "step_new"))):
        ge, gi = Grid(results["cells"], eps_arm, T), Grid(results["cells"], inv_arm, T)
        xe, ye = _edges(ge.x), _edges(ge.y)
        X, Y = np.meshgrid(xe, ye, indexing="ij")
        im0 = axes[r, 0].pcolormesh(X, Y, np.log10(np.maximum(ge.minvar, 1e-3)), cmap="magma", vmin=-1, vmax=4)
        Xc, Yc = np.meshgrid(ge.x, ge.y, indexing="ij")
        axes[r, 0].contour(Xc, Yc, np.log10(np.maximum(ge.minvar, 1e-3)), levels=[0], colors="cyan")
        axes[r, 0].set_title(f"{NAMES[eps_arm]}\nlog10 min pre-norm variance / ε (cyan: variance = ε)", fontsize=9)
        d = ge.A - gi.A
        lim = float(np.abs(d).max()) or 1.0
        im1 = axes[r, 1].pcolormesh(X, Y, d, cmap="RdBu", vmin=-lim, vmax=lim)
        axes[r, 1].set_title(f"score, users' net − invariant net ({NAMES[inv_arm]})", fontsize=9)
        for ax in axes[r]:
            ax.set_xlabel("log10 η_0")
            ax.set_ylabel("log10 λ_new at η_0")
        fig.colorbar(im0, ax=axes[r, 0])
        fig.colorbar(im1, ax=axes[r, 1], label="Δ(− val CE)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def tuner_figure(path, tuner):
    """Box plots of the best cell each repeated search found, per tuner and parameterization."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tabs = sorted(tuner["tabular"].items(), key=lambda kv: int(kv[0]))
    fig, axes = plt.subplots(1, len(tabs), figsize=(5.5 * len(tabs), 3.8), squeeze=False, layout="constrained")
    for ax, (B, t) in zip(axes[0], tabs):
        labels, data = [], []
        for key, vals in t["best_found"].items():
            kind, param = key.split("_")
            labels.append({"random": "RandomSearch", "bayesian": "BayesianOpt."}[kind] + f"\nin (η, λ_{param})")
            data.append(vals)
        ax.boxplot(data, showmeans=True)
        ax.axhline(t["grid_best"], color="grey", ls="--", lw=1, label="best cell of the grid")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_ylabel("best cell found: seed-mean − val CE")
        ax.set_title(f"{t['repeats']} searches × {t['trials']} trials, {B} steps (table)", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figures(results, out, a):
    """Writes every figure (named study_v3_<mode>_*.png: the docs serve every results PNG under one folder);
    returns their file names."""
    pngs = []
    prefix = f"study_v3_{results['plan']['mode']}_"
    out = os.path.join(out, prefix)  # (joined with each name below)
    if has(results, "constant"):
        Bs = budgets(results, "constant")
        pick = [B for B in (1000, Bs[-1]) if B in Bs] or Bs[-1:]
        pick = sorted(set(pick))
        grids = [Grid(results["cells"], "constant", B) for B in pick]
        p = heatmap_figure(out + "constant.png", grids,
                           [f"{NAMES['constant']}, {B} steps" for B in pick],
                           "The same runs in both coordinates (constant LR: λ_new = η·λ_old). Star: best cell; "
                           "dashed/dotted: clock t·λ_new = 1 / 3 (below it the decay has not acted yet: the transient)")
        pngs.append(os.path.basename(p))
        pngs.append(os.path.basename(sensitivity_figure(out + "sensitivity.png", results)))
    for name, std, new in PAIRS:
        if name in a:
            T = a[name]["steps"]
            grids = [Grid(results["cells"], arm, T) for arm in (std, new)]
            p = heatmap_figure(out + f"{name}.png", grids, [NAMES[std], NAMES[new]],
                               f"{T} steps; cells rectangular in (η_0, λ_new at η_0); star: best cell")
            pngs.append(os.path.basename(p))
    if any(n in a for n, _, _ in PAIRS):
        pngs.append(os.path.basename(clock_figure(out + "post_drop_clock.png", a)))
    if "eps_step" in a and "step" in a:
        pngs.append(os.path.basename(epsilon_figure(out + "epsilon.png", results, a)))
    if a.get("P6"):
        pngs.append(os.path.basename(tuner_figure(out + "tuner.png", a["P6"])))
    return pngs


# ------------------------------------------------------------------ markdown
def _f(v, d=3):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def _ci(ci, d=3):
    return "n/a" if not ci or ci[0] is None else f"[{ci[0]:.{d}f}, {ci[1]:.{d}f}]"


def markdown(results, a, pngs, folder=""):
    """report.md: H3 and below (it is included in a section of the study page, whose H1 is its own)."""
    plan = results["plan"]
    L = []
    done = results.get("blocks_done", [])
    planned = [f"{arm}/{s}" for s in plan["seeds"] for arm in plan["arms"]]
    L.append(f"### Study v3 ({plan['mode']}): the generated report\n")
    L.append(f"Generated from `results.json` by `keras_explr.tuning.report`. Backend {plan['backend']}. "
             f"Training wall time {results['wall_seconds'] / 60:.1f} min for {results['cell_steps']:,} cell-steps: "
             f"**{results['cell_steps_per_second']:,.0f} cell-steps/s** (blocks of ≤ {plan['block_size']} cells "
             f"under `jax.vmap`; {plan.get('cpu_count') or 'n/a'} CPU cores at load average "
             f"{_f(float(np.mean(results['load_average'])), 1)} on average over the blocks)"
             + (f"; KerasTuner stage {results['tuner_seconds'] / 60:.1f} min" if results.get("tuner_seconds") else "") + ".\n")
    if len(done) < len(planned):
        missing = [p for p in planned if p not in done]
        L.append(f"**Partial run:** {len(done)} of {len(planned)} (arm, seed) blocks finished; missing: "
                 f"{', '.join(missing)}. Every number below uses the seeds each grid has (column *seeds*).\n")
    L.append("#### Design\n")
    L.append(f"Net: MLP 196-{'-'.join(str(h) for h in plan['hidden'])}-10 on 14×14 MNIST (4000 train / 1000 "
             "validation), exactly scale-invariant (normalization without γ/β, ε = 1e-12, frozen head) except in "
             "the ε arm. Score: − validation cross-entropy with BatchNorm statistics recomputed on 1024 training "
             "images. Grids: η over "
             f"10^{plan['sgd_lr'][0]:g}…10^{plan['sgd_lr'][1]:g} (SGD, momentum 0.9) or "
             f"10^{plan['adam_lr'][0]:g}…10^{plan['adam_lr'][1]:g} (Adam), λ_new over "
             f"10^{plan['wd_new'][0]:g}…10^{plan['wd_new'][1]:g}, {plan['h']:g} decades apart on both axes; "
             f"seeds {list(plan['seeds'])} (each its own initialization and batch order); constant LR "
             f"{plan['constant_steps']} steps read at {list(plan['checkpoints'])}; schedules "
             f"{plan['schedule_steps']} steps (step: ÷10 at 1/2 and 3/4). Standard rule = decay η_t·λ_old "
             "(Keras `weight_decay`), cells placed at λ_new = η_0·λ_old.\n")
    L.append("| arm | what runs |\n|---|---|")
    for arm in plan["arms"]:
        L.append(f"| {NAMES[arm]} | {design.LABELS[arm]} |")
    L.append("")
    L.append("#### Predictions (fixed before the run)\n")
    L.append("```text\n" + plan["predictions_text"] + "```\n")
    L.append("Amendments, each dated:\n")
    L.append("```text\n" + design.AMENDMENTS + "```\n")
    L.append("#### Verdicts\n")
    L.append("Intervals: 95 % jackknife-t over seeds (leave one seed out of every grid at once, t with R − 1 "
             "degrees of freedom; [the math](../math.md#confidence-intervals)); the design's percentile bootstrap is "
             "shown beside it: over 4 seeds it covers about 80 % of the time, not 95 %, so the verdicts use the "
             "jackknife-t interval. A verdict on an invariant arm also needs every cell of the sweeps it reads to "
             "keep its pre-normalization variance ≥ 100·ε; otherwise it is *inconclusive*.\n")
    L.append("| prediction | estimate | 95 % CI | bootstrap CI | verdict |\n|---|---|---|---|---|")
    for p in results.get("predictions", []):
        L.append(f"| {p['name']} | {_f(p['estimate'])} | {_ci(p['ci'])} | {_ci(p.get('ci_bootstrap'))} | "
                 f"**{p['verdict']}** |")
    L.append("")
    inv = a.get("invariance", {})
    if inv:
        below = [(arm, c) for arm, v in inv.items() for c in v["below_100"]]
        L.append("**Invariance check.** Minimum over training and layers of the pre-normalization variance / ε, per "
                 "cell, in the arms that claim scale invariance (ε = 1e-12): minimum "
                 f"{np.nanmin([v['min'] for v in inv.values()]):.3g}; ≥ 100 in every "
                 f"cell of {', '.join(NAMES[arm] for arm, v in inv.items() if not v['below_100'])}."
                 + (" Below 100 (the claim of invariance does not hold there; the weights shrank until their "
                    "pre-normalization variance approached ε): " + "; ".join(
                        f"{NAMES[arm]} at η = {lr:.3g}, λ_new = {w:.3g}: {mv:.3g} (score {sc:.3f})"
                        for arm, (lr, w, mv, sc) in below) if below else "") + "\n")
    if "P1" in a:
        L.append("#### P1, P2: constant LR\n")
        L.append("| steps | seeds | S_new (best fixed λ_new) | S_old (best fixed λ_old) | S_old − S_new | seed-noise "
                 "floor | best λ_new | best λ_old | best λ_new moves (decades) | best λ_old moves | best score | "
                 "best cell on the grid's edge |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in a["P1"]:
            L.append(f"| {r['steps']} | {r['seeds']} | {_f(r['S_new'])} {_ci(r['S_new_ci'])} | {_f(r['S_old'])} "
                     f"{_ci(r['S_old_ci'])} | {_f(r['diff'])} {_ci(r['diff_ci'])} | {_f(r['noise_floor'])} | "
                     f"{r['best_lambda_new']:.3g} | {r['best_lambda_old']:.3g} | {r['move_new']:.1f} | "
                     f"{r['move_old']:.1f} | {_f(r['best'])} | {', '.join(r['best_on_edge']) or 'no'} |")
        L.append("\nThe seed-noise floor is the shortfall a column whose true scores are all equal shows from the "
                 "cells' seed-to-seed noise alone (`report.noise_floor`): a shortfall near it is flat within "
                 "what R seeds can resolve.\n")
        p = a["P2"]
        L.append(f"\nP2: the lag of the smallest η (10^{results['plan']['sgd_lr'][0]:g}) behind the best η at "
                 f"λ_new = {p['lambda_new']:.3g} (the best column at the longest budget):\n")
        L.append("| steps | clock t·λ_new | lag (nats) | 95 % CI |\n|---|---|---|---|")
        for r in p["lags"]:
            L.append(f"| {r['steps']} | {r['clock']:.2f} | {_f(r['lag'])} | {_ci(r['ci'])} |")
        L.append("")
    for name, label in (("step", "P3: step decay"), ("cosine", "P3: cosine"), ("adam", "P4: Adam (cosine)"),
                        ("eps_step", "P5: the ε arm (users' net, step decay)")):
        if name not in a:
            continue
        p = a[name]
        L.append(f"#### {label}\n")
        std, new = [arm for arm in p["best_on_edge"]]
        edges = "; ".join(f"{NAMES[arm]}: {', '.join(e)}" for arm, e in p["best_on_edge"].items() if e)
        L.append(f"{p['steps']} steps, {p['seeds']} seeds. η_0-shortfall at the best fixed λ_new (standard rule "
                 f"{p['best_lambda_new'][std]:.3g}, λ_new constant {p['best_lambda_new'][new]:.3g}): standard rule "
                 f"{_f(p['shortfall_standard'])} {_ci(p['ci_standard'])}, λ_new constant {_f(p['shortfall_new'])} "
                 f"{_ci(p['ci_new'])}; seed-noise floors {_f(p['noise_floor_standard'])} and "
                 f"{_f(p['noise_floor_new'])}. Best cell on the grid's edge: {edges or 'neither'}. "
                 f"Best over the grid: standard {_f(p['best_standard'])}, λ_new constant "
                 f"{_f(p['best_new'])}; standard − λ_new constant = {_f(p['best_vs_best'])} "
                 f"{_ci(p['best_vs_best_ci'])}. Cells with min pre-normalization variance / ε < 100, of "
                 f"{p['cells']} per grid: " + ", ".join(f"{NAMES[arm]} {n}" for arm, n in p["minvar_below_100"].items())
                 + ".\n")
        L.append("| λ_new at η_0 | post-drop clock, standard | post-drop clock, λ_new const. | best standard | "
                 "best λ_new const. | η_0-shortfall standard | η_0-shortfall λ_new const. |\n|---|---|---|---|---|---|---|")
        for c in p["columns"]:
            L.append(f"| {c['lambda_new']:.3g} | {c['post_drop_clock_standard']:.3g} | {c['post_drop_clock_new']:.3g} | "
                     f"{_f(c['best_standard'])} | {_f(c['best_new'])} | {_f(c['shortfall_standard'])} | "
                     f"{_f(c['shortfall_new'])} |")
        L.append("")
    if "P5" in a:
        p = a["P5"]
        L.append(f"P5: η_0-shortfall of λ_new constant, users' net − invariant net = {_f(p['diff'])} {_ci(p['ci'])}. "
                 "Control, the standard rule on the same two nets (the users' net also has a trainable head and "
                 f"γ/β, which are not scale-invariant): {_f(p['control_standard'])} {_ci(p['control_standard_ci'])}; "
                 f"the part specific to λ_new constant (the difference of the two): {_f(p['specific_to_new'])} "
                 f"{_ci(p['specific_to_new_ci'])}. "
                 f"In the users' net (λ_new constant) the minimum over training of the pre-normalization variance / ε "
                 f"ranges over {p['minvar_range'][0]:.2g}…{p['minvar_range'][1]:.2g}: {p['below_100']} of its "
                 f"{p['cells']} cells fall below 100, where ε is no longer negligible, and {len(p['low_cells'])} below "
                 f"1, where ε dominates and the layer stops normalizing (standard rule: {p['standard_low']} below 1). "
                 + (f"In those {len(p['low_cells'])} cells its score minus the invariant net's in the same cell is "
                    f"{_f(p['loss_low'])} nats on average" if p["low_cells"] else "")
                 + (f" (in the other cells {_f(p['loss_high'])})" if p["loss_high"] is not None else "") + ".\n")
        if p["low_cells"]:
            L.append("| η_0 | λ_new | min variance / ε | score − invariant net's |\n|---|---|---|---|")
            for lr, w, mv, d in p["low_cells"]:
                L.append(f"| {lr:.3g} | {w:.3g} | {mv:.2g} | {_f(d)} |")
            L.append("")
    if "P6" in a:
        t = a["P6"]
        L.append("#### P6: KerasTuner\n")
        L.append(t["description"] + "\n")
        for B, tab in sorted(t["tabular"].items(), key=lambda kv: int(kv[0])):
            L.append(f"{B} steps, {tab['repeats']} searches × {tab['trials']} trials each:\n")
            bb = tab.get("box_best")
            if bb:
                L.append("What each box can reach (the grid's cells nearest to its proposals): " + "; ".join(
                    f"(η, λ_{k}) {v['cells']} cells, best {_f(v['best'])}, "
                    f"{'holds' if v['holds_grid_best'] else 'does not hold'} the grid's best cell ({_f(tab['grid_best'])})"
                    for k, v in bb.items()) + ".\n")
            L.append("| search | mean best found | 95 % CI | share within 0.02 nats of the grid's best | "
                     "short of its own box's best |\n|---|---|---|---|---|")
            for k, s in tab["summary"].items():
                L.append(f"| {k} | {_f(s['mean'])} | {_ci(s['ci'])} | {s['within']:.2f} | "
                         f"{_f(s.get('box_shortfall'))} |")
            L.append("")
        if t.get("real"):
            L.append("Real searches (KerasTuner trials that train the cell): " + t["real"]["summary"] + "\n")
    L.append("#### Figures\n")
    for p in pngs:
        L.append(f"![{p}]({folder}{p})\n")
    return "\n".join(L) + "\n"


def write(results, out, folder=None):
    """report.md and the figures into `out`; `folder`: the prefix of the image links (default: none)."""
    a = analyse(results)
    pngs = figures(results, out, a)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(results, a, pngs, folder or ""))
    return pngs
