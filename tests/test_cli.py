"""The `keras-explr demo` command, run for real in a quick setting."""

import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _umask_022():
    os.umask(0o022)


def test_demo_runs_and_the_runs_agree(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "keras_explr", "demo", "--epochs", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, env={k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
        timeout=600, preexec_fn=_umask_022)
    assert out.returncode == 0, out.stderr[-3000:]
    # The command silences TensorFlow's C++ log itself, before the framework loads.
    assert not re.search(r"^[IWEF]\d{4} |cpu_feature_guard|DT_DOUBLE|absl::InitializeLog", out.stderr, re.M), out.stderr
    rows = [line for line in out.stdout.splitlines() if re.match(r"\s+[12]\s+\d\.\d{4}", line)]
    assert len(rows) == 2
    worst = float(re.search(r"outputs over 2 epochs: (\S+) ", out.stdout).group(1))
    assert worst <= 1e-9
    # Checked after every step, not once per epoch: 2 epochs of 22 steps.
    assert "checked after each of the 44 steps" in out.stdout
    png = tmp_path / "explr_demo.png"
    assert png.stat().st_size > 10_000
    # An ordinary file (0644 under umask 022), not the 0600 of the temporary file it was written through.
    assert stat.S_IMODE(png.stat().st_mode) == 0o644
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    # Compact console: the table, no progress bars (they come with --verbose).
    assert "━" not in out.stdout + out.stderr and "step - " not in out.stdout
    assert len(out.stdout.splitlines()) < 20
    # The PNG has three panels side by side (LR, weight norm, relative output difference).
    width, height = _png_size(png)
    assert width > 2.5 * height


def _png_size(path):
    import struct

    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_demo_options_in_help():
    out = subprocess.run([sys.executable, "-m", "keras_explr", "demo", "--help"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0
    assert "--verbose" in out.stdout and "keras-explr[demo]" in out.stdout
    assert "--quiet" not in out.stdout  # quiet is the default; the old flag is gone


def test_demo_without_scikit_learn_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['sklearn'] = None; from keras_explr.cli import main; "
            f"sys.exit(main(['demo', '--out', {str(tmp_path / 'x')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "pip install 'keras-explr[demo]'" in out.stderr
    assert "scikit-learn" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["demo", "probe"])
def test_commands_without_matplotlib_name_the_extra_before_training(tmp_path, command):
    code = ("import sys; sys.modules['matplotlib'] = None; from keras_explr.cli import main; "
            f"sys.exit(main([{command!r}, '--out', {str(tmp_path / 'x')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert f"keras-explr {command}: `keras-explr {command}` needs 'matplotlib'" in out.stderr
    assert "pip install 'keras-explr[demo]'" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == "" and not (tmp_path / "x").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_plots_are_written_with_ordinary_permissions(tmp_path, umask, mode):
    """The plots go through a private temporary file (0600) and end with a new file's mode: 0666 less the umask."""
    from keras_explr import plots

    old = os.umask(umask)
    try:
        path = plots.log_panels(tmp_path / "p.png", [("lr", {"a": [1.0, 2.0, np.nan, 4.0]}),
                                                     ("norm", {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]})])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert os.listdir(tmp_path) == ["p.png"]
    width, height = _png_size(path)
    assert width > 1.5 * height  # two panels side by side


@pytest.mark.parametrize("panels, msg", [
    ([], "`panels` must be a non-empty list"),
    ({"lr": [1.0]}, "`panels` must be a non-empty list"),
    ([("lr", [1.0, 2.0])], r"`panels\[0\]` must be a non-empty dict"),
    ([(1, {"a": [1.0]})], r"`panels`\[0\] must be a \(y_label, \{label: values\}\) pair"),
    ([("lr", {"a": [1.0]}), ("norm", {"a": []})], r"`panels\[1\]`\['a'\]: each series must be a non-empty"),
])
def test_log_panels_bad_input(tmp_path, panels, msg):
    from keras_explr import plots

    with pytest.raises(ValueError, match=msg):
        plots.log_panels(tmp_path / "p.png", panels)
    assert os.listdir(tmp_path) == []


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
    assert out.stderr.startswith("usage: keras-explr demo ")  # the subcommand's usage, not the top level's
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
