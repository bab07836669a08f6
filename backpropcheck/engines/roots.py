"""Where a kink's argument changes sign: the points a check examines on both sides of every kink.

A kink is a ``Step``/``Relu``/``Abs``/``sign`` whose argument ``g`` depends on one symbol ``s`` once the
others are fixed: an input entry (:mod:`.witness`) or a dim used as a number (:mod:`..dimuse`). A
polynomial ``g`` has its real roots isolated exactly (SymPy's root intervals). Any other ``g`` — a kink
behind ``tanh``, ``sigmoid``, ``log`` or ``sqrt`` (``where(tanh(x) > 0.99, …)``, ``sqrt(n) > 30``) — is
scanned for sign changes on a grid over the symbol's domain, each narrowed by bisection, every value
evaluated with certified digits. The grid is dense from 1e-6 to 1e5 in magnitude and reaches 1e-300 and
1e300 (a clamp of ``log(p)`` at -100 bites below 1e-43); dims: every size to the dim limit. A kink where
the function is flat beyond that stays unseen, as any finite search must.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

import sympy as sp
from sympy.polys.polyerrors import BasePolynomialError

MAX_ROOTS = 4  # roots (or sign changes) of one argument examined
ROOT_WIDTH = sp.Rational(1, 10**12)  # the widest interval a polynomial's root is placed in
BISECTIONS = 40  # halvings of a sign change's bracket: 1e-12 of its width


@functools.cache
def _grid(domain: str) -> list[sp.Rational]:
    """The points a sign change is looked for at: four a decade from 1e-6 to 1e5, one every third decade out to
    1e±300; the unit interval by hundredths, and as near its ends as 1e-300. Made on first use (some 600 exact
    rationals: 17 ms at import, before any worker forks, for a scan most runs never make)."""
    dense = [m * sp.Rational(10) ** e for e in range(-6, 5)
             for m in (1, sp.Rational(178, 100), sp.Rational(316, 100), sp.Rational(562, 100))] + [sp.Integer(10**5)]
    sparse_low = [sp.Rational(1, 10**k) for k in range(300, 6, -3)]  # 1e-300 … 1e-9: a clamp of log at -100
    sparse_high = [sp.Integer(10) ** k for k in range(8, 301, 3)]  # 1e8 … 1e299
    magnitudes = sparse_low + dense + sparse_high
    if domain == "real":
        return [-x for x in reversed(magnitudes)] + [sp.Integer(0)] + magnitudes
    if domain == "positive":
        return magnitudes
    return sorted(set(sparse_low) | {sp.Rational(1, 10**k) for k in (6, 5, 4, 3)}
                  | {1 - x for x in sparse_low} | {1 - sp.Rational(1, 10**k) for k in (6, 5, 4, 3)}
                  | {sp.Rational(k, 100) for k in range(1, 100)})


def polynomial_roots(g: sp.Expr, s: sp.Symbol) -> list[sp.Rational] | None:
    """Rational points within ``ROOT_WIDTH`` of the real roots of ``g`` in ``s`` (at most ``MAX_ROOTS``; a rational
    root exactly), or None when ``g`` is not a polynomial of degree 1 … 8 with rational (or float) coefficients. (Unrefined,
    SymPy's isolating intervals can be as wide as (0, 1) for a root at 1/1000.)"""
    try:
        poly = sp.Poly(g, s)
        if any(c.is_Float for c in poly.all_coeffs()):  # x * x < 1e-12: the float's own value, exactly
            poly = sp.Poly([sp.Rational(c) if c.is_Float else c for c in poly.all_coeffs()], s)
        if poly.degree() < 1 or poly.degree() > 8 or not all(c.is_Rational for c in poly.all_coeffs()):
            return None
        intervals = poly.intervals(eps=ROOT_WIDTH)  # isolating intervals of the real roots, exact and narrow
    except (BasePolynomialError, ValueError, TypeError, NotImplementedError, ArithmeticError):
        return None
    return [(sp.Rational(low) + sp.Rational(high)) / 2 for (low, high), _ in intervals[:MAX_ROOTS]]


def sign_changes(g: sp.Expr, s: sp.Symbol, domain: str) -> Iterator[tuple[sp.Rational, sp.Rational]]:
    """Brackets ``(a, b)`` inside ``domain`` ("real", "positive", "unit") with ``g(a)`` and ``g(b)`` of opposite
    signs (a root of ``g`` between them), narrowed by bisection; at most ``MAX_ROOTS``. A grid point where
    ``g`` is exactly 0 gives its two neighbours."""
    grid = _grid(domain)
    signs = [_sign(g, s, x) for x in grid]
    for k, zero in _crossings(signs):
        yield (grid[k - 1], grid[k + 1]) if zero else _bisect(g, s, grid[k], grid[k + 1], signs[k] or 0)


def integer_sign_changes(g: sp.Expr, s: sp.Symbol, largest: int) -> Iterator[int]:
    """Sizes ``n`` in 1 … ``largest`` with ``g(n)`` and ``g(n + 1)`` of opposite signs, or ``g(n)`` exactly 0
    between two signs (at most ``MAX_ROOTS``), found on a grid of every size to 32, then every quarter of a
    binary order of magnitude, and narrowed by bisection to neighbouring sizes."""
    grid = sorted({n for n in range(1, min(32, largest) + 1)}
                  | {min(largest, round(32 * 2 ** (k / 4))) for k in range(0, 4 * max(1, largest.bit_length()))})
    grid = [n for n in grid if 1 <= n <= largest]
    signs = [_sign(g, s, sp.Integer(n)) for n in grid]
    for k, zero in _crossings(signs):
        low, high = grid[k], grid[k + 1]
        while not zero and high - low > 1:
            mid = (low + high) // 2
            sign = _sign(g, s, sp.Integer(mid))
            if sign is None:
                break
            if sign == 0:
                low = mid
                break
            low, high = (mid, high) if sign == signs[k] else (low, mid)
        yield low


def _crossings(signs: list[int | None]) -> Iterator[tuple[int, bool]]:
    """``(k, zero)`` for the first ``MAX_ROOTS`` changes of sign along a grid: ``zero``, point k is an exact 0
    between two signs; else the sign changes between points k and k + 1."""
    found = 0
    for k in range(len(signs) - 1):
        left, right = signs[k], signs[k + 1]
        if found >= MAX_ROOTS or left is None or right is None:
            continue
        if left == 0 and 0 < k and signs[k - 1] not in (None, 0):
            found += 1
            yield k, True
        elif left * right < 0:
            found += 1
            yield k, False


def _bisect(g: sp.Expr, s: sp.Symbol, a: sp.Rational, b: sp.Rational,
            sign_a: int) -> tuple[sp.Rational, sp.Rational]:
    """A narrower bracket of the sign change of ``g`` between ``a`` and ``b`` (``g(a)`` of sign ``sign_a``)."""
    for _ in range(BISECTIONS):
        mid = (a + b) / 2
        sign = _sign(g, s, mid)
        if sign is None or sign == 0:
            break
        if sign == sign_a:
            a = mid
        else:
            b = mid
    return a, b


def _sign(g: sp.Expr, s: sp.Symbol, x: sp.Expr) -> int | None:
    """The sign of ``g`` at ``s = x`` (-1, 0 or 1), or None where it is not a real number. In float64 where the
    value is clearly away from 0 (a scan only looks for where to examine: a point it proposes is evaluated
    exactly, or with certified digits, by whoever uses it), else with certified digits: ``exp(1e299)`` costs
    SymPy 12 ms, Python nothing (it overflows to inf)."""
    approx = _float_value(g, {s: float(x)})
    if approx is not None and not math.isnan(approx) and abs(approx) > 1e-9:
        return 1 if approx > 0 else -1
    value = g.xreplace({s: x})
    if value.is_Rational:
        return int(sp.sign(value))
    try:
        out = value.evalf(20, strict=True)
    except (sp.core.evalf.PrecisionExhausted, TypeError, ValueError, ZeroDivisionError, ArithmeticError,
            RecursionError):  # mpmath recursing for the digits of an exactly-zero value
        return None
    if not out.is_Number or not out.is_real or out.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return None
    return int(sp.sign(out))


_UNARY: dict[type, Callable[[float], float]] = {
    sp.exp: lambda v: math.exp(v) if v < 709.0 else math.inf, sp.log: lambda v: math.log(v) if v > 0 else math.nan,
    sp.tanh: math.tanh, sp.sin: math.sin, sp.cos: math.cos, sp.atan: math.atan, sp.erf: math.erf,
    sp.Abs: abs, sp.sinh: lambda v: math.sinh(v) if abs(v) < 709.0 else math.copysign(math.inf, v),
    sp.cosh: lambda v: math.cosh(v) if abs(v) < 709.0 else math.inf,
}


def _float_value(e: sp.Basic, at: dict[sp.Symbol, float]) -> float | None:
    """``e`` in float64 (inf past overflow, NaN where undefined), or None for a node it does not know."""
    try:
        return _float(e, at)
    except (OverflowError, ValueError, ZeroDivisionError, TypeError, _Unknown):
        return None


class _Unknown(Exception):
    pass


def _float(e: sp.Basic, at: dict[sp.Symbol, float]) -> float:
    if e.is_Number or e.is_NumberSymbol:  # 3/4, pi, E
        return float(e)
    if e.is_Symbol:
        if e not in at:
            raise _Unknown
        return at[e]
    if e.is_Add:
        return math.fsum(_float(a, at) for a in e.args)
    if e.is_Mul:
        out = 1.0
        for a in e.args:
            out *= _float(a, at)
        return out
    if e.is_Pow:
        base, exp = _float(e.args[0], at), _float(e.args[1], at)
        if base < 0 and not float(exp).is_integer():
            return math.nan
        try:
            return base ** exp
        except OverflowError:
            return math.inf
    unary = _UNARY.get(type(e)) or _UNARY.get(getattr(e, "func", None))  # type: ignore[arg-type]
    if unary is not None and len(e.args) == 1:
        return unary(_float(e.args[0], at))
    raise _Unknown
