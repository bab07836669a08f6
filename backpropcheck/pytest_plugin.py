"""A pytest plugin: ``pytest --backpropcheck [PATHS]`` checks derivation files as test items, one per claim.

Registered through the ``pytest11`` entry point, so it is loaded by every pytest
run in an environment where backpropcheck is installed; without
``--backpropcheck`` it does nothing, and it imports neither NumPy nor SymPy.

* A ``*.toml`` file named on the command line is always collected; one found
  while pytest walks a folder is collected when it has a ``[derivation]`` or
  ``[claims]`` table (or is not valid TOML, so a broken file is never skipped
  silently) — a ``pyproject.toml`` next to the derivations is left alone.
* An item passes when its claim's ``ClaimResult.ok``: ``[expect]`` works like a
  strict xfail, so an expected ``refuted`` passes and an unexpected ``holds`` fails.
* A failing item shows the verdict, the message, the counterexample and the
  command that reproduces it — never a plugin traceback.
* An invalid file is one failing item, ``FILE::invalid``, showing the error.
* A file is checked once, when its first item runs (not at collection, so
  pytest-xdist workers do not each check every file); the result is cached on
  the file's collector. Under ``-n N --dist loadgroup`` a file's claims stay on
  one worker (each item carries ``xdist_group(FILE)``); with plain ``-n N``
  items of one file may land on several workers, each checking the file.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .model import SETTING_RANGES

if TYPE_CHECKING:
    from .checker import ClaimResult, FileResult, Options

INVALID = "invalid"  # the single item of a file that does not load
_MARKERS = ("derivation", "claims")


def _at_least(low: float, kind: type = int) -> Any:
    """An argparse type: a number of ``kind`` no smaller than ``low``, as ``check``'s options require."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is smaller than {low}")
        return value

    return convert


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backpropcheck", "backpropcheck: derivation files as tests")
    group.addoption("--backpropcheck", action="store_true", default=False,
                    help="Collect *.toml derivation files (given as arguments or under them) as tests, "
                         "one per claim.")
    group.addoption("--backpropcheck-seed", type=_at_least(0), default=None, metavar="INT",
                    help="Seed for every random draw (default: the file's, else 0).")
    group.addoption("--backpropcheck-trials", type=_at_least(SETTING_RANGES["trials"][0]), default=None, metavar="INT",
                    help="Numeric trials per file (default: the file's, else 20).")
    group.addoption("--backpropcheck-shapes", type=_at_least(SETTING_RANGES["shapes"][0]), default=None, metavar="INT",
                    help="Small dim assignments for the symbolic proof (default: the file's, else 3).")
    group.addoption("--backpropcheck-timeout", type=_at_least(0, float), default=10.0, metavar="SECONDS",
                    help="Seconds of symbolic work per claim before it falls back to 'verified' (default 10).")
    group.addoption("--backpropcheck-no-symbolic", action="store_true", default=False,
                    help="Numeric trials only: verdicts are 'verified', not 'proved'.")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("backpropcheck"):
        config.addinivalue_line("markers", "xdist_group(name): keep items of one group on one pytest-xdist worker")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> DerivationFile | None:
    if file_path.suffix != ".toml" or not parent.config.getoption("backpropcheck"):
        return None
    if not parent.session.isinitpath(file_path) and not _looks_like_derivation(file_path):
        return None
    return DerivationFile.from_parent(parent, path=file_path)


def _looks_like_derivation(path: Path) -> bool:
    try:
        doc = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return True  # let the item report why it cannot be read
    return any(table in doc for table in _MARKERS)


def _options(config: pytest.Config) -> Options:
    from .checker import Options

    return Options(seed=config.getoption("backpropcheck_seed"), trials=config.getoption("backpropcheck_trials"),
                   shapes=config.getoption("backpropcheck_shapes"),
                   symbolic=not config.getoption("backpropcheck_no_symbolic"),
                   timeout=config.getoption("backpropcheck_timeout"))


def _display_path(path: Path, config: pytest.Config) -> str:
    """The path as ``backpropcheck check`` would name it from where pytest was started.

    The name feeds the seeds and the reproduce command, so ``backpropcheck check
    derivations/x.toml`` run from the same folder repeats the plugin's trials.
    """
    start = Path(config.invocation_params.dir)
    try:
        return Path(os.path.relpath(path, start)).as_posix() if path.is_relative_to(start) else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


class DerivationFile(pytest.File):
    """One derivation file: loaded at collection for its claim names, checked once when first needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.display = _display_path(self.path, self.config)
        self._derivation: Any = None
        self._load_error: str | None = None
        self._result: FileResult | None = None

    def collect(self) -> Iterator[ClaimItem]:
        from .errors import DerivationError
        from .loader import loads

        options = _options(self.config)
        try:
            self._derivation = loads(self._read(), self.display, options.limits)
        except DerivationError as exc:
            self._load_error = str(exc.located(file=self.display))
            yield ClaimItem.from_parent(self, name=INVALID)
            return
        for claim in self._derivation.claims:
            yield ClaimItem.from_parent(self, name=claim.name)

    def _read(self) -> bytes:
        from .errors import DerivationError

        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise DerivationError(f"cannot read the file: {exc.strerror or exc}", file=self.display) from None

    def result(self) -> FileResult:
        """The file's :class:`FileResult`, computed on the first call (``backpropcheck check`` semantics)."""
        if self._result is None:
            import time

            from .checker import FileResult, check_derivation
            from .errors import DerivationError

            if self._load_error is not None:
                self._result = FileResult(self.display, "", "error", self._load_error)
            else:
                started = time.perf_counter()
                try:
                    self._result = check_derivation(self._derivation, _options(self.config))
                except DerivationError as exc:
                    self._result = FileResult(self.display, self._derivation.title, "error",
                                              str(exc.located(file=self.display)))
                self._result.seconds = time.perf_counter() - started
        return self._result


class ClaimFailure(Exception):
    """A claim that is not ok, or a file that could not be checked; shown by :meth:`ClaimItem.repr_failure`."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ClaimItem(pytest.Item):
    """One claim ``grad_X = …`` of a derivation file; passes when the claim holds or matches ``[expect]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_marker(pytest.mark.xdist_group(self.parent.display))

    @property
    def file(self) -> DerivationFile:
        return self.parent  # type: ignore[return-value]

    def runtest(self) -> None:
        result = self.file.result()
        if self.name == INVALID or (result.status == "error" and not result.claims):
            raise ClaimFailure(f"error: {self.file.display} could not be checked\n{result.error}")
        claim = _find(result, self.name)
        self.user_properties.append(("verdict", claim.verdict))
        self.user_properties.append(("expected", claim.expected))
        if not claim.ok:
            from .report.junit import failure_text

            raise ClaimFailure(failure_text(claim, self.file.display))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ClaimFailure):
            return excinfo.value.text
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.file.display}::{self.name}"


def _find(result: FileResult, name: str) -> ClaimResult:
    for claim in result.claims:
        if claim.name == name:
            return claim
    raise ClaimFailure(f"error: {result.path} has no result for {name}: {result.error or 'the check stopped early'}")
