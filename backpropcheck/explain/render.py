"""The three renderers of an :class:`~.document.Explanation`: a terminal, GitHub markdown, LaTeX."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .document import Block, Explanation, Grid, Math, Segment
from .tex import ascii_tex, tex_text

if TYPE_CHECKING:
    from rich.console import Console


def _plain(parts: list[Segment], tex: bool = False, md: bool = False) -> str:
    out = []
    for p in parts:
        if isinstance(p, Math) and p.code and (md or tex):
            out.append(f"`{p.text}`" if md else p.tex)  # \texttt is text mode: outside $…$
        elif isinstance(p, Math):
            out.append(f"${p.tex}$" if (tex or md) else p.text)
        else:
            out.append(tex_text(p) if tex else p)
    return "".join(out)


def render_text(e: Explanation, console: Console, header: bool = True) -> None:
    """Rich output for a terminal (plain when piped)."""
    from rich.markup import escape

    if header:
        console.print(f"[bold]{escape(e.title)}[/]  [dim]{escape(e.path)}[/]")
    for b in e.blocks:
        if b.kind == "heading":
            style = "bold cyan" if b.level == 2 else "bold"
            console.print()
            console.print(f"[{style}]{escape(_plain(b.parts))}[/]")
        elif b.kind == "para":
            console.print(escape(_plain(b.parts)))
        elif b.kind == "math":
            console.print("    " + escape(_formula(b).text), style="green", highlight=False)
        elif b.kind == "grid" and b.grid is not None:
            g = b.grid
            console.print(escape(g.caption), style="dim")
            console.print(_text_grid(g, escape), highlight=False, soft_wrap=True)


def _text_grid(g: Grid, escape: Callable[[str], str]) -> str:
    """Three aligned blocks, true │ claimed (mismatches ✗ in red) │ claimed ÷ true."""
    width = max(len(x) for rows in (g.true, g.claimed, g.ratio) for row in rows for x in row) + 1
    groups = [("true", g.true), ("claimed", g.claimed)] + ([("claimed ÷ true", g.ratio)] if g.ratio else [])
    block = [len(rows[0]) * (width + 1) + 1 if rows and rows[0] else 8 for _, rows in groups]
    lines = [" │ ".join(f"{title:<{w}}" for (title, _), w in zip(groups, block))]
    for n in range(len(g.true)):
        parts = []
        for (title, rows), w in zip(groups, block):
            cells = []
            for j, x in enumerate(rows[n]):
                cell = f"{x:>{width}}"
                if title == "claimed" and g.bad[n][j]:
                    cells.append(f"[bold red]{escape(cell)}✗[/]")
                else:
                    cells.append(escape(cell) + " ")
            parts.append("".join(cells).ljust(w) if title != "claimed" else "".join(cells) + " " * max(
                0, w - len(rows[n]) * (width + 1)))
        lines.append(" │ ".join(parts))
    return "\n".join(lines)


def render_markdown(e: Explanation) -> str:
    """GitHub-flavoured markdown: ``$…$`` inline and ``$$…$$`` display math."""
    lines = [f"# {e.title}", "", f"`{e.path}`", ""]
    for b in e.blocks:
        if b.kind == "heading":
            lines += ["#" * b.level + " " + _plain(b.parts, md=True), ""]
        elif b.kind == "para":
            lines += [_plain(b.parts, md=True), ""]
        elif b.kind == "math":
            lines += ["$$", _formula(b).tex, "$$", ""]
        elif b.kind == "grid" and b.grid is not None:
            g = b.grid
            lines += [f"*{g.caption}*", ""]
            lines += ["$$", _tex_grid(g), "$$", ""]
    return "\n".join(lines).rstrip() + "\n"


def _tex_grid(g: Grid) -> str:
    def matrix(rows: list[list[str]], bad: list[list[bool]] | None) -> str:
        body = []
        for k, row in enumerate(rows):
            cells = []
            for j, x in enumerate(row):
                cells.append(rf"\boxed{{{x}}}" if bad is not None and bad[k][j] else x)
            body.append(" & ".join(cells))
        return r"\begin{bmatrix}" + r" \\ ".join(body) + r"\end{bmatrix}"

    out = r"\text{true} = " + matrix(g.true, None) + r" \qquad \text{claimed} = " + matrix(g.claimed, g.bad)
    if g.ratio:
        ratio = [[x if x != "—" else "-" for x in row] for row in g.ratio]
        out += r" \qquad \frac{\text{claimed}}{\text{true}} = " + matrix(ratio, None)
    return out


def render_latex(e: Explanation) -> str:
    """A standalone article (amsmath only) that compiles with pdflatex, lualatex or tectonic."""
    lines = [r"\documentclass[11pt]{article}", r"\usepackage{amsmath}",
             r"\allowdisplaybreaks", r"\begin{document}",
             r"\section*{" + tex_text(e.title) + "}", r"\texttt{" + tex_text(e.path) + "}", ""]
    for b in e.blocks:
        if b.kind == "heading":
            cmd = "subsection*" if b.level == 2 else "subsubsection*"
            lines += [f"\\{cmd}{{" + ascii_tex(_plain(b.parts, tex=True)) + "}", ""]
        elif b.kind == "para":
            lines += [ascii_tex(_plain(b.parts, tex=True)), ""]
        elif b.kind == "math":
            lines += [r"\[", ascii_tex(_formula(b).tex), r"\]", ""]
        elif b.kind == "grid" and b.grid is not None:
            lines += [r"\noindent\emph{" + tex_text(b.grid.caption) + "}", r"\[", _tex_grid(b.grid), r"\]", ""]
    lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"


def _formula(b: Block) -> Math:
    """The formula of a ``math`` block."""
    m = b.parts[0]
    if not isinstance(m, Math):
        raise TypeError(f"a math block holds a formula, not {m!r}")
    return m
