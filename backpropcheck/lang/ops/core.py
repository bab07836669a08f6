"""The op table's core: the :class:`Op` record, its registry ``OPS``, and the helpers every
group of ops shares (broadcasting over dim names, complex-step and linear tangents)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dims import Dim, Shape, fmt_shape


class ShapeMismatch(Exception):
    """Raised by a shape rule; the parser/shape pass adds the location."""


def _sp():
    import sympy

    return sympy


def _sf():
    from .. import symfuncs

    return symfuncs


# ---------------------------------------------------------------------------
# shape helpers


def broadcast(*shapes: Shape) -> Shape:
    """NumPy broadcasting over dim names: equal names, or a literal 1."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for k in range(rank):
        dim: Dim | None = None
        for s in shapes:
            i = k - (rank - len(s))
            if i < 0:
                continue
            d = s[i]
            if d.is_one:
                continue
            if dim is None:
                dim = d
            elif dim != d:
                raise ShapeMismatch(
                    f"shapes {' and '.join(fmt_shape(s) for s in shapes)} do not broadcast: "
                    f"{dim} and {d} differ"
                )
        out.append(dim if dim is not None else Dim.lit(1))
    return tuple(out)


def _axis(axis: int | None, rank: int) -> int | None:
    return None if axis is None else _one_axis(axis, rank)


def _one_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeMismatch(f"axis {axis} is out of range for an array of rank {rank}")
    return axis % rank


def _axes(axis: int | tuple[int, ...] | None, rank: int) -> tuple[int, ...] | None:
    """An axis or a tuple of axes (``axis=(0, 1)``), normalised and sorted; None: every axis."""
    if axis is None:
        return None
    axes = tuple(sorted(_one_axis(a, rank) for a in (axis if isinstance(axis, tuple) else (axis,))))
    if len(set(axes)) != len(axes):
        raise ShapeMismatch(f"axis {axis} names an axis twice")
    return axes


def sum_sym(a, axis=None, keepdims=False, add=None) -> np.ndarray:
    """``np.sum`` of an object array, each result one ``Add`` of all its terms: the canonical sum NumPy's
    pairwise ``+`` builds, without re-flattening a growing sum at every step (quadratic in the terms).
    ``add`` may be a faster builder of the same sums (the symbolic engine's)."""
    add = add or _sp().Add
    a = np.asarray(a, dtype=object)
    axes = _axes(axis, a.ndim)
    if axes is None:
        axes = tuple(range(a.ndim))
    kept = [k for k in range(a.ndim) if k not in axes]
    runs = np.transpose(a, kept + list(axes)).reshape([a.shape[k] for k in kept] + [math.prod(a.shape[k] for k in axes)])
    out = np.empty(runs.shape[:-1], dtype=object)
    for idx in np.ndindex(*out.shape):
        out[idx] = add(*runs[idx])
    return np.expand_dims(out, axes) if keepdims else out


def broadcast_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``np.broadcast_to(a, shape)`` — a read-only view — without its Python overhead (a few µs, paid per
    node of every trial) when ``a`` already has that shape."""
    if type(a) is np.ndarray and a.shape == shape:
        view = a.view()
        view.flags.writeable = False
        return view
    return np.broadcast_to(a, shape)


def to_shape_of(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``g`` as it reaches a result of this shape: stretched to the broadcast of both, then summed back
    over the stretched axes (a read-only view when ``g`` has the shape already)."""
    if type(g) is np.ndarray and g.shape == shape:
        return broadcast_to(g, shape)
    return unbroadcast(np.broadcast_to(g, np.broadcast_shapes(np.shape(g), shape)), shape)


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient back over the axes that broadcasting stretched."""
    if type(g) is np.ndarray and g.shape == shape:
        return g  # nothing stretched (most nodes): no Python loop over the axes
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for k, n in enumerate(shape):
        if n == 1 and g.shape[k] != 1:
            g = g.sum(axis=k, keepdims=True)
    return g


def _expand_reduced(g: np.ndarray, shape: tuple[int, ...], axis, keepdims: bool):
    axes = _axes(axis, len(shape))
    if axes is not None and not keepdims:
        g = np.expand_dims(g, axes)
    return broadcast_to(g, shape)


# ---------------------------------------------------------------------------
# the op table


class MissingRule(NotImplementedError):
    """An op reached a derivative it has no rule for: a bug of the op table, never a verdict."""


@dataclass(frozen=True)
class Rank1:
    """The matrix ``outer(p, q)``, kept factored (a direction of the forward-mode check)."""

    p: np.ndarray
    q: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.p.shape[0], self.q.shape[0])

    def dense(self) -> np.ndarray:
        return np.multiply.outer(self.p, self.q)


@dataclass(frozen=True)
class LowRank:
    """The matrix ``p @ q.T`` (``p`` of shape (m, k), ``q`` of (n, k), k small), kept factored: the gradient
    of a product over a short inner dimension (a column's or a batch's outer products, ``g xᵀ``). The reverse
    sweep makes one instead of an m·n array, and the numeric check reads it through its factors, an outer
    product block by block (its entries made while in cache), and makes it whole only where it must;
    :meth:`dense` makes exactly the array ``p @ q.T`` would."""

    p: np.ndarray
    q: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.p.shape[0], self.q.shape[0])

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return self.p.shape[0] * self.q.shape[0]

    @property
    def T(self) -> LowRank:
        return LowRank(self.q, self.p)

    def bounded(self) -> bool:
        """Is every entry of ``p qᵀ`` finite by the factors alone (``k·max|p|·max|q| ≤ 1e300``: no term of an
        entry, nor their sum, can overflow; a NaN or an inf fails the test)?"""
        top_p, top_q = (float(np.max(np.absolute(x), axis=None, initial=0.0)) for x in (self.p, self.q))
        return self.p.shape[1] * top_p * top_q <= 1e300

    def dense(self) -> np.ndarray:
        return self.rows(0, self.p.shape[0])

    def rows(self, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``lo:hi``, into ``out`` if given: those rows of :meth:`dense`, bit for bit for one term per
        entry; for more, up to the order in which BLAS adds a block's k terms (a rounding)."""
        if self.p.shape[1] == 1:  # one term per entry: the broadcast product (matmul's loop is slow there)
            return np.multiply.outer(self.p[lo:hi, 0], self.q[:, 0], out=out)
        return np.matmul(self.p[lo:hi], self.q.T, out=out)

    @staticmethod
    def of(p: np.ndarray, q: np.ndarray) -> LowRank | np.ndarray:
        """``p @ q.T``: factored when :meth:`worth` it, else the product itself (kept: :func:`keep_product`)."""
        return LowRank(p, q) if LowRank.worth(p, q) else keep_product(p, q.T, LowRank(p, q).dense())

    @staticmethod
    def worth(p: np.ndarray, q: np.ndarray) -> bool:
        """Whether ``p @ q.T`` is kept factored: the factors are much smaller than the product, the product
        is large, and both are float64 arrays."""
        (m, k), n = p.shape, q.shape[0]
        return (m * n >= LOW_RANK_MIN and LOW_RANK_SHARE * k * (m + n) <= m * n
                and p.dtype == q.dtype == np.float64)


_KEPT: ContextVar[list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None] = ContextVar("kept_products", default=None)


class _ProductsKept:
    """:func:`products_kept`'s context (a class: entered once per trial, without a generator's frames)."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _KEPT.set([])

    def __exit__(self, *exc: object) -> None:
        _KEPT.reset(self._token)


def products_kept() -> _ProductsKept:
    """Within it, each matrix product ``x @ y`` the vector-Jacobian products make densely is kept (by this
    thread), so that a claim that is the very same product (``W.T @ grad_Z`` of the truth's ``Wᵀ g``) reads
    it instead of making it again: :func:`kept_product`."""
    return _ProductsKept()


def keep_product(x: np.ndarray, y: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``value``, which is ``x @ y`` (``matmul``, or for one term per entry the broadcast product), kept for
    :func:`kept_product` inside :func:`products_kept`."""
    kept = _KEPT.get()
    if kept is not None and type(value) is np.ndarray and value.dtype == np.float64 and _worth_keeping(x, y):
        kept.append((x, y, value))
    return value


def forget_product(value: Any) -> None:
    """Stop keeping ``value``: a product that flows into an intermediate expression is no named variable's
    gradient, so no claim is that product, and keeping it to the end of the trial would only hold memory."""
    kept = _KEPT.get()
    if kept:
        kept[:] = [entry for entry in kept if entry[2] is not value]


def any_kept() -> bool:
    """Whether any product is kept (:func:`keep_product`)."""
    return bool(_KEPT.get())


def kept_product(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """The kept ``x' @ y'`` whose operands are ``x`` and ``y``, or None. The same product, bit for bit: the
    same values, shapes, memory layouts and dtypes are the same call of ``matmul`` (nothing in a trial
    writes into an array once it is made). The larger operand (a weight matrix) is the same only as the
    same memory, since comparing its values would cost what the product does; the smaller by its values."""
    kept = _KEPT.get()
    if not kept or not _worth_keeping(x, y):
        return None
    by_value = x.size <= y.size  # which one may be compared by its values
    for x2, y2, value in kept:
        if _same_operand(x, x2, by_value) and _same_operand(y, y2, not by_value):
            return value
    return None


def _worth_keeping(x: np.ndarray, y: np.ndarray) -> bool:
    """A product of at least ``KEEP_MIN`` multiply-adds: a smaller one is made again faster than it is found."""
    return x.size * (y.shape[-1] if y.ndim == 2 else 1) >= KEEP_MIN


KEEP_MIN = 1 << 16


def _same_operand(a: np.ndarray, b: np.ndarray, by_value: bool) -> bool:
    if a.shape != b.shape or a.strides != b.strides or a.dtype != b.dtype:
        return False
    if a.__array_interface__["data"][0] == b.__array_interface__["data"][0]:
        return True
    return by_value and bool(np.array_equal(a, b))  # a NaN is unequal: made again


LOW_RANK_MIN = 1 << 16  # entries from which a product over a short inner dimension stays factored
LOW_RANK_SHARE = 8  # ... when its factors hold at most 1/LOW_RANK_SHARE of the product's entries


def add_low_rank(a, b):
    """``a + b`` where either may be a :class:`LowRank`: two of them stay factored (their factors side by
    side) while that is still small; anything else is added densely."""
    if isinstance(a, LowRank) and isinstance(b, LowRank) and a.shape == b.shape:
        return LowRank.of(np.concatenate([a.p, b.p], axis=1), np.concatenate([a.q, b.q], axis=1))
    return dense(a) + dense(b)


def dense(t):
    return t.dense() if isinstance(t, (Rank1, LowRank)) else t


@dataclass(frozen=True)
class Param:
    """One argument of an op as a file writes it: ``kind`` says how the parser reads it.

    ``tensor`` an expression (an argument of the IR call); ``tensors`` a list of them
    (``concat([A, B])``); every other kind is a static parameter read from literals:
    ``axis`` (an int, None or a tuple of ints), ``int``, ``ints``, ``bool``, ``number``
    (a signed literal), ``dim`` / ``dims`` (dim expressions), ``pads`` (pairs of dim
    expressions), ``spec`` (a string), ``shape`` (a dim name or a list of them).
    """

    name: str
    kind: str = "tensor"
    default: Any = ...  # ``...``: required
    keyword: bool = True  # may be given as ``name=value``
    by_name: bool = True  # :func:`spell` writes it as ``name=value`` (False: by position, ``transpose(X, (1, 0))``)


@dataclass(frozen=True)
class Signature:
    """How a file calls an op by name: ``sum(X, axis=0, keepdims=True)``."""

    params: tuple[Param, ...]
    variadic: bool = False  # the last tensor param takes every remaining positional argument

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.kind != "tensor" and p.keyword)


def sig(*params: Param | str, variadic: bool = False) -> Signature:
    return Signature(tuple(Param(p) if isinstance(p, str) else p for p in params), variadic)


AXIS = Param("axis", "axis", None)  # an int, None or a tuple of ints
AXIS1 = Param("axis", "axis1", None)  # one axis
KEEPDIMS = Param("keepdims", "bool", False)


@dataclass(frozen=True)
class Op:
    """One primitive: its parse signature, shape rule, NumPy value, SymPy value, local backward
    step (vector-Jacobian product) and local forward step (tangent), side by side.

    ``nograd`` says the op has no derivative by nature (a comparison, a constant, an integer
    result): it is never differentiated through. Otherwise a missing ``vjp`` or ``tangent`` is a
    :class:`MissingRule` the moment a gradient flows through the op — never a silent zero.
    ``tangent(args, out, params, tans)`` maps the arguments' tangents (None for a constant,
    possibly a :class:`Rank1`) to the result's. ``bind(params, sizes)`` turns the static
    parameters' dim expressions into numbers for evaluation.

    ``adjoint`` is the VJP again as a matrix-language template for ``derive`` (:mod:`.adjoints`);
    ``scope_value`` / ``scope_adjoint`` are the op's rules in the all-shapes certificate's abstract
    interpretation (:mod:`.certificate`) — an op without them keeps a claim at ``sampled shapes``,
    never a wrong verdict. ``same_site``: the op reads every operand at the result's own index tuple.
    ``hint(node, env, infer)`` may suggest a fix when the op's shape rule fails. ``functions``
    names the static parameters that hold an element-wise function's name; the engine resolves
    each to a built-in or this trial's stand-in for a generic f before evaluation.

    What the rest of the package asks of an op, read here rather than from its name:
    ``work(shapes, out, **params)`` — its multiply-adds as a space of dims when they exceed its
    result's entries (``(m, k) @ (k, n)``: ``(m, n, k)``), which the checker bounds by ``max_flops``
    (and, with ``work_in_entries``, by ``max_entries`` as well: einsum's loop in C, which no alarm
    interrupts); ``rational`` — a dim used as a number through the op stays a polynomial or
    rational function of it (a bool, or a test of the static parameters: ``x ** 2`` but not
    ``x ** 0.5``); ``text(args, params)`` — how a call is written when not by its name and
    signature (``tanh(x)`` for ``elementwise``); ``note`` — its local Jacobian in words, for
    ``explain`` and ``derive`` (a string, or ``note(position, shapes)``; an op reading every
    operand at the result's own index is diagonal by default); ``applies(params)`` — the name of
    the element-wise function a call applies entry by entry (``tanh`` for ``tanh(z)``; None for a
    derivative ``NAME_prime``); ``factored`` — its ``vjp`` takes a :class:`LowRank` gradient as it
    is and returns one (the transpose), so a factored gradient flows through it without being made whole;
    ``factors`` and ``reads_kept_products`` — how a claim that is this product is evaluated by the numeric
    engine (``engines.numeric.claim_value``).
    """

    name: str
    shape: Callable[..., Shape]
    numeric: Callable[..., Any]
    vjp: Callable[..., tuple] | None
    symbolic: Callable[..., Any] | None = None
    arity: tuple[int, int] = (1, 1)
    params: tuple[str, ...] = field(default=())
    adjoint: Callable[..., tuple] | None = None  # the VJP as a matrix-language template (adjoints.py)
    tangent: Callable[..., Any] | None = None
    nograd: bool = False
    signature: Signature | None = None  # None: not callable by name (an operator or internal)
    bind: Callable[[dict, Any], dict] | None = None
    index_args: tuple[int, ...] = ()  # arguments that must be integer arrays (C[I]'s I)
    keeps_integer: bool = False  # structural: an integer argument gives an integer result
    scope_value: Callable[..., Any] | None = None  # certificate.py
    scope_adjoint: Callable[..., Any] | None = None  # certificate.py
    same_site: bool = False
    hint: Callable[..., str | None] | None = None
    functions: tuple[str, ...] = ()  # static params naming an element-wise function the engine resolves
    work: Callable[..., tuple[Dim, ...] | None] | None = None  # multiply-adds beyond the result's entries
    work_in_entries: bool = False  # the work space is bounded with the entries too (a loop in C)
    rational: bool | Callable[[Mapping[str, Any]], bool] = False
    text: Callable[[list[str], Mapping[str, Any]], str] | None = None  # a call not written by its signature
    note: str | Callable[[int, list[Shape]], str] = ""  # the local Jacobian in words
    applies: Callable[[Mapping[str, Any]], str | None] | None = None  # the element-wise function applied
    factored: bool = False  # the vjp takes and returns a LowRank gradient as it is
    # its dense products are kept for a claim (keep_product) only while they are a named variable's gradient
    forgets_products: bool = False
    # a claim that is this product: its operands as ``p @ q.T`` (kept factored when large: LowRank.worth), or None
    factors: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None] | None = None
    reads_kept_products: bool = False  # a claim that is this product may read the same one the vjp made

    def backward(self, g, out, *args, **params) -> tuple:
        if self.vjp is None:
            raise MissingRule(f"the op {self.name!r} has no vector-Jacobian product in the op table")
        return self.vjp(g, out, *args, **params)

    def forward_tangent(self, args: tuple, out, params: dict, tans: list):
        if self.tangent is None:
            raise MissingRule(f"the op {self.name!r} has no tangent rule in the op table")
        return self.tangent(args, out, params, tans)

    def is_rational(self, params: Mapping[str, Any]) -> bool:
        """A dim used as a number through this call stays a polynomial or rational function of it."""
        return self.rational(params) if callable(self.rational) else self.rational

    def jacobian_note(self, position: int, shapes: list[Shape]) -> str:
        """The local Jacobian ``∂out/∂arg[position]`` in words ("" when the table has none)."""
        if callable(self.note):
            return self.note(position, shapes)
        if self.note:
            return self.note
        return DIAGONAL if self.same_site and not self.nograd else ""

    def function_applied(self, params: Mapping[str, Any]) -> str | None:
        """The element-wise function this call applies entry by entry, by name; None if it applies none."""
        return self.applies(params) if self.applies is not None else None


DIAGONAL = "diagonal: its transpose is itself, an element-wise product"


OPS: dict[str, Op] = {}


def function_of(node: Any) -> tuple[str, str] | None:
    """``("tanh", "z")`` when ``node`` applies an element-wise function (``tanh``, a generic ``f``)
    to a named tensor: the op's ``applies`` in the table, never a derivative ``NAME_prime``."""
    from ..ir import Call, Var

    if not isinstance(node, Call) or not node.args or not isinstance(node.args[0], Var):
        return None
    name = OPS[node.op].function_applied(node.params)
    return None if name is None else (name, node.args[0].name)


def _register(op: Op) -> None:
    OPS[op.name] = op


H = 1e-20  # complex step: h² terms vanish below float64 resolution


def _complex_step(name: str):
    def tangent(args, out, params, tans):
        complex_args = [a if t is None else a + 1j * H * dense(t) for a, t in zip(args, tans)]
        with np.errstate(all="ignore"):
            value = OPS[name].numeric(*complex_args, **params)
        return np.imag(np.asarray(value)) / H

    return tangent


def _linear(name: str):
    """The tangent of an op linear in each argument separately *and* jointly (add, a reshape):
    the op applied to the tangents, constants as zeros."""
    def tangent(args, out, params, tans):
        filled = [np.zeros(np.shape(a)) if t is None else dense(t) for a, t in zip(args, tans)]
        return np.asarray(OPS[name].numeric(*filled, **params), dtype=float)

    return tangent


def _apply_sym(fn, a):
    return np.asarray(np.frompyfunc(fn, 1, 1)(a), dtype=object)


def _bind_static(params: dict, sizes) -> dict:
    """Every dim expression of a static parameter becomes its value at the drawn dims."""
    def value(v):
        if isinstance(v, Dim):
            return v.value(sizes)
        if isinstance(v, tuple):
            return tuple(value(x) for x in v)
        return v

    return {k: value(v) for k, v in params.items()}


# The affine dims a file's own input shapes make at least 1 (x of n - k entries: n - k ≥ 1), set while the
# loader, the checker, explain and derive apply shape rules to the file: every size the checks draw keeps them
# positive (draw_dims), so "for every size" in a shape rule means every size the file allows.
KNOWN_POSITIVE: ContextVar[tuple[Dim, ...]] = ContextVar("known_positive_dims", default=())


class positive_dims:  # noqa: N801 - used as a context manager, like contextlib's
    """While inside: the shape rules know the affine dims of ``shapes`` (a file's input shapes) are ≥ 1."""

    def __init__(self, shapes: Iterable[Shape]) -> None:
        self.dims = tuple(dim for shape in shapes for dim in shape if not dim.monotone)

    def __enter__(self) -> None:
        self.token = KNOWN_POSITIVE.set(self.dims)

    def __exit__(self, *exc: object) -> None:
        KNOWN_POSITIVE.reset(self.token)


def _nonnegative(d: Dim) -> bool:
    """≥ 0 for every size ≥ 1 (no negative coefficient, and ≥ 0 with every dim at 1), or for every size that
    keeps one of :data:`KNOWN_POSITIVE` at least 1: ``n - k - 1`` when ``n - k`` is."""
    if d.monotone and d.at_ones >= 0:
        return True
    one = Dim.lit(1)
    return any((rest := d - (c - one)).monotone and rest.at_ones >= 0 for c in KNOWN_POSITIVE.get())


def _literal(value: Any) -> str:
    """A static parameter as a file writes it: ``1``, ``True``, ``(0, 2)``, ``H*D``, ``"ij->i"``."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        parts = [_literal(v) for v in value]
        return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"
    return str(value)  # an int or a Dim


def spell(name: str, args: list[str], params: Mapping[str, Any]) -> str:
    """A call of the op as a file writes it, read back from its signature (the parser's inverse):
    tensors in order, static parameters positionally or as ``key=value`` (left out at their default);
    an op whose call is not written by its signature (``tanh(x)``) by its own ``text``."""
    op = OPS[name]
    if op.text is not None:
        return op.text(args, params)
    if op.signature is None:
        return f"{name}({', '.join(args)})"
    parts: list[str] = []
    rest = list(args)
    last = len(op.signature.params) - 1
    skipped = False  # a parameter left out at its default: the ones after it go by name
    for k, p in enumerate(op.signature.params):
        if p.kind == "tensors" or (p.kind == "tensor" and op.signature.variadic and k == last):
            parts.append(f"[{', '.join(rest)}]" if p.kind == "tensors" else ", ".join(rest))
            rest = []
        elif p.kind == "tensor":
            parts.append(rest.pop(0))
        else:
            value = params.get(p.name, p.default)
            if p.keyword and p.default is not ... and value == p.default:
                skipped = True
                continue
            if p.kind in ("shape", "dim"):  # dim names, unquoted: ones((B, T)), eye(n)
                names = [str(v) for v in value]
                parts.append(names[0] if len(names) == 1 else f"({', '.join(names)})")
                continue
            named = p.keyword and (p.by_name or skipped)
            parts.append(f"{p.name}={_literal(value)}" if named else _literal(value))
    return f"{name}({', '.join(parts)})"
