"""Every example runs in its offline quick mode, so examples cannot rot."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(script, *args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                         capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_convert_my_schedule(tmp_path):
    png = tmp_path / "c.png"
    text = _run("convert_my_schedule.py", "--quick", "--out", str(png))
    assert "Its twin:" in text and "momentum=0.9" in text
    assert "float32 horizon" in text
    assert png.stat().st_size > 10_000


def _parse(text, prefix, after):
    """The float right after `after` on the line starting with `prefix`."""
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return float(line.split(after, 1)[1].split()[0].rstrip(";,()"))


def test_cifar10_texp_offline(tmp_path):
    png = tmp_path / "cifar.png"
    text = _run("cifar10_texp.py", "--synthetic", "--quick", "--out", str(png))
    assert "single device" in text and "no weight decay" in text
    # Step decay + WD and its exact TEXP twin are the same function; float32
    # round-off, amplified by 64 steps of a ReLU net, keeps them apart by ~1e-3
    # (measured 9.7e-4); unrelated runs differ by O(1).
    assert _parse(text, "Final test accuracy", "max relative output difference") < 5e-2
    # Both learn the synthetic task (chance is 0.1; measured 0.277 and 0.281).
    assert _parse(text, "Final test accuracy", "step decay") > 0.15
    assert _parse(text, "Final test accuracy", "TEXP") > 0.15
    # TEXP's LR grows inside a phase while step decay's stays put.
    assert _parse(text, "Final test accuracy", "TEXP's LR peaked at") > 0.1
    assert png.stat().st_size > 10_000


def test_keras_tuner_search_offline(tmp_path):
    text = _run("keras_tuner_search.py", "--quick", "--directory", str(tmp_path / "kt"))
    assert "best reparam:" in text and "best texp:" in text
    rows = [line for line in text.splitlines() if line.strip().startswith(("0.05", "0.2"))]
    assert len(rows) == 4  # the whole 2x2 grid, both forms scored
    # The wrapper (coupled, lr_exponent=1) and its TEXP twin are the same runs up
    # to float32 round-off and BN's moving statistics (measured gap 0.027-0.029).
    assert _parse(text, "reparam vs its TEXP twin", "max |Δ val_accuracy|") <= 0.1


def test_hp_optimizer_search(tmp_path):
    text = _run("hp_optimizer_search.py", "--quick", "--directory", str(tmp_path / "kt"))
    lines = text.splitlines()
    new = [line for line in lines if line.strip().startswith("trial") and "weight_decay_new=" in line]
    old = [line for line in lines if line.strip().startswith("trial") and "weight_decay=" in line]
    assert len(new) == len(old) == 3  # both RandomSearches ran every trial, each in its own coordinates
    # Each best trial's decay per step: λ_new itself (new), η·λ (old).
    best = {p: dict(kv.split("=") for kv in line.split(": ", 1)[1].split(";")[0].split(", "))
            for p in ("new", "old") for line in lines if line.startswith(f"best {p}:")}
    assert _parse(text, "best new:", "decay per step") == float(best["new"]["weight_decay_new"])
    assert _parse(text, "best old:", "decay per step") == pytest.approx(
        float(best["old"]["learning_rate"]) * float(best["old"]["weight_decay"]), rel=2e-2)  # (printed to 3 digits)
    reloads = [line for line in lines if line.startswith("reloaded")]
    assert len(reloads) == 2 and all("state identical: True" in line for line in reloads)
    assert "ReparamWeightDecay" in reloads[0] and ": SGD," in reloads[1]
    # The retrained best models learn (chance 0.1; measured 0.853 and 0.831).
    assert all(float(line.rsplit(" ", 1)[1]) > 0.5 for line in reloads)


def _run_fails(script, *args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                         capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert out.returncode == 2, out.stderr[-3000:]
    return out.stderr


def test_examples_reject_bad_arguments():
    assert "--weight-decay must be in (0, 1.0)" in _run_fails("cifar10_texp.py", "--synthetic", "--weight-decay", "2")
    err = _run_fails("keras_tuner_search.py", "--quick", "--weight-decays", "0.01")
    assert "--weight-decays must be in (0, (1−√γ)²" in err and "got 0.01" in err
    assert "--trials must be an integer >= 1; got 0" in _run_fails("hp_optimizer_search.py", "--trials", "0")


def test_adam_scale_probe(tmp_path):
    text = _run("adam_scale_probe.py", "--quick")
    rows = [line for line in text.splitlines() if line.startswith("(scale")]
    assert len(rows) == 4
    diffs = [float(line.split()[-1]) for line in rows]
    # k = 10 pairs agree to round-off (measured 1.1e-6, 7.2e-7), k = 8 bit-identical,
    # unscaled ε drifts (measured 3.3e-3).
    assert diffs[0] < 1e-5 and diffs[1] < 1e-5 and diffs[2] == 0.0 and diffs[3] > 1e-3
    rel = [float(line.split("%")[0].split()[-1]) for line in rows]
    assert rel[0] > 5 * rel[1]  # the same lr moves a 10x larger weight ~10x less, relatively
    assert "epsilon scales as 1/k" in text


def test_colab_tpu_recipe_offline():
    text = _run("colab_tpu.py", "--synthetic", "--quick")
    assert "single device (CPU)" in text and "finite: True" in text
    env = {**ENV, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "colab_tpu.py"), "--synthetic", "--quick"],
                         capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "keras.distribution.DataParallel (8 cpu)" in out.stdout and "finite: True" in out.stdout
