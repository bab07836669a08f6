"""A pytest plugin: ``pytest --backpropcheck [PATHS]`` checks derivation files as test items, one per claim.

Registered through the ``pytest11`` entry point, so it is loaded by every pytest
run in an environment where backpropcheck is installed; without
``--backpropcheck`` it does nothing, and it imports neither NumPy nor SymPy.

* A ``*.toml`` file named on the command line is always collected. One found
  while pytest walks a folder is collected unless it is valid TOML holding none of
  a derivation's tables nor a near-miss of one (``[derivaton]``): a ``pyproject.toml``
  is left alone, but an empty file, a typo, invalid TOML or an oversized file (the
  size is checked before anything is read) is a failing item, as ``check`` fails on it.
* A Markdown note (``*.md``) with ```` ```toml backpropcheck ```` blocks is collected
  with one collector per block, ``notes.md::line12`` (``check`` names it
  ``notes.md:12``); a note without blocks is left alone.
* An item passes when its claim's ``ClaimResult.ok``: ``[expect]`` works like a
  strict xfail, so an expected ``refuted`` passes and an unexpected ``holds`` fails.
* A failing item shows the verdict, the message, the counterexample and the
  command that reproduces it — never a plugin traceback (a file name that is not
  UTF-8 is shown with backslash escapes).
* An invalid file is one failing item, ``FILE::invalid``, showing the error.
* A file is checked once, when its first item runs (not at collection, so
  pytest-xdist workers do not each check every file); the result is cached on
  the file's collector, even when the check itself fails. Under ``-n N --dist loadfile`` a file's claims stay on
  one worker (``--dist loadgroup`` with the ``xdist_group(FILE)`` each item carries does not, under
  pytest 9.2: pytest-xdist issue #1386); with plain ``-n N``
  items of one file may land on several workers, each checking the file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import RUN_OPTIONS, RunOption, checked, option_values

if TYPE_CHECKING:
    from .checker import ClaimResult, FileResult, Options

INVALID = "invalid"  # the single item of a file that does not load


def _argparse_type(option: RunOption) -> Callable[[str], int | float]:
    """An argparse type: the option's number within its range, as ``check``'s options require."""

    def convert(text: str) -> int | float:
        try:
            return checked(option, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--backpropcheck``, and ``check``'s run options (:mod:`.options`) spelt ``--backpropcheck-NAME``."""
    group = parser.getgroup("backpropcheck", "backpropcheck: derivation files as tests")
    group.addoption("--backpropcheck", action="store_true", default=False,
                    help="Collect *.toml derivation files (given as arguments or under them) as tests, "
                         "one per claim.")
    group.addoption("--backpropcheck-report", default=None, metavar="FORMAT:FILE", type=_report_target,
                    help="Also write check's report of every derivation checked, in FORMAT (text, json, junit, "
                         "markdown), to FILE (not under pytest-xdist: each worker sees only its own files).")
    for option in RUN_OPTIONS:
        flag = "--backpropcheck-" + option.flag[2:]
        if option.kind is bool:
            group.addoption(flag, action="store_true", default=False, help=option.help_text(bound_flag=False))
        else:
            group.addoption(flag, type=_argparse_type(option), default=option.default, metavar=option.metavar,
                            help=option.help_text(bound_flag=False))


def _report_target(text: str) -> tuple[str, str]:
    """``FORMAT:FILE``, FORMAT a name of the format registry (:data:`.report.formats.FORMATS`)."""
    from .report.formats import FORMATS

    fmt, sep, path = text.partition(":")
    if not sep or not path or fmt not in FORMATS:
        raise argparse.ArgumentTypeError(f"expected FORMAT:FILE with FORMAT one of {', '.join(FORMATS)}, got {text!r}")
    return fmt, path


_CHECKED = pytest.StashKey[list["FileResult"]]()  # every file's result, in the order they were checked


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("backpropcheck"):
        config.addinivalue_line("markers", "xdist_group(name): keep items of one group on one pytest-xdist worker")
    config.stash[_CHECKED] = []
    if config.getoption("backpropcheck_report") and (hasattr(config, "workerinput") or
                                                      getattr(config.option, "numprocesses", None)):
        raise pytest.UsageError("--backpropcheck-report cannot be used with pytest-xdist (-n): each worker "
                                "checks only some of the files")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write ``--backpropcheck-report FORMAT:FILE`` with the format registry's reporter, as ``check --format``."""
    target = session.config.getoption("backpropcheck_report")
    if not target:
        return
    from .outfile import atomic_output
    from .report.formats import render
    from .textsafe import visible

    fmt, path = target
    seed = session.config.getoption("backpropcheck_seed") or 0
    with atomic_output(path) as stream:
        stream.write(visible(render(fmt, session.config.stash[_CHECKED], seed)))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.File | None:
    if not parent.config.getoption("backpropcheck"):
        return None
    from .notes import is_note

    named = parent.session.isinitpath(file_path)
    if is_note(file_path):
        return NotesFile.from_parent(parent, path=file_path) if _has_blocks(file_path, named) else None
    if file_path.suffix != ".toml":
        return None
    if not named and not _looks_like_derivation(file_path):
        return None
    return DerivationFile.from_parent(parent, path=file_path)


def _has_blocks(path: Path, named: bool) -> bool:
    from .notes import refs

    return bool(refs(path, explicit=named))


def _looks_like_derivation(path: Path) -> bool:
    from .discover import looks_like_derivation

    return looks_like_derivation(path)


def _options(config: pytest.Config) -> Options:
    from .checker import Options

    return Options(**option_values(lambda name: config.getoption("backpropcheck_" + name)))


def _display_path(path: Path, config: pytest.Config) -> str:
    """The path as ``backpropcheck check`` would name it from where pytest was started.

    The name feeds the seeds and the reproduce command, so ``backpropcheck check
    derivations/x.toml`` run from the same folder repeats the plugin's trials. A name
    that is not UTF-8 is shown with backslash escapes: it must print, and seed, cleanly.
    """
    start = Path(config.invocation_params.dir)
    try:
        shown = Path(os.path.relpath(path, start)).as_posix() if path.is_relative_to(start) else str(path)
    except ValueError:  # another drive on Windows
        shown = str(path)
    return os.fsencode(shown).decode("utf-8", "backslashreplace")


class _Checked:
    """A derivation (a file, or one block of a note) checked once, when its first claim runs."""

    display: str
    config: pytest.Config

    def _setup_check(self) -> None:
        self._derivation: Any = None
        self._load_error: str | None = None
        self._result: FileResult | None = None

    def _load(self, options: Options) -> Any:
        raise NotImplementedError

    def _claims(self) -> Iterator[ClaimItem]:
        from .errors import DerivationError

        try:
            self._derivation = self._load(_options(self.config))
        except DerivationError as exc:
            self._load_error = str(exc.located(file=self.display))
        except Exception as exc:  # noqa: BLE001 - a failing item, never a collection crash
            self._load_error = f"{self.display}: internal error ({type(exc).__name__}: {exc}); please report this file"
        if self._load_error is not None:
            yield ClaimItem.from_parent(self, name=INVALID)  # type: ignore[arg-type]
            return
        for claim in self._derivation.claims:
            yield ClaimItem.from_parent(self, name=claim.name)  # type: ignore[arg-type]

    def result(self) -> FileResult:
        """The :class:`FileResult`, computed on the first call (``backpropcheck check`` semantics) and kept,
        whatever happens: the check never runs twice for one file."""
        if self._result is None:
            import time

            from .checker import FileResult, check_derivation
            from .errors import DerivationError

            if self._load_error is not None:
                self._result = FileResult(self.display, "", "error", self._load_error)
                self.config.stash[_CHECKED].append(self._result)
                return self._result
            started = time.perf_counter()
            title = self._derivation.title
            try:
                import numpy as np

                with np.errstate(all="ignore"):
                    self._result = check_derivation(self._derivation, _options(self.config))
            except DerivationError as exc:
                self._result = FileResult(self.display, title, "error", str(exc.located(file=self.display)))
            except Exception as exc:  # noqa: BLE001 - as check_path: one file's bug is that file's error
                self._result = FileResult(self.display, title, "error", f"{self.display}: internal error "
                                          f"({type(exc).__name__}: {exc}); please report this file")
            self._result.seconds = time.perf_counter() - started
            self.config.stash[_CHECKED].append(self._result)
        return self._result


class DerivationFile(_Checked, pytest.File):
    """One derivation file: loaded at collection for its claim names, checked once when first needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.display = _display_path(self.path, self.config)
        self._setup_check()

    def _load(self, options: Options) -> Any:
        from .loader import load

        return load(self.path, options.limits, name=self.display)  # the size is checked before reading

    def collect(self) -> Iterator[ClaimItem]:
        return self._claims()


class NotesFile(pytest.File):
    """A Markdown note: one :class:`NoteBlock` per ``toml backpropcheck`` block."""

    def collect(self) -> Iterator[NoteBlock]:
        from .notes import refs, split_ref

        display = _display_path(self.path, self.config)
        for ref in refs(self.path, explicit=True):
            parsed = split_ref(ref)
            line = parsed[1] if parsed else None
            yield NoteBlock.from_parent(self, name=f"line{line}" if line else INVALID, note_display=display,
                                        line=line)


class NoteBlock(_Checked, pytest.Collector):
    """One block of a note, named like ``check`` names it: ``notes.md:12``."""

    def __init__(self, *args: Any, note_display: str, line: int | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = line
        self.display = f"{note_display}:{line}" if line else note_display
        self._setup_check()

    def _load(self, options: Options) -> Any:
        from .notes import load_ref

        source = f"{self.path}:{self.line}" if self.line else str(self.path)
        return load_ref(source, options.limits, display=self.display)

    def collect(self) -> Iterator[ClaimItem]:
        return self._claims()


class ClaimFailure(Exception):
    """A claim that is not ok, or a file that could not be checked; shown by :meth:`ClaimItem.repr_failure`."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ClaimItem(pytest.Item):
    """One claim ``grad_X = …`` of a derivation file; passes when the claim holds or matches ``[expect]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_marker(pytest.mark.xdist_group(self.file.display))

    @property
    def file(self) -> _Checked:
        return self.parent  # type: ignore[return-value]

    def runtest(self) -> None:
        result = self.file.result()
        if self.name == INVALID or (result.status == "error" and not result.claims):
            raise ClaimFailure(f"error: {self.file.display} could not be checked\n{result.error}")
        claim = _find(result, self.name)
        self.user_properties.append(("verdict", str(claim.verdict)))  # a plain str: xdist sends it between processes
        self.user_properties.append(("expected", claim.expected))
        if not claim.ok:
            from .report.failure import failure_text

            raise ClaimFailure(failure_text(claim, self.file.display))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ClaimFailure):
            return excinfo.value.text
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = getattr(self.file, "line", None)
        # the failure's header; not the node id itself, as pytest -v would then print the id with every
        # "." of the domain turned into "::" ("dense_column::toml::grad_z")
        return self.path, (line - 1 if line else None), f"{self.name} ({self.file.display})"


def _find(result: FileResult, name: str) -> ClaimResult:
    for claim in result.claims:
        if claim.name == name:
            return claim
    raise ClaimFailure(f"error: {result.path} has no result for {name}: {result.error or 'the check stopped early'}")
