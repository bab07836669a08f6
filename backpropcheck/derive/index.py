"""Index form: a definition as einsums, per-entry sums, and gradients written in index form (a
kernel's, and a convolution input's through a zero-padded upstream gradient)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..lang.dims import Dim, Shape
from ..lang.ir import Call, Const, DimSize, IndexDef, IndexRef, IndexSum, Node, Subscript, Var, walk
from ..lang.ops import num_text
from ..model import Definition
from .tree import _is, call

# an entry of a product: (name, its plain indices), ("@", an IndexRef read at shifted indices), or
# (a one-hot IR node, its indices)
Ref = tuple[Any, Any]
# a term of a sum of products: (sign, scalar factors, entries, the bound indices and their dims)
Term = tuple[int, list[Node], list[Ref], dict[str, str]]

# ---------------------------------------------------------------------------
# index form → einsum


def index_to_matrix(definition: Definition, lookup: Callable | None = None, protect: str | None = None,
                    only: str | None = None, shapes: dict[str, Shape] | None = None) -> Node | None:
    """An index-form body that is a sum of products of plainly indexed entries, as einsums.

    With ``lookup``, an entry read at shifted indices (``x[t + k]``) may stand for a forward
    variable that holds exactly those entries (``Xcol[t, k] = x[t + k]``): ``lookup(ref, range_of)``
    returns ``(name, indices)`` or None. That is only sound for the gradient of *another* factor,
    so an entry of ``protect`` (the variable being differentiated) is never replaced.

    With ``only``, the terms that do not read ``only`` are left out: the result then has the
    same derivative with respect to ``only`` (and is used for nothing else)."""
    idx = definition.index
    if idx is None:
        return None
    letters = _free_letters(idx)
    terms = _index_terms(idx.body, {}, letters, affine=lookup is not None or only is not None, shapes=shapes)
    if terms is None:
        return None
    if only is not None:
        terms = [t for t in terms if any(_ref_name(r) == only for r in t[2])]
        if not terms:
            return None
    axes = {name: k for k, name in enumerate(idx.free)}
    axes.update({n.index: n.axis for n in walk(idx.body) if isinstance(n, IndexSum)})

    def range_of(index: str) -> Dim | None:
        return idx.ranges.get(axes[index], Dim.of(idx.bound_dims[axes[index]]) if axes[index] in idx.bound_dims
                              else None)

    resolved = []
    for sign, scalars, refs, bound in terms:
        plain = []
        for r in refs:
            if r[0] != "@":
                plain.append(r)
                continue
            found = None if r[1].name == protect or lookup is None else lookup(r[1], range_of)
            if found is None:
                return None
            plain.append(found)
        resolved.append((sign, scalars, plain, bound))
    out = "".join(letters[n] for n in idx.free)
    total: Node | None = None
    for sign, scalars, refs, bound in resolved:
        subs = ["".join(letters[i] for i in r[1]) for r in refs]
        used = set("".join(subs))
        if not refs:
            return None
        covered = "".join(c for c in out if c in used)  # a term without some free index broadcasts along it
        operands = [r[0] if isinstance(r[0], Node) else Var(0, r[0]) for r in refs]
        node: Node = call("einsum", *operands, spec=",".join(subs) + "->" + covered)
        if covered != out:
            node = call("expand", node, items=tuple(":" if c in used else None for c in out))
        for index, dim in bound.items():
            if letters[index] not in used:  # summing a term that does not depend on the index
                scalars = scalars + [DimSize(0, dim)]
        for s in scalars:
            node = call("mul", s, node)
        if total is None:
            total = call("neg", node) if sign < 0 else node
        else:
            total = call("sub" if sign < 0 else "add", total, node)
    return total


def _ref_name(ref: Ref) -> str:
    """The tensor an entry of :func:`_index_terms` reads."""
    if ref[0] == "@":
        return ref[1].name
    return ref[0] if isinstance(ref[0], str) else ""


def _letter(index: str, taken: dict[str, str]) -> str:
    """The einsum letter of an index: its own name when that is one free letter (so the steps read
    ``einsum("j,ij->i", grad_z, W)`` in the file's own indices), else the first unused letter."""
    used = set(taken.values())
    if len(index) == 1 and index.isascii() and index.isalpha() and index not in used:
        return index
    return next(c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used)


def _plain_index(sub: Subscript) -> str | None:
    """The index of a subscript that is one index alone (``i``, not ``i + 1`` or ``y[b]``)."""
    if sub.lookup is not None or sub.const != 0 or sub.dim_terms or len(sub.terms) != 1 or sub.terms[0][1] != 1:
        return None
    return sub.terms[0][0]


def entry_form(node: Node, target: str = "") -> str | None:
    """An einsum as the per-entry sum it is: ``sum_j grad_z[j] * W[i, j]`` (None for anything else)."""
    if not _is(node, "einsum"):
        return None
    args = [a for a in node.args if isinstance(a, Var)]
    if len(args) != len(node.args):
        return None
    lhs, out = node.params["spec"].replace(" ", "").split("->")
    factors = [f"{a.name}[{', '.join(sub)}]" if sub else a.name for a, sub in zip(args, lhs.split(","))]
    summed = sorted(set(lhs.replace(",", "")) - set(out))
    body = " * ".join(factors)
    lead = f"{target}[{', '.join(out)}] = " if target and out else ""
    return lead + (f"sum_{''.join(summed)} " if summed else "") + body


def _index_terms(node: Node, bound: dict[str, str], letters: dict[str, str], affine: bool = False,
                 shapes: dict[str, Shape] | None = None) -> list[Term] | None:
    """``[(sign, scalar nodes, [(name, indices)], bound indices)]`` or None; with ``affine``, an
    entry at shifted indices comes back as ``("@", the IndexRef)``. With ``shapes``, an entry read
    at an integer input's value (``logp[b, y[b]]``) becomes a sum over that axis against a one-hot
    (``Σ_z logp[b, z] · one_hot(y, K)[b, z]``): the operand is then an IR node, not a name."""
    if isinstance(node, Call) and node.op in ("add", "sub"):
        a = _index_terms(node.args[0], bound, letters, affine, shapes)
        b = _index_terms(node.args[1], bound, letters, affine, shapes)
        if a is None or b is None:
            return None
        if node.op == "sub":
            b = [(-s, sc, r, bd) for s, sc, r, bd in b]
        return a + b
    if isinstance(node, Call) and node.op == "neg":
        a = _index_terms(node.args[0], bound, letters, affine, shapes)
        return None if a is None else [(-s, sc, r, bd) for s, sc, r, bd in a]
    if isinstance(node, IndexSum):
        if node.index not in letters:
            letters[node.index] = _letter(node.index, letters)
        inner = _index_terms(node.body, {**bound, node.index: node.dim}, letters, affine, shapes)
        if inner is None:
            return None
        return [(s, sc, r, {**bd, node.index: node.dim}) for s, sc, r, bd in inner]
    if isinstance(node, Call) and node.op == "mul":
        a = _index_terms(node.args[0], bound, letters, affine, shapes)
        b = _index_terms(node.args[1], bound, letters, affine, shapes)
        if a is None or b is None:
            return None
        return [(sa * sb, sca + scb, ra + rb, {**bda, **bdb}) for sa, sca, ra, bda in a for sb, scb, rb, bdb in b]
    if isinstance(node, IndexRef):
        indices = []
        picks: list[tuple[Node, tuple[str, ...]]] = []
        for axis, sub in enumerate(node.subscripts):
            if sub.lookup is not None:
                if shapes is None or node.name not in shapes:
                    return None
                plain = [_plain_index(s) for s in sub.lookup[1]]
                if any(i is None or i not in letters for i in plain):
                    return None
                z = f"{node.name}~{axis}"  # a fresh index: no index name of the file has a ~
                letters[z] = _letter(z, letters)
                indices.append(z)
                hot = call("one_hot", Var(0, sub.lookup[0]), V=shapes[node.name][axis])
                picks.append((hot, tuple(plain) + (z,)))  # type: ignore[arg-type]
                continue
            index = _plain_index(sub)
            if index is None:
                return [(1, [], [("@", node)], {})] if affine and not picks else None
            indices.append(index)
        if len(set(indices)) != len(indices) or any(i not in letters for i in indices):
            return None
        return [(1, [], [(node.name, tuple(indices)), *picks], {z: "" for _, (*_, z) in picks})]
    if isinstance(node, (Const, DimSize)):
        return [(1, [node], [], {})]
    return None


def _entry_text(ref: Ref, order: list[str]) -> str:
    """An entry as the file writes it; in a shifted position the indices come in ``order`` (the
    definition's free indices first: ``x[t + k]``, not ``x[k + t]``)."""
    if ref[0] == "@":
        from dataclasses import replace

        rank = {name: k for k, name in enumerate(order)}
        subs = [replace(sub, terms=tuple(sorted(sub.terms, key=lambda t: rank.get(t[0], len(rank)))))
                for sub in ref[1].subscripts]
        return f"{ref[1].name}[{', '.join(str(sub) for sub in subs)}]"
    return f"{ref[0]}[{', '.join(ref[1])}]" if ref[1] else ref[0]


def _free_letters(idx: IndexDef) -> dict[str, str]:
    """The einsum letters of a definition's free indices (each its own name where it can be)."""
    letters: dict[str, str] = {}
    for name in idx.free:
        letters[name] = _letter(name, letters)
    return letters


def _terms_reading(definition: Definition, v: str) -> tuple[IndexDef, list[Term]] | None:
    """An index-form definition's terms (entries at shifted indices kept as such) that read ``v``."""
    idx = definition.index
    if idx is None:
        return None
    letters = _free_letters(idx)
    terms = _index_terms(idx.body, {}, letters, affine=True)
    if terms is None:
        return None
    return idx, [t for t in terms if any(_ref_name(r) == v for r in t[2])]


def _scalar_texts(scalars: list[Node]) -> list[str] | None:
    """A term's numbers and dim sizes, written in front of its entries; None for anything else."""
    out: list[str] = []
    for sc in scalars:
        if isinstance(sc, Const):
            out.insert(0, num_text(sc.value) if sc.value >= 0 else f"({num_text(sc.value)})")
        elif isinstance(sc, DimSize):
            out.insert(0, sc.dim)
        else:
            return None
    return out


def _one_name(dim: Dim) -> bool:
    """``dim`` is one dim name (what ``for i in D`` takes)."""
    return dim.const == 0 and len(dim.terms) == 1 and dim.terms[0][1] == 1 and "*" not in dim.terms[0][0]


def _signed_sum(texts: list[tuple[int, str]]) -> str:
    out = ("-" if texts[0][0] < 0 else "") + texts[0][1]
    for sign, body in texts[1:]:
        out += f" {'-' if sign < 0 else '+'} {body}"
    return out


def index_gradient(definition: Definition, v: str, shape: Shape) -> tuple[str, str] | None:
    """``("grad_v[indices]", body)``: the index-form gradient of ``v`` through one index-form
    definition that is a sum of products, v read once per term at the same plain indices; or None."""
    read = _terms_reading(definition, v)
    if read is None:
        return None
    idx, terms = read
    free_dims = {name: definition.shape[k] for k, name in enumerate(idx.free)}
    mine_indices: tuple[str, ...] | None = None
    texts: list[tuple[int, str]] = []
    for sign, scalars, refs, bound in terms:
        mine = [r for r in refs if _ref_name(r) == v]
        if len(mine) != 1 or mine[0][0] == "@" or not mine[0][1]:
            return None
        if mine_indices is None:
            mine_indices = mine[0][1]
        elif mine[0][1] != mine_indices:
            return None
        ranges = {**free_dims, **{i: Dim.of(dim) for i, dim in bound.items()}}
        if any(ranges.get(i) != d for i, d in zip(mine_indices, shape)):  # v's axes, each read whole
            return None
        factors = [f"grad_{definition.name}[{', '.join(idx.free)}]" if idx.free else f"grad_{definition.name}"]
        factors += [_entry_text(r, list(idx.free) + list(bound)) for r in refs if r is not mine[0]]
        numbers = _scalar_texts(scalars)
        if numbers is None:
            return None
        factors = numbers + factors
        summed = []
        for i in list(idx.free) + list(bound):
            if i in mine_indices or i in summed:
                continue
            if not _one_name(ranges[i]):
                return None  # `for i in D` takes one dim name
            summed.append(i)
        body = " * ".join(factors)
        if summed:
            clauses = " ".join(f"for {i} in {ranges[i].terms[0][0]}" for i in summed)
            body = f"sum({body} {clauses})"
        texts.append((sign, body))
    if not texts or mine_indices is None:
        return None
    return f"grad_{v}[{', '.join(mine_indices)}]", _signed_sum(texts)


def _sub_of(ref: Ref) -> tuple[Subscript, ...]:
    """The subscripts of an entry of :func:`_index_terms` (a plain one as ``i`` alone)."""
    if ref[0] == "@":
        return tuple(ref[1].subscripts)
    return tuple(Subscript(((i, 1),), 0) for i in ref[1])


def _nonneg(dim: Dim) -> bool:
    """``dim ≥ 0`` for every size (each dim name ≥ 1)."""
    return dim.monotone and dim.at_ones >= 0


def _padding(dim: Dim) -> Dim | None:
    """The zeros a read needs on one side: ``dim`` when it is ≥ 0 for every size, none when it
    is ≤ 0 for every size, None when its sign depends on the sizes."""
    if _nonneg(dim):
        return dim
    if _nonneg(Dim() - dim):
        return Dim()
    return None


@dataclass
class Shifted:
    """A gradient through shifted reads, in index form: ``key = body``, with the [backward]
    helper (a zero-padded upstream gradient) it reads, if it needs one."""

    key: str
    body: str
    helper: tuple[str, str] | None


def shifted_gradient(definition: Definition, v: str, shape: Shape, helper_name: str) -> Shifted | None:
    """The gradient of ``v`` through an index-form definition ``c`` that reads it at shifted
    positions (a convolution's input, ``x[t + k]``): each axis of v is read at one index of its own
    (a free index of c, or a bound one read alone) plus other bound indices and an offset; solving
    for that index reads ``grad_c`` at ``s - k - offset``, which steps past the ends of grad_c's
    axes, so grad_c is zero-padded first (the helper): the "full" correlation with the flipped
    kernel, ``grad_x[t] = sum(w[k] * gpad[t - k + K - 1] for k in K)``. None beyond that."""
    read = _terms_reading(definition, v)
    if read is None:
        return None
    idx, terms = read
    c = definition.name
    free_dims = {name: definition.shape[k] for k, name in enumerate(idx.free)}
    keys: set[str] = set()
    pads: set[tuple[tuple[Dim, Dim], ...]] = set()
    texts: list[tuple[int, str, tuple[tuple[Dim, Dim], ...]]] = []
    for sign, scalars, refs, bound in terms:
        mine = [r for r in refs if _ref_name(r) == v]
        if len(mine) != 1 or not isinstance(mine[0][0], str):
            return None
        others = [r for r in refs if r is not mine[0]]
        if any(not isinstance(r[0], str) for r in others):
            return None
        subs = _sub_of(mine[0])
        if len(subs) != len(shape) or any(s.lookup is not None for s in subs):
            return None
        ranges: dict[str, Dim] = {**free_dims, **{i: Dim.of(dim) for i, dim in bound.items() if dim}}
        other_reads = {n for r in others for sub in _sub_of(r) for n, _ in sub.terms}
        pivots: list[str] = []
        solved: dict[str, Subscript] = {}  # a free index of c -> the position it reads, from v's index
        lo_hi: dict[str, tuple[Dim, Dim]] = {}
        for axis, sub in enumerate(subs):
            coeffs = dict(sub.terms)
            alone = len(sub.terms) == 1 and sub.terms[0][1] == 1 and not sub.dim_terms and not sub.const
            free = [n for n, k in sub.terms if n in free_dims and k == 1 and (alone or n not in other_reads)]
            if free:
                pivot = free[0]
            elif alone and sub.terms[0][0] not in free_dims:
                pivot = sub.terms[0][0]  # a bound index read alone (a channel): it becomes v's index
            else:
                return None
            if pivot in pivots or any(pivot in dict(s.terms) for k, s in enumerate(subs) if k != axis):
                return None
            pivots.append(pivot)
            if ranges.get(pivot) is None:
                return None
            if pivot not in free_dims:
                if ranges[pivot] != shape[axis]:
                    return None
                continue
            rest = {n: k for n, k in coeffs.items() if n != pivot}
            if any(n not in ranges for n in rest):
                return None
            # pivot = s - Σ k·n - offset, for s over v's axis: its least and greatest values
            least: Dim = Dim() - sub.offset
            most: Dim = shape[axis] - Dim.lit(1) - sub.offset
            for n, k in rest.items():
                span = (ranges[n] - Dim.lit(1)) * Dim.lit(abs(k))
                if k > 0:
                    least = least - span
                else:
                    most = most + span
            lo, hi = _padding(Dim() - least), _padding(most - (free_dims[pivot] - Dim.lit(1)))
            if lo is None or hi is None:
                return None
            lo_hi[pivot] = (lo, hi)
            offset = lo - sub.offset
            solved[pivot] = Subscript(((pivot, 1), *((n, -k) for n, k in rest.items())), offset.const,
                                      offset.terms)
        sums = [n.index for n in walk(idx.body) if isinstance(n, IndexSum)]  # outermost first, as written
        summed = [i for i in list(idx.free) + sorted(bound, key=lambda i: sums.index(i) if i in sums else len(sums))
                  if i not in pivots]
        if not all(i in ranges and _one_name(ranges[i]) for i in summed):
            return None  # `for i in D` takes one dim name
        pad = tuple(lo_hi.get(i, (Dim(), Dim())) for i in idx.free)
        padded = any(lo.terms or lo.const or hi.terms or hi.const for lo, hi in pad)
        at = ", ".join(str(solved[i]) if i in solved else i for i in idx.free)
        factors = [f"{helper_name if padded else f'grad_{c}'}[{at}]" if idx.free else f"grad_{c}"]
        order = list(idx.free) + list(bound)
        numbers = _scalar_texts(scalars)
        if numbers is None:
            return None
        factors = numbers + [_entry_text(r, order) for r in others] + factors
        body = " * ".join(factors)
        if summed:
            body = f"sum({body} {' '.join(f'for {i} in {ranges[i].terms[0][0]}' for i in summed)})"
        keys.add(f"grad_{v}[{', '.join(pivots)}]")
        pads.add(pad)
        texts.append((sign, body, pad))
    if not texts or len(keys) != 1 or len(pads) != 1:
        return None
    pad = pads.pop()
    helper = None
    if any(lo.terms or lo.const or hi.terms or hi.const for lo, hi in pad):
        widths = ", ".join(f"({lo}, {hi})" for lo, hi in pad)
        helper = (helper_name, f"pad(grad_{c}, ({widths}{',' if len(pad) == 1 else ''}))")
    return Shifted(keys.pop(), _signed_sum([(sign, body) for sign, body, _ in texts]), helper)


def _factors(node: Node) -> list[Node] | None:
    """The factors of a product of entries (no sums), or None."""
    if _is(node, "mul"):
        a, b = _factors(node.args[0]), _factors(node.args[1])
        return None if a is None or b is None else a + b
    if isinstance(node, (IndexRef, Const)):
        return [node]
    return None


