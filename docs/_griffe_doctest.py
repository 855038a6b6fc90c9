"""Griffe extension for the API reference: keeps docstring math and doctests from being read as links.

Docstrings are written for `help()`: a doctest's output such as ``['d1/kernel', 'd1/bias']`` or prose such as
``tables[i][k]`` would be read by Markdown as a reference link ``[text][label]`` (and then reported as a broken
cross-reference). So:

* each run of ``>>>``/``...`` lines and the output lines after it (up to a blank line or a dedent) becomes a
  fenced ``pycon`` block, at the indentation it had;
* in the remaining prose (outside code fences and inline code), ``][`` is escaped as ``]\\[``.
"""

import griffe

FENCE = "```"


def fence_doctests(text):
    lines = text.split("\n")
    out, i, in_fence = [], 0, False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(FENCE):
            in_fence = not in_fence
        if in_fence or stripped.startswith(FENCE):
            out.append(line)
            i += 1
            continue
        if not stripped.startswith(">>>"):
            out.append(_escape_brackets(line))
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        block = []
        while i < len(lines):
            cur = lines[i]
            if not cur.strip() or not cur.startswith(indent):
                break
            block.append(cur)
            i += 1
        out += [indent + FENCE + "pycon", *block, indent + FENCE]
    return "\n".join(out)


def _escape_brackets(line):
    parts = line.split("`")
    parts[::2] = [p.replace("][", "]\\[") for p in parts[::2]]  # even parts are outside inline code
    return "`".join(parts)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
