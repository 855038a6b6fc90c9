#!/usr/bin/env bash
# The test suite: TensorFlow (everything, float64 exactness included), then the
# tests marked `backends` on JAX and PyTorch, each backend in its own process.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
KERAS_BACKEND=jax python -m pytest -q -m backends -p no:cacheprovider "$@"
KERAS_BACKEND=torch python -m pytest -q -m backends -p no:cacheprovider "$@"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "$@"
# Every docstring example runs.
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider --doctest-modules keras_explr
