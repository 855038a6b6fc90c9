"""Optional dependencies: import them, or say which extra of keras-explr installs them.

>>> from keras_explr._optional import require
>>> require("numpy", "demo").__name__
'numpy'
>>> require("no_such_module_xyz", "demo")
Traceback (most recent call last):
...
keras_explr._optional.MissingOptionalDependency: this needs 'no_such_module_xyz', which is not installed: ...
"""

import importlib

# Import name -> (distribution name, the extra of keras-explr that installs it).
KNOWN = {
    "sklearn": ("scikit-learn", "demo"),
    "matplotlib": ("matplotlib", "demo"),
    "keras_tuner": ("keras-tuner", "tuner"),
    "tensorboard": ("tensorboard", "tuner"),
    "six": ("six", "tuner"),
    "grpc": ("grpcio", "tuner"),
    "mlxtend": ("mlxtend", "mnist"),
    "nbclient": ("nbclient", "notebook"),
    "nbformat": ("nbformat", "notebook"),
    "tensorflow": ("tensorflow-cpu", "tensorflow-cpu"),
    "jax": ("jax", "jax"),
    "torch": ("torch", "torch"),
}


class MissingOptionalDependency(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def install_hint(module, extra=None):
    """The sentence that says what to install for `module` ('sklearn', 'keras_tuner.oracles', ...)."""
    top = module.split(".")[0]
    dist, known_extra = KNOWN.get(top, (top, None))
    extra = extra or known_extra
    what = f"'{top}'" if dist == top else f"{dist} (module '{top}')"
    if extra is None:
        return f"this needs {what}, which is not installed: pip install {dist}"
    return f"this needs {what}, which is not installed: pip install 'keras-explr[{extra}]'"


def require(module, extra, purpose=None):
    """Imports and returns `module`; if it (or a package it sits in) is missing, raises an
    ImportError (`MissingOptionalDependency`) that names the keras-explr extra to install.

    Args:
      module: the import name, e.g. "sklearn.datasets".
      extra: the keras-explr extra that installs it, e.g. "demo".
      purpose: what needs it, for the message, e.g. "`keras-explr demo`" (default "this").

    An ImportError raised *inside* an installed module (a broken install) is not
    rewritten: it propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not _is_prefix(e.name, module):
            raise
        message = install_hint(e.name, extra)
        if purpose:
            message = purpose + message[len("this"):]
        raise MissingOptionalDependency(message, name=e.name) from e


def _is_prefix(name, module):
    """Whether the missing module `name` is `module` or one of the packages it sits in."""
    return module == name or module.startswith(name + ".")
