"""The command line: exit codes, reports, determinism, and a cheap --help/--version."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import BUNDLED, DENSE_COLUMN, SOFTMAX_REGRESSION, derivation_toml, with_claims, write

import backpropcheck as bpc
from backpropcheck import __version__
from backpropcheck.cli import main
from backpropcheck.limits import LIMIT_FIELDS, Limits

FAST_ARGS = ["--trials", "3", "--shapes", "1"]
FAST = {"trials": 3, "shapes": 1}
WRONG = with_claims(DENSE_COLUMN, {"grad_z": "grad_h * f_prime(z)", "grad_W": "outer(a, grad_z)"})


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def drop_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [drop_seconds(v) for v in value]
    return value


def test_bundled_seed_example_passes() -> None:
    result = run("check", str(BUNDLED / "dense_column.toml"), *FAST_ARGS)
    assert result.exit_code == 0, result.output
    for name in ("grad_z", "grad_a", "grad_W", "grad_b"):
        assert name in result.output
    assert result.output.count("proved") == 4
    assert "4 claim(s): 4 ok, 0 failed, 0 error(s)" in result.output


def test_wrong_claim_exits_1_with_a_reproducing_command(tmp_path: Path) -> None:
    square = derivation_toml(
        dims={"n": "units"}, inputs={"a": ["n"], "W": ["n", "n"]}, forward={"z": "W @ a", "h": "tanh(z)"},
        loss={"upstream": "h"}, claims={"grad_z": "grad_h * tanh_prime(z)", "grad_a": "W @ grad_z"},
    )
    path = write(tmp_path, square, "square.toml")
    result = run("check", str(path), *FAST_ARGS)
    assert result.exit_code == 1, result.output
    assert "refuted" in result.output
    assert "reproduce:" in result.output and "backpropcheck check" in result.output
    assert "Traceback" not in result.output
    # the printed command reproduces the refutation
    line = next(x for x in result.output.splitlines() if "reproduce:" in x)
    argv = shlex.split(line.split("reproduce:", 1)[1])
    assert argv[:2] == ["backpropcheck", "check"]
    again = run(*argv[1:])
    assert again.exit_code == 1 and "refuted" in again.output


def test_invalid_file_exits_2_and_the_valid_one_is_still_reported(tmp_path: Path) -> None:
    good = write(tmp_path, DENSE_COLUMN, "a_good.toml")
    bad = write(tmp_path, DENSE_COLUMN.replace('z = "W @ a + b"', 'z = "W @ a + bb"'), "b_bad.toml")
    result = run("check", str(good), str(bad), *FAST_ARGS)
    assert result.exit_code == 2, result.output
    assert str(good) in result.output and str(bad) in result.output
    assert "proved" in result.output
    assert "column 9" in result.output and "did you mean 'b'?" in result.output
    assert "Traceback" not in result.output


def test_a_folder_is_checked_recursively(tmp_path: Path) -> None:
    write(tmp_path, DENSE_COLUMN, "one.toml")
    (tmp_path / "z_deeper").mkdir()
    write(tmp_path / "z_deeper", WRONG.replace("[claims]", "[expect]\ngrad_W = \"shape-error\"\n\n[claims]"), "two.toml")
    result = run("check", str(tmp_path), *FAST_ARGS, "--format", "json")
    report = json.loads(result.stdout)
    assert [Path(f["path"]).name for f in report["files"]] == ["one.toml", "two.toml"]


def test_json_has_the_spec_keys(tmp_path: Path) -> None:
    path = write(tmp_path, WRONG)
    result = run("check", str(path), *FAST_ARGS, "--format", "json", "--seed", "4")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert set(report) >= {"backpropcheck", "seed", "files", "summary"}
    assert report["backpropcheck"] == __version__ and report["seed"] == 4
    (f,) = report["files"]
    assert set(f) >= {"path", "title", "status", "error", "claims"}
    assert f["path"] == str(path) and f["status"] == "failed" and f["error"] is None
    keys = {"name", "expr", "verdict", "expected", "ok", "message", "symbolic", "numeric", "counterexample",
            "diagnosis", "depends_on_refuted"}
    for c in f["claims"]:
        assert set(c) >= keys
    by_name = {c["name"]: c for c in f["claims"]}
    assert by_name["grad_z"]["verdict"] == "proved" and by_name["grad_z"]["ok"] is True
    assert set(by_name["grad_z"]["symbolic"]) >= {"shapes", "seconds"}
    assert set(by_name["grad_z"]["numeric"]) >= {"trials", "max_abs_err", "max_rel_err"}
    assert by_name["grad_W"]["verdict"] == "shape-error" and by_name["grad_W"]["ok"] is False
    assert report["summary"] == {"files": 1, "claims": 2, "ok": 1, "failed": 1, "errors": 0}


def test_json_counterexample(tmp_path: Path) -> None:
    path = write(tmp_path, with_claims(SOFTMAX_REGRESSION, {"grad_Z": "P - Y"}))
    report = json.loads(run("check", str(path), *FAST_ARGS, "--format", "json").stdout)
    c = report["files"][0]["claims"][0]
    assert c["verdict"] == "refuted"
    assert set(c["counterexample"]) >= {"dims", "seed", "index", "true", "claimed", "expression", "command"}
    assert "missing 1/B" in c["diagnosis"]


def test_same_seed_same_output(tmp_path: Path) -> None:
    path = write(tmp_path, with_claims(SOFTMAX_REGRESSION, {"grad_Z": "P - Y", "grad_W": "grad_Z @ X.T"}))
    text = [run("check", str(path), *FAST_ARGS, "--seed", "7").output for _ in range(2)]
    assert text[0] == text[1]
    assert "--seed 7" in text[0]
    reports = [json.loads(run("check", str(path), *FAST_ARGS, "--seed", "7", "--format", "json").stdout)
               for _ in range(2)]
    assert drop_seconds(reports[0]) == drop_seconds(reports[1])
    other = json.loads(run("check", str(path), *FAST_ARGS, "--seed", "8", "--format", "json").stdout)
    assert drop_seconds(other) != drop_seconds(reports[0])


def test_jobs_do_not_change_the_report(tmp_path: Path) -> None:
    write(tmp_path, DENSE_COLUMN, "a.toml")
    write(tmp_path, WRONG, "b.toml")
    one = json.loads(run("check", str(tmp_path), *FAST_ARGS, "--format", "json").stdout)
    two = json.loads(run("check", str(tmp_path), *FAST_ARGS, "--format", "json", "--jobs", "2").stdout)
    assert drop_seconds(one) == drop_seconds(two)


def test_output_quiet_and_fail_fast(tmp_path: Path) -> None:
    good = write(tmp_path, DENSE_COLUMN, "a_good.toml")
    bad = write(tmp_path, WRONG, "b_wrong.toml")
    out = tmp_path / "report.json"
    result = run("check", str(good), str(bad), *FAST_ARGS, "--format", "json", "--output", str(out))
    assert result.exit_code == 1 and result.stdout == ""
    assert len(json.loads(out.read_text())["files"]) == 2
    quiet = run("check", str(good), str(bad), *FAST_ARGS, "-q")
    assert str(bad) in quiet.output and str(good) not in quiet.output
    assert "grad_W shape-error" in quiet.output and "proved" not in quiet.output
    fast = run("check", str(bad), str(good), *FAST_ARGS, "--fail-fast", "--format", "json")
    assert fast.exit_code == 1
    assert [f["path"] for f in json.loads(fast.stdout)["files"]] == [str(bad)]


def test_no_symbolic_flag(tmp_path: Path) -> None:
    result = run("check", str(write(tmp_path, DENSE_COLUMN)), "--trials", "2", "--no-symbolic")
    assert result.exit_code == 0
    for name in ("grad_z", "grad_a", "grad_W", "grad_b"):
        assert f"{name} verified" in result.output and f"{name} proved" not in result.output
    assert "--no-symbolic" in result.output


def test_default_path_is_derivations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    missing = CliRunner().invoke(main, ["check"])
    assert missing.exit_code == 2 and "no PATH given" in missing.output
    (tmp_path / "derivations").mkdir()
    write(tmp_path / "derivations", DENSE_COLUMN, "x.toml")
    result = CliRunner().invoke(main, ["check", *FAST_ARGS])
    assert result.exit_code == 0 and "x.toml" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--dims", "n=0"],
        ["check", "--dims", "n"],
        ["check", "--trials", "0"],
        ["check", "--format", "yaml"],
        ["check", "--bogus"],
        ["nosuchcommand"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [*args, str(write(tmp_path, DENSE_COLUMN))])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exit_code == 2 and "no *.toml files" in result.output


def test_an_empty_folder_beside_another_path_is_an_error_of_its_own(tmp_path: Path) -> None:
    """``check d.toml emptydir/`` checked d.toml and exited 0, saying nothing of the folder, where
    ``check emptydir/`` alone exits 2 (found by a QA pass); a missing path beside another is reported already."""
    good = write(tmp_path, DENSE_COLUMN, "d.toml")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("# no blocks\n", encoding="utf-8")
    result = run("check", str(good), str(empty), *FAST_ARGS, "--format", "json")
    assert result.exit_code == 2, result.output
    files = json.loads(result.stdout)["files"]
    assert [(f["path"], f["status"]) for f in files] == [(str(empty), "error"), (str(good), "passed")]
    assert files[0]["error"] == f"{empty}: no *.toml files (nor *.md notes with ```toml backpropcheck blocks) under " \
                                "this folder"
    assert run("check", str(good), str(empty), *FAST_ARGS, "--only-derivations").exit_code == 0  # as alone
    report = bpc.check([good, empty], **FAST)  # the API reports it the same way
    assert report.exit_status == 2 and [(f.path, f.error) for f in report.files][1] == (str(empty), files[0]["error"])
    assert bpc.check(empty).exit_status == 2


@pytest.mark.parametrize("command", ["check", "explain", "derive"])
def test_the_flag_a_bound_error_names_is_one_the_command_has(command: str, tmp_path: Path) -> None:
    """explain and derive said "raise it with --max-depth" but had no such flag (found by a QA pass): they take
    check's bound flags now, and the API's explain a Limits."""
    deep = write(tmp_path, DENSE_COLUMN.replace('"W @ a + b"', '"W @ a + ' + "(" * 70 + "b" + ")" * 70 + '"'))
    refused = CliRunner().invoke(main, [command, str(deep), "--no-symbolic"])
    assert refused.exit_code == 2 and "exceeds the limit of 64; raise it with --max-depth" in refused.output
    quick = ["--trials", "3"] if command == "explain" else [*FAST_ARGS, "--no-symbolic"] if command == "check" else []
    raised = CliRunner().invoke(main, [command, str(deep), *quick, "--max-depth", "200"])
    assert raised.exit_code == 0 and "exceeds the limit" not in raised.output, raised.output
    help_text = CliRunner().invoke(main, [command, "--help"]).output
    assert all(Limits.flag(name) in help_text for name in LIMIT_FIELDS)
    if command == "explain":
        with pytest.raises(bpc.DerivationError, match="raise it with --max-depth"):
            bpc.explain(deep, symbolic=False)
        assert bpc.explain(deep, symbolic=False, limits=Limits(max_depth=200)).ok


@pytest.mark.parametrize("args", [["--file-timeout", "inf"], ["--file-timeout", "1e12"],
                                  ["--max-memory", "100000000000000"]])
def test_a_bound_past_what_the_os_takes_is_no_bound_not_a_crash(args: list[str], tmp_path: Path) -> None:
    """A wait of 1e12 s or inf, or an address-space limit past 2**63 bytes, was an OverflowError traceback
    (or a worker dead with status 70): the flags take them, so they mean "no bound"."""
    good = str(write(tmp_path, DENSE_COLUMN))
    for command in (["check", good, *FAST_ARGS], ["explain", good, "--trials", "2", "--no-symbolic"]):
        result = CliRunner().invoke(main, [*command, *args])
        assert result.exit_code == 0, result.output  # an exception would be exit code 1


def test_missing_file_is_an_invalid_file(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "nope.toml"), *FAST_ARGS)
    assert result.exit_code == 2 and "nope.toml" in result.output and "cannot read" in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


# -- real processes ---------------------------------------------------------------------------


def test_python_m_version_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "backpropcheck", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "backpropcheck" in proc.stdout and __version__ in proc.stdout


def test_console_script_check_subprocess(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "backpropcheck"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "backpropcheck"]
    path = write(tmp_path, WRONG)
    proc = subprocess.run([*cmd, "check", str(path), *FAST_ARGS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "shape-error" in proc.stdout and "proved" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


RUN_EXITS = """
import atexit, sys
from backpropcheck.cli import run
marker = sys.argv[1]
atexit.register(lambda: open(marker, "w").write("atexit ran"))
sys.argv = ["backpropcheck", *sys.argv[2:]]
run()
"""


@pytest.mark.parametrize(("args", "status"), [(["--format", "json"], 0), (["--format", "json", "--nope"], 2)])
def test_the_fast_exit_keeps_the_status_the_whole_report_and_the_atexit_handlers(
        tmp_path: Path, args: list[str], status: int) -> None:
    """``run`` ends the process without the interpreter's teardown: stdout still arrives whole, the
    status is the command's, and the atexit handlers run."""
    marker = tmp_path / "marker"
    cmd = [sys.executable, "-c", RUN_EXITS, str(marker), "check", str(write(tmp_path, DENSE_COLUMN)), *FAST_ARGS, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == status, proc.stderr
    assert marker.read_text() == "atexit ran"
    if status == 0:
        assert json.loads(proc.stdout)["summary"]["ok"] == 4  # the whole report, flushed
    else:
        assert "No such option" in proc.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["check", "{file}", *FAST_ARGS], ["check", "{file}", *FAST_ARGS, "--format", "json"],
                                  ["--help"], ["explain", "{file}", "--no-symbolic"]])
def test_a_report_that_cannot_be_written_exits_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    """stdout on a full disk is an error of the run (2), not "a claim failed" (1), and no traceback."""
    path = str(write(tmp_path, DENSE_COLUMN))
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "backpropcheck", *[a.format(file=path) for a in args]],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("closed", [">&- 2>/dev/null", "2>&- >/dev/null"])
def test_a_closed_stdout_or_stderr_keeps_the_status(tmp_path: Path, closed: str) -> None:
    """Started with fd 1 or 2 closed (cron, daemons), Python's sys.stdout or sys.stderr is None: the exit
    must not trip on it (found in review: a traceback and status 1 whatever the check found)."""
    good, bad = write(tmp_path, DENSE_COLUMN, "good.toml"), write(tmp_path, DENSE_COLUMN + "junk = 1\n", "bad.toml")
    for path, status in ((good, 0), (bad, 2)):
        cmd = f"{shlex.quote(sys.executable)} -m backpropcheck check {shlex.quote(str(path))} --no-symbolic {closed}"
        assert subprocess.run(["bash", "-c", cmd], timeout=120).returncode == status, (path, closed)


def test_importing_the_main_module_does_not_end_the_process() -> None:
    """pydoc and doctest collection import ``backpropcheck.__main__``; only running it runs the program."""
    proc = subprocess.run([sys.executable, "-c", "import backpropcheck.__main__; print('still here')"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "still here", proc.stderr


HELP_IMPORTS = """
import sys
from backpropcheck.cli import main
for args in (["--help"], ["--version"], ["check", "--help"]):
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
heavy = sorted(m for m in ("numpy", "sympy") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def test_help_and_version_import_neither_numpy_nor_sympy() -> None:
    proc = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and __version__ in proc.stdout
    assert "HEAVY:\n" in proc.stdout, proc.stdout


# -- start-up: --no-symbolic never imports SymPy (help and version: the test above) ----------------


def _modules_after(args: list[str]) -> set[str]:
    code = (
        "import sys\nfrom backpropcheck.cli import main\n"
        f"try:\n    main({args!r}, prog_name='backpropcheck')\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(m for m in ('numpy', 'sympy') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=False)
    line = next(li for li in out.stdout.splitlines() if li.startswith("MODULES"))
    return set(line.split()[1:])


def test_no_symbolic_never_imports_sympy() -> None:
    assert _modules_after(["check", str(BUNDLED / "dense_column.toml"), "--no-symbolic", "-q"]) == {"numpy"}


def test_the_command_line_sizes_sympys_caches_unless_the_user_did() -> None:
    """SymPy reads SYMPY_CACHE_SIZE once, when first imported: the command line sets it before (a larger cache
    than SymPy's default; see cli.main), and a value in the environment stands."""
    from backpropcheck.cli import SYMPY_CACHE_SIZE

    code = ("import sys\nfrom backpropcheck.cli import main\n"
            "try:\n    main(['check', '--help'], prog_name='backpropcheck')\n"  # the group's body runs first
            "except SystemExit:\n    pass\n"
            "assert 'sympy' not in sys.modules\n"
            "import sympy.core.cache\nprint('SIZE', sympy.core.cache.SYMPY_CACHE_SIZE)")
    env = {k: v for k, v in os.environ.items() if k != "SYMPY_CACHE_SIZE"}
    for given, expected in ((None, SYMPY_CACHE_SIZE), ("123", 123)):
        run_env = env if given is None else {**env, "SYMPY_CACHE_SIZE": given}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, timeout=120)
        assert f"SIZE {expected}" in out.stdout, (out.stdout, out.stderr)
    assert SYMPY_CACHE_SIZE > 1000  # larger than SymPy's default


def test_quiet_and_verbose_together_are_a_usage_error(tmp_path: Path) -> None:
    """-q -v printed the quiet report, -v silently lost (QA pass)."""
    path = write(tmp_path, DENSE_COLUMN)
    result = CliRunner().invoke(main, ["check", str(path), "-q", "-v"])
    assert result.exit_code == 2 and "-q/--quiet and -v/--verbose" in result.output


def test_a_file_named_twice_is_checked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check d.toml ./d.toml (or a file and its folder) checked and counted it twice (QA pass)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", DENSE_COLUMN, "d.toml")
    result = CliRunner().invoke(main, ["check", "sub/d.toml", "./sub/d.toml", "sub", "--trials", "2", "--shapes", "1"])
    assert result.exit_code == 0 and "1 file(s), 4 claim(s)" in result.output, result.output


@pytest.mark.parametrize("flag", [["--max-dim", "10000"], ["--dims", "n=99999"]])
def test_a_size_past_the_dim_limit_is_one_usage_error(tmp_path: Path, flag: list[str]) -> None:
    """It was the same error once per file (QA pass)."""
    paths = [str(write(tmp_path, DENSE_COLUMN, f"d{k}.toml")) for k in range(2)]
    result = CliRunner().invoke(main, ["check", *paths, *flag])
    assert result.exit_code == 2 and result.output.count("exceeds the limit of 8192") == 1, result.output
