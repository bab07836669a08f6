"""Dims as affine expressions of dim names: arithmetic, equality, parsing, formatting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backpropcheck.lang.dims import Dim, concrete, fmt_shape, parse_dim

KNOWN = {"n": "", "m": "", "T": "", "K": "", "B": ""}


def test_of_and_lit_values() -> None:
    assert Dim.of("n").value({"n": 7}) == 7
    assert Dim.lit(3).value({}) == 3
    assert Dim.of("n").names == ("n",)
    assert Dim.lit(3).names == ()


def test_addition_and_subtraction_are_affine() -> None:
    d = Dim.of("T") + Dim.of("K") - Dim.lit(1)
    assert d.value({"T": 5, "K": 3}) == 7
    assert d.terms == (("K", 1), ("T", 1))
    assert d.const == -1


def test_terms_are_sorted_so_order_does_not_matter() -> None:
    assert Dim.of("n") + Dim.of("m") == Dim.of("m") + Dim.of("n")
    assert hash(Dim.of("n") + Dim.of("m")) == hash(Dim.of("m") + Dim.of("n"))


def test_cancelled_terms_disappear() -> None:
    d = Dim.of("n") + Dim.lit(1) - Dim.of("n")
    assert d.terms == ()
    assert d.is_one
    assert d == Dim.lit(1)


def test_distinct_names_are_distinct_dims_even_when_sizes_agree() -> None:
    # shapes are compared by name: n and m are different even if both drawn as 4
    assert Dim.of("n") != Dim.of("m")
    assert Dim.of("n").value({"n": 4}) == Dim.of("m").value({"m": 4})


def test_is_one_only_for_the_literal_one() -> None:
    assert Dim.lit(1).is_one
    assert not Dim.lit(2).is_one
    assert not Dim.of("n").is_one


@pytest.mark.parametrize(
    ("dim", "text"),
    [
        (Dim.of("n"), "n"),
        (Dim.lit(4), "4"),
        (Dim.lit(0), "0"),
        (Dim.of("T") + Dim.of("K") - Dim.lit(1), "K + T - 1"),
        (Dim.of("m") + Dim.of("m"), "2*m"),
        (Dim.of("n") - Dim.of("m"), "-m + n"),
        (Dim.lit(2) - Dim.of("n"), "-n + 2"),
    ],
)
def test_str(dim: Dim, text: str) -> None:
    assert str(dim) == text


def test_fmt_shape_uses_numpy_notation() -> None:
    assert fmt_shape(()) == "()"
    assert fmt_shape((Dim.of("m"),)) == "(m,)"
    assert fmt_shape((Dim.of("m"), Dim.of("n"))) == "(m, n)"
    assert fmt_shape((Dim.of("T") + Dim.of("K") - Dim.lit(1),)) == "(K + T - 1,)"


def test_concrete() -> None:
    shape = (Dim.of("n"), Dim.of("T") + Dim.of("K") - Dim.lit(1), Dim.lit(1))
    assert concrete(shape, {"n": 2, "T": 5, "K": 3}) == (2, 7, 1)


@pytest.mark.parametrize(
    ("text", "sizes", "value"),
    [
        ("n", {"n": 5}, 5),
        (" n ", {"n": 5}, 5),
        ("T + K - 1", {"T": 6, "K": 3}, 8),
        ("2*m", {"m": 4}, 8),
        ("m*2", {"m": 4}, 8),
        ("2 * (n + 1)", {"n": 3}, 8),
        ("n - 1 + 1", {"n": 9}, 9),
        ("-K + T + 1", {"T": 6, "K": 3}, 4),
        ("+n", {"n": 2}, 2),
        ("3*n - 2*m", {"n": 4, "m": 3}, 6),
        ("-2*m + 3*n", {"n": 4, "m": 3}, 6),
        (3, {}, 3),
    ],
)
def test_parse_dim_values(text: str | int, sizes: dict[str, int], value: int) -> None:
    assert parse_dim(text, KNOWN).value(sizes) == value


def test_parse_dim_equal_expressions_compare_equal() -> None:
    assert parse_dim("T + K - 1", KNOWN) == parse_dim("K - 1 + T", KNOWN)
    assert parse_dim("2*n", KNOWN) == parse_dim("n + n", KNOWN)
    assert parse_dim("n", KNOWN) != parse_dim("n + 1", KNOWN)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("q", "unknown dim 'q'"),
        ("n + q", "unknown dim 'q'"),
        ("n / 2", "not an affine expression"),
        ("n ** 2", "not an affine expression"),
        ("f(n)", "not an affine expression"),
        ("n +", "not a dim name"),
        ("~n", "not an affine expression"),
        ("1.5", "not an affine expression"),
        (0, "positive integer"),
        (-2, "positive integer"),
        (True, "dim name or an integer"),
        (2.0, "dim name or an integer"),
        (["n"], "dim name or an integer"),
        ("n + " * 60 + "n", "200 characters"),
    ],
)
def test_parse_dim_rejects(text: object, words: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_dim(text, KNOWN)  # type: ignore[arg-type]
    assert words in str(info.value)


@settings(max_examples=100, deadline=None)
@given(
    terms=st.lists(st.tuples(st.sampled_from(sorted(KNOWN)), st.integers(1, 5), st.booleans()), min_size=1,
                   max_size=5),
    const=st.integers(-20, 20),
    sizes=st.fixed_dictionaries({name: st.integers(1, 50) for name in KNOWN}),
)
def test_parse_dim_is_affine_arithmetic(terms: list[tuple[str, int, bool]], const: int,
                                        sizes: dict[str, int]) -> None:
    """``±c1*a ± c2*b ± … ± k`` parses to the Dim whose value is that sum at any sizes."""
    text = ""
    expected = const
    for name, coeff, negative in terms:
        sign = "-" if negative else "+"
        text += f" {sign} {coeff}*{name}" if text else (f"-({coeff}*{name})" if negative else f"{coeff}*{name}")
        expected += (-coeff if negative else coeff) * sizes[name]
    text += f" {'-' if const < 0 else '+'} {abs(const)}"
    dim = parse_dim(text, KNOWN)
    assert dim.value(sizes) == expected
    assert parse_dim(str(dim), KNOWN) == dim  # str is a parseable, canonical form


def test_products_of_dim_names_are_polynomials() -> None:
    """SPEC §6.1: ``"B*T"``, ``"4*C"``; equal only as polynomials, so reshapes check for every size."""
    bt = parse_dim("n * m", KNOWN)
    assert bt == parse_dim("m*n", KNOWN) and bt != parse_dim("n + m", KNOWN)
    assert bt.value({"n": 3, "m": 5}) == 15 and str(bt) == "m*n"
    assert parse_dim("2*n*m - m*n", KNOWN) == bt
    assert Dim.of("n") * Dim.of("m") == bt
    assert (Dim.of("n") + Dim.lit(1)) * Dim.lit(2) == parse_dim("2*n + 2", KNOWN)
    with pytest.raises(ValueError, match="H\\*D instead"):
        parse_dim("n / m", KNOWN)
