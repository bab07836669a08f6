"""Structural ops, linear in their operand: ``X[:, None]``, ``reshape``, ``transpose``, ``swapaxes``,
``flip``, slices, ``concat``, ``stack`` and ``pad``."""

from __future__ import annotations

from types import EllipsisType

import numpy as np

from ..dims import Dim, Shape, fmt_shape
from .core import AXIS, Op, Param, ShapeMismatch, _axes, _axis, _bind_static, _linear, _nonnegative, _register, _sp, sig


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
       tangent=_linear("expand"), keeps_integer=True, rational=True,
       note="a new axis of size one: the gradient drops it again")
)


# structural ops: linear, so their tangent is the op applied to the tangents


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
             lambda g, out, a, shape: (np.reshape(g, a.shape),), params=("shape",), tangent=_linear("reshape"), keeps_integer=True,
             signature=sig("X", Param("shape", "dims", keyword=False)), bind=_bind_static,
             note="the same entries in another shape (an identity): the gradient is reshaped back"))


def _perm(axes, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(reversed(range(rank)))
    if len(axes) != rank or sorted(a % rank for a in axes) != list(range(rank)):
        raise ShapeMismatch(f"axes {tuple(axes)} are not a permutation of the {rank} axes")
    return tuple(a % rank for a in axes)


_register(Op("transpose", lambda a, axes=None, **_: tuple(a[k] for k in _perm(axes, len(a))),
             lambda a, axes=None: np.transpose(a, _perm(axes, np.ndim(a))),
             lambda g, out, a, axes=None: (np.transpose(g, np.argsort(_perm(axes, a.ndim))),),
             params=("axes",), tangent=_linear("transpose"), keeps_integer=True, signature=sig("X", Param("axes", "ints", None, by_name=False)),
             note="a permutation of the axes: the gradient's axes are put back (the inverse permutation; a matrix's "
                  "transpose)"))


def _swap_shape(a: Shape, axis1: int, axis2: int, **_) -> Shape:
    i, j = _axis(axis1, len(a)), _axis(axis2, len(a))
    out = list(a)
    out[i], out[j] = out[j], out[i]  # type: ignore[index]
    return tuple(out)


_register(Op("swapaxes", _swap_shape, lambda a, axis1, axis2: np.swapaxes(a, axis1, axis2),
             lambda g, out, a, axis1, axis2: (np.swapaxes(g, axis1, axis2),), params=("axis1", "axis2"),
             tangent=_linear("swapaxes"), keeps_integer=True,
             signature=sig("X", Param("axis1", "int", keyword=False), Param("axis2", "int", keyword=False)),
             note="a permutation of two axes: the gradient's axes are swapped back"))


def _flip_shape(a: Shape, axis=None, **_) -> Shape:
    _axes(axis, len(a))
    return a


_register(Op("flip", _flip_shape, lambda a, axis=None: np.flip(a, axis=axis),
             lambda g, out, a, axis=None: (np.flip(g, axis=axis),), params=("axis",), tangent=_linear("flip"), keeps_integer=True,
             signature=sig("X", AXIS), note="a permutation (a reversal): the gradient is flipped back"))


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
    index: list[slice | None | EllipsisType] = []
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
             params=("items",), tangent=_linear("slice"), keeps_integer=True, bind=_bind_static,
             note="a selection: the gradient is zeros of the input's shape with the upstream gradient at the slice's "
                  "place"))


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
             tangent=_linear("concat"), keeps_integer=True, signature=sig(Param("arrays", "tensors"), Param("axis", "int", 0)),
             note="a selection per operand: each operand's gradient is its own slice of the upstream gradient"))
_register(Op("stack", _join_shape(True), _stack, _stack_vjp, arity=(1, 16), params=("axis",),
             tangent=_linear("stack"), keeps_integer=True, signature=sig(Param("arrays", "tensors"), Param("axis", "int", 0)),
             note="a selection per operand: each operand's gradient is its own index of the upstream gradient along "
                  "the new axis"))


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
             bind=_bind_static, note="a selection of the input's own entries: the gradient is the upstream "
                                     "gradient's slice at the input's place"))
