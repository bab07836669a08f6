"""The CI reports: JUnit XML, Markdown, ``--output`` and the JSON Schema of the JSON report."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import DENSE_COLUMN, with_claims, write

from backpropcheck.checker import ClaimResult, Counterexample, FileResult
from backpropcheck.cli import main
from backpropcheck.report import Summary, junit, markdown
from backpropcheck.report.schema import load_schema

FAST = ["--trials", "3", "--shapes", "1"]
GOOD = {"grad_z": "grad_h * f_prime(z)", "grad_a": "W.T @ grad_z", "grad_W": "outer(grad_z, a)",
        "grad_b": "grad_z"}


def _files(root: Path) -> list[str]:
    """Five files covering every outcome: passed, refuted, expected shape-error, claim error, invalid file."""
    write(root, DENSE_COLUMN, "a_good.toml")
    write(root, with_claims(DENSE_COLUMN, {**GOOD, "grad_a": "W.T @ grad_h"}), "b_wrong.toml")
    write(root, with_claims(DENSE_COLUMN, {**GOOD, "grad_W": "outer(a, grad_z)"}, {"grad_W": "shape-error"}),
          "c_expected.toml")
    write(root, with_claims(DENSE_COLUMN, {**GOOD, "grad_b": "grad_z +* 1"}), "d_claim_error.toml")
    write(root, "[derivation]\ntitle = 'broken'\n[dims\n", "e_invalid.toml")
    return sorted(str(p.relative_to(root)) for p in root.glob("*.toml"))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run per format over the same files (run from their folder, so paths are short)."""
    runner = CliRunner()
    out: dict[str, Any] = {}
    here = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        files = _files(here)
        for fmt in ("json", "junit", "markdown", "text"):
            result = runner.invoke(main, ["check", *files, *FAST, "--format", fmt])
            assert result.exit_code == 2, result.output  # an invalid file and a claim error
            out[fmt] = result.stdout
        out["text -v"] = runner.invoke(main, ["check", *files, *FAST, "-v"]).stdout
        from backpropcheck.api import check

        out["api"] = check(files, trials=3, shapes=1)
    out["json text"] = out["json"]
    out["json"] = json.loads(out["json"])
    return out


def _untimed(report: str) -> str:
    return re.sub(r'time="[0-9.]+"|"seconds": [0-9.e-]+', "T", report)


@pytest.mark.parametrize("fmt", ["json", "junit", "markdown", "text", "text -v"])
def test_every_format_is_one_reporter_for_the_cli_and_the_api(reports: dict[str, Any], fmt: str) -> None:
    """The registry's reporter renders what ``check --format`` prints, from the API's Report."""
    from backpropcheck.report.formats import FORMATS

    name, _, flag = fmt.partition(" ")
    cli = reports["json text" if fmt == "json" else fmt]
    assert _untimed(reports["api"].render(name, verbose=flag == "-v")) == _untimed(cli)
    assert set(FORMATS) == {"text", "json", "junit", "markdown"}
    if fmt == "text -v":  # the failure's fragments in order, the reproduce line last
        lines = [line.strip() for line in cli.splitlines()]
        k = lines.index(next(x for x in lines if x.startswith("counterexample: ")))
        assert lines[k + 1].startswith("true ") and lines[k + 3].startswith("reproduce: backpropcheck check")


# -- JUnit --------------------------------------------------------------------------------------------------


def test_junit_parses_and_its_counts_equal_the_json_summary(reports: dict[str, Any]) -> None:
    root = ET.fromstring(reports["junit"])
    summary = reports["json"]["summary"]
    files_without_claims = sum(1 for f in reports["json"]["files"] if not f["claims"])
    assert root.tag == "testsuites"
    assert int(root.get("failures")) == summary["failed"] == 1
    assert int(root.get("errors")) == summary["errors"] == 2
    assert int(root.get("tests")) == summary["claims"] + files_without_claims
    cases = root.findall("testsuite/testcase")
    assert len(cases) == int(root.get("tests"))
    passed = [c for c in cases if c.find("failure") is None and c.find("error") is None]
    assert len(passed) == summary["ok"]
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [f["path"] for f in reports["json"]["files"]]
    for suite, file in zip(suites, reports["json"]["files"]):
        assert int(suite.get("tests")) == len(suite.findall("testcase")) == max(len(file["claims"]), 1)
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors")) == len(suite.findall("testcase/error"))


def test_junit_failure_carries_the_counterexample_and_the_reproduce_command(reports: dict[str, Any]) -> None:
    root = ET.fromstring(reports["junit"])
    (failure,) = root.findall("testsuite/testcase/failure")
    case = root.find("testsuite/testcase[failure]")
    assert case.get("name") == "grad_a" and case.get("classname") == "b_wrong"
    assert failure.get("type") == "refuted"
    message = failure.get("message")
    assert message.startswith("refuted: ")
    assert "counterexample: " in message and "entry [" in message
    assert "reproduce: backpropcheck check b_wrong.toml --seed 0" in message
    assert "true entry, per neuron:" in failure.text


def test_junit_errors_for_an_invalid_file_and_a_claim_error(reports: dict[str, Any]) -> None:
    root = ET.fromstring(reports["junit"])
    errors = {c.get("name"): c.find("error") for c in root.iter("testcase") if c.find("error") is not None}
    assert set(errors) == {"e_invalid.toml", "grad_b"}
    assert errors["e_invalid.toml"].get("type") == "invalid-file"
    assert "invalid TOML" in errors["e_invalid.toml"].get("message")
    expected = root.find("testsuite[@name='c_expected.toml']/testcase[@name='grad_W']")
    assert expected.find("failure") is None and "shape-error as expected" in expected.findtext("system-out")


def test_junit_survives_control_characters_and_markup() -> None:
    claim = ClaimResult("grad_x", "x < 1 & y", "refuted", "holds", False, "bad \x01 byte <b>&", counterexample=Counterexample(
        {"n": 2}, 0, 1, [0], 1.0, 2.0, None, "backpropcheck check 'a b.toml' --seed 0"))
    results = [FileResult("dir/a b.toml", "title \x1b[31m", "failed", None, [claim])]
    root = ET.fromstring(junit.render(results, 0))
    failure = root.find("testsuite/testcase/failure")
    assert "bad \ufffd byte <b>&" in failure.get("message")
    assert "reproduce: backpropcheck check 'a b.toml' --seed 0" in failure.get("message")
    assert root.find("testsuite/testcase").get("classname") == "dir.a b"


# -- Markdown -----------------------------------------------------------------------------------------------


def _rows(text: str) -> list[list[str]]:
    """Cells of every table row, split on unescaped pipes."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([c.strip() for c in cells])
    return rows


def test_markdown_summary_and_per_file_tables(reports: dict[str, Any]) -> None:
    text = reports["markdown"]
    s = reports["json"]["summary"]
    rows = _rows(text)
    assert rows[0] == ["files", "claims", "ok", "failed", "errors", "seed"]
    assert rows[1] == [str(s["files"]), str(s["claims"]), str(s["ok"]), str(s["failed"]), str(s["errors"]), "0"]
    assert "❌ some claims do not hold" in text
    claim_rows = [r for r in rows if len(r) == 5 and r[1] != "claim"]
    assert len(claim_rows) == s["claims"]
    (wrong,) = [r for r in claim_rows if r[2] == "refuted"]
    assert wrong[1] == "`grad_a`" and wrong[3] == "`W.T @ grad_h`"
    assert "counterexample:" in wrong[4] and "reproduce: `backpropcheck check b_wrong.toml --seed 0" in wrong[4]
    assert "<details><summary>✅ passed: <code>a_good.toml</code> (4 claims)</summary>" in text
    assert "### ⚠️ error: `e_invalid.toml`" in text and "**error:**" in text


def test_markdown_escapes_pipes_backticks_and_html() -> None:
    claim = ClaimResult("grad_x", "a | `b`", "refuted", "holds", False, "<script>x</script> | y")
    text = markdown.render([FileResult("f.toml", "t", "failed", None, [claim])], 0)
    (row,) = [r for r in _rows(text) if r and r[1] == "`grad_x`"]
    assert len(row) == 5
    assert row[3] == "`` a \\| `b` ``"
    assert "<script>" not in text and "&lt;script&gt;" in row[4]


def test_markdown_quiet_leaves_out_passing_files(reports: dict[str, Any], tmp_path: Path) -> None:
    write(tmp_path, DENSE_COLUMN, "good.toml")
    result = CliRunner().invoke(main, ["check", str(tmp_path), *FAST, "--format", "markdown", "-q"])
    assert result.exit_code == 0
    assert "✅ all claims hold" in result.stdout and "good.toml" not in result.stdout


# -- --output -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "markdown"])
def test_output_writes_the_report_to_a_file(fmt: str, tmp_path: Path) -> None:
    source = write(tmp_path, DENSE_COLUMN, "good.toml")
    target = tmp_path / "out" / f"report.{fmt}"
    target.parent.mkdir()
    result = CliRunner().invoke(main, ["check", str(source), *FAST, "--format", fmt, "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    written = target.read_text(encoding="utf-8")
    if fmt == "json":
        assert json.loads(written)["summary"]["ok"] == 4
    elif fmt == "junit":
        assert ET.fromstring(written).get("tests") == "4"
    elif fmt == "markdown":
        assert "| 1 | 4 | 4 | 0 | 0 | 0 |" in written
    else:
        assert "1 file(s), 4 claim(s): 4 ok" in written


# -- JSON Schema --------------------------------------------------------------------------------------------


def _conforms(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> list[str]:
    """A tiny validator for the keywords schema.json uses, so the schema is exercised without jsonschema."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return _conforms(value, root["$defs"][name], root, where)
    problems: list[str] = []
    if "oneOf" in schema:
        matches = sum(not _conforms(value, s, root, where) for s in schema["oneOf"])
        if matches != 1:
            problems.append(f"{where}: matches {matches} of oneOf")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "type" in schema:
        kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
                 "integer": int, "number": (int, float)}
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, kinds[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in types)
        if not ok:
            return [f"{where}: {value!r} is not {types}"]
    if isinstance(value, (int, float)) and "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        problems += [f"{where}: missing {k}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                problems += _conforms(item, props[key], root, f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: unexpected key {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += _conforms(item, schema["additionalProperties"], root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += _conforms(item, schema["items"], root, f"{where}[{i}]")
    return problems


def test_the_json_report_conforms_to_the_shipped_schema(reports: dict[str, Any]) -> None:
    schema = load_schema()
    report = reports["json"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert _conforms(report, schema, schema) == []
    verdicts = {c["verdict"] for f in report["files"] for c in f["claims"]}
    assert {"proved", "refuted", "shape-error", "error"} <= verdicts  # the schema met every branch


def test_the_schema_rejects_a_malformed_report(reports: dict[str, Any]) -> None:
    schema = load_schema()
    bad = json.loads(json.dumps(reports["json"]))
    bad["files"][0]["claims"][0]["verdict"] = "probably"
    del bad["summary"]["errors"]
    bad["files"][1]["claims"][1]["counterexample"]["index"] = "0"
    problems = _conforms(bad, schema, schema)
    assert any("probably" in p for p in problems)
    assert any("missing errors" in p for p in problems)
    assert any("counterexample" in p for p in problems)


def test_jsonschema_validates_real_reports(reports: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(reports["json"])) == []
    bad = json.loads(json.dumps(reports["json"]))
    bad["summary"]["ok"] = -1
    assert list(validator.iter_errors(bad))


def test_summary_matches_the_results(reports: dict[str, Any]) -> None:
    """The JSON summary is what the JUnit counts are compared with, so pin it to the claims themselves."""
    claims = [c for f in reports["json"]["files"] for c in f["claims"]]
    s = reports["json"]["summary"]
    assert s["claims"] == len(claims) and s["ok"] == sum(c["ok"] for c in claims)
    assert Summary(**s) == Summary(5, 16, 14, 1, 2)


def test_output_into_a_missing_folder_is_a_usage_error_before_any_check(tmp_path: Path) -> None:
    source = write(tmp_path, DENSE_COLUMN, "good.toml")
    result = CliRunner().invoke(main, ["check", str(source), *FAST, "--output", str(tmp_path / "no" / "r.xml")])
    assert result.exit_code == 2
    assert "--output" in result.output and "does not exist" in result.output


# -- the file's own text, as written ------------------------------------------------------------------------


def test_emoji_codes_in_a_title_print_as_written(tmp_path: Path) -> None:
    """rich turns ``:smile:`` into an emoji by default: a report must print what the file says."""
    import backpropcheck as bpc

    title = "Dense :smile: layer :warning:"
    path = write(tmp_path, DENSE_COLUMN.replace('title = "', f'title = "{title} — ', 1), "emoji.toml")
    assert title in path.read_text(encoding="utf-8")
    for args in (["check", str(path), *FAST], ["explain", str(path), "--claim", "grad_b", "--no-symbolic"]):
        out = CliRunner().invoke(main, args).stdout
        assert title in out and "😄" not in out, out
    report = bpc.check(path, trials=3, shapes=1)
    assert title in report.render("text") and "😄" not in report.render("text")
    assert title in str(bpc.explain(path, "grad_b")) and "😄" not in str(bpc.explain(path, "grad_b"))


def test_each_reporter_preloads_the_modules_it_renders_with() -> None:
    """The CLI imports the report's modules while its workers check: ``preload`` must import them."""
    import subprocess
    import sys

    script = ("import sys; from backpropcheck.report.formats import FORMATS; name = sys.argv[1]; "
              "before = set(sys.modules); FORMATS[name].preload(); print(' '.join(set(sys.modules) - before))")
    wanted = {"text": {"rich.console", "backpropcheck.report.text"}, "json": {"backpropcheck.report.json"},
              "junit": {"backpropcheck.report.junit"}, "markdown": {"backpropcheck.report.markdown"}}
    for name, modules in wanted.items():
        out = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True, timeout=60)
        assert modules <= set(out.stdout.split()), (name, out.stdout, out.stderr)


def test_markdown_heading_names_what_failed() -> None:
    """A run whose every checked claim holds but one file is invalid is not 'some claims do not hold'."""
    good = FileResult("a.toml", "a", "passed", None, [ClaimResult("g", "x", "proved", "holds", True, "")])
    invalid = FileResult("e.toml", "", "error", "e.toml: invalid TOML")
    wrong = FileResult("b.toml", "b", "failed", None, [ClaimResult("g", "x", "refuted", "holds", False, "")])
    assert "## backpropcheck: ✅ all claims hold" in markdown.render([good], 0)
    assert "## backpropcheck: ❌ some files could not be checked" in markdown.render([good, invalid], 0)
    assert "## backpropcheck: ❌ some claims do not hold" in markdown.render([good, wrong, invalid], 0)


def test_text_report_leaves_a_blank_line_after_a_file_that_could_not_be_checked(tmp_path: Path) -> None:
    """The next file's name followed an invalid file's error line directly (QA pass)."""
    bad = write(tmp_path, '[derivation]\ntitle = "x"\n', "bad.toml")
    good = write(tmp_path, DENSE_COLUMN, "good.toml")
    result = CliRunner().invoke(main, ["check", str(bad), str(good), "--trials", "2", "--shapes", "1"])
    lines = result.output.splitlines()
    error = next(k for k, line in enumerate(lines) if line.startswith("  error "))
    assert lines[error + 1] == "" and lines[error + 2].startswith(str(good))


@pytest.mark.parametrize("width, table", [(40, False), (120, True)])
def test_a_narrow_terminal_gets_lines_not_a_table(width: int, table: bool) -> None:
    """At 40 columns the table folded expressions mid-token ('sigmoid_prime(' / 'z)'; QA pass)."""
    import io

    from rich.console import Console

    from backpropcheck.report import text

    claim = ClaimResult("grad_z", "grad_h * sigmoid_prime(z)", "refuted", "holds", False, "the claim differs")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=width, color_system=None)
    text.render([FileResult("f.toml", "t", "failed", None, [claim])], console)
    shown = buffer.getvalue()
    assert ("expression / detail" in shown) is table
    assert any("sigmoid_prime(z)" in line for line in shown.splitlines())  # never split inside the token
