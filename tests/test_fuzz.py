"""Fuzzing with hypothesis: corrupted derivation files never crash, hang or print a traceback.

The mutators live in ``bench/fuzz.py`` (the standalone ≥10,000-case run); here hypothesis
drives them, plus its own strategies for random expressions and raw bytes. The default run
checks a few hundred cases; ``-m slow`` checks thousands.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import dense_toml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backpropcheck.checker import Options, check_path  # noqa: E402
from backpropcheck.report import exit_status  # noqa: E402
from bench.fuzz import FORMATS, MUTATORS, TINY, corpus, problems, random_expression, run_cli  # noqa: E402

FILES = corpus()
OPTIONS = Options(trials=1, shapes=1, timeout=0.3, max_dim=6)
COMMON = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
FAST = settings(COMMON, max_examples=60)
SLOW = settings(COMMON, max_examples=1500)

EXPR_NAMES = ["a", "W", "b", "z", "h", "n", "m", "grad_h", "grad_z", "1", "0.5"]
BASE = dense_toml(title="fuzz")  # the dense tanh layer, claims grad_z and grad_a

TOKENS = st.sampled_from([
    "a", "W", "b", "z", "h", "grad_h", "n", "(", ")", "[", "]", ",", ".T", "@", "*", "+", "-", "/", "**", "2",
    "1e6", "0.5", "None", ":", "sum", "tanh", "exp", "log", "outer", "softmax", "axis=0", "for", "in", "i",
    "lambda", "__class__", ".", "'s'", "f'", "{", "}", ":=", "if", "else", "not", "and", "__import__", "eval",
])


def _check(data: bytes, name: str = "case.toml") -> None:
    """The oracle on check_path: it returns a result, never raises, never reports an internal error."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        result = check_path(str(path), OPTIONS)
    assert result.status in ("passed", "failed", "error")
    assert exit_status([result]) in (0, 1, 2)
    assert "internal error" not in (result.error or ""), result.error
    assert result.status != "error" or result.error or any(c.verdict == "error" for c in result.claims)


def _check_cli(data: bytes, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.toml"
        path.write_bytes(data)
        status, output, escaped = run_cli(str(path), TINY + extra)
    assert problems(status, output, escaped) == []


def _with_claim(text: str) -> bytes:
    return BASE.replace('grad_z = "grad_h * tanh_prime(z)"', f"grad_z = {_toml_str(text)}").encode()


def _with_forward(text: str) -> bytes:
    return BASE.replace('h = "tanh(z)"', f"h = {_toml_str(text)}").encode()


def _toml_str(text: str) -> str:
    import json

    return json.dumps(text)


# -- strategies ------------------------------------------------------------------------------------

sources = st.sampled_from(range(len(FILES)))
mutators = st.sampled_from(sorted(MUTATORS))


@st.composite
def mutated_files(draw) -> bytes:
    """A valid derivation corrupted by one of the bench mutators, with a hypothesis-driven Random."""
    _, data = FILES[draw(sources)]
    rnd = draw(st.randoms(use_true_random=False))
    kind = draw(mutators)
    try:
        return MUTATORS[kind](rnd, data)
    except Exception:  # noqa: BLE001 - a mutator that cannot parse its input falls back to bytes
        return MUTATORS["bytes"](rnd, data)


@st.composite
def grammar_expressions(draw) -> str:
    rnd = random.Random(draw(st.integers(0, 2**32)))
    return random_expression(rnd, EXPR_NAMES)


token_soup = st.lists(TOKENS, min_size=1, max_size=25).map(" ".join)


# -- default run: a few hundred cases --------------------------------------------------------------


@FAST
@given(mutated_files())
def test_mutated_files_never_crash(data: bytes) -> None:
    _check(data)


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    _check(data)


@FAST
@given(grammar_expressions(), st.booleans())
def test_random_expressions_never_crash(text: str, in_forward: bool) -> None:
    _check(_with_forward(text) if in_forward else _with_claim(text))


@FAST
@given(token_soup, st.booleans())
def test_token_soup_never_crashes(text: str, in_forward: bool) -> None:
    _check(_with_forward(text) if in_forward else _with_claim(text))


@settings(COMMON, max_examples=25)
@given(mutated_files(), st.sampled_from(FORMATS + [["--no-symbolic"]]))
def test_the_cli_on_mutated_files_exits_0_1_or_2_without_traceback(data: bytes, extra: list[str]) -> None:
    _check_cli(data, extra)


def test_the_oracle_can_fail() -> None:
    """A crash inside the checker shows up as an internal error, which the oracle rejects."""
    assert problems(None, "", "Traceback ...\nKeyError: 'x'") != []
    assert problems(3, "", None) != []
    assert problems(2, "Traceback (most recent call last):", None) != []
    assert problems(2, "x.toml: internal error (KeyError: 'x'); please report this file", None) != []
    assert problems(0, "ops.py:613: RuntimeWarning: overflow encountered", None) != []
    assert problems(2, "x.toml: [claims.grad_z], column 1: unknown name 'q'", None) == []


# -- regressions found by fuzzing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        # affine dims whose symbolic small shapes are never positive (the numeric ones are)
        BASE.replace('a = ["n"]', 'a = ["n - 10"]').replace('W = ["m", "n"]', 'W = ["m", "n - 10"]').encode(),
        # huge affine dims: exact entry counts, not int64 products that wrap around
        BASE.replace('b = ["m"]', 'b = ["m"]\nT = { shape = ["999 * n + 999999", "999 * n + 999999", '
                     '"999 * n + 999999", "999 * n + 999999"], constant = true }').encode(),
        # a NUL character inside an expression
        _with_claim("grad_h\x00"),
        # heavy [check] settings from the file
        BASE.replace("[claims]", "[check]\ntrials = 1000000000\nshapes = 1000000000\n[claims]").encode(),
        # many free indices and nested sums in index form
        BASE.replace('h = "tanh(z)"', 'h = "tanh(z)"\n"q[i, j, k, l, p]" = "a[i] * a[j] * a[k] * a[l] * a[p]"').encode(),
    ],
    ids=["negative-small-dims", "int64-overflow", "nul", "heavy-check", "index-rank"],
)
def test_regressions(data: bytes) -> None:
    _check(data)


# -- the long run: thousands of cases --------------------------------------------------------------


@pytest.mark.slow
@SLOW
@given(mutated_files())
def test_many_mutated_files_never_crash(data: bytes) -> None:
    _check(data)


@pytest.mark.slow
@SLOW
@given(st.one_of(grammar_expressions(), token_soup), st.booleans())
def test_many_expressions_never_crash(text: str, in_forward: bool) -> None:
    _check(_with_forward(text) if in_forward else _with_claim(text))


@pytest.mark.slow
@settings(COMMON, max_examples=500)
@given(mutated_files(), st.sampled_from(FORMATS + [["--no-symbolic"]]))
def test_many_cli_runs_exit_0_1_or_2_without_traceback(data: bytes, extra: list[str]) -> None:
    _check_cli(data, extra)
