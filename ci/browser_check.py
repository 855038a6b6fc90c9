"""Open pages of the built docs site in headless Chromium and check what a reader sees.

    python ci/browser_check.py SITE_DIR [--shots DIR] [PAGE ...]

For each page (default: the math page, the guides and results pages with formulas, and four API pages) it asserts that

* every formula rendered *visibly*: each pymdownx.arithmatex element holds a MathJax SVG whose glyphs
  (``<use>``/``<path>``) have a non-empty bounding box, with no MathJax error node;
* the count of rendered formulas equals the count of formulas in the page's source (``\\(``/``\\[`` in the
  Markdown page, or in the docstrings of the module an API page documents);
* no raw ``\\(``, ``\\[``, ``$$``, ``{t+1}`` or ``_{`` is left in the text outside code;
* every image loaded (naturalWidth > 0) and every link into the site points at a file that exists, with the
  anchor present on the target page;

and saves a screenshot of each page under ``--shots`` (CI keeps them as artifacts). Chromium is Debian's
``chromium`` (``apt-get install chromium``, done by .ci/run). The check writes a copy of each page with a
small script appended that waits for MathJax, measures, and writes JSON into the DOM, which
``--dump-dom`` returns.
"""

import argparse
import ast
import concurrent.futures
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = {  # site page -> its source: a Markdown file under docs/, or a Python module (an API page)
    "index.html": "docs/index.md",
    "math/index.html": "docs/math.md",
    "guides/schedules/index.html": "docs/guides/schedules.md",
    "guides/weight-decay/index.html": "docs/guides/weight-decay.md",
    "guides/renormalize/index.html": "docs/guides/renormalize.md",
    "guides/probe/index.html": "docs/guides/probe.md",
    "guides/monitor/index.html": "docs/guides/monitor.md",
    "guides/equilibrium/index.html": "docs/guides/equilibrium.md",
    "results/exactness/index.html": "docs/results/exactness.md",
    "results/summary/index.html": "docs/results/summary.md",
    "results/study/index.html": "docs/results/study.md",
    "guides/tuning/index.html": "docs/guides/tuning.md",
    "api/theory/index.html": "keras_explr/theory.py",
    "api/schedules/index.html": "keras_explr/schedules.py",
    "api/layers/index.html": "keras_explr/layers.py",
    "api/models/index.html": "keras_explr/models.py",
}
SHOTS = ("math/index.html", "guides/schedules/index.html", "results/exactness/index.html", "api/theory/index.html",
         "api/schedules/index.html")  # the pages photographed (each costs a second Chromium start)
RAW = (r"\(", r"\)", r"\[", r"\]", "$$", "{t+1}", "_{")

CHECK_JS = r"""
<script>
(async () => {
  const out = {errors: []};
  const wait = ms => new Promise(r => setTimeout(r, ms));
  for (let i = 0; i < 200 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++) await wait(50);
  // Wait until MathJax is idle: typesetPromise() (a theme's re-typeset, say) chains onto startup.promise.
  if (document.readyState !== "complete") await new Promise(r => window.addEventListener("load", r));
  for (let i = 0, p = null; i < 40 && window.MathJax && MathJax.startup && p !== MathJax.startup.promise; i++) {
    p = MathJax.startup.promise;
    try { await p; } catch (e) { out.errors.push("MathJax: " + e); }
    await wait(500);
  }
  if (!(window.MathJax && MathJax.startup)) out.errors.push("MathJax did not load");
  const spans = [...document.querySelectorAll(".arithmatex")];
  out.formulas = spans.length;
  out.rendered = 0; out.blank = []; out.failed = [];
  for (const s of spans) {
    const svg = s.querySelector("mjx-container svg");
    const src = s.getAttribute("data-src") || s.textContent.slice(0, 80);
    if (!svg) { out.failed.push(src); continue; }
    if (svg.querySelector('[data-mml-node="merror"]')) { out.failed.push(src); continue; }
    const box = svg.getBoundingClientRect();
    const glyphs = [...svg.querySelectorAll("use, path")].filter(g => !g.closest("defs")).filter(g => {
      const b = g.getBoundingClientRect();
      const st = getComputedStyle(g);
      return b.width > 0 && b.height > 0 && st.visibility !== "hidden" && st.display !== "none";
    });
    if (box.width > 0 && box.height > 0 && glyphs.length > 0) out.rendered++; else out.blank.push(src);
  }
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll("pre, code, script, style, mjx-container, .arithmatex, #kx-check").forEach(e => e.remove());
  const text = clone.textContent;
  out.raw = {};
  for (const r of %RAW%) { const n = text.split(r).length - 1; if (n) out.raw[r] = n; }
  const imgs = [...document.querySelectorAll("article img, .md-content img")];
  out.images = imgs.length;
  out.broken_images = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  out.links = [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href"));
  out.ids = [...document.querySelectorAll("[id]")].map(e => e.id);
  const pre = document.createElement("pre"); pre.id = "kx-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
""".replace("%RAW%", json.dumps(RAW))


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("browser_check: no Chromium found (Debian: apt-get install chromium)")


def run_chromium(args, timeout=120):
    with tempfile.TemporaryDirectory() as profile:  # own profile: instances run side by side
        base = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--no-first-run", "--allow-file-access-from-files",
                "--virtual-time-budget=30000", f"--user-data-dir={profile}"]
        return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)


def browse(site, page, shot):
    """Chromium's verdict on one page (the check script's JSON, or an error text), and its screenshot."""
    path = os.path.join(site, page)
    with open(path, encoding="utf-8") as f:
        page_html = f.read()
    probe = path[:-len(".html")] + ".browser-check.html"
    with open(probe, "w", encoding="utf-8") as f:
        f.write(page_html.replace("</body>", CHECK_JS + "</body>"))
    try:
        dom = run_chromium(["--dump-dom", "file://" + probe])
    finally:
        os.remove(probe)
    if shot:
        run_chromium([f"--screenshot={shot}", "--window-size=1440,2400", "file://" + path])
    m = re.search(r'<pre id="kx-check">(.*?)</pre>', dom.stdout, re.S)
    if not m:
        return f"the check did not finish (chromium rc {dom.returncode}: {dom.stderr[-500:]})"
    return json.loads(html.unescape(m.group(1)))


def source_formulas(source):
    """The number of formulas written in the page's source: \\( or \\[ openers (display blocks count once)."""
    with open(os.path.join(ROOT, source), encoding="utf-8") as f:
        text = f.read()
    if source.endswith(".py"):  # the docstrings mkdocstrings renders: the module's and its public objects'
        tree = ast.parse(text)
        docs = [ast.get_docstring(tree) or ""]

        def public(node):
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.ClassDef)) and not child.name.startswith("_"):
                    docs.append(ast.get_docstring(child) or "")
                    if isinstance(child, ast.ClassDef):
                        public(child)

        public(tree)
        text = "\n".join(docs)
    else:  # Markdown: formulas inside code spans and fences are code, not math
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
    return len(re.findall(r"\\\(", text)) + len(re.findall(r"\\\[", text))


def check_links(site, page, links, ids_of):
    broken = []
    here = os.path.dirname(os.path.join(site, page))
    for href in links:
        parsed = urllib.parse.urlparse(href)
        if parsed.scheme or href.startswith("//") or href.startswith("mailto:"):
            continue  # links out of the site are not followed (no network)
        path = urllib.parse.unquote(parsed.path)
        target = os.path.normpath(os.path.join(here, path)) if path else os.path.join(site, page)
        if os.path.isdir(target):
            target = os.path.join(target, "index.html")
        if not os.path.isfile(target):
            broken.append(href)
            continue
        if parsed.fragment and target.endswith(".html"):
            if urllib.parse.unquote(parsed.fragment) not in ids_of(target):
                broken.append(href)
    return broken


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site")
    ap.add_argument("--shots", default=None, help="folder for the screenshots (default SITE/../browser-shots)")
    ap.add_argument("pages", nargs="*", help="pages as PATH=SOURCE (default: the four checked pages)")
    args = ap.parse_intermixed_args(argv)
    site = os.path.abspath(args.site)
    shots = os.path.abspath(args.shots or os.path.join(os.path.dirname(site), "browser-shots"))
    os.makedirs(shots, exist_ok=True)
    pages = dict(p.split("=", 1) for p in args.pages) if args.pages else PAGES
    cache = {}

    def ids_of(path):
        if path not in cache:
            with open(path, encoding="utf-8") as f:
                cache[path] = set(re.findall(r'\bid="([^"]+)"', f.read()))
        return cache[path]

    failures, totals = [], {"pages": 0, "formulas": 0, "rendered": 0, "source": 0, "images": 0, "links": 0}
    start = time.monotonic()

    def shot_of(page):
        name = (page.replace("/index.html", "").replace("/", "-") or "home").replace("index.html", "home")
        return os.path.join(shots, name + ".png") if page in SHOTS or args.pages else None

    # Two Chromiums at a time (CI has 2 cores); results are reported in page order.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = list(pool.map(lambda page: browse(site, page, shot_of(page)), pages))
    for (page, source), r in zip(pages.items(), verdicts):
        if isinstance(r, str):
            failures.append(f"{page}: {r}")
            continue
        shot = shot_of(page)
        expected = source_formulas(source)
        broken_links = check_links(site, page, r["links"], ids_of)
        print(f"{page}: {r['formulas']} formulas in the page, {r['rendered']} rendered visibly, {expected} in "
              f"{source}; {r['images']} images, {len(r['links'])} links" + (f"; screenshot {shot}" if shot else ""))
        for key in ("formulas", "rendered", "images"):
            totals[key] += r[key]
        totals["source"] += expected
        totals["links"] += len(r["links"])
        totals["pages"] += 1
        problems = []
        if r["errors"]:
            problems.append(f"errors {r['errors']}")
        if r["formulas"] != expected:
            problems.append(f"{r['formulas']} formula elements but {expected} formulas in {source}")
        if r["rendered"] != r["formulas"]:
            problems.append(f"{len(r['blank'])} blank {r['blank'][:5]}, {len(r['failed'])} failed {r['failed'][:5]}")
        if r["raw"]:
            problems.append(f"raw text left: {r['raw']}")
        if r["broken_images"]:
            problems.append(f"broken images {r['broken_images']}")
        if broken_links:
            problems.append(f"broken links {broken_links}")
        if shot and (not os.path.isfile(shot) or os.path.getsize(shot) < 5000):
            problems.append("no screenshot")
        failures += [f"{page}: {p}" for p in problems]
    print(f"browser check: {totals['pages']} pages, {totals['source']} formulas in the sources, "
          f"{totals['formulas']} in the pages, {totals['rendered']} rendered visibly, {totals['images']} images, "
          f"{totals['links']} links checked, in {time.monotonic() - start:.1f} s; screenshots in {shots}: "
          + ", ".join(sorted(os.listdir(shots))))
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
