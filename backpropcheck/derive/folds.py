"""Shorter forms derive looks for in the forward pass itself: an element-wise function spelled
out, and a cross-entropy through a softmax folded to ``P - Y``."""

from __future__ import annotations

import numpy as np

from ..lang.ir import Call, Const, Node, Var, walk
from ..model import Derivation
from .rewrite import _monomial
from .tree import Context, as_tree, call, key

# ---------------------------------------------------------------------------
# an element-wise function spelled out: gelu as ``q * (1 + erf(q / sqrt(2))) / 2``

_ARITHMETIC = {"add", "sub", "mul", "div", "neg", "pow"}
_PROBES = np.array([-2.3, -1.1, -0.55, -0.2, 0.13, 0.37, 0.61, 0.9, 1.45, 2.7])


def spelled_out(expr: Node, v: str) -> Call | None:
    """``NAME(v)`` when ``expr`` is arithmetic and named element-wise functions of ``v`` alone that
    agrees with one of the op table's differentiable element-wise functions at every probe point
    (the same points, finite or not): its derivative is then ``NAME_prime(v)``, not the chain
    through the spelled-out form. A wrong match cannot pass: the derived claim is proved after."""
    from ..engines.evaluate import Backend, evaluate
    from ..lang.ops import ELEMENTWISE, OPS, function_of

    if isinstance(expr, Var) or function_of(expr) is not None:
        return None  # nothing spelled out
    for n in walk(expr):
        if isinstance(n, Var):
            if n.name != v:
                return None
        elif isinstance(n, Call):
            if not (n.op in _ARITHMETIC or OPS[n.op].function_applied(n.params) in ELEMENTWISE):
                return None
        elif not isinstance(n, Const):
            return None
    backend = Backend(symbolic=False, functions=ELEMENTWISE.__getitem__, const=lambda c: c.value, scalar=float)
    with np.errstate(all="ignore"):
        try:
            values = np.broadcast_to(evaluate(as_tree(expr), {v: _PROBES}, {}, backend), _PROBES.shape)
        except (ArithmeticError, ValueError, TypeError):
            return None
        finite = np.isfinite(values)
        if finite.sum() < 6:
            return None
        for name, f in ELEMENTWISE.items():
            if f.nograd:
                continue
            theirs = np.asarray(f.numeric(_PROBES), dtype=float)
            if np.array_equal(np.isfinite(theirs), finite) and np.allclose(values[finite], theirs[finite],
                                                                           rtol=1e-12, atol=1e-12):
                return call("elementwise", Var(0, v), fn=name, prime=False)
    return None


def fold_cross_entropy(cx: Context, d: Derivation, consumer: Call, g: Node, name: str = "") -> Node | None:
    """``P = softmax(Z)`` (or ``L = log_softmax(Z)``) whose gradient is ``s · Y / P`` (``s · Y``)
    with Y a constant simplex or one-hot along the same axis: ``grad_Z = -s · (P - Y)``."""
    if consumer.op not in ("softmax", "log_softmax"):
        return None
    shape = cx.shape(consumer)
    axis = consumer.params.get("axis")
    mono = _monomial(cx, g)
    if mono is None or axis is None:
        return None
    sign, num, den = mono
    labels = [f for f in num if isinstance(f, Var) and f.name in d.inputs]
    labels = [f for f in labels if d.inputs[f.name].constant and d.inputs[f.name].domain in ("simplex", "onehot")
              and d.inputs[f.name].axis % len(shape) == axis % len(shape) and cx.shape(f) == shape]
    if len(labels) != 1:
        return None
    y = labels[0]
    num = [f for f in num if f is not y]
    p = consumer if consumer.op == "softmax" else call("softmax", consumer.args[0], axis=axis)
    if consumer.op == "softmax":
        mine = [f for f in den if key(f) in (key(consumer), ("v", name))]
        if len(mine) != 1:
            return None
        den = [f for f in den if f is not mine[0]]
    if not all(cx.shape(f) == () for f in num + den):
        return None
    body: Node = call("sub", p, y) if sign < 0 else call("sub", y, p)
    for f in num:
        body = call("mul", f, body)
    for f in den:
        body = call("div", body, f)
    return body


