"""The documentation site: every public name is in the API reference, every link into the math page resolves,
and the site builds with warnings as errors (when mkdocs is installed: the `docs` extra)."""

import glob
import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

# The public modules. The API reference has a `::: module` directive for each (tuning's submodules hold what
# `keras_explr.tuning` exports lazily; `monitor` holds `callbacks.ScaleMonitor`).
PUBLIC_MODULES = [
    "keras_explr.theory", "keras_explr.schedules", "keras_explr.optimizers", "keras_explr.callbacks",
    "keras_explr.monitor", "keras_explr.invariance", "keras_explr.layers", "keras_explr.probe",
    "keras_explr.models", "keras_explr.data", "keras_explr.plots", "keras_explr.tuning",
    "keras_explr.tuning.hypermodels", "keras_explr.tuning.study",
    "keras_explr.tuning.design", "keras_explr.tuning.report", "keras_explr.tuning.block",
]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _is_public_module_path(path):
    return path.startswith("keras_explr") and not any(p.startswith("_") for p in path.split("."))


def public_names(module_name):
    """{name: [acceptable documented paths]} for a module's public names.

    `__all__` when the module has one; otherwise every attribute without a leading underscore that is not a
    module and is defined in this package (third-party imports such as `keras` or `np` are not ours). An object
    imported from another public module of the package may be documented there instead (its canonical path);
    one imported from a private module (``optimizers._wrapper``) is an implementation detail unless listed in
    `__all__`.
    """
    module = importlib.import_module(module_name)
    explicit = getattr(module, "__all__", None)
    names = {}
    for name in explicit if explicit is not None else dir(module):
        if explicit is None and name.startswith("_"):
            continue
        obj = getattr(module, name)
        if inspect.ismodule(obj) or name == "__version__":
            continue
        home = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
        if explicit is None:
            if home is None:  # a constant: ours only if it is not a re-export of a third-party object
                if type(obj).__module__.split(".")[0] not in ("builtins", "keras_explr", "numpy"):
                    continue
            elif not home.startswith("keras_explr"):
                continue
            elif home != module_name and not _is_public_module_path(home):
                continue
        paths = [f"{module_name}.{name}"]
        if home and home != module_name and _is_public_module_path(home):
            paths.append(f"{home}.{obj.__qualname__}")
        names[name] = paths
    return names


def test_every_public_module_has_an_api_page():
    directives = set()
    for page in glob.glob(os.path.join(DOCS, "api", "*.md")):
        directives |= set(re.findall(r"^::: (\S+)", _read(page), flags=re.M))
    missing = [m for m in PUBLIC_MODULES if m not in directives]
    assert not missing, f"no `::: module` directive in docs/api/ for {missing}"


def _anchor_ids(html):
    return set(re.findall(r'\bid="([^"]+)"', html))


def _math_anchors():
    text = _read(os.path.join(DOCS, "math.md"))
    return set(re.findall(r"\{#([\w-]+)\}", text))


def test_links_into_the_math_page_resolve():
    """Every `math.md#anchor` written anywhere (code, examples, README, docs) names a section of docs/math.md."""
    anchors = _math_anchors()
    assert {"the-general-converter", "zero-buffers", "equivalent-rescaling", "scale-probe",
            "rotational-equilibrium", "entanglement-metrics"} <= anchors
    files = (glob.glob(os.path.join(ROOT, "keras_explr", "**", "*.py"), recursive=True)
             + glob.glob(os.path.join(ROOT, "examples", "*.py")) + glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
             + glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True) + [os.path.join(ROOT, "README.md")])
    broken = []
    for path in files:
        for anchor in re.findall(r"math(?:\.md|/)#([\w-]+)", _read(path)):
            if anchor not in anchors:
                broken.append(f"{os.path.relpath(path, ROOT)}: #{anchor}")
    assert not broken, f"links to sections that docs/math.md does not have: {broken}"


def test_docs_are_self_contained():
    """The docs, README, examples, tests and package cite papers and the repository's own pages,
    never the project's private spec folder."""
    files = (glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True)
             + glob.glob(os.path.join(ROOT, "examples", "*.py"))
             + glob.glob(os.path.join(ROOT, "tests", "*.py"))
             + glob.glob(os.path.join(ROOT, "keras_explr", "**", "*.py"), recursive=True)
             + [os.path.join(ROOT, "README.md")])
    for path in files:
        if os.path.samefile(path, __file__):
            continue
        text = _read(path)
        assert "../shared" not in text and "shared/spec" not in text, path
        assert not re.search(r"(MATH|PROBE_AND_STUDY)\.md", text), path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                           cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-5000:]
    return out


def test_site_builds_strict_and_documents_every_public_name(site):
    ids = set()
    for page in glob.glob(os.path.join(site, "api", "**", "index.html"), recursive=True):
        with open(page, encoding="utf-8") as f:
            ids |= _anchor_ids(f.read())
    missing = []
    for module in PUBLIC_MODULES:
        for name, paths in public_names(module).items():
            if not any(p in ids for p in paths):
                missing.append(paths[0])
    assert not missing, f"public names missing from the API reference: {missing}"


def test_site_has_the_pages_and_plots(site):
    for page in ("getting-started", "math", "guides/schedules", "guides/weight-decay", "guides/renormalize",
                 "guides/invariance", "guides/probe", "guides/monitor", "guides/equilibrium", "guides/tuning",
                 "results/exactness", "results/performance", "results/study", "api/schedules", "changelog"):
        assert os.path.exists(os.path.join(site, page, "index.html")), page
    # The committed benchmark plots are served from benchmarks/results (no copies in docs/).
    for png in glob.glob(os.path.join(ROOT, "benchmarks", "results", "**", "*.png"), recursive=True):
        assert os.path.exists(os.path.join(site, "results", os.path.basename(png))), png
    with open(os.path.join(site, "math", "index.html"), encoding="utf-8") as f:
        ids = _anchor_ids(f.read())
    assert _math_anchors() <= ids


# ---------------------------------------------------------------------------------------------------------------
# The code in the README and the guides runs, as written.
#
# Each page is run top to bottom like a notebook, in one namespace: a ```python block is executed, a ```pycon
# block is a doctest (its outputs are checked), and a ```console block whose command is `keras-explr convert` is
# run and its output compared line by line. Pages that change Keras's global dtype get it restored afterwards.
RUNNABLE_PAGES = ["README.md", "docs/getting-started.md", "docs/guides/schedules.md", "docs/guides/weight-decay.md",
                  "docs/guides/renormalize.md", "docs/guides/invariance.md", "docs/guides/probe.md",
                  "docs/guides/monitor.md", "docs/guides/equilibrium.md"]
_BLOCK = re.compile(r"^```(python|pycon|console)[^\n]*\n(.*?)^```", re.M | re.S)


def code_blocks(path):
    """[(kind, code, line)] of the page's top-level fenced blocks, in order."""
    text = _read(os.path.join(ROOT, path))
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _BLOCK.finditer(text)]


def test_every_guide_is_run():
    """Each guide (except tuning, which has its own tests) and the README are in RUNNABLE_PAGES and have code."""
    guides = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(DOCS, "guides", "*.md"))}
    assert guides - {"docs/guides/tuning.md"} <= set(RUNNABLE_PAGES)
    for page in RUNNABLE_PAGES:
        assert any(kind != "console" for kind, _, _ in code_blocks(page)), page


def _run_console(block, page, line):
    import shlex

    text = block.replace("\\\n", " ")
    commands = [(i, ln[2:]) for i, ln in enumerate(text.splitlines()) if ln.startswith("$ ")]
    assert len(commands) == 1, f"{page}:{line}: one `$ command` per console block"
    argv = shlex.split(commands[0][1])
    assert argv[:2] == ["keras-explr", "convert"], f"{page}:{line}: only `keras-explr convert` is run"
    expected = text.splitlines()[commands[0][0] + 1:]
    import contextlib
    import io

    from keras_explr import cli

    out = io.StringIO()  # in process: the command's own entry point, without a second TensorFlow import
    with contextlib.redirect_stdout(out):
        assert cli.main(argv[1:]) == 0
    got = [ln.rstrip() for ln in out.getvalue().splitlines()]
    assert got == [ln.rstrip() for ln in expected], f"{page}:{line}: the output shown is not the output"


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch):
    import doctest

    import keras

    from tests.conftest import precision

    monkeypatch.chdir(tmp_path)  # files a page writes land here
    namespace = {"__name__": "__docs__"}
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with precision(keras.config.floatx()):  # restores floatx and the dtype policy a page may set
        for kind, code, line in code_blocks(page):
            if kind == "python":
                exec(compile(code, f"{page}:{line}", "exec"), namespace)
            elif kind == "pycon":
                test = parser.get_doctest(code, namespace, f"{page}:{line}", page, line)
                result = runner.run(test, clear_globs=False)
                assert result.failed == 0, f"{page}:{line}: a ```pycon example's output differs (above)"
            else:
                _run_console(code, page, line)
    keras.backend.clear_session()


def test_every_figure_the_readme_states_appears_in_a_results_page():
    """A number in the README's prose (a measured value: a decimal or a power of ten) is one a results page
    states too, so the README cannot drift from the measurements (versions are not figures)."""
    readme = re.sub(r"```.*?```", "", _read(os.path.join(ROOT, "README.md")), flags=re.S).replace("−", "-")
    pages = glob.glob(os.path.join(DOCS, "results", "*.md"))
    pages += glob.glob(os.path.join(ROOT, "benchmarks", "results", "**", "*.md"), recursive=True)
    results = "".join(_read(p) for p in pages).replace("−", "-")
    version = r"(?<!Keras )(?<!TensorFlow )(?<!JAX )(?<!PyTorch )(?<!Python )"
    figures = set(re.findall(version + r"(?<![\w.])-?\d+\.\d+(?:e-?\d+)?(?![\w.])|(?<![\w.])\d+e-\d+", readme))
    assert len(figures) > 30  # the check reads the README's numbers, not an empty set
    missing = sorted(f for f in figures if f not in results)
    assert not missing, f"README figures found in no results page: {missing}"


def test_install_lines_are_checked_or_marked():
    """Each `pip install` in the README and the docs is one CI runs (from the clone, the wheel or the sdist,
    see ci/docs.sh and .ci/run) or is marked as the route once the project is published."""
    ci = _read(os.path.join(ROOT, "ci", "docs.sh")) + _read(os.path.join(ROOT, ".ci", "run"))
    assert "venv-$kind/bin/python\" -m pip install" in ci and "for kind in whl tar.gz" in ci
    for path in [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(DOCS, "*.md"))]:
        lines = _read(path).splitlines()
        for i, line in enumerate(lines):
            if "git+https://" in line and "pip install" in line:
                context = " ".join(lines[max(0, i - 2):i + 1])
                assert "once the repository is published" in context, f"{path}: unmarked install line {line!r}"


def test_the_notebook_ships_with_its_outputs():
    """examples/colab.ipynb reads on a code host as a run: every code cell was executed in order and kept its
    output, the twin check printed a difference within its tolerance, and the plot is there."""
    import json

    with open(os.path.join(ROOT, "examples", "colab.ipynb"), encoding="utf-8") as f:
        cells = [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert all(c["outputs"] for c in cells)
    text = "".join("".join(o.get("text", "")) for c in cells for o in c["outputs"])
    worst = float(re.search(r"max relative output difference over \d+ steps: (\S+) ", text).group(1))
    assert worst <= 1e-9
    assert any("image/png" in o.get("data", {}) for c in cells for o in c["outputs"])
    assert "/work/" not in text and "/tmp/" not in text  # nothing of the machine that ran it


# Pages allowed more than one H1 (none: the study page holds its reports as sections).
_SEVERAL_H1 = set()


def test_every_page_has_one_title_and_no_raw_formula_text(site):
    """Statically, on every page of the built site: one H1, and outside math and code no text that a formula
    left behind (a `{t+1}` or `_{` that attr_list or emphasis did not eat, or an unprocessed `\\(` / `$$`).
    The browser check (ci/browser_check.py) then asserts in Chromium that every formula renders visibly."""
    import html as html_lib

    problems = []
    for path in sorted(glob.glob(os.path.join(site, "**", "index.html"), recursive=True)):
        page = os.path.relpath(os.path.dirname(path), site).replace(os.sep, "/")
        text = _read(path)
        article = text[text.find("<article"):text.find("</article>")]
        h1 = len(re.findall(r"<h1\b", article))
        if h1 != 1 and page not in _SEVERAL_H1:
            problems.append(f"{page}: {h1} H1")
        prose = re.sub(r'<(span|div) class="arithmatex">.*?</\1>|<code>.*?</code>|<pre.*?</pre>', "", article,
                       flags=re.S)
        prose = html_lib.unescape(re.sub(r"<[^>]+>", "", prose))
        raw = [r for r in ("{t+1}", "_{", "\\(", "\\[", "$$") if r in prose]
        if raw:
            problems.append(f"{page}: raw {raw}")
    assert not problems, problems
    # MathJax is served by the site itself; no page loads a script from elsewhere.
    assert os.path.getsize(os.path.join(site, "assets", "mathjax", "tex-svg.js")) > 1_000_000
    index = _read(os.path.join(site, "math", "index.html"))
    assert "assets/mathjax/tex-svg.js" in index and not re.search(r'<script[^>]+src="(https?:)?//', index)
