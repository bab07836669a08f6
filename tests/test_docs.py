"""The documentation in the repository: docs/, the README, the LICENSE, the packaging metadata, --help."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from backpropcheck.cli import main
from backpropcheck.lang.ops import ELEMENTWISE
from backpropcheck.lang.parse import BUILTIN_FUNCTIONS
from backpropcheck.limits import DEFAULT_LIMITS, LIMIT_FIELDS, Limits
from backpropcheck.loader import CHECK_KEYS, TABLES
from backpropcheck.model import DOMAINS, EXPECTATIONS
from backpropcheck.results import Verdict

REPO = Path(__file__).resolve().parent.parent
FORMAT = (REPO / "docs" / "format.md").read_text(encoding="utf-8")
CLI = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_the_format_reference_covers_every_table_key_domain_and_verdict() -> None:
    for table in TABLES:
        assert f"### `[{table}]`" in FORMAT, table
    for key in ("title", "summary", "references", "shape", "domain", "axis", "constant", "E", "upstream", *CHECK_KEYS):
        assert f"| `{key}" in FORMAT, key
    for domain in DOMAINS:
        assert f"| `{domain}`" in FORMAT, domain
    for verdict in Verdict:
        assert f"| `{verdict}` |" in FORMAT, verdict
    for expectation in EXPECTATIONS:
        assert f'"{expectation}"' in FORMAT, expectation


def test_the_format_reference_gives_every_function_and_its_derivative() -> None:
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)\(x\)` \|.*$", FORMAT, re.M)}
    assert set(ELEMENTWISE) <= set(rows), set(ELEMENTWISE) - set(rows)
    for name in ELEMENTWISE:
        assert rows[name].count("|") >= 5, name  # value | derivative | domain
    others = set(BUILTIN_FUNCTIONS) - set(ELEMENTWISE) - {f"{n}_prime" for n in ELEMENTWISE}
    for name in others:
        assert f"`{name}(" in FORMAT, name


def _commands() -> dict[str, click.Command]:
    return dict(main.commands)  # type: ignore[attr-defined]


def test_the_cli_reference_covers_every_command_flag_and_bound() -> None:
    for name, command in _commands().items():
        assert f"`{name}" in CLI, name
        for param in command.params:
            if isinstance(param, click.Option) and not param.name.startswith("bound_"):
                assert any(f"`{opt}" in CLI for opt in param.opts), (name, param.opts)
    defaults = asdict(DEFAULT_LIMITS)
    for field in LIMIT_FIELDS:
        row = re.search(rf"^\| `{re.escape(Limits.flag(field))}` \| ([^|]+) \|", CLI, re.M)
        assert row is not None, field
        assert float(row.group(1)) == float(defaults[field]), field


def test_check_help_groups_the_bounds_under_their_own_heading() -> None:
    text = CliRunner().invoke(main, ["check", "--help"], terminal_width=200).output
    everyday, heading, bounds = text.partition("\nBounds")
    assert heading and "--max-" not in everyday.replace("--max-dim ", "").replace("--max-trials)", "") \
        .replace("--max-shapes)", "")
    assert all(Limits.flag(f) in bounds for f in LIMIT_FIELDS)
    assert "--seed" in everyday and "--seed" not in bounds


def test_the_readme_links_inside_the_repository_only() -> None:
    assert "docs/format.md" in README and "docs/cli.md" in README
    assert "SPEC" not in README and "../" not in README and "<this repository" not in README
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        assert not target.startswith(("http:", "https:")), target
        assert (REPO / target).exists(), target
    for doc in (FORMAT, CLI):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc):
            assert (REPO / "docs" / target).resolve().exists(), target


def test_the_readme_python_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code = re.search(r"## Python and notebooks\n\n```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(REPO)
    namespace: dict[str, object] = {}
    exec(compile(code.replace("trials=5", "trials=2"), "README.md", "exec"), namespace)  # our own README
    report, wrong = namespace["report"], namespace["wrong"]
    assert report.ok and report.claim("grad_W").verdict == "proved"  # type: ignore[attr-defined]
    assert wrong.claim("grad_W").verdict == "shape-error"  # type: ignore[attr-defined]
    assert "1. Per neuron" in capsys.readouterr().out


def test_license_and_packaging_metadata() -> None:
    license_text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "Permission is hereby granted, free of charge" in license_text
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert any(dep.startswith("jsonschema") for dep in project["optional-dependencies"]["test"])


# -- what the README and docs/ show of the tool's output: the tool's own, regenerated here ----------------

NOTE = """# Lecture

Intro text.

The dense layer of last week, in matrix form:

Its claims:

```toml backpropcheck
[derivation]
title = "Dense layer in the notes"
[dims]
n = "in"
m = "out"
[inputs]
a = ["n"]
W = ["m", "n"]
[forward]
z = "W @ a"
[loss]
upstream = "z"
[claims]
grad_a = "W.T @ grad_z"
grad_W = "outer(a, grad_z)"
```

More text, and some code:

```python
print("hi")
```

A broken block:
```toml backpropcheck
[derivation]
title = "broken"
[dims]
n = "in"
[inputs]
a = ["n"]
[forward]
z = "a ^ 2"
[loss]
upstream = "z"
[claims]
grad_a = "2 * a * grad_z"
```
"""

SHAPE_SLIP = """[derivation]
title = "W declared (n, m)"
[dims]
n = "in"
m = "out"
[inputs]
a = ["n"]
W = ["n", "m"]
[forward]
z = "W.T @ a"
[loss]
upstream = "z"
[claims]
grad_a = "W.T @ grad_z"
"""


def _block(first: str, doc: str = README) -> list[str]:
    """The lines of the code block of ``doc`` whose first line is ``first``, ``first`` included."""
    found = re.search(rf"^```\n({re.escape(first)}\n.*?)^```", doc, re.S | re.M)
    assert found is not None, first
    return found.group(1).splitlines()


def _shown(args: list[str]) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, [line.rstrip() for line in result.stdout.splitlines()]


def test_the_readme_sample_outputs_are_the_tools_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every proved line shows its scope label: a sample written before the labels is out of date."""
    monkeypatch.chdir(tmp_path)
    square = (REPO / "backpropcheck" / "derivations" / "mistakes" / "missing_transpose_square.toml").read_text()
    (tmp_path / "square.toml").write_text(square.partition("[expect]")[0], encoding="utf-8")
    (tmp_path / "notes.md").write_text(NOTE, encoding="utf-8")
    for command in ("backpropcheck check square.toml", "backpropcheck check notes.md"):
        sample = _block(f"$ {command}")
        _, shown = _shown(command.split()[1:])
        assert sample[1:] == shown, command
    (tmp_path / "slip.toml").write_text(SHAPE_SLIP, encoding="utf-8")
    sample = _block("  ✗ grad_a shape-error  W.T @ grad_z")
    _, shown = _shown(["check", "slip.toml"])
    assert shown[1:3] == sample
    monkeypatch.chdir(REPO)
    sample = _block("$ backpropcheck derive derivations/softmax_regression_batch.toml")
    status, shown = _shown(sample[0].split()[2:])
    assert status == 0 and shown == sample[1:]


def test_the_derive_example_of_exit_status_1_does_exit_1(tmp_path: Path) -> None:
    example = "einsum('ij,j->j', A, b)"
    assert f"`{example}`" in README and f"`{example}`" in CLI
    path = tmp_path / "e.toml"
    path.write_text(f'[derivation]\ntitle = "e"\n[dims]\nn = "rows"\nm = "cols"\n[inputs]\nA = ["n", "m"]\nb = ["m"]\n[forward]\nz = "{example}"\n'
                    '[loss]\nupstream = "z"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["derive", str(path)])
    assert result.exit_code == 1 and "grad_A not derived: einsum 'ij,j->j' sums an index of operand 1 alone" \
        in result.stderr


def test_the_docs_explain_the_proof_scope_and_link_its_page(tmp_path: Path) -> None:
    assert "](docs/proof-scope.md)" in README
    verdicts = FORMAT.partition("\n## Verdicts\n")[2].partition("\n## ")[0]
    for doc in (README, CLI, verdicts):
        assert "`proved (all shapes)`" in doc and "`proved (at n=2,m=3; …)`" in doc
        assert "symbolic.scope" in doc and "symbolic.argument" in doc and '"sampled-shapes"' in doc
    assert "](proof-scope.md)" in verdicts and "](proof-scope.md)" in CLI
    # the sample JSON object has the real report's fields, the proof's scope among them
    sample = json.loads(re.search(r"```json\n(.*?)```", CLI, re.S).group(1))
    (tmp_path / "d.toml").write_text(SHAPE_SLIP.replace('"W.T @ grad_z"', '"W @ grad_z"'), encoding="utf-8")
    real = json.loads(CliRunner().invoke(main, ["check", str(tmp_path / "d.toml"), "--format", "json",
                                                "--trials", "2"]).stdout)
    claim, real_claim = sample["files"][0]["claims"][0], real["files"][0]["claims"][0]
    assert set(claim) == set(real_claim) and set(claim["symbolic"]) == set(real_claim["symbolic"])
    assert real_claim["symbolic"]["scope"] in ("all-shapes", "sampled-shapes")


def test_the_paths_the_docs_cite_exist_and_folders_are_described_as_walked() -> None:
    for doc in (README, CLI, FORMAT):
        for cited in re.findall(r"`((?:backpropcheck|bench|tests|docs)/[^` ]*)`", doc):
            assert (REPO / cited.split("::")[0]).exists(), cited
    assert "without recursion" not in README and "recursively, to any depth" in README
    assert "recursively, to any depth" in CLI
