"""Index letters in the file's own convention, and lettered patterns read off concrete entries."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import sympy as sp  # type: ignore[import-untyped]

from ..lang.dims import Dim
from ..lang.ir import IndexSum, walk
from ..model import Derivation
from .jacobian import same
from .printing import split_entry

if TYPE_CHECKING:
    from .analysis import Analysis

LETTER_POOL = "ijklpqrsuvwabcdefgh"


class Letters:
    """Index letters per dim: the file's own (``"z[j]"``, ``for i in n``) first, then i, j, k, …"""

    def __init__(self, d: Derivation, sizes: Mapping[str, int]):
        self.sizes = dict(sizes)
        self.preferred: dict[Dim, str] = {}
        for definition in d.forward + d.backward:
            if definition.index is None:
                continue
            for letter, dim in zip(definition.index.free, definition.shape):
                self.preferred.setdefault(dim, letter)
            for node in walk(definition.index.body):
                if isinstance(node, IndexSum):
                    self.preferred.setdefault(Dim.of(node.dim), node.index)
        taken = set(self.preferred.values()) | set(d.dims)
        pool = [x for x in LETTER_POOL if x not in taken and x not in d.inputs]
        for name in d.dims:
            dim = Dim.of(name)
            if dim not in self.preferred and pool:
                self.preferred[dim] = pool.pop(0)
        names = set(d.inputs) | {f.name for f in d.forward + d.backward}
        self.pool = [x for x in LETTER_POOL
                     if x not in d.dims and x not in names and x not in set(self.preferred.values())]


class Context:
    """Letters in use in one formula, each with its dim and a distinct concrete value."""

    def __init__(self, letters: Letters):
        self.letters = letters
        self.dim: dict[str, Dim] = {}
        self.value: dict[str, int] = {}
        self.ok = True  # False once a dim has more letters than entries (patterns become ambiguous)

    def new(self, dim: Dim) -> str:
        """A fresh letter for ``dim`` (the file's own first) with a value distinct from its others."""
        want = self.letters.preferred.get(dim)
        candidates = ([want] if want else []) + self.letters.pool + [x + "'" for x in LETTER_POOL]
        letter = next(c for c in candidates if c not in self.dim)
        used = [v for x, v in self.value.items() if self.dim[x] == dim]
        size = dim.value(self.letters.sizes)
        free = [v for v in range(size - 1, -1, -1) if v not in used]
        if not free:
            self.ok = False
        self.dim[letter] = dim
        self.value[letter] = free[0] if free else 0
        return letter


def generalize(expr: sp.Expr, ctx: Context, d: Derivation) -> sp.Expr | None:
    """Rewrite concrete entries (``a[2]``) as lettered ones (``a_i``) using the context's values;
    None when an entry matches no letter or several (the pattern is then not index-regular)."""
    if not ctx.ok:
        return None
    mapping: dict[sp.Symbol, sp.Symbol] = {}
    for s in expr.free_symbols:
        name, idx = split_entry(s)
        if not idx:
            continue
        try:
            shape = d.shape_of(name)
        except KeyError:
            return None
        letters = []
        for axis, value in enumerate(idx):
            hits = [x for x in ctx.dim if ctx.dim[x] == shape[axis] and ctx.value[x] == value]
            if len(hits) != 1:
                return None
            letters.append(hits[0])
        mapping[s] = sp.Symbol(f"{name}@{','.join(letters)}", real=True)
    return expr.xreplace(mapping)


MAX_PATTERN_CHECKS = 300


def checked(a: Analysis, pattern: sp.Expr, letters: list[str], ctx: Context,
             actual: Callable[[Analysis, dict[str, int]], sp.Expr | None]) -> tuple[sp.Expr | None, bool]:
    """Keep a lettered pattern only if it gives the true partial for *every* value of its letters,
    equal values included (a sum over j must not hide a different j = i term). Returns the pattern
    (or None) and whether its constants hold only at these dims (tested at dims one larger)."""
    if not pattern_holds(a, pattern, letters, ctx, actual):
        return None, False
    numbers = {n for n in pattern.atoms(sp.Number) if abs(n) != 1}
    if not numbers and not any(isinstance(e, sp.Pow) for e in sp.preorder_traversal(pattern)):
        return pattern, False
    larger = a.larger()
    if larger is None:
        return pattern, True
    return pattern, not pattern_holds(larger, pattern, letters, ctx, actual)


def pattern_holds(a: Analysis, pattern: sp.Expr, letters: list[str], ctx: Context,
                   actual: Callable[[Analysis, dict[str, int]], sp.Expr | None]) -> bool:
    ranges = [range(ctx.dim[L].value(a.sizes)) for L in letters]
    for count, values in enumerate(itertools.product(*ranges)):
        if count >= MAX_PATTERN_CHECKS:
            break
        val = dict(zip(letters, values))
        mapping = {}
        for sym in pattern.free_symbols:
            if "@" not in sym.name:
                continue
            name, ls = sym.name.split("@")
            arr = a.arrays.get(name)
            if arr is None:
                return False
            mapping[sym] = arr[tuple(val[L] for L in ls.split(","))]
        want = actual(a, val)
        if want is None or not same(pattern.xreplace(mapping), want):
            return False
    return True
