"""Issue 10, points 5-9: per-file time and memory bounds, workers and signals, atomic --output, names and trees.

Signals are tested on real subprocesses (``python -m backpropcheck``); limits are lowered so that every
test stays within a few seconds. No test asserts a speed beyond "finished within a generous bound".
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DENSE_COLUMN, check_text, derivation_toml, write

from backpropcheck import checker, cli, runner
from backpropcheck.checker import FileResult, Options, walk_files
from backpropcheck.limits import Limits

NO_COLOR_ENV = {"FORCE_COLOR": None, "NO_COLOR": "1", "TTY_COMPATIBLE": None}
FORK = pytest.mark.skipif(not runner.isolated(), reason="needs fork")
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# 10,000 trials at dims up to 300: half a minute of NumPy, long enough to be interrupted
SLOW = DENSE_COLUMN.replace("[claims]", "[check]\ntrials = 10000\nmax_dim = 300\n\n[claims]")


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner(env=NO_COLOR_ENV).invoke(cli.main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _spawn(*args: str | bytes, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}  # strict UTF-8: no lucky escapes
    return subprocess.Popen([sys.executable, "-m", "backpropcheck", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, **kwargs)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def _wait_for(condition, seconds: float = 20.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- 5. time ----------------------------------------------------------------------------------------------


def test_a_product_is_counted_in_multiply_adds_and_refused_before_any_work(tmp_path: Path) -> None:
    big = derivation_toml(dims={"n": "n"}, inputs={"A": [4096, 4096], "B": [4096, 4096]}, forward={"C": "A @ B"},
                          loss={"upstream": "C"}, claims={"grad_A": "grad_C @ B.T"})
    started = time.monotonic()
    result = check_text(tmp_path, big, Options())
    assert time.monotonic() - started < 30  # it ran 7 minutes before being refused
    assert result.status == "error" and "raise it with --max-flops" in (result.error or "")
    # the count itself: (m, k) @ (k, n) is m*k*n, the forward product thrice (its two VJPs)
    d = checker.load(str(tmp_path / "derivation.toml"))
    products: list = []
    checker._spaces(d, d.claims, Limits(), products)
    sizes = {"n": 2}
    work = {key: [math.prod(x.value(sizes) for x in dims)] for key, dims in products}
    assert work == {"forward.C": [4096 ** 3], "claims.grad_A": [4096 ** 3]}


def test_file_timeout_bounds_the_numeric_stage_and_the_other_files_are_checked(tmp_path: Path) -> None:
    slow = write(tmp_path, SLOW, "slow.toml")
    good = write(tmp_path, DENSE_COLUMN, "good.toml")
    started = time.monotonic()
    code, out, _ = _cli("check", str(slow), str(good), "--no-symbolic", "--file-timeout", "1.5", "--format", "json")
    assert time.monotonic() - started < 20
    report = json.loads(out)
    assert code == 2
    assert [f["status"] for f in report["files"]] == ["error", "passed"]
    assert "exceeds the limit of 1.5; raise it with --file-timeout" in report["files"][0]["error"]


def test_a_trial_is_predicted_only_from_trials_of_comparable_work() -> None:
    """A trial's time is a fixed part plus a part linear in its work: a tiny first trial's pace, charged to a
    trial 2000 times larger, predicted a 6 s file past the 120 s limit; from comparable trials the prediction
    bounds the true time from above, and tighter than the pace of all work done together."""
    from backpropcheck.budget import Pace

    def cost(work: int) -> float:
        return 0.05 + 1e-7 * work

    pace = Pace()
    pace.timed(cost(1000), 1000)
    assert pace.predict(2_000_000) == 0.0  # nothing comparable timed: no prediction, the alarm stays
    assert pace.predict(1000) == pytest.approx(cost(1000))
    pace.timed(cost(500_000), 500_000)
    predicted = pace.predict(2_000_000)
    overall = (cost(1000) + cost(500_000)) / 501_000 * 2_000_000  # the old estimate
    assert cost(2_000_000) <= predicted < overall
    assert pace.predict(0) == 0.0


def test_a_trial_predicted_past_the_deadline_is_refused_with_a_margin() -> None:
    from backpropcheck.budget import FileTimeout
    from backpropcheck.loader import loads

    d = loads(DENSE_COLUMN, "p.toml")
    check = checker._FileCheck(d, Options())
    check.layout = checker._layout(d, d.claims, Limits())
    check._preflight()
    check.deadline = time.monotonic() + 6.0
    check._pace.timed(1.0, 1000)
    check._on_time("", 10_000)  # predicted 10 s: within twice what is left, so it runs
    with pytest.raises(FileTimeout, match="predicted from the trials so far"):
        check._on_time(" (before numeric trial 3)", 15_000)  # 15 s: more than twice


def _stuck(path: str, options: Options = Options()) -> FileResult:  # noqa: B008 - mirrors check_path
    if path == "python":  # pure Python that never looks at the clock (SymPy): the worker's alarm lands
        while True:
            pass
    if path == "in C":  # deaf to the alarm, like a long call into C: only the parent can end it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    return FileResult(path, "t", "passed", None)


@FORK
@pytest.mark.parametrize("stuck", ["python", "in C"])
def test_a_file_past_its_deadline_is_ended_in_every_stage(monkeypatch: pytest.MonkeyPatch, stuck: str) -> None:
    monkeypatch.setattr(checker, "check_path", _stuck)  # the forked workers inherit the stand-in
    options = Options(limits=Limits(file_timeout=0.3))
    started = time.monotonic()
    results = runner.run_files(["ok", stuck, "ok2"], options, jobs=1, fail_fast=False)
    assert time.monotonic() - started < 15
    assert [r.status for r in results] == ["passed", "error", "passed"]
    assert "exceeds the limit of 0.3; raise it with --file-timeout" in (results[1].error or "")
    assert results[1].path == stuck


# -- 6. memory --------------------------------------------------------------------------------------------

BIG_TANH = derivation_toml(dims={"n": "n"}, inputs={"a": ["n"], "X": "{ shape = [3000, 3000], constant = true }"},
                           forward={"h": "tanh(a)", "q": "tanh(X)"}, loss={"upstream": "h"},
                           claims={"grad_a": "grad_h * tanh_prime(a)"})


@FORK
@LINUX
def test_the_memory_bound_is_an_os_limit_on_everything_the_check_allocates(tmp_path: Path) -> None:
    # 9e6 counted entries pass --max-entries by far; the 72 MB arrays do not fit in 64 MB
    big = write(tmp_path, BIG_TANH, "big.toml")
    good = write(tmp_path, DENSE_COLUMN, "good.toml")
    code, out, _ = _cli("check", str(big), str(good), "--no-symbolic", "--trials", "1", "--max-memory", "64",
                        "--format", "json")
    report = json.loads(out)
    assert code == 2 and [f["status"] for f in report["files"]] == ["error", "passed"]
    error = report["files"][0]["error"]
    assert error.startswith(str(big)) and "ran out of memory" in error and "raise it with --max-memory" in error
    code, out, _ = _cli("check", str(big), "--no-symbolic", "--trials", "1", "--max-memory", "1000")
    assert code == 0, out


@LINUX
def test_memory_bounded_limits_this_process_and_restores_the_limit() -> None:
    import resource

    import numpy as np

    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(MemoryError), runner.memory_bounded(50):
        np.empty((100, 1000, 1000))  # 800 MB of address space
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert np.empty((100, 1000, 1000)).shape[0] == 100


# -- 7. workers and signals -------------------------------------------------------------------------------


@FORK
@LINUX
def test_a_killed_worker_costs_only_its_file(tmp_path: Path) -> None:
    slow = write(tmp_path, SLOW, "slow.toml")
    goods = [str(write(tmp_path, DENSE_COLUMN, f"good{k}.toml")) for k in range(3)]
    proc = _spawn("check", str(slow), *goods, "--jobs", "2", "--no-symbolic", "--format", "json")
    # the good files finish and their worker ends; the slow file's worker is then the only child
    worker = _wait_for(lambda: (kids := _children(proc.pid)) and len(kids) == 1 and time.sleep(1.0) is None
                       and _children(proc.pid) == kids and kids[0])
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err
    report = json.loads(out)
    assert proc.returncode == 2
    assert [f["status"] for f in report["files"]] == ["error", "passed", "passed", "passed"]
    assert "killed by SIGKILL" in report["files"][0]["error"] and str(slow) in report["files"][0]["error"]


@FORK
@LINUX
def test_sigterm_to_the_parent_ends_every_worker(tmp_path: Path) -> None:
    files = [str(write(tmp_path, SLOW, f"slow{k}.toml")) for k in range(2)]
    proc = _spawn("check", *files, "--jobs", "2", "--no-symbolic")
    workers = _wait_for(lambda: len(kids := _children(proc.pid)) == 2 and kids)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and b"Traceback" not in err
    _wait_for(lambda: not any(_alive(w) for w in workers), 10)


@FORK
@LINUX
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path, jobs: str) -> None:
    files = [str(write(tmp_path, SLOW, f"slow{k}.toml")) for k in range(2)]
    proc = _spawn("check", *files, "--jobs", jobs, "--no-symbolic", start_new_session=True)
    workers = _wait_for(lambda: len(kids := _children(proc.pid)) == int(jobs) and kids)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
    _, err = proc.communicate(timeout=60)  # generous: a loaded CI machine is slow, not wrong
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err
    _wait_for(lambda: not any(_alive(w) for w in workers), 30)


def test_ctrl_c_in_one_process_is_130_not_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    code, out, err = _cli("check", str(write(tmp_path, DENSE_COLUMN)))
    assert code == 130 and "interrupted" in err and "Aborted" not in out + err


# -- 8. --output --------------------------------------------------------------------------------------------


def test_output_replaces_a_planted_link_and_never_writes_through_it(tmp_path: Path) -> None:
    source = write(tmp_path, DENSE_COLUMN)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "report.json"
    link.symlink_to(target)
    code, _, _ = _cli("check", str(source), "--trials", "2", "--shapes", "1", "--format", "json", "--output", str(link))
    assert code == 0
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and json.loads(link.read_text())["summary"]["ok"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derivation.toml", "precious.txt", "report.json"]


@pytest.mark.skipif(not os.path.islink("/dev/stdout"), reason="/dev/stdout is not a link here")
def test_output_to_dev_stdout_writes_to_stdout_and_leaves_the_link(tmp_path: Path) -> None:
    """/dev/stdout is a link to /proc/self/fd/1: it is the process's own stream, written through, never
    replaced by a file (as root, a rename there would break /dev/stdout for every program)."""
    proc = _spawn("check", str(write(tmp_path, DENSE_COLUMN)), "--trials", "2", "--shapes", "1", "--format",
                  "json", "--output", "/dev/stdout")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["summary"]["ok"] == 4
    assert os.path.islink("/dev/stdout")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_output_to_a_full_device_is_a_clear_error(tmp_path: Path) -> None:
    proc = _spawn("check", str(write(tmp_path, DENSE_COLUMN)), "--trials", "2", "--shapes", "1",
                  "--output", "/dev/full")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"Traceback" not in err and b"cannot write the report to /dev/full: No space left on device" in err


def test_a_file_size_limit_leaves_the_old_report_and_no_truncated_one(tmp_path: Path) -> None:
    import resource

    source = write(tmp_path, DENSE_COLUMN)
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    report.write_text("old report")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # the JSON report is about 5 kB

    proc = _spawn("check", str(source), "--trials", "2", "--shapes", "1", "--format", "json", "--output",
                  str(report), preexec_fn=small_files)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"Traceback" not in err and b"File too large" in err
    assert report.read_text() == "old report"
    assert [p.name for p in report.parent.iterdir()] == ["report.json"]  # no temporary file left


# -- 9. names and trees -------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file names must be UTF-8")
@pytest.mark.parametrize("command", ["check", "explain"])
def test_a_file_name_that_is_not_utf8_works(tmp_path: Path, command: str) -> None:
    name = os.fsencode(tmp_path) + b"/caf\xe9.toml"
    with open(name, "w") as fh:
        fh.write(DENSE_COLUMN)
    extra = ["--trials", "2", "--shapes", "1"] if command == "check" else ["--claim", "grad_b", "--trials", "2"]
    proc = _spawn(command, name, *extra)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"internal error" not in out
    assert b"caf\\xe9.toml" in out  # the byte shown as an escape


def test_a_very_deep_tree_is_walked(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    try:
        for _ in range(1099):
            folder = folder / "d"
            folder.mkdir()
        (folder / "deep.toml").write_text(DENSE_COLUMN)
        (tmp_path / "top.toml").write_text(DENSE_COLUMN)
        files, unreadable = walk_files([str(tmp_path)])
        assert files == sorted([str(folder / "deep.toml"), str(tmp_path / "top.toml")], key=Path)
        assert unreadable == []
    finally:  # shutil.rmtree (pytest's cleanup of old tmp folders) recurses and would fail on this tree
        _remove_tree(tmp_path / "d")


def _remove_tree(top: Path) -> None:
    order, stack = [], [top]
    while stack:
        folder = stack.pop()
        order.append(folder)
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                stack.append(entry)
            else:
                entry.unlink()
    for folder in reversed(order):
        folder.rmdir()


def test_an_unreadable_folder_is_reported_not_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "hidden.toml").write_text(DENSE_COLUMN)
    write(tmp_path, DENSE_COLUMN, "good.toml")
    real = os.scandir

    def scandir(path):  # root reads every folder: refuse one as a chmod 000 would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, out, _ = _cli("check", str(tmp_path), "--trials", "2", "--shapes", "1", "--format", "json")
    report = json.loads(out)
    assert code == 2
    assert [(Path(f["path"]).name, f["status"]) for f in report["files"]] == [("locked", "error"),
                                                                             ("good.toml", "passed")]
    assert "cannot read this folder (Permission denied)" in report["files"][0]["error"]


def test_a_non_ascii_einsum_subscript_is_a_located_error(tmp_path: Path) -> None:
    text = derivation_toml(dims={"n": "n"}, inputs={"a": ["n"]}, forward={"h": "einsum('ä,ä->ä', a, a)"},
                           loss={"upstream": "h"}, claims={"grad_a": "2 * grad_h * a"})
    result = check_text(tmp_path, text)
    assert result.status == "error"
    assert "derivation.toml, [forward.h], column 1" in (result.error or "") and "ASCII letters" in result.error
    assert "internal error" not in result.error


def test_escape_sequences_in_a_title_are_shown_not_obeyed(tmp_path: Path) -> None:
    text = DENSE_COLUMN.replace('title = "Dense layer, column vectors"',
                                'title = "evil \\u001b[31mred\\u001b]0;owned\\u0007 \\u009b2J \\r\\u202e"')
    source = write(tmp_path, text)
    for fmt in ("text", "markdown", "junit"):
        code, out, _ = _cli("check", str(source), "--trials", "2", "--shapes", "1", "--format", fmt)
        assert code == 0
        assert not any(c in out for c in "\x1b\x07\x9b\r\u202e"), fmt
        assert fmt != "text" or "\\x1b[31mred" in out, fmt  # the others show no title of a passed file


def test_toml_names_are_nfkc_normalised_like_expressions(tmp_path: Path) -> None:
    text = ('[derivation]\ntitle = "t"\n[dims]\n"ｎ" = "n"\n[inputs]\n"ａ" = ["ｎ"]\n[functions]\n'
            '"ｆ" = "elementwise"\n[forward]\n"ｈ" = "ｆ(a)"\n[loss]\nupstream = "ｈ"\n[claims]\n'
            'grad_a = "grad_h * f_prime(ａ)"\n')
    result = check_text(tmp_path, text)
    assert result.status == "passed", result.error
    clash = text.replace('"ｆ" = "elementwise"', '"ｅｘｐ" = "elementwise"')
    result = check_text(tmp_path, clash)
    assert result.status == "error" and "'exp' is the name of a built-in function" in (result.error or "")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path, fmt: str) -> None:
    source = write(tmp_path, DENSE_COLUMN)
    proc = _spawn("check", str(source), "--trials", "2", "--shapes", "1", "--format", fmt)
    proc.stdout.close()  # like `| head -1` that has its line: every write now fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


@FORK
@LINUX
def test_workers_end_soon_after_their_parent_is_killed(tmp_path: Path) -> None:
    files = [str(write(tmp_path, SLOW, f"slow{k}.toml")) for k in range(2)]
    proc = _spawn("check", *files, "--jobs", "2", "--no-symbolic")
    workers = _wait_for(lambda: len(kids := _children(proc.pid)) == 2 and kids)
    proc.kill()  # no chance to kill them itself
    proc.communicate(timeout=20)
    _wait_for(lambda: not any(_alive(w) for w in workers), 10)


def test_the_workers_alarm_ends_pure_python_work_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the process itself (no worker, no parent to kill it): the alarm alone ends the busy loop."""
    monkeypatch.setattr(checker, "check_path", _stuck)
    result = runner._within_deadline("python", Options(limits=Limits(file_timeout=0.2)))
    assert result.status == "error" and "raise it with --file-timeout" in (result.error or "")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed
    assert runner._within_deadline("ok", Options(limits=Limits(file_timeout=0.2))).status == "passed"


def test_forked_workers_start_warm() -> None:
    """What the parent imports before forking is all a worker needs: checking files of every kind (a seed
    layer, attention with softmax, labels on a simplex, a max-pool mask, a refuted claim with its report and
    certificate) imports no further module, so no worker pays for an import the parent could share."""
    files = ["dense_column.toml", "attention.toml", "softmax_cross_entropy.toml", "maxpool_2x2.toml",
             "mistakes/transposed_weight_gradient.toml"]
    code = (
        "import sys\n"
        "from backpropcheck import runner, checker\n"
        "runner._warm(checker.Options())\n"
        "before = set(sys.modules)\n"
        f"for f in {files!r}:\n"
        "    checker.check_path('derivations/' + f)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@FORK
def test_the_largest_files_start_first_and_results_keep_file_order(tmp_path: Path) -> None:
    """Without --fail-fast and with more than one job, the largest file starts first (a long file started last
    leaves the other worker idle); the results, and with --fail-fast the starts too, stay in file order."""
    small = str(write(tmp_path, DENSE_COLUMN, "a_small.toml"))
    large = str(write(tmp_path, DENSE_COLUMN + "\n# padding\n" * 200, "b_large.toml"))
    note = str(tmp_path / "NOTE.md") + ":3"  # a notes block: no size of its own, it counts as empty
    assert runner.longest_first([small, large, note]) == [1, 0, 2]
    for jobs, fail_fast, first in ((2, False, large), (1, False, small), (2, True, small)):
        started: list[str] = []
        results = runner.run_files([small, large], Options(symbolic=False), jobs, fail_fast, start=started.append)
        assert started[0] == first, (jobs, fail_fast, started)
        assert [r.path for r in results] == [small, large] and all(r.status == "passed" for r in results)


@pytest.mark.parametrize("isolate", [True, False])
def test_meanwhile_runs_once_after_the_first_workers_start_and_before_any_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolate: bool) -> None:
    """The CLI loads its report's modules in ``meanwhile``, while the workers check: once, after the first
    files went out and before any came back (in-process, before the first file)."""
    if isolate and not runner.isolated():
        pytest.skip("no fork here")
    monkeypatch.setattr(runner, "isolated", lambda: isolate)
    files = [str(write(tmp_path, DENSE_COLUMN, f"{k}.toml")) for k in range(3)]
    events: list[str] = []
    results = runner.run_files(files, Options(symbolic=False, trials=2), 2, False,
                               start=lambda p: events.append("start"), done=lambda p: events.append("done"),
                               meanwhile=lambda: events.append("meanwhile"))
    assert all(r.status == "passed" for r in results)
    assert events.count("meanwhile") == 1 and events.count("done") == 3
    first_done = events.index("done")
    assert events.index("meanwhile") < first_done
    assert events[:events.index("meanwhile")] == (["start", "start"] if isolate else [])


@FORK
def test_a_worker_retires_after_its_share_of_files_and_a_fresh_one_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker freezes what each file leaves behind (never scanned again by its collector); the reference
    cycles among it stay until the worker retires, after FILES_PER_WORKER files, so a long run's memory is
    bounded. The files after it go to a fresh fork, in order, with nothing lost."""
    from backpropcheck import checker

    monkeypatch.setattr(runner, "FILES_PER_WORKER", 2)
    monkeypatch.setattr(checker, "check_path",  # inherited by the forked workers: who checked what
                        lambda path, options: checker.FileResult(path, str(os.getpid()), "passed", None))
    files = [str(write(tmp_path, DENSE_COLUMN, f"f{k}.toml")) for k in range(5)]
    results = runner.run_files(files, checker.Options(), jobs=1, fail_fast=False)
    assert [r.path for r in results] == files
    workers = [r.title for r in results]
    assert workers[0] == workers[1] != workers[2] == workers[3] != workers[4]
    assert str(os.getpid()) not in workers
