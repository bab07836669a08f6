"""The Python API (SPEC §9): ``import backpropcheck as bpc; bpc.check(...)``, ``bpc.explain(...)``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BUNDLED, DENSE_COLUMN, with_claims

import backpropcheck as bpc
from backpropcheck.checker import ClaimResult, FileResult
from backpropcheck.cli import main

FAST = {"trials": 3, "shapes": 1}
GOOD = {"grad_z": "grad_h * f_prime(z)", "grad_a": "W.T @ grad_z", "grad_W": "outer(grad_z, a)", "grad_b": "grad_z"}
WRONG = with_claims(DENSE_COLUMN, {**GOOD, "grad_b": "-grad_z"})


def test_the_public_names() -> None:
    assert {"check", "explain", "Report", "Explanation", "FileResult", "ClaimResult", "__version__"} <= set(bpc.__all__)
    assert set(bpc.__all__) <= set(dir(bpc))
    assert all(getattr(bpc, name) is not None for name in bpc.__all__)
    with pytest.raises(AttributeError):
        bpc.no_such_thing  # noqa: B018


def test_importing_the_package_loads_neither_numpy_nor_sympy() -> None:
    code = "import sys, backpropcheck; backpropcheck.__version__; print('numpy' in sys.modules, 'sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _timeless(value):
    """A report without its wall-clock seconds, which differ between two runs."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_check_a_file_gives_the_checkers_results_and_the_json_report(tmp_path: Path) -> None:
    path = tmp_path / "wrong.toml"
    path.write_text(WRONG, encoding="utf-8")
    report = bpc.check(path, seed=3, **FAST)
    assert isinstance(report, bpc.Report) and not report.ok and report.exit_status == 1
    (result,) = report.files
    assert isinstance(result, FileResult) and result.status == "failed" and result.path == str(path)
    refuted = report.claim("grad_b")
    assert isinstance(refuted, ClaimResult) and refuted.verdict == "refuted" and refuted.counterexample is not None
    assert report.claim("grad_W").verdict == "proved"
    assert (report.summary.claims, report.summary.ok, report.summary.failed) == (4, 3, 1)
    # every JSON field, and the very JSON the CLI writes
    cli = CliRunner().invoke(main, ["check", str(path), "--seed", "3", "--trials", "3", "--shapes", "1",
                                    "--format", "json"])
    assert _timeless(json.loads(report.to_json())) == _timeless(json.loads(cli.stdout)) == _timeless(report.to_dict())
    for claim in report.to_dict()["files"][0]["claims"]:
        got = report.claim(claim["name"])
        assert all(hasattr(got, key) for key in claim)


def test_check_toml_text_folders_notes_and_lists(tmp_path: Path) -> None:
    text = bpc.check(DENSE_COLUMN, **FAST)
    assert text.ok and text.files[0].path == "<string>" and len(text.claims) == 4
    named = bpc.check(WRONG, name="lecture.toml", **FAST)
    assert named.files[0].path == "lecture.toml" and named.claim("grad_b").verdict == "refuted"
    invalid = bpc.check("[derivation]\ntitle = 'x'\n", **FAST)
    assert invalid.exit_status == 2 and invalid.files[0].status == "error"
    assert "the table [dims] is missing" in invalid.files[0].error
    (tmp_path / "a.toml").write_text(DENSE_COLUMN, encoding="utf-8")
    (tmp_path / "README.md").write_text("# no blocks\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text(f"# x\n\n```toml backpropcheck\n{WRONG.strip()}\n```\n", encoding="utf-8")
    folder = bpc.check(tmp_path, **FAST)
    assert [f.path for f in folder.files] == [str(tmp_path / "a.toml"), f"{tmp_path / 'notes.md'}:4"]
    both = bpc.check([tmp_path / "a.toml", str(tmp_path / "a.toml")], **FAST)
    assert len(both.files) == 2
    markdown = bpc.check(f"intro\n```toml backpropcheck\n{DENSE_COLUMN.strip()}\n```\n", name="week1.md", **FAST)
    assert [f.path for f in markdown.files] == ["week1.md:3"] and markdown.ok
    with pytest.raises(FileNotFoundError):
        bpc.check(tmp_path / "missing.toml")


@pytest.mark.parametrize("text", ["", "   ", " \t "])
def test_empty_text_is_an_invalid_derivation_as_an_empty_file_is(text: str, tmp_path: Path) -> None:
    """``bpc.check("")`` was 0 files, ok and exit status 0 (a path ""), where ``check`` of an empty file exits 2."""
    report = bpc.check(text)
    assert report.exit_status == 2 and not report.ok and len(report.files) == 1
    assert report.files[0].status == "error" and "the file is empty" in report.files[0].error
    empty = tmp_path / "empty.toml"
    empty.write_text(text, encoding="utf-8")
    cli = CliRunner().invoke(main, ["check", str(empty)])
    assert cli.exit_code == report.exit_status and "the file is empty" in cli.output
    with pytest.raises(bpc.DerivationError, match="the file is empty"):
        bpc.explain(text)


def test_options_reach_the_checker() -> None:
    report = bpc.check(DENSE_COLUMN, symbolic=False, trials=2, dims={"n": 5, "m": 7})
    assert {c.verdict for c in report.claims} == {"verified"}
    assert all(c.numeric["trials"] == 2 for c in report.claims)
    assert bpc.check(DENSE_COLUMN, symbolic=False, trials=2, dims="n=5,m=7").to_dict() == report.to_dict()
    with pytest.raises(ValueError):
        bpc.check(DENSE_COLUMN, dims={"n": 0})


# (keyword, value, check's flag): out of the range the flag takes; [check]'s ranges hold on every path
OUT_OF_RANGE = [("trials", 0, "--trials"), ("shapes", -1, "--shapes"), ("max_dim", 1, "--max-dim"),
                ("rtol", 10.0, "--rtol"), ("atol", 100.0, "--atol"), ("rtol", float("nan"), "--rtol"),
                ("timeout", -1, "--timeout"), ("seed", -1, "--seed")]


@pytest.mark.parametrize(("keyword", "value", "flag"), OUT_OF_RANGE)
def test_an_option_out_of_range_is_refused_as_on_the_command_line(keyword: str, value: float, flag: str) -> None:
    with pytest.raises(ValueError, match=rf"^{keyword} must be .* \(as {flag}\), not {value!r}$"):
        bpc.check(DENSE_COLUMN, **{keyword: value})
    cli = CliRunner().invoke(main, ["check", str(BUNDLED / "dense_column.toml"), flag, str(value)])
    assert cli.exit_code == 2 and f"Invalid value for '{flag}'" in cli.output


def test_no_keyword_turns_the_evidence_off() -> None:
    """A tolerance past [check]'s range once verified a wrong claim, and trials=0 was an internal error."""
    wrong = (BUNDLED / "mistakes" / "missing_transpose_square.toml").read_text(encoding="utf-8").split("[expect]")[0]
    assert bpc.check(wrong, symbolic=False, **FAST).claim("grad_a").verdict == "refuted"
    with pytest.raises(ValueError, match="rtol must be a number from 0 to 0.001"):
        bpc.check(wrong, symbolic=False, rtol=10.0, atol=100.0)
    for keywords in ({"trials": 0}, {"trials": 1001}, {"timeout": -1.0}):
        with pytest.raises(ValueError, match=f"^{next(iter(keywords))} must be"):
            bpc.explain(DENSE_COLUMN, "grad_a", **keywords)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^trials must be an integer at least 1"):
        bpc.derive(DENSE_COLUMN, options=bpc.Options(trials=0))
    with pytest.raises(ValueError, match="^symbolic must be True or False"):
        bpc.check(DENSE_COLUMN, symbolic="no")  # type: ignore[arg-type]
    assert bpc.check(DENSE_COLUMN, trials=np.int64(2), shapes=1, rtol=1e-3, atol=1e-6, max_dim=2).ok


@pytest.mark.parametrize("dims", ["=3", "1x=3", "n=abc", "n", "n=0"])
def test_dims_are_read_as_check_reads_them(dims: str) -> None:
    """The API took "=3" and {"1x": 3}, which --dims refuses: one parser (options.parse_dims) serves both."""
    cli = CliRunner().invoke(main, ["check", str(BUNDLED / "dense_column.toml"), "--dims", dims])
    assert cli.exit_code == 2 and "Invalid value for '--dims'" in cli.output
    message = cli.output.split("Invalid value for '--dims': ")[1].strip()
    with pytest.raises(ValueError) as refused:
        bpc.check(DENSE_COLUMN, dims=dims)
    assert str(refused.value) == f"dims: {message}"
    key, _, size = dims.partition("=")
    if size.isdigit():
        with pytest.raises(ValueError, match="^dims: "):
            bpc.check(DENSE_COLUMN, dims={key: int(size)})


def test_a_bound_out_of_range_is_refused_as_on_the_command_line() -> None:
    for name, value in (("max_depth", 0), ("max_literal", float("nan")), ("file_timeout", -1.0),
                        ("max_trials", 2.5)):
        with pytest.raises(ValueError, match=f"^the bound {name} .* must be"):
            bpc.Limits(**{name: value})
    with pytest.raises(ValueError, match="limits must be a backpropcheck.Limits"):
        bpc.check(DENSE_COLUMN, limits={"max_depth": 100})  # type: ignore[arg-type]
    for flag in ("--max-literal", "--file-timeout"):  # click's FloatRange let NaN through, switching a bound off
        cli = CliRunner().invoke(main, ["check", str(BUNDLED / "dense_column.toml"), flag, "nan"])
        assert cli.exit_code == 2 and f"Invalid value for '{flag}'" in cli.output


def test_a_report_displays_as_a_table_in_a_notebook() -> None:
    report = bpc.check(with_claims(DENSE_COLUMN, {**GOOD, "grad_b": "-grad_z"}, {"grad_b": "refuted"}) , **FAST)
    md = report._repr_markdown_()
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert md.count("| file | claim | verdict | expression | message |") == 1 and len(rows) == 4
    assert "| `grad_b` | ✅ refuted (expected refuted) | `-grad_z` |" in md
    page = report._repr_html_()
    assert page.count("<tr>") == 5 and "<td><code>grad_a</code></td>" in page and "✅ proved" in page
    hostile = bpc.check(DENSE_COLUMN.replace("Dense layer, column vectors", "<script>x</script>"), **FAST)
    assert "<script>" not in hostile._repr_html_()
    assert repr(report).startswith("<backpropcheck.Report: 1 file(s), 4 claim(s): 4 ok")


def test_explain_returns_the_text_the_markdown_and_the_verdict(tmp_path: Path) -> None:
    path = tmp_path / "wrong.toml"
    path.write_text(WRONG, encoding="utf-8")
    e = bpc.explain(path, "grad_b", trials=2, symbolic=False)
    assert isinstance(e, bpc.Explanation) and not e.ok and [r.verdict for r in e.results] == ["refuted"]
    assert "1. Per neuron: the scalar chain rule" in e.text and str(e) == e.text
    assert e.markdown.startswith("# Dense layer") and e._repr_markdown_() == e.markdown
    assert e.latex.startswith(r"\documentclass")
    assert e.dims == {"n": 3, "m": 2}
    cli = CliRunner().invoke(main, ["explain", str(path), "--claim", "grad_b", "--trials", "2", "--no-symbolic",
                                    "--format", "markdown"])
    assert cli.stdout == e.markdown and cli.exit_code == 1
    holds = bpc.explain(DENSE_COLUMN, "grad_a", trials=2, symbolic=False, dims={"n": 4, "m": 3})
    assert holds.ok and holds.dims == {"n": 4, "m": 3}
    with pytest.raises(KeyError):
        bpc.explain(DENSE_COLUMN, "grad_nope")
    with pytest.raises(bpc.DerivationError):
        bpc.explain("[derivation]\ntitle = 'x'\n")
    with pytest.raises(IsADirectoryError, match="is a folder; explain takes one file"):  # was "not a regular file"
        bpc.explain(tmp_path)
    cli = CliRunner().invoke(main, ["explain", str(tmp_path)])
    assert cli.exit_code == 2 and "is a folder; explain takes one file" in cli.output


def test_explain_stays_both_the_function_and_the_module() -> None:
    import backpropcheck.explain as module

    assert hasattr(module, "explain_derivation") and hasattr(module, "MAX_JACOBIAN")
    assert bpc.explain is module and callable(bpc.explain)
    assert bpc.explain(DENSE_COLUMN, "grad_b", trials=1, symbolic=False).ok


def test_derive_is_part_of_the_api() -> None:
    import backpropcheck as bpc

    assert "derive" in bpc.__all__
    result = bpc.derive(str(BUNDLED / "dense_column.toml"))
    assert {c.name: (c.expr, c.verdict) for c in result.claims}["grad_a"] == ("W.T @ grad_z", "proved")


def test_a_counterexample_in_text_is_reproduced_by_the_api_call() -> None:
    """Text has no file to name: 'backpropcheck check <string> --seed 0' could not be run (QA pass)."""
    text = (BUNDLED / "mistakes" / "missing_transpose_square.toml").read_text().split("[expect]")[0]
    refuted = [c for c in bpc.check(text, trials=5, seed=3).claims if c.verdict == "refuted"]
    assert refuted and refuted[0].counterexample.command == "bpc.check(text, seed=3, trials=5)"
    refuted = [c for c in bpc.check(text, trials=5, dims={"n": 5}, symbolic=False).claims if c.verdict == "refuted"]
    assert refuted[0].counterexample.command == "bpc.check(text, seed=0, trials=5, dims={'n': 5}, symbolic=False)"
