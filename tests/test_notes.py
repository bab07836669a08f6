"""Derivations inside lecture notes: ```toml backpropcheck blocks in Markdown, checked like files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DENSE_COLUMN, with_claims

from backpropcheck.checker import find_files
from backpropcheck.cli import main
from backpropcheck.notes import blocks

FAST = ["--trials", "3", "--shapes", "1"]
GOOD = {"grad_z": "grad_h * f_prime(z)", "grad_a": "W.T @ grad_z", "grad_W": "outer(grad_z, a)", "grad_b": "grad_z"}
WRONG = with_claims(DENSE_COLUMN, {**GOOD, "grad_b": "-grad_z"})
BROKEN = '[derivation]\ntitle = "broken"\n[dims]\nn = "x"\n[inputs]\na = ["n"]\n[forward]\nz = "a ^ 2"\n' \
         '[loss]\nupstream = "z"\n[claims]\ngrad_a = "2 * a"\n'


def note(*parts: str) -> str:
    return "\n".join(parts)


def fence(text: str, info: str = "toml backpropcheck") -> str:
    return f"```{info}\n{text.strip()}\n```\n"


def line_of(text: str, needle: str, after: int = 0) -> int:
    """1-based line of the first line containing ``needle`` at or after line ``after``."""
    for k, line in enumerate(text.splitlines(), 1):
        if k >= after and needle in line:
            return k
    raise AssertionError(needle)


def test_only_blocks_with_the_info_string_are_derivations() -> None:
    text = note("# Notes", "", fence("x = 1", "toml"), fence('a = "b"', "python"), fence('[derivation]', "toml backpropcheck"),
                "~~~toml backpropcheck", "[dims]", "~~~", "   ```toml backpropcheck", "   [claims]", "   ```")
    found = blocks(text)
    assert [b.text for b in found] == ["[derivation]\n", "[dims]\n", "[claims]\n"]
    assert [b.line for b in found] == [line_of(text, "[derivation]"), line_of(text, "[dims]"), line_of(text, "[claims]")]


def test_a_fence_inside_another_block_is_not_a_block() -> None:
    text = note("````markdown", fence("[derivation]"), "````")
    assert blocks(text) == []


def test_check_a_note_checks_every_block_and_locates_errors_at_the_notes_lines(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    text = note("# Lecture 3", "Prose with `code`.", "", fence("print('not a derivation')", "python"),
                fence(DENSE_COLUMN), "A broken block, then a wrong one:", "", fence(BROKEN), fence(WRONG))
    (tmp_path / "notes.md").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check", "notes.md", *FAST, "--format", "json"])
    assert result.exit_code == 2, result.output  # an invalid block is an error, the others are still checked
    report = json.loads(result.stdout)
    first = line_of(text, "[derivation]")
    broken = line_of(text, 'title = "broken"') - 1
    wrong = line_of(text, "[derivation]", broken + 2)
    assert [f["path"] for f in report["files"]] == [f"notes.md:{first}", f"notes.md:{broken}", f"notes.md:{wrong}"]
    assert [f["status"] for f in report["files"]] == ["passed", "error", "failed"]
    bad_line = line_of(text, 'z = "a ^ 2"')
    assert report["files"][1]["error"].startswith(f"notes.md:{bad_line}, [forward.z], column 1:")
    refuted = next(c for c in report["files"][2]["claims"] if c["name"] == "grad_b")
    assert refuted["verdict"] == "refuted"
    # the reproduce command names the block, and works as printed
    command = refuted["counterexample"]["command"].split()
    assert command[2] == f"notes.md:{wrong}"
    again = CliRunner().invoke(main, [*command[1:], *FAST[2:]])
    assert again.exit_code == 1 and "grad_b refuted" in again.stdout


def test_a_toml_syntax_error_names_the_notes_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = note("intro", "", "more", fence('[derivation]\ntitle = "x"\nthis is not toml'))
    (tmp_path / "n.md").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check", "n.md", *FAST])
    assert result.exit_code == 2
    bad = line_of(text, "this is not toml")
    assert f"n.md:{bad}: invalid TOML" in result.stdout and f"(at line {bad}, column" in result.stdout


def test_a_claim_error_names_the_claims_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = note("# x", fence(with_claims(DENSE_COLUMN, {**GOOD, "grad_a": "np.dot(W.T, grad_z)"})))
    (tmp_path / "n.md").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check", "n.md", *FAST, "--format", "json"])
    claim = next(c for c in json.loads(result.stdout)["files"][0]["claims"] if c["name"] == "grad_a")
    assert claim["verdict"] == "error"
    assert claim["message"].startswith(f"n.md:{line_of(text, 'grad_a = ')}, [claims.grad_a], column 1: drop the `np.`")


def test_folders_pick_up_notes_with_blocks_and_leave_other_markdown_alone(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Derivations\n\n```toml\n[tool]\n```\n", encoding="utf-8")
    (tmp_path / "dense.toml").write_text(DENSE_COLUMN, encoding="utf-8")
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "week1.md").write_text(note("# Week 1", fence(DENSE_COLUMN)), encoding="utf-8")
    files = find_files([str(tmp_path)])
    assert files == [str(tmp_path / "course" / "week1.md") + ":3", str(tmp_path / "dense.toml")]
    result = CliRunner().invoke(main, ["check", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    assert "README" not in result.stdout


def test_a_note_without_blocks_named_explicitly_has_nothing_to_check(tmp_path: Path) -> None:
    """pre-commit passes every staged *.md: a README must not fail the commit."""
    readme = tmp_path / "README.md"
    readme.write_text("# nothing here\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(readme)])
    assert result.exit_code == 0 and "nothing to check" in result.stderr


def test_a_block_that_is_never_closed_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "open.md"
    path.write_text("# x\n```toml backpropcheck\n" + DENSE_COLUMN, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(path), *FAST])
    assert result.exit_code == 2 and "is never closed" in result.stdout


def test_derive_locates_a_blocks_errors_at_the_notes_lines_as_check_does(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs promise "errors point at the note's own lines": derive must say what check says."""
    text = note("# Lecture", "", "Intro.", "", fence(BROKEN), "", fence('[derivation]\ntitle = "bad toml'))
    (tmp_path / "notes.md").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    broken = line_of(text, 'title = "broken"') - 1
    bad_toml = line_of(text, 'title = "bad toml') - 1
    for block in (broken, bad_toml):
        checked = CliRunner().invoke(main, ["check", f"notes.md:{block}", *FAST])
        said = next(line.strip().removeprefix("error ") for line in checked.stdout.splitlines()
                    if line.strip().startswith("error "))
        derived = CliRunner().invoke(main, ["derive", f"notes.md:{block}"])
        assert derived.exit_code == 2, derived.output
        assert derived.stderr.strip() == f"error: {said}"
    bad = line_of(text, 'title = "bad toml')
    assert said.startswith(f"notes.md:{bad}: invalid TOML") and f"(at line {bad}, column" in said
    # a note's block that does not exist, or a note that is not UTF-8: an error, not a traceback
    assert "no ```toml backpropcheck block starts at line 2" in CliRunner().invoke(main, ["derive", "notes.md:2"]).stderr
    (tmp_path / "latin.md").write_bytes(b"# caf\xe9\n")
    unreadable = CliRunner().invoke(main, ["derive", "latin.md"])
    assert unreadable.exit_code == 2 and "not UTF-8" in unreadable.stderr


def test_a_note_past_its_size_bound_is_one_error_naming_the_bound_it_crossed(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A note may hold 4 × --max-file-bytes: past that it is one error saying so, not one per block (the
    blocks were found under the default bound, then each failed under the given one, 'limit of 100')."""
    text = note("# Notes", fence(DENSE_COLUMN), fence(DENSE_COLUMN), fence(DENSE_COLUMN))
    (tmp_path / "notes.md").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    bound = -(-len(text.encode()) // 4) - 1  # the note is just past 4 × the bound, and within 4 × (bound + 1)
    result = CliRunner().invoke(main, ["check", "notes.md", *FAST, "--max-file-bytes", str(bound), "--format", "json"])
    assert result.exit_code == 2, result.output
    (only,) = json.loads(result.stdout)["files"]
    assert only["status"] == "error" and only["path"] == "notes.md"
    assert f"exceeds the limit of {4 * bound} (4 × --max-file-bytes {bound})" in only["error"]
    result = CliRunner().invoke(main, ["check", "notes.md", *FAST, "--max-file-bytes", str(bound + 1)])
    assert result.exit_code == 0, result.output  # within 4 × the bound, every block (each within it) is checked
