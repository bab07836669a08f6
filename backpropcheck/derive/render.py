"""``derive --format text|markdown|latex``: the steps, the way ``explain`` shows a claim's route."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .result import DeriveResult  # noqa: TC001

if TYPE_CHECKING:
    from rich.console import Console

# ---------------------------------------------------------------------------
# rendering


def render_text(result: DeriveResult, console: Console, steps: bool = True) -> None:
    from rich.markup import escape

    console.print(f"[bold]{escape(result.title or result.path)}[/bold]  ({escape(result.path)})")
    if result.error:
        console.print(f"[red]error:[/red] {escape(result.error)}")
        return
    for c in result.claims:
        colour = "green" if c.ok else "red"
        console.print(f"\n  [bold]{c.name}[/bold] = {escape(c.expr)}   [{colour}]{c.verdict}[/{colour}]")
        if steps:
            for s in c.steps:
                where = "E" if s.through == "E" else f"grad_{s.through}"
                if s.definition:
                    console.print(f"    through {escape(s.definition)}  (given {where})")
                console.print(f"      local Jacobian{' ' + escape(s.jacobian) if s.jacobian else ''}: {escape(s.note)}")
                for label, text in s.details():
                    console.print("      " + escape((label + ":").ljust(11) + " ") + escape(text))
                console.print(f"      textbook:   {escape(s.simplified)}   {c.shape if len(c.steps) == 1 else ''}")
        if not c.ok:
            console.print(f"    [red]a derived claim that is not proved is a bug of derive:[/red] {escape(c.message)}")
    for t, r in result.not_derived.items():
        console.print(f"\n  [yellow]grad_{t}: not derived[/yellow] ({escape(r)})")


def render_markdown(result: DeriveResult) -> str:
    lines = [f"## {result.title or result.path}", ""]
    if result.error:
        return "\n".join(lines + [f"**error:** {result.error}", ""])
    lines += ["| claim | expression | verdict |", "|---|---|---|"]
    for c in result.claims:
        lines.append(f"| `{c.name}` | `{c.expr}` | {c.verdict} |")
    for c in result.claims:
        lines += ["", f"### `{c.name}` {c.shape}", ""]
        for s in c.steps:
            if s.definition:
                lines.append(f"- through `{s.definition}`: {s.jacobian}: {s.note}")
            else:
                lines.append(f"- {s.note}")
            lines += [f"  - {label}: `{text}`" for label, text in s.details()]
            lines.append(f"  - textbook: `{s.simplified}`")
    for t, r in result.not_derived.items():
        lines.append(f"\n- `grad_{t}`: not derived ({r})")
    return "\n".join(lines) + "\n"


def _tex_code(text: str) -> str:
    from ..explain import _tex_text

    return "\\texttt{" + _tex_text(text) + "}"


def _tex(text: str) -> str:
    from ..explain import _tex_text

    return _tex_text(text)


def render_latex(result: DeriveResult) -> str:
    """A standalone article, like ``explain --format latex`` (pdflatex-safe: its text helper)."""
    lines = [r"\documentclass[11pt]{article}", r"\begin{document}",
             f"\\section*{{{_tex(result.title or result.path)}}}", _tex_code(result.path), ""]
    if result.error:
        return "\n".join(lines + [f"Error: {_tex(result.error)}", r"\end{document}", ""])
    lines.append("\\begin{itemize}")
    for c in result.claims:
        lines.append(f"  \\item {_tex_code(c.name)} $=$ {_tex_code(c.expr)} ({_tex(c.verdict)})")
        if c.steps:
            lines.append("  \\begin{itemize}")
            for s in c.steps:
                lead = f"through {_tex_code(s.definition)}, {_tex(s.jacobian)}: " if s.definition else ""
                lines.append(f"    \\item {lead}{_tex(s.note)}")
                lines += [f"    \\item {_tex(label)}: {_tex_code(text)}" for label, text in s.details()]
            lines.append("  \\end{itemize}")
    for t, r in result.not_derived.items():
        lines.append(f"  \\item {_tex_code('grad_' + t)}: not derived ({_tex(r)})")
    lines += ["\\end{itemize}", r"\end{document}"]
    return "\n".join(lines) + "\n"

