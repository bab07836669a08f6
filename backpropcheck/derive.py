"""``derive``: write the matrix-form backprop of a file's forward pass, then prove it.

For every non-constant input and forward variable ``v`` the gradient is written on its
own step, from the ``grad_`` of each variable that reads ``v`` (the question's "given
∇a⁽ᵏ⁺¹⁾"): each consumer's definition is walked backwards through the op table's adjoint
templates (:data:`backpropcheck.lang.ops.ADJOINTS`), the contributions are summed, and a
rewrite pass turns the raw chain into the forms people write (transposes at the leaves,
no einsum where ``@`` serves, ones and identities folded away, a cross-entropy through a
softmax folded to ``P - Y`` where the labels' domain makes it true).

Every derived claim then goes through the loader and the checker exactly like a user's
claim; a derived claim that is not ``proved`` is a bug of ``derive``.

Nothing here evaluates file text: expressions are built as IR from the parser's output
and printed back to the expression language.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import tomllib
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checker import Options, check_derivation
from .errors import DerivationError
from .lang.dims import Dim, Shape, fmt_shape
from .lang.ir import Call, Const, DimSize, IndexRef, IndexSum, Node, Var, names_used, walk
from .lang.ops import OPS, NoAdjoint, ShapeMismatch, num_text, parse_einsum, spell
from .lang.shapes import infer
from .loader import loads
from .model import Derivation

# ---------------------------------------------------------------------------
# IR helpers


def call(op: str, *args: Node, **params: Any) -> Call:
    return Call(0, op, tuple(args), params)


def const(value: float) -> Const:
    return Const(0, float(value), num_text(value))


# id -> (node, key): the node is kept alive so its id is not reused; cleared after each derivation
# (no weak references: their callbacks would run inside the checker's SIGALRM-bounded symbolic work).
_KEYS: dict[int, tuple[Node, tuple]] = {}


def key(node: Node) -> tuple:
    """A structural, hashable identity of a tree (IR nodes compare by identity; trees are never
    changed once built, so each node's key is computed once)."""
    hit = _KEYS.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    out = _key(node)
    _KEYS[id(node)] = (node, out)
    return out


def _key(node: Node) -> tuple:
    if isinstance(node, Var):
        return ("v", node.name)
    if isinstance(node, Const):
        return ("c", node.value)
    if isinstance(node, DimSize):
        return ("d", node.dim)
    if isinstance(node, Call):
        params = tuple(sorted((k, _hashable(v)) for k, v in node.params.items() if k != "text"))
        return ("f", node.op, params, tuple(key(a) for a in node.args))
    if isinstance(node, IndexRef):
        return ("i", node.name, tuple(str(s) for s in node.subscripts))
    if isinstance(node, IndexSum):
        return ("s", node.index, node.dim, key(node.body))
    raise TypeError(node)


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def as_tree(node: Node) -> Node:
    """A copy in which no node is shared (the templates reuse ``g`` and ``out``; the
    evaluator, which keys values by node identity, wants a tree)."""
    if isinstance(node, Call):
        return Call(node.col, node.op, tuple(as_tree(a) for a in node.args), dict(node.params), src=node.src)
    if isinstance(node, Var):
        return Var(node.col, node.name)
    if isinstance(node, Const):
        return Const(node.col, node.value, node.text)
    if isinstance(node, DimSize):
        return DimSize(node.col, node.dim)
    return node


def size(node: Node) -> int:
    """Nodes of the IR tree: the measure of an expression's length."""
    return 1 + sum(size(c) for c in node.children())


# ---------------------------------------------------------------------------
# printing IR back to the expression language

_BINARY = {"add": ("+", 2), "sub": ("-", 2), "mul": ("*", 3), "div": ("/", 3), "matmul": ("@", 3),
           "gt": (">", 1), "ge": (">=", 1), "lt": ("<", 1), "le": ("<=", 1)}
_ATOM = 6


def to_text(node: Node) -> str:
    return _text(node)[0]


def _dims(dims) -> str:
    """A tuple of dim expressions as the language writes it: ``(B, T, H*D)``, ``(n,)``."""
    parts = [str(d) for d in dims]
    return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


def _bound(d) -> str:
    return "" if d is None else str(d)


def _slice_text(n: Call) -> str:
    items = []
    for it in n.params["items"]:
        if it is None:
            items.append("None")
        elif it in (":", "..."):
            items.append(it)
        else:
            items.append(f"{_bound(it[0])}:{_bound(it[1])}")
    return f"{_wrap(_text(n.args[0]), _ATOM)}[{', '.join(items)}]"


def _axis_kw(n: Call) -> str:
    return "" if n.params.get("axis") is None else f", axis={n.params['axis']}"


# ops written with their static parameters (shapes, axes, bounds, widths)
_STRUCTURAL: dict[str, Callable[[Call], str]] = {
    "reshape": lambda n: f"reshape({to_text(n.args[0])}, {_dims(n.params['shape'])})",
    "transpose": lambda n: f"transpose({to_text(n.args[0])}"
                           + ("" if n.params.get("axes") is None else f", {_dims(n.params['axes'])}") + ")",
    "swapaxes": lambda n: f"swapaxes({to_text(n.args[0])}, {n.params['axis1']}, {n.params['axis2']})",
    "flip": lambda n: f"flip({to_text(n.args[0])}{_axis_kw(n)})",
    "slice": _slice_text,
    "concat": lambda n: f"concat([{', '.join(to_text(a) for a in n.args)}], axis={n.params.get('axis', 0)})",
    "stack": lambda n: f"stack([{', '.join(to_text(a) for a in n.args)}], axis={n.params.get('axis', 0)})",
    "pad": lambda n: f"pad({to_text(n.args[0])}, ("
                     + ", ".join(f"({lo}, {hi})" for lo, hi in n.params["widths"])
                     + ("," if len(n.params["widths"]) == 1 else "") + "))",
    "clip": lambda n: f"clip({to_text(n.args[0])}, {num_text(n.params['lo'])}, {num_text(n.params['hi'])})",
    "gather": lambda n: f"{_wrap(_text(n.args[0]), _ATOM)}[{to_text(n.args[1])}]",
    "scatter_add": lambda n: f"scatter_add({to_text(n.args[0])}, {to_text(n.args[1])}, {n.params['V']})",
    "one_hot": lambda n: f"one_hot({to_text(n.args[0])}, {n.params['V']})",
    "take_along_axis": lambda n: f"take_along_axis({to_text(n.args[0])}, {to_text(n.args[1])}, "
                                 f"axis={n.params.get('axis', 0)})",
}


def _wrap(part: tuple[str, int], need: int) -> str:
    return part[0] if part[1] >= need else f"({part[0]})"


def _text(node: Node) -> tuple[str, int]:
    if isinstance(node, Var):
        return node.name, _ATOM
    if isinstance(node, DimSize):
        return node.dim, _ATOM
    if isinstance(node, Const):
        text = num_text(node.value)
        return text, (4 if node.value < 0 else _ATOM)
    if not isinstance(node, Call):
        raise TypeError(f"cannot print {node!r}")
    op, args, p = node.op, node.args, node.params
    if op in _BINARY:
        sym, prec = _BINARY[op]
        left, right = _text(args[0]), _text(args[1])
        return f"{_wrap(left, prec)} {sym} {_wrap(right, prec + 1)}", prec
    if op == "neg":
        inner = _text(args[0])
        if isinstance(args[0], Call) and args[0].op in ("mul", "div", "matmul") and not inner[0].startswith("-"):
            return "-" + inner[0], inner[1]  # -(a * b) is (-a) * b: the same value, fewer brackets
        return "-" + _wrap(inner, 4), 4
    if op == "pow":
        return f"{_wrap(_text(args[0]), _ATOM)} ** {num_text(p['exponent'])}", 5
    if op == "T":
        return f"{_wrap(_text(args[0]), _ATOM)}.T", _ATOM
    if op == "expand":
        items = ", ".join(":" if it == ":" else "None" for it in p["items"])
        return f"{_wrap(_text(args[0]), _ATOM)}[{items}]", _ATOM
    if op in _STRUCTURAL:
        return _STRUCTURAL[op](node), _ATOM
    if op in ("sum", "mean", "logsumexp", "softmax", "log_softmax", "max", "min"):
        parts = [to_text(args[0])]
        if p.get("axis") is not None:
            parts.append(f"axis={p['axis']}")
        if p.get("keepdims"):
            parts.append("keepdims=True")
        return f"{op}({', '.join(parts)})", _ATOM
    if op == "elementwise":
        name = p["fn"] if isinstance(p["fn"], str) else p["fn"].name
        return f"{name}{'_prime' if p['prime'] else ''}({to_text(args[0])})", _ATOM
    if op in ("ones", "zeros", "eye"):
        shape = [str(d) for d in p["shape"]]
        return (f"{op}({shape[0]})" if len(shape) == 1 else f"{op}([{', '.join(shape)}])"), _ATOM
    if op == "einsum":
        return f"einsum({json.dumps(p['spec'])}, {', '.join(to_text(a) for a in args)})", _ATOM
    return spell(op, [to_text(a) for a in args], p), _ATOM  # any other op: by its signature in the table


# ---------------------------------------------------------------------------
# shapes, and the context the adjoint templates see


class Context:
    """Shapes of IR trees over the file's dim names, and broadcast-aware builders."""

    def __init__(self, env: dict[str, Shape]):
        self.env = env
        self._shapes: dict[int, tuple[Node, Shape]] = {}  # id -> (the node, kept alive so ids stay unique)

    def shape(self, node: Node) -> Shape:
        hit = self._shapes.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        shape = self._infer(node)
        self._shapes[id(node)] = (node, shape)
        return shape

    def _infer(self, node: Node) -> Shape:
        """:func:`infer` for one node over its children's cached shapes (rewriting asks often)."""
        if not isinstance(node, Call) or node.op in ("ones", "zeros", "eye"):
            return infer(node, self.env)
        shapes = [self.shape(a) for a in node.args]
        params = {} if node.op == "elementwise" else dict(node.params)
        try:
            return OPS[node.op].shape(*shapes, **params)
        except ShapeMismatch:
            return infer(node, self.env)  # raises the located ShapeError

    def unbroadcast(self, node: Node, target: Shape) -> Node:
        """Sum ``node`` over the axes that broadcasting added or stretched to reach it."""
        s = self.shape(node)
        if not target and s:
            return call("sum", node, axis=None, keepdims=False)
        while len(s) > len(target):
            node = call("sum", node, axis=0, keepdims=False)
            s = s[1:]
        for k in range(len(s)):
            if len(s) == len(target) and target[k].is_one and not s[k].is_one:
                node = call("sum", node, axis=k, keepdims=True)
        return node

    def full(self, node: Node, target: Shape) -> Node:
        """A lazily broadcast gradient made exactly ``target`` (``g * ones(shape)``)."""
        if self.shape(node) == tuple(target):
            return node
        from .lang.ops import _shape_names

        return call("mul", node, call("ones", shape=_shape_names(target)))


# ---------------------------------------------------------------------------
# the backward walk over one expression


def backprop(cx: Context, node: Node, g: Node, wanted: str) -> list[Node]:
    """The contributions of every occurrence of ``wanted`` in ``node``, given ∂E/∂node = g."""
    if isinstance(node, Var):
        return [g] if node.name == wanted else []
    if not isinstance(node, Call) or wanted not in names_used(node):
        return []
    op = OPS[node.op]
    if op.adjoint is None:
        raise NoAdjoint(f"no adjoint for {node.op}")
    params = {k: v for k, v in node.params.items()}
    grads = op.adjoint(cx, g, node, *node.args, **params)
    out: list[Node] = []
    for arg, ga in zip(node.args, grads):
        if ga is not None and wanted in names_used(arg):
            out.extend(backprop(cx, arg, ga, wanted))
    return out


# ---------------------------------------------------------------------------
# rewriting to textbook form


def _is_const(node: Node, value: float | None = None) -> bool:
    return isinstance(node, Const) and (value is None or node.value == value)


def _is(node: Node, op: str) -> bool:
    return isinstance(node, Call) and node.op == op


class Rewriter:
    """Value-preserving rewrite rules, applied bottom-up to a fixpoint."""

    def __init__(self, cx: Context, names: dict[tuple, str] | None = None):
        self.cx = cx
        self.names = names or {}  # structural key of a forward definition -> its name

    def __call__(self, node: Node) -> Node:
        for _ in range(20):
            new = self._bottom_up(node)
            if key(new) == key(node):
                return new
            node = new
        return node

    def _bottom_up(self, node: Node) -> Node:
        if isinstance(node, Call) and node.args:
            node = Call(0, node.op, tuple(self._bottom_up(a) for a in node.args), dict(node.params))
        for _ in range(20):
            new = self.step(node)
            if new is None:
                break
            node = new
        name = self.names.get(key(node))
        return Var(0, name) if name is not None else node

    def step(self, node: Node) -> Node | None:
        """One rule at the root of ``node``, or None."""
        if not isinstance(node, Call):
            return None
        for rule in RULES:
            out = rule(self.cx, node)
            if out is not None:
                return out
        return None


def _scalar(cx: Context, node: Node) -> bool:
    return cx.shape(node) == ()


def r_identity(cx: Context, n: Call) -> Node | None:
    """``1 * x``, ``x * 1``, ``0 + x``, ``x + 0``, ``x - 0``, ``x / 1``, ``x ** 1``."""
    op, a = n.op, n.args
    if op == "mul":
        if _is_const(a[0], 1):
            return a[1]
        if _is_const(a[1], 1):
            return a[0]
        if _is_const(a[0], -1):
            return call("neg", a[1])
        if _is_const(a[1], -1):
            return call("neg", a[0])
    if op == "add":
        if _is_const(a[0], 0):
            return a[1]
        if _is_const(a[1], 0):
            return a[0]
    if op == "sub":
        if _is_const(a[1], 0):
            return a[0]
        if _is_const(a[0], 0):
            return call("neg", a[1])
    if op == "div" and _is_const(a[1], 1):
        return a[0]
    if op == "pow" and n.params["exponent"] == 1:
        return a[0]
    return None


def r_constants(cx: Context, n: Call) -> Node | None:
    """Numbers first and multiplied together: ``g * 2`` → ``2 * g``, ``2 * (3 * x)`` → ``6 * x``."""
    op, a = n.op, n.args
    if op == "neg" and isinstance(a[0], Const):
        return const(-a[0].value)
    if op == "mul" and isinstance(a[1], Const) and not isinstance(a[0], Const):
        return call("mul", a[1], a[0])
    if op == "mul" and isinstance(a[0], Const) and _is(a[1], "mul") and isinstance(a[1].args[0], Const):
        return call("mul", const(a[0].value * a[1].args[0].value), a[1].args[1])
    if op == "mul" and isinstance(a[0], Const) and _is(a[1], "div") and _is(a[1].args[0], "mul") \
            and isinstance(a[1].args[0].args[0], Const):  # 2 * (0.5 * x / B) → (2 * 0.5 * x) / B
        return call("div", call("mul", a[0], a[1].args[0]), a[1].args[1])
    if op == "mul" and isinstance(a[0], Const) and isinstance(a[1], Const):
        return const(a[0].value * a[1].value)
    if op == "mul" and _is(a[0], "mul") and isinstance(a[0].args[0], Const) and not isinstance(a[1], Const):
        # (2 * g) * x → 2 * (g * x): the number stays in front
        return call("mul", a[0].args[0], call("mul", a[0].args[1], a[1]))
    return None


def r_signs(cx: Context, n: Call) -> Node | None:
    """Minus signs outwards: ``(-a) * b`` → ``-(a * b)``, ``x + -y`` → ``x - y``, ``--x`` → ``x``."""
    op, a = n.op, n.args
    if op == "neg" and _is(a[0], "neg"):
        return a[0].args[0]
    if op == "neg" and _is(a[0], "sub"):
        return call("sub", a[0].args[1], a[0].args[0])
    if op in ("mul", "div", "matmul", "outer", "dot"):
        if _is(a[0], "neg"):
            return call("neg", call(op, a[0].args[0], a[1]))
        if _is(a[1], "neg"):
            return call("neg", call(op, a[0], a[1].args[0]))
    shape_kept = op in ("add", "sub") and cx.shape(n) == cx.shape(a[0]) == cx.shape(a[1])
    if op == "add" and _is(a[1], "neg"):
        return call("sub", a[0], a[1].args[0])
    if op == "add" and _is(a[0], "neg") and shape_kept:
        return call("sub", a[1], a[0].args[0])
    if op == "sub" and _is(a[1], "neg"):
        return call("add", a[0], a[1].args[0])
    if op == "T" and _is(a[0], "neg"):
        return call("neg", call("T", a[0].args[0]))
    return None


def r_transpose(cx: Context, n: Call) -> Node | None:
    """Transposes to the leaves: ``(A @ B).T`` → ``B.T @ A.T``, ``X.T.T`` → ``X``, ``v.T`` → ``v``."""
    if n.op == "matmul" and _is(n.args[0], "eye"):
        return n.args[1]
    if n.op == "matmul" and _is(n.args[1], "eye"):
        return n.args[0]
    if n.op != "T":
        return None
    x = n.args[0]
    if len(cx.shape(x)) <= 1 or _is(x, "eye"):
        return x
    if _is(x, "T"):
        return x.args[0]
    if _is(x, "matmul") and len(cx.shape(x.args[0])) == 2 and len(cx.shape(x.args[1])) == 2:
        return call("matmul", call("T", x.args[1]), call("T", x.args[0]))
    if _is(x, "outer"):
        return call("outer", x.args[1], x.args[0])
    if _is(x, "mul") and _scalar(cx, x.args[0]):
        return call("mul", x.args[0], call("T", x.args[1]))
    if _is(x, "div") and _scalar(cx, x.args[1]):
        return call("div", call("T", x.args[0]), x.args[1])
    return None


def r_ones(cx: Context, n: Call) -> Node | None:
    """``ones(S) * x`` → ``x`` when x is already of shape S; ``x + x`` → ``2 * x``."""
    if n.op == "mul":
        for one, x in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
            if _is(one, "ones") and cx.shape(x) == cx.shape(n):
                return x
    if n.op == "add" and key(n.args[0]) == key(n.args[1]):
        return call("mul", const(2), n.args[0])
    return None


def r_sums(cx: Context, n: Call) -> Node | None:
    """``sum(sum(X, axis=k, keepdims=True), axis=k)`` → ``sum(X, axis=k)``; a sum of a scalar."""
    if n.op != "sum":
        return None
    x, axis, keep = n.args[0], n.params.get("axis"), n.params.get("keepdims", False)
    if _is(x, "sum") and x.params.get("keepdims") and x.params.get("axis") == axis and axis is not None and not keep:
        return call("sum", x.args[0], axis=axis, keepdims=False)
    if _is(x, "sum") and x.params.get("axis") is None and axis is None and not keep:
        return x if not x.params.get("keepdims") else call("sum", x.args[0], axis=None, keepdims=False)
    if cx.shape(x) == () and axis is None:
        return x
    if _is(x, "sum") and not keep and not x.params.get("keepdims") and axis is not None \
            and x.params.get("axis") is not None:  # sum(sum(X, axis=2), axis=1) → sum(X, axis=(1, 2))
        rank = len(cx.shape(x.args[0]))
        inner = x.params["axis"]
        gone = {k % rank for k in (inner if isinstance(inner, tuple) else (inner,))}
        kept = [k for k in range(rank) if k not in gone]
        outer = axis if isinstance(axis, tuple) else (axis,)
        axes = tuple(sorted(gone | {kept[k % len(kept)] for k in outer}))
        return call("sum", x.args[0], axis=axes if len(axes) < rank else None, keepdims=False)
    return None


def _terms(node: Node) -> list[Node]:
    if _is(node, "add"):
        return _terms(node.args[0]) + _terms(node.args[1])
    return [node]


def r_blocks(cx: Context, n: Call) -> Node | None:
    """Pads that tile one axis, added: ``pad(a, ((0, 0), (0, H))) + pad(b, ((0, 0), (H, 0)))`` →
    ``concat([a, b], axis=1)`` (each block of the gradient is written where it goes)."""
    if n.op != "add":
        return None
    terms = _terms(n)
    if len(terms) < 2 or not all(_is(t, "pad") for t in terms):
        return None
    padded = [[k for k, (lo, hi) in enumerate(t.params["widths"]) if lo.terms or lo.const or hi.terms or hi.const]
              for t in terms]
    if any(len(p) != 1 for p in padded) or len({p[0] for p in padded}) != 1:
        return None
    axis = padded[0][0]
    total = cx.shape(n)[axis]
    blocks = sorted(terms, key=lambda t: (t.params["widths"][axis][0].at_ones, str(t.params["widths"][axis][0])))
    at = Dim.lit(0)
    for t in blocks:
        lo, hi = t.params["widths"][axis]
        extent = cx.shape(t.args[0])[axis]
        if lo != at or hi != total - at - extent:
            return None
        at = at + extent
    if at != total:
        return None
    return call("concat", *[t.args[0] for t in blocks], axis=axis)


def r_einsum(cx: Context, n: Call) -> Node | None:
    """An einsum as ``@``, ``outer``, ``*`` and ``.T`` wherever those serve."""
    if n.op != "einsum":
        return None
    subs, out = parse_einsum(n.params["spec"], [len(cx.shape(a)) for a in n.args])
    scalars = [x for s, x in zip(subs, n.args) if s == ""]
    rest = [(s, x) for s, x in zip(subs, n.args) if s != ""]
    if not rest:
        return None
    body = _contract(cx, rest, out)
    if body is None:
        if not scalars:
            return None
        body = call("einsum", *[x for _, x in rest], spec=",".join(s for s, _ in rest) + "->" + out)
    for s in scalars:
        body = call("mul", s, body)
    return body


def _orient(x: Node, sub: str, want: str) -> Node | None:
    if sub == want:
        return x
    if len(sub) == 2 and sub[::-1] == want:
        return call("T", x)
    return None


def _contract(cx: Context, ops: list[tuple[str, Node]], out: str) -> Node | None:
    if len(ops) == 1:
        sub, x = ops[0]
        direct = _orient(x, sub, out)
        if direct is not None:
            return direct
        summed = [k for k, c in enumerate(sub) if c not in out]
        kept = "".join(c for c in sub if c in out)
        if summed and kept == out:
            for k in reversed(summed):
                x = call("sum", x, axis=k, keepdims=False)
            return x
        return None
    if len(ops) > 2:  # contract a pair that shares an index first, then the rest
        pairs = [(i, j) for i in range(len(ops)) for j in range(i + 1, len(ops))]
        pairs.sort(key=lambda ij: not (set(ops[ij[0]][0]) & set(ops[ij[1]][0])))
        for i, j in pairs:
            rest = [op for k, op in enumerate(ops) if k not in (i, j)]
            needed = set(out) | set("".join(s for s, _ in rest))
            inter = "".join(dict.fromkeys(c for c in ops[i][0] + ops[j][0] if c in needed))
            if len(inter) > 2:
                continue
            first = _contract(cx, [ops[i], ops[j]], inter)
            if first is None:
                continue
            whole = _contract(cx, [(inter, first)] + rest, out)
            if whole is not None:
                return whole
        return None
    (sa, a), (sb, b) = ops
    shared = set(sa) & set(sb)
    contracted = shared - set(out)
    if set(out) != (set(sa) | set(sb)) - contracted or len(sa) > 2 or len(sb) > 2:
        return None
    if len(contracted) == 1 and not (shared & set(out)):
        (c,) = contracted
        if out and out[0] in sb:
            (sa, a), (sb, b) = (sb, b), (sa, a)
        left = _orient(a, sa, sa.replace(c, "") + c)
        right = _orient(b, sb, c + sb.replace(c, ""))
        if left is None or right is None or sa.replace(c, "") + sb.replace(c, "") != out:
            return None
        return call("matmul", left, right)
    if contracted:
        return None
    if not shared and len(sa) == len(sb) == 1:
        if out == sa + sb:
            return call("outer", a, b)
        if out == sb + sa:
            return call("outer", b, a)
        return None
    if set(sa) == set(out) and set(sb) == set(out):
        left, right = _orient(a, sa, out), _orient(b, sb, out)
        return call("mul", left, right) if left is not None and right is not None else None
    for (s1, x1), (s2, x2) in (((sa, a), (sb, b)), ((sb, b), (sa, a))):
        if len(out) == 2 and len(s1) == 1 and set(s2) == set(out):
            full = _orient(x2, s2, out)
            if full is None:
                return None
            vec = x1 if s1 == out[1] else call("expand", x1, items=(":", None))
            return call("mul", full, vec) if s1 == out[1] else call("mul", vec, full)
    return None


def r_scalars_out(cx: Context, n: Call) -> Node | None:
    """Scalar factors outside products: ``(A / s) @ B`` → ``A @ B / s``, ``(s * A) @ B`` → ``s * (A @ B)``."""
    if n.op not in ("matmul", "outer", "dot"):
        return None
    for k, x in enumerate(n.args):
        if _is(x, "div") and _scalar(cx, x.args[1]) and not _scalar(cx, x.args[0]):
            args = list(n.args)
            args[k] = x.args[0]
            return call("div", call(n.op, *args), x.args[1])
        if _is(x, "mul") and _scalar(cx, x.args[0]) and not _scalar(cx, x.args[1]):
            args = list(n.args)
            args[k] = x.args[1]
            return call("mul", x.args[0], call(n.op, *args))
    return None


def r_leading_axis(cx: Context, n: Call) -> Node | None:
    """``v[None, :] * X`` → ``v * X``: broadcasting adds leading axes by itself."""
    if n.op not in ("add", "sub", "mul", "div"):
        return None
    for k, x in enumerate(n.args):
        if _is(x, "expand") and n.op in ("mul", "div") and _scalar(cx, n.args[1 - k]):
            args = list(n.args)
            args[k] = x.args[0]
            return call("expand", call(n.op, *args), **x.params)  # (v[None, :] / B) → (v / B)[None, :]
        if _is(x, "expand") and x.params["items"][0] is None and all(it == ":" for it in x.params["items"][1:]):
            args = list(n.args)
            args[k] = x.args[0]
            candidate = call(n.op, *args)
            if cx.shape(candidate) == cx.shape(n):
                return candidate
    return None


def r_factor(cx: Context, n: Call) -> Node | None:
    """``A @ x + B @ x`` → ``(A + B) @ x``; ``(a / s) * x`` → ``a * x / s`` for a scalar s."""
    a = n.args
    if n.op in ("add", "sub") and _is(a[0], "matmul") and _is(a[1], "matmul"):
        if key(a[0].args[1]) == key(a[1].args[1]) and cx.shape(a[0].args[0]) == cx.shape(a[1].args[0]):
            return call("matmul", call(n.op, a[0].args[0], a[1].args[0]), a[0].args[1])
    if n.op == "mul" and _is(a[0], "div") and _scalar(cx, a[0].args[1]) and not _scalar(cx, a[1]):
        return call("div", call("mul", a[0].args[0], a[1]), a[0].args[1])
    return None


def r_mean(cx: Context, n: Call) -> Node | None:
    """``sum(-x)`` → ``-sum(x)``; ``sum(X, axis=k) / n`` → ``mean(X, axis=k)`` when n is that axis' size."""
    if n.op == "sum" and _is(n.args[0], "neg"):
        return call("neg", call("sum", n.args[0].args[0], **n.params))
    if n.op == "div" and _is(n.args[0], "sum") and isinstance(n.args[1], DimSize):
        x, axis = n.args[0].args[0], n.args[0].params.get("axis")
        shape = cx.shape(x)
        dims = [shape[axis % len(shape)]] if axis is not None and shape else list(shape)
        if len(dims) == 1 and dims[0].terms == ((n.args[1].dim, 1),) and dims[0].const == 0:
            return call("mean", x, **n.args[0].params)
    return None


def r_diag(cx: Context, n: Call) -> Node | None:
    """No diagonal matrices: ``diag(v) @ x`` → ``v * x``, ``X @ diag(v)`` → ``X * v``, ``diag(v).T`` → ``diag(v)``."""
    a = n.args
    if n.op == "T" and _is(a[0], "diag") and len(cx.shape(a[0].args[0])) == 1:
        return a[0]
    if n.op == "diag" and _is(a[0], "outer"):  # the diagonal of u vᵀ is u ⊙ v
        return call("mul", *a[0].args)
    if n.op != "matmul":
        return None
    if _is(a[0], "diag") and len(cx.shape(a[0].args[0])) == 1:
        v, x = a[0].args[0], a[1]
        return call("mul", v, x) if len(cx.shape(x)) == 1 else call("mul", call("expand", v, items=(":", None)), x)
    if _is(a[1], "diag") and len(cx.shape(a[1].args[0])) == 1:
        return call("mul", a[0], a[1].args[0])
    return None


RULES: list[Callable[[Context, Call], Node | None]] = [
    r_diag,
    r_factor, r_mean,
    r_identity, r_constants, r_signs, r_transpose, r_ones, r_sums, r_einsum, r_scalars_out, r_leading_axis,
    r_blocks,
]


# ---------------------------------------------------------------------------
# index form → einsum


def index_to_matrix(definition, lookup: Callable | None = None, protect: str | None = None,
                    only: str | None = None, shapes: dict[str, Shape] | None = None) -> Node | None:
    """An index-form body that is a sum of products of plainly indexed entries, as einsums.

    With ``lookup``, an entry read at shifted indices (``x[t + k]``) may stand for a forward
    variable that holds exactly those entries (``Xcol[t, k] = x[t + k]``): ``lookup(ref, range_of)``
    returns ``(name, indices)`` or None. That is only sound for the gradient of *another* factor,
    so an entry of ``protect`` (the variable being differentiated) is never replaced.

    With ``only``, the terms that do not read ``only`` are left out: the result then has the
    same derivative with respect to ``only`` (and is used for nothing else)."""
    idx = definition.index
    letters: dict[str, str] = {}
    for name in idx.free:
        letters[name] = _letter(name, letters)
    terms = _index_terms(idx.body, {}, letters, affine=lookup is not None or only is not None, shapes=shapes)
    if terms is None:
        return None
    if only is not None:
        terms = [t for t in terms if any(_ref_name(r) == only for r in t[2])]
        if not terms:
            return None
    axes = {name: k for k, name in enumerate(idx.free)}
    axes.update({n.index: n.axis for n in walk(idx.body) if isinstance(n, IndexSum)})

    def range_of(index: str):
        return idx.ranges.get(axes[index], Dim.of(idx.bound_dims[axes[index]]) if axes[index] in idx.bound_dims
                              else None)

    resolved = []
    for sign, scalars, refs, bound in terms:
        plain = []
        for r in refs:
            if r[0] != "@":
                plain.append(r)
                continue
            found = None if r[1].name == protect or lookup is None else lookup(r[1], range_of)
            if found is None:
                return None
            plain.append(found)
        resolved.append((sign, scalars, plain, bound))
    out = "".join(letters[n] for n in idx.free)
    total: Node | None = None
    for sign, scalars, refs, bound in resolved:
        subs = ["".join(letters[i] for i in r[1]) for r in refs]
        used = set("".join(subs))
        if not refs:
            return None
        covered = "".join(c for c in out if c in used)  # a term without some free index broadcasts along it
        operands = [r[0] if isinstance(r[0], Node) else Var(0, r[0]) for r in refs]
        node: Node = call("einsum", *operands, spec=",".join(subs) + "->" + covered)
        if covered != out:
            node = call("expand", node, items=tuple(":" if c in used else None for c in out))
        for index, dim in bound.items():
            if letters[index] not in used:  # summing a term that does not depend on the index
                scalars = scalars + [DimSize(0, dim)]
        for s in scalars:
            node = call("mul", s, node)
        if total is None:
            total = call("neg", node) if sign < 0 else node
        else:
            total = call("sub" if sign < 0 else "add", total, node)
    return total


def _ref_name(ref) -> str:
    """The tensor an entry of :func:`_index_terms` reads."""
    if ref[0] == "@":
        return ref[1].name
    return ref[0] if isinstance(ref[0], str) else ""


def _letter(index: str, taken: dict[str, str]) -> str:
    """The einsum letter of an index: its own name when that is one free letter (so the steps read
    ``einsum("j,ij->i", grad_z, W)`` in the file's own indices), else the first unused letter."""
    used = set(taken.values())
    if len(index) == 1 and index.isascii() and index.isalpha() and index not in used:
        return index
    return next(c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used)


def _plain_index(sub) -> str | None:
    """The index of a subscript that is one index alone (``i``, not ``i + 1`` or ``y[b]``)."""
    if sub.lookup is not None or sub.const != 0 or sub.dim_terms or len(sub.terms) != 1 or sub.terms[0][1] != 1:
        return None
    return sub.terms[0][0]


def entry_form(node: Node, target: str = "") -> str | None:
    """An einsum as the per-entry sum it is: ``sum_j grad_z[j] * W[i, j]`` (None for anything else)."""
    if not _is(node, "einsum") or not all(isinstance(a, Var) for a in node.args):
        return None
    lhs, out = node.params["spec"].replace(" ", "").split("->")
    factors = [f"{a.name}[{', '.join(sub)}]" if sub else a.name for a, sub in zip(node.args, lhs.split(","))]
    summed = sorted(set(lhs.replace(",", "")) - set(out))
    body = " * ".join(factors)
    lead = f"{target}[{', '.join(out)}] = " if target and out else ""
    return lead + (f"sum_{''.join(summed)} " if summed else "") + body


def _index_terms(node: Node, bound: dict[str, str], letters: dict[str, str], affine: bool = False,
                 shapes: dict[str, Shape] | None = None):
    """``[(sign, scalar nodes, [(name, indices)], bound indices)]`` or None; with ``affine``, an
    entry at shifted indices comes back as ``("@", the IndexRef)``. With ``shapes``, an entry read
    at an integer input's value (``logp[b, y[b]]``) becomes a sum over that axis against a one-hot
    (``Σ_z logp[b, z] · one_hot(y, K)[b, z]``): the operand is then an IR node, not a name."""
    if isinstance(node, Call) and node.op in ("add", "sub"):
        a = _index_terms(node.args[0], bound, letters, affine, shapes)
        b = _index_terms(node.args[1], bound, letters, affine, shapes)
        if a is None or b is None:
            return None
        if node.op == "sub":
            b = [(-s, sc, r, bd) for s, sc, r, bd in b]
        return a + b
    if isinstance(node, Call) and node.op == "neg":
        a = _index_terms(node.args[0], bound, letters, affine, shapes)
        return None if a is None else [(-s, sc, r, bd) for s, sc, r, bd in a]
    if isinstance(node, IndexSum):
        if node.index not in letters:
            letters[node.index] = _letter(node.index, letters)
        inner = _index_terms(node.body, {**bound, node.index: node.dim}, letters, affine, shapes)
        if inner is None:
            return None
        return [(s, sc, r, {**bd, node.index: node.dim}) for s, sc, r, bd in inner]
    if isinstance(node, Call) and node.op == "mul":
        a = _index_terms(node.args[0], bound, letters, affine, shapes)
        b = _index_terms(node.args[1], bound, letters, affine, shapes)
        if a is None or b is None:
            return None
        return [(sa * sb, sca + scb, ra + rb, {**bda, **bdb}) for sa, sca, ra, bda in a for sb, scb, rb, bdb in b]
    if isinstance(node, IndexRef):
        indices = []
        picks: list[tuple[Node, tuple[str, ...]]] = []
        for axis, sub in enumerate(node.subscripts):
            if sub.lookup is not None:
                if shapes is None or node.name not in shapes:
                    return None
                plain = [_plain_index(s) for s in sub.lookup[1]]
                if any(i is None or i not in letters for i in plain):
                    return None
                z = f"{node.name}~{axis}"  # a fresh index: no index name of the file has a ~
                letters[z] = _letter(z, letters)
                indices.append(z)
                hot = call("one_hot", Var(0, sub.lookup[0]), V=shapes[node.name][axis])
                picks.append((hot, tuple(plain) + (z,)))  # type: ignore[arg-type]
                continue
            index = _plain_index(sub)
            if index is None:
                return [(1, [], [("@", node)], {})] if affine and not picks else None
            indices.append(index)
        if len(set(indices)) != len(indices) or any(i not in letters for i in indices):
            return None
        return [(1, [], [(node.name, tuple(indices)), *picks], {z: "" for _, (*_, z) in picks})]
    if isinstance(node, (Const, DimSize)):
        return [(1, [node], [], {})]
    return None


# ---------------------------------------------------------------------------
# the softmax / log_softmax + cross-entropy fold


def _monomial(cx: Context, node: Node, sign: int = 1):
    """``node`` as ``sign * Π num / Π den`` (lists of factors), or None."""
    if _is(node, "neg"):
        inner = _monomial(cx, node.args[0], sign)
        return None if inner is None else (-inner[0], inner[1], inner[2])
    if _is(node, "mul"):
        a, b = _monomial(cx, node.args[0]), _monomial(cx, node.args[1])
        if a is None or b is None:
            return None
        return sign * a[0] * b[0], a[1] + b[1], a[2] + b[2]
    if _is(node, "div"):
        a, b = _monomial(cx, node.args[0]), _monomial(cx, node.args[1])
        if a is None or b is None:
            return None
        return sign * a[0] * b[0], a[1] + b[2], a[2] + b[1]
    if isinstance(node, Const) and node.value < 0:
        return -sign, [const(-node.value)], []
    return sign, [node], []


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


# ---------------------------------------------------------------------------
# results


@dataclass
class Step:
    """One consumer's contribution to a gradient."""

    through: str  # the consumer's name, or "E"
    definition: str  # its definition's text
    op: str  # the op at the root of the definition
    note: str  # the local Jacobian's structure, in words
    raw: str  # the adjoint templates' output, before rewriting
    simplified: str
    entry: str = ""  # for an index-form definition: the per-entry sum, in the file's indices
    jacobian: str = ""  # ∂through/∂v with its shape, e.g. "∂z/∂a, (m,) × (n,)"


@dataclass
class DerivedClaim:
    name: str
    target: str
    expr: str
    verdict: str = "error"
    message: str = ""
    steps: list[Step] = field(default_factory=list)
    shape: str = ""
    file_claim: str | None = None  # the file's own claim, if it makes one
    key: str = ""  # the [claims] key when it is not the name: "grad_w[f, c, p, q]" (index form)

    @property
    def toml_key(self) -> str:
        return self.key or self.name

    @property
    def ok(self) -> bool:
        return self.verdict == "proved"


@dataclass
class DeriveResult:
    path: str
    title: str
    claims: list[DerivedClaim] = field(default_factory=list)
    not_derived: dict[str, str] = field(default_factory=dict)  # target -> why not
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.not_derived and all(c.ok for c in self.claims)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "claims": [{"name": c.name, "expr": c.expr, "verdict": c.verdict, **({"key": c.key} if c.key else {})}
                       for c in self.claims],  # key: an index-form claim's [claims] key, "grad_w[k]"
            "not_derived": [{"name": f"grad_{t}", "reason": r} for t, r in self.not_derived.items()],
            "error": self.error,
        }

    def to_toml(self) -> str:
        lines = [f"# derived by `backpropcheck derive {self.path}`; each claim on its own step", "[claims]"]
        width = max((len(_toml_key(c.toml_key)) for c in self.claims), default=0)
        for c in self.claims:
            lines.append(f"{_toml_key(c.toml_key).ljust(width)} = {json.dumps(c.expr)}  # {c.verdict}")
        for t, r in self.not_derived.items():
            lines.append(f"# grad_{t}: not derived ({r})")
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return render_markdown(self)

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(f"<tr><td><code>{escape(c.name)}</code></td><td><code>{escape(c.expr)}</code></td>"
                       f"<td>{escape(c.verdict)}</td></tr>" for c in self.claims)
        rows += "".join(f"<tr><td><code>grad_{escape(t)}</code></td><td>not derived</td><td>{escape(r)}</td></tr>"
                        for t, r in self.not_derived.items())
        error = f"<p><b>error:</b> {escape(self.error)}</p>" if self.error else ""
        return (f"<p><b>{escape(self.title or self.path)}</b></p>{error}<table><tr><th>claim</th><th>expression</th>"
                f"<th>verdict</th></tr>{rows}</table>")


# ---------------------------------------------------------------------------
# the driver


def claim_name(key: str) -> str:
    """A [claims] key's gradient name: ``"grad_w[f, c, p, q]"`` → ``grad_w``."""
    return key.split("[", 1)[0].strip()


def _is_text(source: str | Path) -> bool:
    return isinstance(source, str) and ("\n" in source or source.lstrip().startswith("["))


def _read(source: str | Path) -> tuple[str, str]:
    if _is_text(source):
        return str(source), "<string>"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(source)
    except (OSError, UnicodeDecodeError) as exc:
        raise DerivationError(f"cannot read the file: {exc}", file=str(source)) from None


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _toml_key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def dump_toml(doc: dict[str, dict[str, Any]]) -> str:
    """A derivation document (tables of scalars, lists and inline tables) as TOML text."""
    out = []
    for table, items in doc.items():
        out.append(f"[{table}]")
        out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in items.items())
        out.append("")
    return "\n".join(out)


def _with_claims(doc: dict[str, Any], claims: dict[str, str]) -> str:
    new = {k: v for k, v in doc.items() if k not in ("claims", "expect", "backward")}
    new["claims"] = claims
    return dump_toml(new)


def derive(source: str | Path, targets: Iterable[str] | None = None, options: Options | None = None,
           check: bool = True, name: str | None = None) -> DeriveResult:
    """Derive (and, unless ``check=False``, prove) the gradients of a derivation file or TOML text;
    ``name`` labels text in messages (default ``<string>``)."""
    text, read_as = _read(source)
    name = name or read_as
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return DeriveResult(name, "", error=f"{name}: invalid TOML: {exc}")
    forward = doc.get("forward") if isinstance(doc.get("forward"), dict) else None
    if not forward:
        return DeriveResult(name, "", error=f"{name}: [forward] must define at least one variable")
    first = next(iter(forward))
    first = first.split("[")[0].strip()
    try:
        d = loads(_with_claims(doc, {f"grad_{first}": "0"}), name)  # the user's claims play no part
    except DerivationError as exc:
        return DeriveResult(name, "", error=str(exc))
    file_claims = doc.get("claims", {}) if isinstance(doc.get("claims"), dict) else {}
    file_claims = {claim_name(k): v for k, v in file_claims.items()}
    try:
        result = _Deriver(d).run(targets)
    finally:
        _KEYS.clear()
    result.path = name
    for c in result.claims:
        c.file_claim = file_claims.get(c.name)
    if check and result.claims:
        _prove(result, doc, name, options or Options())
    return result


def _prove(result: DeriveResult, doc: dict[str, Any], name: str, options: Options) -> None:
    claims = {c.toml_key: c.expr for c in result.claims}
    try:
        d = loads(_with_claims(doc, claims), name)
        checked = check_derivation(d, options)
    except DerivationError as exc:
        result.error = f"derive wrote a file the loader refuses (a bug of derive): {exc}"
        return
    if checked.status == "error" and not checked.claims:
        result.error = f"checking the derived claims failed: {checked.error}"
        return
    verdicts = {c.name: c for c in checked.claims}
    for c in result.claims:
        r = verdicts.get(c.name)
        if r is not None:
            c.verdict, c.message = r.verdict, r.message
    too_big = [c for c in result.claims if c.verdict == "error" and "exceeds the limit" in c.message]
    for c in too_big:  # a long definition's gradient: the bound is the file's to raise, not a bug
        result.not_derived[c.target] = (f"the derived expression is past a bound ({c.message}); split the forward "
                                        "definition into smaller steps")
        result.claims.remove(c)


class _Deriver:
    def __init__(self, d: Derivation):
        self.d = d
        env: dict[str, Shape] = {n: i.shape for n, i in d.inputs.items()}
        for f in d.forward:
            env[f.name] = f.shape
        for n in d.differentiable:
            env[f"grad_{n}"] = env[n]
        self.cx = Context(env)
        self.exprs: dict[str, Node] = {}  # forward name -> its matrix-form expression
        self.unsupported: dict[str, str] = {}
        names: dict[tuple, str] = {}
        def nameable(node: Node) -> bool:  # naming W.T after `Wt = W.T` would hide the transpose
            return not (isinstance(node, Var) or (_is(node, "T") and isinstance(node.args[0], Var)))

        for f in d.forward:
            node = f.node if f.index is None else index_to_matrix(f, shapes=env)
            if node is None:
                self.unsupported[f.name] = "index form beyond sums of products of plain entries (e.g. x[t + k])"
                continue
            if f.index is not None and Context(env).shape(node) != f.shape:  # every term broadcast
                self.unsupported[f.name] = "index form in which no term reads every free index"
                continue
            self.exprs[f.name] = node
            if f.index is None and nameable(node):
                names.setdefault(key(node), f.name)
        self.rw = Rewriter(self.cx, names)
        self.matrix_names = dict(names)
        for f in d.forward:  # an index-form definition's rewritten einsum names its variable too
            if f.index is not None and f.name in self.exprs:
                matrix = Rewriter(self.cx)(self.exprs[f.name])
                if nameable(matrix):
                    self.matrix_names.setdefault(key(matrix), f.name)
        self.rw.names = self.matrix_names
        self.derived: dict[str, Node] = {}

    def holder(self, ref: IndexRef, range_of) -> tuple[str, tuple[str, ...]] | None:
        """A forward variable F with ``F[p, q] = ref`` up to factors of ones (an im2col ``Xcol``):
        ``(F, the indices to read it at)``, or None."""
        ones = {f.name for f in self.d.forward if f.index is None and _is(f.node, "ones")}
        names = sorted({n for sub in ref.subscripts for n, _ in sub.terms})
        for f in self.d.forward:
            if f.index is None or len(f.index.free) > len(names):
                continue
            factors = _factors(f.index.body)
            if factors is None:
                continue
            rest = [x for x in factors if not (_is_const(x, 1) or (isinstance(x, IndexRef) and x.name in ones))]
            if len(rest) != 1 or not isinstance(rest[0], IndexRef) or rest[0].name != ref.name:
                continue
            mine = rest[0]
            for chosen in itertools.permutations(names, len(f.index.free)):
                rename = dict(zip(f.index.free, chosen))
                same = all(
                    tuple(sorted((rename.get(n, "?" + n), c) for n, c in a.terms)) == tuple(sorted(b.terms))
                    and a.const == b.const for a, b in zip(mine.subscripts, ref.subscripts))
                if same and all(f.shape[k] == range_of(i) for k, i in enumerate(chosen)):
                    return f.name, chosen
        return None

    def consumers(self, v: str) -> list[str]:
        out = [f.name for f in self.d.forward if v in names_used(f.index.body if f.index else f.node)]
        if self.d.loss.expression is not None and v in names_used(self.d.loss.expression):
            out.append("E")
        return out

    def live(self) -> set[str]:
        """Variables E depends on (the rest have a zero gradient)."""
        live = set(self.d.loss.upstream)
        if self.d.loss.expression is not None:
            live |= names_used(self.d.loss.expression)
        for f in reversed(self.d.forward):
            if f.name in live:
                live |= names_used(f.index.body if f.index else f.node)
        return live

    def order(self) -> list[str]:
        """Backprop order: each forward variable from the last, inputs after their first reader."""
        d = self.d
        first_reader: dict[str, str] = {}
        for name, inp in d.inputs.items():
            if inp.constant:
                continue
            readers = self.consumers(name)
            first_reader[name] = readers[0] if readers else ""
        out = [n for n, r in first_reader.items() if r == "E"]
        for f in reversed(d.forward):
            if f.name not in d.loss.upstream:
                out.append(f.name)
            out.extend(n for n, r in first_reader.items() if r == f.name)
        out.extend(n for n, r in first_reader.items() if r == "")
        return out

    def run(self, targets: Iterable[str] | None) -> DeriveResult:
        d = self.d
        result = DeriveResult(d.path, d.title)
        wanted = None
        if targets is not None:
            wanted = {t[5:] if t.startswith("grad_") else t for t in targets}
            unknown = wanted - set(d.differentiable)
            if unknown:
                result.error = f"--for names {', '.join(sorted(unknown))}: not a non-constant input or forward variable"
                return result
            given = wanted & set(d.loss.upstream)
            if given:
                result.error = (f"--for names {', '.join(sorted(given))}: upstream in [loss], so its grad_ is given, "
                                "not derived")
                return result
        live = self.live()
        for v in self.order():
            if wanted is not None and v not in wanted:
                continue
            try:
                claim = self.derive_one(v, live)
            except NoAdjoint as exc:
                result.not_derived[v] = str(exc)
                continue
            except DerivationError as exc:  # an ill-shaped template or rewrite
                result.not_derived[v] = f"derive built an ill-shaped expression, a bug of derive: {exc.message}"
                continue
            result.claims.append(claim)
        return result

    def derive_one(self, v: str, live: set[str]) -> DerivedClaim:
        d, cx = self.d, self.cx
        shape = cx.shape(Var(0, v))
        steps: list[Step] = []
        parts: list[Node] = []
        for c in self.consumers(v):
            if c != "E" and c not in live:
                continue
            if c != "E" and c in self.unsupported:
                definition = next(f for f in d.forward if f.name == c)
                alt = index_to_matrix(definition, self.holder, protect=v, only=v, shapes=self.cx.env) \
                    if definition.index else None
                if alt is None or v not in names_used(alt):
                    written = self.index_claim(v, definition, live)
                    if written is not None:
                        return written
                    shifted = [n for n in walk(definition.index.body) if isinstance(n, IndexRef) and n.name == v
                               and any(_plain_index(sub) is None for sub in n.subscripts)]
                    if shifted:
                        read = _entry_text(("@", shifted[0]), list(definition.index.free))
                        raise NoAdjoint(f"{v} is read at shifted positions in {c} ({read}): its gradient is a full "
                                        f"correlation that reads grad_{c} past the ends of its axes, which takes a "
                                        "zero-padded [backward] helper; a [claims] table cannot hold one")
                    raise NoAdjoint(f"{v} feeds {c}, whose {self.unsupported[c]}")
                expr = alt  # for v's gradient only: the shifted entries are read from the variable holding them
                held = sorted(names_used(alt) - names_used(definition.index.body))
                note_extra = (f"; the shifted entries are read from {', '.join(held)}, which holds exactly them"
                              if held else f"; only the terms that read {v} are kept")
            else:
                expr = d.loss.expression if c == "E" else self.exprs[c]
                note_extra = ""
            g: Node = const(1) if c == "E" else Var(0, f"grad_{c}")
            known = self.derived.get(c)
            if isinstance(known, Const) or _is(known, "eye") or _is(known, "ones"):
                g = known  # a constant gradient (E = q + r, E = trace(M)) is written out, not named
            try:
                raw_parts = backprop(cx, expr, g, v)
            except NoAdjoint:
                written = self.unpad_claim(v, expr, c, live)
                if written is None:
                    raise
                return written
            if not raw_parts:  # read only through a comparison: no gradient flows there
                continue
            raw = raw_parts[0]
            for p in raw_parts[1:]:
                raw = call("add", raw, p)
            raw = cx.unbroadcast(raw, shape)
            simple = self.rw(raw)
            if c != "E" and isinstance(expr, Call) and c in self.derived:
                folded = fold_cross_entropy(cx, d, expr, self.derived[c], c)
                if folded is not None:
                    simple = self.rw(folded)
            parts.append(simple)
            entries = [entry_form(p, f"grad_{v}" if len(raw_parts) == 1 else "") for p in raw_parts]
            entry = " + ".join(e for e in entries if e) if all(entries) else ""
            jac = f"∂{c}/∂{v}, {fmt_shape(cx.shape(expr))} × {fmt_shape(shape)}"
            steps.append(Step(c, d.loss.text if c == "E" else self._def_text(c), _root_op(expr),
                              local_note(cx, expr, v) + note_extra, to_text(raw), to_text(simple), entry, jac))
        if not parts:
            from .lang.ops import _shape_names

            node: Node = call("zeros", shape=_shape_names(shape))
            steps.append(Step("-", "", "", f"nothing computed after {v} reaches the loss: the gradient is zero",
                              "", to_text(node)))
        else:
            node = parts[0]
            for p in parts[1:]:
                node = call("add", node, p)
            node = self.rw(cx.full(node, shape))
        self.derived[v] = node
        return DerivedClaim(f"grad_{v}", v, to_text(node), steps=steps, shape=fmt_shape(shape))

    def _only_reader(self, v: str, c: str, live: set[str]) -> bool:
        return [r for r in self.consumers(v) if r == "E" or r in live] == [c]

    def index_claim(self, v: str, definition, live: set[str]) -> DerivedClaim | None:
        """``v``'s gradient in index form, when v is read (at plain indices) by an index-form
        definition that reads some other entry at shifted positions with no variable holding them
        (a convolution's kernel): ``grad_w[k] = Σ_t grad_y[t] · x[t + k]``. Every read of the body
        is one the forward makes, so it stays inside its axis. None when v has other readers."""
        if not self._only_reader(v, definition.name, live):
            return None
        written = index_gradient(definition, v, self.cx.shape(Var(0, v)), self.d.forward)
        if written is None:
            return None
        key_text, body = written
        step = Step(definition.name, self._def_text(definition.name), "index form",
                    f"{v} is read at plain indices: each entry of grad_{v} sums grad_{definition.name} times the "
                    f"other factors over the indices {v} does not carry (index form: the other factor is read at "
                    "shifted positions, which no matrix product writes)", "", body, "",
                    f"∂{definition.name}/∂{v}, {fmt_shape(definition.shape)} × {fmt_shape(self.cx.shape(Var(0, v)))}")
        return DerivedClaim(f"grad_{v}", v, body, steps=[step], shape=fmt_shape(self.cx.shape(Var(0, v))),
                            key=key_text)

    def unpad_claim(self, v: str, expr: Node, c: str, live: set[str]) -> DerivedClaim | None:
        """``xp = pad(x, widths)`` where the block holding x cannot be sliced for every size (x's own
        axis, like ``Ho + K - 3``, is not ≥ 1 at all ones): ``grad_x[i, j] = grad_xp[i + a, j + b]``."""
        if not (_is(expr, "pad") and isinstance(expr.args[0], Var) and expr.args[0].name == v
                and self._only_reader(v, c, live)):
            return None
        shape = self.cx.shape(Var(0, v))
        taken = {n for n in self.cx.env} | {str(x) for d in shape for x in d.names}
        indices = [n for n in ("i", "j", "k", "l", "m", "n", "p", "q", "r", "s", "t", "u") if n not in taken]
        if len(indices) < len(shape):
            return None
        indices = indices[:len(shape)]
        reads = []
        for i, (lo, _) in zip(indices, expr.params["widths"]):
            reads.append(i if not lo.terms and lo.const == 0 else f"{i} + {lo}")
        body = f"grad_{c}[{', '.join(reads)}]"
        step = Step(c, self._def_text(c), "pad", f"{v} sits inside the zeros: its gradient is the block of grad_{c} "
                    "that holds it, read in index form (the slice would be empty for some sizes)", "", body, "",
                    f"∂{c}/∂{v}, {fmt_shape(self.cx.shape(expr))} × {fmt_shape(shape)}")
        return DerivedClaim(f"grad_{v}", v, body, steps=[step], shape=fmt_shape(shape),
                            key=f"grad_{v}[{', '.join(indices)}]")

    def _def_text(self, name: str) -> str:
        for f in self.d.forward:
            if f.name == name:
                key_text = f.key.split(".", 1)[1] if "." in f.key else name
                return f"{key_text} = {f.text}"
        return name


def _entry_text(ref, order: list[str]) -> str:
    """An entry as the file writes it; in a shifted position the indices come in ``order`` (the
    definition's free indices first: ``x[t + k]``, not ``x[k + t]``)."""
    if ref[0] == "@":
        from dataclasses import replace

        rank = {name: k for k, name in enumerate(order)}
        subs = [replace(sub, terms=tuple(sorted(sub.terms, key=lambda t: rank.get(t[0], len(rank)))))
                for sub in ref[1].subscripts]
        return f"{ref[1].name}[{', '.join(str(sub) for sub in subs)}]"
    return f"{ref[0]}[{', '.join(ref[1])}]" if ref[1] else ref[0]


def index_gradient(definition, v: str, shape: Shape, forward) -> tuple[str, str] | None:
    """``("grad_v[indices]", body)``: the index-form gradient of ``v`` through one index-form
    definition that is a sum of products, v read once per term at the same plain indices; or None."""
    idx = definition.index
    letters: dict[str, str] = {}
    for name in idx.free:
        letters[name] = _letter(name, letters)
    terms = _index_terms(idx.body, {}, letters, affine=True)
    if terms is None:
        return None
    terms = [t for t in terms if any(_ref_name(r) == v for r in t[2])]
    free_dims = {name: definition.shape[k] for k, name in enumerate(idx.free)}
    mine_indices: tuple[str, ...] | None = None
    texts: list[tuple[int, str]] = []
    for sign, scalars, refs, bound in terms:
        mine = [r for r in refs if _ref_name(r) == v]
        if len(mine) != 1 or mine[0][0] == "@" or not mine[0][1]:
            return None
        if mine_indices is None:
            mine_indices = mine[0][1]
        elif mine[0][1] != mine_indices:
            return None
        ranges = {**free_dims, **{i: Dim.of(dim) for i, dim in bound.items()}}
        if any(ranges.get(i) != d for i, d in zip(mine_indices, shape)):  # v's axes, each read whole
            return None
        factors = [f"grad_{definition.name}[{', '.join(idx.free)}]" if idx.free else f"grad_{definition.name}"]
        factors += [_entry_text(r, list(idx.free) + list(bound)) for r in refs if r is not mine[0]]
        for sc in scalars:
            if isinstance(sc, Const):
                factors.insert(0, num_text(sc.value) if sc.value >= 0 else f"({num_text(sc.value)})")
            elif isinstance(sc, DimSize):
                factors.insert(0, sc.dim)
            else:
                return None
        summed = []
        for i in list(idx.free) + list(bound):
            if i in mine_indices or i in summed:
                continue
            dim = ranges[i]
            if not (dim.const == 0 and len(dim.terms) == 1 and dim.terms[0][1] == 1 and "*" not in dim.terms[0][0]):
                return None  # `for i in D` takes one dim name
            summed.append(i)
        body = " * ".join(factors)
        if summed:
            clauses = " ".join(f"for {i} in {ranges[i].terms[0][0]}" for i in summed)
            body = f"sum({body} {clauses})"
        texts.append((sign, body))
    if not texts or mine_indices is None:
        return None
    out = ("-" if texts[0][0] < 0 else "") + texts[0][1]
    for sign, body in texts[1:]:
        out += f" {'-' if sign < 0 else '+'} {body}"
    return f"grad_{v}[{', '.join(mine_indices)}]", out


def _factors(node: Node) -> list[Node] | None:
    """The factors of a product of entries (no sums), or None."""
    if _is(node, "mul"):
        a, b = _factors(node.args[0]), _factors(node.args[1])
        return None if a is None or b is None else a + b
    if isinstance(node, (IndexRef, Const)):
        return [node]
    return None


def _root_op(node: Node) -> str:
    if isinstance(node, Call):
        return node.params["fn"] if node.op == "elementwise" else node.op
    return "identity"


def local_note(cx: Context, expr: Node, v: str) -> str:
    """The structure of the local Jacobian ∂(expr)/∂v, in the words ``explain`` uses."""
    from .explain import jacobian_note

    notes: list[str] = []
    for node in _path_ops(expr, v):
        shapes = [cx.shape(a) for a in node.args]
        position = next(k for k, a in enumerate(node.args) if v in names_used(a))
        note = jacobian_note(node.op, node.params, position, shapes)
        if note and note not in notes:
            notes.append(note)
    plain = [n for n in notes if not n.startswith("the identity")]
    return "; ".join(plain or notes)  # "+ b" says nothing beside the op that acts


def _path_ops(expr: Node, v: str) -> list[Call]:
    out: list[Call] = []
    stack = [expr]
    while stack:
        n = stack.pop()
        if isinstance(n, Call) and v in names_used(n):
            out.append(n)
            stack.extend(a for a in n.args if v in names_used(a))
    return out


# ---------------------------------------------------------------------------
# rendering


def render_text(result: DeriveResult, console, steps: bool = True) -> None:
    from rich.markup import escape

    console.print(f"[bold]{escape(result.title or result.path)}[/bold]  ({escape(result.path)})")
    if result.error:
        console.print(f"[red]error:[/red] {escape(result.error)}")
        return
    for c in result.claims:
        colour = "green" if c.ok else "red"
        console.print(f"\n  [bold]{c.name}[/bold] = {escape(c.expr)}   [{colour}]{c.verdict}[/{colour}]")
        if steps:
            for s in c.steps:
                where = "E" if s.through == "E" else f"grad_{s.through}"
                if s.definition:
                    console.print(f"    through {escape(s.definition)}  (given {where})")
                console.print(f"      local Jacobian{' ' + escape(s.jacobian) if s.jacobian else ''}: {escape(s.note)}")
                if s.entry:
                    console.print(f"      per entry:  {escape(s.entry)}")
                if s.raw and s.raw != s.simplified:
                    console.print(f"      chain:      {escape(s.raw)}")
                console.print(f"      textbook:   {escape(s.simplified)}   {c.shape if len(c.steps) == 1 else ''}")
        if not c.ok:
            console.print(f"    [red]a derived claim that is not proved is a bug of derive:[/red] {escape(c.message)}")
    for t, r in result.not_derived.items():
        console.print(f"\n  [yellow]grad_{t}: not derived[/yellow] ({escape(r)})")


def render_markdown(result: DeriveResult) -> str:
    lines = [f"## {result.title or result.path}", ""]
    if result.error:
        return "\n".join(lines + [f"**error:** {result.error}", ""])
    lines += ["| claim | expression | verdict |", "|---|---|---|"]
    for c in result.claims:
        lines.append(f"| `{c.name}` | `{c.expr}` | {c.verdict} |")
    for c in result.claims:
        lines += ["", f"### `{c.name}` {c.shape}", ""]
        for s in c.steps:
            if s.definition:
                lines.append(f"- through `{s.definition}`: {s.jacobian}: {s.note}")
            else:
                lines.append(f"- {s.note}")
            if s.entry:
                lines.append(f"  - per entry: `{s.entry}`")
            if s.raw and s.raw != s.simplified:
                lines.append(f"  - chain: `{s.raw}`")
            lines.append(f"  - textbook: `{s.simplified}`")
    for t, r in result.not_derived.items():
        lines.append(f"\n- `grad_{t}`: not derived ({r})")
    return "\n".join(lines) + "\n"


def _tex_code(text: str) -> str:
    from .explain import _tex_text

    return "\\texttt{" + _tex_text(text) + "}"


def _tex(text: str) -> str:
    from .explain import _tex_text

    return _tex_text(text)


def render_latex(result: DeriveResult) -> str:
    """A standalone article, like ``explain --format latex`` (pdflatex-safe: its text helper)."""
    lines = [r"\documentclass[11pt]{article}", r"\begin{document}",
             f"\\section*{{{_tex(result.title or result.path)}}}", _tex_code(result.path), ""]
    if result.error:
        return "\n".join(lines + [f"Error: {_tex(result.error)}", r"\end{document}", ""])
    lines.append("\\begin{itemize}")
    for c in result.claims:
        lines.append(f"  \\item {_tex_code(c.name)} $=$ {_tex_code(c.expr)} ({_tex(c.verdict)})")
        if c.steps:
            lines.append("  \\begin{itemize}")
            for s in c.steps:
                lead = f"through {_tex_code(s.definition)}, {_tex(s.jacobian)}: " if s.definition else ""
                lines.append(f"    \\item {lead}{_tex(s.note)}")
                if s.entry:
                    lines.append(f"    \\item per entry: {_tex_code(s.entry)}")
                if s.raw and s.raw != s.simplified:
                    lines.append(f"    \\item chain: {_tex_code(s.raw)}")
            lines.append("  \\end{itemize}")
    for t, r in result.not_derived.items():
        lines.append(f"  \\item {_tex_code('grad_' + t)}: not derived ({_tex(r)})")
    lines += ["\\end{itemize}", r"\end{document}"]
    return "\n".join(lines) + "\n"


# -- the API's name -----------------------------------------------------------------------------
# ``backpropcheck.derive`` is this submodule, and SPEC §9 wants ``bpc.derive(...)`` to be the API
# function; as with ``explain``, the module is callable: calling it is :func:`derive`.


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> DeriveResult:
        return derive(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
