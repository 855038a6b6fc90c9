"""Nothing lost on save, load or kill (TF, CPU): training continued in a fresh
process after `model.save`/`load_model`, or after a SIGKILL mid-epoch with
`keras.callbacks.BackupAndRestore`, ends bit-identical to uninterrupted training
for ExpLR, TEXP, exact TEXP, ReparamWeightDecay and Renormalize (weights, BN
statistics and every optimizer variable: buffers, iteration count, the
renormalization offset)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.resume_worker import ARMS

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resume_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))
ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}


def phase(name, folder, expect_kill=False):
    out = subprocess.run([sys.executable, WORKER, name, str(folder)], capture_output=True, text=True,
                         env=ENV, timeout=900, cwd=ROOT)
    if expect_kill:
        assert out.returncode == -9, (out.returncode, out.stderr[-2000:])
    else:
        assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    phase("straight", folder)
    phase("first", folder)
    phase("resume", folder)
    # Each SIGKILL ends the process (one per arm); the rerun resumes that arm from
    # its backup and goes on to the next arm; the last run finishes without a kill.
    for _ in range(len(ARMS) + 1):
        phase("backup", folder, expect_kill=not all(os.path.exists(folder / f"{a}.killed") for a in ARMS))
    return folder


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("interruption", ["resume", "backup"])
def test_continued_training_is_bit_identical(runs, arm, interruption):
    straight = load(runs / f"{arm}_straight.npz")
    other = load(runs / f"{arm}_{interruption}.npz")
    assert sorted(straight) == sorted(other)
    assert any(k.startswith("o") for k in straight)
    for key in straight:
        assert np.array_equal(straight[key], other[key]), (arm, key, np.max(np.abs(straight[key] - other[key])))
    if interruption == "backup":
        assert os.path.exists(runs / f"{arm}.killed")
