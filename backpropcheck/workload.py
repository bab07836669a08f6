"""The size of a file's check before it runs: every array the engines build, at the drawn dims.

The checker bounds these (``max_entries``, ``max_rank``, ``max_flops``: :mod:`.limits`) before
anything is allocated, and paces its trials by them.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any

from .errors import LimitError
from .lang.dims import Dim, Shape
from .lang.ir import Call, Var
from .lang.ops import OPS as _OPS
from .lang.ops import Op, ShapeMismatch
from .limits import Limits, exceeded
from .model import Claim, Derivation


@dataclass(frozen=True)
class _Table:
    names: tuple[str, ...]  # every named tensor (:func:`all_shaped`)
    shapes: tuple[Shape, ...]  # and its shape, in the same order
    distinct: frozenset[Dim]
    values: tuple[Callable[[Mapping[str, int]], tuple[int, ...]], ...]  # each shape at given dims
    distinct_values: Callable[[Mapping[str, int]], tuple[int, ...]]  # the distinct dims at given dims


def shape_values(shape: Shape) -> Callable[[Mapping[str, int]], tuple[int, ...]]:
    """A shape's values at given dims; one C call (``itemgetter``) when each dim is a plain name."""
    names = [dim.terms[0][0] for dim in shape
             if dim.const == 0 and len(dim.terms) == 1 and dim.terms[0][1] == 1 and "*" not in dim.terms[0][0]]
    if len(names) < len(shape):
        return lambda sizes: tuple(dim.value(sizes) for dim in shape)
    if len(names) == 1:
        name = names[0]
        return lambda sizes: (sizes[name],)
    return itemgetter(*names) if names else lambda sizes: ()


def _table(d: Derivation) -> _Table:
    """A file's named shapes, looked up once per file (:func:`file_memo`, while it has the same tables of
    inputs and definitions, as many of each): ``shape_of`` is a linear search, and every trial needs every
    shape (with 120 definitions, checking every shape at each of 10,000 draws took seconds)."""
    key = (len(d.inputs), len(d.forward), len(d.backward))
    memo = file_memo(d)
    hit = memo.get("table")
    if (hit is None or hit[0] != key or hit[1] is not d.inputs or hit[2] is not d.forward
            or hit[3] is not d.backward):
        names = tuple(all_shaped(d))
        shapes = tuple(d.shape_of(n) for n in names)
        distinct = frozenset(dim for s in shapes for dim in s)
        hit = memo["table"] = (key, d.inputs, d.forward, d.backward,
                               _Table(names, shapes, distinct, tuple(shape_values(s) for s in shapes),
                                      shape_values(tuple(distinct))))
    return hit[4]


def distinct_dims(d: Derivation) -> frozenset:
    """The distinct dims of every shape, once per file."""
    return _table(d).distinct


def dims_positive(d: Derivation, sizes: Mapping[str, int]) -> bool:
    """Whether every dim of every shape is at least 1 at these dims (one C call when each is a plain name)."""
    return min(_table(d).distinct_values(sizes), default=1) >= 1


def all_shaped(d: Derivation) -> list[str]:
    return list(d.inputs) + [f.name for f in d.forward + d.backward]


def concrete_shapes(d: Derivation, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Every named tensor's shape at these dims."""
    table = _table(d)
    return {n: values(sizes) for n, values in zip(table.names, table.values)}


def entries(d: Derivation, sizes: Mapping[str, int]) -> int:
    return sum(math.prod(dim.value(sizes) for dim in shape) for shape in _table(d).shapes)


def spaces(d: Derivation, claims: list[Claim], limits: Limits,
            products: list[tuple[str, tuple]] | None = None) -> list[tuple[str, tuple]]:
    """Every array the engines build beyond the named tensors, as a tuple of dims, with its key.

    That is each intermediate value of a matrix-form expression (its rank must be at most
    ``max_rank``; the numeric tape keeps them all), each index-form definition's index space
    (one axis per free index and per sum) and each einsum's iteration space. With the named
    tensors, their entries at the drawn dims are bounded by ``max_entries`` before anything
    is allocated: a bound on memory, and on the work of a loop in C that no alarm interrupts.

    ``products`` (if given) receives the work space of each op that does more than one step per
    result entry (the op table's ``work``: a matrix product's or einsum's multiply-adds, (m, k) @ (k, n)
    is m·k·n), the work that entries alone do not show.
    """
    found = layout(d, claims, limits)
    if products is not None:
        products.extend(found.products)
    return list(found.spaces)


@dataclass(frozen=True)
class Layout:
    """:func:`spaces` of a file and its claims, worked out once (:func:`layout`), and what the checker's
    preflight counts at each drawn dim assignment."""

    spaces: tuple[tuple[str, tuple], ...]
    products: tuple[tuple[str, tuple], ...]
    rank: int  # the largest rank checked against ``max_rank``: the layout holds for any bound at least this
    entries_at: tuple[tuple[Callable[[Mapping[str, int]], tuple[int, ...]], int], ...]  # each distinct shape, count
    flops_at: tuple[tuple[Callable[[Mapping[str, int]], tuple[int, ...]], int], ...]  # each product space, weight
    counted: dict[tuple, tuple[int, int]] = field(default_factory=dict, compare=False)  # dims -> entries, flops

    def count(self, sizes: Mapping[str, int]) -> tuple[int, int]:
        """Entries (as :func:`work` sums them) and multiply-adds (a forward product thrice, for its two
        vector-Jacobian products) at these dims."""
        drawn = tuple(sizes.items())
        hit = self.counted.get(drawn)
        if hit is None:
            hit = (sum(k * math.prod(values(sizes)) for values, k in self.entries_at),
                   sum(k * math.prod(values(sizes)) for values, k in self.flops_at))
            if len(self.counted) >= 256:  # kept with the file: bounded (a default run draws 20)
                self.counted.clear()
            self.counted[drawn] = hit
        return hit


def layout(d: Derivation, claims: Sequence[Claim], limits: Limits) -> Layout:
    """:func:`spaces` with the preflight's counts, once per file and claims (each check of a loaded file
    walked every tree again). Kept with the file (:func:`file_memo`) with what it read: every definition,
    claim and input shape by identity (a tree is never changed in place once parsed), and the op table's
    entries it used (a test may replace one); anything else read gives a fresh layout."""
    reads = _layout_reads(d, claims)
    kept = file_memo(d).setdefault("layout", [])
    for entry_reads, ops, found in kept:
        if (found.rank <= limits.max_rank and entry_reads == reads
                and all(_OPS.get(name) is op for name, op in ops)):
            return found
    ops_read: dict[str, Op] = {}
    out: list[tuple[str, tuple]] = []
    products: list[tuple[str, tuple]] = []
    rank = _walk_spaces(d, claims, limits, out, products, ops_read)
    entries_of: Counter[tuple] = Counter(d.shape_of(n) for n in all_shaped(d))
    entries_of.update(dims for _, dims in out)
    flops_of: Counter[tuple] = Counter()
    for key, dims in products:
        flops_of[dims] += 3 if key.startswith(("forward.", "loss.")) else 1
    found = Layout(tuple(out), tuple(products), rank,
                   tuple((shape_values(dims), k) for dims, k in entries_of.items()),
                   tuple((shape_values(dims), k) for dims, k in flops_of.items()))
    if len(kept) >= 4:
        del kept[0]
    kept.append((reads, tuple(ops_read.items()), found))
    return found


def _layout_reads(d: Derivation, claims: Sequence[Claim]) -> tuple:
    """What :func:`layout` reads of a file (compared with ``==``: identity first, and the trees by identity)."""
    defs = tuple((f.key, f.name, f.shape, f.node, f.index,
                  None if f.index is None else (f.index.rank, tuple(f.index.ranges.values())))
                 for f in d.forward + d.backward)
    told = tuple((c.name, c.node, c.index,
                  None if c.index is None else (c.index.rank, tuple(c.index.ranges.values()))) for c in claims)
    return defs, d.loss.expression, told, tuple((n, i.shape) for n, i in d.inputs.items())


_MEMOS: dict[int, tuple[weakref.ref[Derivation], dict[str, Any]]] = {}


def file_memo(d: Derivation) -> dict[str, Any]:
    """A dict kept as long as ``d`` lives, for what is worked out from the file once and read at every
    check (a ``Derivation`` is not hashable, so by id, with a weak reference: a kept value never keeps
    its file alive, and a file's id reused after it is gone finds nothing). Whoever keeps something here
    keeps with it what it read, and checks that again."""
    key = id(d)
    hit = _MEMOS.get(key)
    if hit is not None and hit[0]() is d:
        return hit[1]

    def forget(ref: weakref.ref[Derivation], key: int = key) -> None:
        current = _MEMOS.get(key)
        if current is not None and current[0] is ref:
            del _MEMOS[key]

    store: dict[str, Any] = {}
    _MEMOS[key] = (weakref.ref(d, forget), store)
    return store


def _walk_spaces(d: Derivation, claims: Sequence[Claim], limits: Limits, out: list[tuple[str, tuple]],
                 products: list[tuple[str, tuple]], ops_read: dict[str, Op]) -> int:
    """:func:`spaces` itself, with the op table's entries it reads; the largest rank it checked."""
    roots = [(f.key, f.node) for f in d.forward + d.backward if f.node is not None]
    if d.loss.expression is not None:
        roots.append(("loss.E", d.loss.expression))
    roots += [(f"claims.{c.name}", c.node) for c in claims if c.node is not None]
    indexed = [(f.key, f.index) for f in d.forward + d.backward]
    indexed += [(f"claims.{c.name}", c.index) for c in claims]  # an index-form claim has its space too
    rank = 0
    for key, index in indexed:
        if index is not None:
            if index.rank > limits.max_rank:
                raise LimitError(exceeded("the rank of the index space (free indices plus sums)", index.rank,
                                          "max_rank", limits), key=key)
            rank = max(rank, index.rank)
            out.append((key, tuple(index.ranges.values())))
    for key, root in roots:
        shapes: dict[int, tuple] = {}
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            kids = node.children()
            if kids and not ready:
                stack.append((node, True))
                stack.extend((k, False) for k in kids)
                continue
            if isinstance(node, Var):
                shape = d.shape_of(node.name)
            elif isinstance(node, Call):
                args = [shapes[id(kid)] for kid in kids]
                op = ops_read[node.op] = _OPS[node.op]
                shape = _call_shape(node, op, args)
                space = op.work(args, shape, **node.params) if op.work is not None else None
                if space is not None:
                    if op.work_in_entries:
                        out.append((key, space))
                    products.append((key, space))
            else:
                shape = ()
            if len(shape) > limits.max_rank:
                raise LimitError(exceeded(f"the rank of `{node.src}`", len(shape), "max_rank", limits),
                                 key=key, column=node.col)
            rank = max(rank, len(shape))
            shapes[id(node)] = shape
            if isinstance(node, Call):
                out.append((key, shape))
    return rank


def _call_shape(node: Call, op: Op, args: list[Shape]) -> Shape:
    """The shape of a call whose arguments have these shapes: the op's shape rule (the loader has checked
    it already), or on a mismatch the loader's own error, from :func:`~.lang.shapes.infer`."""
    try:
        return op.shape(*args, **node.params)
    except ShapeMismatch:
        from .lang.shapes import infer

        env = {f"#{k}": shape for k, shape in enumerate(args)}
        return infer(replace(node, args=tuple(Var(kid.col, f"#{k}") for k, kid in enumerate(node.args))), env)


def work(d: Derivation, spaces: Sequence[tuple[str, tuple]], sizes: Mapping[str, int]) -> tuple[int, str | None]:
    """Entries of every tensor and every space at these dims (Python ints: no overflow), and the
    key of the largest space (the first of them, in the order of ``spaces``)."""
    total = entries(d, sizes)
    best: tuple[int, str | None] = (0, None)
    for dims, count, key in _distinct_spaces(spaces):
        n = math.prod(dim.value(sizes) for dim in dims)
        total += count * n
        if n > best[0]:
            best = (n, key)
    return total, best[1]


def work_of_each(d: Derivation, spaces: Sequence[tuple[str, tuple]], columns: Mapping[str, Any]) -> Any:
    """:func:`work`'s total at many dim assignments at once: ``columns`` maps each dim to an integer array
    (one entry per assignment), and so does the result (int64: a symbolic design's small dims)."""
    total: Any = 0
    for shape in _table(d).shapes:
        total = total + math.prod(dim.value(columns) for dim in shape)
    for dims, count, _ in _distinct_spaces(spaces):
        total = total + count * math.prod(dim.value(columns) for dim in dims)
    return total


_SPACES: dict[int, tuple[Sequence, int, list[tuple[tuple, int, str]]]] = {}


def _distinct_spaces(spaces: Sequence[tuple[str, tuple]]) -> list[tuple[tuple, int, str]]:
    """Each distinct space once, in the order it first appears, with its count and its first key: a file's
    spaces repeat (1093 in derivations/, 304 distinct), and :func:`work` runs at every trial."""
    hit = _SPACES.get(id(spaces))
    if hit is None or hit[0] is not spaces or hit[1] != len(spaces):
        if len(_SPACES) > 16:
            _SPACES.clear()
        first: dict[tuple, list] = {}
        for key, dims in spaces:
            if dims in first:
                first[dims][1] += 1
            else:
                first[dims] = [dims, 1, key]
        hit = _SPACES[id(spaces)] = (spaces, len(spaces), [(dims, count, key) for dims, count, key in first.values()])
    return hit[2]
