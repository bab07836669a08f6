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
    modules: tuple[str, ...] = ()  # what ``render``/``draw`` import on first use

    def preload(self) -> None:
        """Import the modules the report needs now: the CLI does it while its workers check the files,
        on the core they leave idle, instead of after them (rich alone takes ~25 ms to import)."""
        import importlib

        for module in self.modules:
            importlib.import_module(module, __package__)


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


FORMATS: dict[str, Reporter] = {
    r.name: r for r in (
        Reporter("text", _text, _draw_text, modules=("rich.console", ".text")),
        Reporter("json", _json, suffix=".json", modules=(".json",)),
        Reporter("junit", _junit, suffix=".xml", modules=(".junit",)),
        Reporter("markdown", _markdown, suffix=".md", modules=(".markdown",)),
    )
}


def render(name: str, results: list[FileResult], seed: int, *, quiet: bool = False, verbose: bool = False) -> str:
    """The report in format ``name`` (a key of :data:`FORMATS`; KeyError names the formats)."""
    if name not in FORMATS:
        raise KeyError(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
    return FORMATS[name].render(results, seed, quiet=quiet, verbose=verbose)
