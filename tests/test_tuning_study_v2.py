"""Study v2: the multi-seed towers, the equilibration clock, the grid design, the analysis, the command."""

import json
import math
import os
import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest

from keras_explr import models
from keras_explr.tuning import hypermodels, study, study_v2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shm(**kw):
    args = dict(learning_rates=[0.1], weight_decays=[1e-3], epochs=2, steps_per_epoch=4, batch_size=16,
                input_shape=(14, 14, 1), filters=(4, 8))
    args.update(kw)
    return hypermodels.StudyHyperModel(**args)


def _hp(lr, wd):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", lr)
    hp.Fixed("weight_decay_new", wd)
    return hp


@pytest.mark.parametrize("optimizer, rule, model", [("sgd", "new", "invariant"), ("adam", "old", "invariant"),
                                                    ("sgd", "old", "user")])
def test_each_tower_trains_as_its_own_run(optimizer, rule, model):
    """Tower s of the multi-seed model ends where a single model built after set_random_seed(s) ends,
    trained on the same batches (the towers share nothing but the data)."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 14, 14, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    lr = 0.1 if optimizer == "sgd" else 3e-3
    hm = shm(optimizer=optimizer, rule=rule, schedule="cosine", learning_rates=[lr], weight_decays=[1e-2], model=model)
    keras.backend.clear_session()
    multi = hm.build(_hp(lr, 1e-2), seeds=[3, 5])
    keras.utils.set_random_seed(3)
    hm.fit(None, multi, x, y)
    for seed in (3, 5):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        single = models.bn_convnet(input_shape=(14, 14, 1), filters=(4, 8), name=f"seed{seed}",
                                   scale_invariant=model == "invariant")
        single.compile(hm.optimizer(lr, 1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        keras.utils.set_random_seed(3)  # the data order of the multi-seed run
        single.fit(x, y, batch_size=16, epochs=2, shuffle=True, verbose=0)
        tower = multi.get_layer(f"seed{seed}")
        for a, b in zip(tower.trainable_variables, single.trainable_variables):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                       rtol=2e-4, atol=2e-5)
    # Control: the two towers differ (different initializations).
    t3, t5 = (keras.ops.convert_to_numpy(multi.get_layer(f"seed{s}").trainable_variables[0]) for s in (3, 5))
    assert np.abs(t3 - t5).max() > 1e-2


@pytest.mark.parametrize("optimizer, rule, schedule", [
    ("sgd", "old", "constant"), ("sgd", "new", "step"), ("sgd", "old", "cosine"),
    ("adam", "old", "cosine"), ("adam", "new", "step"),
])
def test_clock_matches_the_decay_the_optimizer_applies(optimizer, rule, schedule):
    """On a zero gradient a kernel shrinks by ∏(1 − d_t): −ln(θ_T/θ_0) measured by running the optimizer
    must match the clock Σ d_t (momentum SGD: steady state d = ηλ/(1 − γ), reached after ~1/(1 − γ) steps)."""
    hm = shm(optimizer=optimizer, rule=rule, schedule=schedule, epochs=25, steps_per_epoch=4, momentum=0.5)
    lr, wd = (0.1, 4e-3) if optimizer == "sgd" else (1e-3, 2e-2)
    opt = hm.optimizer(lr, wd)
    w = keras.Variable(np.ones((2, 2), dtype="float32"))
    for _ in range(hm.total_steps):
        opt.apply([keras.ops.zeros((2, 2))], [w])
    measured = -math.log(float(keras.ops.convert_to_numpy(w)[0, 0]))
    clock = hm.equilibration_clock(lr, wd)
    assert 0.3 < clock < 3
    if optimizer == "adam":  # decoupled: θ ← (1 − d_t)θ exactly, −ln(1 − d) = d + O(d²)
        assert measured == pytest.approx(clock, rel=0.03)
    else:
        # Momentum SGD reaches d = ηλ/(1 − γ) only in steady state: the buffer's ramp-up (and, for λ_new
        # constant, its ramp after each LR drop) and the lag of v behind a shrinking θ move the sum by
        # O(d·γ/(1 − γ)) per ramp, a few % here (γ = 0.5). Forgetting the 1/(1 − γ) would be off by 2x.
        assert measured == pytest.approx(clock, rel=0.06), (measured, clock)


def test_grid_design_puts_the_equilibrated_columns_past_the_clock_floor():
    """Every grid: `transient_cols` columns below the floor (clock ≈ 0.3 and ≈ 1 by design), then
    columns that all reach min_clock; the clock is one number per column (it does not depend on η_0)."""
    for mode in ("quick", "full"):
        plan = study_v2.PLANS[mode]
        gs = study_v2.grids(plan, 32, (14, 14, 1))
        names = [n for n, _, _ in gs]
        assert len(names) == len(set(names))
        for name, arm, hm in gs:
            clocks = np.array([[hm.equilibration_clock(lr, w) for w in hm.weight_decays] for lr in hm.learning_rates])
            k = plan.transient_cols
            assert k == {"quick": 2, "full": 3}[mode] and clocks.shape[1] == k + 2
            assert np.allclose(clocks, clocks[0]), (mode, name)
            assert clocks[:, k:].min() >= plan.min_clock, (mode, name, clocks.min())
            assert (clocks[:, :k] < plan.min_clock).all()
            assert 0.3 <= clocks[0, k - 2] < 0.8 and 0.95 < clocks[0, k - 1] < 2.5, (mode, name, clocks[0])
            assert np.allclose(np.diff(np.log10(clocks[0])), study_v2.H)
            r = study.GridResult(name, "grid", hm.learning_rates, hm.weight_decays, [0], np.zeros(clocks.shape + (1,)),
                                 np.zeros(clocks.shape + (1,)), [], {"clocks": clocks.tolist()}, 0.0)
            assert study_v2.equilibrated_from(r, plan.min_clock) == k
            # the floor is the first quarter-decade value: a quarter decade lower falls short for some grid of the arm
            assert np.allclose(np.diff(np.log10(hm.learning_rates)), study_v2.H)
            assert np.allclose(np.diff(np.log10(hm.weight_decays)), study_v2.H)
            assert len(plan.seeds) >= 3 and hm.seeds == tuple(plan.seeds)
    full = {a for _, a, _ in study_v2.grids(study_v2.PLANS["full"], 32, (14, 14, 1))}
    assert full == {"constant", "step", "cosine", "adam", "user", "transfer"}


def _result(name, A, lrs, wds, seeds=3, noise=0.002, rng=0, arm="constant"):
    g = np.random.default_rng(rng)
    s = A[..., None] + noise * g.standard_normal(A.shape + (seeds,))
    clocks = np.full(A.shape, 5.0)
    cfg = {"optimizer": "sgd", "rule": "new", "schedule": "constant", "model": "invariant", "filters": [8],
           "arm": arm, "clocks": clocks.tolist()}
    return study.GridResult(name, "grid", list(lrs), list(wds), list(range(seeds)), np.exp(s), -s, [], cfg, 0.0)


def test_analysis_on_surfaces_with_known_answers():
    """A surface that depends on λ_new only (the new coordinates' prediction at equilibrium) and one that
    depends on λ = λ_new/η only (the standard rule's): slopes, LR shortfalls, verdicts."""
    lrs = 10 ** (-2 + 0.5 * np.arange(5))
    wds = 10 ** (-3 + 0.5 * np.arange(5))
    x, y = np.log10(lrs)[:, None], np.log10(wds)[None, :]
    only_new = -0.2 * (y + 2.1) ** 2 + 0 * x          # best λ_new = 10^-2.1 in every row
    only_old = -0.2 * (y - x - (-1.1)) ** 2           # best λ = λ_new/η = 10^-1.1
    res = {"constant_sgd": _result("constant_sgd", only_new, lrs, wds),
           "step_sgd_old": _result("step_sgd_old", only_old, lrs, wds, arm="step"),
           "step_sgd_new": _result("step_sgd_new", only_new, lrs, wds, arm="step")}
    plan = {"delta": {"neg_loss": 0.05, "accuracy": 0.02}}
    a = study_v2.analyze(res, plan, score="neg_loss", n_boot=200)
    c = a["grids"]["constant_sgd"]
    assert abs(c["new_coords"]["M1_ridge_slope"]["slope"]) < 0.1
    assert c["old_coords"]["M1_ridge_slope"]["slope"] == pytest.approx(
        c["new_coords"]["M1_ridge_slope"]["slope"] - 1, abs=1e-9)
    assert c["lr_sensitivity"]["new"]["value"] < 0.005 < c["lr_sensitivity"]["old"]["value"]
    assert c["lr_sensitivity_full_range_new"]["value"] < 0.005
    assert c["lr_sensitivity"]["new_minus_old"]["ci"][1] < 0
    old = a["grids"]["step_sgd_old"]
    assert abs(old["old_coords"]["M1_ridge_slope"]["slope"]) < 0.1  # the best λ is fixed: s = 0 in (η, λ)
    assert old["lr_sensitivity"]["old"]["value"] < 0.005  # the standard rule's own surface: flat along fixed λ
    cmp = a["comparisons"]["step"]
    sens = cmp["lr_sensitivity"]
    # Both surfaces are flat along their own fixed-λ sweeps: no difference (the CI contains 0).
    assert sens["new"]["value"] < 0.005 and sens["old"]["value"] == pytest.approx(old["lr_sensitivity"]["old"]["value"])
    assert sens["new_minus_old"]["ci"][0] < 0 < sens["new_minus_old"]["ci"][1] and sens["decades"] > 0
    verdicts = {p: v for _, p, _, v in study_v2.predictions(a)}
    assert verdicts["ηλ is what matters: ridge slope in (η, λ) s_old = −1"] == "holds"
    assert verdicts["λ_new constant decouples: its ridge slope in (η_0, λ_new) is 0"] == "holds"
    md = study_v2.markdown([a], res, {"mode": "test", "data": "synthetic", "n_train": 0, "n_val": 0,
                                      "filters": [8], "batch_size": 1, "epochs": 1, "total_steps": 1,
                                      "momentum": 0.9, "seeds": [0, 1, 2], "backend": "none", "n_boot": 200,
                                      "min_clock": 3.0}, [])
    assert "which hold, which fail" in md and "**holds**" in md and "(5.0)" in md


def test_optimum_and_transfer_shift():
    lrs = 10 ** (-2 + 0.5 * np.arange(5))
    wds = 10 ** (-3 + 0.5 * np.arange(5))
    x, y = np.log10(lrs)[:, None], np.log10(wds)[None, :]
    base = np.exp(-((y + 2.1) ** 2) / 0.5 - (x + 1.2) ** 2 / 0.5)
    moved = np.exp(-((y + 1.6) ** 2) / 0.5 - (x + 1.2) ** 2 / 0.5)  # λ_new* half a decade up
    assert study_v2.optimum(base, np.log10(lrs), np.log10(wds)) == pytest.approx((-1.2, -2.1), abs=0.01)
    res = {"constant_sgd": _result("constant_sgd", base, lrs, wds, noise=0.0005),
           "width2_sgd": _result("width2_sgd", moved, lrs, wds, noise=0.0005, arm="transfer")}
    a = study_v2.analyze(res, {"delta": {"neg_loss": 0.05}}, n_boot=200)
    t = a["transfer"]["width2_sgd"]
    assert t["log10_lambda_new_shift"]["value"] == pytest.approx(0.5, abs=0.02)
    assert t["log10_eta_shift"]["value"] == pytest.approx(0.0, abs=0.02)
    assert t["log10_lambda_old_shift"]["value"] == pytest.approx(0.5, abs=0.03)
    assert study_v2.verdict_value(t["log10_lambda_new_shift"], 0) == "fails"
    verdicts = {(arm, p): v for arm, p, _, v in study_v2.predictions(a)}
    assert verdicts[("transfer ×2 (arm 5)", "the best λ_new stays put (shift 0 decades)")] == "fails"
    # Both optima pinned at the smallest λ_new (the clock floor): no shift can be measured, and it says so.
    edge = np.exp(-((y + 3.5) ** 2) / 0.5 - (x + 1.2) ** 2 / 0.5)
    res = {"constant_sgd": _result("constant_sgd", edge, lrs, wds, noise=0.0005),
           "width4_sgd": _result("width4_sgd", edge, lrs, wds, noise=0.0005, rng=1, arm="transfer")}
    a = study_v2.analyze(res, {"delta": {"neg_loss": 0.05}}, n_boot=50)
    v = {(arm, p): v for arm, p, _, v in study_v2.predictions(a)}
    assert v[("transfer ×4 (arm 5)", "the best λ_new stays put (shift 0 decades)")].startswith("undefined")


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="lion"), "optimizer"), (dict(rule="keras"), "rule"), (dict(schedule="linear"), "schedule"),
    (dict(model="resnet"), "model"), (dict(weight_decays=[0.5, 1.0]), "weight_decays"),
    (dict(learning_rates=[0.1, -1]), "learning_rates"), (dict(momentum=1.0), "momentum"),
    (dict(filters=()), "at least one conv block"), (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"),
    (dict(num_classes=1), "num_classes"), (dict(steps_per_epoch=1.5), "steps_per_epoch"),
])
def test_study_hypermodel_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shm(**kwargs)


@pytest.mark.slow
def test_study_v2_command_end_to_end(tmp_path):
    """`keras-explr study --smoke --arms constant`: 9 cells × 2 seeds (~1 min), resumes, refuses another plan."""
    out = tmp_path / "v2"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "keras_explr", "study", "--smoke", "--arms", "constant", "--out", str(out)]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[study] 9/9 trials (100%)" in res.stderr and "clock=" in res.stderr
    assert "clock per λ_new column" in res.stdout
    doc = json.loads((out / "results.json").read_text())
    acc = np.array(doc["results"]["constant_sgd"]["accuracy"], dtype=float)
    assert acc.shape == (3, 3, 2) and np.isfinite(acc).all()
    clocks = np.array(doc["results"]["constant_sgd"]["config"]["clocks"])
    assert clocks.shape == (3, 3) and (clocks[:, 1:] >= 0.02).all() and (clocks[:, 0] < 0.02).all()  # 1 transient
    for a in doc["analysis"]:
        m = a["grids"]["constant_sgd"]
        assert m["lr_sensitivity"]["new"]["ci"] is not None
        assert m["new_coords"]["M1_ridge_slope"]["slope"] is not None or m["new_coords"]["M1_ridge_slope"]["reason"]
        assert m["equilibrated_from"] == 1 and m["optimum"]["clock"]["value"] > 0
        slope = m["new_coords"]["M1b_contour_slope"]
        assert slope["value"] is not None or slope["reason"]
    md = (out / "report.md").read_text()
    assert "which hold, which fail" in md and "Grids and clocks" in md and " †" in md
    res2 = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res2.returncode == 0 and "(9 cells already finished)" in res2.stdout and "[study]" not in res2.stderr
    res3 = subprocess.run(cmd[:4] + ["--quick"] + cmd[5:], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert res3.returncode != 0 and "another plan" in res3.stderr


def test_lr_shortfall_with_the_best_cell_in_a_corner():
    """The best cell at the clock floor and the top LR: the fixed-λ diagonal through it has one cell, so the
    sweep falls back to the best diagonal with ≥ 2 rows (by hand on a 3×3 grid)."""
    A = np.array([[0.1, 0.2, 0.3],
                  [0.5, 0.4, 0.2],
                  [0.9, 0.6, 0.1]])
    assert study_v2._sweep_cells(A, "old") == ([1, 2], [0, 1])   # diagonals j − i = −1: (1,0), (2,1)
    assert study_v2.lr_shortfall("old")(A) == pytest.approx(0.5 * (0.6 - 0.5))
    assert study_v2._sweep_cells(A, "new") == ([0, 1, 2], [0, 0, 0])
    assert study_v2.lr_shortfall("new")(A) == pytest.approx((0.8 + 0.4 + 0.0) / 3)
    assert study_v2.sweep_decades(A, "old") == 0.5 and study_v2.sweep_decades(A, "new") == 1.0
    # Over the same learning rates (rows 1, 2): the column of the best λ_new vs that diagonal.
    assert study_v2.sensitivity_pair(A, A) == pytest.approx((0.5 * 0.4, 0.5 * 0.1))


def test_full_plan_report_on_synthetic_results(tmp_path):
    """Every grid of the full plan (synthetic scores): analysis, verdict table, report and plots run through."""
    plan = study_v2.PLANS["full"]
    gs = study_v2.grids(plan, 32, (14, 14, 1))
    res = {}
    for k, (name, arm, hm) in enumerate(gs):
        x = np.log10(hm.learning_rates)[:, None]
        y = np.log10(hm.weight_decays)[None, :]
        A = -0.3 * (y - y.mean() - 0.1 * k) ** 2 - 0.05 * (x - x.mean()) ** 2 - 0.8
        r = _result(name, A, hm.learning_rates, hm.weight_decays, arm=arm, rng=k)
        r.config.update(hm.config())
        r.config["clocks"] = [[hm.equilibration_clock(lr, w) for w in hm.weight_decays] for lr in hm.learning_rates]
        res[name] = r
    a = study_v2.analyze(res, {"delta": {"neg_loss": 0.05}}, n_boot=30)
    assert set(a["comparisons"]) == {"step", "cosine", "adam"}
    assert {"width2_sgd", "width4_sgd"} <= set(a["transfer"])
    arms = {arm for arm, *_ in study_v2.predictions(a)}
    assert any("arm 3" in s for s in arms) and any("arm 4" in s for s in arms) and any("arm 5" in s for s in arms)
    md = study_v2.markdown([a], res, {"mode": "full", "data": "synthetic", "n_train": 0, "n_val": 0, "filters": [8],
                                      "batch_size": 1, "epochs": 12, "total_steps": 384, "momentum": 0.9,
                                      "seeds": [0, 1, 2], "backend": "none", "n_boot": 30, "min_clock": 3.0}, [])
    assert md.count("| transfer ×") == 4 and "adam_adam_new" in md
    pngs = study_v2.heatmaps(str(tmp_path), res, a, "full")
    assert len(pngs) == 6 and all(os.path.getsize(p) > 5000 for p in pngs)


def test_transient_columns_locate_an_optimum_below_the_floor(tmp_path):
    """Columns at clock 0.4, 1.28 (transient) and 4, 12.8: a surface in λ_new only (the equilibrium prediction),
    best at clock 1.2. The slopes and verdicts use the last two columns only; the report gives the optimum's
    clock (1.2, its CI below 3) and says it lies below the floor."""
    lrs = [0.0316, 0.1, 0.316]
    wds = [10 ** (-3.5 + 0.5 * k) for k in range(4)]
    per_unit = 1280.0  # clock per unit λ_new (128 steps, γ = 0.9)
    x, y = np.log10(lrs)[:, None], np.log10(wds)[None, :]
    A = -0.8 - 0.3 * (y - math.log10(1.2 / per_unit)) ** 2 + 0 * x
    r = _result("constant_sgd", A, lrs, wds, noise=0.003)
    r.config["clocks"] = [[per_unit * w for w in wds] for _ in lrs]
    res = {"constant_sgd": r}
    a = study_v2.analyze(res, {"delta": {"neg_loss": 0.05}, "min_clock": 3.0}, n_boot=200)
    m = a["grids"]["constant_sgd"]
    assert m["equilibrated_from"] == 2 and np.asarray(m["mean_scores"]).shape == (3, 4)
    assert m["best"]["weight_decay_new"] == wds[2] and m["best"]["at_clock_floor"]
    assert math.isnan(m["new_coords"]["M1_ridge_slope"]["slope"])  # the best at the floor: no ridge
    cs = m["old_coords"]["M1b_contour_slope"]
    assert cs["value"] == pytest.approx(-1.0, abs=0.05) and cs["ci"][0] <= -1.0 <= cs["ci"][1]
    o = m["optimum"]
    assert o["clock"]["value"] == pytest.approx(1.2, rel=0.1) and o["clock"]["ci"][1] < 3.0
    assert o["cost_of_equilibrium"]["value"] > 0.05 and not o["at_smallest_lambda"]
    v = {(arm, p): (meas, ver) for arm, p, meas, ver in study_v2.predictions(a)}
    meas, ver = next(val for (arm, p), val in v.items() if arm == "constant_sgd (floor)")
    assert ver.startswith("fails: the optimum lies below 3 equilibration times")
    assert v[("constant LR (arm 1)", "ηλ is what matters: iso-score contours in (η, λ) have slope −1")][1] == "holds"
    md = study_v2.markdown([a], res, {"mode": "test", "data": "synthetic", "n_train": 0, "n_val": 0,
                                      "filters": [8], "batch_size": 1, "epochs": 1, "total_steps": 128,
                                      "momentum": 0.9, "seeds": [0, 1, 2], "backend": "none", "n_boot": 200,
                                      "min_clock": 3.0, "transient_cols": 2}, [])
    assert "0.000316 †" in md and "contour s in (η, λ)" in md and "lies below 3 equilibration times" in md
    assert len(study_v2.heatmaps(str(tmp_path), res, a, "test")) == 1


def test_plan_from_args_is_shared_by_both_studies():
    """One argument handler for `keras-explr study` v1 and v2: --data, --n-boot, --arms (errors name the flag)."""
    import argparse

    from keras_explr.tuning import cli

    def args(**kw):
        return argparse.Namespace(**{"mode": "quick", "data": None, "n_boot": None, "arms": None, **kw})

    plan, arms = study.plan_from_args(study_v2.PLANS, args(data="digits", n_boot=7, arms="step, constant"),
                                      study_v2.ARMS, study_v2.PLANS["quick"].arms)
    assert (plan.data, plan.n_boot, arms) == ("digits", 7, ("step", "constant"))
    assert study_v2.PLANS["quick"].n_boot == 1000  # a copy: the plan table is untouched
    assert study.plan_from_args(cli.PLANS, args(), cli.ARMS, cli.ARMS)[1] == cli.ARMS
    for plans, all_arms in ((study_v2.PLANS, study_v2.ARMS), (cli.PLANS, cli.ARMS)):
        with pytest.raises(ValueError, match="`--n-boot` must be an integer >= 0"):
            study.plan_from_args(plans, args(n_boot=-1), all_arms, all_arms)
        with pytest.raises(ValueError, match="`--arms` must be a comma-separated subset"):
            study.plan_from_args(plans, args(arms="constant,lion"), all_arms, all_arms)
        with pytest.raises(ValueError, match="`--arms`"):
            study.plan_from_args(plans, args(arms=" , "), all_arms, all_arms)


def test_dry_run_prints_the_planned_clocks_and_writes_nothing(tmp_path, capsys):
    import argparse

    def args(**kw):
        return argparse.Namespace(**{"mode": "full", "data": None, "n_boot": None, "arms": None, "overwrite": False,
                                     "out": str(tmp_path / "out"), "dry_run": True, "transient_cols": None, **kw})

    assert study_v2.run(args()) == 0
    out = capsys.readouterr().out
    assert "10 grids, 200 cells x 3 seeds" in out and "(the first 3 transient: clock < 3)" in out
    assert "clock per λ_new column [0.121, 0.384, 1.21, 3.84, 12.1]" in out  # constant_sgd, 384 steps
    assert study_v2.run(args(transient_cols=1, arms="constant")) == 0
    assert "1 grids, 12 cells" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="`--transient-cols` must be an integer >= 0"):
        study_v2.run(args(transient_cols=-1))
