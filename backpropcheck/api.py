"""The Python API (SPEC §9): ``import backpropcheck as bpc``.

>>> report = bpc.check("derivations/dense_column.toml", trials=5)      # a file, a folder, a note or TOML text
>>> report.ok, report.summary.claims
(True, 4)
>>> report.claim("grad_W").verdict
'proved'
>>> print(bpc.explain("derivations/dense_column.toml", claim="grad_a"))  # the walk-through, as text

:func:`check` returns a :class:`Report` whose ``files`` are the checker's own
:class:`~backpropcheck.checker.FileResult` and
:class:`~backpropcheck.checker.ClaimResult` objects: every field of the JSON
report (``Report.to_dict()`` *is* ``--format json``'s object). In a notebook a
:class:`Report` and an :class:`Explanation` display as Markdown/HTML.

``derive`` (SPEC §7) is built separately: when it lands, its API function goes
here beside :func:`check` and :func:`explain`, and into ``__all__`` and
``backpropcheck.__getattr__``. (A submodule named like an API function
shadows it on the package: see the note at the end of ``explain.py``.)
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checker import TEXT_NAME, ClaimResult, Counterexample, FileResult, Options
from .errors import DerivationError
from .limits import DEFAULT_LIMITS, Limits
from .report import Summary, exit_status

__all__ = ["check", "explain", "Report", "Explanation", "FileResult", "ClaimResult", "Counterexample",
           "Options", "Limits", "DerivationError"]

Source = str | os.PathLike[str]


# -- check -------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """The results of :func:`check`: one :class:`FileResult` per file (or note block), in order."""

    files: list[FileResult]
    seed: int = 0

    @property
    def claims(self) -> list[ClaimResult]:
        """Every claim of every file, in order."""
        return [c for f in self.files for c in f.claims]

    @property
    def summary(self) -> Summary:
        """``files``, ``claims``, ``ok``, ``failed``, ``errors``: the JSON report's ``summary``."""
        return Summary.of(self.files)

    @property
    def exit_status(self) -> int:
        """What ``backpropcheck check`` would exit with: 0 all hold (or match [expect]), 1 not, 2 invalid."""
        return exit_status(self.files)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def claim(self, name: str, file: str | None = None) -> ClaimResult:
        """The claim ``name`` (of ``file``, when several files make it)."""
        found = [c for f in self.files if file is None or f.path == file for c in f.claims if c.name == name]
        if len(found) != 1:
            where = f" in {file}" if file else ""
            raise KeyError(f"{len(found)} claims named {name!r}{where}" + ("; pass file=" if found else ""))
        return found[0]

    def to_dict(self) -> dict[str, Any]:
        """The ``--format json`` object (SPEC §4), as Python values."""
        from .report.json import to_dict

        return to_dict(self.files, self.seed)

    def render(self, fmt: str = "text", *, quiet: bool = False, verbose: bool = False) -> str:
        """Exactly ``backpropcheck check --format FMT``'s output (the text report as printed to a pipe);
        ``fmt`` is one of :data:`~backpropcheck.report.formats.FORMATS`."""
        from .report.formats import render

        return render(fmt, self.files, self.seed, quiet=quiet, verbose=verbose)

    def to_json(self) -> str:
        """Exactly ``backpropcheck check --format json``'s output."""
        return self.render("json")

    def to_markdown(self) -> str:
        """Exactly ``backpropcheck check --format markdown``'s output (a CI job summary)."""
        return self.render("markdown")

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for f in self.files:
            if f.status == "error" and not f.claims:
                rows.append((f.path, "", "error", "", f.error or "invalid file"))
            for c in f.claims:
                mark = ("✅ " if c.ok else "⚠️ " if c.verdict == "error" else "❌ ") + c.verdict
                if c.expected != "holds":
                    mark += f" (expected {c.expected})"
                rows.append((f.path, c.name, mark, c.expr, c.message))
        return rows

    def _repr_markdown_(self) -> str:
        from .report.markdown import _code, _plain

        s = self.summary
        lines = [f"**backpropcheck**: {s.files} file(s), {s.claims} claim(s): {s.ok} ok, {s.failed} failed, "
                 f"{s.errors} error(s)", "", "| file | claim | verdict | expression | message |",
                 "|---|---|---|---|---|"]
        for path, name, verdict, expr, message in self._rows():
            lines.append(f"| {_code(path)} | {_code(name) if name else ''} | {_plain(verdict)} | "
                         f"{_code(expr) if expr else ''} | {_plain(message)} |")
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        s = self.summary
        head = (f"<p><b>backpropcheck</b>: {s.files} file(s), {s.claims} claim(s): {s.ok} ok, {s.failed} failed, "
                f"{s.errors} error(s)</p>")
        cells = "".join(
            "<tr>" + "".join(f"<td>{'<code>' if k in (0, 1, 3) and v else ''}{html.escape(v)}"
                             f"{'</code>' if k in (0, 1, 3) and v else ''}</td>" for k, v in enumerate(row)) + "</tr>"
            for row in self._rows())
        return (head + "<table><thead><tr><th>file</th><th>claim</th><th>verdict</th><th>expression</th>"
                f"<th>message</th></tr></thead><tbody>{cells}</tbody></table>")

    def __repr__(self) -> str:
        s = self.summary
        return (f"<backpropcheck.Report: {s.files} file(s), {s.claims} claim(s): {s.ok} ok, {s.failed} failed, "
                f"{s.errors} error(s)>")


def check(source: Source | Iterable[Source], *, seed: int | None = None, trials: int | None = None,
          shapes: int | None = None, max_dim: int | None = None, rtol: float | None = None,
          atol: float | None = None, dims: Mapping[str, int] | str | None = None, symbolic: bool = True,
          timeout: float = 10.0, limits: Limits | None = None, name: str | None = None) -> Report:
    """Check derivations, as ``backpropcheck check`` does, and return a :class:`Report`.

    ``source`` is a file (``*.toml``, a note ``*.md``, a block ``notes.md:LINE``), a folder
    (recursively: ``*.toml`` and notes holding ``toml backpropcheck`` blocks), a list of these,
    or the text of a derivation (TOML, or Markdown holding blocks), named ``name`` in reports.
    The options are ``check``'s (``None``: the file's ``[check]`` value, else the default);
    ``dims`` fixes dims for the numeric trials, like ``--dims`` (``{"n": 4096}`` or ``"n=4096"``).
    An invalid file is a result (``status == "error"``), never an exception, and so is a folder that
    cannot be read or holds nothing to check (as ``check`` reports them); a path that does
    not exist raises :class:`FileNotFoundError`; an option out of the range of ``check``'s flag
    (``trials=0``, ``rtol=0.1``) ValueError (:class:`~backpropcheck.checker.Options` checks them)."""
    options = Options(seed=seed, trials=trials, shapes=shapes, max_dim=max_dim, rtol=rtol, atol=atol,
                      dims=_dims(dims), symbolic=symbolic, timeout=timeout, limits=limits or DEFAULT_LIMITS)
    results = [_check_one(item, options) for item in _expand(source, name, options.limits)]
    return Report(results, seed if seed is not None else 0)


def _dims(dims: Mapping[str, int] | str | None) -> tuple[tuple[str, int], ...]:
    """``dims`` as ``--dims`` takes it (:func:`~backpropcheck.options.parse_dims`), else ValueError."""
    from .options import parse_dims

    try:
        return parse_dims(dims)
    except ValueError as exc:
        raise ValueError(f"dims: {exc}") from None


def _is_text(source: Source) -> bool:
    """TOML or Markdown text rather than a path: a newline, a leading ``[`` or ``#``, or nothing but
    whitespace (an empty derivation is an invalid one, as an empty file is; ``""`` is no path)."""
    return isinstance(source, str) and ("\n" in source or source.lstrip().startswith(("[", "#"))
                                         or not source.strip())


def _expand(source: Source | Iterable[Source], name: str | None, limits: Limits) -> list[Any]:
    """Paths (as ``check`` finds them) and texts, each to be checked on its own."""
    from .files import walk_errors, walk_paths
    from .notes import blocks, split_ref

    if isinstance(source, (str, os.PathLike)):
        sources: list[Source] = [source]
    else:
        sources = list(source)
    out: list[Any] = []
    for item in sources:
        if _is_text(item):
            text = str(item)
            label = name or TEXT_NAME
            found = blocks(text)
            if found:  # Markdown holding blocks: each block, named like a note's
                out.extend(_Text(text, label, b) for b in found)
            else:
                out.append(_Text(text, label, None))
            continue
        path = os.fspath(item)
        if not Path(path).exists() and split_ref(path) is None:
            raise FileNotFoundError(f"no file or folder {path!r} (to check TOML text, pass the text itself)")
        files, unreadable, empty = walk_paths([path], limits)
        out.extend(files)
        out.extend(_Invalid(f, why) for f, why in walk_errors(unreadable, empty))  # as check reports them
    return out


@dataclass
class _Invalid:
    """A path the walk reports as an error of its own: a folder that cannot be read, or holds nothing to check."""

    path: str
    error: str


@dataclass
class _Text:
    text: str
    name: str
    block: Any = None

    def load(self, limits: Limits):
        from .loader import loads
        from .notes import load_block

        if self.block is None:
            return loads(self.text, self.name, limits)
        return load_block(self.name, self.block, limits)  # as check loads a note's block


def _check_one(item: str | _Text | _Invalid, options: Options) -> FileResult:
    from .checker import check_path

    if isinstance(item, str):
        return check_path(item, options)
    if isinstance(item, _Invalid):
        return FileResult(item.path, "", "error", item.error)
    return _check_text(item, options)


def _check_text(item: _Text, options: Options) -> FileResult:
    """As :func:`~backpropcheck.checker.check_path`, for a derivation given as text."""
    import numpy as np

    from .checker import check_derivation

    label = f"{item.name}:{item.block.line}" if item.block is not None else item.name
    started = time.perf_counter()
    try:
        d = item.load(options.limits)
    except DerivationError as exc:
        return FileResult(label, "", "error", str(exc), seconds=time.perf_counter() - started)
    try:
        with np.errstate(all="ignore"):
            result = check_derivation(d, options)
    except DerivationError as exc:
        result = FileResult(label, d.title, "error", str(exc.located(file=label)))
    except Exception as exc:  # noqa: BLE001 - as check_path: one derivation's bug is its own error
        result = FileResult(label, d.title, "error",
                            f"{label}: internal error ({type(exc).__name__}: {exc}); please report this file")
    result.seconds = time.perf_counter() - started
    return result


# -- explain -----------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    """What ``backpropcheck explain`` prints, for one file: ``text``, ``markdown``, ``latex`` and the verdicts.

    ``str(e)`` is the text; a notebook displays the Markdown (with math)."""

    title: str
    path: str
    dims: dict[str, int]
    results: list[ClaimResult]
    error: str | None = None
    _blocks: Any = field(default=None, repr=False)

    @property
    def text(self) -> str:
        import io

        from rich.console import Console

        from .explain import render_text

        buffer = io.StringIO()
        console = Console(file=buffer, width=100, color_system=None, soft_wrap=True, highlight=False,
                          emoji=False)
        render_text(self._blocks, console)
        return buffer.getvalue()

    @property
    def markdown(self) -> str:
        from .explain import render_markdown

        return render_markdown(self._blocks)

    @property
    def latex(self) -> str:
        from .explain import render_latex

        return render_latex(self._blocks)

    @property
    def ok(self) -> bool:
        """Every explained claim holds (or matches ``[expect]``): ``explain`` exits 0."""
        return self.error is None and all(r.ok for r in self.results)

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        return self.markdown


def explain(source: Source, claim: str | None = None, *, dims: Mapping[str, int] | str | None = None,
            trials: int = 5, symbolic: bool = True, timeout: float = 10.0, limits: Limits | None = None,
            name: str | None = None) -> Explanation:
    """The derivation ``explain`` prints for ``source`` (a file, ``notes.md:LINE`` or TOML text).

    ``claim`` picks one claim (default: all); ``dims`` the small dims of the walk-through
    (each at most 6); ``limits`` the bounds, as ``explain``'s ``--max-*`` flags. An invalid file
    raises :class:`DerivationError`, a folder ``IsADirectoryError``, an unknown claim ``KeyError``,
    ``trials`` (1 … 1000) or ``timeout`` (≥ 0) out of the range of ``explain``'s flags ValueError.
    """
    from .explain import explain_derivation
    from .loader import load
    from .options import EXPLAIN_MAX_DIM, EXPLAIN_MAX_TRIALS, in_range

    sizes = dict(_dims(dims))
    too_big = [f"{k}={v}" for k, v in sizes.items() if v > EXPLAIN_MAX_DIM]
    if too_big:
        raise ValueError(f"{', '.join(too_big)}: explain works entry by entry, use dims up to {EXPLAIN_MAX_DIM}")
    options = Options(trials=in_range("trials", trials, high=EXPLAIN_MAX_TRIALS), shapes=1, symbolic=symbolic,
                      timeout=timeout, limits=limits or DEFAULT_LIMITS)
    if _is_text(source):
        items = _expand(source, name, options.limits)
        if len(items) != 1:
            raise ValueError(f"the text holds {len(items)} derivations; explain takes one")
        d = items[0].load(options.limits)
    else:
        path = os.fspath(source)
        if not Path(path).exists():
            from .notes import split_ref

            if split_ref(path) is None:
                raise FileNotFoundError(f"no file {path!r}")
        if Path(path).is_dir():  # as explain's FILE argument: not an invalid file, a wrong argument
            raise IsADirectoryError(f"{path!r} is a folder; explain takes one file")
        d = load(path, options.limits)
    blocks = explain_derivation(d, claim, sizes, options)
    return Explanation(blocks.title, blocks.path, dict(blocks.sizes), list(blocks.results), blocks.error, blocks)

