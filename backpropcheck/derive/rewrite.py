"""Value-preserving rewrite rules that turn the adjoint templates' raw chain into textbook form."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ..lang.dims import Dim
from ..lang.ir import Call, Const, DimSize, Node, Var
from ..lang.ops import parse_einsum
from .tree import Context, _is, _is_const, call, const, key

# ---------------------------------------------------------------------------
# rewriting to textbook form


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
    terms = [t for t in _terms(n) if _is(t, "pad")]
    if len(terms) < 2 or len(terms) != len(_terms(n)):
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
    """``A @ x + B @ x`` → ``(A + B) @ x``; ``(a / s) * x`` → ``a * x / s`` for a scalar s;
    ``g * h - g * n`` → ``g * (h - n)`` (and a common right factor)."""
    a = n.args
    if n.op in ("add", "sub") and _is(a[0], "matmul") and _is(a[1], "matmul"):
        if key(a[0].args[1]) == key(a[1].args[1]) and cx.shape(a[0].args[0]) == cx.shape(a[1].args[0]):
            return call("matmul", call(n.op, a[0].args[0], a[1].args[0]), a[0].args[1])
    if n.op == "mul" and _is(a[0], "div") and _scalar(cx, a[0].args[1]) and not _scalar(cx, a[1]):
        return call("div", call("mul", a[0].args[0], a[1]), a[0].args[1])
    if n.op in ("add", "sub") and _is(a[0], "mul") and _is(a[1], "mul"):  # g * h - g * n → g * (h - n)
        (p, q), (r, t) = a[0].args, a[1].args
        candidate = None
        if key(p) == key(r):
            candidate = call("mul", p, call(n.op, q, t))
        elif key(q) == key(t):
            candidate = call("mul", call(n.op, p, r), q)
        if candidate is not None and cx.shape(candidate) == cx.shape(n):
            return candidate
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


def _centred(cx: Context, node: Node, axes: tuple[int, ...]) -> bool:
    """``X - mean(X, axis, keepdims=True)`` (the mean possibly a forward variable): its sum over
    ``axes`` is zero."""
    if not _is(node, "sub"):
        return False
    x, m = node.args
    if isinstance(m, Var):
        m = cx.defs.get(m.name, m)
    if not (_is(m, "mean") and m.params.get("keepdims") and key(m.args[0]) == key(x)):
        return False
    axis = m.params.get("axis")
    rank = len(cx.shape(x))
    mean_axes = {a % rank for a in (axis if isinstance(axis, tuple) else (axis,))} if axis is not None \
        else set(range(rank))
    return mean_axes == set(axes)


def _vanishes(cx: Context, node: Node) -> bool:
    """``sum(F * (X - mean(X, axis=k, keepdims=True)), axis=k)`` with every other factor constant
    along k (size one there): the deviations from a mean sum to zero."""
    if _is(node, "neg"):
        return _vanishes(cx, node.args[0])
    if not _is(node, "sum"):
        return False
    shape = cx.shape(node.args[0])
    axis = node.params.get("axis")
    if not shape:
        return False
    axes = tuple(sorted({a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,))})) \
        if axis is not None else tuple(range(len(shape)))
    mono = _monomial(cx, node.args[0])
    if mono is None:
        return False
    _, num, den = mono
    centred = [f for f in num if _centred(cx, f, axes)]
    if len(centred) != 1:
        return False

    def flat(f: Node) -> bool:  # constant along the summed axes once broadcast to the sum's operand
        s = cx.shape(f)
        lead = len(shape) - len(s)
        return lead >= 0 and all(k < lead or s[k - lead].is_one for k in axes)

    return all(flat(f) for f in num + den if f is not centred[0])


def r_centred(cx: Context, n: Call) -> Node | None:
    """``Y + sum(F * (X - mean(X, axis=k, keepdims=True)), axis=k)`` → ``Y`` for F constant along
    k: a layer norm's path through its variance adds nothing to the mean's gradient."""
    if n.op not in ("add", "sub"):
        return None
    a, b = n.args
    if _vanishes(cx, b) and cx.shape(a) == cx.shape(n):
        return a
    if _vanishes(cx, a) and cx.shape(b) == cx.shape(n):
        return b if n.op == "add" else call("neg", b)
    return None


_COMPARE = {"gt": (True, 0), "lt": (True, 1), "ge": (False, 0), "le": (False, 1)}


def _comparison(node: Node) -> tuple[bool, tuple, tuple] | None:
    """``(strict, larger side, smaller side)`` of a comparison: ``a > b`` and ``b < a`` read alike."""
    if not isinstance(node, Call) or node.op not in _COMPARE:
        return None
    strict, swap = _COMPARE[node.op]
    a, b = (node.args[1], node.args[0]) if swap else node.args
    return strict, key(a), key(b)


def _split_mask(cx: Context, node: Node) -> tuple[float, Node, list[Node], list[Node]] | None:
    """``c * mask * Π num / Π den``: (c, mask, num, den), with exactly one comparison among the factors."""
    mono = _monomial(cx, node)
    if mono is None:
        return None
    sign, num, den = mono
    coeff = float(sign)
    for f in [f for f in num if isinstance(f, Const)]:
        coeff *= f.value
    for f in [f for f in den if isinstance(f, Const)]:
        if f.value == 0:
            return None
        coeff /= f.value
    num = [f for f in num if not isinstance(f, Const)]
    den = [f for f in den if not isinstance(f, Const)]
    masks = [f for f in num if _comparison(f) is not None]
    if len(masks) != 1:
        return None
    return coeff, masks[0], [f for f in num if f is not masks[0]], den


def r_masks(cx: Context, n: Call) -> Node | None:
    """``g * (a > b) + c * (g * (a <= b))`` → ``g * where(a > b, 1, c)``: two complementary masks
    (a leaky ReLU's two slopes) are one choice."""
    if n.op != "add":
        return None
    left, right = _split_mask(cx, n.args[0]), _split_mask(cx, n.args[1])
    if left is None or right is None:
        return None
    (c1, m1, num1, den1), (c2, m2, num2, den2) = left, right
    p, q = _comparison(m1), _comparison(m2)
    if p is None or q is None or (p[0] == q[0] or (p[1], p[2]) != (q[2], q[1])):
        return None  # not complementary: a > b against b >= a
    if Counter(key(f) for f in num1) != Counter(key(f) for f in num2) \
            or Counter(key(f) for f in den1) != Counter(key(f) for f in den2):
        return None
    body: Node = call("where", m1, const(c1), const(c2))
    if num1:
        front = num1[0]
        for f in num1[1:]:
            front = call("mul", front, f)
        body = call("mul", front, body)
    for f in den1:
        body = call("div", body, f)
    return body if cx.shape(body) == cx.shape(n) else None


RULES: list[Callable[[Context, Call], Node | None]] = [
    r_diag,
    r_factor, r_mean,
    r_identity, r_constants, r_signs, r_transpose, r_ones, r_sums, r_einsum, r_scalars_out, r_leading_axis,
    r_blocks, r_centred, r_masks,
]


# ---------------------------------------------------------------------------
# the softmax / log_softmax + cross-entropy fold


def _monomial(cx: Context, node: Node, sign: int = 1) -> tuple[int, list[Node], list[Node]] | None:
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


