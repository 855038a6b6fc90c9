#!/usr/bin/env bash
# The test suite: TensorFlow (everything, float64 exactness included), then the
# tests marked `backends` on JAX and PyTorch, each backend in its own processes.
# Test files are spread over KERAS_EXPLR_TEST_WORKERS processes (default: one per
# core, pytest-xdist; each file stays in one process, so module fixtures are built once).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
workers=${KERAS_EXPLR_TEST_WORKERS:-$(python -c "import os; print(max(1, len(os.sched_getaffinity(0))))")}
xdist=(-n "$workers" --dist loadfile)
[ "$workers" -le 1 ] && xdist=()
# The linter first (configuration: [tool.ruff] in pyproject.toml): seconds, and it fails fast.
python -m ruff check .
KERAS_BACKEND=jax python -m pytest -q -m backends -p no:cacheprovider "${xdist[@]}" "$@"
KERAS_BACKEND=torch python -m pytest -q -m backends -p no:cacheprovider "${xdist[@]}" "$@"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "${xdist[@]}" "$@"
# Every docstring example runs.
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider --doctest-modules keras_explr
