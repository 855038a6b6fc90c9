"""MkDocs hook: serve the committed benchmark plots (benchmarks/results/**/*.png) under results/.

The plots stay where the benchmarks write them; the site finds them as results/<name>.png, so the results pages
(and the study report included from benchmarks/results) link to them without a copy in docs/.
"""

import os

from mkdocs.structure.files import File

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results")


def on_files(files, config):
    for folder, _, names in os.walk(RESULTS):
        for name in sorted(names):
            if name.endswith(".png"):
                files.append(File.generated(config, f"results/{name}", abs_src_path=os.path.join(folder, name)))
    return files
