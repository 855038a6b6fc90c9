"""Every example runs in its offline quick mode, so examples cannot rot."""

import os
import subprocess
import sys

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
