"""`keras-explr convert`: the weight-decay convention table for a user's settings."""

import os
import re
import subprocess
import sys

import pytest

from keras_explr import cli, theory

ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _rows(text):
    return {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(\w+)\s+(\S+) (exact|approx|none)\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)}


def test_convert_prints_every_convention(capsys):
    assert cli.main(["convert", "--weight-decay", "5e-4", "--learning-rate", "0.1", "--from", "torch_sgd",
                     "--momentum", "0.9", "--steps-per-epoch", "391", "--approximate"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert list(rows) == list(theory.WEIGHT_DECAY_CONVENTIONS)
    assert rows["torch_sgd"] == ("0.0005", "exact", "0.0005", "2000", "5.115")
    assert rows["keras"] == ("0.005", "approx", "0.0005", "2000", "5.115")
    assert rows["independent"][:2] == ("0.0005", "approx")
    assert "momentum buffer" in out


def test_convert_without_approximate_says_none_and_why(capsys):
    cli.main(["convert", "--weight-decay", "5e-4", "--learning-rate", "0.1", "--from", "torch_sgd",
              "--momentum", "0.9"])
    out = capsys.readouterr().out
    assert _rows(out)["keras"] == ("-", "none", "-", "-", "-")
    assert "Pass --approximate" in out


def test_convert_constant_lr_adamw_is_exact_everywhere(capsys):
    cli.main(["convert", "--weight-decay", "0.05", "--learning-rate", "1e-3"])
    rows = _rows(capsys.readouterr().out)
    assert all(r[1] == "exact" for r in rows.values())
    assert rows["independent"][0] == "5e-05" and rows["composer"][0] == "5e-05"
    assert rows["torch_adamw"][3] == "20000"


@pytest.mark.parametrize("args,msg", [
    (["--weight-decay", "-1", "--learning-rate", "0.1"], "--weight-decay"),
    (["--weight-decay", "1e-4", "--learning-rate", "0"], "--learning-rate"),
    (["--weight-decay", "1e-4", "--learning-rate", "0.1", "--momentum", "1"], "--momentum"),
    (["--weight-decay", "1e-4", "--learning-rate", "0.1", "--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["--weight-decay", "1e-4", "--learning-rate", "0.1", "--from", "sgd"], "--from"),
])
def test_convert_bad_arguments(capsys, args, msg):
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", *args])
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_convert_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "keras_explr", "convert", "--weight-decay", "5e-4",
                          "--learning-rate", "0.1", "--steps-per-epoch", "391"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _rows(out.stdout)["independent"] == ("5e-05", "exact", "5e-05", "20000", "51.15")
