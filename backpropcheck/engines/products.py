"""Products and sums of SymPy entries, built without SymPy's general flattening where the result is known.

A per-neuron truth multiplies tens of thousands of entries, and most products are of a few kinds:
a zero (a padded or masked entry) times a symbol or a rational, one times anything, two distinct symbols,
a rational times a symbol. For those :func:`mul` builds the very expression ``x * y`` builds (the same
class, the same arguments in SymPy's canonical order, so equal and of equal hash) at a fraction of the
cost; every other product is ``x * y``. Likewise :func:`add` for a sum of distinct symbols and
products (a matrix product's entry, an index-form sum, an adjoint's chain-rule terms): SymPy's canonical
``Add`` of them is its arguments in SymPy's own order, built without collecting like terms that are not
there. ``tests/test_symbolic.py`` checks both against SymPy on random expressions.
"""

from __future__ import annotations

from functools import cmp_to_key
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.basic import Basic

from ..lang.ops import _matmul_sym
from .order import NoKey, canonical_key

_ZERO, _ONE = sp.S.Zero, sp.S.One
_from_args = sp.Mul._from_args
_SORT = cmp_to_key(Basic.compare)  # the order of an Add's arguments (sympy.core.add._addsort)


def mul(x: Any, y: Any) -> Any:
    """``x * y`` for SymPy expressions (or Python ints), equal to what SymPy's ``*`` builds."""
    if x is _ZERO or y is _ZERO:
        other = y if x is _ZERO else x
        if isinstance(other, sp.Rational) or (
                other.__class__ is sp.Symbol and other.is_commutative and other.is_finite is not False):
            return _ZERO  # (0 * oo and 0 * nan are nan, as SymPy says: they take the general route)
        return x * y
    if x is _ONE:
        return y
    if y is _ONE:
        return x
    if x.__class__ is sp.Symbol and y.__class__ is sp.Symbol and x is not y:
        if x.is_commutative and y.is_commutative:
            return _from_args((x, y) if canonical_key(x) < canonical_key(y) else (y, x), True)
    elif y.__class__ is sp.Symbol and isinstance(x, sp.Rational) and y.is_commutative:
        return _from_args((x, y), True)
    elif x.__class__ is sp.Symbol and isinstance(y, sp.Rational) and x.is_commutative:
        return _from_args((y, x), True)
    return x * y


def add(*terms: Any) -> Any:
    """``sympy.Add(*terms)``: built directly when every term is a commutative symbol or a product whose
    coefficient is 1, or a sum of such (its terms taken in, as SymPy flattens it: an index-form sum over
    two axes sums sums), and no two are alike (nothing to collect); else by SymPy."""
    kept = []
    seen = set()
    for t in terms:
        if t is _ZERO:
            continue
        if t.__class__ is sp.Add:  # its terms, already in order: the sort below merges the runs
            for u in t.args:
                cls = u.__class__
                if not (cls is sp.Symbol or (cls is sp.Mul and not u.args[0].is_Number)) \
                        or not u.is_commutative or u in seen:
                    return sp.Add(*terms)
                seen.add(u)
                kept.append(u)
            continue
        cls = t.__class__
        if not (cls is sp.Symbol or (cls is sp.Mul and not t.args[0].is_Number)) or not t.is_commutative \
                or t in seen:
            return sp.Add(*terms)
        seen.add(t)
        kept.append(t)
    if len(kept) < 2:
        return kept[0] if kept else _ZERO
    try:
        kept.sort(key=canonical_key)
    except NoKey:
        kept.sort(key=_SORT)
    return sp.Add._exec_constructor_postprocessors(sp.Add._from_args(kept, True))


_mul_entries = np.frompyfunc(mul, 2, 1)


def mul_arrays(a: Any, b: Any) -> np.ndarray:
    """Entry-wise ``a * b`` of object arrays (NumPy broadcasting), each entry by :func:`mul`."""
    return np.asarray(_mul_entries(a, b), dtype=object)


def matmul_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of object arrays: the op table's symbolic matmul with the cheaper products and sums."""
    return _matmul_sym(a, b, mul, add)
