"""The study grid in KerasTuner's own chief/worker mode, on localhost."""

import json
import os
import socket
import subprocess
import sys

import pytest

from keras_explr.tuning import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("grpc")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers_run_every_trial_exactly_once(tmp_path):
    lrs, wds = [0.03, 0.3, 3.0], [1e-4, 1e-2]
    spec = {"hypermodel": {"parameterization": "new", "learning_rates": lrs, "weight_decays": wds,
                           "epochs": 1, "steps_per_epoch": 2, "filters": [8, 16]},
            "data": {"name": "digits", "num_train": 256}, "seeds": [0, 1],
            "directory": str(tmp_path), "project_name": "dist"}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    port = str(_free_port())
    base = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    base.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2",
                KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=port)
    cmd = [sys.executable, "-m", "keras_explr.tuning.study", str(path)]
    procs = {tid: subprocess.Popen(cmd, env=dict(base, KERASTUNER_TUNER_ID=tid), cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tid in ("chief", "tuner0", "tuner1")}
    outs = {}
    try:
        for tid, p in procs.items():
            outs[tid] = p.communicate(timeout=420)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for tid, p in procs.items():
        assert p.returncode == 0, (tid, outs[tid][1][-3000:])
    project = tmp_path / "dist"
    with open(project / "executions.jsonl") as f:
        events = [json.loads(line) for line in f]
    ends = [e for e in events if e["event"] == "end"]
    # Every trial ran exactly once, on a worker, and the six cells are all there.
    assert sorted(e["trial_id"] for e in ends) == sorted({e["trial_id"] for e in ends})
    assert len(ends) == 6
    assert {(e["values"]["learning_rate"], e["values"]["weight_decay"]) for e in ends} == {
        (a, b) for a in lrs for b in wds}
    assert {e["tuner_id"] for e in events} <= {"tuner0", "tuner1"}
    assert len({e["pid"] for e in events}) <= 2
    # The chief's oracle holds every seed of every trial.
    trials = study._read_trials(str(project))
    assert len(trials) == 6
    assert all({"accuracy_seed0", "accuracy_seed1", "loss_seed0", "loss_seed1"} <= set(t["metrics"])
               for t in trials)
    chief = json.loads(outs["chief"][0].strip().splitlines()[-1])
    assert chief == {"tuner_id": "chief", "completed": 6}
