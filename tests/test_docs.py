"""The documentation in the repository: docs/, the README, the LICENSE, the packaging metadata, --help."""

from __future__ import annotations

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
