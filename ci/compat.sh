#!/usr/bin/env bash
# A fast subset on the oldest supported Keras (3.10, with the TensorFlow it
# needs) in a virtual environment that sees the main install's other packages.
# The main run (ci/test.sh) covers the newest (ci/constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KERAS_EXPLR_COMPAT_VENV:-/tmp/keras-explr-oldest}
if [ ! -x "$VENV/bin/python" ]; then
  python -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install -q -c ci/constraints-oldest.txt keras tensorflow-cpu
"$VENV/bin/python" -c "import keras, tensorflow as tf; print('oldest supported: keras', keras.__version__, 'tensorflow', tf.__version__)"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
SUBSET="tests/test_keras_internals.py tests/test_layout.py tests/test_optimizer_contract.py tests/test_optimizers.py tests/test_reparam.py tests/test_schedules.py"
KERAS_BACKEND=tensorflow "$VENV/bin/python" -m pytest -q -p no:cacheprovider $SUBSET "$@"
KERAS_BACKEND=jax "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m backends -k "plain or internals or apply" tests/test_optimizer_contract.py tests/test_keras_internals.py "$@"
