"""Dimensions as expressions of dim names: ``n``, ``T + K - 1``, ``2*m``, ``B*T``, ``4*C``.

A :class:`Dim` is a polynomial with integer coefficients: a sum of products of dim
names (each product keyed by its sorted names joined by ``*``, a single name for
the affine dims of Part I). Shapes are tuples of :class:`Dim`; two dims are equal
only when they are the same polynomial, so shape checks hold for *every* size,
not just the drawn one — ``reshape`` from ``(B*T, H*D)`` to ``(B, T, H, D)`` too.
"""

from __future__ import annotations

import ast
import functools
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Dim:
    """``const + Σ coeff·monomial`` with integer coefficients (terms sorted by monomial); a
    monomial is a dim name or a product of them, written ``"B*T"`` (names sorted)."""

    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(name: str) -> Dim:
        return Dim(((name, 1),), 0)

    @staticmethod
    def lit(value: int) -> Dim:
        return Dim((), int(value))

    def _combine(self, other: Dim, sign: int) -> Dim:
        coeffs = dict(self.terms)
        for name, c in other.terms:
            coeffs[name] = coeffs.get(name, 0) + sign * c
        terms = tuple(sorted((k, v) for k, v in coeffs.items() if v != 0))
        return Dim(terms, self.const + sign * other.const)

    def __add__(self, other: Dim) -> Dim:
        return self._combine(other, 1)

    def __sub__(self, other: Dim) -> Dim:
        return self._combine(other, -1)

    def __mul__(self, other: Dim) -> Dim:
        """The product of two polynomials in dim names: ``(B)·(T) = B*T``, ``(2)·(H) = 2*H``."""
        coeffs: dict[str, int] = {}
        left = list(self.terms) + ([("", self.const)] if self.const else [])
        right = list(other.terms) + ([("", other.const)] if other.const else [])
        const = 0
        for ma, ca in left:
            for mb, cb in right:
                names = sorted(n for n in ma.split("*") + mb.split("*") if n)
                if not names:
                    const += ca * cb
                    continue
                key = "*".join(names)
                coeffs[key] = coeffs.get(key, 0) + ca * cb
        return Dim(tuple(sorted((k, v) for k, v in coeffs.items() if v)), const)

    @property
    def is_one(self) -> bool:
        return not self.terms and self.const == 1

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for key, _ in self.terms for n in key.split("*")))

    @property
    def monotone(self) -> bool:
        """Non-decreasing in every dim (no negative coefficient): its least value is at all ones."""
        return all(c >= 0 for _, c in self.terms)

    @property
    def at_ones(self) -> int:
        return self.const + sum(c for _, c in self.terms)

    def value(self, sizes: Mapping[str, int]) -> int:
        total = self.const
        for c, names in self._monomials:
            product = 1
            for name in names:
                product *= sizes[name]
            total += c * product
        return total

    @functools.cached_property
    def _monomials(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """The terms as (coefficient, names): split once, as a dim is evaluated at every draw."""
        return tuple((c, tuple(key.split("*"))) for key, c in self.terms)

    def __str__(self) -> str:
        out = ""
        for name, c in self.terms:
            sign = "-" if c < 0 else "+"
            mag = abs(c)
            term = name if mag == 1 else f"{mag}*{name}"
            out = (f"-{term}" if sign == "-" else term) if not out else f"{out} {sign} {term}"
        if self.const or not out:
            if not out:
                out = str(self.const)
            else:
                out += f" {'-' if self.const < 0 else '+'} {abs(self.const)}"
        return out


Shape = tuple[Dim, ...]


def fmt_shape(shape: Shape) -> str:
    """``(n, m)``, ``(m,)`` or ``()`` — NumPy's own notation, over dim names."""
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def concrete(shape: Shape, sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(d.value(sizes) for d in shape)


def parse_dim(text: str | int, known: Collection[str]) -> Dim:
    """Parse one entry of a shape list: a dim name, an integer, or an affine expression."""
    if isinstance(text, bool):
        raise ValueError(f"a dimension must be a dim name or an integer, not {text!r}")
    if isinstance(text, int):
        if text < 1:
            raise ValueError(f"a literal dimension must be a positive integer, not {text}")
        return Dim.lit(text)
    if not isinstance(text, str):
        raise ValueError(f"a dimension must be a dim name or an integer, not {text!r}")
    if len(text) > 200:
        raise ValueError("a dimension expression is limited to 200 characters")
    try:
        with warnings.catch_warnings():  # "1if": a syntax error here, not a warning on stderr
            warnings.simplefilter("error")
            tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):  # ValueError: a NUL on Python < 3.11.4
        raise ValueError(f"{text!r} is not a dim name or an affine expression of dims") from None
    return _affine(tree, known, text)


def _affine(node: ast.AST, known: Collection[str], text: str) -> Dim:
    if isinstance(node, ast.Name):
        if node.id not in known:
            where = "" if text.strip() == node.id else f" in {text!r}"
            raise ValueError(f"unknown dim {node.id!r}{where} (declare it in [dims])")
        return Dim.of(node.id)
    if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 10**6:
        return Dim.lit(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        # "-K + T + 1" is how str(Dim) writes T - K + 1, so it must read back
        inner = _affine(node.operand, known, text)
        return Dim.lit(0) - inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        left, right = _affine(node.left, known, text), _affine(node.right, known, text)
        return left + right if isinstance(node.op, ast.Add) else left - right
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        for coeff, other in ((node.left, node.right), (node.right, node.left)):
            negative = isinstance(coeff, ast.UnaryOp) and isinstance(coeff.op, ast.USub)
            literal = coeff.operand if negative else coeff  # type: ignore[attr-defined]
            if isinstance(literal, ast.Constant) and type(literal.value) is int and 0 < literal.value < 1000:
                c = -literal.value if negative else literal.value  # "-2*m", as str(Dim) writes it
                d = _affine(other, known, text)
                return Dim(tuple((k, v * c) for k, v in d.terms), d.const * c)
        left, right = _affine(node.left, known, text), _affine(node.right, known, text)
        product = left * right
        if len(product.terms) > 16 or any(len(k.split("*")) > 4 for k, _ in product.terms):
            raise ValueError(f"{text!r}: a dim expression is limited to products of at most 4 names")
        return product
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.FloorDiv)):
        raise ValueError(f"{text!r} is not an affine expression of dims: a dim cannot be divided (C/H); "
                         f"declare D and write H*D instead")
    raise ValueError(f"{text!r} is not an affine expression of dims or a product of them "
                     f"(use names, integers, +, - and *)")


def dim_from_ast(node: ast.AST, known: Collection[str], text: str) -> Dim:
    """A dim expression written inside an expression (a slice bound, a pad width, a reshape)."""
    return _affine(node, known, text)
