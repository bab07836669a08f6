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

import operator
from bisect import bisect_left
from functools import cmp_to_key
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.basic import Basic

from ..lang.ops import _einsum_sym, _matmul_sym, sum_sym
from .order import _KEYS, _KEYS_LIMIT, NoKey, canonical_key, class_rank, remember

_ZERO, _ONE = sp.S.Zero, sp.S.One
_from_args = sp.Mul._from_args
_SYMBOL_RANK, _MUL_RANK = class_rank(sp.Symbol), class_rank(sp.Mul)
_SYMBOL = sp.Symbol
_COMMUTATIVE = dict.get  # a symbol's stored fact (its assumptions are a dict), as ``is_commutative`` reads it
_SORT = cmp_to_key(Basic.compare)  # the order of an Add's arguments (sympy.core.add._addsort)


# The last results of :func:`mul` and :func:`add` by the identity of their arguments (kept alive in the entry,
# so an id is never reused while its entry stands). A file's truths at several dims, its certificate's grid
# points and its claims build the same products and sums of the same entries again and again (more than half
# of all calls): the memo returns the very expression built the first time, which the function would build
# again equal (both are pure), and shared objects make the later equality tests and conversions cheaper.
_MEMO_LIMIT = 100_000
_PRODUCTS: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
_SUMS: dict[tuple[int, ...], tuple[tuple, Any]] = {}


def mul(x: Any, y: Any) -> Any:
    """``x * y`` for SymPy expressions (or Python ints), equal to what SymPy's ``*`` builds."""
    if x is _ONE:
        return y
    if y is _ONE:
        return x
    key = (id(x), id(y))
    hit = _PRODUCTS.get(key)
    if hit is not None and hit[0] is x and hit[1] is y:
        return hit[2]
    out = _symbols_product(x, y) if x.__class__ is _SYMBOL and y.__class__ is _SYMBOL else None
    if len(_PRODUCTS) >= _MEMO_LIMIT:
        _PRODUCTS.clear()
    if out is not None:
        _PRODUCTS[key] = (x, y, out)
        _PRODUCTS[(key[1], key[0])] = (y, x, out)  # y * x is the same product (W.T @ grad_z meets ∇z·W)
        return out
    out = _mul(x, y)
    _PRODUCTS[key] = (x, y, out)
    if x.__class__ is sp.Symbol and y.__class__ is sp.Symbol and x.is_commutative and y.is_commutative:
        _PRODUCTS[(key[1], key[0])] = (y, x, out)
    return out


def _symbols_product(x: sp.Symbol, y: sp.Symbol) -> Any:
    """``x * y`` for two distinct commutative symbols of unequal keys, the most common new product (a
    gradient atom times a local partial in the sweep, an entry of a matrix product): the factors in key order
    (as :func:`_mul` builds it), with the symbols' keys and commutativity read straight from their stores;
    None for anything else (then :func:`_mul` decides)."""
    if x is y or _COMMUTATIVE(x._assumptions, "commutative") is not True or \
            _COMMUTATIVE(y._assumptions, "commutative") is not True:
        return None
    hx, hy = _KEYS.get(id(x)), _KEYS.get(id(y))
    kx = hx[1] if hx is not None and hx[0] is x else canonical_key(x)
    ky = hy[1] if hy is not None and hy[0] is y else canonical_key(y)
    if kx < ky:
        product, key = _product_of((x, y)), (_MUL_RANK, 2, kx, ky)
    elif ky < kx:
        product, key = _product_of((y, x)), (_MUL_RANK, 2, ky, kx)
    else:  # equal symbols, two objects (a cache let one go): a square
        return None
    if len(_KEYS) > _KEYS_LIMIT:
        _KEYS.clear()
    _KEYS[id(product)] = (product, key)  # a sum sorts it (order.remember)
    return product


_new, _MUL = object.__new__, sp.Mul


def _built_product(args: tuple) -> sp.Mul:
    """``Mul._from_args(args, True)`` without its calls: ``Basic.__new__``'s three fields and the commutative
    flag, set here (used only if it builds what ``_from_args`` builds, checked on import below)."""
    obj = _new(_MUL)
    obj._assumptions = _MUL.default_assumptions  # read each time, as Basic.__new__ does
    obj._mhash = None
    obj._args = args
    obj.is_commutative = True
    return obj


def _same_build() -> bool:
    """Does :func:`_built_product` set every field ``_from_args`` sets (this SymPy's ``Basic.__new__``)?"""
    a, b = sp.Symbol("⟨a⟩", real=True), sp.Symbol("⟨b⟩", real=True)
    made, want = _built_product((a, b)), _from_args((a, b), True)
    slots = {n for k in type(want).__mro__ for n in k.__dict__.get("__slots__", ())}
    return slots == {"_assumptions", "_mhash", "_args", "is_commutative"} and not hasattr(want, "__dict__") and \
        made._assumptions is want._assumptions and made._mhash == want._mhash and made._args == want._args and \
        made.is_commutative is want.is_commutative and made == want and hash(made) == hash(want)


_product_of = _built_product if _same_build() else (lambda args: _from_args(args, True))


def _mul(x: Any, y: Any) -> Any:
    if x is _ZERO or y is _ZERO:
        other = y if x is _ZERO else x
        if isinstance(other, sp.Rational) or (
                other.__class__ is sp.Symbol and other.is_commutative and other.is_finite is not False):
            return _ZERO  # (0 * oo and 0 * nan are nan, as SymPy says: they take the general route)
        return x * y
    if x.__class__ is sp.Symbol and y.__class__ is sp.Symbol and x is not y:
        if x.is_commutative and y.is_commutative:
            kx, ky = canonical_key(x), canonical_key(y)
            if kx == ky:  # equal symbols, two objects (a cache let one go): a square
                return x * y
            product = _from_args((x, y) if kx < ky else (y, x), True)
            remember(product, (_MUL_RANK, 2, kx, ky) if kx < ky else (_MUL_RANK, 2, ky, kx))  # a sum sorts it
            return product
    elif y.__class__ is sp.Symbol and isinstance(x, sp.Rational) and y.is_commutative:
        return _from_args((x, y), True)
    elif x.__class__ is sp.Symbol and isinstance(y, sp.Rational) and x.is_commutative:
        return _from_args((y, x), True)
    elif x.__class__ is sp.Symbol:
        if y.__class__ is sp.Mul:
            return _symbol_times_product(x, y)
        return _symbol_times_factor(x, y)
    elif y.__class__ is sp.Symbol and x.is_commutative and y.is_commutative:  # the helpers fall back to y * x
        if x.__class__ is sp.Mul:
            return _symbol_times_product(y, x)
        return _symbol_times_factor(y, x)
    return x * y


def _symbol_times_factor(x: sp.Symbol, y: Any) -> Any:
    """``x * y`` for a sum, a function's value or a power of anything but ``x`` and a number: ``(x, y)``, as
    nothing combines, a symbol distributes over no sum, and the class of ``y`` comes after Symbol's in
    SymPy's order (``Basic.compare`` decides by class first); else SymPy's product."""
    cls = y.__class__
    if not (cls is sp.Add or (cls is sp.Pow and not y.args[0].is_Number) or isinstance(y, sp.Function)) or \
            not (x.is_commutative and y.is_commutative) or (cls is sp.Pow and y.args[0] == x) or \
            class_rank(cls) <= _SYMBOL_RANK:
        return x * y
    return _from_args((x, y), True)


def _symbol_times_product(x: sp.Symbol, y: sp.Mul) -> Any:
    """``x * y`` for a product ``y`` of factors none of which is ``x`` or a power of ``x`` (nothing to
    combine) and no number but a rational coefficient: ``y``'s arguments with ``x`` in its canonical place
    (a gradient atom times a local partial, ``∇z[0]·W[0,1]·a[1]``); else SymPy's product."""
    args = y.args
    if not (x.is_commutative and y.is_commutative):
        return x * y
    for k, f in enumerate(args):
        cls = f.__class__
        if f is x or f == x or (cls is sp.Pow and f.args[0] == x) or (
                f.is_Number and (k or not isinstance(f, sp.Rational))):
            return x * y
    try:
        key = canonical_key(x)
        keys = [canonical_key(f) for f in args]
    except NoKey:
        return x * y
    at = bisect_left(keys, key)
    return _from_args(args[:at] + (x,) + args[at:], True)


def add(*terms: Any) -> Any:
    """``sympy.Add(*terms)``: built directly when every term is a commutative symbol or a product whose
    coefficient is 1, or a sum of such (its terms taken in, as SymPy flattens it: an index-form sum over
    two axes sums sums), and no two are alike (nothing to collect); else by SymPy."""
    if len(terms) < 2:  # one term is the sum itself (as SymPy's ``Add(x)`` is ``x``)
        return terms[0] if terms and isinstance(terms[0], Basic) else _add(terms)
    key = tuple(map(id, terms))
    hit = _SUMS.get(key)
    if hit is not None and all(map(operator.is_, hit[0], terms)):
        return hit[1]
    out = _add(terms)
    if len(_SUMS) >= _MEMO_LIMIT:
        _SUMS.clear()
    _SUMS[key] = (terms, out)
    return out


def _add(terms: tuple) -> Any:
    built = direct_sum(terms)
    return sp.Add(*terms) if built is None else built


def direct_sum(terms: Any) -> Any:
    """``sympy.Add(*terms)`` built directly (see :func:`add`), or None if some term needs SymPy's own sum."""
    kept = []
    for t in terms:
        if t is _ZERO:
            continue
        cls = t.__class__
        if cls is sp.Add:  # its terms, already in order: the sort below merges the runs
            for u in t._args:
                cls = u.__class__
                if not (cls is sp.Symbol or (cls is sp.Mul and not u._args[0].is_Number)) or not u.is_commutative:
                    return None
                kept.append(u)
            continue
        if not (cls is sp.Symbol or (cls is sp.Mul and not t._args[0].is_Number)) or not t.is_commutative:
            return None
        kept.append(t)
    if len(kept) < 2:
        return kept[0] if kept else _ZERO
    if len(set(kept)) < len(kept):  # like terms to collect
        return None
    try:
        kept.sort(key=canonical_key)
    except NoKey:
        kept.sort(key=_SORT)
    built = sp.Add._from_args(kept, True)
    if _postprocessors is None or _postprocessors("Add", sp.Symbol) or _postprocessors("Add", sp.Mul):
        return sp.Add._exec_constructor_postprocessors(built)
    return built  # SymPy would look up each argument's (none, for symbols and products): once here


try:  # SymPy's constructor post-processors by (class name, argument type), cached (matrix and tensor kinds)
    from sympy.core.basic import _get_postprocessors as _postprocessors
except ImportError:  # another SymPy: each sum asks SymPy, as it always did
    _postprocessors = None

_mul_entries = np.frompyfunc(mul, 2, 1)


def _add2(x: Any, y: Any) -> Any:
    return add(x, y) if isinstance(x, Basic) and isinstance(y, Basic) else x + y


_add_entries = np.frompyfunc(_add2, 2, 1)


def add_arrays(a: Any, b: Any) -> np.ndarray:
    """Entry-wise ``a + b`` of object arrays (NumPy broadcasting), each sum of two expressions by :func:`add`."""
    return np.asarray(_add_entries(a, b), dtype=object)


def mul_arrays(a: Any, b: Any) -> np.ndarray:
    """Entry-wise ``a * b`` of object arrays (NumPy broadcasting), each entry by :func:`mul`."""
    return np.asarray(_mul_entries(a, b), dtype=object)


def matmul_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of object arrays: the op table's symbolic matmul (each entry the sum of its products in the
    order of k) with the cheaper products and sums, the rows and columns read as lists once."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim not in (1, 2) or b.ndim not in (1, 2) or a.shape[-1] != (b.shape[0]):
        return _matmul_sym(a, b, mul, add)  # its own error for mismatched dims
    rows = (a.reshape(1, -1) if a.ndim == 1 else a).tolist()
    columns = (b.reshape(-1, 1) if b.ndim == 1 else b).T.tolist()
    out = np.empty((len(rows), len(columns)), dtype=object)
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            out[i, j] = add(*map(mul, row, column))
    return out.reshape(a.shape[:-1] + b.shape[1:] if b.ndim == 2 else a.shape[:-1])


def einsum_arrays(*args: Any, spec: str) -> np.ndarray:
    """``einsum`` of object arrays: the op table's symbolic einsum with the cheaper products and sums."""
    return _einsum_sym(*args, spec=spec, mul=mul, add=add)


def sum_arrays(a: Any, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """``sum`` of an object array: the op table's symbolic sum with the cheaper sums."""
    return sum_sym(a, axis=axis, keepdims=keepdims, add=add)


def outer_arrays(a: Any, b: Any) -> np.ndarray:
    """``outer(a, b)`` of object vectors, each entry by :func:`mul`."""
    return mul_arrays(np.asarray(a, dtype=object)[:, None], np.asarray(b, dtype=object)[None, :])
