"""The release artifacts: a wheel and an sdist that build, carry the license and honest metadata, and contain
what they should (the package in the wheel; package, tests, docs and examples in the sdist)."""

import email
import glob
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _version():
    text = open(os.path.join(ROOT, "keras_explr", "_version.py"), encoding="utf-8").read()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def test_the_version_is_written_once():
    version = _version()
    for name in ("pyproject.toml", "setup.py", os.path.join("keras_explr", "__init__.py")):
        text = open(os.path.join(ROOT, name), encoding="utf-8").read()
        assert version not in text, f"{name} repeats the version; keras_explr/_version.py is its one source"
    import keras_explr

    assert keras_explr.__version__ == version


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: offline, with the setuptools installed here (pyproject.toml asks for setuptools >= 77).
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), ROOT],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    wheels, sdists = glob.glob(str(out / "*.whl")), glob.glob(str(out / "*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    return wheels[0], sdists[0]


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name)), z.namelist()


def test_wheel_metadata(dist):
    wheel, sdist = dist
    assert os.path.basename(wheel) == f"keras_explr-{_version()}-py3-none-any.whl"
    assert os.path.basename(sdist) == f"keras_explr-{_version()}.tar.gz"
    meta, names = _metadata(wheel)
    assert meta["Name"] == "keras-explr" and meta["Version"] == _version()
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier")
    # The Python versions named are the ones tested: CI runs the suite on this interpreter only.
    python_classifier = r"Programming Language :: Python :: 3\.\d+"
    pythons = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(python_classifier, c)}
    assert pythons == {f"3.{sys.version_info.minor}"}, pythons
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Documentation", "Source", "Changelog"} <= set(urls)
    assert "/tree/" not in urls["Documentation"]  # the built site, not a source folder that shows `::: module`
    assert not any("<" in u or "TODO" in u for u in urls.values())
    extras = set(meta.get_all("Provides-Extra"))
    assert {"demo", "tuner", "test", "docs", "notebook", "tensorflow-cpu", "jax", "torch"} <= extras
    requires = meta.get_all("Requires-Dist")
    test_extra = {re.split(r"[<>=;\[ ]", r)[0] for r in requires if 'extra == "test"' in r}
    # Everything the suite imports beyond a backend (the README's test command adds the backends).
    assert {"pytest", "hypothesis", "scikit-learn", "matplotlib", "keras-tuner", "tensorboard", "six", "grpcio",
            "mlxtend", "nbclient", "nbformat", "ipykernel"} <= test_extra
    assert "keras-explr=keras_explr.cli:main" in _entry_points(wheel)
    docs_extra = {re.split(r"[<>=;\[ ]", r)[0] for r in requires if 'extra == "docs"' in r}
    assert "django-static-mathjax" in docs_extra  # the MathJax the site serves itself (docs/_hooks.py)


def _entry_points(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        return z.read(name).decode().replace(" ", "")


def test_wheel_contents(dist):
    wheel, _ = dist
    _, names = _metadata(wheel)
    dist_info = f"keras_explr-{_version()}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    package = sorted(n for n in names if not n.startswith(dist_info))
    tree = sorted(os.path.relpath(p, ROOT).replace(os.sep, "/")
                  for p in glob.glob(os.path.join(ROOT, "keras_explr", "**", "*.py"), recursive=True))
    assert package == tree, "the wheel must hold exactly the package's modules"
    with zipfile.ZipFile(wheel) as z:
        license_text = z.read(f"{dist_info}/licenses/LICENSE").decode()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "Copyright 2026 The keras_explr authors" in license_text


def test_sdist_contents(dist):
    _, sdist = dist
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "mkdocs.yml", "docs/math.md",
                   "docs/_hooks.py", "docs/_griffe_doctest.py", "examples/colab.ipynb", "tests/conftest.py",
                   "ci/constraints.txt", "keras_explr/_version.py", "benchmarks/results/texp_vs_step_decay_cpu_tf.png"):
        assert needed in names, needed
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_twine_check(dist):
    pytest.importorskip("twine")
    run = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *dist],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
