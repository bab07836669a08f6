"""The format registry: ``--format NAME`` (the CLI), ``Report.render(NAME)`` (the API) and the pytest
plugin's ``--backpropcheck-report NAME:FILE`` find their reporter here, by name.

A reporter renders the results as text (``render``); ``text`` also draws on a rich console (``draw``),
where a terminal gets tables and colours. Each reporter's module is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from ..results import FileResult


@dataclass(frozen=True)
class Reporter:
    name: str
    render: Callable[..., str]  # (results, seed, *, quiet, verbose) -> the report
    draw: Callable[..., None] | None = None  # (results, console, *, verbose, quiet): on a rich console
    suffix: str = ".txt"
    preload: Callable[[], None] = lambda: None  # imports what ``render``/``draw`` import on first use


def _text(results: list[FileResult], seed: int, *, quiet: bool = False, verbose: bool = False) -> str:
    """The text report as plain lines (what ``check`` prints when piped)."""
    import io

    from rich.console import Console

    from .text import render

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, no_color=True, width=10_000, soft_wrap=True,
                      emoji=False)
    render(results, console, verbose=verbose, quiet=quiet)
    return buffer.getvalue()


def _draw_text(results: list[FileResult], console: Console, *, verbose: bool = False, quiet: bool = False) -> None:
    from .text import render

    render(results, console, verbose=verbose, quiet=quiet)


def _json(results: list[FileResult], seed: int, *, quiet: bool = False, verbose: bool = False) -> str:
    from .json import render

    return render(results, seed)  # every claim, always: the JSON report is the complete record


def _junit(results: list[FileResult], seed: int, *, quiet: bool = False, verbose: bool = False) -> str:
    from .junit import render

    return render(results, seed)


def _markdown(results: list[FileResult], seed: int, *, quiet: bool = False, verbose: bool = False) -> str:
    from .markdown import render

    return render(results, seed, quiet=quiet)


# The CLI calls a reporter's ``preload`` while its workers check the files, on the core they leave idle,
# instead of after them (rich alone takes ~25 ms to import).
def _load_text() -> None:
    from rich.console import Console  # noqa: F401

    from . import text  # noqa: F401


def _load_json() -> None:
    from . import json  # noqa: F401


def _load_junit() -> None:
    from . import junit  # noqa: F401


def _load_markdown() -> None:
    from . import markdown  # noqa: F401


FORMATS: dict[str, Reporter] = {
    r.name: r for r in (
        Reporter("text", _text, _draw_text, preload=_load_text),
        Reporter("json", _json, suffix=".json", preload=_load_json),
        Reporter("junit", _junit, suffix=".xml", preload=_load_junit),
        Reporter("markdown", _markdown, suffix=".md", preload=_load_markdown),
    )
}


def render(name: str, results: list[FileResult], seed: int, *, quiet: bool = False, verbose: bool = False) -> str:
    """The report in format ``name`` (a key of :data:`FORMATS`; KeyError names the formats)."""
    if name not in FORMATS:
        raise KeyError(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
    return FORMATS[name].render(results, seed, quiet=quiet, verbose=verbose)
