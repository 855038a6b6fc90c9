"""The KerasTuner study: hypermodels, per-seed records, resume, the command."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_explr import data, models
from keras_explr.tuning import hypermodels, report, study
from tests.conftest import backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_data(n=256):
    (x, y), (xv, yv) = data.load_digits(num_train=n)
    return (x, y), (xv[:200], yv[:200])


def hm(**kw):
    args = dict(parameterization="old", learning_rates=[0.1, 1.0], weight_decays=[1e-4, 1e-2], epochs=1,
                steps_per_epoch=2, filters=(8, 16))
    args.update(kw)
    return hypermodels.EntanglementHyperModel(**args)


# ------------------------------------------------------------------ hypermodels
@pytest.mark.parametrize("kwargs, match", [
    (dict(parameterization="adamw"), "parameterization"),
    (dict(schedule="cosine"), "schedule"),
    (dict(decay_rule="follow"), "decay_rule"),
    (dict(decay_rule="sometimes"), "decay_rule"),
    (dict(learning_rates=[0.1, -1.0]), "learning_rates"),
    (dict(learning_rates=None), "learning_rates"),
    (dict(lr_range=(1.0, 0.1), learning_rates=None), "lr_range"),
    (dict(weight_decays=[0.1, 2.0], parameterization="new"), "< 1"),
    (dict(momentum=1.0), "momentum"),
    (dict(epochs=0), "epochs"),
    (dict(new_mode="both"), "new_mode"),
    (dict(diagonal=1e-3), "diagonal"),
    (dict(diagonal=-1.0, weight_decays=None), "diagonal"),
])
def test_hypermodel_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hm(**kwargs)


def _train(opt, steps_per_epoch=2, epochs=4, seed=3):
    (x, y), _ = tiny_data(128 * steps_per_epoch)
    keras.utils.set_random_seed(seed)
    model = models.bn_convnet(filters=(4, 8), bn_epsilon=1e-30)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.astype("float64"), y, batch_size=128, epochs=epochs, shuffle=False, verbose=0)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _max_rel(a, b):
    return max(float(np.max(np.abs(u - v)) / np.max(np.abs(u))) for u, v in zip(a, b))


@pytest.mark.skipif(backend() != "tensorflow", reason="float64 exactness runs on TensorFlow")
def test_parameterizations_are_coordinate_changes_where_theory_says(float64):
    """Constant LR: new(λ_new) = old(λ_new/η). Step decay: new + follow(λ_new) =
    old(λ_new/η_0), but new + constant λ_new is another algorithm."""
    lam_new = 4e-3
    for schedule, eta in (("constant", 0.5), ("step", 0.5)):
        kw = dict(learning_rates=[eta], epochs=4, steps_per_epoch=2, filters=(4, 8), schedule=schedule)
        old = hm(parameterization="old", weight_decays=[lam_new / eta], **kw).optimizer(eta, lam_new / eta)
        rule = "follow" if schedule == "step" else "constant"
        new = hm(parameterization="new", weight_decays=[lam_new], decay_rule=rule, **kw).optimizer(eta, lam_new)
        a, b = _train(old), _train(new)
        assert _max_rel(a, b) < 1e-12, schedule
    # Under the schedule, λ_new held constant decays 10x and 100x harder per LR unit late on.
    kw = dict(learning_rates=[0.5], epochs=4, steps_per_epoch=2, filters=(4, 8), schedule="step")
    const = hm(parameterization="new", weight_decays=[lam_new], **kw).optimizer(0.5, lam_new)
    old = hm(parameterization="old", weight_decays=[lam_new / 0.5], **kw).optimizer(0.5, lam_new / 0.5)
    assert _max_rel(_train(old), _train(const)) > 1e-4


def test_keras_parameterization_decays_kernels_only():
    model = hm(parameterization="keras").build(_hp(0.1, 1e-2))
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.SGD) and opt.weight_decay == pytest.approx(1e-2)
    opt.build(model.trainable_variables)
    assert all(opt._use_weight_decay(v) for v in model.trainable_variables if "kernel" in v.path)
    assert all(len(v.shape) == 4 for v in model.trainable_variables)  # BN without γ/β, frozen head


def _hp(lr, wd):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", lr)
    hp.Fixed("weight_decay", wd)
    return hp


# ----------------------------------------------------------------- the runner
@pytest.mark.backends
def test_smoke_grid_records_every_seed_and_resumes(tmp_path):
    d = tiny_data()
    model = hm(parameterization="new", weight_decays=[1e-4, 1e-2])
    progress_lines = []

    class Sink:
        def write(self, s):
            progress_lines.append(s)

        def flush(self):
            pass

    r = study.run_grid(model, d, [0, 1], str(tmp_path), "smoke",
                       progress=study.Progress(4, stream=Sink()))
    assert r.accuracy.shape == (2, 2, 2) and r.loss.shape == (2, 2, 2)
    assert np.isfinite(r.accuracy).all() and np.isfinite(r.loss).all()
    assert ((r.accuracy >= 0) & (r.accuracy <= 1)).all()
    assert not np.array_equal(r.loss[..., 0], r.loss[..., 1])  # the seeds are different runs
    assert len(progress_lines) == 4 and progress_lines[-1].startswith("[study] 4/4 trials (100%)")
    # Each trial's record holds every seed, as KerasTuner stores it.
    with open(tmp_path / "smoke" / "trial_0" / "trial.json") as f:
        names = set(json.load(f)["metrics"]["metrics"])
    assert {"score", "accuracy_seed0", "accuracy_seed1", "loss_seed0", "loss_seed1"} <= names
    # Rerunning with overwrite=False finds the study finished: nothing runs again.
    again = study.run_grid(model, d, [0, 1], str(tmp_path), "smoke", progress=study.Progress(4, stream=Sink()))
    np.testing.assert_array_equal(again.loss, r.loss)
    ends = _events(tmp_path / "smoke", "end")
    assert sorted(e["trial_id"] for e in ends) == ["0", "1", "2", "3"]
    # Seed 1 of the last cell, alone in a fresh search: the same numbers (seeded init and data order).
    one = hm(parameterization="new", learning_rates=[1.0], weight_decays=[1e-2])
    fresh = study.run_grid(one, d, [1], str(tmp_path), "fresh", progress=None)
    np.testing.assert_allclose(fresh.loss[0, 0, 0], r.loss[1, 1, 1], rtol=1e-5)


@pytest.mark.backends
def test_smoke_random_search_keeps_trial_order(tmp_path):
    model = hm(learning_rates=None, weight_decays=None, lr_range=(0.01, 1.0), wd_range=(1e-4, 1e-2))
    r = study.run_grid(model, tiny_data(), [0], str(tmp_path), "rand", kind="random", max_trials=3,
                       progress=None)
    assert r.kind == "random" and r.accuracy.shape == (3, 1) and len(r.trial_values) == 3
    for lr, wd in r.trial_values:
        assert 0.01 <= lr <= 1.0 and 1e-4 <= wd <= 1e-2
    assert len({tuple(v) for v in r.trial_values}) == 3
    back = study.GridResult.from_dict(json.loads(json.dumps(r.as_dict())))
    np.testing.assert_array_equal(back.accuracy, r.accuracy)


def test_run_grid_validates(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        study.run_grid(hm(), tiny_data(), [0, 0], str(tmp_path), "x")
    with pytest.raises(ValueError, match="kind='random'"):
        study.run_grid(hm(), tiny_data(), [0], str(tmp_path), "x", kind="random", max_trials=2)
    with pytest.raises(ValueError, match="kind"):
        study.run_grid(hm(), tiny_data(), [0], str(tmp_path), "x", kind="bayes")


def _events(project_dir, event):
    with open(os.path.join(project_dir, "executions.jsonl")) as f:
        return [e for e in map(json.loads, f) if e["event"] == event]


def _spec(tmp_path, name, lrs, wds, seeds=(0,), epochs=2):
    spec = {"hypermodel": {"parameterization": "old", "learning_rates": lrs, "weight_decays": wds,
                           "epochs": epochs, "steps_per_epoch": 2, "filters": [8, 16]},
            "data": {"name": "digits", "num_train": 256}, "seeds": list(seeds),
            "directory": str(tmp_path), "project_name": name}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(k, None)
    env.update(extra)
    return env


def _completed(project_dir):
    return study.completed_trials(str(project_dir))


@pytest.mark.slow
def test_resume_after_the_process_is_killed(tmp_path):
    spec = _spec(tmp_path, "resume", [0.03, 0.3, 3.0], [1e-4, 1e-3, 1e-2], epochs=3)
    project = tmp_path / "resume"
    cmd = [sys.executable, "-m", "keras_explr.tuning.study", spec]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _completed(project) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t["trial_id"]: t for t in study._read_trials(str(project))}
    assert 3 <= len(before) < 9, "the study must be killed mid-way"
    out = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    after = {t["trial_id"]: t for t in study._read_trials(str(project))}
    assert len(after) == 9
    cells = {(t["values"]["learning_rate"], t["values"]["weight_decay"]) for t in after.values()}
    assert len(cells) == 9  # every cell once
    for tid, t in before.items():  # finished trials are kept as they were
        assert after[tid]["metrics"] == t["metrics"]
    ends = [e["trial_id"] for e in _events(project, "end")]
    assert sorted(ends) == sorted(after)  # no finished trial ran twice
    assert '"completed": 9' in out.stdout


# --------------------------------------------------------------- the command
@pytest.mark.slow
def test_study_command_end_to_end(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "keras_explr", "study", "--v1", "--smoke", "--arms", "constant", "--out", str(out)]
    res = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[study] 12/12 trials (100%)" in res.stderr
    with open(out / "results.json") as f:
        doc = json.load(f)
    assert set(doc["results"]) == {"constant_old", "diagonal"}
    acc = np.array(doc["results"]["constant_old"]["accuracy"], dtype=float)
    assert acc.shape == (3, 3, 2) and np.isfinite(acc).all()
    for a in doc["analysis"]:
        m_old = a["constant"]["old"]["M1_ridge_slope"]
        m_new = a["constant"]["new_same_runs"]["M1_ridge_slope"]
        if m_old["slope"] is not None and m_new["slope"] is not None:
            assert m_new["slope"] == pytest.approx(m_old["slope"] + 1, abs=1e-9)
        assert "diagonal" in a and len(doc["results"]["diagonal"]["learning_rates"]) == 3
    md = (out / "report.md").read_text()
    assert "Arm 1: constant LR" in md and "Arm 1b: diagonal sweep" in md and "one family of runs" in md
    for png in ("constant_lr_neg_loss.png", "constant_lr_accuracy.png"):
        assert (out / png).stat().st_size > 10000
    # A second invocation resumes: nothing left to train.
    res2 = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res2.returncode == 0 and "12 trials (12 already finished)" in res2.stdout
    assert "[study]" not in res2.stderr
    # Another plan in the same folder is refused rather than mixed in.
    res3 = subprocess.run(cmd[:5] + ["--quick"] + cmd[6:], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert res3.returncode != 0 and "another plan" in res3.stderr


def test_report_analyzes_every_arm_from_results(tmp_path):
    """The analysis and the report on hand-made results with a known answer."""
    lrs = list(10 ** np.linspace(-2, 1, 6))
    wds = list(10 ** np.linspace(-4.5, -1.5, 6))
    x, y = np.log10(lrs)[:, None], np.log10(wds)[None, :]
    rng = np.random.default_rng(0)

    def grid(slope, seeds=3):
        a = 0.55 + 0.4 * np.exp(-((y - (-3 + slope * (x + 0.5))) ** 2) / 0.5 - (x + 0.5) ** 2 / 20)
        acc = np.clip(a[..., None] + 0.003 * rng.standard_normal(a.shape + (seeds,)), 0, 1)
        return study.GridResult("g", "grid", lrs, wds, list(range(seeds)), acc, -np.log(acc), [], {}, 0.0)

    diag = grid(0.0)
    diag.accuracy, diag.loss = diag.accuracy[:, :1], diag.loss[:, :1]
    diag.config = {"diagonal": 1e-3}
    va = rng.uniform(0.5, 0.99, size=(12, 1))
    search = {k: study.GridResult(k, "random", [0.01, 10.0], [1e-4, 1e-1], [0], v, -np.log(v), [], {}, 0.0)
              for k, v in (("search_old", va), ("search_new", np.sort(va, axis=0)))}
    results = {"constant_old": grid(-1.0), "diagonal": diag, "step_old": grid(-1.0, 2),
               "step_new_constant": grid(0.0, 2), **search}
    plan = {"mode": "test", "data": "synthetic", "n_train": 0, "n_val": 0, "filters": [1], "momentum": 0.9,
            "batch_size": 1, "epochs": 1, "total_steps": 100, "backend": "none", "n_boot": 200,
            "x_search": 0.01, "delta": {"accuracy": 0.05, "neg_loss": 0.1}}
    a = report.analyze(results, plan, score="accuracy", n_boot=200)
    s_old = a["constant"]["old"]["M1_ridge_slope"]
    assert abs(s_old["slope"] + 1) < 0.15 and s_old["ci"][0] < -0.7
    assert a["constant"]["new_same_runs"]["M1_ridge_slope"]["slope"] == pytest.approx(s_old["slope"] + 1)
    assert abs(a["scheduled"]["new_constant"]["M1_ridge_slope"]["slope"]) < 0.15
    d = a["scheduled"]["paired_difference_new_constant_minus_standard"]["M1_ridge_slope"]
    assert 0.7 < d["value"] < 1.3 and d["ci"][0] > 0.5
    assert a["diagonal"]["range"]["value"] > 0
    assert a["search"]["old"]["cost"]["p"]["value"] == a["search"]["new"]["cost"]["p"]["value"]
    assert a["search"]["new"]["trials_to_within_in_run_order"] == 12  # sorted ascending: the last
    pngs = report.study_plots(str(tmp_path), results, a)
    assert len(pngs) == 2 and all(os.path.getsize(p) > 10000 for p in pngs)
    md = report.markdown([a], results, plan, [os.path.basename(p) for p in pngs])
    assert "which contains the prediction -1" in md or "which excludes the prediction -1" in md
    assert "Arm 3: search cost" in md


def _grid_oracle(cls, directory):
    import keras_tuner

    o = cls(objective=keras_tuner.Objective("score", "max"), max_trials=6)
    o._set_project_dir(str(directory), "p")
    hp = keras_tuner.HyperParameters()
    hp.Choice("a", [1, 2, 3])
    hp.Choice("b", [10, 20])
    o.update_space(hp)
    return o


def _finish(oracle, trial):
    oracle.update_trial(trial.trial_id, {"score": 1.0})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


@pytest.mark.parametrize("cls", ["keras_tuner", "resumable"])
def test_grid_oracle_resumes_without_repeating(tmp_path, cls):
    """KerasTuner 1.4.8's GridSearchOracle cannot resume (keras-tuner#1055); ours can."""
    import keras_tuner

    klass = study.ResumableGridSearchOracle if cls == "resumable" else keras_tuner.oracles.GridSearchOracle
    first = _grid_oracle(klass, tmp_path)
    done = []
    for _ in range(2):
        t = first.create_trial("tuner0")
        _finish(first, t)
        done.append(t.trial_id)
    running = first.create_trial("tuner0")  # the process dies during this trial
    first.save()
    second = _grid_oracle(klass, tmp_path)
    second.reload()
    ran = []

    def resume():
        while True:
            t = second.create_trial("tuner0")
            if t.status == "STOPPED":
                return
            ran.append(t.trial_id)
            _finish(second, t)

    if cls == "keras_tuner":
        with pytest.raises(KeyError):
            resume()
        return
    resume()
    assert running.trial_id in ran and not set(done) & set(ran)  # retried, nothing finished rerun
    values = [tuple(sorted(t.hyperparameters.values.items())) for t in second.trials.values()]
    assert len(values) == len(set(values)) == 6
