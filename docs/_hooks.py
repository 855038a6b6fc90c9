"""MkDocs hook: serve the committed benchmark plots (benchmarks/results/**/*.png) under results/, and MathJax.

The plots stay where the benchmarks write them; the site finds them as results/<name>.png, so the results pages
(and the study report included from benchmarks/results) link to them without a copy in docs/.

MathJax 3 (the `tex-svg` component: TeX input, SVG output with its fonts inside, one file) is served as
assets/mathjax/tex-svg.js from the `mathjax` Python package (PyPI: django-static-mathjax, in the `docs` extra),
so the math renders offline and no page loads a script from another site.
"""

import importlib.util
import os

from mkdocs.structure.files import File

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results")


MATHJAX_FILES = ("es5/tex-svg.js", "LICENSE")


def _mathjax_dir():
    spec = importlib.util.find_spec("mathjax")
    folder = os.path.join(os.path.dirname(spec.origin), "static", "mathjax") if spec and spec.origin else None
    if folder is None or not os.path.isfile(os.path.join(folder, MATHJAX_FILES[0])):
        raise RuntimeError("MathJax 3 not found: the docs need the `docs` extra (pip install -e '.[docs]', "
                           "which installs django-static-mathjax, a packaged MathJax 3).")
    return folder


def on_files(files, config):
    folder = _mathjax_dir()
    for name in MATHJAX_FILES:
        files.append(File.generated(config, f"assets/mathjax/{os.path.basename(name)}",
                                    abs_src_path=os.path.join(folder, name)))
    for folder, _, names in os.walk(RESULTS):
        for name in sorted(names):
            if name.endswith(".png"):
                files.append(File.generated(config, f"results/{name}", abs_src_path=os.path.join(folder, name)))
    return files
