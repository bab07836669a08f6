"""Hostile input: derivation files from strangers never run code, never hang, never crash.

1. An AST scan of the package's own source for every way to run a string as code.
2. Payloads in expressions: each is a located error (file, key, column), exit status 2,
   no traceback, nothing executed, and a valid file beside it is still checked.
3. Bounds: every field of ``Limits`` is crossed once, through its CLI flag.
4. Bounded time: symbolic blow-ups end as ``verified`` naming --timeout.
5. Numbers that go bad: NaN/Inf in the forward pass is a file error naming the variable.
6. Nothing lost: one bad claim or file never stops the others.
"""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import dense_toml

from backpropcheck.checker import Options, check_path
from backpropcheck.cli import main
from backpropcheck.limits import DEFAULT_LIMITS, LIMIT_FIELDS, Limits, exceeded

PACKAGE = Path(__file__).resolve().parent.parent / "backpropcheck"
README = PACKAGE.parent / "README.md"

# -- 1. the AST scan -----------------------------------------------------------------------------

ALWAYS_FORBIDDEN = {"eval", "exec", "compile", "__import__", "parse_expr", "lambdify", "import_module",
                    "breakpoint", "execfile", "runpy"}
NAMED_ATTRS = {"getattr", "setattr", "delattr", "hasattr"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "importlib", "runpy",
                     "code", "codeop", "ctypes", "subprocess", "sympy.parsing", "sympy.utilities.lambdify"}
# reading the package's own data files is not importing code
ALLOWED_MODULES = {"importlib.resources", "importlib.resources.abc", "importlib.metadata"}


def _forbidden_module(module: str) -> bool:
    if module in ALLOWED_MODULES:
        return False
    return any(module == m or module.startswith(m + ".") for m in FORBIDDEN_MODULES)


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _is_str_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def scan(source: str, filename: str = "<source>") -> list[str]:
    """Every construct that could run text as code, as ``file:line: why``.

    Rules (sound and simple rather than clever):
    - eval, exec, compile, __import__, parse_expr, lambdify, import_module: forbidden outright
      (``compile`` only as a bare name; ``re.compile`` and friends are methods of other objects);
    - sympify (and its alias S) only with ``strict=True``, which refuses strings;
    - getattr/setattr/delattr/hasattr only with a string-literal attribute name;
    - no import of pickle, marshal, shelve, importlib, ctypes, subprocess, sympy.parsing, ….
    """
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = _callee(node)
            bare = isinstance(node.func, ast.Name)
            if name in ALWAYS_FORBIDDEN and (bare or name != "compile"):
                out.append(f"{where}: call of {name}")
            elif name in ("sympify", "S") and not any(
                kw.arg == "strict" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                for kw in node.keywords
            ):
                out.append(f"{where}: {name}() without strict=True could parse a string")
            elif name in NAMED_ATTRS and bare and (len(node.args) < 2 or not _is_str_constant(node.args[1])):
                out.append(f"{where}: {name} with a computed attribute name")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _forbidden_module(alias.name):
                    out.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if _forbidden_module(module) and not all(
                f"{module}.{alias.name}" in ALLOWED_MODULES for alias in node.names
            ):
                out.append(f"{where}: from {module} import …")
            for alias in node.names:
                if alias.name in ALWAYS_FORBIDDEN | {"sympify", "S"} and alias.name != "compile":
                    out.append(f"{where}: from {module} import {alias.name}")
    return out


def test_the_package_source_has_no_way_to_run_text_as_code() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    problems = [p for f in files for p in scan(f.read_text(), str(f.relative_to(PACKAGE.parent)))]
    assert problems == []


@pytest.mark.parametrize(
    "snippet",
    [
        "eval(text)", "exec('x = 1')", "compile(text, 'f', 'eval')", "__import__('os')",
        "sympy.parsing.sympy_parser.parse_expr(text)", "sp.lambdify(x, 'x + 1')", "importlib.import_module(m)",
        "sp.sympify(text)", "sympify('x')", "sp.S(text)", "sp.sympify(x, strict=False)",
        "getattr(obj, name)", "getattr(obj, '_' + name)", "setattr(obj, key, 1)", "hasattr(obj, name)",
        "import pickle", "import marshal as m", "from shelve import open", "from importlib import import_module",
        "from sympy.parsing.sympy_parser import parse_expr", "from sympy import sympify", "import ctypes",
        "import importlib.util", "from importlib import util",
    ],
)
def test_the_scan_catches(snippet: str) -> None:
    assert scan(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    ["sp.sympify(value, strict=True)", "getattr(node, 'col_offset', None)", "re.compile('a+')",
     "sp.Rational(text)", "vars(options)[key]", "import ast", "from sympy import Symbol",
     "from importlib.resources import files", "from importlib import resources"],
)
def test_the_scan_allows(snippet: str) -> None:
    assert scan(snippet) == [], snippet


# -- shared files ------------------------------------------------------------------------------

BASE = dense_toml()  # the dense tanh layer, claims grad_z and grad_a

QUICK = ["--trials", "2", "--shapes", "1", "--timeout", "2", "--max-dim", "6"]


def with_claim(expression: str, claim: str = "grad_z") -> str:
    lines = BASE.splitlines()
    out = [f"{claim} = {json.dumps(expression)}" if line.startswith(f"{claim} =") else line for line in lines]
    return "\n".join(out) + "\n"


def with_forward(expression: str) -> str:
    return BASE.replace('h = "tanh(z)"', f"h = {json.dumps(expression)}")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text(BASE)
    return path


# -- 2. payloads ---------------------------------------------------------------------------------

SENTINEL = "/tmp/backpropcheck-pwned"

PAYLOADS = {
    "import": ("__import__('pathlib').Path('" + SENTINEL + "').touch()", 1),
    "dunder attribute": ("z.__class__", 1),
    "dunder chain": ("grad_h * z.__class__.__mro__", 10),
    "getattr": ("getattr(z, 'T')", 1),
    "lambda": ("(lambda: z)()", 1),
    "bare lambda": ("grad_h + (lambda: 0)", 11),
    "list comprehension": ("[x for x in z]", 1),
    "set comprehension": ("{x for x in z}", 1),
    "dict comprehension": ("{x: 1 for x in z}", 1),
    "generator outside sum": ("tanh(x for x in z)", 5),
    "sum generator in matrix form": ("sum(x for x in n)", 4),
    "f-string": ("f'{z}'", 1),
    "walrus": ("(y := z)", 2),
    "open": ("open('/etc/passwd')", 1),
    "eval": ("grad_h * eval('1')", 10),
    "exec": ("exec('import os')", 1),
    "keyword splat": ("tanh(**{'x': z})", 1),
    "keyword trick": ("sum(z, axis=__import__('os'))", 1),
    "star args": ("tanh(*z)", 6),
    "string literal": ("'__import__(\"os\")'", 1),
    "huge literal": ("z * 1e400", 5),
    "huge int literal": ("z * " + "9" * 400, 5),
    "huge exponent": ("z ** 1000000000", 6),
    "computed exponent": ("z ** 10**9", 6),
    "conditional": ("z if z else z", 1),
    "boolean": ("z and z", 1),
    "slice": ("z[::2]", 5),  # bounds are fine since SPEC §6.1, steps are not
    "subscript in matrix form": ("z[0]", 1),
    "chained comparison": ("0 < z < 1", 1),
    "bitwise": ("z << 1", 1),
    "null byte": ("z\x00", 2),
    "syntax": ("tanh(z", 5),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_payload_in_a_claim_is_a_located_error_and_runs_nothing(name: str, tmp_path: Path, good: Path) -> None:
    expression, column = PAYLOADS[name]
    bad = tmp_path / "bad.toml"
    bad.write_text(with_claim(expression))
    Path(SENTINEL).unlink(missing_ok=True)
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic")
    assert status == 2
    assert not Path(SENTINEL).exists()
    line = next(x for x in out.splitlines() if "[claims.grad_z]" in x)
    assert str(bad) in line and f"column {column}" in line, line
    # the other claim of the bad file, and the good file, are still checked
    assert out.count("grad_a verified") == 2
    assert "2 file(s), 4 claim(s): 3 ok, 0 failed, 1 error(s)" in out


FORWARD_PAYLOADS = {
    "import": ("__import__('os')", 1), "dunder": ("tanh(z.__dict__)", 6), "lambda": ("z + (lambda: 0)", 6),
    "f-string": ("f'{z}'", 1), "walrus": ("tanh((y := z))", 7), "open": ("z * open('x')", 5),
    "eval": ("z * eval('1')", 5), "comprehension": ("sum([x for x in z])", 5),
}


@pytest.mark.parametrize("name", sorted(FORWARD_PAYLOADS))
def test_a_payload_in_the_forward_pass_is_a_located_file_error(name: str, tmp_path: Path, good: Path) -> None:
    expression, column = FORWARD_PAYLOADS[name]
    bad = tmp_path / "bad.toml"
    bad.write_text(with_forward(expression))
    Path(SENTINEL).unlink(missing_ok=True)
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic", "--format", "json")
    assert status == 2
    assert not Path(SENTINEL).exists()
    report = json.loads(out)
    first, second = report["files"]
    assert first["status"] == "error"
    assert f"{bad}, [forward.h], column {column}" in first["error"]
    assert second["status"] == "passed" and len(second["claims"]) == 2


def test_ten_thousand_brackets_deep_is_a_bound_not_a_recursion_error(tmp_path: Path, good: Path) -> None:
    deep = "(" * 10_000 + "z" + ")" * 10_000
    bad = tmp_path / "bad.toml"
    bad.write_text(with_claim(deep))
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic")
    assert status == 2 and "--max-expr-chars" in out and "column 2001" in out
    # past the length bound, the bracket bound stops it at the 65th bracket
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic", "--max-expr-chars", "100000")
    assert status == 2 and "--max-depth" in out and "column 65" in out
    # with every bound raised, Python's own parser refuses it: still a located error
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic", "--max-expr-chars", "100000",
                      "--max-depth", "100000")
    assert status == 2 and "[claims.grad_z]" in out
    assert out.count("grad_a verified") == 2


def test_a_deep_operator_chain_with_every_bound_raised_never_crashes(tmp_path: Path, good: Path) -> None:
    chain = "-" * 5000 + "z"
    bad = tmp_path / "bad.toml"
    bad.write_text(with_forward(chain))
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic", "--max-depth", "100000",
                      "--max-expr-chars", "100000")
    assert status == 2 and "--max-depth" in out and "[forward.h]" in out
    assert "internal error" not in out and out.count("grad_a verified") == 1


def test_a_one_megabyte_expression(tmp_path: Path, good: Path) -> None:
    huge = "z + " * 250_000 + "z"
    bad = tmp_path / "bad.toml"
    bad.write_text(with_claim(huge))
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic")
    assert status == 2 and "--max-file-bytes" in out and str(bad) in out
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic", "--max-file-bytes", "2000000")
    assert status == 2 and "--max-expr-chars" in out and "[claims.grad_z], column 2001" in out
    status, out = cli(str(bad), str(good), *QUICK, "--no-symbolic", "--max-file-bytes", "2000000",
                      "--max-expr-chars", "2000000")
    assert status == 2 and "--max-depth" in out and "[claims.grad_z]" in out
    assert out.count("grad_a verified") == 2


# -- 3. bounds -----------------------------------------------------------------------------------


def test_every_limit_has_a_distinct_flag_and_a_readme_line() -> None:
    flags = [Limits.flag(name) for name in LIMIT_FIELDS]
    assert len(set(flags)) == len(flags)
    assert Limits.flag("max_dim") == "--dim-limit"  # --max-dim is the random-dim range
    readme = README.read_text()
    assert "## Bounds" in readme
    section = readme.split("## Bounds", 1)[1].split("\n## ", 1)[0]
    for flag in flags:
        assert f"`{flag}" in section, flag
    help_text = CliRunner().invoke(main, ["check", "--help"]).output
    for flag in flags:
        assert flag in help_text


def test_the_message_names_the_limit_and_the_flag() -> None:
    limits = Limits(max_claims=3)
    assert exceeded("the number of claims", 4, "max_claims", limits) == (
        "the number of claims (4) exceeds the limit of 3; raise it with --max-claims"
    )


def _bounded(**parts: str) -> str:
    """BASE with whole tables replaced."""
    tables = {
        "derivation": 'title = "t"', "dims": 'n = "n"\nm = "m"', "inputs": 'a = ["n"]\nW = ["m", "n"]\nb = ["m"]',
        "forward": 'z = "W @ a + b"\nh = "tanh(z)"', "loss": 'upstream = "h"',
        "claims": 'grad_z = "grad_h * tanh_prime(z)"\ngrad_a = "W.T @ grad_z"',
    }
    tables.update(parts)
    return "\n".join(f"[{k}]\n{v}\n" for k, v in tables.items())


# Each case: (a file that crosses the bound at default limits, a flag value that lets it through or None).
MANY = 20
BOUND_CASES = {
    "max_file_bytes": (_bounded(derivation='title = "t"\nsummary = "' + "x" * 300_000 + '"'), "400000"),
    "max_dims": (_bounded(dims="\n".join(f'd{k} = "x"' for k in range(MANY)) + '\nn = "n"\nm = "m"'), "30"),
    "max_inputs": (_bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\n'
                            + "\n".join(f'x{k} = ["n"]' for k in range(70))), "80"),
    "max_definitions": (_bounded(forward='z = "W @ a + b"\nh = "tanh(z)"\n'
                                 + "\n".join(f'q{k} = "a"' for k in range(130))), "140"),
    "max_claims": (_bounded(forward='z = "W @ a + b"\nh = "tanh(z)"\n'
                            + "\n".join(f'q{k} = "a"' for k in range(70)),
                            claims="\n".join(f'grad_q{k} = "W.T @ grad_z * 0"' for k in range(70))
                            + '\ngrad_z = "grad_h * tanh_prime(z)"'), "80"),
    "max_functions": (_bounded(derivation='title = "t"\n[functions]\n'
                               + "\n".join(f'f{k} = "elementwise"' for k in range(70))), "80"),
    "max_rank": (_bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nT = ["n", "n", "n", "n", "n", "n", "n", "n", "n"]'), "9"),
    "max_expr_chars": (_bounded(forward='z = "W @ a + b * 1.' + "0" * 3000 + '"\nh = "tanh(z)"'), "8000"),
    "max_depth": (_bounded(forward='z = "W @ a + ' + "(" * 70 + "b" + ")" * 70 + '"\nh = "tanh(z)"'), "100"),
    "max_literal": (_bounded(forward='z = "W @ a + b * 1e11"\nh = "tanh(z)"'), "1e12"),
    "max_exponent": (_bounded(forward='z = "W @ a + b ** 20"\nh = "tanh(z)"'), "20"),
    "max_dim": (_bounded(derivation='title = "t"\n[check]\nmax_dim = 9000'), None),
    "max_entries": (_bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\n'
                             'T = { shape = ["999 * n", "999 * n", "999 * n"], constant = true }'), None),
    # crossing the default (2e9) takes a minute of real work: the test lowers it to 1e6 (see below)
    "max_total_entries": (_bounded(derivation='title = "t"\n[check]\ntrials = 100',
                                   inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nT = { shape = ["n", "n", "n"], '
                                   'constant = true }'), None),
    # not an error: the symbolic check gives up and the claims are "verified", naming the flag;
    # like max_total_entries, the test lowers the limit (to 1000): 1,600 SymPy entries prove in a blink
    "max_symbolic_entries": (_bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\n'
                                      'T = { shape = [40, 40], constant = true }'), "2000"),
    "max_trials": (_bounded(derivation='title = "t"\n[check]\ntrials = 1000000000'), None),
    "max_shapes": (_bounded(derivation='title = "t"\n[check]\nshapes = 1000'), None),
    # like max_total_entries, the test lowers the limit (to 1e6): a 300 x 300 product is 2.7e7 multiply-adds
    "max_flops": (_bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nM = { shape = [300, 300], constant = true }',
                           forward='z = "W @ a + b"\nh = "tanh(z)"\nq = "M @ M"'), None),
    # 10,000 trials at dims up to 300 take half a minute; the test gives the file 2 s
    "file_timeout": (_bounded(derivation='title = "t"\n[check]\ntrials = 10000\nmax_dim = 300'), None),
    # tanh of a 3000 x 3000 input needs several 72 MB arrays; the test allows 64 MB, the raised value 1000
    "max_memory": (_bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nX = { shape = [3000, 3000], '
                            'constant = true }', forward='z = "W @ a + b"\nh = "tanh(z)"\nq = "tanh(X)"'), "1000"),
}


def test_every_bound_has_a_crossing_test() -> None:
    assert set(BOUND_CASES) == set(LIMIT_FIELDS)


@pytest.mark.parametrize("field", [
    pytest.param(f, marks=pytest.mark.slow) if f == "file_timeout" else f  # it waits out its 4 s bound
    for f in sorted(BOUND_CASES)])
def test_crossing_a_bound_names_it_and_its_flag(field: str, tmp_path: Path, good: Path) -> None:
    text, raised = BOUND_CASES[field]
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    extra = list(QUICK) + ["--no-symbolic"]
    if field in ("max_trials", "max_shapes", "max_dim", "max_total_entries", "file_timeout"):
        extra = ["--no-symbolic", "--timeout", "1"]  # the file's [check] values apply
    limit = vars(DEFAULT_LIMITS)[field]
    if field == "max_total_entries":  # 100 trials of >= 8 * 2**18 entries cross 1e6; the good file's 20 do not
        limit = 1_000_000
        extra += ["--max-total-entries", str(limit), "--max-dim", "64"]
    if field == "max_symbolic_entries":
        extra = ["--trials", "1", "--shapes", "1", "--timeout", "5", "--max-dim", "6"]
    if field in ("max_flops", "file_timeout", "max_memory", "max_symbolic_entries"):  # lowered, as max_total_entries
        limit = {"max_flops": 1_000_000, "file_timeout": 4.0, "max_memory": 64, "max_symbolic_entries": 1000}[field]
        extra += [Limits.flag(field), str(limit)]
    status, out = cli(str(bad), str(good), *extra)
    assert status == (0 if field == "max_symbolic_entries" else 2), out
    assert f"exceeds the limit of {limit}; raise it with {Limits.flag(field)}" in out, out
    assert out.count("grad_a verified") >= 1  # the good file is still checked
    if raised is not None:
        status, out = cli(str(bad), *extra, Limits.flag(field), raised)
        assert Limits.flag(field) not in out, out


def test_cli_values_are_bounded_too(good: Path) -> None:
    status, out = cli(str(good), "--no-symbolic", "--max-dim", "9000")
    assert status == 2 and "raise it with --dim-limit" in out
    status, out = cli(str(good), "--no-symbolic", "--dims", "n=9000")
    assert status == 2 and "--dims n (9000) exceeds the limit of 8192; raise it with --dim-limit" in out
    status, out = cli(str(good), "--no-symbolic", "--trials", "20000")
    assert status == 2 and "raise it with --max-trials" in out
    status, out = cli(str(good), "--no-symbolic", "--trials", "3", "--max-trials", "2")
    assert status == 2 and "the number of trials (3) exceeds the limit of 2" in out
    status, out = cli(str(good), "--shapes", "25", "--timeout", "1")
    assert status == 2 and "raise it with --max-shapes" in out


def test_max_entries_counts_intermediate_values(good: Path) -> None:
    # grad_a's outer products are n*n*n entries: 8e6 at n = 200, over a limit of 1e6
    text = with_claim("W.T @ grad_z + sum(outer(a, a)[:, :, None] * a[None, None, :]) * 0", "grad_a")
    good.write_text(text)
    status, out = cli(str(good), "--no-symbolic", "--trials", "1", "--dims", "n=200,m=3", "--max-entries", "1000000")
    assert status == 2 and "raise it with --max-entries" in out and "[claims.grad_a]" in out
    status, out = cli(str(good), "--no-symbolic", "--trials", "1", "--dims", "n=20,m=3", "--max-entries", "1000000")
    assert status == 0, out


def test_max_entries_uses_exact_integers_for_huge_affine_dims(tmp_path: Path) -> None:
    # (999*n + 999999)^4 overflows int64; it must not wrap around to a small number
    path = tmp_path / "big.toml"
    path.write_text(_bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nT = '
                             '["999 * n + 999999", "999 * n + 999999", "999 * n + 999999", "999 * n + 999999"]'))
    lifted = Limits(max_dim=10**6)  # past the --dim-limit on the literal part
    result = check_path(str(path), Options(trials=1, shapes=1, symbolic=False, limits=lifted))
    assert result.status == "error" and "raise it with --max-entries" in (result.error or ""), result.error


def test_max_rank_covers_intermediate_values(good: Path) -> None:
    good.write_text(with_claim("W.T @ grad_z + sum(a[:, None, None, None, None, None, None, None, None]) * 0",
                               "grad_a"))
    status, out = cli(str(good), *QUICK, "--no-symbolic")
    assert status == 2 and "raise it with --max-rank" in out
    status, out = cli(str(good), *QUICK, "--no-symbolic", "--max-rank", "9")
    assert status == 0, out


def test_index_space_rank_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "index.toml"
    body = "a[i]"
    for k in range(8):
        body = f"sum({body} * a[j{k}] for j{k} in n)"
    path.write_text(_bounded(forward=f'"q[i]" = "{body}"\nz = "W @ a + b"\nh = "tanh(z)"'))
    result = check_path(str(path), Options(trials=1, shapes=1, symbolic=False))
    assert result.status == "error" and "index space" in (result.error or "")
    assert "raise it with --max-rank" in (result.error or "")


def test_negative_seed_is_a_usage_error(good: Path) -> None:
    status, out = cli(str(good), "--seed", "-1")
    assert status == 2 and "Traceback" not in out


def test_non_finite_tolerances_in_the_file_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "tol.toml"
    path.write_text(_bounded(derivation='title = "t"\n[check]\nrtol = inf'))
    result = check_path(str(path), Options(trials=1, symbolic=False))
    assert result.status == "error" and "check.rtol" in (result.error or "")


# -- 4. bounded time -----------------------------------------------------------------------------

BLOWUP = _bounded(
    forward='z = "(W @ a + 1) ** 16"\nh = "tanh(z)"',
    claims='grad_z = "grad_h * tanh_prime(z)"\ngrad_a = "W.T @ (grad_z * 16 * (W @ a + 1) ** 15)"',
)
TOWER = _bounded(
    forward='z = "W @ a + b"\nh = "exp(exp(exp(exp(sigmoid(z) - 1))))"',
    claims='grad_z = "grad_h * h * exp(exp(exp(sigmoid(z) - 1))) * exp(exp(sigmoid(z) - 1)) * exp(sigmoid(z) - 1)'
           ' * sigmoid_prime(z)"\ngrad_a = "W.T @ grad_z"',
)
# a 200-way softmax at the smallest symbolic dims: 40,000 Jacobian entries, far past 0.05 s
WIDE = _bounded(
    inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nu = ["100 * n"]',
    forward='z = "W @ a + b"\nh = "tanh(z)"\np = "softmax(u, axis=0)"', loss='upstream = ["h", "p"]',
    claims='grad_z = "grad_h * tanh_prime(z)"\ngrad_u = "p * (grad_p - dot(grad_p, p))"',
)


@pytest.mark.parametrize("text", [BLOWUP, TOWER], ids=["power-16", "exp-tower"])
def test_symbolic_blowups_end_proved_or_verified_naming_the_timeout(text: str, tmp_path: Path) -> None:
    path = tmp_path / "slow.toml"
    path.write_text(text)
    result = check_path(str(path), Options(trials=2, shapes=3, timeout=0.5, max_dim=4))
    assert result.status == "passed", result
    for c in result.claims:
        assert c.verdict in ("proved", "verified"), c
        if c.verdict == "verified":
            assert "--timeout" in c.message, c.message


def test_the_truth_construction_has_its_own_budget(tmp_path: Path) -> None:
    path = tmp_path / "wide.toml"
    path.write_text(WIDE)
    result = check_path(str(path), Options(trials=1, shapes=1, timeout=0.05, max_dim=4))
    assert result.status == "passed", result
    assert [c.verdict for c in result.claims] == ["verified", "verified"]
    for c in result.claims:
        assert "building the per-neuron truth" in c.message and "(--timeout)" in c.message, c.message
        assert "--timeout" in (c.symbolic or {}).get("reason", "")


def test_the_cli_reports_the_timeout_fallback(tmp_path: Path) -> None:
    path = tmp_path / "wide.toml"
    path.write_text(WIDE)
    status, out = cli(str(path), "--trials", "1", "--shapes", "1", "--timeout", "0.05", "--max-dim", "4")
    assert status == 0 and out.count("verified") == 2 and "budget (--timeout)" in out


def test_the_time_budget_interrupts_sympy() -> None:
    import sympy as sp

    from backpropcheck.checker import SymbolicTimeout, time_budget

    x, y, w = sp.symbols("x y w")
    with pytest.raises(SymbolicTimeout), time_budget(0.2):
        sp.expand((x + y + w + 1) ** 400)


# -- 5. numbers that go bad ----------------------------------------------------------------------


def test_log_of_a_real_input_is_a_domain_error_not_a_verdict(tmp_path: Path) -> None:
    path = tmp_path / "log.toml"
    path.write_text(_bounded(forward='z = "W @ a + b"\nh = "log(z)"',
                             claims='grad_z = "grad_h / z"\ngrad_a = "W.T @ grad_z"'))
    result = check_path(str(path), Options(trials=3, shapes=1, max_dim=6))
    assert result.status == "error" and not result.claims
    assert "h = log(z)" in (result.error or "") and "domain" in (result.error or "")


def test_overflow_in_exp_is_reported_not_judged(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(_bounded(forward='z = "W @ a + b"\nh = "exp(exp(exp(1000 * z)))"',
                             claims='grad_z = "grad_h"\ngrad_a = "W.T @ grad_z"'))
    result = check_path(str(path), Options(trials=2, shapes=1, max_dim=6))
    assert result.status == "error" and "Inf" in (result.error or "") and "domain" in (result.error or "")


def test_a_nan_file_beside_a_good_one_keeps_exit_status_2_and_reports_both(tmp_path: Path, good: Path) -> None:
    path = tmp_path / "nan.toml"
    path.write_text(_bounded(forward='z = "W @ a + b"\nh = "sqrt(z)"',
                             claims='grad_z = "grad_h * 0.5 / sqrt(z)"\ngrad_a = "W.T @ grad_z"'))
    status, out = cli(str(path), str(good), *QUICK)
    assert status == 2
    assert "h = sqrt(z) is NaN" in out and "domain" in out
    assert "grad_a proved" in out


# -- 6. nothing lost -----------------------------------------------------------------------------


def test_a_claim_that_fails_to_evaluate_does_not_stop_the_others(tmp_path: Path) -> None:
    path = tmp_path / "mixed.toml"
    path.write_text(_bounded(claims='grad_z = "grad_h * tanh_prime(z)"\ngrad_a = "W.T @ nope"\n'
                             'grad_W = "outer(grad_z, a)"\ngrad_b = "grad_z.__class__"'))
    result = check_path(str(path), Options(trials=2, shapes=1, max_dim=6))
    verdicts = {c.name: c.verdict for c in result.claims}
    assert verdicts == {"grad_z": "proved", "grad_a": "error", "grad_W": "proved", "grad_b": "error"}
    assert result.status == "error"


def test_the_summary_counts_every_file_and_claim(tmp_path: Path, good: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[derivation\n")
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(with_claim("W.T @ nope", "grad_a"))
    status, out = cli(str(broken), str(mixed), str(good), *QUICK, "--format", "json")
    report = json.loads(out)
    assert status == 2
    assert [f["status"] for f in report["files"]] == ["error", "error", "passed"]
    assert report["summary"] == {"files": 3, "claims": 4, "ok": 3, "failed": 0, "errors": 2}


def test_check_path_turns_an_unexpected_exception_into_a_file_error(tmp_path: Path, monkeypatch) -> None:
    import backpropcheck.checker as checker

    def boom(*args, **kwargs):
        raise KeyError("unexpected")

    monkeypatch.setattr(checker, "check_derivation", boom)
    path = tmp_path / "ok.toml"
    path.write_text(BASE)
    result = check_path(str(path), Options(trials=1))
    assert result.status == "error" and "internal error" in (result.error or "")


def test_limits_fields_are_all_numbers() -> None:
    for f in fields(Limits):
        assert isinstance(vars(DEFAULT_LIMITS)[f.name], (int, float))


def test_dims_past_the_small_range_are_found_for_the_symbolic_check(tmp_path: Path) -> None:
    # a = (n - 10,) exists at the numeric dims (up to 40) but not at the small symbolic ones: the range grows
    # until it holds sizes (n >= 11), and the claims are proved there (they were only verified)
    path = tmp_path / "small.toml"
    path.write_text(_bounded(inputs='a = ["n - 10"]\nW = ["m", "n - 10"]\nb = ["m"]'))
    result = check_path(str(path), Options(trials=1, shapes=1, max_dim=40))
    assert [c.verdict for c in result.claims] == ["proved", "proved"], result
    assert all(s["n"] >= 11 for c in result.claims for s in c.symbolic["shapes"])


def test_dims_far_past_the_small_range_fall_back_to_verified(tmp_path: Path) -> None:
    # a = (n - 1000,): no small sizes within the widened range, so no symbolic check, never a crash
    path = tmp_path / "far.toml"
    path.write_text(_bounded(inputs='a = ["n - 1000"]\nW = ["m", "n - 1000"]\nb = ["m"]'))
    result = check_path(str(path), Options(trials=1, shapes=1, max_dim=1040))
    assert [c.verdict for c in result.claims] == ["verified", "verified"], result
    assert all("no small dims for the symbolic check" in c.message for c in result.claims)


def test_max_entries_bounds_the_sum_of_all_intermediates(good: Path) -> None:
    # twenty n-by-n intermediates of 10^4 entries each: under 1e5 alone, 2e5 together (the tape keeps them all)
    terms = " + ".join("sum(a[:, None] * a[None, :], axis=1)" for _ in range(20))
    good.write_text(with_claim(f"W.T @ grad_z + ({terms}) * 0", "grad_a"))
    status, out = cli(str(good), "--no-symbolic", "--trials", "1", "--dims", "n=100,m=3", "--max-entries", "100000")
    assert status == 2 and "the entries of all arrays at dims" in out and "raise it with --max-entries" in out
    status, out = cli(str(good), "--no-symbolic", "--trials", "1", "--dims", "n=100,m=3", "--max-entries", "1000000")
    assert status == 0, out


POWER_TOWER = """
[derivation]
title = "x ** (16 ** 6), through six definitions"
[dims]
n = "n"
[inputs]
x = { shape = ["n"], domain = "unit" }
[forward]
z1 = "x ** 16"
z2 = "z1 ** 16"
z3 = "z2 ** 16"
z4 = "z3 ** 16"
z5 = "z4 ** 16"
z6 = "z5 ** 16"
[loss]
E = "sum(z6)"
[claims]
grad_x = "x * 0"
"""


def test_a_power_tower_through_definitions_ends_within_the_budget(tmp_path: Path) -> None:
    # numerically every value underflows to 0, so the claim survives the trials; exactly, x ** 16777216
    # at a rational point is a 10^8-bit number: without the budget, deciding it runs for minutes
    path = tmp_path / "tower.toml"
    path.write_text(POWER_TOWER)
    result = check_path(str(path), Options(trials=1, shapes=1, timeout=0.3, max_dim=4))
    (claim,) = result.claims
    assert claim.verdict == "verified" and "(--timeout)" in claim.message, claim


@pytest.mark.parametrize("expression", ["grad_h * tanh_prime(z) + erf(1) * 0", "grad_h * tanh_prime(z) * gelu(2 ** -0.5) / gelu(2 ** -0.5)"])
def test_erf_and_gelu_of_a_scalar(expression: str, tmp_path: Path) -> None:
    # found by fuzzing: erf of a 0-d array came back from np.frompyfunc as a float, with no .astype
    path = tmp_path / "erf.toml"
    path.write_text(with_claim(expression))
    result = check_path(str(path), Options(trials=2, shapes=1, max_dim=5))
    assert [c.verdict for c in result.claims] == ["proved", "proved"], result


def test_no_numpy_warning_reaches_the_output(tmp_path: Path) -> None:
    # found by fuzzing: a symbolic evaluation of softplus(1000) leaked "RuntimeWarning: overflow"
    import warnings

    path = tmp_path / "warn.toml"
    path.write_text(_bounded(loss='E = "sum(h) + softplus(1000)"', claims='grad_h = "ones(m)"'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = check_path(str(path), Options(trials=2, shapes=1, max_dim=5))
    assert [c.verdict for c in result.claims] == ["proved"], result
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_an_axis_of_a_scalar_is_a_shape_error(fn: str, tmp_path: Path) -> None:
    # found by fuzzing: log_softmax(mean(W), axis=1) passed the shape check and raised AxisError mid-trial
    path = tmp_path / "axis.toml"
    path.write_text(with_forward(f"tanh(z) + {fn}(mean(W), axis=1)"))
    result = check_path(str(path), Options(trials=1, shapes=1, max_dim=5))
    assert result.status == "error" and "[forward.h]" in (result.error or "")
    assert "axis 1 is out of range for an array of rank 0" in (result.error or ""), result.error


@pytest.mark.parametrize("dim", ["100000", 100000, "n + 9000", "n - 9000"])
def test_literal_dims_are_bounded_by_the_dim_limit(dim: object, tmp_path: Path) -> None:
    path = tmp_path / "lit.toml"
    path.write_text(_bounded(inputs=f'a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nT = {{ shape = [{json.dumps(dim)}], '
                             'constant = true }'))
    result = check_path(str(path), Options(trials=1, symbolic=False))
    assert result.status == "error" and "inputs.T" in (result.error or "")
    assert "raise it with --dim-limit" in (result.error or ""), result.error
    lifted = check_path(str(path), Options(trials=1, symbolic=False, limits=Limits(max_dim=200_000)))
    assert "--dim-limit" not in (lifted.error or "")


def test_a_symlink_to_a_device_is_an_error_not_an_endless_read(tmp_path: Path, good: Path) -> None:
    link = tmp_path / "zero.toml"
    link.symlink_to("/dev/zero")
    status, out = cli(str(link), str(good), *QUICK, "--no-symbolic")
    assert status == 2 and "not a regular file" in out and out.count("grad_a verified") == 1


def test_a_fifo_is_an_error_not_a_blocked_open(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)

    def unblock() -> None:  # should the check regress, a writer ends the blocked open() instead of a hang
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader: nothing was blocked

    timer = threading.Timer(3.0, unblock)
    timer.daemon = True
    timer.start()
    result = check_path(str(fifo), Options(trials=1))
    timer.cancel()
    assert result.status == "error" and "not a regular file" in (result.error or "")


def test_a_timeout_swallowed_by_a_gc_callback_fires_again(monkeypatch) -> None:
    # found by the slow fuzz run: the alarm landed in hypothesis's gc callback, Python printed
    # "Exception ignored in ..." and the budget was lost; the alarm now repeats until it lands. The
    # swallowed raise must not reach sys.unraisablehook either: under pytest a later tick landed in
    # pytest's own hook and failed the test ("Failed to process unraisable exception")
    import gc
    import sys
    import time

    from backpropcheck.checker import SymbolicTimeout, time_budget

    reported: list = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    swallowed = []

    def callback(phase: str, info: dict) -> None:
        if not swallowed:
            swallowed.append(phase)
            until = time.process_time() + 0.3  # the (CPU-time) budget expires in here, once:
            while time.process_time() < until:  # Python swallows that raise
                sum(range(100))

    gc.callbacks.append(callback)
    try:
        with pytest.raises(SymbolicTimeout), time_budget(0.1):
            gc.collect()
            deadline = time.process_time() + 5
            while time.process_time() < deadline:  # pure-Python work that the next alarm interrupts
                sum(range(1000))
    finally:
        gc.callbacks.remove(callback)
    assert swallowed
    assert reported == [] and sys.unraisablehook == reported.append  # dropped, and the hook put back


def test_the_budget_passes_on_unraisable_exceptions_not_its_own(monkeypatch) -> None:
    import sys

    from backpropcheck.checker import time_budget

    reported: list = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    class Broken:
        def __del__(self) -> None:
            raise ValueError("from a finalizer")

    with time_budget(5.0):
        Broken()
    assert [type(u.exc_value) for u in reported] == [ValueError]


@pytest.mark.parametrize("seconds", [float("inf"), 1e12])
def test_a_budget_past_what_setitimer_takes_is_no_budget(seconds: float) -> None:
    # found in review: --timeout 1e12 or inf made setitimer raise ("timestamp out of range") and the
    # claim came back "not proved: the symbolic engine failed"; the alarm's handler and hook leaked
    import signal
    import sys

    from backpropcheck.checker import time_budget

    hook, handler = sys.unraisablehook, signal.getsignal(signal.SIGPROF)
    with time_budget(seconds):
        assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    assert sys.unraisablehook is hook and signal.getsignal(signal.SIGPROF) is handler


def test_an_alarm_that_cannot_be_armed_leaves_nothing_behind(monkeypatch) -> None:
    import signal
    import sys

    from backpropcheck.budget import repeating_alarm

    def refuse(*args):
        raise OSError("no timer here")

    hook, handler = sys.unraisablehook, signal.getsignal(signal.SIGPROF)
    monkeypatch.setattr(signal, "setitimer", refuse)
    with pytest.raises(OSError), repeating_alarm(signal.ITIMER_PROF, signal.SIGPROF, 1.0, RuntimeError):
        pass
    assert sys.unraisablehook is hook and signal.getsignal(signal.SIGPROF) is handler


def test_no_alarm_lands_inside_a_shielded_function() -> None:
    import signal
    import time

    from backpropcheck.budget import repeating_alarm, shielded

    class Deadline(BaseException):
        pass

    finished = []

    @shielded
    def must_finish() -> None:
        time.sleep(0.15)  # the alarm is due at 0.05 s, and ticks every 10 ms in here
        finished.append(True)

    with pytest.raises(Deadline), repeating_alarm(signal.ITIMER_REAL, signal.SIGALRM, 0.05, Deadline):
        must_finish()
        time.sleep(5)  # the next tick lands here
    assert finished == [True]


def test_the_default_bounds_admit_the_spec_production_dims() -> None:
    # SPEC §4: `--dims n=4096,m=4096`; the bounds must not make the documented use an error
    status, out = cli(str(PACKAGE / "derivations" / "dense_column.toml"), "--dims", "n=4096,m=4096", "--trials", "1",
                      "--no-symbolic")
    assert status == 0, out


def test_the_budget_is_per_claim_over_all_small_dims(tmp_path: Path, monkeypatch) -> None:
    # 0.3 s of symbolic work per dim assignment: under a 0.5 s budget per assignment it would be
    # proved at every one of them; the budget is per claim, so the second assignment runs out
    import time

    import backpropcheck.checker as checker

    def slow_decide(self, truth, claim, rng):
        until = time.process_time() + 0.3  # the budget counts CPU time: burn it
        while time.process_time() < until:
            sum(range(100))
        return None  # "every entry equal"

    monkeypatch.setattr(checker._FileCheck, "_decide", slow_decide)
    path = tmp_path / "ok.toml"
    path.write_text(BASE)
    result = check_path(str(path), Options(trials=1, shapes=6, timeout=0.5, max_dim=5, scope=False))
    for c in result.claims:
        assert c.verdict == "verified" and "(--timeout)" in c.message, c.message
        assert len(c.symbolic["shapes"]) == 1


def test_remaining_budget() -> None:
    from backpropcheck.checker import _remaining

    assert _remaining(10.0, 3.0) == 7.0
    assert 0 < _remaining(10.0, 12.0) < 1e-3  # exhausted: expires at once, never "no budget"
    assert _remaining(0.0, 5.0) == 0.0  # --timeout 0: no budget


@pytest.mark.parametrize("where", ["claim", "dim", "key"])
def test_compiler_warnings_are_syntax_errors_not_stderr_noise(where: str, tmp_path: Path) -> None:
    # found by fuzzing: `1if` made Python print "SyntaxWarning: invalid decimal literal"
    import warnings

    text = {
        "claim": with_claim("grad_h * 1if 1 else 2"),
        "dim": _bounded(inputs='a = ["n"]\nW = ["m", "n"]\nb = ["m"]\nT = { shape = ["1if n"], constant = true }'),
        "key": _bounded(forward='z = "W @ a + b"\nh = "tanh(z)"\n"q[0x1for]" = "a[i]"'),
    }[where]
    path = tmp_path / "warn.toml"
    path.write_text(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = check_path(str(path), Options(trials=1, shapes=1, max_dim=5))
    assert [str(w.message) for w in caught] == []
    assert result.status == "error"
    if where == "claim":
        assert "invalid decimal literal" in result.claims[0].message and "column" in result.claims[0].message
