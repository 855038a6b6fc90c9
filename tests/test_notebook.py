"""examples/colab.ipynb runs top to bottom, offline, on CPU (nbclient), and its twin check passes."""

import os
import re
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "colab.ipynb")


def _text(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.slow
def test_colab_notebook_runs_offline_on_cpu(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    # The kernel inherits this environment: the TensorFlow backend on the CPU, and no install attempt.
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("KERAS_EXPLR_NO_INSTALL", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "skipping the install" in _text(code[0])
    assert "device CPU, float64" in _text(code[1])
    out = "".join(_text(c) for c in code)
    worst = float(re.search(r"max relative output difference over \d+ steps: (\S+) ", out).group(1))
    assert worst < 1e-9, out
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for o in code[-1].get("outputs", [])), "the last cell draws the plot"
    print(f"notebook executed in {seconds:.1f} s; max relative difference {worst:.2e}")
