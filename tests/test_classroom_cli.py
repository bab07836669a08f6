"""The classroom commands from a directory outside the repository: explain, demo, new, list,
and check --examples on the derivations shipped inside the package."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import sweep

from backpropcheck import cli
from backpropcheck.templates import bundled_files

DERIVATIONS = Path(__file__).resolve().parent.parent / "backpropcheck" / "derivations"
ALL_FILES = sorted(DERIVATIONS.rglob("*.toml"))
FAST = ["--no-symbolic", "--trials", "1"]


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """Run from an empty directory: nothing of the repository is reachable by a relative path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(cli.main, list(args))


# -- new --------------------------------------------------------------------------------------------


def test_new_writes_a_template_that_checks_cleanly(outside):
    made = run("new", "layer.toml")
    assert made.exit_code == 0, made.output
    text = (outside / "layer.toml").read_text()
    assert text.startswith("#") and "[claims]" in text
    checked = run("check", "layer.toml", "--trials", "3", "--shapes", "1")
    assert checked.exit_code == 0, checked.output
    assert "proved" in checked.output


def test_new_writes_a_note_holding_the_template_for_a_markdown_path(outside):
    """check reads only a note's ```toml backpropcheck blocks: bare TOML in n.md would be ignored."""
    for name in ("n.md", "lecture.markdown"):
        made = run("new", name)
        assert made.exit_code == 0, made.output
        text = (outside / name).read_text()
        assert text.startswith("# ") and "```toml backpropcheck\n" in text
        checked = run("check", name, "--trials", "3", "--shapes", "1", "--format", "json")
        assert checked.exit_code == 0, checked.output
        (block,) = json.loads(checked.stdout)["files"]
        assert block["path"] == f"{name}:{text.splitlines().index('```toml backpropcheck') + 2}"
        assert len(block["claims"]) == 5 and all(c["verdict"] == "proved" for c in block["claims"])
        assert run("explain", name, "--claim", "grad_x", "--no-symbolic").exit_code == 0


def test_new_refuses_to_overwrite_without_force(outside):
    target = outside / "mine.toml"
    target.write_text("keep me")
    refused = run("new", str(target))
    assert refused.exit_code == 2  # a usage error, as check's (it was click's 1)
    assert "--force" in refused.output
    assert target.read_text() == "keep me"
    forced = run("new", str(target), "--force")
    assert forced.exit_code == 0
    assert "[derivation]" in target.read_text()
    assert sorted(p.name for p in outside.iterdir() if "mine" in p.name) == ["mine.toml"]  # no temporary left


def test_new_force_keeps_the_mode_and_writes_through_a_link(outside):
    import os

    target = outside / "kept.toml"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = outside / "link.toml"
    link.symlink_to(target)
    assert run("new", str(link), "--force").exit_code == 0
    assert link.is_symlink() and "[derivation]" in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o640


def test_new_writes_through_nothing_it_cannot_create(outside):
    refused = run("new", str(outside / "missing" / "layer.toml"))
    assert refused.exit_code == 2 and "cannot write" in refused.output and "Traceback" not in refused.output


# -- list ----------------------------------------------------------------------------------------------


def test_list_shows_every_bundled_derivation_with_its_title(outside):
    listed = run("list")
    assert listed.exit_code == 0, listed.output
    assert "dense_column.toml" in listed.output and "Dense layer, column vectors" in listed.output
    assert "mistakes/missing_transpose_square.toml" in listed.output
    names = [name for name, _ in bundled_files()]
    assert len(names) == len(ALL_FILES)
    assert all(name in listed.output for name in names)


# -- check --examples -------------------------------------------------------------------------------


def test_check_examples_checks_the_package_copy(outside):
    checked = run("check", "--examples", *FAST, "-q")
    assert checked.exit_code == 0, checked.output
    assert f"{len(ALL_FILES)} file(s)" in checked.output


def test_check_without_paths_or_examples_outside_the_repo_is_a_usage_error(outside):
    assert run("check").exit_code == 2


# -- demo ------------------------------------------------------------------------------------------------


def test_demo_tells_the_whole_story_without_pausing_when_piped(outside, monkeypatch):
    def no_pause(*args, **kwargs):
        raise AssertionError("demo paused although stdin/stdout are not a terminal")

    monkeypatch.setattr(click, "pause", no_pause)
    monkeypatch.setattr(click, "getchar", no_pause)
    shown = run("demo")
    assert shown.exit_code == 0, shown.output
    out = shown.output
    for k in range(1, 8):
        assert f"Step {k}/7" in out
    assert "grad_a = W.T @ grad_z   proved" in out and "grad_W = outer(grad_z, a)   proved" in out  # derived
    assert "z[0] = W[0,0]·a[0] + W[0,1]·a[1] + W[0,2]·a[2] + b[0]" in out  # scalar equations
    assert "∂h/∂z is diagonal" in out and "∇a = (∂z/∂a)ᵀ ∇z = Wᵀ ∇z" in out and "∇W = ∇z aᵀ" in out
    assert "PROVED" in out
    assert "REFUTED" in out and "Diagnosis: W is used in the wrong orientation" in out
    assert "∇a = (∂z/∂a)ᵀ ∇z = W ∇z" in out  # the W[i, j] twist
    assert "shape-error" in out


def test_demo_pauses_between_steps_on_a_terminal_unless_no_pause(outside, monkeypatch):
    pauses = []
    monkeypatch.setattr(click, "getchar", lambda *a, **k: pauses.append(1) or " ")
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    assert run("demo").exit_code == 0
    assert len(pauses) == 6  # between the 7 steps
    pauses.clear()
    assert run("demo", "--no-pause").exit_code == 0
    assert pauses == []


@pytest.mark.parametrize(("key", "status"), [(KeyboardInterrupt, 130), ("q", 0), ("Q", 0), (EOFError, 0)])
def test_demo_ends_at_a_pause_on_ctrl_c_q_or_ctrl_d(outside, monkeypatch, key, status):
    """Ctrl-C exits 130 as check does; q (or Ctrl-D) ends the walk-through there. click.pause swallowed both."""
    def read_key(*args, **kwargs):
        if isinstance(key, type):
            raise key
        return key

    monkeypatch.setattr(click, "getchar", read_key)
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    shown = run("demo")
    assert shown.exit_code == status, shown.output
    assert "Step 1/7" in shown.stdout and "Step 2/7" not in shown.stdout
    assert ("interrupted" in shown.stderr) == (status == 130)


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_demo_on_a_real_terminal_exits_130_on_ctrl_c(outside):
    """The key is read in raw mode, where Ctrl-C is a character, not a signal: it must still end the demo."""
    import contextlib
    import os
    import pty
    import select
    import signal
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo on the pty
        os.execv(sys.executable, [sys.executable, "-m", "backpropcheck", "demo"])
    out, status, end = b"", None, time.monotonic() + 120

    def read() -> None:
        nonlocal out
        if select.select([fd], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):  # the child has gone
                out += os.read(fd, 65536)

    try:
        while b"next step" not in out and time.monotonic() < end:
            read()
        assert b"next step" in out, out[-500:]
        os.write(fd, b"\x03")
        while status is None and time.monotonic() < end:
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
            read()
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert status is not None, f"the demo went on after Ctrl-C: {out[-500:]!r}"
    assert os.waitstatus_to_exitcode(status) == 130
    assert out.count(b"next step") == 1 and b"Step 2/7" not in out


# -- explain -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sweep(ALL_FILES), ids=lambda p: str(p.relative_to(DERIVATIONS)))
def test_explain_runs_on_every_bundled_derivation(path, outside):
    shown = run("explain", str(path), *FAST)
    assert shown.exit_code == 0, shown.output
    assert "4. Verdict on the claim" in shown.output


def test_explain_formats_and_options(outside):
    seed = str(DERIVATIONS / "dense_column.toml")
    md = run("explain", seed, "--claim", "grad_W", "--format", "markdown", *FAST)
    assert md.exit_code == 0
    assert "$$" in md.output and "## grad_W = `outer(grad_z, a)`" in md.output and "grad_a" not in md.output
    tex = run("explain", seed, "--format", "latex", "--output", "notes.tex", *FAST)
    assert tex.exit_code == 0
    assert (outside / "notes.tex").read_text().startswith(r"\documentclass")
    dims = run("explain", seed, "--claim", "grad_a", "--dims", "n=4,m=3", *FAST)
    assert dims.exit_code == 0 and "n=4, m=3" in dims.output
    assert "∂E/∂a[3] = ∇z[0]·W[0,3] + ∇z[1]·W[1,3] + ∇z[2]·W[2,3]" in dims.output


def test_explain_usage_errors(outside):
    seed = str(DERIVATIONS / "dense_column.toml")
    assert run("explain", seed, "--claim", "grad_nope").exit_code == 2
    assert run("explain", seed, "--dims", "n=500").exit_code == 2
    assert run("explain", "missing.toml").exit_code == 2
    (outside / "bad.toml").write_text("[derivation]\ntitle = 'x'\n")
    bad = run("explain", "bad.toml")
    assert bad.exit_code == 2 and "missing" in bad.output


def test_explain_walk_through_respects_the_timeout(outside):
    shown = run("explain", str(DERIVATIONS / "attention.toml"), "--timeout", "0.001", *FAST)
    assert shown.exit_code == 0, shown.output
    assert "budget" in shown.output and "4. Verdict on the claim" in shown.output


# -- issue 14: explain's exit status, list's names, one set of dims ----------------------------------------------

DENSE = (DERIVATIONS / "dense_column.toml").read_text(encoding="utf-8")


def test_explain_exits_1_when_the_claim_it_explains_is_refuted(outside):
    (outside / "wrong.toml").write_text(DENSE.replace('grad_b = "grad_z"', 'grad_b = "-grad_z"'))
    refuted = run("explain", "wrong.toml", "--claim", "grad_b", *FAST)
    assert "REFUTED" in refuted.output and refuted.exit_code == 1
    holds = run("explain", "wrong.toml", "--claim", "grad_a", *FAST)
    assert "VERIFIED" in holds.output and holds.exit_code == 0
    assert run("explain", "wrong.toml", *FAST, "--format", "markdown").exit_code == 1  # every claim, one refuted
    expected = run("explain", "mistakes/missing_transpose_square.toml", *FAST)  # refuted, as [expect] says
    assert "REFUTED (the file expects refuted)" in expected.output and expected.exit_code == 0
    (outside / "bad.toml").write_text(DENSE.replace('grad_b = "grad_z"', 'grad_b = "grad_q"'))
    assert run("explain", "bad.toml", "--claim", "grad_b", *FAST).exit_code == 2


def test_explain_accepts_every_name_list_prints(outside):
    listed = run("list").output.splitlines()
    names = [line.split()[0] for line in listed if line.split() and line.split()[0].endswith(".toml")]
    assert "dense_column.toml" in names and "mistakes/missing_transpose_square.toml" in names
    for name in ("dense_column.toml", "mistakes/missing_transpose_square.toml", "dense_column"):
        shown = run("explain", name, "--claim", "grad_a", *FAST)
        assert shown.exit_code == 0, (name, shown.output)
    assert "backpropcheck explain dense_column.toml" in listed[-1]
    missing = run("explain", "no_such_example.toml")
    assert missing.exit_code == 2 and "backpropcheck list" in missing.output


def _dims_mentioned(text: str) -> set[str]:
    import re

    return set(re.findall(r"dims ((?:[A-Za-z_]\w*=\d+(?:, )?)+)", text))


def _cex_true(text: str) -> float:
    import re

    return float(re.search(r"\): true (-?[0-9.e+-]+), claimed", text).group(1))


def test_one_explanation_uses_one_set_of_distinct_dims(outside):
    """The walk-through, the counterexample and the grid of a refuted claim all at the same distinct dims."""
    (outside / "three.toml").write_text(
        DENSE.replace('m = "units in layer k+1"', 'm = "units in layer k+1"\np = "unused"')
        .replace('grad_b = "grad_z"', 'grad_b = "-grad_z"'))
    shown = run("explain", "three.toml", "--claim", "grad_b", "--trials", "2")
    assert shown.exit_code == 1
    assert _dims_mentioned(shown.output) == {"n=3, m=2, p=4"}, shown.output
    true = _cex_true(shown.output)  # the counterexample's true value …
    assert f"{true:.3f}" in shown.output.split("True entries next to")[1]  # … is an entry of its grid
    square = run("explain", "mistakes/missing_transpose_square.toml", "--claim", "grad_a", "--trials", "2")
    assert _dims_mentioned(square.output) == {"n=3"}, square.output
    true = _cex_true(square.output)
    assert f"{true:.3f}" in square.output.split("True entries next to")[1]
