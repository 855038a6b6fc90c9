#!/usr/bin/env bash
# Docs and release checks: the documentation site with warnings as errors, opened in headless Chromium
# (ci/browser_check.py: every formula rendered visibly, no raw TeX, images and links; screenshots kept in
# build/docs-browser-shots/), the wheel and sdist with `twine check`, each installed in a fresh environment with
# the README's line and run, and the Colab notebook executed top to bottom offline on CPU.
# Needs the `docs` and `notebook` extras (and `build`, `twine`, Debian's `chromium`): see .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow NO_MKDOCS_2_WARNING=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

start=$SECONDS
python -m mkdocs build --strict --site-dir build/docs-site
echo "docs: mkdocs build --strict in $((SECONDS - start)) s"

start=$SECONDS
rm -rf build/docs-browser-shots
python ci/browser_check.py build/docs-site --shots build/docs-browser-shots
ls -l build/docs-browser-shots
echo "docs: browser check (headless Chromium) in $((SECONDS - start)) s; screenshots (CI artifacts): build/docs-browser-shots/"

start=$SECONDS
python -m build --outdir "$out/dist" .
python -m twine check --strict "$out"/dist/*
python -m zipfile -l "$out"/dist/*.whl
echo "packaging: wheel + sdist + twine check in $((SECONDS - start)) s"

# The README's install line, from the wheel and from the sdist, each in a throwaway environment that sees the
# installed dependencies (--system-site-packages keeps it offline and fast) and must import its own copy.
for kind in whl tar.gz; do
    start=$SECONDS
    python -m venv --system-site-packages "$out/venv-$kind"
    (cd "$out" && env -u PYTHONPATH "$out/venv-$kind/bin/python" -m pip install -q \
        "$(ls "$out"/dist/*."$kind")[tensorflow-cpu,demo]")
    (cd "$out" && env -u PYTHONPATH "$out/venv-$kind/bin/python" -c \
        "import sys, keras_explr; assert keras_explr.__file__.startswith(sys.prefix), keras_explr.__file__")
    (cd "$out" && env -u PYTHONPATH "$out/venv-$kind/bin/keras-explr" convert --weight-decay 5e-4 --learning-rate 0.1 >/dev/null)
    echo "install: README line from the $kind in a fresh environment, keras-explr convert runs, in $((SECONDS - start)) s"
done

start=$SECONDS
CUDA_VISIBLE_DEVICES= KERAS_EXPLR_NO_INSTALL=1 python -m jupyter execute --output="$out/colab.ipynb" examples/colab.ipynb
echo "notebook: examples/colab.ipynb executed in $((SECONDS - start)) s"
