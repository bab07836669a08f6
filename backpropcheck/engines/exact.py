"""An exact, cheap zero test: rational arithmetic over independent generators.

A SymPy expression is mapped to a rational function whose variables
(*generators*) are the symbols and every non-rational sub-expression:
``exp(m)`` for each monomial ``m`` of a polynomial exponent (``exp(a + b) =
exp(a)·exp(b)`` holds for every complex a, b), ``base**(1/q)`` for a rational
power (``g**q`` is reduced back to the base), ``Step(u)`` (``[u > 0]``) and
``StepGe(u)`` (``[u ≥ 0]``) with ``u`` normalised to a positive leading
coefficient (``Step(-u) = 1 - StepGe(u)``, exact at a tie too; a step is 0 or 1,
so ``g**k = g``), ``Relu(u) = u·Step(u)``, a max's partial as steps
(:class:`ArgShare`), and any other function applied to the canonical form of
its arguments.

If the numerator of the resulting rational function is the zero polynomial,
the expression is identically zero wherever it is defined: treating
generators as independent can only *miss* relations between them, never
invent one. So a zero here is a proof; anything else is "not decided here",
and the caller falls back to slower tools. Arithmetic is exact
(rationals: SymPy's pure-Python ``PythonMPQ``, :class:`fractions.Fraction`'s values at less cost); a float
anywhere makes the test decline.

Denominators are kept factored (a normalised polynomial → its exponent), and
monomials may carry negative exponents (Laurent monomials), so ``1/exp(z)``
and the shared softmax denominator never multiply out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction as _Fraction
from typing import Any

import sympy as sp

try:  # the same rationals as fractions.Fraction (equal, same hash), two to three times cheaper
    from sympy.external.pythonmpq import PythonMPQ as Fraction
except ImportError:  # another SymPy
    Fraction = _Fraction  # type: ignore[misc]

from ..lang.symfuncs import ArgShare, Relu, Step, StepGe

Monomial = tuple[tuple[int, int], ...]
Poly = dict[Monomial, Any]  # coefficient: int or Fraction (a rational)


class Unsupported(Exception):
    """The expression holds something this test does not model (a float, a symbolic power, …)."""


# ---------------------------------------------------------------------------
# Laurent polynomials with rational coefficients


def _mmul(a: Monomial, b: Monomial) -> Monomial:
    if not a:
        return b
    if not b:
        return a
    if len(b) == 1 or len(a) == 1:  # one generator into the other's sorted pairs (a product by a variable)
        ((g, e),), rest = (b, a) if len(b) == 1 else (a, b)
        for k, (h, f) in enumerate(rest):
            if h == g:
                return rest[:k] + ((g, f + e),) + rest[k + 1:] if f + e else rest[:k] + rest[k + 1:]
            if h > g:
                return rest[:k] + ((g, e),) + rest[k:]
        return rest + ((g, e),)
    merged = dict(a)
    for g, e in b:
        s = merged.get(g, 0) + e
        if s:
            merged[g] = s
        else:
            del merged[g]
    return tuple(sorted(merged.items()))


def _minv(m: Monomial) -> Monomial:
    return tuple((g, -e) for g, e in m)


def _padd(p: Poly, q: Poly, sign: int = 1) -> Poly:
    out = dict(p)
    for m, c in q.items():
        s = out.get(m, 0) + sign * c
        if s:
            out[m] = s
        else:
            out.pop(m, None)
    return out


def _pmul(p: Poly, q: Poly) -> Poly:
    if len(p) < len(q):
        p, q = q, p
    if len(q) == 1:
        ((mq, cq),) = q.items()
        return _pterm(p, mq, cq)
    out: Poly = {}
    for ma, ca in p.items():
        for mb, cb in q.items():
            m = _mmul(ma, mb)
            s = out.get(m, 0) + ca * cb
            if s:
                out[m] = s
            else:
                out.pop(m, None)
    return out


def _pterm(p: Poly, m: Monomial, c: Any) -> Poly:
    """``p · c·m``."""
    if not m:
        return {k: v * c for k, v in p.items()} if c != 1 else p
    if c == 1:
        return {_mmul(k, m): v for k, v in p.items()}
    return {_mmul(k, m): v * c for k, v in p.items()}


def _ppow(p: Poly, k: int) -> Poly:
    out: Poly = {(): 1}
    base = p
    while k:
        if k & 1:
            out = _pmul(out, base)
        k >>= 1
        if k:
            base = _pmul(base, base)
    return out


def _pkey(p: Poly) -> frozenset:
    return frozenset(p.items())


# ---------------------------------------------------------------------------
# rational functions: numerator / Π factor**exponent


class Frac:
    """``num / Π f**e`` over the factors in ``den`` (normalised polynomials, keyed by their terms)."""

    __slots__ = ("num", "den", "_key")

    def __init__(self, num: Poly, den: dict[frozenset, tuple[Poly, int]] | None = None):
        self.num = num
        self.den = den or {}
        self._key: tuple | None = None

    @property
    def is_zero(self) -> bool:
        return not self.num

    def key(self) -> tuple:
        """A hashable form: equal keys mean equal values (not the converse). The denominator is
        multiplied out and made monic, so ``1/(x+1)**2`` and ``1/(x**2+2x+1)`` share a key."""
        if self._key is None:
            if not self.den:
                self._key = (_pkey(self.num), None)
            else:
                den = _expand_den(self.den)
                lead = Fraction(den[min(den)])
                self._key = (_pkey({m: _tidy(Fraction(c) / lead) for m, c in self.num.items()}),
                             _pkey({m: _tidy(Fraction(c) / lead) for m, c in den.items()}))
        return self._key

    def constant(self) -> Any | None:
        if not self.num:  # a zero numerator over any denominator (Σ softmax − 1 over the shared sum): 0
            return 0
        if not self.den and len(self.num) <= 1 and all(not m for m in self.num):
            return self.num.get((), 0)
        return None


def _const(c: Any) -> Frac:
    return Frac({(): c} if c else {})


def _expand_den(den: dict[frozenset, tuple[Poly, int]], skip: dict[frozenset, int] | None = None) -> Poly:
    out: Poly = {(): 1}
    for k, (p, e) in den.items():
        e -= (skip or {}).get(k, 0)
        if e > 0:
            out = _pmul(out, _ppow(p, e))
    return out


def add(a: Frac, b: Frac, sign: int = 1) -> Frac:
    if not b.num:
        return a
    if not a.num:
        return b if sign == 1 else Frac({m: -c for m, c in b.num.items()}, b.den)
    if a.den == b.den or (not a.den and not b.den):
        return Frac(_padd(a.num, b.num, sign), a.den)
    common = dict(a.den)
    for k, (p, e) in b.den.items():
        if k not in common or common[k][1] < e:
            common[k] = (p, e)
    num_a = _pmul(a.num, _expand_den(common, {k: e for k, (_, e) in a.den.items()}))
    num_b = _pmul(b.num, _expand_den(common, {k: e for k, (_, e) in b.den.items()}))
    return Frac(_padd(num_a, num_b, sign), common)


def mul(a: Frac, b: Frac) -> Frac:
    if not a.num or not b.num:
        return Frac({})
    den = dict(a.den)
    for k, (p, e) in b.den.items():
        den[k] = (p, den[k][1] + e) if k in den else (p, e)
    return Frac(_pmul(a.num, b.num), den)


def _normalise(p: Poly) -> tuple[Monomial, Any, Poly]:
    """``p = m · c · p'`` with p' free of monomial content and leading coefficient 1."""
    if not p:
        raise ZeroDivisionError("division by an identically zero polynomial")
    monomials = [dict(m) for m in p]
    generators = {g for m in monomials for g in m}
    content = {g: min(m.get(g, 0) for m in monomials) for g in generators}
    m = tuple(sorted((g, e) for g, e in content.items() if e))
    if m:
        inverse = _minv(m)
        p = {_mmul(k, inverse): v for k, v in p.items()}
    lead = p[min(p)]
    if lead != 1:
        p = {k: _tidy(Fraction(v) / lead) for k, v in p.items()}
    return m, lead, p


def _tidy(c: Any) -> Any:
    return c.numerator if c.denominator == 1 else c


def _sum(terms: list[Frac]) -> Frac:
    """Σ terms, adding the numerators of terms with the same denominator in place first."""
    groups: dict[frozenset, tuple[dict, Poly]] = {}
    for t in terms:
        if not t.num:
            continue
        signature = frozenset((k, e) for k, (_, e) in t.den.items())
        if signature not in groups:
            groups[signature] = (t.den, {})
        acc = groups[signature][1]
        for m, c in t.num.items():
            s = acc.get(m, 0) + c
            if s:
                acc[m] = s
            else:
                acc.pop(m, None)
    out = Frac({})
    for den, num in groups.values():
        out = add(out, Frac(num, den))
    return out


def inv(a: Frac) -> Frac:
    m, lead, rest = _normalise(a.num)
    num = _expand_den(a.den)
    num = _pterm(num, _minv(m), _tidy(1 / Fraction(lead)))
    if len(rest) == 1 and () in rest:
        return Frac(num)
    return Frac(num, {_pkey(rest): (rest, 1)})


def power(a: Frac, k: int) -> Frac:
    if k < 0:
        return power(inv(a), -k)
    if k == 0:
        return _const(1)
    if not a.den:
        return Frac(_ppow(a.num, k))
    return Frac(_ppow(a.num, k), {key: (p, e * k) for key, (p, e) in a.den.items()})


# ---------------------------------------------------------------------------
# SymPy expression → Frac


class Converter:
    """Maps SymPy expressions to :class:`Frac`, memoised; ``lookup`` may replace a symbol by a value."""

    def __init__(self, lookup: Callable[[sp.Symbol], Frac | None] | None = None,
                 ties_null: Callable[[sp.Expr], bool] | None = None,
                 ties_alone: Callable[[ArgShare], bool] | None = None):
        self.lookup = lookup
        self.ties_null = ties_null  # u -> may StepGe(u) be written Step(u) (u = 0 on a null set only)?
        self.ties_alone = ties_alone  # a max's partial -> does its entry tie with no other but on a null set?
        self.steps: set[int] = set()  # the generators that are steps: 0 or 1, so g**k = g
        self.symbols: set[int] = set()  # the generators that are symbols (independent variables)
        self.generators: dict[Any, int] = {}
        self.roots: dict[int, tuple[int, Frac]] = {}  # generator → (q, base) for base**(1/q)
        self.logs: dict[int, Frac] = {}  # generator → A for log(A)
        self.memo: dict[sp.Basic, Frac] = {}
        self.exp_scale: dict[Monomial, int] = {}
        self.stale = False

    def generator(self, key: Any) -> Frac:
        g = self.generators.get(key)
        if g is None:
            g = self.generators[key] = len(self.generators)
        return Frac({((g, 1),): 1})

    def __call__(self, e: sp.Basic) -> Frac:
        """The rational function of ``e`` (raises :class:`Unsupported`, ``ZeroDivisionError``)."""
        stack: list[tuple[sp.Basic, bool]] = [(e, False)]
        memo = self.memo
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            if not ready and node.args and not node.is_Atom:
                stack.append((node, True))
                stack.extend((a, False) for a in node.args if a not in memo)
                continue
            memo[node] = self._convert(node)
        return memo[e]

    def is_zero(self, e: sp.Basic) -> bool:
        """Is ``e`` identically zero by this test? Re-converts when an exp scale had to grow."""
        for _ in range(4):
            if self._idempotent(self(e)).is_zero:
                return True
            if not self.retry():
                return False
        return False

    def equal(self, a: sp.Basic, b: sp.Basic) -> bool:
        """Is ``a - b`` identically zero by this test? Each side converted on its own (memoised), so the
        difference of two long sums is never built as a SymPy expression. If a side alone is beyond this test
        (a float that cancels only in the difference), the difference is built and tested as before."""
        try:
            for _ in range(4):
                if self._idempotent(add(self(a), self(b), -1)).is_zero:
                    return True
                if not self.retry():
                    return False
            return False
        except (Unsupported, ZeroDivisionError):
            return self.is_zero(a - b)

    def nonzero_polynomial(self, e: sp.Basic) -> bool:
        """Is ``e`` a polynomial in symbols alone, and not the zero polynomial (so zero on a null set only)?"""
        try:
            return self.nonzero_polynomial_frac(self(e))
        except (Unsupported, ZeroDivisionError):
            return False

    def nonzero_polynomial_frac(self, f: Frac) -> bool:
        """:meth:`nonzero_polynomial` of a converted value."""
        return bool(f.num) and not f.den and all(g in self.symbols for m in f.num for g, _ in m)

    def retry(self) -> bool:
        """Forget the memo if an ``exp`` scale grew, so every ``exp(c·m)`` shares one generator."""
        if not self.stale:
            return False
        self.stale = False
        self.memo = {}
        return True

    # -- one node, its arguments already converted ---------------------------------

    def _convert(self, e: sp.Basic) -> Frac:
        if e.is_Rational:
            return _const(int(e.p) if e.q == 1 else Fraction(int(e.p), int(e.q)))
        if e.is_Symbol:
            found = self.lookup(e) if self.lookup else None
            if found is not None:
                return found
            g = self.generator(("symbol", e))
            self.symbols.add(self.generators[("symbol", e)])
            return g
        if e.is_Float:
            raise Unsupported("a floating-point number")
        if e is sp.E:
            return self._exp(_const(1))
        if e.is_NumberSymbol or e is sp.I:
            return self.generator(("constant", e))
        if e.is_Add:
            return _sum([self.memo[a] for a in e.args])
        if e.is_Mul:
            factors = [self.memo[a] for a in e.args]
            out = factors[0] if len(factors) > 1 else mul(_const(1), factors[0])
            for f in factors[1:]:
                out = mul(out, f)
            return self._reduce(out)
        if e.is_Pow:
            return self._pow(e)
        if isinstance(e, sp.exp):
            return self._exp(self.memo[e.args[0]])
        if isinstance(e, sp.Function):
            if type(e) is Step or type(e) is StepGe:  # one step of both where u ties on a null set only
                merged = self.ties_null is not None and self.ties_null(e.args[0])
                return self._step(self.memo[e.args[0]], type(e) is Step, merged)
            if type(e) is ArgShare:
                return self._share(e)
            if type(e) is Relu:  # u·[u > 0] = u·[u ≥ 0]: the one whose generator is written Step
                u = self.memo[e.args[0]]
                written_step = bool(u.den) or u.constant() is not None or u.num[min(u.num)] > 0
                return self._reduce(mul(u, self._step(u, strict=written_step)))
            g = self.generator(("function", type(e), tuple(self.memo[a].key() for a in e.args)))
            if isinstance(e, sp.log) and len(e.args) == 1:
                self.logs[next(iter(g.num))[0][0]] = self.memo[e.args[0]]
            return g
        raise Unsupported(type(e).__name__)

    def _pow(self, e: sp.Pow) -> Frac:
        base, exponent = e.args
        b = self.memo[base]
        if exponent.is_Integer:
            return self._reduce(power(b, int(exponent)))
        if exponent.is_Rational:
            return self._rational_power(b, Fraction(int(exponent.p), int(exponent.q)))
        raise Unsupported("a power with a symbolic or floating exponent")

    def _rational_power(self, b: Frac, c: Any) -> Frac:
        """``b**(p/q) = g**(p mod q) · b**(p div q)`` with ``g = b**(1/q)`` (principal branch)."""
        p, q = c.numerator, c.denominator
        if q == 1:
            return self._reduce(power(b, p))
        key = ("root", q, b.key())
        known = key in self.generators
        g = self.generator(key)
        if not known:
            self.roots[self.generators[key]] = (q, b)
        whole, rest = divmod(p, q)
        return self._reduce(mul(power(g, rest), power(b, whole)))

    def _exp(self, u: Frac) -> Frac:
        """``exp(Σ c·m) = Π exp(m/L)**(c·L)``, with one scale ``L`` per monomial m (see :meth:`retry`)."""
        if u.den:
            return self.generator(("exp", u.key()))
        out = _const(1)
        for m, c in u.num.items():
            c = Fraction(c)
            if len(m) == 1 and m[0][1] == 1 and m[0][0] in self.logs:
                # exp(c·log A) = A**c for the principal log and power
                out = mul(out, self._rational_power(self.logs[m[0][0]], c))
                continue
            scale = self.exp_scale.setdefault(m, c.denominator)
            if scale % c.denominator:
                # exp(m/2) after exp(m): both are sound generators, but unrelated until a retry
                self.exp_scale[m] = math.lcm(scale, c.denominator)
                self.stale = True
                scale = c.denominator
            out = mul(out, power(self.generator(("exp", m, scale)), int(c * scale)))
        return out

    def _share(self, e: ArgShare) -> Frac:
        """An extreme's partial as steps: its arg-max indicator ``Π_j [x_i > x_j]`` where the entry ties with no
        other but on a null set (:attr:`ties_alone`), else the exact even split (:meth:`ArgShare.as_steps`)."""
        i, sign, xs = e.parts()
        others = [x for j, x in enumerate(xs) if j != i]
        if self.ties_alone is None or not self.ties_alone(e):
            return self(e.as_steps())
        out = _const(1)
        for x in others:  # each step from the entries' own conversions, no SymPy product built
            u = add(self.memo[xs[i]], self.memo[x], -1)
            out = mul(out, self._step(u if sign == 1 else add(_const(0), u, -1), strict=True, merged=True))
        return self._reduce(out)

    def _step(self, u: Frac, strict: bool = True, merged: bool = False) -> Frac:
        """``[u > 0]`` (``strict``) or ``[u ≥ 0]``: its value where ``u`` is a constant (a tie by construction
        is 0 or 1 exactly), else a generator, ``Step(-u)`` written ``1 - StepGe(u)``; ``merged`` (u is 0 on a
        null set only): one generator for both."""
        c = u.constant()
        if c is not None:
            return _const(1 if c > 0 or (c == 0 and not strict) else 0)
        kind, twin = ("step", "step") if merged else ("step", "stepge") if strict else ("stepge", "step")
        if u.den:
            return self._step_generator((kind, u.key()))
        lead = u.num[min(u.num)]
        scaled = Frac({m: _tidy(Fraction(v) / abs(lead)) for m, v in u.num.items()})
        if lead > 0:
            return self._step_generator((kind, scaled.key()))
        flipped = Frac({m: -v for m, v in scaled.num.items()})
        return add(_const(1), self._step_generator((twin, flipped.key())), -1)

    def _step_generator(self, key: tuple) -> Frac:
        g = self.generator(key)
        self.steps.add(self.generators[key])
        return g

    def _idempotent(self, a: Frac) -> Frac:
        """Every power ``g**k`` (k > 1) of a step generator written ``g``: a step is 0 or 1 (so a product of
        the masks of tied copies, ``[x0 >= x1]·[x0 >= x1]``, is the mask itself)."""
        if not any(g in self.steps and e > 1 for m in a.num for g, e in m):
            return a
        num: Poly = {}
        for m, c in a.num.items():
            m = tuple((g, 1 if g in self.steps and e > 1 else e) for g, e in m)
            total = num.get(m, 0) + c
            if total:
                num[m] = total
            else:
                num.pop(m, None)
        return Frac(num, dict(a.den))

    def _reduce(self, a: Frac) -> Frac:
        """Rewrite ``g**e`` of a root generator ``g = b**(1/q)`` to ``g**(e mod q) · b**(e div q)``, and of a
        step generator to ``g``."""
        if self.steps:
            a = self._idempotent(a)
        if not self.roots:
            return a
        clean: Poly = {}
        extra = Frac({})
        changed = False
        for m, c in a.num.items():
            bad = [(g, e) for g, e in m if g in self.roots and not 0 <= e < self.roots[g][0]]
            if not bad:
                clean[m] = c
                continue
            changed = True
            keep = dict(m)
            factor = _const(c)
            for g, e in bad:
                q, base = self.roots[g]
                whole, rest = divmod(e, q)
                if rest:
                    keep[g] = rest
                else:
                    del keep[g]
                factor = mul(factor, power(base, whole))
            term = mul(factor, Frac({tuple(sorted(keep.items())): 1}))
            extra = add(extra, self._reduce(term))
        if not changed:
            return a
        total = add(Frac(clean), extra)
        return mul(total, Frac({(): 1}, dict(a.den)))
