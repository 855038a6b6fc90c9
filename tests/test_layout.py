"""The package's layout rules: theory imports no Keras, no import cycles in
tuning, no keras.src imports outside the one module that declares them, and
no assignment to another object's underscore attribute."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_explr"


def test_importing_theory_does_not_import_keras():
    code = ("import sys, keras_explr.theory; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax', 'torch')); "
            "print(bad); sys.exit(1 if bad else 0)")
    # keras_explr/__init__ imports Keras; theory must not need it: load the file alone.
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('theory', {str(PACKAGE / 'theory.py')!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
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
