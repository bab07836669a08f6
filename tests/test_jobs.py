"""``--jobs``: parallel files, the same report; ``--fail-fast`` in parallel; the progress bar only on a terminal."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import DENSE_COLUMN, with_claims, write

from backpropcheck import checker, cli
from backpropcheck.checker import FileResult, Options

FAST = ["--trials", "3", "--shapes", "1"]
GOOD = {"grad_z": "grad_h * f_prime(z)", "grad_a": "W.T @ grad_z", "grad_W": "outer(grad_z, a)",
        "grad_b": "grad_z"}
NO_COLOR_ENV = {"FORCE_COLOR": None, "NO_COLOR": "1", "TTY_COMPATIBLE": None}


def _without_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def _library(root: Path) -> list[str]:
    write(root, DENSE_COLUMN, "a_good.toml")
    write(root, with_claims(DENSE_COLUMN, {**GOOD, "grad_a": "W.T @ grad_h"}), "b_wrong.toml")
    write(root, with_claims(DENSE_COLUMN, {**GOOD, "grad_W": "outer(a, grad_z)"}, {"grad_W": "shape-error"}),
          "c_expected.toml")
    write(root, DENSE_COLUMN.replace("f(z)", "tanh(z)").replace("f_prime", "tanh_prime"), "d_tanh.toml")
    return [str(root / n) for n in ("a_good.toml", "b_wrong.toml", "c_expected.toml", "d_tanh.toml")]


def _check(args: list[str]) -> tuple[int, str]:
    result = CliRunner(env=NO_COLOR_ENV).invoke(cli.main, ["check", *args])
    return result.exit_code, result.stdout


@pytest.mark.parametrize("fmt", ["json", "junit"])
def test_jobs_two_gives_the_same_report_as_jobs_one(fmt: str, tmp_path: Path) -> None:
    files = _library(tmp_path)
    one = _check([*files, *FAST, "--format", fmt, "--jobs", "1"])
    two = _check([*files, *FAST, "--format", fmt, "--jobs", "2"])
    assert one[0] == two[0] == 1
    if fmt == "json":
        a, b = (_without_seconds(json.loads(out)) for _, out in (one, two))
        assert [f["path"] for f in a["files"]] == files
        assert a == b
    else:  # times differ; everything else is the same
        strip = re.compile(r' time="[0-9.]+"')
        assert strip.sub("", one[1]) == strip.sub("", two[1])


def test_fail_fast_stops_at_the_same_file_for_any_jobs(tmp_path: Path) -> None:
    files = _library(tmp_path)
    reports = []
    for jobs in ("1", "3"):
        code, out = _check([*files, *FAST, "--format", "json", "--fail-fast", "--jobs", jobs])
        assert code == 1
        reports.append(_without_seconds(json.loads(out)))
    assert [f["path"] for f in reports[0]["files"]] == files[:2]
    assert reports[0] == reports[1]


# -- _run itself, with a stand-in checker whose files finish out of order -------------------------------------

STATUS = {"a": "failed", "b": "failed", "c": "passed", "d": "passed", "e": "passed"}


def slow_first(path: str, options: Options = Options()) -> FileResult:  # noqa: B008 - mirrors check_path
    """Finishes the first file last, so completion order differs from file order."""
    if path == "a":
        time.sleep(0.5)
    return FileResult(path, f"title {path}", STATUS[path], None)


def test_run_keeps_file_order_when_files_finish_out_of_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checker, "check_path", slow_first)  # forked workers inherit the stand-in
    files = ["a", "c", "d", "e"]
    results = cli._run(files, Options(), jobs=3, fail_fast=False)
    assert [r.path for r in results] == files
    assert [r.title for r in results] == [f"title {f}" for f in files]


def test_parallel_fail_fast_reports_up_to_the_first_failing_file_in_file_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checker, "check_path", slow_first)
    # b fails first in time, but a comes first in the files and fails too: the report stops at a, as with --jobs 1
    sequential = cli._run(["a", "b", "c", "d"], Options(), jobs=1, fail_fast=True)
    parallel = cli._run(["a", "b", "c", "d"], Options(), jobs=2, fail_fast=True)
    assert [r.path for r in parallel] == [r.path for r in sequential] == ["a"]
    parallel = cli._run(["c", "b", "a", "d"], Options(), jobs=2, fail_fast=True)
    assert [r.path for r in parallel] == ["c", "b"]


# -- the progress bar ------------------------------------------------------------------------------------------


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("fmt", "output", "quiet", "tty", "want"), [
    ("text", None, False, True, True),
    ("text", None, False, False, False),  # piped
    ("text", None, True, True, False),  # --quiet
    ("text", "report.txt", False, True, False),  # --output
    ("json", None, False, True, False),
    ("junit", None, False, True, False),
])
def test_progress_only_for_text_on_a_terminal(fmt: str, output: str | None, quiet: bool, tty: bool,
                                              want: bool) -> None:
    assert cli._want_progress(fmt, output, quiet, _Stream(tty)) is want


def test_no_progress_escape_codes_when_piped(tmp_path: Path) -> None:
    source = write(tmp_path, DENSE_COLUMN, "good.toml")
    result = CliRunner(env=NO_COLOR_ENV).invoke(cli.main, ["check", str(source), *FAST])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "\x1b[" not in result.stdout and "━" not in result.stdout
    assert "4 claim(s): 4 ok" in result.stdout


def test_the_progress_bar_draws_on_stderr_when_wanted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The positive case of the test above: with a terminal, the bar goes to stderr, the report to stdout."""
    source = write(tmp_path, DENSE_COLUMN, "good.toml")
    monkeypatch.setattr(cli, "_want_progress", lambda *args: True)
    result = CliRunner(env={"FORCE_COLOR": "1"}).invoke(cli.main, ["check", str(source), *FAST])
    assert result.exit_code == 0, result.output
    assert "checking" in result.stderr and "\x1b[" in result.stderr and "━" in result.stderr and "good.toml" in result.stderr
    report = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)  # FORCE_COLOR colours the report too
    assert "checking" not in report and "━" not in report and "4 claim(s): 4 ok" in report
