"""The IR: a small tree that both engines interpret through the op table.

Matrix form is ``Var``/``Const``/``DimSize``/``Call``; index form adds
``IndexRef`` (``W[i, j]``) and ``IndexSum`` (``sum(... for i in n)``).
Every node keeps the 1-based column where it starts, for error messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Node:
    col: int
    src: str = field(default="", kw_only=True)  # the source text, for messages

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(eq=False)
class Var(Node):
    """A named tensor: an input, a forward variable, a ``grad_`` or a backward helper."""

    name: str


@dataclass(eq=False)
class Const(Node):
    """A numeric literal; ``text`` keeps the literal so SymPy can read it exactly."""

    value: float
    text: str


@dataclass(eq=False)
class DimSize(Node):
    """A dim name used as a scalar: ``sum(X) / B``."""

    dim: str


@dataclass(eq=False)
class Call(Node):
    """An op of the table (``matmul``, ``add``, ``tanh``, ``softmax``, …) with static params."""

    op: str
    args: tuple[Node, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(frozen=True)
class Subscript:
    """One affine index position ``Σ coeff·index + const``, e.g. ``t + k - 1``."""

    terms: tuple[tuple[str, int], ...]
    const: int
    dim_terms: tuple[tuple[str, int], ...] = ()  # dim names in the offset: gpad[t + K - 1 - k]
    lookup: tuple[str, tuple[Subscript, ...]] | None = None  # logp[b, y[b]]: the position is y[b]

    @property
    def offset(self):
        """The constant part as a dim expression, ``K - 1`` (a :class:`~.dims.Dim`)."""
        from .dims import Dim

        return Dim(self.dim_terms, self.const)

    def offset_value(self, sizes) -> int:
        return self.const + sum(c * sizes[n] for n, c in self.dim_terms)

    def __str__(self) -> str:
        if self.lookup is not None:
            return f"{self.lookup[0]}[{', '.join(str(s) for s in self.lookup[1])}]"
        text = ""
        for n, c in sorted(self.terms, key=lambda t: t[1] < 0):  # positive terms first: t - k, not -k + t
            term = n if abs(c) == 1 else f"{abs(c)}*{n}"
            text = (f"-{term}" if c < 0 else term) if not text else f"{text} {'-' if c < 0 else '+'} {term}"
        text = text or "0"
        if self.dim_terms or self.const:
            off = str(self.offset)
            text += f" - {off[1:]}" if off.startswith("-") else f" + {off}"
        return text


@dataclass(eq=False)
class IndexRef(Node):
    """A scalar entry ``W[i, j]`` of a tensor, in index form."""

    name: str
    subscripts: tuple[Subscript, ...]
    axes: dict[str, int]  # index name -> its axis in the index space


@dataclass(eq=False)
class IndexSum(Node):
    """``sum(body for index in dim)``; ``axis`` is the index's axis in the index space."""

    body: Node
    index: str
    dim: str
    axis: int = -1

    def children(self) -> tuple[Node, ...]:
        return (self.body,)


@dataclass(eq=False)
class IndexDef:
    """An index-form definition ``"z[j]" = body``: free indices, then one axis per sum."""

    free: tuple[str, ...]
    body: Node
    rank: int
    bound_dims: dict[int, str]  # axis of each sum -> the dim it ranges over
    ranges: dict[int, Any] = field(default_factory=dict)  # axis -> Dim, filled by shapes


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children (iteratively: deep trees are fine)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children()))


def walk_through(node: Node, definitions: Mapping[str, Node]) -> Iterator[Node]:
    """:func:`walk`, and below the definition of every variable of ``definitions`` the tree reads (once each):
    what an expression reads through ``c = n - 100`` or a helper ``H = x[:, None] + x[None, :]``."""
    todo, opened = [node], set()
    while todo:
        for n in walk(todo.pop()):
            yield n
            if isinstance(n, Var) and n.name in definitions and n.name not in opened:
                opened.add(n.name)
                todo.append(definitions[n.name])


def names_used(node: Node) -> set[str]:
    """Tensor names a tree reads, in matrix or index form."""
    out: set[str] = set()
    for n in walk(node):
        if isinstance(n, (Var, IndexRef)):
            out.add(n.name)
    return out
