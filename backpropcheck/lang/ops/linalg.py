"""Linear algebra: ``@``/``dot``, ``outer``, ``.T``, ``trace``, ``diag``, ``ones``/``zeros``/``eye`` and
``einsum``."""

from __future__ import annotations

import operator

import numpy as np

from ..dims import Dim, Shape, fmt_shape
from ..ir import Call, Var
from .core import (
    LowRank,
    Op,
    Param,
    Rank1,
    ShapeMismatch,
    _complex_step,
    _linear,
    _register,
    _sp,
    dense,
    keep_product,
    sig,
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
    """``g bᵀ`` and ``aᵀ g``. A gradient that is a product over a short inner dimension (an outer
    product, a batch's sum of them) comes as a :class:`LowRank` when large (``LowRank.of``): the same
    numbers, made by whoever reads them. A product over one term takes the broadcast product (NumPy's
    matmul takes its slow, non-BLAS loop for an inner dimension of 1: 2x the time at 1024). A product made
    dense is kept for a claim that is the same product (:func:`keep_product`)."""
    if a.ndim == 2 and b.ndim == 2:
        return LowRank.of(g, b), LowRank.of(a.T, g.T)
    if a.ndim == 2:
        return LowRank.of(g[:, None], b[:, None]), keep_product(a.T, g, a.T @ g)
    if b.ndim == 2:
        return keep_product(b, g, b @ g), LowRank.of(a[:, None], g[:, None])
    return g * b, g * a


def _matmul_sym(a, b, mul=operator.mul, add=None):
    """``a @ b`` on object arrays, each entry one ``Add`` of its products: the same canonical sum
    NumPy's pairwise ``+`` builds, without re-flattening a growing sum at every step. ``mul`` and
    ``add`` may be faster builders of the same expressions (the symbolic engine's)."""
    add = add or _sp().Add
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    if a2.shape[1] != b2.shape[0]:
        raise ValueError(f"matmul: inner dimensions {a2.shape[1]} and {b2.shape[0]} differ")
    out = np.empty((a2.shape[0], b2.shape[1]), dtype=object)
    for i in range(a2.shape[0]):
        for j in range(b2.shape[1]):
            out[i, j] = add(*[mul(a2[i, k], b2[k, j]) for k in range(a2.shape[1])])
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
    if np.ndim(a) == 2 and np.ndim(b) == 2 and np.shape(a)[1] == 1 == np.shape(b)[0]:
        return a * b  # one term per entry: the same numbers, without matmul's non-BLAS loop (see the VJP)
    return a @ b


def _matmul_hint(node, env, infer) -> str | None:
    """For a failed ``@``: would the other orientation of a named matrix fit?"""
    if len(node.args) != 2:
        return None
    a, b = node.args
    for k, arg in enumerate((a, b)):
        transposed = isinstance(arg, Call) and arg.op == "T" and isinstance(arg.args[0], Var)
        plain = isinstance(arg, Var) and len(env[arg.name]) == 2
        if not (transposed or plain):
            continue
        name = arg.args[0].name if transposed else arg.name
        base = env[name]
        flipped = base if transposed else tuple(reversed(base))
        shapes = [infer(x, env) for x in (a, b)]
        shapes[k] = flipped
        try:
            _matmul_shape(*shapes)
        except ShapeMismatch:
            continue
        other = b.src if k == 0 else a.src
        suggestion = name if transposed else f"{name}.T"
        fixed = f"{suggestion} @ {other}" if k == 0 else f"{other} @ {suggestion}"
        return (
            f"with {name} of shape {fmt_shape(base)} the gradient flows back through "
            f"`{suggestion}`: try `{fixed}`"
        )
    return None


def _matmul_work(shapes: list[Shape], out: Shape, **_) -> tuple[Dim, ...] | None:
    """The result's entries times the summed dim: (m, k) @ (k, n) is m·n·k multiply-adds."""
    return tuple(out) + (shapes[0][-1],) if shapes[0] else None


def _product_note(position: int, shapes: list[Shape]) -> str:
    """``@`` by the ranks of its factors: a matrix product, W x, an outer product, a dot product."""
    ranks = [len(s) for s in shapes]
    other = 1 - position
    if ranks[other] == 2 and ranks[position] >= 1:
        side = "on the left" if position == 1 else "on the right"
        if ranks[position] == 2:
            return f"a matrix product: the transposed Jacobian multiplies by the other factor, transposed, {side}"
        return "∂(W x)/∂x = W: the gradient takes the transposed Jacobian, Wᵀ"
    if ranks[position] == 2:
        return "Kronecker structure (one block per row): the transposed Jacobian is an outer product"
    return "a dot product: the Jacobian is the other vector"


def _matmul_factors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``a @ b`` of two matrices as ``p @ q.T`` (``LowRank.dense`` calls ``matmul(p, q.T)``: ``a @ b`` again,
    or for an inner dimension of 1 the broadcast product ``_matmul`` takes); None for a vector. ``dot`` has
    none: it takes another route through BLAS than ``matmul``, so its claim is made as it is."""
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]:
        return a, b.T
    return None


def _outer_factors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``outer(a, b)`` of two vectors as ``p @ q.T``."""
    if a.ndim == 1 and b.ndim == 1:
        return a[:, None], b[:, None]
    return None


_register(Op("matmul", _matmul_shape, _matmul, _matmul_vjp, symbolic=_matmul_sym, arity=(2, 2),
             tangent=_matmul_tangent(_matmul), hint=_matmul_hint, work=_matmul_work, rational=True,
             note=_product_note, forgets_products=True, factors=_matmul_factors, reads_kept_products=True))
_register(Op("dot", _matmul_shape, np.dot, _matmul_vjp, symbolic=_matmul_sym, arity=(2, 2),
             tangent=_matmul_tangent(np.dot), signature=sig("a", "b"), hint=_matmul_hint, work=_matmul_work,
             rational=True, note=_product_note, forgets_products=True))


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
        rational=True,
        note="Kronecker structure: the transposed Jacobian contracts the gradient with the other vector",
        factors=_outer_factors,
    )
)


def _transpose_tangent(args, out, params, tans):
    (t,) = tans
    return Rank1(t.q, t.p) if isinstance(t, Rank1) else np.asarray(t).T


_register(Op("T", lambda a, **_: tuple(reversed(a)), lambda a: a.T, lambda g, out, a: (g.T,),
             tangent=_transpose_tangent, factored=True,
             keeps_integer=True, rational=True, note="a permutation (the transpose): the gradient is transposed back"))


def _square_shape(a: Shape, **_) -> Shape:
    if len(a) != 2 or a[0] != a[1]:
        raise ShapeMismatch(f"trace needs a square matrix, not {fmt_shape(a)}")
    return ()


_register(
    Op("trace", _square_shape, np.trace, lambda g, out, a: (g * np.eye(a.shape[0]),), tangent=_linear("trace"),
       signature=sig("X"), rational=True, note="the identity matrix's entries (only the diagonal counts)")
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
             tangent=_linear("diag"), signature=sig("v"), rational=True,
             note="a diagonal embedding: the gradient keeps only the diagonal"))


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


def _einsum_letters(shapes: tuple[Shape, ...] | list[Shape], spec: str) -> tuple[dict[str, Dim], str]:
    """Each index letter's dim, and the output's letters."""
    subs, out = parse_einsum(spec, [len(s) for s in shapes])
    sizes: dict[str, Dim] = {}
    for s, shape in zip(subs, shapes):
        for letter, d in zip(s, shape):
            if letter in sizes and sizes[letter] != d:
                raise ShapeMismatch(f"einsum {spec!r}: index {letter} is both {sizes[letter]} and {d}")
            sizes[letter] = d
    return sizes, out


def _einsum_shape(*shapes: Shape, spec: str) -> Shape:
    sizes, out = _einsum_letters(shapes, spec)
    return tuple(sizes[letter] for letter in out)


def _einsum_work(shapes: list[Shape], out: Shape, spec: str, **_) -> tuple[Dim, ...]:
    """The iteration space: one axis per index letter."""
    return tuple(_einsum_letters(shapes, spec)[0].values())


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


def _einsum_sym(*args, spec: str, mul=operator.mul, add=None):
    """``einsum`` on object arrays, each entry one ``Add`` of its products: the same canonical sum NumPy's
    pairwise ``+`` builds (as :func:`_matmul_sym`), without re-flattening a growing sum at every step. Every
    operand is laid out over all the letters (the output's first, then the summed ones), the products made
    entry-wise by broadcasting, and each output entry sums its run of the summed axes at once."""
    add = add or _sp().Add
    arrays = [np.asarray(a, dtype=object) for a in args]
    subs, out = parse_einsum(spec, [a.ndim for a in arrays])
    letters = out + "".join(sorted(set("".join(subs)) - set(out)))
    sizes: dict[str, int] = {}
    for s, a in zip(subs, arrays):
        for letter, n in zip(s, a.shape):
            if sizes.setdefault(letter, n) != n:
                raise ValueError(f"einsum {spec!r}: index {letter} is both {sizes[letter]} and {n}")
    laid = []
    for s, a in zip(subs, arrays):
        order = sorted(range(len(s)), key=lambda k: letters.index(s[k]))
        laid.append(np.transpose(a, order).reshape([sizes[c] if c in s else 1 for c in letters]))
    product = laid[0]
    for operand in laid[1:]:
        product = np.frompyfunc(mul, 2, 1)(product, operand)
    shape = tuple(sizes[c] for c in letters)
    runs = np.broadcast_to(product, shape).reshape(shape[:len(out)] + (-1,))
    result = np.empty(shape[:len(out)], dtype=object)
    for idx in np.ndindex(*result.shape):
        result[idx] = add(*runs[idx])
    return result


_register(
    Op(
        "einsum",
        _einsum_shape,
        lambda *args, spec: np.einsum(spec, *args),
        _einsum_vjp,
        symbolic=_einsum_sym,
        arity=(1, 8),
        params=("spec",),
        tangent=_complex_step("einsum"),
        signature=sig(Param("spec", "spec", keyword=False), "operands", variadic=True),
        work=_einsum_work,
        work_in_entries=True,
        note="a contraction: the transposed Jacobian contracts the gradient with the other operands",
    )
)
