#!/usr/bin/env bash
# Docs and release checks: the documentation site with warnings as errors, the wheel and sdist with
# `twine check`, and the Colab notebook executed top to bottom offline on CPU.
# Needs the `docs` and `notebook` extras (and `build`, `twine`): see .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow NO_MKDOCS_2_WARNING=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

start=$SECONDS
python -m mkdocs build --strict --site-dir "$out/site"
echo "docs: mkdocs build --strict in $((SECONDS - start)) s"

start=$SECONDS
python -m build --outdir "$out/dist" .
python -m twine check --strict "$out"/dist/*
python -m zipfile -l "$out"/dist/*.whl
echo "packaging: wheel + sdist + twine check in $((SECONDS - start)) s"

start=$SECONDS
CUDA_VISIBLE_DEVICES= KERAS_EXPLR_NO_INSTALL=1 python -m jupyter execute --output="$out/colab.ipynb" examples/colab.ipynb
echo "notebook: examples/colab.ipynb executed in $((SECONDS - start)) s"
