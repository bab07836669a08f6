"""First partial derivatives of per-neuron expressions, by term and by template: the local steps of
the symbolic engine's reverse sweep."""

from __future__ import annotations

from collections.abc import Callable
from operator import is_not

import sympy as sp
from sympy.core.basic import Basic
from sympy.core.function import ArgumentIndexError, Function

from .products import add

_TEMPLATES: dict[tuple, sp.Expr] = {}
_ZERO = sp.S.Zero


def partials(expr: sp.Expr, wrt: set[sp.Symbol], templates: dict | None = None) -> dict[sp.Symbol, sp.Expr]:
    """``{s: ∂expr/∂s}`` for every symbol of ``wrt`` in ``expr`` (zero partials left out).

    The same expressions as ``sp.diff(expr, s)`` for each s (SymPy differentiates a sum
    term by term), but each term of a sum is visited only for the symbols it contains:
    O(size) instead of O(size · symbols) for a long loss or a wide dot product.
    """
    terms = expr.args if expr.is_Add else (expr,)
    found: dict[sp.Symbol, list[sp.Expr]] = {}
    for term in terms:
        if term.__class__ is sp.Mul and term.is_commutative:
            args = term.args
            if all(f.__class__ is sp.Symbol for f in args):  # a product of symbols (W[j,i]·a[i]), the common term:
                for k, f in enumerate(args):  # each factor's partial is the other factors as they stand
                    if f in wrt:
                        found.setdefault(f, []).append(
                            args[1 - k] if len(args) == 2 else sp.Mul._from_args(args[:k] + args[k + 1:], True))
                continue
        for s, ds in _term_partials(term, wrt, {} if templates is None else templates):
            found.setdefault(s, []).append(ds)
    out = {}
    for s, ds in found.items():
        total = add(*ds)
        if total is not _ZERO:  # (only SymPy's zero equals 0)
            out[s] = total
    return out


def _others(term: sp.Mul, k: int) -> sp.Expr:
    """``Mul(*args without args[k])`` of a canonical product: the one other factor itself, or the rest as they
    stand (still in order, nothing left to combine) unless a number and a sum remain (SymPy distributes)."""
    rest = term.args[:k] + term.args[k + 1:]
    if len(rest) == 1:
        return rest[0]
    if term.is_commutative and not (rest[0].is_Number and any(a.is_Add for a in rest)):
        return sp.Mul._from_args(rest, True)
    return sp.Mul(*rest)


def _diff(term: sp.Expr, s: sp.Symbol, templates: dict) -> sp.Expr:
    """``term.diff(s)``, computed once per *shape* of term: every neuron of a layer has the same
    local definition up to the names of its symbols, so the derivative is taken on a template
    whose symbols are placeholders (same assumptions, numbered in name order) and renamed back.
    The result is also kept for the term itself: the same entry's definition recurs at every dims of a
    file (``z[0]`` is defined alike at n=2 and n=3), and the renaming is not free.

    Both renamings keep the order of names (at most 8 placeholders ``⟨0⟩`` … ``⟨7⟩`` for the symbols
    sorted by name, each with its symbol's assumptions), and SymPy's canonical forms depend on names only
    through that order (``Basic.compare``, sort keys): so the renamed expression is already canonical and
    is rebuilt as it stands (:func:`_renamed`), not evaluated again as ``xreplace`` would.
    ``tests/test_symbolic.py`` checks the partials against ``sp.diff`` (equal as expressions)."""
    direct = templates.get((term, s))
    if direct is not None:
        return direct
    shape = templates.get(term)  # (symbols, placeholders, template): once per term, not per symbol
    if shape is None:
        symbols = sorted(term.free_symbols, key=lambda x: x.name)
        holders = [_placeholder(k, x) for k, x in enumerate(symbols)]
        plain = all(x.__class__ is sp.Symbol for x in symbols) and len({x.name for x in symbols}) == len(symbols)
        # a Dummy sorts after other classes, and two symbols of one name tie: renamed to placeholders, the
        # order of names would no longer be SymPy's order, so such a term is differentiated as it is
        template = _renamed(term, dict(zip(symbols, holders))) if plain and len(symbols) <= 8 else None
        shape = templates[term] = (symbols, holders, template)
    symbols, holders, template = shape
    if template is None:
        found = diff1(term, s)
    else:
        key = (template, holders[symbols.index(s)])
        found = templates.get(key)
        if found is None:
            found = templates[key] = diff1(template, key[1])
        found = _renamed(found, dict(zip(holders, symbols)))
    templates[(term, s)] = found
    return found


def diff1(e: sp.Expr, s: sp.Symbol) -> sp.Expr:
    """``e.diff(s)``, the very expression SymPy builds: its own rules for sums, products, powers and functions
    with a derivative of their own (``fdiff``), applied here without ``Derivative``'s dispatch around each
    node (variable checks, an ``is_zero`` query and a ``replace`` over the result at every level, which
    leave these rules' results as they are); anything else by ``diff`` itself. Tested equal, argument by
    argument, to ``sp.diff``."""
    if e is s:
        return sp.S.One
    if s not in e.free_symbols:
        return sp.S.Zero
    cls = e.__class__
    if cls is sp.Add:  # Add._eval_derivative
        return sp.Add(*[diff1(a, s) for a in e.args])
    if cls is sp.Mul:  # Mul._eval_derivative_n_times at n = 1: Leibniz, one factor differentiated per term
        args = e.args
        return sp.Add(*[sp.Mul(*args[:i], diff1(a, s), *args[i + 1:]) for i, a in enumerate(args)])
    if cls is sp.Pow:  # Pow._eval_derivative
        base, exp = e.args
        return e * (diff1(exp, s) * sp.log(base) + diff1(base, s) * exp / base)
    if cls in _PLAIN_FUNCTIONS or _plain_function(cls):  # Function._eval_derivative
        terms = []
        for i, a in enumerate(e.args, 1):
            da = diff1(a, s)
            if da.is_zero:
                continue
            try:
                df = e.fdiff(i)
            except ArgumentIndexError:
                df = Function.fdiff(e, i)
            terms.append(df * da)
        return sp.Add(*terms)
    return e.diff(s)


_PLAIN_FUNCTIONS: set[type] = set()


def _plain_function(cls: type) -> bool:
    """A function class whose derivative is SymPy's chain rule over its own ``fdiff``."""
    plain = issubclass(cls, Function) and (
        getattr(cls, "_eval_derivative", None) is Function._eval_derivative
        and getattr(cls, "_eval_derivative_n_times", None) is Basic._eval_derivative_n_times
        and getattr(cls, "fdiff", None) is not Function.fdiff)
    if plain:
        _PLAIN_FUNCTIONS.add(cls)
    return plain


_BUILT: dict[tuple, sp.Expr] = {}  # (function, template argument) -> the function's value on it


def by_template(fn: Callable[[sp.Expr], sp.Expr], e: sp.Expr) -> sp.Expr:
    """``fn(e)`` (a function class, or any function of one expression), evaluated once per *shape* of ``e``: on ``e`` with its symbols renamed to placeholders (in
    name order, at most 8, as :func:`_diff` does), the value renamed back. For a costly ``eval`` met
    with many symbols alike (a mask's step against a window's max: its arg-max indicator)."""
    symbols = sorted(e.free_symbols, key=lambda x: x.name)
    if len(symbols) > 8 or any(x.__class__ is not sp.Symbol for x in symbols):
        return fn(e)
    holders = [_placeholder(k, x) for k, x in enumerate(symbols)]
    key = (fn, _renamed(e, dict(zip(symbols, holders))))
    value = _BUILT.get(key)
    if value is None:
        if len(_BUILT) > 50_000:
            _BUILT.clear()
        value = _BUILT[key] = fn(key[1])
    return _renamed(value, dict(zip(holders, symbols)))


def _renamed(e: sp.Basic, names: dict) -> sp.Basic:
    """``e`` with its symbols renamed by ``names`` (an order-preserving renaming, see :func:`_diff`), sums,
    products, powers and function values rebuilt from their renamed arguments without SymPy's flattening,
    sorting and ``eval`` (each gave this very node on the arguments before renaming); anything else is
    built again."""
    if e.is_Symbol:
        return names.get(e, e)
    args = e.args
    if not args:
        return e
    new = tuple([_renamed(a, names) for a in args])
    if not any(map(is_not, new, args)):
        return e
    cls = type(e)
    if cls is sp.Mul or cls is sp.Add:
        return cls._from_args(new, e.is_commutative)
    if cls is sp.Pow:
        return sp.Pow(*new, evaluate=False)
    if isinstance(e, sp.Function):  # its eval left it as it is (e.func(*e.args) == e), and sees the same order
        return e.func(*new, evaluate=False)
    return e.func(*new)


_PLACEHOLDERS: dict[tuple, sp.Symbol] = {}


def _placeholder(k: int, like: sp.Symbol) -> sp.Symbol:
    """The k-th placeholder with ``like``'s assumptions, made once (a symbol's assumptions cost SymPy a
    deduction each time it is made). "⟨k⟩" cannot be the name of an entry (identifiers, or name[i,j])."""
    key = (k, like._assumptions0)
    found = _PLACEHOLDERS.get(key)
    if found is None:
        found = _PLACEHOLDERS[key] = sp.Symbol(f"⟨{k}⟩", **like.assumptions0)
    return found


def _term_partials(term: sp.Expr, wrt: set[sp.Symbol], templates: dict):
    """``(s, ∂term/∂s)`` for the symbols of ``wrt`` in one product term.

    A symbol that is a bare factor of a product and occurs nowhere else has the
    other factors as its partial: ``Mul(*others)``, which is the expression SymPy's
    own Leibniz rule builds, without its dispatch overhead.
    """
    if term.is_Symbol:
        if term in wrt:
            yield term, sp.Integer(1)
        return
    if not term.is_Mul:
        for s in term.free_symbols & wrt:
            yield s, _diff(term, s, templates)
        return
    bare: dict[sp.Symbol, int] = {}
    deep: set[sp.Symbol] = set()
    for k, factor in enumerate(term.args):
        if factor.is_Symbol:
            bare[factor] = k
        else:
            deep |= factor.free_symbols
    for s in (set(bare) | deep) & wrt:
        if s in deep:
            yield s, _diff(term, s, templates)
        else:
            k = bare[s]
            yield s, _others(term, k)
