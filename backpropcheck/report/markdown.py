"""``--format markdown``: a summary table and a table per file, for a CI job summary or a PR comment.

GitHub-flavoured Markdown: files that pass fold into ``<details>`` so a comment
stays short; files that do not pass show every claim with its counterexample.
Text from a file is escaped (``|``, HTML) or put in code spans, so a title can
never break the table or inject markup.
"""

from __future__ import annotations

import html
import re

from .. import __version__
from ..results import ClaimResult, FileResult
from . import Summary, verdict_label
from .failure import counterexample_fragments, depends_fragment

STATUS = {"passed": "✅ passed", "failed": "❌ failed", "error": "⚠️ error"}


def _plain(value: str) -> str:
    """Text for a table cell: HTML escaped, pipes escaped, on one line."""
    return html.escape(value, quote=False).replace("|", "\\|").replace("\n", "<br>")


def _code(value: str, in_table: bool = True) -> str:
    """A code span that holds any text: a fence longer than the longest run of backticks inside."""
    value = value.replace("\n", " ")
    longest = max((len(m) for m in re.findall("`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") or not value.strip() else ""
    span = f"{fence}{pad}{value}{pad}{fence}"
    return span.replace("|", "\\|") if in_table else span


def _mark(c: ClaimResult) -> str:
    if c.ok:
        return "✅" if c.verdict in ("proved", "verified") else "✅ expected"
    return "⚠️" if c.verdict == "error" else "❌"


def _detail(c: ClaimResult) -> str:
    if c.ok and c.verdict == "proved":
        return ""
    parts = [_plain(c.message)]
    if not c.ok:
        if c.diagnosis:
            parts.append(f"**likely:** {_plain(c.diagnosis)}")
        for f in counterexample_fragments(c.counterexample):
            parts.append(f"{f.label}: {_code(f.text)}" if f.code else _plain(f.line()))
    parts += [_plain(f.line()) for f in depends_fragment(c)]
    return "<br>".join(parts)


def _file_table(r: FileResult) -> list[str]:
    if r.status == "error" and not r.claims:
        return [f"**error:** {_plain(r.error or 'invalid file')}", ""]
    lines = []
    if r.error:
        lines += [f"**note:** {_plain(r.error)}", ""]
    lines += ["| | claim | verdict | expression | detail |", "|---|---|---|---|---|"]
    for c in r.claims:
        lines.append(f"| {_mark(c)} | {_code(c.name)} | {_plain(verdict_label(c))} | {_code(c.expr)} | {_detail(c)} |")
    return lines + [""]


def render(results: list[FileResult], seed: int, quiet: bool = False) -> str:
    s = Summary.of(results)
    bad = sum(1 for r in results if r.status != "passed")
    if s.ok == s.claims and not s.errors and not bad:
        head = "✅ all claims hold"
    elif s.failed:
        head = "❌ some claims do not hold"
    else:  # every claim checked holds: what failed is a file or an expression that could not be checked
        head = "❌ some files could not be checked"
    lines = [
        f"## backpropcheck: {head}", "",
        "| files | claims | ok | failed | errors | seed |", "|---:|---:|---:|---:|---:|---:|",
        f"| {s.files} | {s.claims} | {s.ok} | {s.failed} | {s.errors} | {seed} |", "",
    ]
    for r in results:
        if r.status == "passed" and quiet:
            continue
        title = _code(r.path, in_table=False) + (f" — {_plain(r.title)}" if r.title else "")
        if r.status == "passed":
            n = len(r.claims)
            lines += [f"<details><summary>{STATUS[r.status]}: <code>{html.escape(r.path)}</code> "
                      f"({n} claim{'s' if n != 1 else ''})</summary>", ""]
            lines += _file_table(r)
            lines += ["</details>", ""]
        else:
            lines += [f"### {STATUS[r.status]}: {title}", ""]
            lines += _file_table(r)
    lines.append(f"<sub>backpropcheck {__version__}</sub>")
    return "\n".join(lines) + "\n"
