"""The IR derive builds: constructors, structural keys, sizes, printing back to the expression
language, the shape context the adjoint templates see, and the backward walk over one expression."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

from ..lang.dims import Shape
from ..lang.ir import Call, Const, DimSize, IndexRef, IndexSum, Node, Var, names_used
from ..lang.ops import OPS, NoAdjoint, ShapeMismatch, num_text, spell
from ..lang.shapes import infer

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


def _bound(d: Any) -> str:
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


# the operators: the parser's syntax, not calls by name
_POSTFIX: dict[str, Callable[[Call], str]] = {
    "slice": _slice_text,
    "gather": lambda n: f"{_wrap(_text(n.args[0]), _ATOM)}[{to_text(n.args[1])}]",
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
    if op in _POSTFIX:
        return _POSTFIX[op](node), _ATOM
    return spell(op, [to_text(a) for a in args], p), _ATOM  # a call: as the op table spells it


# ---------------------------------------------------------------------------
# shapes, and the context the adjoint templates see


class Context:
    """Shapes of IR trees over the file's dim names, and broadcast-aware builders."""

    def __init__(self, env: dict[str, Shape], defs: dict[str, Node] | None = None, split_ties: bool = False):
        self.env = env
        self.defs = defs if defs is not None else {}  # forward variable -> its matrix-form definition (what rules may look through)
        # a max's gradient split evenly over the entries that reach it (exact where copies tie by construction),
        # rather than the plain mask (see derive's retry)
        self.split_ties = split_ties
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
        if not isinstance(node, Call):
            return infer(node, self.env)
        shapes = [self.shape(a) for a in node.args]
        try:
            return OPS[node.op].shape(*shapes, **node.params)
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
        from ..lang.ops import _shape_names

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

def _is_const(node: Node, value: float | None = None) -> bool:
    return isinstance(node, Const) and (value is None or node.value == value)


def _is(node: Node | None, op: str) -> TypeGuard[Call]:
    """``node`` is a call of ``op`` (for the type checker: a :class:`Call`)."""
    return isinstance(node, Call) and node.op == op
