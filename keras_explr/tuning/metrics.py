"""Entanglement metrics of an (η, λ) results grid (pure numpy).

Input convention (shared by every grid metric here):

* ``scores``: shape (n_lr, n_wd) or (n_lr, n_wd, n_seeds); **higher is better**
  (accuracy, or minus a loss). Row i is learning rate η_i, column j weight
  decay λ_j. Non-finite scores (diverged runs) are replaced by the lowest
  finite score of the grid: a diverged run counts as the worst run.
* ``learning_rates``: the n_lr raw values η_i (> 0); log10 is taken inside.
* ``weight_decays``: the n_wd raw values λ_j (> 0), or an (n_lr, n_wd) array of
  per-cell values, for a grid that is rectangular in another coordinate system
  (e.g. the runs of a (η, λ_old) grid expressed in λ_new = η·λ_old).

Notation: A_ij = mean over seeds of the scores, x_i = log10 η_i,
y_ij = log10 λ_ij. With seeds, confidence intervals come from a cell-wise
bootstrap: each replicate resamples, independently in every cell, that cell's
R seed values with replacement, recomputes the mean grid and the metric; the
interval is the percentile interval of the replicates (docs/math.md#confidence-intervals).
"""

import dataclasses
import math

import numpy as np

from keras_explr import _checks

__all__ = [
    "RidgeSlope", "Estimate", "SearchCost",
    "ContourSlope", "mean_grid", "ridge_slope", "slope_statistic", "contour_slope", "good_region_correlation",
    "transfer_regret",
    "cellwise_bootstrap", "paired_difference", "diagonal_flatness",
    "within_fraction", "expected_best_of_n", "trials_to_within", "search_cost",
]


# ------------------------------------------------------------------ input checks
def _check_scores(scores):
    a = np.asarray(scores, dtype="float64")
    if a.ndim not in (2, 3):
        raise ValueError(
            "`scores` must have shape (n_lr, n_wd) or (n_lr, n_wd, n_seeds). "
            f"Received shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1 or (a.ndim == 3 and a.shape[2] < 1):
        raise ValueError(f"`scores` must not be empty. Received shape {a.shape}")
    if not np.isfinite(a).any():
        raise ValueError("`scores` has no finite value")
    if a.ndim == 2:
        a = a[..., None]
    # A diverged run counts as the worst run of the grid.
    return np.where(np.isfinite(a), a, np.nanmin(np.where(np.isfinite(a), a, np.nan)))


def _check_rates(name, values, n):
    v = np.asarray(values, dtype="float64")
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"`{name}` must be a 1-D sequence of {n} values (one per grid "
                         f"{'row' if name == 'learning_rates' else 'column'}). Received shape {v.shape}")
    if not (np.isfinite(v).all() and (v > 0).all()):
        raise ValueError(f"`{name}` must be finite and > 0. Received: {v.tolist()}")
    return np.log10(v)


def _check_wd(weight_decays, shape):
    v = np.asarray(weight_decays, dtype="float64")
    if v.ndim == 1:
        y = _check_rates("weight_decays", v, shape[1])
        return np.broadcast_to(y, shape[:2]).copy()
    if v.shape != tuple(shape[:2]):
        raise ValueError("`weight_decays` must have n_wd values or shape (n_lr, n_wd) = "
                         f"{tuple(shape[:2])}. Received shape {v.shape}")
    if not (np.isfinite(v).all() and (v > 0).all()):
        raise ValueError("`weight_decays` must be finite and > 0")
    y = np.log10(v)
    if (np.diff(y, axis=1) <= 0).any():
        raise ValueError("`weight_decays` must increase along each row")
    return y


def mean_grid(scores):
    """A_ij: the mean over seeds of each cell (non-finite runs count as the worst run)."""
    return _check_scores(scores).mean(axis=-1)


# --------------------------------------------------------------------- bootstrap
def cellwise_bootstrap(statistic, scores, n_boot=2000, seed=0, batch=250):
    """Replicates of `statistic(mean_grid)` under a cell-wise seed bootstrap.

    Replicate b draws, for every cell (i, j), R indices r_1..r_R uniformly from
    {1..R} with replacement and forms A*_ij = (1/R) Σ_k S_ij,r_k; it returns
    statistic(A*). Replicates where the statistic is undefined are NaN.

    Args:
      statistic (Callable[[np.ndarray], float]): callable taking an (n_lr, n_wd) mean grid, returning a float.
      scores (ArrayLike): (n_lr, n_wd, R) per-seed scores, R ≥ 2.
      n_boot (int): number of replicates B ≥ 1.
      seed (int): seed of the resampling generator (the result is deterministic).
      batch (int): replicates drawn at once (memory only).
    """
    s = _check_scores(scores)
    if s.shape[2] < 2:
        raise ValueError("a seed bootstrap needs `scores` with >= 2 seeds per cell "
                         f"(shape (n_lr, n_wd, n_seeds)). Received shape {np.shape(scores)}")
    n_boot = _checks.check_int("n_boot", n_boot, 1)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        idx = rng.integers(0, s.shape[2], size=(b,) + s.shape)
        grids = np.take_along_axis(s[None], idx, axis=-1).mean(axis=-1)
        for k in range(b):
            out[start + k] = statistic(grids[k])
    return out


def paired_difference(statistic, scores_a, scores_b, n_boot=2000, seed=0, ci=0.95, statistic_b=None):
    """Paired bootstrap of statistic(A) − statistic(B) for two grids run with the same seeds.

    Seed index k of cell (i, j) is the same initialization and data order in
    both grids, so each replicate draws one set of indices per cell and applies
    it to both: Δ* = statistic(A*) − statistic(B*). Returns an `Estimate` of
    Δ = statistic(Ā) − statistic(B̄) with the percentile interval of Δ*.
    `statistic_b` (default: `statistic`) is applied to grid B, for grids in
    different coordinates (e.g. λ_old and λ_new values).

    Args:
      statistic (Callable[[np.ndarray], float]): applied to the mean grid of A.
      scores_a, scores_b (ArrayLike): (n_lr, n_wd, R) per-seed scores of the two grids, R ≥ 2.
      n_boot (int): bootstrap replicates B ≥ 1.
      seed (int): the bootstrap's seed.
      ci (float): the interval's coverage in (0, 1).
      statistic_b (Callable[[np.ndarray], float] | None): applied to the mean grid of B.

    Returns:
      (Estimate): Δ with the percentile interval of Δ*.
    """
    stat_b = statistic if statistic_b is None else statistic_b
    a, b = _check_scores(scores_a), _check_scores(scores_b)
    if a.shape != b.shape:
        raise ValueError("`scores_a` and `scores_b` must have the same shape (same grid "
                         f"size and seeds). Received {a.shape} and {b.shape}")
    if a.shape[2] < 2:
        raise ValueError("a paired bootstrap needs >= 2 seeds per cell")
    ci = _checks.check_fraction("ci", ci)
    n_boot = _checks.check_int("n_boot", n_boot, 1)
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for k in range(n_boot):
        idx = rng.integers(0, a.shape[2], size=a.shape)
        ga = np.take_along_axis(a, idx, axis=-1).mean(-1)
        gb = np.take_along_axis(b, idx, axis=-1).mean(-1)
        reps[k] = statistic(ga) - stat_b(gb)
    point = statistic(a.mean(-1)) - stat_b(b.mean(-1))
    return Estimate(float(point), _interval(reps, ci), _valid(reps))


def _interval(replicates, ci):
    r = replicates[np.isfinite(replicates)]
    if r.size == 0:
        return (math.nan, math.nan)
    q = 100 * (1 - ci) / 2
    return (float(np.percentile(r, q)), float(np.percentile(r, 100 - q)))


def _valid(replicates):
    return int(np.isfinite(replicates).sum())


@dataclasses.dataclass
class Estimate:
    """A point estimate, its bootstrap interval (None without seeds), the
    number of replicates in which it was defined, and `reason`: why the value
    is undefined (NaN), '' otherwise."""
    value: float
    ci: tuple = None
    n_valid_boot: int = 0
    reason: str = ""

    def as_dict(self):
        return {"value": self.value, "ci": None if self.ci is None else list(self.ci),
                "n_valid_boot": self.n_valid_boot, "reason": self.reason}


def _with_ci(statistic, scores, n_boot, seed, ci):
    s = _check_scores(scores)
    point = statistic(s.mean(-1))
    if s.shape[2] < 2 or n_boot == 0:
        return Estimate(float(point))
    reps = cellwise_bootstrap(statistic, s, n_boot=n_boot, seed=seed)
    return Estimate(float(point), _interval(reps, _checks.check_fraction("ci", ci)), _valid(reps))


# ------------------------------------------------------------------- M1: slope
REFINEMENTS = ("log", "parabola")
_LOG_FLOOR = 0.02  # ε of the "log" refinement, a fraction of the row's range


@dataclasses.dataclass
class RidgeSlope:
    """M1. `slope` of the ridge log10 λ*(η) against log10 η and its bootstrap
    `ci` (None with one seed); `rows`: the grid rows fitted, `ridge`: the
    refined log10 λ* of each; `edge_rows`: rows within δ of the best whose best
    λ is on the grid's edge (left out of the fit: they bound λ* only);
    `delta_used`: the score band the fitted rows span (≥ δ when the band was
    widened to reach `min_rows`); `reason`: why the slope is NaN, or what was
    done to get it (widened band), '' when nothing needs saying."""
    slope: float
    intercept: float
    rows: list
    ridge: list
    edge_rows: list
    ci: tuple = None
    n_valid_boot: int = 0
    delta_used: float = math.nan
    reason: str = ""

    def as_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _vertex(y0, y1, y2, f0, f1, f2):
    """(vertex, value there) of the parabola through (y0,f0), (y1,f1), (y2,f2),
    the vertex clipped to the half-intervals around y1. For equal spacing h
    the vertex is y1 + h·clip(½(f0 − f2)/(f0 − 2f1 + f2), −½, ½)."""
    a, b = y1 - y0, y1 - y2
    den = a * (f1 - f2) - b * (f1 - f0)
    if den == 0 or not math.isfinite(den):
        return y1, f1
    v = y1 - 0.5 * (a * a * (f1 - f2) - b * b * (f1 - f0)) / den
    v = float(min(max(v, y1 - a / 2), y1 + (y2 - y1) / 2))
    value = (f0 * (v - y1) * (v - y2) / ((y0 - y1) * (y0 - y2)) + f1 * (v - y0) * (v - y2) / ((y1 - y0) * (y1 - y2))
             + f2 * (v - y0) * (v - y1) / ((y2 - y0) * (y2 - y1)))
    return v, float(max(f1, value))


def _parabolic_vertex(y0, y1, y2, f0, f1, f2):
    """The clipped vertex of `_vertex` (the plain three-point refinement)."""
    return _vertex(y0, y1, y2, f0, f1, f2)[0]


def _row_peak(row, yrow, refine):
    """(j*, refined log10 λ*, refined peak score, on_edge) of one grid row."""
    j = int(np.argmax(row))
    if j == 0 or j == row.size - 1 or row.max() == row.min():
        return j, float(yrow[j]), float(row[j]), True
    ys, fs = yrow[j - 1:j + 2], row[j - 1:j + 2]
    v, peak = _vertex(*ys, *fs)
    if refine == "log":
        lo, rg = row.min(), row.max() - row.min()
        v = _vertex(*ys, *np.log(fs - lo + _LOG_FLOOR * rg))[0]
    return j, v, peak, False


def _ridge(A, x, y, delta, min_rows, refine="log"):
    """(slope, intercept, rows, ridge, edge_rows, delta_used, reason) of a mean grid."""
    best = float(A.max())
    peaks = [_row_peak(A[i], y[i], refine) for i in range(A.shape[0])]
    edges = [i for i, p in enumerate(peaks) if p[3] and A[i].max() >= best - delta]
    inner = sorted((i for i, p in enumerate(peaks) if not p[3]), key=lambda i: -peaks[i][2])
    rows = [i for i in inner if peaks[i][2] >= best - delta]
    reason = ""
    if len(rows) < min_rows:
        if len(inner) < min_rows:
            on_edge = [i for i, p in enumerate(peaks) if p[3]]
            reason = (f"only {len(inner)} of {A.shape[0]} rows have their best weight decay inside the grid "
                      f"(rows {on_edge} peak on its edge or are flat) and the fit needs min_rows={min_rows}: "
                      "widen the weight-decay range or add learning rates")
            ridge = [peaks[i][1] for i in inner]
            return math.nan, math.nan, sorted(inner), ridge, edges, math.nan, reason
        rows = inner[:min_rows]
        reason = (f"only {len([i for i in inner if peaks[i][2] >= best - delta])} row(s) peak within "
                  f"delta={delta:g} of the best; the band was widened to the {min_rows} best rows")
    rows = sorted(rows)
    ridge = [peaks[i][1] for i in rows]
    delta_used = best - min(peaks[i][2] for i in rows)
    slope, intercept = np.polyfit(x[rows], ridge, 1)
    return float(slope), float(intercept), rows, ridge, edges, float(max(delta_used, 0.0)), reason


def ridge_slope(scores, learning_rates, weight_decays, delta=0.05, min_rows=3,
                n_boot=2000, ci=0.95, seed=0, refine="log"):
    r"""M1, the ridge slope with a three-point refinement (docs/math.md#entanglement-metrics).

    In each row i, j* = argmax_j A_ij; the ridge point y*_i is the vertex of a
    parabola through the three cells around j* and the row's peak score p_i
    the value of the plain parabola there. ``refine="log"`` (default) fits the
    parabola to log(A_ij − min_j A_ij + ε·range_i), ε = 0.02, instead of A_ij:
    exact for a Gaussian peak, within a few hundredths of a decade for
    Lorentzian, sech and parabolic ones, and it keeps its accuracy on ridges
    narrower than the grid step, where the plain parabola (``"parabola"``;
    \(y^*_i = y_{j^*} + h\operatorname{clip}(\tfrac12(A_{i,j^*-1} - A_{i,j^*+1})/(A_{i,j^*-1} - 2A_{ij^*} + A_{i,j^*+1}), -\tfrac12, \tfrac12)\)
    for spacing \(h\)) pulls \(y^*_i\) towards the grid point. Either vertex is clipped
    to ±half a grid step.

    Rows fitted: every row with its best λ inside the grid and p_i ≥ max A − δ.
    When fewer than `min_rows` qualify (a narrow ridge falling between cells
    leaves few rows near the best), the band widens to the `min_rows` rows
    with the highest p_i; `delta_used` and `reason` say so. Rows whose best λ
    is on the grid's edge only bound λ*: they are left out of the fit and
    listed in `edge_rows`. The slope s is the least-squares slope of y*_i on
    x_i: s = −1 when the best λ follows ηλ = const (fully entangled), s = 0
    when it does not depend on η. It is NaN, with the `reason`, only when
    fewer than `min_rows` rows have their best λ inside the grid. The
    transposed slope (η* against λ) is ridge_slope(scores.swapaxes(0, 1),
    weight_decays, learning_rates).

    Args:
      scores, learning_rates, weight_decays (ArrayLike): see the module docstring.
      delta (float): δ ≥ 0 in score units (e.g. 0.05 = 5 accuracy points).
      min_rows (int): rows needed (≥ 2).
      n_boot (int): bootstrap replicates B (0: no interval); needs ≥ 2 seeds.
      ci (float): the interval's coverage in (0, 1).
      seed (int): the bootstrap's seed.
      refine (str): "log" or "parabola".

    Returns:
      (RidgeSlope): the slope; the interval's replicates re-select their rows.
    """
    s = _check_scores(scores)
    x = _check_rates("learning_rates", learning_rates, s.shape[0])
    y = _check_wd(weight_decays, s.shape)
    delta = _checks.check_non_negative("delta", delta)
    min_rows = _checks.check_int("min_rows", min_rows, 2)
    n_boot = _checks.check_int("n_boot", n_boot, 0)
    refine = _check_refine(refine)
    slope, icpt, rows, ridge, edges, used, reason = _ridge(s.mean(-1), x, y, delta, min_rows, refine)
    out = RidgeSlope(slope, icpt, rows, ridge, edges, delta_used=used, reason=reason)
    if s.shape[2] >= 2 and n_boot > 0:
        reps = cellwise_bootstrap(lambda A: _ridge(A, x, y, delta, min_rows, refine)[0], s,
                                  n_boot=n_boot, seed=seed)
        out.ci = _interval(reps, _checks.check_fraction("ci", ci))
        out.n_valid_boot = _valid(reps)
    return out


def _check_refine(refine):
    if refine not in REFINEMENTS:
        raise ValueError(f"`refine` must be one of {REFINEMENTS}. Received: refine={refine!r}")
    return refine


def slope_statistic(learning_rates, weight_decays, delta=0.05, min_rows=3, refine="log"):
    """M1 as a function of a mean grid, for `paired_difference`."""
    x = _check_rates("learning_rates", learning_rates, len(learning_rates))
    wd = np.asarray(weight_decays, dtype="float64")
    n_wd = wd.shape[-1]
    refine = _check_refine(refine)

    def statistic(A):
        y = _check_wd(wd, (len(x), n_wd))
        return _ridge(A, x, y, delta, min_rows, refine)[0]

    return statistic


# ------------------------------------------------------- M1b: contour slope
@dataclasses.dataclass
class ContourSlope:
    """M1b. `slope` d log10 λ / d log10 η of the iso-score contours (the median over
    every adjacent row pair, score level and flank where both rows cross the
    level), its bootstrap `ci` (None with one seed), `n_segments` (how many
    (row pair, level, flank) slopes the median is over), `levels` (the score
    levels given; None: per row pair, inside the overlap of their ranges) and
    `reason`: why the slope is NaN, '' otherwise."""
    slope: float
    ci: tuple = None
    n_valid_boot: int = 0
    n_segments: int = 0
    levels: list = None
    reason: str = ""

    def as_dict(self):
        return {"slope": self.slope, "value": self.slope, "ci": None if self.ci is None else list(self.ci),
                "n_valid_boot": self.n_valid_boot, "n_segments": self.n_segments,
                "levels": None if self.levels is None else list(self.levels), "reason": self.reason}


def _crossings(row, yrow, level):
    """{+1: [...], -1: [...]}: the log10 λ where one row crosses `level`, by linear interpolation
    between adjacent columns, split by flank (+1: the score rises with λ there, −1: it falls)."""
    out = {1: [], -1: []}
    d = row - level
    for j in range(row.size - 1):
        a, b = d[j], d[j + 1]
        if (a < 0 <= b) or (b < 0 <= a):
            out[1 if b > a else -1].append(float(yrow[j] + a / (a - b) * (yrow[j + 1] - yrow[j])))
    return out


def _contour_segments(A, x, y, levels, n_levels):
    """Every defined slope (y_c(i+1) − y_c(i))/(x_{i+1} − x_i): per adjacent row pair, level and flank,
    where each of the two rows crosses the level exactly once on that flank. `levels` None: per pair,
    `n_levels` levels evenly spaced inside the overlap of the two rows' score ranges."""
    out = []
    for i in range(A.shape[0] - 1):
        if levels is None:
            lo, hi = max(A[i].min(), A[i + 1].min()), min(A[i].max(), A[i + 1].max())
            pair_levels = [lo + (hi - lo) * (k + 1) / (n_levels + 1) for k in range(n_levels)] if hi > lo else []
        else:
            pair_levels = levels
        for level in pair_levels:
            c0, c1 = _crossings(A[i], y[i], level), _crossings(A[i + 1], y[i + 1], level)
            for flank in (1, -1):
                if len(c0[flank]) == 1 and len(c1[flank]) == 1:
                    out.append((c1[flank][0] - c0[flank][0]) / (x[i + 1] - x[i]))
    return out


def contour_slope(scores, learning_rates, weight_decays, levels=None, n_levels=9, n_boot=2000, ci=0.95, seed=0):
    r"""M1b, the slope of the iso-score contours, d log10 λ / d log10 η (docs/math.md#entanglement-metrics).

    For each pair of adjacent rows \((\eta_i, \eta_{i+1})\) and each score level \(L\), the
    log10 λ where each row crosses L is found by linear interpolation in
    log10 λ between the two columns that bracket it, separately on the rising
    and the falling flank of the row; where both rows cross L exactly once on
    a flank, that gives one slope \((y_{c,i+1} - y_{c,i})/(x_{i+1} - x_i)\). The
    contour slope is the median of every such slope. Unlike the ridge slope it
    needs no optimum inside the grid: a surface that only rises or falls
    along λ in the region measured still has contours. For a surface
    f = g(log10 λ − s·log10 η) the contours are the lines log10 λ = c + s·log10 η,
    slope s; at equilibrium with a constant LR the state depends on ηλ only, so
    s = −1 in (η, λ) and 0 in (η, λ_new).

    Args:
      scores, learning_rates, weight_decays (ArrayLike): see the module docstring (per-cell
        `weight_decays` allowed: the same runs in other coordinates; the slope
        in λ_new = η·λ is then exactly the slope in λ plus 1).
      levels (ArrayLike | None): the score levels, the same for every row pair; default (None):
        for each row pair, `n_levels` levels evenly spaced inside the overlap
        of the two rows' score ranges (recomputed in every bootstrap replicate),
        so every pair whose ranges overlap contributes.
      n_levels (int): number of levels per row pair when `levels` is None (≥ 1).
      n_boot (int): bootstrap replicates (as `ridge_slope`).
      ci (float): the interval's coverage (as `ridge_slope`).
      seed (int): the bootstrap's seed (as `ridge_slope`).

    Returns:
      (ContourSlope): the slope; NaN with the `reason` when no level crosses two
        adjacent rows (one row, one column, or rows whose score ranges do not overlap).
    """
    s = _check_scores(scores)
    x = _check_rates("learning_rates", learning_rates, s.shape[0])
    y = _check_wd(weight_decays, s.shape)
    n_levels = _checks.check_int("n_levels", n_levels, 1)
    n_boot = _checks.check_int("n_boot", n_boot, 0)
    A = s.mean(-1)
    if levels is not None:
        levels = [float(v) for v in np.atleast_1d(np.asarray(levels, dtype="float64"))]
        if not levels or not all(math.isfinite(v) for v in levels):
            raise ValueError(f"`levels` must be finite score values. Received: levels={levels!r}")

    def statistic(G):
        seg = _contour_segments(G, x, y, levels, n_levels)
        return float(np.median(seg)) if seg else math.nan

    seg = _contour_segments(A, x, y, levels, n_levels)
    out = ContourSlope(float(np.median(seg)) if seg else math.nan, n_segments=len(seg), levels=levels)
    if not seg:
        if s.shape[0] < 2 or s.shape[1] < 2:
            out.reason = (f"the grid has {s.shape[0]} row(s) and {s.shape[1]} column(s): a contour slope needs "
                          "at least 2 learning rates and 2 weight decays")
        else:
            out.reason = ("no score level is crossed once on the same flank by two adjacent rows: the rows' "
                          "score ranges do not overlap (or the grid is flat); add weight decays or learning rates")
    if s.shape[2] >= 2 and n_boot > 0:
        reps = cellwise_bootstrap(statistic, s, n_boot=n_boot, seed=seed)
        out.ci = _interval(reps, _checks.check_fraction("ci", ci))
        out.n_valid_boot = _valid(reps)
    return out


# ----------------------------------------------------------- M2: correlation
def _rho(A, x, y, quantile):
    w = np.maximum(0.0, A - np.quantile(A, quantile))
    if w.sum() <= 0:
        return math.nan
    X = np.broadcast_to(x[:, None], A.shape)
    xm, ym = (w * X).sum() / w.sum(), (w * y).sum() / w.sum()
    sxy = (w * (X - xm) * (y - ym)).sum()
    sxx, syy = (w * (X - xm) ** 2).sum(), (w * (y - ym) ** 2).sum()
    if sxx <= 0 or syy <= 0:
        return math.nan
    return float(sxy / math.sqrt(sxx * syy))


def good_region_correlation(scores, learning_rates, weight_decays, quantile=0.75,
                            n_boot=2000, ci=0.95, seed=0):
    """M2, the weighted correlation of log η and log λ over the good region.

    w_ij = max(0, A_ij − Q_q(A)) (Q_q: the q-quantile of the mean grid) and
    ρ = Σw(x−x̄)(y−ȳ) / √(Σw(x−x̄)² Σw(y−ȳ)²) with w-weighted means x̄, ȳ.
    ρ ∈ [−1, 1]; −1 is a diagonal valley, 0 an axis-aligned one; invariant to
    rescaling either axis, non-linear in the ridge slope. NaN when fewer than
    two rows or columns carry weight. Returns an `Estimate`.

    Args:
      scores, learning_rates, weight_decays (ArrayLike): see the module docstring.
      quantile (float): q in (0, 1).
      n_boot (int): bootstrap replicates B (0: no interval).
      ci (float): the interval's coverage in (0, 1).
      seed (int): the bootstrap's seed.

    Returns:
      (Estimate): ρ with its interval (NaN with a `reason` when undefined).
    """
    s = _check_scores(scores)
    x = _check_rates("learning_rates", learning_rates, s.shape[0])
    y = _check_wd(weight_decays, s.shape)
    q = _checks.check_fraction("quantile", quantile)
    out = _with_ci(lambda A: _rho(A, x, y, q), s, _checks.check_int("n_boot", n_boot, 0), seed, ci)
    if not math.isfinite(out.value):
        out.reason = (f"fewer than two learning rates or weight decays score above the grid's {q:g}-quantile: "
                      "the good region is a single row or column (lower `quantile` or widen the grid)")
    return out


# ---------------------------------------------------------- M3: transfer regret
def _regret(A, delta):
    i0, j_hat = np.unravel_index(np.argmax(A), A.shape)
    rows = [i for i in range(A.shape[0]) if A[i].max() >= A.max() - delta]
    return float(np.mean([A[i].max() - A[i, j_hat] for i in rows]))


def transfer_regret(scores, learning_rates, weight_decays, delta=0.05, n_boot=2000, ci=0.95, seed=0):
    r"""M3, λ-transfer regret: the cost of tuning λ at one LR and re-tuning only η.

    \(\hat\jmath = \operatorname{argmax}_j A_{i_0 j}\) at the best row \(i_0\) (the row of the grid's maximum);
    \(R\) = mean over the reasonable rows \(i\) (\(\max_j A_{ij} \ge \max A - \delta\)) of
    \(\max_j A_{ij} - A_{i\hat\jmath}\), in score units. R ≈ 0 when the best λ does not move with
    η (decoupled). Needs a grid rectangular in (η, λ): 1-D `weight_decays`.
    Returns an `Estimate`.

    Args:
      scores, learning_rates, weight_decays (ArrayLike): see the module docstring.
      delta (float): δ ≥ 0 in score units.
      n_boot (int): bootstrap replicates B (0: no interval).
      ci (float): the interval's coverage in (0, 1).
      seed (int): the bootstrap's seed.

    Returns:
      (Estimate): R in score units, with its interval.
    """
    s = _check_scores(scores)
    _check_rates("learning_rates", learning_rates, s.shape[0])
    if np.ndim(weight_decays) != 1:
        raise ValueError("`weight_decays` must be 1-D for transfer_regret: holding λ fixed "
                         "across rows needs a grid rectangular in (η, λ)")
    _check_rates("weight_decays", weight_decays, s.shape[1])
    d = _checks.check_non_negative("delta", delta)
    return _with_ci(lambda A: _regret(A, d), s, _checks.check_int("n_boot", n_boot, 0), seed, ci)


# ------------------------------------------------------------- diagonal sweep
def diagonal_flatness(scores, learning_rates, n_boot=2000, ci=0.95, seed=0):
    """How flat the score is along a diagonal sweep ηλ = const.

    For mean scores a_k at learning rates η_k (k = 1..K), returns a dict of
    `Estimate`s: "range" = max a − min a; "shortfall" = (1/K) Σ (max a − a_k),
    the Wortsman-style sensitivity (mean distance to the best along the
    diagonal); "slope" = least-squares slope of a on log10 η (score units per
    decade). Intervals resample each point's seeds.

    Args:
      scores (ArrayLike): shape (K,) or (K, n_seeds).
      learning_rates (ArrayLike): the K values η_k (> 0), spanning the sweep.
    """
    a = np.asarray(scores, dtype="float64")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"`scores` must have shape (K,) or (K, n_seeds) with K >= 2. Received {np.shape(scores)}")
    s = _check_scores(a[:, None, :])
    x = _check_rates("learning_rates", learning_rates, s.shape[0])
    stats = {
        "range": lambda A: float(A[:, 0].max() - A[:, 0].min()),
        "shortfall": lambda A: float(np.mean(A[:, 0].max() - A[:, 0])),
        "slope": lambda A: float(np.polyfit(x, A[:, 0], 1)[0]),
    }
    n_boot = _checks.check_int("n_boot", n_boot, 0)
    return {k: _with_ci(f, s, n_boot, seed, ci) for k, f in stats.items()}


# ------------------------------------------------------------ M5: search cost
def within_fraction(values, x, reference=None):
    """p_x = fraction of the values v with v ≥ ref − x (ref: max of `values`
    unless given). On a grid that stratifies a log-uniform box, p_x estimates
    the probability that one random trial lands within x of the best.

    Args:
      values (ArrayLike): the trials' scores (non-finite ones are dropped).
      x (float): the tolerance x ≥ 0 in score units.
      reference (float | None): ref (default: the max of the scores).

    Returns:
      (float): p_x.
    """
    v = np.asarray(values, dtype="float64").ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("`values` has no finite value")
    x = _checks.check_non_negative("delta", x)
    ref = v.max() if reference is None else float(reference)
    return float(np.mean(v >= ref - x))


def expected_best_of_n(values, n):
    """Dodge et al. (2019): the expected maximum of n trials drawn with
    replacement from the N observed values v_(1) ≤ … ≤ v_(N):
    E[max of n] = Σ_i v_(i)·[(i/N)^n − ((i−1)/N)^n]. `n` may be an array.

    Args:
      values (ArrayLike): the N observed scores (non-finite ones are dropped).
      n (int | ArrayLike): trials per search, ≥ 1.

    Returns:
      (float | np.ndarray): E[max of n]; an array when `n` is one.
    """
    v = np.sort(np.asarray(values, dtype="float64").ravel())
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("`values` has no finite value")
    n_arr = np.atleast_1d(np.asarray(n))
    if (n_arr < 1).any() or not np.issubdtype(n_arr.dtype, np.integer):
        raise ValueError(f"`n` must be integers >= 1. Received: n={n!r}")
    i = np.arange(1, v.size + 1) / v.size
    w = i[None, :] ** n_arr[:, None] - (i - 1 / v.size)[None, :] ** n_arr[:, None]
    out = w @ v
    return out if np.ndim(n) else float(out[0])


def trials_to_within(sequence, x, reference=None):
    """The 1-based index of the first trial (in the order run) whose value is
    ≥ ref − x (ref: the max of `sequence` unless given); None if none is.

    Args:
      sequence (ArrayLike): the trials' scores in the order run.
      x (float): the tolerance x ≥ 0 in score units.
      reference (float | None): ref (default: the max of the scores).

    Returns:
      (int | None): the 1-based index, or None.
    """
    v = np.asarray(sequence, dtype="float64").ravel()
    x = _checks.check_non_negative("delta", x)
    ref = np.nanmax(v) if reference is None else float(reference)
    hits = np.flatnonzero(np.nan_to_num(v, nan=-np.inf) >= ref - x)
    return int(hits[0]) + 1 if hits.size else None


@dataclasses.dataclass
class SearchCost:
    """M5 for one search space: `p` (= p_x), `expected_trials` (1/p, the mean
    number of random trials to the first hit, geometric), `n95`
    (⌈ln 0.05 / ln(1 − p)⌉, trials for a 95 % chance of a hit), their
    bootstrap intervals over the trials, and the number of trials."""
    p: Estimate
    expected_trials: Estimate
    n95: Estimate
    n_trials: int

    def as_dict(self):
        return {"p": self.p.as_dict(), "expected_trials": self.expected_trials.as_dict(),
                "n95": self.n95.as_dict(), "n_trials": self.n_trials}


def _n95(p):
    if p <= 0:
        return math.inf
    if p >= 1:
        return 1.0
    return float(math.ceil(math.log(0.05) / math.log(1 - p)))


def search_cost(values, x, reference=None, n_boot=2000, ci=0.95, seed=0):
    """M5 from trials sampled (or a grid stratifying) one search box.

    p = within_fraction(values, x, reference); expected trials to the first
    hit 1/p; n95 = ⌈ln 0.05 / ln(1 − p)⌉ (∞ when p = 0). Intervals resample the
    trials with replacement (B = `n_boot`); pass a common `reference` (e.g. the
    best over every search space compared) so that p means the same thing.

    Args:
      values (ArrayLike): the trials' scores (non-finite ones are dropped).
      x (float): the tolerance x ≥ 0 in score units.
      reference (float | None): ref (default: the max of `values`).
      n_boot (int): bootstrap replicates B (0: no interval).
      ci (float): the interval's coverage in (0, 1).
      seed (int): the bootstrap's seed.

    Returns:
      (SearchCost): p, 1/p and n95 with their intervals.
    """
    v = np.asarray(values, dtype="float64").ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("`values` has no finite value")
    ref = v.max() if reference is None else float(reference)
    p = within_fraction(v, x, ref)
    n_boot = _checks.check_int("n_boot", n_boot, 0)
    inv = (lambda q: 1 / q if q > 0 else math.inf)
    if n_boot == 0:
        return SearchCost(Estimate(p), Estimate(inv(p)), Estimate(_n95(p)), int(v.size))
    rng = np.random.default_rng(seed)
    ps = np.array([within_fraction(v[rng.integers(0, v.size, v.size)], x, ref) for _ in range(n_boot)])
    lo, hi = _interval(ps, _checks.check_fraction("ci", ci))
    # 1/p and n95 decrease with p: their intervals are the images of p's.
    return SearchCost(Estimate(p, (lo, hi), n_boot),
                      Estimate(inv(p), (inv(hi), inv(lo)), n_boot),
                      Estimate(_n95(p), (_n95(hi), _n95(lo)), n_boot),
                      int(v.size))
