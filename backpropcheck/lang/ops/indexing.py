"""Integer arrays as indices (SPEC §6.1): ``C[I]``, ``scatter_add``, ``one_hot``, ``take_along_axis``;
never differentiated in the index."""

from __future__ import annotations

import numpy as np

from ..dims import Dim, Shape, fmt_shape
from .core import Op, Param, ShapeMismatch, _axis, _register, _sp, dense, sig

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
