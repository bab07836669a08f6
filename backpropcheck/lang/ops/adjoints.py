"""Each op's VJP again, as a matrix-language template (IR -> IR) for ``derive``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace as _replace

import numpy as np

from ..dims import Dim, Shape
from ..ir import Call as _Call
from ..ir import Const as _Const
from ..ir import DimSize as _DimSize
from ..ir import Node as _Node
from . import arith, elementwise, indexing, linalg, reduce, structure  # noqa: F401 - every op registered first
from .core import OPS, ShapeMismatch
from .linalg import parse_einsum
from .structure import _perm, _slice_items, _slice_shape

# adjoints: each op's VJP again, as a matrix-language template (IR -> IR) for ``derive``.
#
# ``adjoint(cx, g, out, *args, **params)`` returns one IR node per argument (None: no
# gradient flows there). ``g`` is the gradient of ``out`` (the op's own IR node); it may be
# smaller than ``out`` as long as it broadcasts to it (a sum's gradient is not copied out
# until something needs it). ``cx`` knows shapes: ``cx.shape(node)``,
# ``cx.unbroadcast(node, shape)`` (a sum over the axes broadcasting stretched) and
# ``cx.full(node, shape)`` (make a lazily broadcast gradient exactly ``shape``). The
# results are raw; ``backpropcheck.derive`` rewrites them into textbook form.


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


def _dim_node(d: Dim) -> _Node:
    """A dim expression as an IR number: ``B*T`` → ``B * T``, ``T + K - 1`` → ``T + K - 1``."""
    if not d.terms:
        return _k(d.const)
    out: _Node | None = None
    for monomial, coeff in d.terms:
        term: _Node | None = None
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
    assert out is not None  # d has a term
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


def _adj_var(cx, g, out, a, axis=None, keepdims=False):
    """``var(X, axis)`` → ``2 * G * (X - mean(X, axis, keepdims=True)) / N``, G with the axis back."""
    centred = _c("sub", a, _c("mean", a, axis=axis, keepdims=True))
    scaled = _c("mul", _c("mul", _k(2), _expand_back(cx, g, a, axis, keepdims)), centred)
    return (_c("div", scaled, _reduced_count(cx, a, axis)),)


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
    if isinstance(axis, tuple):  # softmax takes one axis: over several, exp(a - lse) is the softmax
        weights = _c("elementwise", _c("sub", a, _expand_back(cx, out, a, axis, keepdims)), fn="exp", prime=False)
        return (_c("mul", _expand_back(cx, g, a, axis, keepdims), weights),)
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
    "sum": _adj_sum, "mean": _adj_mean, "var": _adj_var, "trace": _adj_trace, "diag": _adj_diag,
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
    """The gradient to the arg-max (arg-min): ``(a >= max) * g``, both brought back to a's rank; with
    ``cx.split_ties``, ``g * mask / sum(mask, axis, keepdims=True)``: the even split over entries that tie by
    construction (the max of copies), equal to the plain mask wherever one entry reaches the max."""
    def adjoint(cx, g, out, a, axis=None, keepdims=False):
        back = _expand_back(cx, out, a, axis, keepdims)
        chosen = _c(mask, a, back)
        if getattr(cx, "split_ties", False):
            chosen = _c("div", chosen, _c("sum", _c(mask, a, back), axis=axis, keepdims=True))
        return (_c("mul", _expand_back(cx, g, a, axis, keepdims), chosen),)

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


def _adj_cumsum(cx, g, out, a, axis):
    """``cumsum(X, axis)`` → the running sum of G from the other end: ``flip(cumsum(flip(G)))``."""
    g = cx.full(g, cx.shape(out))
    return (_c("flip", _c("cumsum", _c("flip", g, axis=axis), axis=axis), axis=axis),)


ADJOINTS.update({
    "transpose": _adj_perm("transpose"), "swapaxes": _adj_perm("swapaxes"), "flip": _adj_perm("flip"),
    "reshape": lambda cx, g, out, a, shape: (_c("reshape", cx.full(g, cx.shape(out)), shape=cx.shape(a)),),
    "max": _adj_extreme("ge"), "min": _adj_extreme("le"), "clip": _adj_clip,
    "gather": lambda cx, g, out, c, i: (_c("scatter_add", cx.full(g, cx.shape(out)), i, V=cx.shape(c)[0]), None),
    "scatter_add": lambda cx, g, out, s, i, V: (_c("gather", cx.full(g, cx.shape(out)), i), None),
    "one_hot": _adj_none, "slice": _adj_slice, "concat": _adj_concat, "stack": _adj_stack, "pad": _adj_pad,
    "take_along_axis": _adj_take_along_axis, "cumsum": _adj_cumsum,
})

for _name, _adjoint in ADJOINTS.items():
    if _name in OPS:
        OPS[_name] = _replace(OPS[_name], adjoint=_adjoint)

