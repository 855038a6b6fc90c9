"""ci/browser_check.py tells a formula that draws from one that does not (headless Chromium, when installed).

CI installs Debian's chromium before the tests (.ci/run), so there this runs; a machine without a Chromium skips it.
"""

import importlib.util
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ci"))
import browser_check  # noqa: E402  (ci/browser_check.py)

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="mathjax-config.js"></script><script src="tex-svg.js"></script></head><body><article>
<p>Inline <span class="arithmatex">\\(\\tilde\\eta_t = \\eta\\,\\alpha^{-2t-1}\\)</span> and
<span class="arithmatex">\\(q_{t+1} = 1 + \\gamma - \\eta\\lambda - \\gamma/q_t\\)</span>.</p>
<div class="arithmatex">\\[\\kappa_I = \\frac{\\gamma}{\\alpha_I}\\left[\\frac{1}{\\alpha_I} - 1\\right]\\]</div>
<p><a href="#top" id="top">top</a></p>%s
</article></body></html>"""
# Glyphs that point at nothing: typeset, laid out, and drawn blank.
BLANK = ('<script>document.addEventListener("DOMContentLoaded", () => MathJax.startup.promise.then(() => '
         'document.querySelectorAll("mjx-container svg use").forEach(u => u.setAttribute("href", "#none"))));'
         '</script>')


@pytest.fixture
def site(tmp_path):
    if browser_check.shutil.which("chromium") is None and browser_check.shutil.which("google-chrome") is None:
        pytest.skip("no Chromium on this machine (CI installs Debian's chromium)")
    spec = importlib.util.find_spec("mathjax")
    if spec is None:
        pytest.skip("the docs extra (MathJax) is not installed")
    shutil.copy(os.path.join(os.path.dirname(spec.origin), "static", "mathjax", "es5", "tex-svg.js"), tmp_path)
    shutil.copy(os.path.join(ROOT, "docs", "javascripts", "mathjax-config.js"), tmp_path)
    (tmp_path / "ok.html").write_text(PAGE % "", encoding="utf-8")
    (tmp_path / "blank.html").write_text(PAGE % BLANK, encoding="utf-8")
    return tmp_path


def test_visible_formulas_pass_and_blank_ones_fail(site):
    ok = browser_check.browse(str(site), "ok.html", str(site / "ok.png"))
    assert isinstance(ok, dict), ok
    assert ok["formulas"] == ok["rendered"] == 3 and not ok["blank"] and not ok["failed"] and not ok["raw"]
    assert (site / "ok.png").stat().st_size > 5000
    blank = browser_check.browse(str(site), "blank.html", None)
    assert blank["formulas"] == 3 and blank["rendered"] == 0 and len(blank["blank"]) == 3
