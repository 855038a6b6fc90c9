"""The package's layout rules: theory imports no Keras, no import cycles in
tuning, no keras.src imports outside the one module that declares them, no
private Keras attribute read outside it, and no assignment to another
object's underscore attribute."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_explr"


def test_importing_theory_does_not_import_keras():
    # keras_explr/__init__ imports Keras; theory must not need it: import it (and the input checks it
    # uses) from the package's directory without running the package's __init__.
    code = ("import importlib, sys, types; "
            "pkg = types.ModuleType('keras_explr'); "
            f"pkg.__path__ = [{str(PACKAGE)!r}]; sys.modules['keras_explr'] = pkg; "
            "importlib.import_module('keras_explr.theory'); "
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('keras', 'tensorflow', 'jax', 'torch')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _module_name(path):
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def test_no_import_cycles_between_modules():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        deps = set()
        for module, names in _imports(path):
            if module.startswith("keras_explr"):
                deps.add(module)
                deps.update(f"{module}.{n}" for n in names)
        graph[name] = {d for d in deps if d != name and d != "keras_explr"}
    graph = {k: {d for d in v if d in graph and not k.startswith(d + ".")} for k, v in graph.items()}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in (cycle_from(m) for m in graph) if c]
    assert not cycles, cycles[0]


def test_no_keras_src_imports_outside_keras_internals():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_keras_internals.py":
            continue
        for module, _ in _imports(path):
            if module.startswith("keras.src"):
                offenders.append((path.name, module))
    assert not offenders


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _keras_privates():
    """The Keras private names the package reads (keras_explr/_keras_internals.py's table)."""
    tree = ast.parse((PACKAGE / "_keras_internals.py").read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "INTERNALS")
    return {name for row in ast.literal_eval(table) for name in row[1].split() if _private(name)}


def _own_private_names():
    """Every private name the package defines itself: its modules, module-level names, functions,
    classes, methods, arguments and the attributes it assigns; minus the Keras privates it reads."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        if _private(path.stem):
            names.add(path.stem)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {n for n in names if _private(n)} - _keras_privates()


# Private reads of other libraries' objects (not Keras), each with its reason.
OTHER_LIBRARIES = {
    "_foreach_mul_": "torch._foreach_mul_: PyTorch's fused multi-tensor multiply (optimizers/_wrapper.py)",
}


def _private_reads(source, own, keras_private):
    """The ``x._name`` reads (and getattr/hasattr/setattr/delattr with a private name) of `source`
    that name neither something the package defines nor an inherited attribute of ``self``/``cls``
    (a Keras private of the internals table is an offender even on ``self``), and every string
    naming a ``keras.src`` module."""
    offenders = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _private(node.attr):
            name, on_self = node.attr, isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value)):
            name = node.args[1].value
            on_self = isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("keras.src"):
            offenders.append(f"{node.lineno} {node.value!r}")
            continue
        else:
            continue
        if name in keras_private or not (name in own or on_self or name in OTHER_LIBRARIES):
            offenders.append(f"{node.lineno} {ast.unparse(node)}")
    return offenders


def test_private_keras_attributes_are_read_only_in_keras_internals():
    own, keras_private = _own_private_names(), _keras_privates()
    assert {"_trainable_variables", "_inbound_nodes", "_get_variable_index"} <= keras_private
    offenders = [f"{path.relative_to(PACKAGE)}:{line}"
                 for path in PACKAGE.rglob("*.py") if path.name != "_keras_internals.py"
                 for line in _private_reads(path.read_text(), own, keras_private)]
    assert not offenders, offenders


@pytest.mark.parametrize("source, caught", [
    ("def f(layer):\n    return layer._trainable_variables\n", True),      # a Keras private in the table
    ("def f(model):\n    return model._compile_config\n", True),           # one outside it
    ("def f(opt):\n    return getattr(opt, '_iterations', None)\n", True),  # through getattr
    ("def f(cls):\n    return cls.__module__.startswith('keras.src.backend')\n", True),
    ("class A:\n    def f(self):\n        return self._get_variable_index(1)\n", True),
    ("def f(opt):\n    return opt._target\n", False),                     # the package's own name
    ("class A:\n    def f(self):\n        return self._tracker\n", False),   # inherited, on self
])
def test_the_private_read_check_is_precise(source, caught):
    assert bool(_private_reads(source, _own_private_names(), _keras_privates())) == caught


def test_no_assignment_to_another_objects_private_attribute():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                if (isinstance(t, ast.Attribute) and t.attr.startswith("_") and not t.attr.startswith("__")
                        and not (isinstance(t.value, ast.Name) and t.value.id in ("self", "cls"))):
                    offenders.append(f"{path.name}:{node.lineno} .{t.attr}")
    assert not offenders, offenders


@pytest.mark.parametrize("rule", ["theory"])
def test_optimizers_is_a_package_with_one_module_per_optimizer(rule):
    import keras_explr.optimizers as opt

    for name in opt.__all__:
        assert getattr(opt, name).__module__.startswith("keras_explr.optimizers.")
