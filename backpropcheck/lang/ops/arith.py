"""Arithmetic, comparisons and branches: ``+ - * / ** -x``, ``> >= < <=``, ``where``, ``maximum``,
``minimum`` and ``clip``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dims import Shape
from .core import (
    Op,
    Param,
    _apply_sym,
    _complex_step,
    _register,
    _sf,
    _sp,
    broadcast,
    broadcast_to,
    dense,
    sig,
    unbroadcast,
)


def _binary(name, numeric, vjp, tangent, **fields):
    _register(Op(name, lambda a, b, **_: broadcast(a, b), numeric, vjp, arity=(2, 2), tangent=tangent, rational=True,
                 **fields))


def _sum_note(name: str):
    """``a + b`` in words: the identity, or a sum over the axes broadcasting stretched."""
    def note(position: int, shapes: list[Shape]) -> str:
        if shapes and any(s != shapes[position] for s in shapes):
            return "the identity on copies (broadcasting): the transposed Jacobian sums over the broadcast axes"
        return "the identity" + (" (negated)" if name == "sub" and position == 1 else "")

    return note


def _add_tangent(sign: int):
    def tangent(args, out, params, tans):
        ta, tb = tans
        if tb is not None and sign < 0:
            tb = -dense(tb)
        total = dense(ta) if tb is None else (dense(tb) if ta is None else dense(ta) + dense(tb))
        shape = out.shape if np.shape(total) == out.shape else np.broadcast_shapes(np.shape(total), out.shape)
        return broadcast_to(total, shape)

    return tangent


_binary("add", lambda a, b: a + b, lambda g, out, a, b: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)),
        _add_tangent(1), note=_sum_note("add"))
_binary("sub", lambda a, b: a - b, lambda g, out, a, b: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)),
        _add_tangent(-1), note=_sum_note("sub"))
_binary(
    "mul", lambda a, b: a * b, lambda g, out, a, b: (unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)),
    _complex_step("mul"),
)
_binary(
    "div",
    lambda a, b: a / b,
    lambda g, out, a, b: (unbroadcast(g / b, a.shape), unbroadcast(-g * a / (b * b), b.shape)),
    _complex_step("div"),
)
_register(Op("neg", lambda a, **_: a, lambda a: -a, lambda g, out, a: (-g,),
             tangent=lambda args, out, params, tans: -dense(tans[0]), rational=True))


def _pow_sym(a, exponent, text):
    k = _sp().Rational(text)
    return np.asarray(np.frompyfunc(lambda u: u**k, 1, 1)(a), dtype=object)


def _integer_exponent(params: Mapping[str, Any]) -> bool:
    """``x ** 2`` and ``x ** -1`` keep a dim used as a number rational; ``x ** 0.5`` does not."""
    exponent = params.get("exponent")
    return isinstance(exponent, (int, float)) and float(exponent).is_integer()


_register(
    Op(
        "pow",
        lambda a, **_: a,
        lambda a, exponent, text: a**exponent,
        lambda g, out, a, exponent, text: (g * exponent * a ** (exponent - 1),),
        symbolic=_pow_sym,
        params=("exponent", "text"),
        tangent=_complex_step("pow"),
        rational=_integer_exponent,
    )
)


# comparisons and branches: masks are 0/1 and never differentiated through


def _compare(name, numeric, flip):
    """``a > b`` is Step(a − b), ``a >= b`` is StepGe(a − b): 0 and 1 at a tie, as NumPy's comparisons."""
    strict = name in ("gt", "lt")

    def symbolic(a, b):
        high, low = (b, a) if flip else (a, b)
        step = np.frompyfunc(_sf().Step if strict else _sf().StepGe, 1, 1)
        return np.asarray(step(high - low), dtype=object)

    _register(
        Op(name, lambda a, b, **_: broadcast(a, b), lambda a, b: numeric(a, b).astype(float), None,
           symbolic=symbolic, arity=(2, 2), nograd=True)
    )


# masks compare real parts, so a complex step through them keeps the same mask
_compare("gt", lambda a, b: np.greater(np.real(a), np.real(b)), False)
_compare("ge", lambda a, b: np.greater_equal(np.real(a), np.real(b)), False)
_compare("lt", lambda a, b: np.less(np.real(a), np.real(b)), True)
_compare("le", lambda a, b: np.less_equal(np.real(a), np.real(b)), True)


def _where_sym(c, a, b):
    """``A`` where ``C`` is non-zero (any number, not only a 0/1 mask), else ``B``."""
    m = np.frompyfunc(_sf().nonzero, 1, 1)(c)
    return np.asarray(m * a + (1 - m) * b, dtype=object)


def _where_tangent(args, out, params, tans):
    """The mask is never differentiated: d where(c, a, b) = where(c, da, db)."""
    c, a, b = args
    _, ta, tb = tans
    da = np.zeros(np.shape(a)) if ta is None else dense(ta)
    db = np.zeros(np.shape(b)) if tb is None else dense(tb)
    return np.where(c != 0, da, db)


def _where_vjp(g, out, c, a, b):
    mask = c != 0
    return None, unbroadcast(np.where(mask, g, 0.0), a.shape), unbroadcast(np.where(mask, 0.0, g), b.shape)


_register(
    Op(
        "where",
        lambda c, a, b, **_: broadcast(c, a, b),
        lambda c, a, b: np.where(c != 0, a, b),
        _where_vjp,
        symbolic=_where_sym,
        arity=(3, 3),
        tangent=_where_tangent,
        signature=sig("C", "A", "B"),
    )
)


def _relu_sym(x):
    return np.asarray(np.frompyfunc(_sf().Relu, 1, 1)(x), dtype=object)


def _minmax(name, numeric, pick_a):
    def vjp(g, out, a, b):
        mask = pick_a(a, b)
        return unbroadcast(np.where(mask, g, 0.0), a.shape), unbroadcast(np.where(mask, 0.0, g), b.shape)

    # maximum(a, b) = b + relu(a - b); minimum(a, b) = b - relu(b - a): a tie goes to b, as in ``vjp``
    def symbolic(a, b):
        return np.asarray(b + _relu_sym(a - b) if name == "maximum" else b - _relu_sym(b - a), dtype=object)

    _register(Op(name, lambda a, b, **_: broadcast(a, b), numeric, vjp, symbolic=symbolic, arity=(2, 2),
                 tangent=_complex_step(name), signature=sig("A", "B")))


# The branch is chosen on real parts, exactly as the backward step's mask: a complex step
# (a + i·h·da) through NumPy's own maximum would break ties by the imaginary part.
_minmax("maximum", lambda a, b: np.where(np.real(a) > np.real(b), a, b), lambda a, b: a > b)
_minmax("minimum", lambda a, b: np.where(np.real(a) < np.real(b), a, b), lambda a, b: a < b)


def _clip_vjp(g, out, a, lo, hi):
    return (g * ((a > lo) & (a < hi)),)


def _clip_numeric(a, lo, hi):
    """On real parts, so a complex step through it keeps the branch; a value exactly at a bound (a dim's size,
    ``clip(n, -1.5, 2)`` at n = 2) takes the bound, so its derivative there is 0 as in the reverse rule."""
    r = np.real(a)
    return np.where(r <= lo, lo, np.where(r >= hi, hi, a))


def _clip_sym(a, lo, hi):
    low, high = _sp().Rational(str(lo)), _sp().Rational(str(hi))
    return _apply_sym(lambda u: _sf().Clip(u, low, high), a)


_register(Op("clip", lambda a, **_: a, _clip_numeric, _clip_vjp, symbolic=_clip_sym, params=("lo", "hi"),
             tangent=_complex_step("clip"),
             signature=sig("X", Param("lo", "number", keyword=False), Param("hi", "number", keyword=False))))
