"""The command line answers at once: `--help`, `convert` and argument errors load no framework.

Each check runs in a fresh interpreter and reads `sys.modules` after the command, so an import of
Keras, TensorFlow, JAX or PyTorch anywhere on the path (the package's `__init__`, the CLI module,
`keras_explr.theory`) fails it.
"""

import json
import os
import subprocess
import sys

import pytest

FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
RUN = """
import json, runpy, sys
sys.argv = ["keras-explr", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("keras_explr", run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (FRAMEWORKS,)


def _run(*args):
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], capture_output=True, text=True,
                         env=ENV, timeout=120)
    *stderr, last = out.stderr.strip().splitlines()
    return json.loads(last), out.stdout, "\n".join(stderr)


@pytest.mark.parametrize("args", [
    ("--help",),
    ("convert", "--help"),
    ("convert", "--weight-decay", "5e-4", "--learning-rate", "0.1", "--momentum", "0.9", "--from", "torch_sgd"),
    ("demo", "--help"),
    ("probe", "--help"),
    ("study", "--help"),
])
def test_help_and_convert_load_no_framework(args):
    result, stdout, stderr = _run(*args)
    assert result["code"] in (0, None), stderr
    assert result["loaded"] == [], f"{args} imported {result['loaded']}"
    assert stdout.strip() and not stderr  # no TensorFlow log, nothing on stderr


@pytest.mark.parametrize("args,usage,message", [
    (("convert", "--weight-decay", "-1", "--learning-rate", "0.1"), "keras-explr convert", "--weight-decay"),
    (("convert", "--weight-decay", "1e-4", "--learning-rate", "0.1", "--momentum", "1"), "keras-explr convert",
     "--momentum"),
    (("demo", "--epochs", "0"), "keras-explr demo", "--epochs"),
    (("demo", "--weight-decay", "0.5"), "keras-explr demo", "sqrt(momentum)"),
    (("probe", "--optimizers", "adam"), "keras-explr probe", "--optimizers must be"),
    (("probe", "--decay-per-step", "2"), "keras-explr probe", "--decay-per-step"),
])
def test_errors_print_the_subcommands_usage_without_loading_a_framework(args, usage, message):
    result, _, stderr = _run(*args)
    assert result["code"] == 2
    assert stderr.startswith(f"usage: {usage} "), stderr
    assert message in stderr
    assert result["loaded"] == []


def test_import_keras_explr_and_theory_load_no_framework():
    code = ("import sys, keras_explr, keras_explr.theory as t; t.growth_root(0.1, 5e-4, 0.9); "
            "import keras_explr.tuning.report, keras_explr.tuning.design; "
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_submodules_load_on_first_use_and_register_when_keras_is_loaded():
    code = """
import sys, keras_explr
assert "keras_explr.schedules" not in sys.modules
assert keras_explr.schedules.ExpLR.__module__ == "keras_explr.schedules"
assert "schedules" in dir(keras_explr) and keras_explr.__version__
try:
    keras_explr.nope
except AttributeError as e:
    assert "nope" in str(e)
else:
    raise AssertionError("no AttributeError")
"""
    # After `import keras`, `import keras_explr` registers the saveable classes (load_model finds them).
    registered = """
import keras, keras_explr
for name in ("ExpLR", "SGD", "ReparamWeightDecay"):
    assert keras.saving.get_registered_object("keras_explr>" + name) is not None, name
"""
    for src in (code, registered):
        out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                             env={**ENV, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
