"""SymPy's canonical order of arguments (``Basic.compare``) as a sort key.

An ``Add`` or ``Mul`` keeps its arguments sorted by ``Basic.compare``, a three-way comparison that
SymPy calls through ``cmp_to_key``: one Python call per comparison, recursing into the arguments, and
the largest single cost of building a per-neuron truth. :func:`canonical_key` maps an expression to a
tuple that Python compares in C with the same outcome, made once per expression and kept:

    key(e) = (class rank, len(h), key(h[0]) or h[0], key(h[1]) or h[1], ...)

for ``h = e._hashable_content()``, the content ``compare`` walks, and the class rank ``compare``'s
``_cmp_name`` uses (the position in SymPy's ``ordering_of_classes``, then the class name). Content
that ``compare`` treats specially (a frozenset, an expression inside a tuple, None) has no key: :class:`NoKey`, and the caller sorts
with ``compare`` itself. ``tests/test_symbolic.py`` checks the order against ``compare`` on random
expressions.
"""

from __future__ import annotations

from typing import Any

from sympy.core import Add, Expr, Mul, Pow, basic
from sympy.core.basic import Basic

_KEYS: dict[int, tuple[Basic, tuple]] = {}  # by id, with the expression kept alive (ids are not reused)
_KEYS_LIMIT = 200_000  # then cleared (products.py writes into it too)
_RANKS: dict[type, tuple[int, str]] = {}


# classes whose ``_hashable_content`` is their arguments (the Basic and Expr default), checked below
_BY_ARGS = {cls for cls in (Add, Mul, Pow) if cls._hashable_content in (Basic._hashable_content,
                                                                       Expr._hashable_content)}


class NoKey(Exception):
    """The expression holds content whose order ``compare`` decides otherwise than by plain comparison."""


def class_rank(cls: type) -> tuple[int, str]:
    """``_cmp_name``'s order: the index in ``ordering_of_classes`` (unknown classes after all known ones),
    then the class name (which alone decides between two unknown classes, and equal names compare equal)."""
    found = _RANKS.get(cls)
    if found is None:
        name = cls.__name__
        order = basic.ordering_of_classes
        index = order.index(name) if name in order else len(order) + 1
        found = _RANKS[cls] = (index, name)
    return found


def canonical_key(e: Basic) -> tuple:
    """A tuple that orders SymPy expressions as ``Basic.compare`` does (raises :class:`NoKey`)."""
    hit = _KEYS.get(id(e))
    if hit is not None and hit[0] is e:
        return hit[1]
    cls = e.__class__
    rank = _RANKS.get(cls) or class_rank(cls)
    if cls in _BY_ARGS:  # content is the arguments, all expressions
        args = e._args
        key = (rank, len(args), *[canonical_key(x) for x in args])
    else:
        content = e._hashable_content()
        parts: list[Any] = [rank, len(content)]
        for x in content:
            if isinstance(x, Basic):
                parts.append(canonical_key(x))
            elif _plain(x):
                parts.append(x)
            else:
                raise NoKey(type(x).__name__)
        key = tuple(parts)
    if len(_KEYS) > _KEYS_LIMIT:
        _KEYS.clear()
    _KEYS[id(e)] = (e, key)
    return key


def remember(e: Basic, key: tuple) -> None:
    """Record ``e``'s key, made by a caller that built ``e`` from arguments whose keys it had (it must be the
    key :func:`canonical_key` would make)."""
    if len(_KEYS) > _KEYS_LIMIT:
        _KEYS.clear()
    _KEYS[id(e)] = (e, key)


def _plain(x: Any) -> bool:
    """Content Python compares as ``compare`` does: numbers, strings, and tuples of them (a symbol's
    assumptions, a float's mantissa); not a frozenset (``compare`` makes it a Basic) or an expression."""
    if isinstance(x, (str, int)):
        return True
    return type(x) is tuple and all(map(_plain, x))  # (map: no generator frame per symbol's assumption)
