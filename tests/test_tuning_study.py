"""Study v3: the block trainer against single runs, the analysis against brute force, the command end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_explr.tuning import report, study
from tests.conftest import backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One cell of a block (trained with every other cell under jax.vmap) against the same cell trained alone by
# model.fit with the package's optimizer: ReparamWeightDecay(inner, λ_new) for the new rule, Keras's own
# weight_decay=λ_old (SGD, AdamW) for the standard rule. Runs in a subprocess so that JAX's float64 is on.
EQUIVALENCE = r"""
import json, sys
import numpy as np, keras
dtype = sys.argv[1]
keras.config.set_floatx(dtype); keras.config.set_dtype_policy(dtype)
from keras_explr.optimizers import ReparamWeightDecay
from keras_explr.tuning import block, study

class Cosine(keras.optimizers.schedules.LearningRateSchedule):
    # float64 oracle of the cosine schedule: a table from numpy (Keras's CosineDecay and keras.ops.cos round
    # float64 through float32 on JAX)
    def __init__(self, lr, total):
        self.table = keras.ops.convert_to_tensor(lr * 0.5 * (1.0 + np.cos(np.pi * np.arange(total) / total)), dtype)
    def __call__(self, step):
        return keras.ops.take(self.table, step)

(x, y), (xv, yv) = study.load_mnist14(num_train=512)
T, hidden, out = 12, (8, 8), {}
cases = [("sgd", "new", "constant", True), ("sgd", "old", "step", True), ("adam", "new", "cosine", True),
         ("adam", "old", "constant", True), ("sgd", "new", "cosine", True)]
if dtype == "float32":  # Keras's BatchNormalization computes float64 in float32: the users' net is float32 only
    cases += [("sgd", "new", "step", False), ("sgd", "old", "cosine", False)]
for n, (opt, rule, sched, inv) in enumerate(cases):
    base = 0.01 if opt == "adam" else 1.0
    lams = [3e-2, 1e-3, 1e-2]
    # mixed seeds (a batch per cell) and, as in the study, one seed per block (one batch for the block)
    seeds = [1, 2, 1] if n % 2 == 0 else [2, 2, 2]
    cells = [dict(learning_rate=base * lr, weight_decay=lam if rule == "new" else lam / (base * lr), seed=s)
             for lr, lam, s in zip([0.3, 0.05, 0.01], lams, seeds)]
    b = block.Block(cells, opt, rule, sched, T, ((x, y), (xv, yv)), invariant=inv, hidden=hidden)
    assert b.shared == (n % 2 == 1)
    b.run(T // 2); b.run(T - T // 2)  # two segments: the state carries over
    W = b.weights()
    losses = b.evaluate()["loss"]
    errs = []
    for k, c in enumerate(cells):
        m = block.build_net(c["seed"], hidden, 196, 10, inv)
        lr = Cosine(c["learning_rate"], T) if (sched == "cosine" and dtype == "float64") else \
            block.keras_schedule(sched, c["learning_rate"], T)
        if rule == "new":
            inner = keras.optimizers.SGD(lr, momentum=0.9) if opt == "sgd" else keras.optimizers.Adam(lr)
            o = ReparamWeightDecay(inner, weight_decay=c["weight_decay"])
        else:
            o = (keras.optimizers.SGD(lr, momentum=0.9, weight_decay=c["weight_decay"]) if opt == "sgd"
                 else keras.optimizers.AdamW(lr, weight_decay=c["weight_decay"]))
            o.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        fit = keras.Model(m.input, m.outputs[0])
        fit.compile(optimizer=o, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        idx = block.batch_order(c["seed"], len(x), 128, T).reshape(-1)
        fit.fit(x[idx], y[idx], batch_size=128, epochs=1, shuffle=False, verbose=0)
        moved = max(float(np.abs(v.numpy() - w0).max()) for v, w0 in
                    zip(m.trainable_variables,
                        [w.numpy() for w in block.build_net(c["seed"], hidden, 196, 10, inv).trainable_variables]))
        errs.append((max(float(np.abs(W[i][k] - v.numpy()).max()) for i, v in enumerate(m.trainable_variables)),
                     moved, abs(block.score_model(m, ((x, y), (xv, yv))) - float(losses[k]))))
    out[f"{opt}/{rule}/{sched}/{'invariant' if inv else 'users'}"] = errs
print("RESULT" + json.dumps(out))
"""


def _equivalence(dtype):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1" if dtype == "float64" else "0",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", EQUIVALENCE, dtype], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")]
    assert p.returncode == 0 and lines, p.stderr[-3000:]
    return json.loads(lines[0][len("RESULT"):])


@pytest.mark.backends
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_a_cell_of_a_block_equals_the_cell_trained_alone(dtype, tol):
    if backend() != "jax":
        pytest.skip("the block trainer is JAX's (jax.vmap); it runs in a JAX subprocess from the JAX job")
    out = _equivalence(dtype)
    assert len(out) == (5 if dtype == "float64" else 7)
    for case, errs in out.items():
        for err, moved, score_err in errs:
            assert moved > 1e-3, (case, moved)  # the weights moved: the comparison means something
            assert err <= tol, (case, err)
            assert score_err <= tol, (case, score_err)  # block.score_model scores a fit model as the block does


def test_block_needs_jax():
    if backend() == "jax":
        pytest.skip("on JAX the block runs")
    from keras_explr.tuning import block

    with pytest.raises(RuntimeError, match="KERAS_BACKEND=jax"):
        block.require_jax()


# ------------------------------------------------------------------ the analysis, against brute force
def _brute_diagonals(x, y):
    """Every fixed-λ_old sweep with one cell per row, by enumeration of all (i, j) pairs."""
    out = {}
    for i, xi in enumerate(x):
        for j, yj in enumerate(y):
            out.setdefault(round(yj - xi, 6), []).append((i, j))
    return sorted([v for v in out.values() if len(v) == len(x)])


@pytest.mark.parametrize("n, m", [(3, 5), (7, 11), (4, 6), (4, 4)])
def test_fixed_lambda_old_sweeps_are_the_full_diagonals(n, m):
    x = -3 + 0.5 * np.arange(n)
    y = -6 + 0.5 * np.arange(m)
    A = np.zeros((n, m))
    assert sorted(report.sweeps(A, x, y, "old")) == _brute_diagonals(x, y)
    assert len(report.sweeps(A, x, y, "new")) == m


def test_shortfall_and_lag_by_hand():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 6))
    x, y = np.arange(4.0), np.arange(6.0) - 2
    s = report.best_sweep(A, x, y, "new")
    j = s[0][1]
    assert A[:, j].mean() == A.mean(axis=0).max()
    assert report.shortfall(A, s) == pytest.approx(np.mean(A[:, j].max() - A[:, j]))
    assert report.lag_stat(j)(A) == pytest.approx(A[:, j].max() - A[0, j])
    # a surface flat along columns has no shortfall at a fixed λ_new, and one along diagonals at a fixed λ_old
    flat_new = np.tile(np.sin(y), (4, 1))
    assert report.shortfall_stat(x, y, "new")(flat_new) == 0.0
    flat_old = np.array([[np.cos(yj - xi) for yj in y] for xi in x])
    assert report.shortfall_stat(x, y, "old")(flat_old) == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_over_seeds_pairs_the_grids():
    rng = np.random.default_rng(1)
    S = rng.normal(size=(3, 4, 5))
    # the same grid twice: every paired replicate of a difference is exactly 0
    v, ci = report.bootstrap(lambda a, b: float(a.max() - b.max()), [S, S.copy()], 200)
    assert v == 0.0 and ci == [0.0, 0.0]
    v, ci = report.bootstrap(lambda a: float(a.mean()), [S], 500)
    assert ci[0] <= v <= ci[1]
    assert report.verdict_positive([0.1, 0.2]) == "holds"
    assert report.verdict_positive([-0.2, -0.1]) == "fails"
    assert report.verdict_positive([-0.1, 0.2]) == "inconclusive"
    assert report.verdict_positive([None, None]) == "inconclusive"


def test_seed_interval_is_the_t_interval_for_a_mean_and_pairs_the_grids():
    rng = np.random.default_rng(2)
    S = rng.normal(size=(3, 4, 4))
    v, ci = report.seed_interval(lambda a: float(a[1, 2]), [S])
    s = S[1, 2].std(ddof=1) / 2  # the standard error of a mean of 4 seeds
    assert ci == pytest.approx([v - 3.182 * s, v + 3.182 * s], abs=1e-12)
    v, ci = report.seed_interval(lambda a, b: float(a.max() - b.max()), [S, S.copy()])
    assert v == 0.0 and ci == [0.0, 0.0]
    assert report.seed_interval(lambda a: float(a.mean()), [S[..., :1]])[1] == [None, None]  # one seed: no interval
    assert report.t975(1) == 12.706 and report.t975(30) == 2.042 and abs(report.t975(60) - 2.000) < 0.003


def test_noise_floor_is_the_shortfall_of_a_flat_column_under_seed_noise():
    rng = np.random.default_rng(3)
    sims = []
    for _ in range(400):
        # cell noise + an offset of each seed's grid and of each seed's column (both cancel in a column's shortfall)
        S = rng.normal(0.0, 0.01, (7, 11, 4)) + rng.normal(0.0, 1.0, (1, 1, 4)) + rng.normal(0.0, 0.05, (1, 11, 4))
        sims.append((report.shortfall(S.mean(-1), [(i, 3) for i in range(7)]), report.noise_floor(S)))
    shortfalls, floors = np.array(sims).T
    assert floors.mean() == pytest.approx(0.01 / 2 * report.expected_max_normal(7), rel=0.05)
    assert shortfalls.mean() == pytest.approx(floors.mean(), rel=0.1)


def test_a_verdict_needs_the_cells_it_reads_to_be_invariant():
    g = report.Grid([{"arm": "constant", "steps": 10, "learning_rate": lr, "lambda_new": w, "seeds": [0],
                      "scores": [0.0], "min_prenorm_variance_over_epsilon_per_seed": [v], "clock": 0.0}
                     for lr, w, v in ((0.1, 1e-3, 500.0), (1.0, 1e-3, None), (0.1, 1e-2, 50.0), (1.0, 1e-2, 1e3))],
                    "constant", 10)
    assert report.invariant_cells(g, [(0, 0), (1, 1)])
    assert not report.invariant_cells(g, [(0, 0), (1, 0)])  # a diverged seed (null) fails the check
    assert not report.invariant_cells(g, [(0, 1)])
    assert report._gate("holds", False) == "inconclusive" and report._gate("fails", True) == "fails"
    assert report.on_edge(g) == ["η low", "λ_new low"]


def test_bad_arm_and_plan_are_named():
    with pytest.raises(ValueError, match="arm"):
        study.arm_design(study.PLANS["smoke"], "sideways")
    with pytest.raises(ValueError, match="no cells of arm"):
        report.Grid([], "constant", 10)


def test_cli_rejects_an_arm_outside_the_plan(capsys):
    from keras_explr.cli import main

    with pytest.raises(SystemExit):
        main(["study", "--smoke", "--arms", "cosine_new", "--dry-run"])
    assert "--arms" in capsys.readouterr().err


def test_dry_run_prints_the_full_plan(capsys):
    from keras_explr.cli import main

    assert main(["study", "--full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "constant: " in out and "7 η" not in out  # (axes are printed as ranges and counts)
    assert "(7), λ_new 1e-06..0.1 (11), 4 seeds, 8000 steps" in out


# ------------------------------------------------------------------ the command, end to end
@pytest.mark.backends
def test_smoke_study_writes_the_stable_schema(tmp_path):
    if backend() != "jax":
        pytest.skip("the study runs on JAX (the JAX job runs this test)")
    from keras_explr.cli import main

    out = tmp_path / "s"
    assert main(["study", "--smoke", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert {"wall_seconds", "cell_steps_per_second", "cells", "predictions"} <= set(r)
    assert r["wall_seconds"] > 0 and r["cell_steps_per_second"] > 0
    assert r["tuner_seconds"] > 0 and r["report_seconds"] > 0 and r["plan"]["cpu_count"] == os.cpu_count()
    plan = study.PLANS["smoke"]
    assert len(r["cells"]) == 3 * 4 * (len(plan.checkpoints) + 2 * 2)  # constant at 2 budgets, 2 step arms at 2
    keys = {"arm", "parameterization", "schedule", "optimizer", "learning_rate", "weight_decay", "lambda_new",
            "steps", "clock", "bn_epsilon", "min_prenorm_variance_over_epsilon", "scores", "score_name"}
    for c in r["cells"]:
        assert keys <= set(c)
        assert c["parameterization"] in ("new", "old") and len(c["scores"]) == len(plan.seeds)
        lam = c["lambda_new"] if c["parameterization"] == "new" else c["lambda_new"] / c["learning_rate"]
        assert c["weight_decay"] == pytest.approx(lam)
        assert c["bn_epsilon"] <= 1e-9 and c["min_prenorm_variance_over_epsilon"] >= 100
    for p in r["predictions"]:
        assert {"name", "estimate", "ci", "verdict"} <= set(p) and p["verdict"] in ("holds", "fails", "inconclusive")
    assert any(p["name"].startswith("P1") for p in r["predictions"])
    assert r["tuner"]["real"]["max_abs_difference"] < 1e-4  # a real trial reproduces the table's cell
    assert r["tuner"]["real"]["confirms_table"]  # (and gates P6's verdicts)
    text = (out / "report.md").read_text()
    assert not any(line.startswith("# ") for line in text.splitlines())  # sections of the study page only
    for png in ("constant", "sensitivity", "step", "tuner"):
        assert (out / f"study_v3_smoke_{png}.png").stat().st_size > 10_000
    # resuming does not retrain, and --report-only rewrites the report from the same cells
    assert main(["study", "--smoke", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["cells"] == r["cells"]
    (out / "report.md").unlink()
    moved = json.loads((out / "results.json").read_text())
    moved["plan"]["cpu_count"] = 999  # the results moved to another machine: still the same study
    (out / "results.json").write_text(json.dumps(moved))
    assert main(["study", "--smoke", "--out", str(out), "--report-only", "--n-boot", "20"]) == 0
    assert (out / "report.md").read_text().count("| P1 constant LR") == 1
