"""The `keras-explr demo` command, run for real in a quick setting."""

import os
import re
import subprocess
import sys

import pytest

ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_demo_runs_and_the_runs_agree(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "keras_explr", "demo", "--epochs", "2", "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if re.match(r"\s+[12]\s+\d\.\d{4}", line)]
    assert len(rows) == 2
    worst = float(re.search(r"outputs over 2 epochs: (\S+) ", out.stdout).group(1))
    assert worst <= 1e-9
    assert (tmp_path / "explr_demo.png").stat().st_size > 10_000


@pytest.mark.parametrize("args,msg", [
    (["--epochs", "0"], "`--epochs` must be an integer >= 1"),
    (["--learning-rate", "-1"], "`learning_rate` must be a finite number > 0"),
    (["--momentum", "1.2"], r"`momentum` must be in the range \[0, 1\)"),
    (["--weight-decay", "0.5"], r"\(1 - sqrt\(momentum\)\)\*\*2"),
])
def test_demo_bad_arguments(tmp_path, args, msg):
    out = subprocess.run([sys.executable, "-m", "keras_explr", "demo", "--out", str(tmp_path / "x"), *args],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 2
    assert re.search(msg, out.stderr), out.stderr[-2000:]
    assert not (tmp_path / "x").exists()  # nothing written


def test_probe_command_writes_curves_and_compares_with_theory(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "keras_explr", "probe", "--epochs", "2", "--decay-per-step", "1e-2",
         "--every", "2", "--optimizers", "sgd,reparam-adam", "--out", str(tmp_path)],
        capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("sgd ", "reparam-adam "))]
    assert len(rows) == 4  # two kernels per optimizer
    for name, _, measured, theory, ratio, _ in rows:
        # clock 0.86 at the end; short runs sit near but not at equilibrium.
        assert 0.5 < float(ratio) < 2.0, rows
    assert (tmp_path / "probe_sgd.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "keras_explr", "probe", "--optimizers", "adam"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert bad.returncode == 2 and "--optimizers must be" in bad.stderr
