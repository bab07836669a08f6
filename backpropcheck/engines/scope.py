"""Proof scope: is a claim proved for *every* assignment of its dims, or only at the sampled ones?

A finite certificate (``docs/proof-scope.md`` states the argument in full). For a claim in the
class below, the difference ``claim − truth`` at one entry is, over the per-neuron *atoms*
(input entries, forward entries, gradient atoms ∇v, and generators such as ``f(z[j])`` or a
softmax entry, all treated as independent indeterminates), a sum of terms, each a product of
atoms indexed by a bounded number of index variables, with a coefficient that is a rational
function of the dims. Grouped by the pattern of equal and distinct index values (its *type*),
the coefficient of each type is a polynomial in every dim of a degree we bound from the
expressions. So: if every dim ``d`` is at least ``K_d`` (the most index variables over d in any
term: then every type occurs) and the difference is the zero rational function at ``deg_d + 1``
distinct sizes of every dim (a grid), it is zero at every size.

The zero test at the certificate's sizes must be *formal* — an identity in the atoms as
independent indeterminates (:meth:`SymbolicTruth.step_zero` and the exact test over the atoms),
never ``simplify`` or a substitution of the forward definitions, and without the simplex
substitution (which singles out the last entry of an axis).

This module decides membership of the class syntactically, over the IR, by an abstract
interpretation of every expression involved (the claim, its ``[backward]`` helpers and the
derivative of every definition the truth goes through, by abstract vector-Jacobian products).
Anything it does not recognise — an unknown op, index form, an affine dim, a dim inside a
non-polynomial function — is outside the class, and the claim keeps ``sampled shapes``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..lang.dims import Dim, Shape
from ..lang.ir import Call, Const, DimSize, IndexRef, IndexSum, Node, Var, names_used, walk
from ..model import Claim, Derivation
from ..results import SymbolicEvidence

ALL_SHAPES = "all-shapes"
SAMPLED = "sampled-shapes"

MAX_SIZE = 9  # the largest dim the certificate will build a per-neuron truth at
MAX_POINTS = 24  # the most dim assignments one certificate may need
# onehot (and binary, index) inputs are concrete draws in the per-neuron truth: an identity at one
# draw per size says nothing of every label, so they are outside the class
DOMAINS = ("real", "positive", "unit", "simplex")

# element-wise functions whose value is a polynomial in generators (no denominator besides
# monomials), and those whose derivative is, in the exact test's terms; prime = NAME_prime
_POLY_VALUE = {"exp", "tanh", "sin", "cos", "erf", "gelu", "abs", "square", "relu", "softplus", "log",
               "log1p", "sqrt", "logit"}
_POLY_PRIME_VALUE = {"exp", "tanh", "sin", "cos", "erf", "gelu", "abs", "square", "relu"}
_POLY_DERIVATIVE = {"exp", "tanh", "sin", "cos", "erf", "gelu", "abs", "square", "relu"}
_POLY_PRIME_DERIVATIVE = {"exp", "tanh", "sin", "cos", "square", "relu", "abs"}
_MONOMIAL_DEN = {"log", "sqrt", "rsqrt"}  # derivative's denominator is the argument itself
# ops that read every operand at the result's own index tuple (no transpose, new axis or diagonal)
_SAME_SITE = {"add", "sub", "mul", "div", "neg", "pow", "elementwise", "gt", "ge", "lt", "le", "where",
              "maximum", "minimum"}


class Outside(Exception):
    """The expression is outside the certificate's class; the message says why."""


class _Broken(Exception):
    """A truth the certificate needs failed to build before (for another claim of the file)."""


@dataclass(frozen=True)
class Scope:
    kind: str  # ALL_SHAPES | SAMPLED
    argument: str
    extra_sizes: tuple[dict[str, int], ...] = ()


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


def _add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}


def _max(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out.get(k, 0), v)
    return {k: v for k, v in out.items() if v}


def _scale(a: Mapping[str, int], k: int) -> dict[str, int]:
    return {n: v * k for n, v in a.items() if v * k}


def named(dim: Dim) -> str | None:
    """The dim name of an axis; None for a literal size; outside the class for ``T + K - 1``."""
    if not dim.terms:
        return None
    if len(dim.terms) == 1 and dim.terms[0][1] == 1 and dim.const == 0:
        return dim.terms[0][0]
    raise Outside(f"the axis {dim} is an affine or product expression of dims")


def _named_axes(shape: Shape) -> frozenset:
    return frozenset(k for k, d in enumerate(shape) if named(d) is not None)


def _atom(shape: Shape) -> AV:
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
        bound = _add(bound, av.bound) if mode == "mul" else _max(bound, av.bound)
        expl = _add(expl, av.expl)
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
        bound = _add(bound, av.bound)
        expl = _add(expl, av.expl)
    for letter in summed:
        name = named(letters[letter])
        if name is not None:
            bound = _add(bound, {name: 1})
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


def _reduced_axes(params: Mapping[str, Any], rank: int) -> list[int]:
    axis = params.get("axis")
    if axis is None:
        return list(range(rank))
    if isinstance(axis, int):
        return [axis % rank]
    if isinstance(axis, tuple) and all(isinstance(a, int) for a in axis):
        return sorted({a % rank for a in axis})
    raise Outside("a reduction over an axis given in an unknown form")


# ---------------------------------------------------------------------------
# forward values


class Interpreter:
    """Abstract values of expressions over the atoms of one derivation."""

    def __init__(self, functions: set[str], env: dict[str, AV], atoms: set[str] | None = None):
        self.functions = functions  # generic element-wise functions declared in [functions]
        self.env = env
        self.atoms = set(env) if atoms is None else atoms  # tensors whose entries are independent
        self.memo: dict[int, AV] = {}

    def value(self, node: Node) -> AV:
        found = self.memo.get(id(node))
        if found is None:
            found = self.memo[id(node)] = self._value(node)
        return found

    def _value(self, node: Node) -> AV:
        if isinstance(node, Var):
            if node.name not in self.env:
                raise Outside(f"`{node.name}` is read where the certificate cannot follow it")
            return self.env[node.name]
        if isinstance(node, Const):
            return AV(())
        if isinstance(node, DimSize):
            return AV((), expl={node.dim: 1})
        if not isinstance(node, Call):
            raise Outside(f"`{node.src or type(node).__name__}` is index form")
        args = [self.value(a) for a in node.args]
        op, p = node.op, node.params
        if op in ("add", "sub"):
            return _elementwise(args, _broadcast(args), "add")
        if op == "mul":
            return _elementwise(args, _broadcast(args), "mul")
        if op == "neg":
            return args[0]
        if op == "div":
            return divide(args[0], args[1])
        if op == "pow":
            return power(args[0], p["exponent"], p.get("text", ""))
        if op in ("matmul", "dot"):
            a, b = args
            if not a.shape or not b.shape:
                raise Outside("a product with a scalar written as @")
            sa, sb, out = _matmul_subs(a.shape, b.shape)
            return _contract([(a, sa), (b, sb)], out, _letters((a.shape, sa), (b.shape, sb)))
        if op == "outer":
            a, b = args
            return _contract([(a, "i"), (b, "j")], "ij", _letters((a.shape, "i"), (b.shape, "j")))
        if op == "einsum":
            return self._einsum(args, p["spec"])
        if op == "T":
            a = args[0]
            r = len(a.shape)
            return AV(tuple(reversed(a.shape)), a.bound, a.expl, a.monomial, frozenset(r - 1 - k for k in a.den),
                      a.inner, a.atoms, a.special)
        if op == "expand":
            a = args[0]
            src = _expand_map(p["items"], len(a.shape))
            shape = tuple(a.shape[j] if j is not None else Dim.lit(1) for j in src)
            return AV(shape, a.bound, a.expl, a.monomial, frozenset(k for k, j in enumerate(src) if j in a.den),
                      a.inner, a.atoms, a.special)
        if op in ("sum", "mean"):
            a = args[0]
            axes = _reduced_axes(p, len(a.shape))
            subs = "".join(chr(97 + k) for k in range(len(a.shape)))
            out = "".join(c for k, c in enumerate(subs) if k not in axes)
            r = _contract([(a, subs)], out, _letters((a.shape, subs)))
            if op == "mean":
                extra: dict[str, int] = {}
                for k in axes:
                    name = named(a.shape[k])
                    if name is not None:
                        extra = _add(extra, {name: 1})
                r = AV(r.shape, r.bound, _add(r.expl, extra), False, r.den, r.inner, r.atoms)
            if p.get("keepdims"):
                shape = tuple(Dim.lit(1) if k in axes else d for k, d in enumerate(a.shape))
                kept = [k for k in range(len(a.shape)) if k not in axes]
                r = AV(shape, r.bound, r.expl, r.monomial, frozenset(kept[j] for j in r.den), r.inner, r.atoms)
            return r
        if op == "trace":
            a = args[0]
            return _contract([(a, "ii")], "", _letters((a.shape, "ii")))
        if op == "diag":
            a = args[0]
            if len(a.shape) == 1:
                return AV((a.shape[0], a.shape[0]), a.bound, a.expl, a.monomial,
                          frozenset({0, 1}) if a.den else frozenset(), a.inner, a.atoms, True)
            return _contract([(a, "ii")], "i", _letters((a.shape, "ii")))
        if op in ("ones", "zeros", "eye"):
            shape = tuple(Dim.of(x) if isinstance(x, str) else Dim.lit(x) for x in p["shape"])
            shape = shape * 2 if op == "eye" else shape
            for dim in shape:
                named(dim)
            return AV(shape, special=op != "ones")
        if op in ("gt", "ge", "lt", "le"):
            self._local_args(node, args)
            return AV(_broadcast(args), atoms=True)
        if op == "where":
            self._local_args(node, args[:1])
            return _elementwise(args, _broadcast(args), "add")
        if op in ("maximum", "minimum"):
            self._local_args(node, args)
            return AV(_broadcast(args), monomial=False, atoms=True)
        if op == "elementwise":
            a = args[0]
            self._local_args(node, args)
            fn, prime = p["fn"], p["prime"]
            generic = fn in self.functions
            if generic or fn in (_POLY_PRIME_VALUE if prime else _POLY_VALUE):
                return AV(a.shape, monomial=True, atoms=True)
            if fn == "rsqrt" and not prime and a.monomial:
                return AV(a.shape, monomial=True, atoms=True)
            return AV(a.shape, monomial=False, den=_named_axes(a.shape), atoms=True)
        if op in ("softmax", "log_softmax", "logsumexp"):
            self._whole_axis_operand(node)
            a = args[0]
            if op == "softmax":
                return AV(a.shape, monomial=True, atoms=True)
            shape = a.shape
            if op == "logsumexp":
                axes = _reduced_axes(p, len(a.shape))
                if p.get("keepdims"):
                    shape = tuple(Dim.lit(1) if k in axes else dd for k, dd in enumerate(a.shape))
                else:
                    shape = tuple(dd for k, dd in enumerate(a.shape) if k not in axes)
            return AV(shape, monomial=False, inner=True, atoms=True)
        raise Outside(f"the op `{op}` is not in the certificate's class")

    def _einsum(self, args: list[AV], spec: str) -> AV:
        lhs, out = spec.replace(" ", "").split("->", 1)
        subs = lhs.split(",")
        if len(subs) != len(args) or any(len(s) != len(a.shape) for s, a in zip(subs, args)):
            raise Outside("an einsum the certificate cannot read")
        return _contract(list(zip(args, subs)), out, _letters(*((a.shape, s) for a, s in zip(args, subs))))

    def _local_args(self, node: Call, args: list[AV]) -> None:
        for a in args:
            if not a.local:
                raise Outside(f"the argument of `{node.src or node.op}` holds a sum or a dim used as a number")
        # A generator must never be a relabelling of its own negative (x[i] - x[j], X - X.T): the
        # engines write tanh(-u) = -tanh(u), Step(-u) = 1 - Step(u) with a sign chosen by the order
        # of the index values, which is not the same at every size. So a tensor read twice in an
        # argument must be read at the same index tuple: no transpose, broadcast axis or diagonal.
        seen: dict[str, int] = {}
        moves = False
        for arg in node.args:
            for n in walk(arg):
                if isinstance(n, Var):
                    seen[n.name] = seen.get(n.name, 0) + 1
                elif isinstance(n, Call) and n.op not in _SAME_SITE:
                    moves = True
        if moves and any(k > 1 for k in seen.values()):
            raise Outside(f"the argument of `{node.src or node.op}` reads one tensor at two index tuples")

    def _whole_axis_operand(self, node: Call) -> None:
        """A softmax-like function reads a whole axis: its operand must be an atom that really varies
        along that axis (a tensor with a named dim there), so no dim hides inside the generator."""
        (arg,) = node.args
        if not isinstance(arg, Var) or arg.name not in self.atoms or arg.name not in self.env:
            raise Outside(f"`{node.src or node.op}` is not applied to a named tensor")
        av = self.env[arg.name]
        if av.bound or av.expl or av.inner or av.den or not av.monomial:
            raise Outside(f"`{node.src or node.op}` is applied to a value that is not an atom")
        for k in _reduced_axes(node.params, len(av.shape)):
            if named(av.shape[k]) is None:
                raise Outside(f"`{node.src or node.op}` runs over an axis of literal size")


def _broadcast(args: list[AV]) -> Shape:
    from ..lang.ops import ShapeMismatch, broadcast

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
    return AV(r.shape, r.bound, r.expl, r.monomial and b.monomial, den, r.inner, r.atoms)


def power(a: AV, exponent: float, text: str) -> AV:
    k = float(exponent)
    if k == int(k) and 0 <= k <= 8:
        k = int(k)
        return AV(a.shape, _scale(a.bound, k), _scale(a.expl, k), a.monomial, a.den if k else frozenset(),
                  a.inner, a.atoms and k > 0, a.special)
    if not a.atoms:  # a number: a rational function of the dims only for integer exponents
        if k != int(k) and any(a.expl.values()):
            raise Outside("a non-integer power of a dim")
        if abs(k) > 8:
            raise Outside("a power of a dim beyond degree 8")
        return AV(a.shape, _scale(a.bound, abs(int(k))), _scale(a.expl, max(1, abs(math.ceil(abs(k))))), True)
    if not a.local:
        raise Outside("a negative or fractional power of an expression that holds a sum")
    den = a.den | (_named_axes(a.shape) if not a.monomial else frozenset())
    return AV(a.shape, {}, {}, a.monomial, den, False, True)


# ---------------------------------------------------------------------------
# abstract vector-Jacobian products: the terms of the per-neuron truth


def _scalar_atoms() -> AV:
    return AV((), atoms=True)


class Backprop:
    """Abstract adjoints: ``vjp(root, g)`` adds the abstract value of ``g · ∂root/∂x`` to ``out[x]``."""

    def __init__(self, interp: Interpreter):
        self.interp = interp

    def vjp(self, root: Node, g: AV, out: dict[str, AV], only: set[str] | None = None) -> None:
        stack = [(root, g)]
        while stack:
            node, g = stack.pop()
            if isinstance(node, Var):
                if only is None or node.name in only:
                    out[node.name] = _sum_adjoints(out.get(node.name), g)
                continue
            if not isinstance(node, Call):
                continue
            self.interp.value(node)  # the class's rules for the node itself (a dim inside tanh, …)
            if node.op in ("ones", "zeros", "eye", "gt", "ge", "lt", "le"):
                continue  # no operand, or never differentiated through
            for k, child in enumerate(node.args):
                if node.op == "where" and k == 0:
                    continue
                if only is None or _reads(child, only):
                    stack.append((child, self._adjoint(node, g, k)))

    def _adjoint(self, node: Call, g: AV, k: int) -> AV:
        """The abstract value of operand k's share ``g · ∂node/∂operand_k`` (summed over broadcasts)."""
        v = self.interp.value
        args = node.args
        avs = [v(a) for a in args]
        a = avs[k]
        op, p = node.op, node.params
        if op in ("add", "sub"):
            return _unbroadcast(g, a.shape)
        if op == "neg":
            return g
        if op == "mul":
            return _unbroadcast(_elementwise([g, avs[1 - k]], g.shape, "mul"), a.shape)
        if op == "div":
            num, den = avs
            if k == 0:
                return _unbroadcast(divide(g, den), a.shape)
            return _unbroadcast(divide(_elementwise([g, num], g.shape, "mul"),
                                       _elementwise([den, den], den.shape, "mul")), a.shape)
        if op == "pow":
            e = float(p["exponent"])
            local = power(a, e - 1, "") if e != 1 else AV(a.shape)
            return _elementwise([g, local], g.shape, "mul")
        if op in ("matmul", "dot", "outer", "einsum"):
            if op == "einsum":
                lhs, out = p["spec"].replace(" ", "").split("->", 1)
                subs = lhs.split(",")
            elif op == "outer":
                subs, out = ["i", "j"], "ij"
            else:
                sa, sb, out = _matmul_subs(avs[0].shape, avs[1].shape)
                subs = [sa, sb]
            letters = _letters((g.shape, out), *((av.shape, s) for av, s in zip(avs, subs)))
            others = [(g, out)] + [(avs[j], subs[j]) for j in range(len(args)) if j != k]
            return _contract(others, subs[k], letters)
        if op == "T":
            return AV(tuple(reversed(g.shape)), g.bound, g.expl, g.monomial,
                      frozenset(len(g.shape) - 1 - j for j in g.den), g.inner, g.atoms)
        if op == "expand":
            src = _expand_map(p["items"], len(a.shape))
            den = frozenset(src[j] for j in g.den if src[j] is not None)
            return AV(a.shape, g.bound, g.expl, g.monomial, den, g.inner, g.atoms)
        if op in ("sum", "mean", "logsumexp"):
            axes = _reduced_axes(p, len(a.shape))
            kept = [j for j in range(len(a.shape)) if j not in axes]
            gden = frozenset(g.den) if p.get("keepdims") else frozenset(kept[j] for j in g.den)
            expl = dict(g.expl)
            if op == "mean":
                for j in axes:
                    name = named(a.shape[j])
                    if name is not None:
                        expl = _add(expl, {name: 1})
            spread = AV(a.shape, g.bound, expl, g.monomial, gden, g.inner, g.atoms)
            if op == "logsumexp":  # · exp(a) / Σ exp(a): clearing the denominator adds its own sum
                spread = _elementwise([spread, _softmax_like(a, axes, den=True)], a.shape, "mul")
            return spread
        if op == "trace":
            return AV(a.shape, g.bound, g.expl, g.monomial, frozenset(), g.inner, g.atoms)
        if op == "diag":
            den = (frozenset({0}) if len(a.shape) == 1 else frozenset({0, 1})) if g.den else frozenset()
            return AV(a.shape, g.bound, g.expl, g.monomial, den, g.inner, g.atoms)
        if op in ("where", "maximum", "minimum"):
            mask = AV(_broadcast(avs), atoms=True)
            return _unbroadcast(_elementwise([g, mask], g.shape, "mul"), a.shape)
        if op == "elementwise":
            fn, prime = p["fn"], p["prime"]
            safe = fn in self.interp.functions or fn in (_POLY_PRIME_DERIVATIVE if prime else _POLY_DERIVATIVE)
            if safe or (not prime and fn in _MONOMIAL_DEN and a.monomial):
                local = AV(a.shape, atoms=True)
            else:
                local = AV(a.shape, monomial=False, den=_named_axes(a.shape), atoms=True)
            return _elementwise([g, local], g.shape, "mul")
        if op in ("softmax", "log_softmax"):
            axes = _reduced_axes(p, len(a.shape))
            subs = "".join(chr(97 + j) for j in range(len(a.shape)))
            out = "".join(c for j, c in enumerate(subs) if j not in axes)
            probs = _softmax_like(a, axes, den=op == "log_softmax")
            if op == "softmax":  # P * (g - Σ_axis g * P)
                summed = _contract([(_elementwise([g, probs], g.shape, "mul"), subs)], out,
                                   _letters((a.shape, subs)))
            else:  # g - exp(a)/S * Σ_axis g
                summed = _contract([(g, subs)], out, _letters((a.shape, subs)))
            back = _spread(summed, a.shape, axes)
            return _elementwise([g, _elementwise([probs, back], a.shape, "mul")], a.shape, "add")
        raise Outside(f"the op `{op}` is not in the certificate's class")


def _softmax_like(a: AV, axes: list[int], den: bool) -> AV:
    """``exp(a)/Σ_axis exp(a)``: a softmax entry (a generator), or with ``den`` its quotient form,
    whose denominator varies with the slice and, cleared, is one more sum along the axis."""
    if not den:
        return AV(a.shape, atoms=True)
    bound: dict[str, int] = {}
    for k in axes:
        name = named(a.shape[k])
        if name is not None:
            bound = _add(bound, {name: 1})
    others = frozenset(k for k in _named_axes(a.shape) if k not in axes)
    return AV(a.shape, bound, {}, False, others, True, True)


def _spread(r: AV, shape: Shape, axes: list[int]) -> AV:
    kept = [k for k in range(len(shape)) if k not in axes]
    return AV(tuple(shape), r.bound, r.expl, r.monomial, frozenset(kept[j] for j in r.den), r.inner, r.atoms)


def _sum_adjoints(a: AV | None, b: AV) -> AV:
    if a is None:
        return b
    return _elementwise([a, b], a.shape if len(a.shape) >= len(b.shape) else b.shape, "add")


def _reads(node: Node, names: set[str]) -> bool:
    return any(isinstance(n, Var) and n.name in names for n in walk(node))


# ---------------------------------------------------------------------------
# the plan: which dims, how large, how many sizes


@dataclass(frozen=True)
class Plan:
    route: str  # "step" | "full"
    k: dict[str, int]  # the pattern threshold per dim
    degree: dict[str, int]  # the degree of the dims' polynomial per dim

    def describe(self) -> str:
        parts = []
        for d in sorted(set(self.k) | set(self.degree)):
            parts.append(f"{d}: {self.k.get(d, 0)} index variables, degree {self.degree.get(d, 0)}")
        return "; ".join(parts) or "no dim enters the claim"


def plan(d: Derivation, claim: Claim, route: str) -> Plan:
    """Pattern thresholds and degrees for ``claim − truth``, or :class:`Outside`."""
    if claim.node is None:
        raise Outside("the claim did not parse")
    env: dict[str, AV] = {name: _atom(inp.shape) for name, inp in d.inputs.items()}
    for f in d.forward:
        env[f.name] = AV(tuple(f.shape), atoms=True)  # validated when it enters a term
    interp = Interpreter(set(d.functions), env, set(d.inputs) | {f.name for f in d.forward})
    back = Backprop(interp)
    target = claim.target
    forward_names = [f.name for f in d.forward]
    used_defs: list[Node] = []

    def definition(f) -> Node:
        if f.index is not None or f.node is None:
            raise Outside(f"`{f.name}` is defined in index form")
        used_defs.append(f.node)
        return f.node

    if route == "step":
        grads: dict[str, AV] = {}
        for name in forward_names:
            grads[f"grad_{name}"] = _atom(env[name].shape)  # the gradient atoms ∇v

        def step_of(x: str) -> AV:
            out: dict[str, AV] = {}
            for f in d.forward:
                if f.node is not None and x in _names(f.node) or f.index is not None and x in _names(f.root):
                    back.vjp(definition(f), _atom(f.shape), out, {x})
            if d.loss.expression is not None and x in _names(d.loss.expression):
                used_defs.append(d.loss.expression)
                back.vjp(d.loss.expression, AV(()), out, {x})
            if x in d.loss.upstream:
                out[x] = _sum_adjoints(out.get(x), _atom(env[x].shape))
            if x not in out:
                return AV(env[x].shape)
            return out[x]

        for name, inp in d.inputs.items():
            if not inp.constant and _claim_reads(d, claim, f"grad_{name}"):
                grads[f"grad_{name}"] = step_of(name)
        truth = step_of(target)
    else:
        grads = {}
        wanted = {target} | {n[5:] for n in set(claim.uses) | _names(claim.node) if n.startswith("grad_")}
        downstream = set(wanted)
        for f in d.forward:
            if _names(f.root) & downstream:
                downstream.add(f.name)
        adj: dict[str, AV] = {}
        if d.loss.expression is not None and _names(d.loss.expression) & downstream:
            used_defs.append(d.loss.expression)
            back.vjp(d.loss.expression, AV(()), adj, downstream)
        for h in d.loss.upstream:
            if h in downstream:
                adj[h] = _sum_adjoints(adj.get(h), _atom(env[h].shape))
        for f in reversed(d.forward):
            if f.name in adj and _names(f.root) & downstream:
                back.vjp(definition(f), adj[f.name], adj, downstream)
        for name in wanted:
            if name != target and name in adj:
                grads[f"grad_{name}"] = adj[name]
        truth = adj.get(target, AV(env[target].shape))
    env.update(grads)
    for helper in d.backward:
        if helper.index is not None or helper.node is None:
            if _claim_reads(d, claim, helper.name):
                raise Outside(f"the helper `{helper.name}` is in index form")
            continue
        if _claim_reads(d, claim, helper.name):
            env[helper.name] = interp.value(helper.node)
            used_defs.append(helper.node)
    claimed = interp.value(claim.node)
    used_defs.append(claim.node)
    _check_names(d, used_defs)
    free: dict[str, int] = {}
    for dim in env[target].shape:
        name = named(dim)
        if name is not None:
            free = _add(free, {name: 1})
    u = _max(claimed.bound, truth.bound)
    k = _add(free, u)
    degree = _add(u, _add(claimed.expl, truth.expl))
    return Plan(route, k, degree)


def _names(node: Node) -> set[str]:
    return names_used(node)


def _claim_reads(d: Derivation, claim: Claim, name: str) -> bool:
    if name in claim.uses:
        return True
    return claim.node is not None and name in _names(claim.node)


def _check_names(d: Derivation, roots: list[Node]) -> None:
    """Every tensor a term reads must be one whose entries are independent indeterminates."""
    for root in roots:
        for n in walk(root):
            if isinstance(n, (IndexRef, IndexSum)):
                raise Outside("index form")
            if isinstance(n, Var) and n.name in d.inputs and d.inputs[n.name].domain not in DOMAINS:
                raise Outside(f"`{n.name}` has the domain {d.inputs[n.name].domain}")
            if isinstance(n, Var):
                try:
                    shape = d.shape_of(n.name)
                except KeyError:
                    continue
                for dim in shape:
                    named(dim)


def grid(p: Plan, dims: list[str]) -> list[dict[str, int]]:
    """Every dim at least its threshold (and 2), with degree + 1 distinct sizes each."""
    axes = []
    for name in dims:
        low = max(2, p.k.get(name, 0))
        axes.append([low + j for j in range(p.degree.get(name, 0) + 1)])
    return [dict(zip(dims, combo)) for combo in itertools.product(*axes)]


# ---------------------------------------------------------------------------
# the certificate


def formal_zero(truth, claim: Claim, route: str) -> bool:
    """Is ``claim − truth`` zero as an identity in the atoms, at this truth's dims?"""
    import numpy as np

    truth.simplex = {}  # the last entry of a simplex axis is an atom like every other (see docs)
    if route == "step":
        return bool(truth.step_zero(claim.node, claim.target))
    target = truth.grads[claim.target]
    return bool(truth.identical_over_atoms(np.broadcast_to(truth.claim_value(claim.node), target.shape), target))


def _fmt(sizes: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sizes.items())


class Certifier:
    """One file's certificates: the per-neuron truths at the certificate's sizes are shared."""

    def __init__(self, d: Derivation, entries: Callable[[dict[str, int]], int], max_entries: int):
        self.d = d
        self.entries = entries
        self.max_entries = max_entries
        self.truths: dict[tuple, Any] = {}
        self.broken: set[tuple] = set()  # sizes whose truth could not be built: not retried per claim

    def _truth(self, sizes: dict[str, int]):
        from .symbolic import SymbolicTruth

        key = tuple(sorted(sizes.items()))
        if key in self.broken:
            raise _Broken(f"the per-neuron truth at dims {_fmt(sizes)} could not be built for an earlier claim")
        if key not in self.truths:
            try:
                self.truths[key] = SymbolicTruth(self.d, sizes)
            except BaseException:  # the budget's alarm included: then re-raised, as any failure
                self.broken.add(key)
                raise
        return self.truths[key]

    def certify(self, claim: Claim, proved: list[dict[str, int]]) -> Scope:
        """The claim is proved at ``proved``; may it be called proved for all shapes?

        Raises whatever the symbolic engine raises (the caller's budget included)."""
        reasons = []
        for route in ("step", "full"):
            try:
                p = plan(self.d, claim, route)
            except Outside as exc:
                reasons.append(f"{exc}")
                continue
            except (KeyError, ValueError, TypeError, RecursionError, AttributeError) as exc:
                reasons.append(f"the certificate could not read the expressions ({type(exc).__name__})")
                continue
            points = grid(p, list(self.d.dims))
            biggest = max((max(s.values()) for s in points if s), default=0)
            if len(points) > MAX_POINTS or biggest > MAX_SIZE:
                reasons.append(f"it needs {len(points)} dim assignments up to size {biggest} ({p.describe()}), "
                               f"beyond the certificate's limits")
                continue
            try:
                too_big = [s for s in points if self.entries(s) > self.max_entries]
            except Exception:  # noqa: BLE001 - a shape the sizes make empty: no certificate
                reasons.append("its sizes do not fit every shape of the file")
                continue
            if too_big:
                reasons.append(f"at dims {_fmt(too_big[0])} the arrays are too large for the symbolic engine")
                continue
            failed = None
            try:
                for sizes in points:
                    if not formal_zero(self._truth(sizes), claim, route):
                        failed = sizes
                        break
            except _Broken as exc:
                reasons.append(str(exc))
                continue
            if failed is not None:
                reasons.append(f"at dims {_fmt(failed)} the claim is not identical to the "
                               f"{'chain-rule step' if route == 'step' else 'per-neuron truth'} over the atoms")
                continue
            what = "one chain-rule step" if route == "step" else "the per-neuron truth"
            argument = (f"equal to {what} as an identity in the per-neuron atoms at {len(points)} dim "
                        f"assignment(s) ({'; '.join(_fmt(s) for s in points)}): every pattern of equal and "
                        f"distinct indices occurs there and every dependence on the dims is pinned down "
                        f"({p.describe()}); see docs/proof-scope.md")
            extra = tuple(s for s in points if s not in proved)
            return Scope(ALL_SHAPES, argument, extra)
        why = "; ".join(dict.fromkeys(reasons)) or "outside the certificate's class"
        return Scope(SAMPLED, f"no all-shapes certificate: {why}")


def certify_records(d: Derivation, claims: list[Claim], records: Mapping[str, SymbolicEvidence], budget: float,
                    spent: dict[str, float], entries: Callable[[dict[str, int]], int], max_entries: int,
                    time_budget: Callable, timeout: type[BaseException], failures: tuple) -> None:
    """Add ``scope`` and ``argument`` to the record of every proved claim (the checker's call site).

    Each claim's certificate runs within what is left of its own symbolic budget (CPU seconds)."""
    certifier = Certifier(d, entries, max_entries)
    for claim in claims:
        record = records.get(claim.name)
        if record is None or record.status != "proved":
            continue
        left = budget - spent.get(claim.name, 0.0) if budget > 0 else 0.0
        if budget > 0 and left <= 0.05:
            record.scope, record.argument = SAMPLED, "no budget was left for the all-shapes certificate"
            continue
        started, wall = time.process_time(), time.perf_counter()
        try:
            with time_budget(left):
                scope = certifier.certify(claim, record.shapes)
        except timeout:
            scope = Scope(SAMPLED, "the all-shapes certificate ran past the budget (--timeout)")
        except failures as exc:
            scope = Scope(SAMPLED, f"the all-shapes certificate failed ({exc})")
        except Exception as exc:  # noqa: BLE001 - a certificate's trouble never costs the claim its proof
            scope = Scope(SAMPLED, f"the all-shapes certificate failed ({type(exc).__name__}: {exc})")
        spent[claim.name] = spent.get(claim.name, 0.0) + time.process_time() - started
        record.seconds += time.perf_counter() - wall
        record.scope, record.argument = scope.kind, scope.argument


def expression_plan(node: Node, shapes: Mapping[str, Shape], functions: set[str] = frozenset()) -> Plan:
    """The certificate's thresholds for one expression whose tensors are independent atoms (``e1 - e2``
    of two expressions to compare): every dim at least ``k``, ``degree + 1`` sizes of each."""
    av = Interpreter(set(functions), {n: _atom(s) for n, s in shapes.items()}).value(node)
    free: dict[str, int] = {}
    for dim in av.shape:
        name = named(dim)
        if name is not None:
            free = _add(free, {name: 1})
    return Plan("expression", _add(free, av.bound), _add(dict(av.bound), av.expl))
