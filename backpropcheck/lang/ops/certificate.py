"""Each op's rules in the all-shapes certificate's abstract interpretation (``engines/scope.py``
walks the IR with them; ``docs/proof-scope.md`` states the argument).

An :class:`AV` is what the certificate knows of one array expression, per dim name: how many
bound index variables a term holds, how often a dim is used as a number, whether a denominator
is a monomial. For each op, ``scope_value(cx, node, args)`` gives the result's AV from the
operands' and ``scope_adjoint(cx, node, g, k, avs)`` the AV of operand k's share of the gradient
``g`` (None: no gradient flows there). Either may raise :class:`Outside`; an op without them is
outside the class, so a claim through it keeps ``sampled shapes`` — never a wrong verdict.
``cx`` is the interpreter: ``cx.functions`` (generic functions), ``cx.local_args(node, args)``,
``cx.whole_axis_operand(node)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..dims import Dim, Shape
from . import arith, elementwise, indexing, linalg, reduce, structure  # noqa: F401 - every op registered first
from .core import OPS, ShapeMismatch, broadcast
from .elementwise import ELEMENTWISE


class Outside(Exception):
    """The expression is outside the certificate's class; the message says why."""


# ---------------------------------------------------------------------------
# the abstract value of an array expression


@dataclass(frozen=True)
class AV:
    """What the certificate needs to know of one array-valued expression, per dim name.

    ``bound[d]``: the most bound index variables over d in one term of an entry (sums that
    matmul, reductions, traces and einsum contractions introduce, and the sums of the chain
    rule); ``expl[d]``: occurrences of d used as a number (``B``, the ``1/n`` of ``mean``), with
    multiplicity; ``monomial``: a product of atoms and generators (a denominator of this is a
    Laurent monomial); ``den``: axes along which a non-monomial denominator varies;
    ``inner``: a whole-axis sum hides inside a generator (``log Σ exp``); ``atoms``: reads a tensor.
    """

    shape: Shape
    bound: Mapping[str, int] = field(default_factory=dict)
    expl: Mapping[str, int] = field(default_factory=dict)
    monomial: bool = True
    den: frozenset = frozenset()
    inner: bool = False
    atoms: bool = False
    special: bool = False  # eye/zeros: may not divide

    @property
    def local(self) -> bool:
        return not any(self.bound.values()) and not any(self.expl.values()) and not self.inner


def add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}


def max_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out.get(k, 0), v)
    return {k: v for k, v in out.items() if v}


def _scale(a: Mapping[str, int], k: int) -> dict[str, int]:
    return {n: v * k for n, v in a.items() if v * k}


def named(dim: Dim) -> str | None:
    """The dim name of an axis; None for a literal size; outside the class for ``T + K - 1`` and for a product
    ``n*m`` (the grid sizes each dim, not the product: its index patterns and degree would go unpinned)."""
    if not dim.terms:
        return None
    if len(dim.terms) == 1 and dim.terms[0][1] == 1 and dim.const == 0 and "*" not in dim.terms[0][0]:
        return dim.terms[0][0]
    raise Outside(f"the axis {dim} is an affine or product expression of dims")


def _named_axes(shape: Shape) -> frozenset:
    return frozenset(k for k, d in enumerate(shape) if named(d) is not None)


def atom(shape: Shape) -> AV:
    return AV(tuple(shape), atoms=True)


def _align(av: AV, shape: Shape) -> frozenset:
    """``av``'s denominator axes as axes of the broadcast result ``shape`` (size-1 axes drop)."""
    off = len(shape) - len(av.shape)
    return frozenset(k + off for k in av.den if not av.shape[k].is_one)


def _elementwise(avs: list[AV], shape: Shape, mode: str) -> AV:
    """``+``-like (mode "add": bounds max) or ``*``-like (mode "mul": bounds add)."""
    bound: dict[str, int] = {}
    expl: dict[str, int] = {}
    den: frozenset = frozenset()
    for av in avs:
        bound = add_counts(bound, av.bound) if mode == "mul" else max_counts(bound, av.bound)
        expl = add_counts(expl, av.expl)
        den |= _align(av, shape)
    monomial = all(a.monomial for a in avs) if mode == "mul" else False
    return AV(tuple(shape), bound, expl, monomial, den, any(a.inner for a in avs), any(a.atoms for a in avs))


def _contract(operands: list[tuple[AV, str]], out: str, letters: Mapping[str, Dim]) -> AV:
    """An einsum over abstract values: every letter not in ``out`` is a bound index variable."""
    summed = set("".join(s for _, s in operands)) - set(out)
    for av, sub in operands:
        for k in av.den:
            if sub[k] in summed and named(av.shape[k]) is not None:
                raise Outside("a sum runs over terms whose (non-monomial) denominators differ")
    bound: dict[str, int] = {}
    expl: dict[str, int] = {}
    for av, _ in operands:
        bound = add_counts(bound, av.bound)
        expl = add_counts(expl, av.expl)
    for letter in summed:
        name = named(letters[letter])
        if name is not None:
            bound = add_counts(bound, {name: 1})
    den = frozenset(out.index(sub[k]) for av, sub in operands for k in av.den if sub[k] in out
                    and named(av.shape[k]) is not None)
    shape = tuple(letters[c] for c in out)
    monomial = all(av.monomial for av, _ in operands) and not any(named(letters[c]) for c in summed)
    return AV(shape, bound, expl, monomial, den, any(av.inner for av, _ in operands),
              any(av.atoms for av, _ in operands))


def _letters(*shapes_subs: tuple[Shape, str]) -> dict[str, Dim]:
    out: dict[str, Dim] = {}
    for shape, sub in shapes_subs:
        for c, d in zip(sub, shape):
            out.setdefault(c, d)
    return out


def _matmul_subs(a: Shape, b: Shape) -> tuple[str, str, str]:
    if not a or not b or len(a) > 2 or len(b) > 2:
        raise Outside("a matrix product of arrays of rank above 2")
    sa = "ik" if len(a) == 2 else "k"
    sb = "kj" if len(b) == 2 else "k"
    out = ("i" if len(a) == 2 else "") + ("j" if len(b) == 2 else "")
    return sa, sb, out


def _unbroadcast(g: AV, shape: Shape) -> AV:
    """The adjoint of a broadcast: sum ``g`` over the axes that ``shape`` stretched."""
    rank, off = len(g.shape), len(g.shape) - len(shape)
    subs = "".join(chr(97 + k) for k in range(rank))
    kept = [k for k in range(rank) if k >= off and not (shape[k - off].is_one and not g.shape[k].is_one)]
    s = _contract([(g, subs)], "".join(subs[k] for k in kept), _letters((g.shape, subs)))
    den = frozenset(kept[j] - off for j in s.den)
    return AV(tuple(shape), s.bound, s.expl, s.monomial, den, s.inner, s.atoms)


def _expand_map(items: tuple, rank: int) -> list[int | None]:
    """For ``X[:, None]``: the operand axis behind each result axis (None for a new axis)."""
    src: list[int | None] = []
    k = 0
    for it in items:
        if it == ":":
            src.append(k)
            k += 1
        else:
            src.append(None)
    return src + list(range(k, rank))


def reduced_axes(params: Mapping[str, Any], rank: int) -> list[int]:
    axis = params.get("axis")
    if axis is None:
        return list(range(rank))
    if isinstance(axis, int):
        return [axis % rank]
    if isinstance(axis, tuple) and all(isinstance(a, int) for a in axis):
        return sorted({a % rank for a in axis})
    raise Outside("a reduction over an axis given in an unknown form")


def _broadcast(args: list[AV]) -> Shape:
    try:
        return broadcast(*[a.shape for a in args])
    except ShapeMismatch as exc:
        raise Outside(str(exc)) from None


def divide(a: AV, b: AV) -> AV:
    if b.special:
        raise Outside("a division by eye or zeros")
    if b.atoms and not b.local:
        raise Outside("a division by an expression that holds a sum or a dim used as a number")
    if not b.atoms and b.shape:
        raise Outside("a division by a constant array")
    r = _elementwise([a, b], _broadcast([a, b]), "mul")
    den = r.den
    if b.atoms and not b.monomial:
        den |= _align(AV(b.shape, den=_named_axes(b.shape)), r.shape)
    return AV(r.shape, r.bound, _cleared(r.expl, b), r.monomial and b.monomial, den, r.inner, r.atoms)


def _cleared(expl: Mapping[str, int], den: AV) -> dict[str, int]:
    """``expl`` of a quotient by ``den``, plus the degree of a denominator that is a sum of dims (``n + 1``,
    ``sum(ones(n)) + 1``, ``trace(eye(n))``) whose sums count only as bound index variables: clearing it
    multiplies every other term of a sum by it, so its degree adds up across the terms of a sum
    (``12/(n + 1) - 20/(n + 2) + 1`` is a degree-2 numerator, zero at n = 2 and 3 only), as ``expl`` does."""
    if den.atoms or den.monomial:
        return dict(expl)
    return add_counts(expl, den.bound)


def power(a: AV, exponent: float, text: str) -> AV:
    k = float(exponent)
    if k == int(k) and 0 <= k <= 8:
        k = int(k)
        return AV(a.shape, _scale(a.bound, k), _scale(a.expl, k), a.monomial, a.den if k else frozenset(),
                  a.inner, a.atoms and k > 0, a.special)
    if not a.atoms:  # a number: a rational function of the dims only for integer exponents
        if k != int(k) and (any(a.expl.values()) or any(a.bound.values())):
            raise Outside("a non-integer power of a dim or of a sum over one (sqrt(n - 2) is no rational function)")
        if abs(k) > 8:
            raise Outside("a power of a dim beyond degree 8")
        m = abs(int(k))
        expl = _scale(a.expl, max(1, abs(math.ceil(abs(k)))))
        if k < 0:  # a denominator, m times over
            expl = _cleared(expl, AV(a.shape, _scale(a.bound, m), monomial=a.monomial))
        return AV(a.shape, _scale(a.bound, m), expl, True)
    if not a.local:
        raise Outside("a negative or fractional power of an expression that holds a sum")
    den = a.den | (_named_axes(a.shape) if not a.monomial else frozenset())
    return AV(a.shape, {}, {}, a.monomial, den, False, True)


def _softmax_like(a: AV, axes: list[int], den: bool) -> AV:
    """``exp(a)/Σ_axis exp(a)``: a softmax entry (a generator), or with ``den`` its quotient form,
    whose denominator varies with the slice and, cleared, is one more sum along the axis."""
    if not den:
        return AV(a.shape, atoms=True)
    bound: dict[str, int] = {}
    for k in axes:
        name = named(a.shape[k])
        if name is not None:
            bound = add_counts(bound, {name: 1})
    others = frozenset(k for k in _named_axes(a.shape) if k not in axes)
    return AV(a.shape, bound, {}, False, others, True, True)


def _spread(r: AV, shape: Shape, axes: list[int]) -> AV:
    kept = [k for k in range(len(shape)) if k not in axes]
    return AV(tuple(shape), r.bound, r.expl, r.monomial, frozenset(kept[j] for j in r.den), r.inner, r.atoms)


def sum_adjoints(a: AV | None, b: AV) -> AV:
    if a is None:
        return b
    return _elementwise([a, b], a.shape if len(a.shape) >= len(b.shape) else b.shape, "add")


# ---------------------------------------------------------------------------
# forward rules: the result's AV from the operands'

ValueRule = Callable[[Any, Any, list[AV]], AV]
AdjointRule = Callable[[Any, Any, AV, int, list[AV]], "AV | None"]


def _v_add(cx, node, args: list[AV]) -> AV:
    return _elementwise(args, _broadcast(args), "add")


def _v_mul(cx, node, args: list[AV]) -> AV:
    return _elementwise(args, _broadcast(args), "mul")


def _v_matmul(cx, node, args: list[AV]) -> AV:
    a, b = args
    if not a.shape or not b.shape:
        raise Outside("a product with a scalar written as @")
    sa, sb, out = _matmul_subs(a.shape, b.shape)
    return _contract([(a, sa), (b, sb)], out, _letters((a.shape, sa), (b.shape, sb)))


def _einsum_subs(spec: str, avs: list[AV]) -> tuple[list[str], str]:
    lhs, out = spec.replace(" ", "").split("->", 1)
    subs = lhs.split(",")
    if len(subs) != len(avs) or any(len(s) != len(a.shape) for s, a in zip(subs, avs)):
        raise Outside("an einsum the certificate cannot read")
    return subs, out


def _v_einsum(cx, node, args: list[AV]) -> AV:
    subs, out = _einsum_subs(node.params["spec"], args)
    return _contract(list(zip(args, subs)), out, _letters(*((a.shape, s) for a, s in zip(args, subs))))


def _v_T(cx, node, args: list[AV]) -> AV:
    a = args[0]
    r = len(a.shape)
    return AV(tuple(reversed(a.shape)), a.bound, a.expl, a.monomial, frozenset(r - 1 - k for k in a.den),
              a.inner, a.atoms, a.special)


def _v_expand(cx, node, args: list[AV]) -> AV:
    a = args[0]
    src = _expand_map(node.params["items"], len(a.shape))
    shape = tuple(a.shape[j] if j is not None else Dim.lit(1) for j in src)
    return AV(shape, a.bound, a.expl, a.monomial, frozenset(k for k, j in enumerate(src) if j in a.den),
              a.inner, a.atoms, a.special)


def _reduced_shape(shape: Shape, axes: list[int], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(Dim.lit(1) if k in axes else d for k, d in enumerate(shape))
    return tuple(d for k, d in enumerate(shape) if k not in axes)


def _v_reduce(mean: bool) -> ValueRule:
    def rule(cx, node, args: list[AV]) -> AV:
        a, p = args[0], node.params
        axes = reduced_axes(p, len(a.shape))
        subs = "".join(chr(97 + k) for k in range(len(a.shape)))
        out = "".join(c for k, c in enumerate(subs) if k not in axes)
        r = _contract([(a, subs)], out, _letters((a.shape, subs)))
        if mean:
            extra: dict[str, int] = {}
            for k in axes:
                name = named(a.shape[k])
                if name is not None:
                    extra = add_counts(extra, {name: 1})
            r = AV(r.shape, r.bound, add_counts(r.expl, extra), False, r.den, r.inner, r.atoms)
        if p.get("keepdims"):
            kept = [k for k in range(len(a.shape)) if k not in axes]
            r = AV(_reduced_shape(a.shape, axes, True), r.bound, r.expl, r.monomial, frozenset(kept[j] for j in r.den),
                   r.inner, r.atoms)
        return r

    return rule


def _v_trace(cx, node, args: list[AV]) -> AV:
    a = args[0]
    return _contract([(a, "ii")], "", _letters((a.shape, "ii")))


def _v_diag(cx, node, args: list[AV]) -> AV:
    a = args[0]
    if len(a.shape) == 1:
        return AV((a.shape[0], a.shape[0]), a.bound, a.expl, a.monomial,
                  frozenset({0, 1}) if a.den else frozenset(), a.inner, a.atoms, True)
    return _contract([(a, "ii")], "i", _letters((a.shape, "ii")))


def _v_const(square: bool, special: bool) -> ValueRule:
    """``ones``/``zeros``/``eye``: no atoms; eye and zeros may not divide."""
    def rule(cx, node, args: list[AV]) -> AV:
        shape = tuple(Dim.of(x) if isinstance(x, str) else Dim.lit(x) for x in node.params["shape"])
        shape = shape * 2 if square else shape
        for dim in shape:
            named(dim)
        return AV(shape, special=special)

    return rule


def _v_compare(cx, node, args: list[AV]) -> AV:
    cx.local_args(node, args)
    return AV(_broadcast(args), atoms=True)


def _v_where(cx, node, args: list[AV]) -> AV:
    cx.local_args(node, args[:1])
    return _elementwise(args, _broadcast(args), "add")


def _v_minmax(cx, node, args: list[AV]) -> AV:
    cx.local_args(node, args)
    return AV(_broadcast(args), monomial=False, atoms=True)


def _v_elementwise(cx, node, args: list[AV]) -> AV:
    a = args[0]
    cx.local_args(node, args)
    fn, prime = node.params["fn"], node.params["prime"]
    e = ELEMENTWISE.get(fn)
    if fn in cx.functions or (e is not None and (e.poly_prime_value if prime else e.poly_value)):
        return AV(a.shape, monomial=True, atoms=True)
    if e is not None and e.monomial_den and not prime and a.monomial:
        return AV(a.shape, monomial=True, atoms=True)  # 1/√a of a monomial a: a monomial
    return AV(a.shape, monomial=False, den=_named_axes(a.shape), atoms=True)


def _v_softmax(cx, node, args: list[AV]) -> AV:
    cx.whole_axis_operand(node)
    return AV(args[0].shape, monomial=True, atoms=True)


def _v_log_softmax(cx, node, args: list[AV]) -> AV:
    cx.whole_axis_operand(node)
    return AV(args[0].shape, monomial=False, inner=True, atoms=True)


def _v_logsumexp(cx, node, args: list[AV]) -> AV:
    cx.whole_axis_operand(node)
    a = args[0]
    shape = _reduced_shape(a.shape, reduced_axes(node.params, len(a.shape)), bool(node.params.get("keepdims")))
    return AV(shape, monomial=False, inner=True, atoms=True)


# ---------------------------------------------------------------------------
# adjoint rules: operand k's share ``g · ∂node/∂operand_k``, summed over broadcasts


def _a_add(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    return _unbroadcast(g, avs[k].shape)


def _a_neg(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    return g


def _a_mul(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    return _unbroadcast(_elementwise([g, avs[1 - k]], g.shape, "mul"), avs[k].shape)


def _a_div(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    num, den = avs
    if k == 0:
        return _unbroadcast(divide(g, den), avs[k].shape)
    return _unbroadcast(divide(_elementwise([g, num], g.shape, "mul"),
                               _elementwise([den, den], den.shape, "mul")), avs[k].shape)


def _a_pow(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    a, e = avs[k], float(node.params["exponent"])
    local = power(a, e - 1, "") if e != 1 else AV(a.shape)
    return _elementwise([g, local], g.shape, "mul")


def _a_contract(subs_of: Callable[[Any, list[AV]], tuple[list[str], str]]) -> AdjointRule:
    """A contraction (``@``, ``outer``, ``einsum``): g contracted with every other operand."""
    def rule(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
        subs, out = subs_of(node, avs)
        letters = _letters((g.shape, out), *((av.shape, s) for av, s in zip(avs, subs)))
        others = [(g, out)] + [(avs[j], subs[j]) for j in range(len(avs)) if j != k]
        return _contract(others, subs[k], letters)

    return rule


def _matmul_spec(node, avs: list[AV]) -> tuple[list[str], str]:
    sa, sb, out = _matmul_subs(avs[0].shape, avs[1].shape)
    return [sa, sb], out


def _a_T(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    return AV(tuple(reversed(g.shape)), g.bound, g.expl, g.monomial,
              frozenset(len(g.shape) - 1 - j for j in g.den), g.inner, g.atoms)


def _a_expand(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    a = avs[k]
    src = _expand_map(node.params["items"], len(a.shape))
    den = frozenset(s for j in g.den if (s := src[j]) is not None)
    return AV(a.shape, g.bound, g.expl, g.monomial, den, g.inner, g.atoms)


def _a_reduce(kind: str) -> AdjointRule:
    """``sum``, ``mean`` (a 1/n more) and ``logsumexp`` (· exp(a) / Σ exp(a): clearing the
    denominator adds its own sum): g spread back over the reduced axes."""
    def rule(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
        a, p = avs[k], node.params
        axes = reduced_axes(p, len(a.shape))
        kept = [j for j in range(len(a.shape)) if j not in axes]
        gden = frozenset(g.den) if p.get("keepdims") else frozenset(kept[j] for j in g.den)
        expl = dict(g.expl)
        if kind == "mean":
            for j in axes:
                name = named(a.shape[j])
                if name is not None:
                    expl = add_counts(expl, {name: 1})
        spread = AV(a.shape, g.bound, expl, g.monomial, gden, g.inner, g.atoms)
        if kind == "logsumexp":
            spread = _elementwise([spread, _softmax_like(a, axes, den=True)], a.shape, "mul")
        return spread

    return rule


def _a_trace(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    return AV(avs[k].shape, g.bound, g.expl, g.monomial, frozenset(), g.inner, g.atoms)


def _a_diag(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    a = avs[k]
    den = (frozenset({0}) if len(a.shape) == 1 else frozenset({0, 1})) if g.den else frozenset()
    return AV(a.shape, g.bound, g.expl, g.monomial, den, g.inner, g.atoms)


def _a_masked(cx, node, g: AV, k: int, avs: list[AV]) -> AV | None:
    """``where`` (never into its mask), ``maximum``, ``minimum``: g times a 0/1 mask."""
    if node.op == "where" and k == 0:
        return None
    mask = AV(_broadcast(avs), atoms=True)
    return _unbroadcast(_elementwise([g, mask], g.shape, "mul"), avs[k].shape)


def _a_elementwise(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
    a = avs[k]
    fn, prime = node.params["fn"], node.params["prime"]
    e = ELEMENTWISE.get(fn)
    safe = fn in cx.functions or (e is not None and (e.poly_prime_derivative if prime else e.poly_derivative))
    if safe or (not prime and e is not None and e.monomial_den and a.monomial):
        local = AV(a.shape, atoms=True)
    else:
        local = AV(a.shape, monomial=False, den=_named_axes(a.shape), atoms=True)
    return _elementwise([g, local], g.shape, "mul")


def _a_softmax(log: bool) -> AdjointRule:
    """softmax: ``P * (g - Σ_axis g * P)``; log_softmax: ``g - exp(a)/S * Σ_axis g``."""
    def rule(cx, node, g: AV, k: int, avs: list[AV]) -> AV:
        a = avs[k]
        axes = reduced_axes(node.params, len(a.shape))
        subs = "".join(chr(97 + j) for j in range(len(a.shape)))
        out = "".join(c for j, c in enumerate(subs) if j not in axes)
        probs = _softmax_like(a, axes, den=log)
        if log:
            summed = _contract([(g, subs)], out, _letters((a.shape, subs)))
        else:
            summed = _contract([(_elementwise([g, probs], g.shape, "mul"), subs)], out, _letters((a.shape, subs)))
        back = _spread(summed, a.shape, axes)
        return _elementwise([g, _elementwise([probs, back], a.shape, "mul")], a.shape, "add")

    return rule


def _none(cx, node, g: AV, k: int, avs: list[AV]) -> None:
    return None  # never differentiated through


# op name -> (value rule, adjoint rule, same_site: reads every operand at the result's own index tuple)
RULES: dict[str, tuple[ValueRule, AdjointRule, bool]] = {
    "add": (_v_add, _a_add, True), "sub": (_v_add, _a_add, True), "mul": (_v_mul, _a_mul, True),
    "div": (lambda cx, node, args: divide(args[0], args[1]), _a_div, True),
    "neg": (lambda cx, node, args: args[0], _a_neg, True),
    "pow": (lambda cx, node, args: power(args[0], node.params["exponent"], node.params.get("text", "")), _a_pow,
            True),
    "matmul": (_v_matmul, _a_contract(_matmul_spec), False), "dot": (_v_matmul, _a_contract(_matmul_spec), False),
    "outer": (lambda cx, node, args: _contract([(args[0], "i"), (args[1], "j")], "ij",
                                               _letters((args[0].shape, "i"), (args[1].shape, "j"))),
              _a_contract(lambda node, avs: (["i", "j"], "ij")), False),
    "einsum": (_v_einsum, _a_contract(lambda node, avs: _einsum_subs(node.params["spec"], avs)), False),
    "T": (_v_T, _a_T, False), "expand": (_v_expand, _a_expand, False),
    "sum": (_v_reduce(False), _a_reduce("sum"), False), "mean": (_v_reduce(True), _a_reduce("mean"), False),
    "trace": (_v_trace, _a_trace, False), "diag": (_v_diag, _a_diag, False),
    "ones": (_v_const(False, False), _none, False), "zeros": (_v_const(False, True), _none, False),
    "eye": (_v_const(True, True), _none, False),
    "gt": (_v_compare, _none, True), "ge": (_v_compare, _none, True), "lt": (_v_compare, _none, True),
    "le": (_v_compare, _none, True),
    "where": (_v_where, _a_masked, True), "maximum": (_v_minmax, _a_masked, True),
    "minimum": (_v_minmax, _a_masked, True),
    "elementwise": (_v_elementwise, _a_elementwise, True),
    "softmax": (_v_softmax, _a_softmax(False), False), "log_softmax": (_v_log_softmax, _a_softmax(True), False),
    "logsumexp": (_v_logsumexp, _a_reduce("logsumexp"), False),
}

for _name, (_value, _adjoint, _same_site) in RULES.items():
    OPS[_name] = replace(OPS[_name], scope_value=_value, scope_adjoint=_adjoint, same_site=_same_site)
