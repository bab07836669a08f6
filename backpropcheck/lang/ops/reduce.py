"""Reductions and functions along an axis: ``sum``, ``mean``, ``var``, ``max``, ``min``, ``softmax``,
``log_softmax``, ``logsumexp``, ``cumsum``."""

from __future__ import annotations

import numpy as np

from ..dims import Dim, Shape
from .core import (
    AXIS,
    AXIS1,
    KEEPDIMS,
    Op,
    Param,
    ShapeMismatch,
    _axes,
    _axis,
    _complex_step,
    _expand_reduced,
    _linear,
    _register,
    _sf,
    _sp,
    dense,
    sig,
    sum_sym,
)
from .elementwise import _exp, _log


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
        symbolic=sum_sym,
        params=("axis", "keepdims"),
        tangent=_linear("sum"),
        signature=sig("X", AXIS, KEEPDIMS),
        rational=True,
        note="a row of ones (a sum): its transpose copies the gradient back over the summed axis",
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
            sum_sym(a, axis=axis, keepdims=keepdims) / _sp().Integer(_count(a.shape, axis)), dtype=object
        ),
        params=("axis", "keepdims"),
        tangent=_linear("mean"),
        signature=sig("X", AXIS, KEEPDIMS),
        rational=True,
        note="a row of ones (a sum): its transpose copies the gradient back over the summed axis divided by the "
             "count",
    )
)


# the population variance (NumPy's ``var``, ddof 0), as layer and batch norm take it:
# ``mean((X - mean(X))²)``; its gradient is ``2 (X - mean(X)) / N`` times the copied-back gradient


def _centred(a, axis):
    """``X - mean(X)`` along ``axis``, the count an exact integer (a SymPy entry stays rational)."""
    return a - np.sum(a, axis=axis, keepdims=True) / _count(np.shape(a), axis)


def _var(a, axis=None, keepdims=False):
    d = _centred(a, axis)
    return np.sum(d * d, axis=axis, keepdims=keepdims) / _count(np.shape(a), axis)


def _var_vjp(g, out, a, axis=None, keepdims=False):
    return (_expand_reduced(g, a.shape, axis, keepdims) * (2 * _centred(a, axis) / _count(a.shape, axis)),)


_register(
    Op(
        "var",
        _reduce_shape,
        _var,
        _var_vjp,
        symbolic=lambda a, axis=None, keepdims=False: np.asarray(_var(a, axis, keepdims), dtype=object),
        params=("axis", "keepdims"),
        tangent=_complex_step("var"),
        signature=sig("X", AXIS, KEEPDIMS),
        rational=True,
        note="2 (x − mean x) / N as a row: its transpose copies the gradient back over the axis, weighted by "
             "2 (x − mean x) / N",
    )
)


# vector functions along an axis


def _softmax(a, axis=None):
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _logsumexp(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _sym_exp(a):
    return np.asarray(np.frompyfunc(_exp, 1, 1)(a), dtype=object)


def _sym_log(a):
    return np.asarray(np.frompyfunc(_log, 1, 1)(a), dtype=object)


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
    return np.asarray(a - _sym_log(sum_sym(_sym_exp(a), axis=axis, keepdims=True)), dtype=object)


def _logsumexp_sym(a, axis=None, keepdims=False):
    return _sym_log(sum_sym(_sym_exp(a), axis=axis, keepdims=keepdims))


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
        note="diag(p) − p pᵀ along the axis: the transpose gives p ⊙ (g − Σ g ⊙ p)",
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
        note="I − 1 pᵀ along the axis: the transpose gives g − p Σ g",
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
        note="the softmax as a row: the gradient is copied back and weighted by softmax",
    )
)


# max/min reductions: the gradient goes to the arg-max. Random draws never tie, but a file can tie
# entries by construction (the max of copies of one entry, max(x[:, None] * ones((n, m)), axis=1) = x):
# the gradient is then split evenly among the tied entries, so copies of one entry add up to its own
# gradient (1, not m) -- the per-neuron truth's value there too.


def _extreme(name: str):
    pick = np.max if name == "max" else np.min

    def numeric(a, axis=None, keepdims=False):
        return pick(a, axis=axis, keepdims=keepdims)

    def share(a, out, axis, keepdims):
        """The local Jacobian, a selection: 1 at the arg-max/arg-min of each slice, 1/k at each of k tied
        entries (none of a NaN slice)."""
        mask = (np.real(a) == np.real(_expand_reduced(out, np.shape(a), axis, keepdims))).astype(float)
        ties = np.sum(mask, axis=axis, keepdims=True)
        return mask if np.all(ties <= 1) else mask / np.maximum(ties, 1.0)

    def vjp(g, out, a, axis=None, keepdims=False):
        return (_expand_reduced(g, a.shape, axis, keepdims) * share(a, out, axis, keepdims),)

    def tangent(args, out, params, tans):
        (a,), (t,) = args, tans
        axis, keepdims = params.get("axis"), params.get("keepdims", False)
        return np.sum(share(a, out, axis, keepdims) * dense(t), axis=axis, keepdims=keepdims)

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


# running sums along an axis: linear, so the tangent is the op itself; the VJP is the running sum
# taken from the other end (each input entry reaches every output entry at or after it)


def _cumsum_shape(a: Shape, axis: int | None = None, **_) -> Shape:
    if axis is None:
        raise ShapeMismatch("cumsum runs along one axis: write cumsum(X, axis=k)")
    _axis(axis, len(a))
    return a


def _cumsum_vjp(g, out, a, axis: int):
    return (np.flip(np.cumsum(np.flip(g, axis=axis), axis=axis), axis=axis),)


_register(Op("cumsum", _cumsum_shape, lambda a, axis: np.cumsum(a, axis=axis), _cumsum_vjp, params=("axis",),
             tangent=_linear("cumsum"), signature=sig("X", Param("axis", "int"))))
