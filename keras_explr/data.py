"""Real data that ships offline (no downloads at run time)."""

import numpy as np


def load_digits(num_train=None, seed=0):
    """scikit-learn's 1797 real 8×8 handwritten digits (UCI optdigits).

    Returns ``(x_train, y_train), (x_test, y_test)``: images of shape
    (n, 8, 8, 1) scaled to [0, 1] as float32, integer labels. The split is a
    seeded shuffle with 1/4 of the images held out; ``num_train`` keeps only
    the first ``num_train`` training images.
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = len(x) // 4
    x_test, y_test, x_train, y_train = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
    if num_train is not None:
        x_train, y_train = x_train[:num_train], y_train[:num_train]
    return (x_train, y_train), (x_test, y_test)
