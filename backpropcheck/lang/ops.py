"""The op table: every primitive defined once, with all that the engines need.

For each op: its shape rule over dim names, its NumPy evaluation, its SymPy
evaluation on object arrays of scalar expressions (by default the NumPy one,
which works on object arrays), and its vector-Jacobian product (the local
backward step, as micrograd keeps ``_backward`` beside the forward).
Element-wise functions add their derivative, which ``NAME_prime`` names.
Adding a function is one entry here plus a test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .dims import Dim, Shape, fmt_shape


class ShapeMismatch(Exception):
    """Raised by a shape rule; the parser/shape pass adds the location."""


def _sp():
    import sympy

    return sympy


def _sf():
    from . import symfuncs

    return symfuncs


# ---------------------------------------------------------------------------
# element-wise functions


@dataclass(frozen=True)
class Elementwise:
    """``f`` applied entry by entry: NumPy value, NumPy derivative, SymPy builder."""

    name: str
    numeric: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray], np.ndarray]
    symbolic: Callable[[Any], Any]
    complex_safe: bool = False  # the NumPy form is complex-analytic: the tangent takes a complex step
    nograd: bool = False  # a derivative of 0 by nature (sign): never differentiated through


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _erf(x):
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=float)  # a scalar comes back as a float


_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x):
    """``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` and its derivative."""
    inner = _GELU_C * (x + 0.044715 * x**3)
    t = np.tanh(inner)
    value = 0.5 * x * (1.0 + t)
    slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return value, slope


def _gelu_tanh_sym(u):
    sp = _sp()
    return u * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (u + sp.Rational(44715, 10**6) * u**3))) / 2

ELEMENTWISE: dict[str, Elementwise] = {
    e.name: e
    for e in [
        Elementwise("exp", np.exp, np.exp, lambda u: _sp().exp(u)),
        Elementwise("log", np.log, lambda x: 1.0 / x, lambda u: _sp().log(u)),
        Elementwise("log1p", np.log1p, lambda x: 1.0 / (1.0 + x), lambda u: _sp().log(1 + u)),
        Elementwise("sqrt", np.sqrt, lambda x: 0.5 / np.sqrt(x), lambda u: _sp().sqrt(u)),
        Elementwise(
            "rsqrt", lambda x: 1.0 / np.sqrt(x), lambda x: -0.5 * x**-1.5, lambda u: 1 / _sp().sqrt(u)
        ),
        Elementwise("tanh", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2, lambda u: _sp().tanh(u)),
        Elementwise(
            "sigmoid",
            _sigmoid,
            lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)),
            lambda u: 1 / (1 + _sp().exp(-u)),
        ),
        Elementwise(
            "logit",
            lambda x: np.log(x) - np.log1p(-x),
            lambda x: 1.0 / (x * (1.0 - x)),
            lambda u: _sp().log(u) - _sp().log(1 - u),
        ),
        Elementwise(
            "relu", lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float), lambda u: _sf().Relu(u)
        ),
        Elementwise(
            "softplus", lambda x: np.logaddexp(0.0, x), _sigmoid, lambda u: _sp().log(1 + _sp().exp(u))
        ),
        Elementwise(
            "gelu",
            lambda x: 0.5 * x * (1.0 + _erf(x / _SQRT2)),
            lambda x: 0.5 * (1.0 + _erf(x / _SQRT2)) + x * np.exp(-0.5 * x * x) / _SQRT2PI,
            lambda u: u * (1 + _sp().erf(u / _sp().sqrt(2))) / 2,
        ),
        Elementwise(
            "erf", _erf, lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x), lambda u: _sp().erf(u)
        ),
        Elementwise("sin", np.sin, np.cos, lambda u: _sp().sin(u)),
        Elementwise("cos", np.cos, lambda x: -np.sin(x), lambda u: _sp().cos(u)),
        Elementwise("abs", np.abs, np.sign, lambda u: u * (2 * _sf().Step(u) - 1)),
        Elementwise("square", np.square, lambda x: 2.0 * x, lambda u: u**2),
        Elementwise("cosh", np.cosh, np.sinh, lambda u: _sp().cosh(u)),
        Elementwise("sinh", np.sinh, np.cosh, lambda u: _sp().sinh(u)),
        Elementwise("expm1", np.expm1, np.exp, lambda u: _sp().exp(u) - 1),
        Elementwise("atan", np.arctan, lambda x: 1.0 / (1.0 + x * x), lambda u: _sp().atan(u)),
        Elementwise(
            "silu",
            lambda x: x * _sigmoid(x),
            lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))),
            lambda u: u / (1 + _sp().exp(-u)),
        ),
        Elementwise("gelu_tanh", lambda x: _gelu_tanh(x)[0], lambda x: _gelu_tanh(x)[1], lambda u: _gelu_tanh_sym(u)),
        Elementwise(
            "sign", np.sign, lambda x: np.zeros(np.shape(x)), lambda u: 2 * _sf().Step(u) - 1, nograd=True
        ),
    ]
}


# NumPy forms that are complex-analytic: their tangent is a complex step through the function itself
for _name in ("exp", "log", "log1p", "sqrt", "rsqrt", "tanh", "sigmoid", "sin", "cos", "square", "cosh", "sinh",
              "expm1", "atan", "silu", "gelu_tanh"):
    ELEMENTWISE[_name] = replace(ELEMENTWISE[_name], complex_safe=True)


# Concrete smooth stand-ins for a generic f declared in [functions]: (f, f').
GENERIC_STANDINS: list[tuple[str, Callable, Callable]] = [
    ("tanh", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    ("sin", np.sin, np.cos),
    ("x + x³/3", lambda x: x + x**3 / 3.0, lambda x: 1.0 + x**2),
    ("softplus", lambda x: np.logaddexp(0.0, x), _sigmoid),
]


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
    if axis is None:
        return None
    if not -rank <= axis < rank:
        raise ShapeMismatch(f"axis {axis} is out of range for an array of rank {rank}")
    return axis % rank


def _axes(axis, rank: int) -> tuple[int, ...] | None:
    """An axis or a tuple of axes (``axis=(0, 1)``), normalised and sorted; None: every axis."""
    if axis is None:
        return None
    axes = tuple(sorted(_axis(a, rank) for a in (axis if isinstance(axis, tuple) else (axis,))))  # type: ignore
    if len(set(axes)) != len(axes):
        raise ShapeMismatch(f"axis {axis} names an axis twice")
    return axes


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient back over the axes that broadcasting stretched."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for k, n in enumerate(shape):
        if n == 1 and g.shape[k] != 1:
            g = g.sum(axis=k, keepdims=True)
    return g


def _expand_reduced(g: np.ndarray, shape: tuple[int, ...], axis, keepdims: bool):
    if axis is not None and not keepdims:
        g = np.expand_dims(g, _axes(axis, len(shape)))
    return np.broadcast_to(g, shape)


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


def dense(t):
    return t.dense() if isinstance(t, Rank1) else t


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
    """

    name: str
    shape: Callable[..., Shape]
    numeric: Callable[..., Any]
    vjp: Callable[..., tuple] | None
    symbolic: Callable[..., Any] | None = None
    arity: tuple[int, int] = (1, 1)
    params: tuple[str, ...] = field(default=())
    adjoint: Callable[..., tuple] | None = None  # the VJP as a matrix-language template (end of file)
    tangent: Callable[..., Any] | None = None
    nograd: bool = False
    signature: Signature | None = None  # None: not callable by name (an operator or internal)
    bind: Callable[[dict, Any], dict] | None = None
    index_args: tuple[int, ...] = ()  # arguments that must be integer arrays (C[I]'s I)
    keeps_integer: bool = False  # structural: an integer argument gives an integer result

    def backward(self, g, out, *args, **params) -> tuple:
        if self.vjp is None:
            raise MissingRule(f"the op {self.name!r} has no vector-Jacobian product in the op table")
        return self.vjp(g, out, *args, **params)

    def forward_tangent(self, args: tuple, out, params: dict, tans: list):
        if self.tangent is None:
            raise MissingRule(f"the op {self.name!r} has no tangent rule in the op table")
        return self.tangent(args, out, params, tans)


OPS: dict[str, Op] = {}


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


def _binary(name, numeric, vjp, tangent):
    _register(Op(name, lambda a, b, **_: broadcast(a, b), numeric, vjp, arity=(2, 2), tangent=tangent))


def _add_tangent(sign: int):
    def tangent(args, out, params, tans):
        ta, tb = tans
        if tb is not None and sign < 0:
            tb = -dense(tb)
        total = dense(ta) if tb is None else (dense(tb) if ta is None else dense(ta) + dense(tb))
        return np.broadcast_to(total, np.broadcast_shapes(np.shape(total), out.shape))

    return tangent


_binary("add", lambda a, b: a + b, lambda g, out, a, b: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)),
        _add_tangent(1))
_binary("sub", lambda a, b: a - b, lambda g, out, a, b: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)),
        _add_tangent(-1))
_binary(
    "mul", lambda a, b: a * b, lambda g, out, a, b: (unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)),
    _complex_step("mul"),
)
_binary(
    "div",
    lambda a, b: a / b,
    lambda g, out, a, b: (unbroadcast(g / b, a.shape), unbroadcast(-g * a / (b * b), b.shape)),
    _complex_step("div"),
)
_register(Op("neg", lambda a, **_: a, lambda a: -a, lambda g, out, a: (-g,),
             tangent=lambda args, out, params, tans: -dense(tans[0])))


def _pow_sym(a, exponent, text):
    k = _sp().Rational(text)
    return np.asarray(np.frompyfunc(lambda u: u**k, 1, 1)(a), dtype=object)


_register(
    Op(
        "pow",
        lambda a, **_: a,
        lambda a, exponent, text: a**exponent,
        lambda g, out, a, exponent, text: (g * exponent * a ** (exponent - 1),),
        symbolic=_pow_sym,
        params=("exponent", "text"),
        tangent=_complex_step("pow"),
    )
)


def _matmul_shape(a: Shape, b: Shape, **_) -> Shape:
    if not a or not b:
        raise ShapeMismatch("@ needs vectors or matrices, not scalars (use * for a scalar factor)")
    if len(a) > 2 or len(b) > 2:
        raise ShapeMismatch("@ is defined here for vectors and matrices only")
    inner_a = a[-1]
    inner_b = b[0] if len(b) == 1 else b[-2]
    if inner_a != inner_b:
        raise ShapeMismatch(
            f"it multiplies {_kind(a)} by {_kind(b)}: "
            f"the inner dims {inner_a} and {inner_b} differ"
        )
    return tuple(a[:-1]) + tuple(b[1:] if len(b) == 2 else ())


def _kind(shape: Shape) -> str:
    """``an (m, n) matrix``, ``an (m,) vector``: NumPy's shape notation, in words."""
    noun = {0: "scalar", 1: "vector", 2: "matrix"}.get(len(shape), "array")
    return "a scalar" if not shape else f"an {fmt_shape(shape)} {noun}"


def _matmul_vjp(g, out, a, b):
    if a.ndim == 2 and b.ndim == 2:
        return g @ b.T, a.T @ g
    if a.ndim == 2:
        return np.multiply.outer(g, b), a.T @ g
    if b.ndim == 2:
        return b @ g, np.multiply.outer(a, g)
    return g * b, g * a


def _matmul_sym(a, b):
    """``a @ b`` on object arrays, each entry one ``Add`` of its products: the same canonical sum
    NumPy's pairwise ``+`` builds, without re-flattening a growing sum at every step."""
    add = _sp().Add
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    if a2.shape[1] != b2.shape[0]:
        raise ValueError(f"matmul: inner dimensions {a2.shape[1]} and {b2.shape[0]} differ")
    out = np.empty((a2.shape[0], b2.shape[1]), dtype=object)
    for i in range(a2.shape[0]):
        for j in range(b2.shape[1]):
            out[i, j] = add(*[a2[i, k] * b2[k, j] for k in range(a2.shape[1])])
    return out.reshape(a.shape[:-1] + b.shape[1:] if b.ndim == 2 else a.shape[:-1])


def _matmul_factored(a, b, numeric):
    """``a @ b`` where either side may be a rank-one :class:`Rank1` (kept factored)."""
    if isinstance(a, Rank1):
        if b.ndim == 2:
            return Rank1(a.p, b.T @ a.q)
        return a.p * float(a.q @ b)
    if isinstance(b, Rank1):
        if a.ndim == 2:
            return Rank1(a @ b.p, b.q)
        return float(a @ b.p) * b.q
    return numeric(a, b)


def _matmul_tangent(numeric):
    """d(a b) = da b + a db (bilinear), rank-one directions kept factored."""
    def tangent(args, out, params, tans):
        (a, b), (ta, tb) = args, tans
        left = _matmul_factored(ta, b, numeric) if ta is not None else None
        right = _matmul_factored(a, tb, numeric) if tb is not None else None
        if left is None or right is None:
            return right if left is None else left
        return dense(left) + dense(right)

    return tangent


def _matmul(a, b):
    return a @ b


_register(Op("matmul", _matmul_shape, _matmul, _matmul_vjp, symbolic=_matmul_sym, arity=(2, 2),
             tangent=_matmul_tangent(_matmul)))
_register(Op("dot", _matmul_shape, np.dot, _matmul_vjp, symbolic=_matmul_sym, arity=(2, 2),
             tangent=_matmul_tangent(np.dot), signature=sig("a", "b")))


def _outer_shape(a: Shape, b: Shape, **_) -> Shape:
    if len(a) != 1 or len(b) != 1:
        raise ShapeMismatch(f"outer takes two vectors, not {fmt_shape(a)} and {fmt_shape(b)}")
    return (a[0], b[0])


_register(
    Op(
        "outer",
        _outer_shape,
        lambda a, b: np.multiply.outer(a, b),
        lambda g, out, a, b: (g @ b, a @ g),
        arity=(2, 2),
        tangent=_complex_step("outer"),
        signature=sig("u", "v"),
    )
)


def _transpose_tangent(args, out, params, tans):
    (t,) = tans
    return Rank1(t.q, t.p) if isinstance(t, Rank1) else np.asarray(t).T


_register(Op("T", lambda a, **_: tuple(reversed(a)), lambda a: a.T, lambda g, out, a: (g.T,),
             tangent=_transpose_tangent))


def _expand_shape(a: Shape, items: tuple, **_) -> Shape:
    slices = sum(1 for it in items if it == ":")
    if slices > len(a):
        raise ShapeMismatch(f"too many ':' for an array of shape {fmt_shape(a)}")
    out: list[Dim] = []
    k = 0
    for it in items:
        if it == ":":
            out.append(a[k])
            k += 1
        else:
            out.append(Dim.lit(1))
    return tuple(out) + tuple(a[k:])


def _expand(a, items):
    return a[tuple(slice(None) if it == ":" else None for it in items)]


_register(
    Op("expand", _expand_shape, _expand, lambda g, out, a, items: (g.reshape(a.shape),), params=("items",),
       tangent=_linear("expand"))
)


def _reduce_shape(a: Shape, axis=None, keepdims=False, **_) -> Shape:
    axes = _axes(axis, len(a))
    if axes is None:
        return tuple(Dim.lit(1) for _ in a) if keepdims else ()
    if keepdims:
        return tuple(Dim.lit(1) if k in axes else d for k, d in enumerate(a))
    return tuple(d for k, d in enumerate(a) if k not in axes)


def _count(shape, axis):
    axes = _axes(axis, len(shape))
    return int(np.prod(shape)) if axes is None else int(np.prod([shape[k] for k in axes]))


_register(
    Op(
        "sum",
        _reduce_shape,
        lambda a, axis=None, keepdims=False: np.sum(a, axis=axis, keepdims=keepdims),
        lambda g, out, a, axis=None, keepdims=False: (_expand_reduced(g, a.shape, axis, keepdims),),
        params=("axis", "keepdims"),
        tangent=_linear("sum"),
        signature=sig("X", AXIS, KEEPDIMS),
    )
)
_register(
    Op(
        "mean",
        _reduce_shape,
        lambda a, axis=None, keepdims=False: np.mean(a, axis=axis, keepdims=keepdims),
        lambda g, out, a, axis=None, keepdims=False: (
            _expand_reduced(g, a.shape, axis, keepdims) / _count(a.shape, axis),
        ),
        symbolic=lambda a, axis=None, keepdims=False: np.asarray(
            np.sum(a, axis=axis, keepdims=keepdims) / _sp().Integer(_count(a.shape, axis)), dtype=object
        ),
        params=("axis", "keepdims"),
        tangent=_linear("mean"),
        signature=sig("X", AXIS, KEEPDIMS),
    )
)


def _square_shape(a: Shape, **_) -> Shape:
    if len(a) != 2 or a[0] != a[1]:
        raise ShapeMismatch(f"trace needs a square matrix, not {fmt_shape(a)}")
    return ()


_register(
    Op("trace", _square_shape, np.trace, lambda g, out, a: (g * np.eye(a.shape[0]),), tangent=_linear("trace"),
       signature=sig("X"))
)


def _diag_shape(a: Shape, **_) -> Shape:
    if len(a) == 1:
        return (a[0], a[0])
    if len(a) == 2 and a[0] == a[1]:
        return (a[0],)
    raise ShapeMismatch(f"diag takes a vector or a square matrix, not {fmt_shape(a)}")


def _diag_sym(a):
    if a.ndim == 1:
        n = a.shape[0]
        out = np.full((n, n), _sp().Integer(0), dtype=object)
        for i in range(n):
            out[i, i] = a[i]
        return out
    return np.array([a[i, i] for i in range(a.shape[0])], dtype=object)


_register(Op("diag", _diag_shape, np.diag, lambda g, out, a: (np.diag(g),), symbolic=_diag_sym,
             tangent=_linear("diag"), signature=sig("v")))


def _const_shape(*_, shape: tuple, **__) -> Shape:
    return tuple(Dim.of(d) if isinstance(d, str) else d if isinstance(d, Dim) else Dim.lit(d) for d in shape)


def _bind_dims(square: bool):
    def bind(params: dict, sizes) -> dict:
        dims = tuple(sizes[d] if isinstance(d, str) else d.value(sizes) if isinstance(d, Dim) else d
                     for d in params["shape"])
        return {**params, "dims": dims * 2 if square else dims}

    return bind


def _filled(value):
    def numeric(shape, dims):
        return np.full(dims, float(value))

    def symbolic(shape, dims):
        return np.full(dims, _sp().Integer(value), dtype=object)

    return numeric, symbolic


for _name, _value in (("ones", 1), ("zeros", 0)):
    _num, _sym = _filled(_value)
    _register(Op(_name, _const_shape, _num, None, symbolic=_sym, arity=(0, 0), params=("shape", "dims"),
                 nograd=True, signature=sig(Param("shape", "shape", keyword=False)), bind=_bind_dims(False)))


def _eye_sym(shape, dims):
    out = np.full(dims, _sp().Integer(0), dtype=object)
    for i in range(dims[0]):
        out[i, i] = _sp().Integer(1)
    return out


_register(
    Op("eye", lambda *_, shape, **__: _const_shape(shape=shape) * 2, lambda shape, dims: np.eye(dims[0]), None,
       symbolic=_eye_sym, arity=(0, 0), params=("shape", "dims"), nograd=True,
       signature=sig(Param("shape", "dim", keyword=False)), bind=_bind_dims(True))
)


# comparisons and branches: masks are 0/1 and never differentiated through


def _compare(name, numeric, flip):
    """``a > b`` is Step(a − b); ``a >= b`` is 1 − Step(b − a), which is 1 at a tie — exact for a mask
    ``x >= max(x)`` that is equal by construction (other ties are never sampled)."""
    strict = name in ("gt", "lt")

    def symbolic(a, b):
        high, low = (b, a) if flip else (a, b)
        step = np.frompyfunc(_sf().Step, 1, 1)
        value = step(high - low) if strict else 1 - step(low - high)
        return np.asarray(value, dtype=object)

    _register(
        Op(name, lambda a, b, **_: broadcast(a, b), lambda a, b: numeric(a, b).astype(float), None,
           symbolic=symbolic, arity=(2, 2), nograd=True)
    )


# masks compare real parts, so a complex step through them keeps the same mask
_compare("gt", lambda a, b: np.greater(np.real(a), np.real(b)), False)
_compare("ge", lambda a, b: np.greater_equal(np.real(a), np.real(b)), False)
_compare("lt", lambda a, b: np.less(np.real(a), np.real(b)), True)
_compare("le", lambda a, b: np.less_equal(np.real(a), np.real(b)), True)


def _where_tangent(args, out, params, tans):
    """The mask is never differentiated: d where(c, a, b) = where(c, da, db)."""
    c, a, b = args
    _, ta, tb = tans
    da = np.zeros(np.shape(a)) if ta is None else dense(ta)
    db = np.zeros(np.shape(b)) if tb is None else dense(tb)
    return np.where(c != 0, da, db)


def _where_vjp(g, out, c, a, b):
    mask = c != 0
    return None, unbroadcast(np.where(mask, g, 0.0), a.shape), unbroadcast(np.where(mask, 0.0, g), b.shape)


_register(
    Op(
        "where",
        lambda c, a, b, **_: broadcast(c, a, b),
        lambda c, a, b: np.where(c != 0, a, b),
        _where_vjp,
        symbolic=lambda c, a, b: np.asarray(c * a + (1 - c) * b, dtype=object),
        arity=(3, 3),
        tangent=_where_tangent,
        signature=sig("C", "A", "B"),
    )
)


def _relu_sym(x):
    return np.asarray(np.frompyfunc(_sf().Relu, 1, 1)(x), dtype=object)


def _minmax(name, numeric, pick_a):
    def vjp(g, out, a, b):
        mask = pick_a(a, b)
        return unbroadcast(np.where(mask, g, 0.0), a.shape), unbroadcast(np.where(mask, 0.0, g), b.shape)

    # maximum(a, b) = b + relu(a - b); minimum(a, b) = a - relu(a - b)
    def symbolic(a, b):
        r = _relu_sym(a - b)
        return np.asarray(b + r if name == "maximum" else a - r, dtype=object)

    _register(Op(name, lambda a, b, **_: broadcast(a, b), numeric, vjp, symbolic=symbolic, arity=(2, 2),
                 tangent=_complex_step(name), signature=sig("A", "B")))


# The branch is chosen on real parts, exactly as the backward step's mask: a complex step
# (a + i·h·da) through NumPy's own maximum would break ties by the imaginary part.
_minmax("maximum", lambda a, b: np.where(np.real(a) > np.real(b), a, b), lambda a, b: a > b)
_minmax("minimum", lambda a, b: np.where(np.real(a) < np.real(b), a, b), lambda a, b: a < b)


# vector functions along an axis


def _softmax(a, axis=None):
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _logsumexp(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _sym_exp(a):
    return np.asarray(np.frompyfunc(_sp().exp, 1, 1)(a), dtype=object)


def _sym_log(a):
    return np.asarray(np.frompyfunc(_sp().log, 1, 1)(a), dtype=object)


def _softmax_sym(a, axis=None):
    """Each entry a :class:`~.symfuncs.SoftmaxEntry` of its slice along ``axis``."""
    entry = _sf().SoftmaxEntry
    integer = _sp().Integer
    flat = a.reshape(-1) if axis is None else None
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(*a.shape):
        if axis is None:
            xs, i = flat, int(np.ravel_multi_index(idx, a.shape)) if a.shape else 0
        else:
            ax = axis % a.ndim
            xs = a[idx[:ax] + (slice(None),) + idx[ax + 1:]]
            i = idx[ax]
        out[idx] = entry(integer(i), *np.ravel(xs))
    return out


def _log_softmax_sym(a, axis=None):
    return np.asarray(a - _sym_log(np.sum(_sym_exp(a), axis=axis, keepdims=True)), dtype=object)


def _logsumexp_sym(a, axis=None, keepdims=False):
    return _sym_log(np.asarray(np.sum(_sym_exp(a), axis=axis, keepdims=keepdims), dtype=object))


def _same_shape_axis(a: Shape, axis=None, **_) -> Shape:
    _axis(axis, len(a))  # a scalar has no axis 0 either: NumPy would raise AxisError mid-trial
    return a


_register(
    Op(
        "softmax",
        _same_shape_axis,
        _softmax,
        lambda g, out, a, axis=None: (out * (g - np.sum(g * out, axis=axis, keepdims=True)),),
        symbolic=_softmax_sym,
        params=("axis",),
        tangent=_complex_step("softmax"),
        signature=sig("X", AXIS1),
    )
)
_register(
    Op(
        "log_softmax",
        _same_shape_axis,
        lambda a, axis=None: a - _logsumexp(a, axis=axis, keepdims=True),
        lambda g, out, a, axis=None: (g - np.exp(out) * np.sum(g, axis=axis, keepdims=True),),
        symbolic=_log_softmax_sym,
        params=("axis",),
        tangent=_complex_step("log_softmax"),
        signature=sig("X", AXIS1),
    )
)
_register(
    Op(
        "logsumexp",
        _reduce_shape,
        _logsumexp,
        lambda g, out, a, axis=None, keepdims=False: (
            _expand_reduced(g, a.shape, axis, keepdims)
            * np.exp(a - _expand_reduced(out, a.shape, axis, keepdims)),
        ),
        symbolic=_logsumexp_sym,
        params=("axis", "keepdims"),
        tangent=_complex_step("logsumexp"),
        signature=sig("X", AXIS, KEEPDIMS),
    )
)


# max/min reductions: the gradient goes to the arg-max (ties are never sampled)


def _extreme(name: str):
    pick = np.max if name == "max" else np.min

    def numeric(a, axis=None, keepdims=False):
        return pick(a, axis=axis, keepdims=keepdims)

    def mask(a, out, axis, keepdims):
        """1 at the arg-max/arg-min of each slice: the local Jacobian is a selection."""
        return (np.real(a) == np.real(_expand_reduced(out, np.shape(a), axis, keepdims))).astype(float)

    def vjp(g, out, a, axis=None, keepdims=False):
        return (_expand_reduced(g, a.shape, axis, keepdims) * mask(a, out, axis, keepdims),)

    def tangent(args, out, params, tans):
        (a,), (t,) = args, tans
        axis, keepdims = params.get("axis"), params.get("keepdims", False)
        return np.sum(mask(a, out, axis, keepdims) * dense(t), axis=axis, keepdims=keepdims)

    def symbolic(a, axis=None, keepdims=False):
        fn = _sf().MaxOf if name == "max" else _sf().MinOf
        axes = _axes(axis, a.ndim)
        axes = tuple(range(a.ndim)) if axes is None else axes
        rest = [k for k in range(a.ndim) if k not in axes]
        moved = np.transpose(a, rest + list(axes))
        kept = moved.shape[: len(rest)]
        flat = moved.reshape(kept + (-1,))
        out = np.empty(kept, dtype=object)
        for idx in np.ndindex(*kept):
            out[idx] = fn(*flat[idx])
        if keepdims:
            out = out.reshape(tuple(1 if k in axes else n for k, n in enumerate(a.shape)))
        return out

    _register(Op(name, _reduce_shape, numeric, vjp, symbolic=symbolic, params=("axis", "keepdims"),
                 tangent=tangent, signature=sig("X", AXIS, KEEPDIMS)))


_extreme("max")
_extreme("min")


def _clip_vjp(g, out, a, lo, hi):
    return (g * ((a > lo) & (a < hi)),)


def _clip_numeric(a, lo, hi):
    """On real parts, so a complex step through it keeps the branch."""
    r = np.real(a)
    return np.where(r < lo, lo, np.where(r > hi, hi, a))


def _clip_sym(a, lo, hi):
    low, high = _sp().Rational(str(lo)), _sp().Rational(str(hi))
    return _apply_sym(lambda u: _sf().Clip(u, low, high), a)


_register(Op("clip", lambda a, **_: a, _clip_numeric, _clip_vjp, symbolic=_clip_sym, params=("lo", "hi"),
             tangent=_complex_step("clip"),
             signature=sig("X", Param("lo", "number", keyword=False), Param("hi", "number", keyword=False))))


# structural ops: linear, so their tangent is the op applied to the tangents


def _bind_static(params: dict, sizes) -> dict:
    """Every dim expression of a static parameter becomes its value at the drawn dims."""
    def value(v):
        if isinstance(v, Dim):
            return v.value(sizes)
        if isinstance(v, tuple):
            return tuple(value(x) for x in v)
        return v

    return {k: value(v) for k, v in params.items()}


def _product(shape: Shape) -> Dim:
    out = Dim.lit(1)
    for d in shape:
        out = out * d
    return out


def _reshape_shape(a: Shape, shape: tuple, **_) -> Shape:
    if _product(a) != _product(shape):
        raise ShapeMismatch(
            f"reshape from {fmt_shape(a)} to {fmt_shape(shape)}: the sizes {_product(a)} and {_product(shape)} "
            f"differ for some dims"
        )
    return tuple(shape)


_register(Op("reshape", _reshape_shape, lambda a, shape: np.reshape(a, shape),
             lambda g, out, a, shape: (np.reshape(g, a.shape),), params=("shape",), tangent=_linear("reshape"),
             signature=sig("X", Param("shape", "dims", keyword=False)), bind=_bind_static))


def _perm(axes, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(reversed(range(rank)))
    if len(axes) != rank or sorted(a % rank for a in axes) != list(range(rank)):
        raise ShapeMismatch(f"axes {tuple(axes)} are not a permutation of the {rank} axes")
    return tuple(a % rank for a in axes)


_register(Op("transpose", lambda a, axes=None, **_: tuple(a[k] for k in _perm(axes, len(a))),
             lambda a, axes=None: np.transpose(a, _perm(axes, np.ndim(a))),
             lambda g, out, a, axes=None: (np.transpose(g, np.argsort(_perm(axes, a.ndim))),),
             params=("axes",), tangent=_linear("transpose"), signature=sig("X", Param("axes", "ints", None))))


def _swap_shape(a: Shape, axis1: int, axis2: int, **_) -> Shape:
    i, j = _axis(axis1, len(a)), _axis(axis2, len(a))
    out = list(a)
    out[i], out[j] = out[j], out[i]  # type: ignore[index]
    return tuple(out)


_register(Op("swapaxes", _swap_shape, lambda a, axis1, axis2: np.swapaxes(a, axis1, axis2),
             lambda g, out, a, axis1, axis2: (np.swapaxes(g, axis1, axis2),), params=("axis1", "axis2"),
             tangent=_linear("swapaxes"),
             signature=sig("X", Param("axis1", "int", keyword=False), Param("axis2", "int", keyword=False))))


def _flip_shape(a: Shape, axis=None, **_) -> Shape:
    _axes(axis, len(a))
    return a


_register(Op("flip", _flip_shape, lambda a, axis=None: np.flip(a, axis=axis),
             lambda g, out, a, axis=None: (np.flip(g, axis=axis),), params=("axis",), tangent=_linear("flip"),
             signature=sig("X", AXIS)))


def _nonnegative(d: Dim) -> bool:
    """≥ 0 for every size ≥ 1: no negative coefficient, and ≥ 0 with every dim at 1."""
    return d.monotone and d.at_ones >= 0


def _slice_items(a: Shape, items: tuple) -> list:
    """``items`` with ``...`` expanded: each ``":"``, ``None`` or a ``(lo, hi)`` pair of dims."""
    consumed = sum(1 for it in items if it is not None and it != "...")
    if consumed > len(a):
        raise ShapeMismatch(f"too many indices for an array of shape {fmt_shape(a)}")
    out: list = []
    for it in items:
        if it == "...":
            out.extend([":"] * (len(a) - consumed))
        else:
            out.append(it)
    if "..." not in items:
        out.extend([":"] * (len(a) - consumed))
    return out


def _slice_shape(a: Shape, items: tuple, **_) -> Shape:
    out: list[Dim] = []
    k = 0
    for it in _slice_items(a, items):
        if it is None:
            out.append(Dim.lit(1))
            continue
        dim = a[k]
        k += 1
        if it == ":":
            out.append(dim)
            continue
        lo, hi = it
        lo = Dim.lit(0) if lo is None else lo
        hi = dim if hi is None else hi
        extent = hi - lo
        if not (_nonnegative(lo) and _nonnegative(dim - hi) and _nonnegative(extent - Dim.lit(1))):
            raise ShapeMismatch(
                f"the slice {lo}:{hi} does not stay inside an axis of {dim} entries (and non-empty) for every size"
            )
        out.append(extent)
    return tuple(out)


def _slice_index(shape: tuple[int, ...], items: tuple) -> tuple:
    index = []
    for it in items:
        if it is None:
            index.append(None)
        elif it == "...":
            index.append(Ellipsis)
        elif it == ":":
            index.append(slice(None))
        else:
            index.append(slice(it[0], it[1]))
    return tuple(index)


def _slice_vjp(g, out, a, items):
    target = np.zeros(a.shape)
    index = tuple(i for i in _slice_index(a.shape, items) if i is not None)
    target[index] = np.reshape(g, target[index].shape)
    return (target,)


_register(Op("slice", _slice_shape, lambda a, items: a[_slice_index(np.shape(a), items)], _slice_vjp,
             params=("items",), tangent=_linear("slice"), bind=_bind_static))


def _join_shape(stack: bool):
    def shape(*shapes: Shape, axis: int = 0) -> Shape:
        first = shapes[0]
        rank = len(first) + (1 if stack else 0)
        ax = _axis(axis, rank)
        assert ax is not None
        for other in shapes[1:]:
            if len(other) != len(first):
                raise ShapeMismatch(f"arrays of shapes {fmt_shape(first)} and {fmt_shape(other)} have different ranks")
            for k, (d, e) in enumerate(zip(first, other)):
                if d != e and (stack or k != ax):
                    raise ShapeMismatch(f"the shapes {fmt_shape(first)} and {fmt_shape(other)} differ on axis {k}")
        if stack:
            return first[:ax] + (Dim.lit(len(shapes)),) + first[ax:]
        total = first[ax]
        for other in shapes[1:]:
            total = total + other[ax]
        return first[:ax] + (total,) + first[ax + 1:]

    return shape


def _concat_vjp(g, out, *args, axis=0):
    cuts = np.cumsum([np.shape(a)[axis] for a in args])[:-1]
    return tuple(np.split(g, cuts, axis=axis))


def _stack_vjp(g, out, *args, axis=0):
    return tuple(np.take(g, k, axis=axis) for k in range(len(args)))


def _concat(*args, axis=0):
    return np.concatenate(args, axis=axis)


def _stack(*args, axis=0):
    return np.stack(args, axis=axis)


_register(Op("concat", _join_shape(False), _concat, _concat_vjp, arity=(1, 16), params=("axis",),
             tangent=_linear("concat"), signature=sig(Param("arrays", "tensors"), Param("axis", "int", 0))))
_register(Op("stack", _join_shape(True), _stack, _stack_vjp, arity=(1, 16), params=("axis",),
             tangent=_linear("stack"), signature=sig(Param("arrays", "tensors"), Param("axis", "int", 0))))


def _pad_shape(a: Shape, widths: tuple, **_) -> Shape:
    if len(widths) != len(a):
        raise ShapeMismatch(f"pad takes one (before, after) pair per axis: {len(a)} for {fmt_shape(a)}")
    out = []
    for d, (before, after) in zip(a, widths):
        if not (_nonnegative(before) and _nonnegative(after)):
            raise ShapeMismatch(f"the pad widths ({before}, {after}) must be ≥ 0 for every size")
        out.append(before + d + after)
    return tuple(out)


def _pad(a, widths):
    a = np.asarray(a)
    shape = tuple(n + lo + hi for n, (lo, hi) in zip(a.shape, widths))
    out = np.zeros(shape, dtype=a.dtype)
    if a.dtype == object:
        out[...] = _sp().Integer(0)
    out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(a.shape, widths))] = a
    return out


_register(Op("pad", _pad_shape, _pad,
             lambda g, out, a, widths: (g[tuple(slice(lo, lo + n) for n, (lo, _) in zip(a.shape, widths))],),
             params=("widths",), tangent=_linear("pad"), signature=sig("X", Param("widths", "pads", keyword=False)),
             bind=_bind_static))


# integer arrays as indices (SPEC §6.1): gathers and their adjoint, never differentiated in the index


def _ints(i) -> np.ndarray:
    """An index array as integers (it may come through a float or object evaluation)."""
    return np.asarray(np.real(i) if np.iscomplexobj(i) else i).astype(int)


def _gather_shape(c: Shape, i: Shape, **_) -> Shape:
    if not c:
        raise ShapeMismatch("only an array can be indexed by integers, not a scalar")
    return tuple(i) + tuple(c[1:])


def _gather_vjp(g, out, c, i):
    grad = np.zeros(c.shape)
    np.add.at(grad, _ints(i), g)
    return grad, None


_register(Op("gather", _gather_shape, lambda c, i: c[_ints(i)], _gather_vjp, arity=(2, 2),
             tangent=lambda args, out, params, tans: dense(tans[0])[_ints(args[1])], index_args=(1,)))


def _scatter_shape(s: Shape, i: Shape, V, **_) -> Shape:
    if tuple(s[: len(i)]) != tuple(i):
        raise ShapeMismatch(f"scatter_add needs values of shape {fmt_shape(i)} + (…), the index array's shape "
                            f"first, not {fmt_shape(s)}")
    return (V if isinstance(V, Dim) else Dim.of(V),) + tuple(s[len(i):])


def _scatter_add(s, i, V):
    """``out[v] = Σ_{p : I[p] = v} S[p]``: the adjoint of the gather ``C[I]``."""
    s = np.asarray(s)
    out = np.zeros((V,) + s.shape[np.ndim(i):], dtype=s.dtype)
    if s.dtype == object:
        out[...] = _sp().Integer(0)
    np.add.at(out, _ints(i), s)
    return out


def _bind_dim(params: dict, sizes) -> dict:
    return {k: (v.value(sizes) if isinstance(v, Dim) else sizes[v] if isinstance(v, str) else v)
            for k, v in params.items()}


_register(Op("scatter_add", _scatter_shape, _scatter_add,
             lambda g, out, s, i, V: (g[_ints(i)], None), arity=(2, 2), params=("V",),
             tangent=lambda args, out, params, tans: _scatter_add(dense(tans[0]), args[1], **params),
             signature=sig("S", "I", Param("V", "dimexpr", keyword=False)), bind=_bind_dim, index_args=(1,)))


def _one_hot(i, V):
    hot = (_ints(i)[..., None] == np.arange(V)).astype(int)
    return hot.astype(float) if not (isinstance(i, np.ndarray) and i.dtype == object) else \
        np.vectorize(_sp().Integer, otypes=[object])(hot)


_register(Op("one_hot", lambda i, V, **_: tuple(i) + (V if isinstance(V, Dim) else Dim.of(V),), _one_hot, None,
             params=("V",), nograd=True, signature=sig("I", Param("V", "dimexpr", keyword=False)), bind=_bind_dim,
             index_args=(0,)))


def _along_shape(a: Shape, i: Shape, axis: int = 0, **_) -> Shape:
    if len(a) != len(i):
        raise ShapeMismatch(f"take_along_axis needs an index array of the same rank: {fmt_shape(a)} and "
                            f"{fmt_shape(i)} (add an axis with [:, None])")
    ax = _axis(axis, len(a))
    out = []
    for k, (d, e) in enumerate(zip(a, i)):
        if k == ax:
            out.append(e)
        elif d != e and not e.is_one and not d.is_one:
            raise ShapeMismatch(f"take_along_axis: {fmt_shape(a)} and {fmt_shape(i)} differ on axis {k}")
        else:
            out.append(d if e.is_one else e)
    return tuple(out)


def _along_index(shape, i, axis):
    """The full index tuple of ``take_along_axis(A, I, axis)``: I on ``axis``, a grid elsewhere."""
    i = _ints(i)
    axis = axis % len(shape)
    full = tuple(n if k != axis else i.shape[k] for k, n in enumerate(shape))
    i = np.broadcast_to(i, np.broadcast_shapes(i.shape, tuple(1 if k == axis else n for k, n in enumerate(full))))
    grid = np.indices(i.shape, sparse=True)
    return tuple(i if k == axis else grid[k] for k in range(len(shape)))


def _along_vjp(g, out, a, i, axis=0):
    grad = np.zeros(a.shape)
    np.add.at(grad, _along_index(a.shape, i, axis), g)
    return grad, None


_register(Op("take_along_axis", _along_shape, lambda a, i, axis=0: a[_along_index(np.shape(a), i, axis)],
             _along_vjp, arity=(2, 2), params=("axis",),
             tangent=lambda args, out, params, tans: dense(tans[0])[_along_index(np.shape(args[0]), args[1],
                                                                                 params.get("axis", 0))],
             signature=sig("A", "I", Param("axis", "int")), index_args=(1,)))


# einsum, explicit output only


def parse_einsum(spec: str, ranks: list[int]) -> tuple[list[str], str]:
    """Split ``"ij,j->i"`` and check it against the operands' ranks."""
    if "->" not in spec:
        raise ShapeMismatch(f"einsum needs an explicit output ('->'), as in \"ij,j->i\"; got {spec!r}")
    lhs, out = spec.replace(" ", "").split("->", 1)
    subs = lhs.split(",")
    if len(subs) != len(ranks):
        raise ShapeMismatch(f"einsum {spec!r} names {len(subs)} operands but is given {len(ranks)}")
    for s in subs + [out]:
        if not (s.isascii() and s.isalpha()) and s != "":  # NumPy takes ASCII letters only
            raise ShapeMismatch(f"einsum subscripts must be ASCII letters (a-z, A-Z): {spec!r}")
        if len(set(s)) != len(s):
            raise ShapeMismatch(
                f"einsum {spec!r} repeats an index within one operand; use trace or diag for diagonals"
            )
    for s, r in zip(subs, ranks):
        if len(s) != r:
            raise ShapeMismatch(f"einsum {spec!r}: operand {s!r} has {len(s)} indices but rank {r}")
    missing = set(out) - set("".join(subs))
    if missing:
        raise ShapeMismatch(f"einsum {spec!r}: output index {''.join(sorted(missing))} is in no operand")
    return subs, out


def _einsum_shape(*shapes: Shape, spec: str) -> Shape:
    subs, out = parse_einsum(spec, [len(s) for s in shapes])
    sizes: dict[str, Dim] = {}
    for s, shape in zip(subs, shapes):
        for letter, d in zip(s, shape):
            if letter in sizes and sizes[letter] != d:
                raise ShapeMismatch(f"einsum {spec!r}: index {letter} is both {sizes[letter]} and {d}")
            sizes[letter] = d
    return tuple(sizes[letter] for letter in out)


def _einsum_vjp(g, out, *args, spec: str):
    subs, out_sub = parse_einsum(spec, [a.ndim for a in args])
    grads = []
    for k, (sub, a) in enumerate(zip(subs, args)):
        others = [(s, x) for j, (s, x) in enumerate(zip(subs, args)) if j != k]
        available = set(out_sub) | set("".join(s for s, _ in others))
        present = "".join(c for c in sub if c in available)
        terms = ",".join([out_sub] + [s for s, _ in others])
        partial = np.einsum(f"{terms}->{present}", g, *[x for _, x in others])
        # letters summed inside operand k alone: the gradient is constant along them
        for axis, letter in enumerate(sub):
            if letter not in available:
                partial = np.expand_dims(partial, axis)
        grads.append(np.broadcast_to(partial, a.shape))
    return tuple(grads)


_register(
    Op(
        "einsum",
        _einsum_shape,
        lambda *args, spec: np.einsum(spec, *args),
        _einsum_vjp,
        arity=(1, 8),
        params=("spec",),
        tangent=_complex_step("einsum"),
        signature=sig(Param("spec", "spec", keyword=False), "operands", variadic=True),
    )
)


# element-wise functions and their derivatives


def _apply_sym(fn, a):
    return np.asarray(np.frompyfunc(fn, 1, 1)(a), dtype=object)


def _ew_numeric(a, fn: Elementwise, prime: bool):
    return (fn.derivative if prime else fn.numeric)(a)


def _ew_symbolic(a, fn: Elementwise, prime: bool):
    builder = _sf().derivative_of(fn.symbolic) if prime else fn.symbolic
    return _apply_sym(builder, a)


def _ew_vjp(g, out, a, fn: Elementwise, prime: bool):
    if prime:
        raise MissingRule(f"{fn.name}_prime is a derivative: it has no derivative rule of its own")
    if fn.nograd:
        return (None,)  # sign: a derivative of 0 by nature
    return (g * fn.derivative(a),)


def _ew_tangent(args, out, params, tans):
    """f'(a)·da — for a built-in whose NumPy form is complex-analytic, a complex step through f
    itself instead (independent of the table's derivative, which is thereby checked too), with a
    step relative to each entry (log of a tiny p needs h ≪ p)."""
    fn, (t,) = params["fn"], tans
    if params.get("prime"):
        raise MissingRule("a NAME_prime in the forward pass has no tangent rule")
    if fn.nograd:
        return None
    if fn.complex_safe and ELEMENTWISE.get(fn.name) is fn:
        a = np.asarray(args[0], dtype=float)
        h = H * np.where(a != 0, np.abs(a), 1.0)
        with np.errstate(all="ignore"):
            return np.imag(fn.numeric(a + 1j * h * dense(t))) / h
    return fn.derivative(args[0]) * dense(t)


# ``fn`` is resolved by the engine: a built-in, or this trial's stand-in for a generic f.
# ``NAME_prime`` is the same op with prime=True; it is never differentiated through.
_register(
    Op("elementwise", lambda a, **_: a, _ew_numeric, _ew_vjp, symbolic=_ew_symbolic, params=("fn", "prime"),
       tangent=_ew_tangent)
)


# ---------------------------------------------------------------------------
# adjoints: each op's VJP again, as a matrix-language template (IR -> IR) for ``derive``.
#
# ``adjoint(cx, g, out, *args, **params)`` returns one IR node per argument (None: no
# gradient flows there). ``g`` is the gradient of ``out`` (the op's own IR node); it may be
# smaller than ``out`` as long as it broadcasts to it (a sum's gradient is not copied out
# until something needs it). ``cx`` knows shapes: ``cx.shape(node)``,
# ``cx.unbroadcast(node, shape)`` (a sum over the axes broadcasting stretched) and
# ``cx.full(node, shape)`` (make a lazily broadcast gradient exactly ``shape``). The
# results are raw; ``backpropcheck.derive`` rewrites them into textbook form.

from dataclasses import replace as _replace  # noqa: E402

from .ir import Call as _Call  # noqa: E402
from .ir import Const as _Const  # noqa: E402
from .ir import DimSize as _DimSize  # noqa: E402


class NoAdjoint(Exception):
    """``derive`` cannot write this op's gradient in matrix form (yet)."""


def _c(op: str, *args, **params) -> _Call:
    return _Call(0, op, tuple(args), params)


def num_text(value: float) -> str:
    """A literal's text: ``2`` rather than ``2.0``."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _k(value: float) -> _Const:
    return _Const(0, float(value), num_text(value))


def _dim_node(d: Dim):
    """A dim expression as an IR number: ``B*T`` → ``B * T``, ``T + K - 1`` → ``T + K - 1``."""
    if not d.terms:
        return _k(d.const)
    out = None
    for monomial, coeff in d.terms:
        term = None
        for name in monomial.split("*"):
            term = _DimSize(0, name) if term is None else _c("mul", term, _DimSize(0, name))
        if abs(coeff) != 1:
            term = _c("mul", _k(abs(coeff)), term)
        if out is None:
            out = term if coeff > 0 else _c("neg", term)
        else:
            out = _c("add" if coeff > 0 else "sub", out, term)
    if d.const:
        out = _c("add" if d.const > 0 else "sub", out, _k(abs(d.const)))
    return out


def _shape_names(shape: Shape) -> tuple:
    """A shape as ``ones``/``zeros`` take it: dim names, integers, or dim expressions."""
    out: list = []
    for d in shape:
        if not d.terms:
            out.append(int(d.const))
        elif d.const == 0 and len(d.terms) == 1 and d.terms[0][1] == 1 and "*" not in d.terms[0][0]:
            out.append(d.terms[0][0])
        else:
            out.append(d)
    return tuple(out)


def _adj_add(cx, g, out, a, b):
    return cx.unbroadcast(g, cx.shape(a)), cx.unbroadcast(g, cx.shape(b))


def _adj_sub(cx, g, out, a, b):
    return cx.unbroadcast(g, cx.shape(a)), cx.unbroadcast(_c("neg", g), cx.shape(b))


def _adj_mul(cx, g, out, a, b):
    return cx.unbroadcast(_c("mul", g, b), cx.shape(a)), cx.unbroadcast(_c("mul", g, a), cx.shape(b))


def _adj_div(cx, g, out, a, b):
    db = _c("neg", _c("div", _c("mul", g, out), b))  # -g a / b² = -g (a / b) / b
    return cx.unbroadcast(_c("div", g, b), cx.shape(a)), cx.unbroadcast(db, cx.shape(b))


def _adj_pow(cx, g, out, a, exponent, text):
    lower = _c("pow", a, exponent=exponent - 1, text=num_text(exponent - 1))
    return (_c("mul", _c("mul", _k(exponent), g), lower),)


def _adj_matmul(cx, g, out, a, b):
    g = cx.full(g, cx.shape(out))
    ra, rb = len(cx.shape(a)), len(cx.shape(b))
    if ra == 2 and rb == 2:
        return _c("matmul", g, _c("T", b)), _c("matmul", _c("T", a), g)
    if ra == 2:  # matrix @ vector: the weight gets an outer product
        return _c("outer", g, b), _c("matmul", _c("T", a), g)
    if rb == 2:  # vector @ matrix
        return _c("matmul", b, g), _c("outer", a, g)
    return _c("mul", g, b), _c("mul", g, a)  # a dot product: g is a scalar


def _adj_outer(cx, g, out, a, b):
    g = cx.full(g, cx.shape(out))
    return _c("matmul", g, b), _c("matmul", _c("T", g), a)


def _adj_T(cx, g, out, a):
    return (_c("T", cx.full(g, cx.shape(out))),)


def _adj_expand(cx, g, out, a, items):
    g = cx.full(g, cx.shape(out))
    for p in reversed([p for p, it in enumerate(items) if it is None]):
        g = _c("sum", g, axis=p, keepdims=False)  # a size-1 axis: the sum drops it
    return (g,)


def _expand_back(cx, g, a, axis, keepdims):
    """The gradient of a reduction, with its reduced axes back (size 1: they broadcast)."""
    shape = cx.shape(a)
    if axis is None or keepdims or len(shape) <= 1 or cx.shape(g) == ():
        return g  # nothing to re-insert, or a scalar that broadcasts anyway
    axes = {k % len(shape) for k in (axis if isinstance(axis, tuple) else (axis,))}
    if len(axes) == len(shape):
        return g
    g = cx.full(g, tuple(d for k, d in enumerate(shape) if k not in axes))
    items = tuple(None if k in axes else ":" for k in range(len(shape)))
    return _c("expand", g, items=items)


def _reduced_count(cx, a, axis):
    shape = cx.shape(a)
    dims = list(shape) if axis is None else \
        [shape[k % len(shape)] for k in (axis if isinstance(axis, tuple) else (axis,))]
    nodes = [_dim_node(d) for d in dims]
    count = nodes[0] if nodes else _k(1)
    for n in nodes[1:]:
        count = _c("mul", count, n)
    return count


def _adj_sum(cx, g, out, a, axis=None, keepdims=False):
    return (_expand_back(cx, g, a, axis, keepdims),)


def _adj_mean(cx, g, out, a, axis=None, keepdims=False):
    return (_c("div", _expand_back(cx, g, a, axis, keepdims), _reduced_count(cx, a, axis)),)


def _adj_trace(cx, g, out, a):
    return (_c("mul", g, _c("eye", shape=_shape_names(cx.shape(a)[:1]))),)


def _adj_diag(cx, g, out, a):
    return (_c("diag", cx.full(g, cx.shape(out))),)


def _adj_softmax(cx, g, out, a, axis=None):
    return (_c("mul", out, _c("sub", g, _c("sum", _c("mul", g, out), axis=axis, keepdims=True))),)


def _adj_log_softmax(cx, g, out, a, axis=None):
    g = cx.full(g, cx.shape(out))  # the sum along the axis needs the axis
    p = _c("softmax", a, axis=axis)
    return (_c("sub", g, _c("mul", p, _c("sum", g, axis=axis, keepdims=True))),)


def _adj_logsumexp(cx, g, out, a, axis=None, keepdims=False):
    return (_c("mul", _expand_back(cx, g, a, axis, keepdims), _c("softmax", a, axis=axis)),)


def _adj_elementwise(cx, g, out, a, fn, prime):
    if prime:
        raise NoAdjoint(f"{fn}_prime is a derivative; derive does not differentiate through it")
    if fn == "exp":
        return (_c("mul", g, out),)
    if fn == "log":
        return (_c("div", g, a),)
    if fn == "square":
        return (_c("mul", _c("mul", _k(2), g), a),)
    return (_c("mul", g, _c("elementwise", a, fn=fn, prime=True)),)


def _adj_where(cx, g, out, c, a, b):
    zero = _k(0)
    return (None, cx.unbroadcast(_c("where", c, g, zero), cx.shape(a)),
            cx.unbroadcast(_c("where", c, zero, g), cx.shape(b)))


def _adj_minmax(mask_a: str, mask_b: str):
    def adjoint(cx, g, out, a, b):
        return (cx.unbroadcast(_c("mul", g, _c(mask_a, a, b)), cx.shape(a)),
                cx.unbroadcast(_c("mul", g, _c(mask_b, a, b)), cx.shape(b)))

    return adjoint


def _adj_none(cx, g, out, *args, **_):
    return tuple(None for _ in args)


def _adj_einsum(cx, g, out, *args, spec):
    g = cx.full(g, cx.shape(out))
    subs, out_sub = parse_einsum(spec, [len(cx.shape(a)) for a in args])
    grads = []
    for k, sub in enumerate(subs):
        others = [(s, x) for j, (s, x) in enumerate(zip(subs, args)) if j != k]
        available = set(out_sub) | set("".join(s for s, _ in others))
        if any(letter not in available for letter in sub):
            raise NoAdjoint(f"einsum {spec!r} sums an index of operand {k + 1} alone")
        terms = ",".join([out_sub] + [s for s, _ in others])
        grads.append(_c("einsum", g, *[x for _, x in others], spec=f"{terms}->{sub}"))
    return tuple(grads)


ADJOINTS: dict[str, Callable[..., tuple]] = {
    "add": _adj_add, "sub": _adj_sub, "mul": _adj_mul, "div": _adj_div,
    "neg": lambda cx, g, out, a: (_c("neg", g),), "pow": _adj_pow,
    "matmul": _adj_matmul, "dot": _adj_matmul, "outer": _adj_outer, "T": _adj_T, "expand": _adj_expand,
    "sum": _adj_sum, "mean": _adj_mean, "trace": _adj_trace, "diag": _adj_diag,
    "softmax": _adj_softmax, "log_softmax": _adj_log_softmax, "logsumexp": _adj_logsumexp,
    "elementwise": _adj_elementwise, "where": _adj_where,
    "maximum": _adj_minmax("gt", "le"), "minimum": _adj_minmax("lt", "ge"),
    "gt": _adj_none, "ge": _adj_none, "lt": _adj_none, "le": _adj_none,
    "ones": _adj_none, "zeros": _adj_none, "eye": _adj_none, "einsum": _adj_einsum,
}



def _adj_perm(name: str):
    """swapaxes and flip are their own inverses; a transpose takes the inverse permutation."""
    def adjoint(cx, g, out, a, **params):
        g = cx.full(g, cx.shape(out))
        if name == "transpose" and params.get("axes") is not None:
            params = {"axes": tuple(int(k) for k in np.argsort(_perm(params["axes"], len(params["axes"]))))}
        return (_c(name, g, **params),)

    return adjoint


def _adj_extreme(mask: str):
    """The gradient to the arg-max (arg-min): ``(a >= max) * g``, both brought back to a's rank."""
    def adjoint(cx, g, out, a, axis=None, keepdims=False):
        back = _expand_back(cx, out, a, axis, keepdims)
        return (_c("mul", _expand_back(cx, g, a, axis, keepdims), _c(mask, a, back)),)

    return adjoint


def _zero_dim(d) -> bool:
    return d is None or (not d.terms and d.const == 0)


def _adj_slice(cx, g, out, a, items):
    """``X[a:b]`` → ``pad(G, ((a, n - b),))``: zeros where the slice did not read; an axis the
    slice added (``None``) is summed away first (it has size 1)."""
    g = cx.full(g, cx.shape(out))
    shape = cx.shape(a)
    added, widths, k = [], [], 0
    for j, it in enumerate(_slice_items(shape, items)):
        if it is None:
            added.append(j)
            continue
        if it == ":":
            widths.append((Dim.lit(0), Dim.lit(0)))
        else:
            lo, hi = it
            lo = Dim.lit(0) if lo is None else lo
            widths.append((lo, Dim.lit(0) if hi is None else shape[k] - hi))
        k += 1
    for j in reversed(added):
        g = _c("sum", g, axis=j, keepdims=False)
    if all(_zero_dim(lo) and _zero_dim(hi) for lo, hi in widths):
        return (g,)
    return (_c("pad", g, widths=tuple(widths)),)


def _cut(shape, axis: int, lo, hi) -> tuple:
    """Slice items reading ``lo:hi`` along ``axis`` (None for a bound at the axis' own end)."""
    ax = axis % len(shape)
    lo = None if _zero_dim(lo) else lo
    hi = None if hi == shape[ax] else hi
    return (":",) * ax + ((lo, hi),)


def _adj_concat(cx, g, out, *args, axis=0):
    """``concat([A, B], axis)`` → each operand's block of G: ``G[:, :n]``, ``G[:, n:]``."""
    g = cx.full(g, cx.shape(out))
    shape = cx.shape(out)
    ax = axis % len(shape)
    grads, lo = [], Dim.lit(0)
    for a in args:
        hi = lo + cx.shape(a)[ax]
        grads.append(_c("slice", g, items=_cut(shape, ax, lo, hi)))
        lo = hi
    return tuple(grads)


def _adj_stack(cx, g, out, *args, axis=0):
    """``stack([A, B], axis)`` → ``sum(G[k:k+1], axis)`` (the size-1 slice without its axis)."""
    g = cx.full(g, cx.shape(out))
    shape = cx.shape(out)
    ax = axis % len(shape)
    return tuple(_c("sum", _c("slice", g, items=_cut(shape, ax, Dim.lit(k), Dim.lit(k + 1))), axis=ax, keepdims=False)
                 for k in range(len(args)))


def _adj_pad(cx, g, out, a, widths):
    """``pad(X, widths)`` → the block of G that holds X."""
    g = cx.full(g, cx.shape(out))
    shape = cx.shape(out)
    items = tuple(":" if _zero_dim(lo) and _zero_dim(hi) else ((None if _zero_dim(lo) else lo),
                                                                (None if _zero_dim(hi) else n - hi))
                  for n, (lo, hi) in zip(shape, widths))
    while items and items[-1] == ":":
        items = items[:-1]
    if not items:
        return (g,)
    try:
        _slice_shape(shape, items)
    except ShapeMismatch as exc:  # X's own axis, e.g. Ho + K - 3, is not ≥ 1 for every size
        raise NoAdjoint(f"the block of the padded gradient that holds the input cannot be sliced out: {exc}") from None
    return (_c("slice", g, items=items),)


def _adj_take_along_axis(cx, g, out, a, i, axis=0):
    """``take_along_axis(A, I, axis)`` → ``sum(G[..., None] * one_hot(I, n), axis)`` with the one-hot
    axis moved back to ``axis``: each picked entry receives its G."""
    shape, ishape = cx.shape(a), cx.shape(i)
    ax = axis % len(shape)
    if any(d != e for k, (d, e) in enumerate(zip(shape, ishape)) if k != ax):
        raise NoAdjoint("take_along_axis with an index array that broadcasts along another axis")
    g = cx.full(g, cx.shape(out))
    last = (":",) * (len(shape) - 1) + (None,)
    if ax == len(shape) - 1 and isinstance(i, _Call) and i.op == "expand" and tuple(i.params["items"]) == last:
        return _c("mul", g, _c("one_hot", i.args[0], V=shape[ax])), None  # L at labels y[:, None]: G * one_hot(y)
    hot = _c("one_hot", i, V=shape[ax])
    picked = _c("mul", _c("expand", g, items=(":",) * len(shape) + (None,)), hot)
    grad = _c("sum", picked, axis=ax, keepdims=False)  # (…, n) with n last
    if ax != len(shape) - 1:
        perm = list(range(len(shape) - 1))
        perm.insert(ax, len(shape) - 1)
        grad = _c("transpose", grad, axes=tuple(perm))
    return grad, None


def _adj_clip(cx, g, out, a, lo, hi):
    return (_c("mul", g, _c("mul", _c("gt", a, _k(lo)), _c("lt", a, _k(hi)))),)


ADJOINTS.update({
    "transpose": _adj_perm("transpose"), "swapaxes": _adj_perm("swapaxes"), "flip": _adj_perm("flip"),
    "reshape": lambda cx, g, out, a, shape: (_c("reshape", cx.full(g, cx.shape(out)), shape=cx.shape(a)),),
    "max": _adj_extreme("ge"), "min": _adj_extreme("le"), "clip": _adj_clip,
    "gather": lambda cx, g, out, c, i: (_c("scatter_add", cx.full(g, cx.shape(out)), i, V=cx.shape(c)[0]), None),
    "scatter_add": lambda cx, g, out, s, i, V: (_c("gather", cx.full(g, cx.shape(out)), i), None),
    "one_hot": _adj_none, "slice": _adj_slice, "concat": _adj_concat, "stack": _adj_stack, "pad": _adj_pad,
    "take_along_axis": _adj_take_along_axis,
})

for _name, _adjoint in ADJOINTS.items():
    if _name in OPS:
        OPS[_name] = _replace(OPS[_name], adjoint=_adjoint)


# structural ops carry an integer array through unchanged (SPEC §6.2: y[:, None], reshape, slices)
for _name in ("expand", "T", "reshape", "transpose", "swapaxes", "flip", "slice", "concat", "stack"):
    OPS[_name] = replace(OPS[_name], keeps_integer=True)
