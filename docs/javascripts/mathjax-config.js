// MathJax 3 (TeX in, SVG out), served from the site itself: docs/_hooks.py copies tex-svg.js from the
// `mathjax` Python package (PyPI: django-static-mathjax, an unmodified MathJax 3 build; the `docs` extra).
// pymdownx.arithmatex (generic mode) wraps each formula in an element of class "arithmatex" holding
// \( ... \) or \[ ... \]; only those are typeset. No cache clearing: Material's snippet calls
// MathJax.startup.output.clearCache(), which with a served MathJax 3 SVG output draws every formula blank.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  svg: {fontCache: "local"},
};
