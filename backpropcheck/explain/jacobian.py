"""Local Jacobians as arrays of SymPy entries: equality, Kronecker ties, routing, constants over dims."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import sympy as sp  # type: ignore[import-untyped]

from ..lang.dims import Shape
from ..lang.symfuncs import ArgShare, Step


def dim_constant(c1: sp.Expr, c2: sp.Expr, sizes1: Mapping[str, int], sizes2: Mapping[str, int]) -> sp.Expr | None:
    """A constant seen at two dim assignments, in general form: ``c`` itself, or ``k · dim^p``
    (``1/B``, ``1/sqrt(d)``, ``B``) when that is what changed."""
    if same(c1, c2):
        return c1
    for name in sizes1:
        n1, n2 = sp.Integer(sizes1[name]), sp.Integer(sizes2[name])
        if n1 == n2:
            continue
        for power in (1, -1, sp.Rational(1, 2), sp.Rational(-1, 2), 2, -2):
            k = sp.simplify(c1 / n1**power)
            if same(k, sp.simplify(c2 / n2**power)):
                return k * sp.Symbol(name, positive=True) ** power
    return None


def same(a: sp.Expr, b: sp.Expr) -> bool:
    """Equal as expressions, or after expansion."""
    if a == b:
        return True
    try:
        return bool(sp.expand(a - b) == 0)
    except (TypeError, ValueError):  # pragma: no cover - SymPy edge cases
        return False


def tie_candidates(sv: Shape, su: Shape) -> list[dict[int, int]]:
    """Injective maps from axes of v to axes of u over the same dim, largest first."""
    out: list[dict[int, int]] = []
    for r in range(min(len(sv), len(su)), 0, -1):
        for vs in itertools.combinations(range(len(sv)), r):
            for us in itertools.permutations(range(len(su)), r):
                if all(sv[a] == su[b] for a, b in zip(vs, us)):
                    out.append(dict(zip(vs, us)))
    return out


def tied_block(J: np.ndarray, rv: int, ties: dict[int, int], constant: bool = False) -> np.ndarray | None:
    """Check ``J`` vanishes unless the tied indices agree; return the block over the untied axes
    (at the first tied value). With ``constant``, the block must not depend on the tied value."""
    if not _vanishes_off_ties(J, rv, ties):
        return None
    first: np.ndarray | None = None
    for values in itertools.product(*[range(J.shape[a]) for a in ties]):
        block = _block_at(J, rv, ties, values)
        if first is None:
            first = block
            if not constant:
                return first
        elif not all(same(x, y) for x, y in zip(first.flat, block.flat)):
            return None
    return first


def _vanishes_off_ties(J: np.ndarray, rv: int, ties: dict[int, int]) -> bool:
    """Is every entry of J zero where a tied pair of indices disagrees?"""
    return all(J[full] == 0 for full in np.ndindex(*J.shape)
               if not all(full[a] == full[rv + b] for a, b in ties.items()))


def _block_at(J: np.ndarray, rv: int, ties: dict[int, int], values: tuple[int, ...]) -> np.ndarray:
    """The block of J over the untied axes (v's, then u's) where the tied pairs take ``values``."""
    rest_axes = [k for k in range(rv) if k not in ties] + \
        [rv + k for k in range(J.ndim - rv) if k not in ties.values()]
    block = np.empty(tuple(J.shape[k] for k in rest_axes), dtype=object)
    full = [0] * J.ndim
    for (a, b), val in zip(ties.items(), values):
        full[a] = full[rv + b] = val
    for rest in np.ndindex(*block.shape):
        for k, r in zip(rest_axes, rest):
            full[k] = r
        block[rest] = J[tuple(full)]
    return block


def is_mask(e: sp.Expr) -> bool:
    """A 0/1 value by construction: 1, or a product of steps (a comparison, an arg-max mask)."""
    def step_like(f: sp.Expr) -> bool:  # Step(x), 1 - Step(x), a max's partial, or a power of one
        if f.is_Pow:
            f = f.base
        return isinstance(f, (Step, ArgShare)) or (f.is_Add and len(f.args) == 2 and sp.Integer(1) in f.args
                                       and any(isinstance(-a, Step) for a in f.args))

    factors = e.args if e.is_Mul else (e,)
    return all(step_like(f) for f in factors)


def routing(J: np.ndarray, rv: int) -> str | None:
    """``selection``: every entry of v is one entry of u (a gather, a slice, a reshape): J is 0/1 with at
    most one 1 per row. ``mask``: the same with 0/1 masks for the ones (a max-pooling window's arg-max).
    ``band``: u and v of one rank, each entry depending only on the offset of the indices, along at least
    two offsets (a convolution's Toeplitz band). None otherwise."""
    return _picking(J, rv) or ("band" if _is_band(J, rv) else None)


def _picking(J: np.ndarray, rv: int) -> str | None:
    """``selection`` or ``mask`` from the nonzero entries of each row of J (None for neither)."""
    rows = int(np.prod(J.shape[:rv], dtype=int))
    flat = J.reshape(rows, -1)
    nonzero = [[k for k, e in enumerate(row) if e != 0] for row in flat]
    picked = [flat[r, k] for r, ks in enumerate(nonzero) for k in ks]
    if not picked:
        return None
    ones = all(e == 1 for e in picked)
    if ones and all(len(ks) <= 1 for ks in nonzero):
        return "selection"
    if not ones and all(e == 1 or is_mask(e) for e in picked):
        return "mask"  # several candidates per row, exactly one of them 1 at any point without ties
    return None


def _is_band(J: np.ndarray, rv: int) -> bool:
    """v and u of one rank, every nonzero entry a function of the offset alone, at two offsets or more."""
    if rv == 0 or J.ndim != 2 * rv:
        return False
    by_offset: dict[tuple[int, ...], sp.Expr] = {}
    for full in np.ndindex(*J.shape):
        e = J[full]
        if e == 0:
            continue
        offset = tuple(full[rv + k] - full[k] for k in range(rv))
        if not same(by_offset.setdefault(offset, e), e):
            return False
    return len(by_offset) >= 2
