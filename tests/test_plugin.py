"""The pytest plugin, driven through pytest itself with ``pytester``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DENSE_COLUMN, with_claims

from backpropcheck import checker
from backpropcheck.cli import main

pytest_plugins = ["pytester"]

FAST = ["--backpropcheck", "--backpropcheck-trials", "3", "--backpropcheck-shapes", "1", "-p", "no:cacheprovider"]
GOOD = {"grad_z": "grad_h * f_prime(z)", "grad_a": "W.T @ grad_z", "grad_W": "outer(grad_z, a)",
        "grad_b": "grad_z"}
WRONG = with_claims(DENSE_COLUMN, {**GOOD, "grad_a": "W.T @ grad_h"})
EXPECTED = with_claims(DENSE_COLUMN, {**GOOD, "grad_W": "outer(a, grad_z)"}, {"grad_W": "shape-error"})
UNEXPECTED_HOLDS = with_claims(DENSE_COLUMN, GOOD, {"grad_b": "refuted"})
INVALID = "[derivation]\ntitle = 'broken'\n[dims\n"


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "backpropcheck"]
    assert ep.value == "backpropcheck.pytest_plugin"


def test_one_item_per_claim_with_readable_node_ids(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", good=DENSE_COLUMN)
    pytester.mkdir("sub").joinpath("expected.toml").write_text(EXPECTED)
    result = pytester.runpytest(*FAST, "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == ["good.toml::grad_z", "good.toml::grad_a", "good.toml::grad_W", "good.toml::grad_b",
                   "sub/expected.toml::grad_z", "sub/expected.toml::grad_a", "sub/expected.toml::grad_W",
                   "sub/expected.toml::grad_b"]
    verbose = pytester.runpytest(*FAST, "-v").stdout.str()  # the same ids, not "good::toml::grad_z"
    assert "good.toml::grad_z PASSED" in verbose and "sub/expected.toml::grad_b PASSED" in verbose, verbose


def test_passing_and_expected_claims_pass(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", good=DENSE_COLUMN, expected=EXPECTED)
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=8)
    assert result.ret == pytest.ExitCode.OK


def test_a_refuted_claim_fails_with_verdict_counterexample_and_reproduce(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", wrong=WRONG)
    result = pytester.runpytest(*FAST, "-rf")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*_ grad_a (wrong.toml) _*",
        "refuted: grad_a = W.T @ grad_h (expected holds)",
        "the claim differs from the true gradient at entry *",
        "counterexample: dims *, seed 0, entry *",
        "true *, claimed *",
        "reproduce: backpropcheck check wrong.toml --seed 0 --trials 3 --shapes 1",
        "*FAILED wrong.toml::grad_a - refuted: grad_a = W.T @ grad_h*",
    ])
    text = result.stdout.str()
    assert "Traceback" not in text and "pytest_plugin.py" not in text and "ClaimFailure" not in text


def test_the_reproduce_command_repeats_the_counterexample(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makefile(".toml", wrong=WRONG)
    out = pytester.runpytest(*FAST).stdout.str()
    command = re.search(r"^reproduce: (.*)$", out, re.M).group(1)
    counterexample = re.search(r"^counterexample: (.*)$", out, re.M).group(1)
    args = shlex.split(command)
    assert args[:2] == ["backpropcheck", "check"]
    monkeypatch.chdir(pytester.path)
    cli = CliRunner().invoke(main, [*args[1:], "--shapes", "1"])
    assert cli.exit_code == 1
    assert counterexample in cli.stdout


def test_an_unexpected_holds_fails_like_strict_xfail(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", surprise=UNEXPECTED_HOLDS)
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["proved: grad_b = grad_z (expected refuted)", "expected refuted, but the claim holds*"])


def test_an_invalid_file_is_one_failing_item_showing_the_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", broken=INVALID)
    result = pytester.runpytest(*FAST, "-rf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*_ invalid (broken.toml) _*", "error: broken.toml could not be checked",
                                 "broken.toml: invalid TOML: *"])
    assert "Traceback" not in result.stdout.str()


def test_folders_skip_toml_files_that_are_not_derivations(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", good=DENSE_COLUMN, pyproject="[project]\nname = 'x'\n")
    result = pytester.runpytest(*FAST, "--collect-only", "-q")
    assert not [line for line in result.outlines if line.startswith("pyproject.toml")]
    explicit = pytester.runpytest(*FAST, "pyproject.toml", "--collect-only", "-q")  # named: collected, invalid
    assert "pyproject.toml::invalid" in explicit.outlines


def test_without_the_flag_toml_files_are_not_collected(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", wrong=WRONG)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_each_file_is_checked_once(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = checker.check_derivation

    def counting(d, *args, **kwargs):
        calls.append(d.path)
        return real(d, *args, **kwargs)

    monkeypatch.setattr(checker, "check_derivation", counting)
    pytester.makefile(".toml", good=DENSE_COLUMN, wrong=WRONG)
    pytester.runpytest(*FAST).assert_outcomes(passed=7, failed=1)
    assert sorted(calls) == ["good.toml", "wrong.toml"]


def test_options_reach_the_checker(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", mixed=with_claims(DENSE_COLUMN, {**GOOD, "grad_a": "W.T @ grad_h"}, {"grad_z": "refuted"}))
    result = pytester.runpytest(*FAST, "--backpropcheck-no-symbolic", "--backpropcheck-seed", "7")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["verified: grad_z = grad_h * f_prime(z) (expected refuted)",
                                 "reproduce: backpropcheck check mixed.toml --seed 7 --trials 3 --shapes 1 --no-symbolic"])


@pytest.mark.slow  # three interpreters: 3-4 s
def test_works_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makefile(".toml", good=DENSE_COLUMN, wrong=WRONG, expected=EXPECTED)
    result = pytester.runpytest_subprocess(*FAST, "-n", "2", "--dist", "loadfile", "-rf", "-v")
    result.assert_outcomes(passed=11, failed=1)
    result.stdout.fnmatch_lines(["*refuted: grad_a = W.T @ grad_h*", "*counterexample: dims *",
                                 "*reproduce: backpropcheck check wrong.toml --seed 0 --trials 3*"])
    # what the README promises for --dist loadfile: a file's claims run on one worker, so it is checked once
    workers: dict[str, set[str]] = {}
    for line in result.stdout.lines:
        found = re.match(r"\[(gw\d+)\].* (?:PASSED|FAILED) (\w+)\.toml::", line)
        if found:
            workers.setdefault(found[2], set()).add(found[1])
    assert set(workers) == {"good", "wrong", "expected"} and all(len(w) == 1 for w in workers.values()), workers


# -- issue 14 / issue 10.10: the plugin fails wherever check fails ---------------------------------------------


def test_every_file_check_fails_on_is_a_failing_item(pytester: pytest.Pytester) -> None:
    """An empty file, table typos and invalid TOML fail, in a folder too; only a pyproject.toml is left alone."""
    pytester.makefile(".toml", good=DENSE_COLUMN, empty="", broken=INVALID,
                      typo=DENSE_COLUMN.replace("[derivation]", "[derivaton]"),
                      claim=DENSE_COLUMN.replace("[claims]", "[claim]"),
                      pyproject="[project]\nname = 'x'\n[tool.ruff]\nline-length = 1\n")
    result = pytester.runpytest(*FAST, "-rf")
    result.assert_outcomes(passed=4, failed=4)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random([
        "FAILED empty.toml::invalid*", "FAILED typo.toml::invalid*", "FAILED claim.toml::invalid*",
        "FAILED broken.toml::invalid*"])
    text = result.stdout.str()  # (fnmatch reads [..] as a character class)
    assert "typo.toml, [derivaton]: unknown table [derivaton]" in text
    assert "claim.toml, [claim]: unknown table [claim]" in text
    assert "pyproject.toml::" not in text and not [line for line in result.outlines if line.startswith("pyproject")]
    cli = CliRunner().invoke(main, ["check", str(pytester.path / "empty.toml"), str(pytester.path / "typo.toml")])
    assert cli.exit_code == 2  # the same files, the same judgement


def test_the_size_is_checked_before_a_file_is_parsed(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    parsed: list[int] = []
    real = tomllib.loads

    def counting(text: str, **kwargs):
        parsed.append(len(text))
        return real(text, **kwargs)

    monkeypatch.setattr(tomllib, "loads", counting)
    pytester.makefile(".toml", big="# padding\n" * 40_000)  # 400 kB of comments: no tables at all
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*big.toml*exceeds the limit of 262144*--max-file-bytes*"])
    assert not any(n > 262_144 for n in parsed)


def test_a_file_name_that_is_not_utf8_runs_without_tracebacks(pytester: pytest.Pytester) -> None:
    name = os.fsdecode(b"d\xe9nse.toml")
    (pytester.path / name).write_text(WRONG, encoding="utf-8")
    result = pytester.runpytest(*FAST, "-rf")
    result.assert_outcomes(passed=3, failed=1)
    text = result.stdout.str()
    assert "Traceback" not in text and "UnicodeEncodeError" not in text
    result.stdout.fnmatch_lines(["*refuted: grad_a = W.T @ grad_h*", "reproduce: backpropcheck check *d\\xe9nse.toml*"])


def test_a_check_that_breaks_is_run_once_and_fails_every_item(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken(d, *args, **kwargs):
        calls.append(d.path)
        raise RuntimeError("boom")

    monkeypatch.setattr(checker, "check_derivation", broken)
    pytester.makefile(".toml", good=DENSE_COLUMN)
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(failed=4)
    assert calls == ["good.toml"]
    result.stdout.fnmatch_lines(["good.toml: internal error (RuntimeError: boom); please report this file"])
    assert "Traceback" not in result.stdout.str()


def test_notes_blocks_are_items_and_other_markdown_is_left_alone(pytester: pytest.Pytester) -> None:
    note = f"# Week 1\n\n```toml backpropcheck\n{DENSE_COLUMN.strip()}\n```\n\ntext\n\n```toml backpropcheck\n" \
           f"{WRONG.strip()}\n```\n"
    pytester.makefile(".md", notes=note, README="# a readme\n\n```toml\n[x]\n```\n")
    second = next(k for k, line in enumerate(note.splitlines(), 1) if k > 5 and line == "[derivation]")
    collected = pytester.runpytest(*FAST, "--collect-only", "-q")
    ids = [line for line in collected.outlines if "::" in line]
    assert ids[0] == "notes.md::line4::grad_z" and ids[4] == f"notes.md::line{second}::grad_z" and len(ids) == 8
    result = pytester.runpytest(*FAST, "-rf")
    result.assert_outcomes(passed=7, failed=1)
    result.stdout.fnmatch_lines([f"reproduce: backpropcheck check notes.md:{second} --seed 0 --trials 3 --shapes 1"])
    assert "README" not in result.stdout.str()


# -- the pre-commit hook ---------------------------------------------------------------------------------------


def _yaml_items(text: str) -> list[dict[str, str]]:
    """The flat ``key: value`` mappings of a YAML list (``- id: …``), read without PyYAML."""
    items: list[dict[str, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("- "):
            items.append({})
            stripped = stripped[2:]
        key, _, value = stripped.partition(":")
        if items:
            items[-1][key.strip()] = value.strip()
    return items


def _hooks() -> list[dict[str, str]]:
    return _yaml_items((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))


def _readme_hook() -> dict[str, str]:
    """The hook of the README's ``.pre-commit-config.yaml`` snippet, exactly as printed."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```yaml\n(# \.pre-commit-config\.yaml\n.*?)```", text, re.S).group(1)
    assert "<" not in snippet and "rev:" not in snippet  # no placeholder, no tag that does not exist
    repo, hook = _yaml_items(snippet)
    assert repo == {"repo": "local", "hooks": ""}
    return hook


REPO = Path(__file__).resolve().parent.parent


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout


def _scratch_repository(tmp_path: Path) -> Path:
    """A course repository: derivations in two places, notes, a README, a pyproject.toml, one broken file."""
    repo = tmp_path / "course"
    (repo / "derivations").mkdir(parents=True)
    (repo / "week2" / "extra").mkdir(parents=True)
    (repo / "derivations" / "dense.toml").write_text(DENSE_COLUMN, encoding="utf-8")
    (repo / "week2" / "extra" / "typo.toml").write_text(DENSE_COLUMN.replace("[derivation]", "[derivaton]"))
    (repo / "week2" / "lecture.md").write_text(f"# Week 2\n\n```toml backpropcheck\n{WRONG.strip()}\n```\n")
    (repo / "README.md").write_text("# Course\n\n```toml\n[not]\nchecked = true\n```\n")
    (repo / "pyproject.toml").write_text("[project]\nname = 'course'\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    return repo


def _pre_commit_files(repo: Path, hook: dict[str, str]) -> list[str]:
    """The file names pre-commit passes to a hook: staged files matched by ``files`` (re.search), not ``exclude``."""
    staged = _git(repo, "diff", "--cached", "--name-only").split()
    files = re.compile(hook["files"])
    exclude = re.compile(hook.get("exclude", "^$"))
    return [f for f in staged if files.search(f) and not exclude.search(f) and (repo / f).is_file()]


@pytest.mark.parametrize("source", ["README", ".pre-commit-hooks.yaml"])
def test_the_pre_commit_hook_fails_wherever_check_fails(source: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    hook = _readme_hook() if source == "README" else _hooks()[0]
    if source != "README":
        assert hook["id"] == "backpropcheck" and hook["language"] == "python" and hook["pass_filenames"] == "true"
        assert hook["types"] == "[file]"
    repo = _scratch_repository(tmp_path)
    files = _pre_commit_files(repo, hook)
    assert files == ["README.md", "derivations/dense.toml", "pyproject.toml", "week2/extra/typo.toml",
                     "week2/lecture.md"]
    command = shlex.split(hook["entry"])
    assert command[0] == "backpropcheck"
    monkeypatch.chdir(repo)
    fast = ["--trials", "3", "--shapes", "1"]  # as `args:` would add, before the file names
    result = CliRunner().invoke(main, [*command[1:], *fast, *files])
    assert result.exit_code == 2, result.output  # the misspelt table, wherever it is
    assert "week2/extra/typo.toml, [derivaton]: unknown table [derivaton]" in result.stdout
    assert "week2/lecture.md:4" in result.stdout and "grad_a refuted" in result.stdout  # the note's wrong claim
    assert "pyproject" not in result.stdout and "README" not in result.stdout
    # a commit that touches only a README and a pyproject.toml has nothing to check
    quiet = CliRunner().invoke(main, [*command[1:], "README.md", "pyproject.toml"])
    assert quiet.exit_code == 0 and "nothing to check" in quiet.stderr
    good = CliRunner().invoke(main, [*command[1:], *fast, "derivations/dense.toml", "README.md"])
    assert good.exit_code == 0, good.output


def test_the_plugin_fails_on_the_same_files_in_the_scratch_repository(pytester: pytest.Pytester, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _scratch_repository(tmp_path)
    monkeypatch.chdir(repo)
    result = pytester.runpytest(*FAST, "-rf")
    result.assert_outcomes(passed=7, failed=2)
    text = result.stdout.str()
    assert "week2/extra/typo.toml::invalid" in text and "week2/lecture.md::line4::grad_a" in text
    assert "pyproject.toml::" not in text and "README.md::" not in text


def test_the_hook_and_check_agree_on_which_tables_make_a_derivation() -> None:
    from backpropcheck.discover import TABLES
    from backpropcheck.loader import TABLES as LOADER_TABLES

    assert TABLES == tuple(LOADER_TABLES)


def test_option_values_are_checked_like_the_cli(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", good=DENSE_COLUMN)
    result = pytester.runpytest("--backpropcheck", "--backpropcheck-trials", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--backpropcheck-trials: 0 is smaller than 1*"])


def test_the_plugin_takes_every_run_option_of_check_from_one_table(pytester: pytest.Pytester) -> None:
    """``--rtol`` is ``--backpropcheck-rtol``, with the same range; each option becomes its Options field."""
    from backpropcheck.options import RUN_OPTIONS, option_values

    given = {"seed": 3, "trials": 4, "shapes": 1, "max_dim": 5, "rtol": 1e-6, "atol": 0.0, "no_symbolic": True,
             "timeout": 2.0}
    assert checker.Options(**option_values(given.__getitem__)) == checker.Options(
        seed=3, trials=4, shapes=1, max_dim=5, rtol=1e-6, atol=0.0, symbolic=False, timeout=2.0)

    help_text = pytester.runpytest("--help").stdout.str()
    check_help = CliRunner().invoke(main, ["check", "--help"]).stdout
    for option in RUN_OPTIONS:
        assert "--backpropcheck-" + option.flag[2:] in help_text and option.flag in check_help
    pytester.makefile(".toml", good=DENSE_COLUMN)
    result = pytester.runpytest("--backpropcheck", "--backpropcheck-rtol", "0.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--backpropcheck-rtol: 0.5 is larger than 0.001*"])
    result = pytester.runpytest(*FAST, "--backpropcheck-no-symbolic", "--backpropcheck-max-dim", "3", "-rA",
                                "--backpropcheck-atol", "1e-9")
    result.assert_outcomes(passed=4)


def test_the_plugin_writes_checks_report_through_the_format_registry(pytester: pytest.Pytester) -> None:
    """``--backpropcheck-report junit:FILE`` is ``check --format junit`` of the files the plugin checked."""
    pytester.makefile(".toml", good=DENSE_COLUMN, wrong=WRONG)
    report = pytester.path / "out.xml"
    result = pytester.runpytest(*FAST, "--backpropcheck-report", f"junit:{report}")
    result.assert_outcomes(passed=7, failed=1)
    written = report.read_text(encoding="utf-8")
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(pytester.path)
        cli = runner.invoke(main, ["check", "good.toml", "wrong.toml", "--trials", "3", "--shapes", "1",
                                   "--format", "junit"]).stdout
    untimed = re.compile(r'time="[0-9.]+"')
    assert untimed.sub("", written) == untimed.sub("", cli)
    assert "reproduce: backpropcheck check wrong.toml" in written
    bad = pytester.runpytest(*FAST, "--backpropcheck-report", "yaml:x.yaml")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*expected FORMAT:FILE with FORMAT one of text, json, junit, markdown*"])
    under_xdist = pytester.runpytest(*FAST, "-n", "2", "--backpropcheck-report", "json:x.json")
    assert under_xdist.ret == pytest.ExitCode.USAGE_ERROR and not (pytester.path / "x.json").exists()
