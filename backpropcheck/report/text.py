"""The human report: a rich table per file on a terminal, plain lines when piped.

Colours follow rich's rules (off when piped, off with ``NO_COLOR``).
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..results import ClaimResult, FileResult
from . import Summary, verdict_label
from .failure import counterexample_fragments, depends_fragment

TABLE_MIN_WIDTH = 72  # columns below which a terminal gets the plain lines a pipe gets, not a table
STYLE = {"proved": "bold green", "verified": "green", "refuted": "bold red", "shape-error": "bold red",
         "error": "bold magenta"}


def _mark(c: ClaimResult) -> str:
    if c.ok:
        return "[green]✓[/]" if c.verdict in ("proved", "verified") else "[green]✓ (expected)[/]"
    return "[red]✗[/]"


def _details(c: ClaimResult, verbose: bool) -> list[str]:
    lines = []
    if not c.ok or verbose or c.verdict == "verified":
        lines.append(escape(c.message))
    if verbose and c.symbolic and c.symbolic.get("argument"):
        lines.append(f"scope: {escape(c.symbolic['argument'])}")
    if not c.ok or verbose:  # the counterexample's first line unindented, its details under it
        for i, f in enumerate(counterexample_fragments(c.counterexample, values_sep="   ")):
            lines.append(("  " if i else "") + escape(f.line()))
    lines += [f.line() for f in depends_fragment(c)]
    return lines


def render(results: list[FileResult], console: Console, verbose: bool = False, quiet: bool = False) -> None:
    for r in results:
        if quiet and r.status == "passed":
            continue
        console.print(f"[bold]{escape(r.path)}[/]" + (f" — {escape(r.title)}" if r.title else ""))
        if r.status == "error" and not r.claims:
            console.print(f"  [bold magenta]error[/] {escape(r.error or '')}")
            console.print()  # as after a file's claims: the next file starts after a blank line
            continue
        if r.error:
            console.print(f"  [yellow]note[/] {escape(r.error)}")
        if console.is_terminal and console.width >= TABLE_MIN_WIDTH:  # narrower, a table folds words mid-token
            table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, padding=(0, 1))
            table.add_column("")
            table.add_column("claim")
            table.add_column("verdict")
            table.add_column("expression / detail", overflow="fold")
            for c in r.claims:
                if quiet and c.ok:
                    continue
                body = escape(c.expr)
                extra = _details(c, verbose)
                if extra:
                    body += "\n" + "\n".join(f"[dim]{x}[/]" if i else x for i, x in enumerate(extra))
                table.add_row(_mark(c), c.name, f"[{STYLE[c.verdict]}]{escape(verdict_label(c))}[/]", body)
            console.print(table)
        else:
            for c in r.claims:
                if quiet and c.ok:
                    continue
                console.print(f"  {_mark(c)} {c.name} [{STYLE[c.verdict]}]{escape(verdict_label(c))}[/]  {escape(c.expr)}")
                for line in _details(c, verbose):
                    console.print(f"      {line}")
        console.print()
    s = Summary.of(results)
    colour = "green" if s.ok == s.claims and not s.errors else "red"
    console.print(
        f"[{colour}]{s.files} file(s), {s.claims} claim(s): {s.ok} ok, {s.failed} failed, {s.errors} error(s)[/]"
    )
