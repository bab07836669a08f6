"""Counterexamples inside the inputs' domains: the points where a difference that the exact tests
could not prove zero is evaluated, exactly or with certified digits (the refuting half of
:class:`~.symbolic.SymbolicTruth`, as a mixin over its symbols, atoms and domains)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ..lang.symfuncs import ArgShare, Relu, Step, kink_arguments, softmax_as_exp
from .exact import Converter, Unsupported
from .roots import polynomial_roots, sign_changes

if TYPE_CHECKING:
    from ..model import Derivation

MAX_SCANS = 4  # arguments of one difference's kinks scanned for sign changes (a polynomial's roots are solved)
MAX_KINK_POINTS = 96  # points next to kinks evaluated for one difference


class WitnessSearch:
    """Random and kink-adjacent points inside the inputs' domains, and the values there."""

    d: Derivation
    env: dict[str, np.ndarray]
    upstream: dict[str, np.ndarray]
    drawn: dict[str, np.ndarray]
    simplex: dict[sp.Symbol, sp.Expr]
    columns: list[list[sp.Symbol]]
    domain_of: dict[sp.Symbol, str]
    local: dict[sp.Symbol, sp.Expr]
    order: list[tuple[str, np.ndarray]]
    _layered: list | None

    if TYPE_CHECKING:  # provided by SymbolicTruth
        def full(self, expr: sp.Expr) -> sp.Expr: ...

        def atomize(self, e: sp.Expr) -> sp.Expr: ...

        def _ties_null(self, u: sp.Expr) -> bool: ...

    def layered_witness(self, e: sp.Expr, rng: random.Random, tries: int = 2):
        """A point where ``e`` (over forward atoms and inputs) is far from zero, evaluating each
        atom's local definition at 60 significant digits in forward order — no expansion of the
        atoms into the inputs, so a whole transformer block costs one pass (made once per truth
        and point, shared by every entry and claim).

        60-digit arithmetic moves a value of size S by about 1e-60·S; a difference above 1e-25 is
        thirty-five orders of magnitude past that, so it is not rounding. Points where a mask's
        argument comes within 1e-20 of 0 are ties and skipped. None when no point shows one (the
        exact tests then decide)."""
        if self._layered is None:
            self._layered = [p for p in (self._layered_point(rng) for _ in range(tries)) if p is not None]
        e = self._concrete_functions(e)
        kinks = [k.args[0] for k in e.atoms(Step, Relu)] + [u for a in e.atoms(ArgShare) for u in a.differences()]
        for point, values in self._layered:
            value = e.xreplace(values).evalf(60)
            if not (value.is_Number and value.is_real and abs(value) > sp.Float("1e-25")):
                continue
            if any(not (arg := k.xreplace(values).evalf(60)).is_Number or abs(arg) < sp.Float("1e-20")
                   for k in kinks):
                continue  # a tie (x >= max(x) at the arg-max is one by construction): never a witness
            # relative to the magnitude the evaluation handled (every sum as a sum of absolute values):
            # huge terms that cancel (exp(100) - exp(100)) leave 1e-60 of their size, never 1e-25 of it
            magnitude = e.replace(lambda x: x.is_Add, lambda x: sp.Add(*[sp.Abs(a) for a in x.args]))
            scale = magnitude.xreplace(values).evalf(60)
            if not scale.is_Number or abs(value) <= sp.Float("1e-25") * max(sp.Float(1), abs(scale)):
                continue
            return float(value), point
        return None

    def _layered_point(self, rng: random.Random):
        """(point, every input's and atom's value at 60 digits), or None at a tie."""
        inputs = sorted({s for name in self.d.inputs if name not in self.drawn for s in self.env[name].flat}
                        | {s for g in self.upstream.values() for s in g.flat}, key=lambda x: x.name)
        point = self._random_point(inputs, rng, 1)
        values: dict[sp.Symbol, sp.Expr] = {s: sp.Float(v, 60) for s, v in point.items()}
        for last, rest in self.simplex.items():
            values[last] = sp.Float(rest.xreplace(point), 60)
        for _, atoms in self.order:
            for atom in atoms.flat:
                local = self._concrete_functions(self.local[atom])
                for kink in local.atoms(Step, Relu):
                    arg = kink.args[0].xreplace(values).evalf(60)
                    if not arg.is_Number or abs(arg) < sp.Float("1e-20"):
                        return None
                values[atom] = local.xreplace(values).evalf(60)
        return point, values

    def resolve_kinks(self, f: sp.Expr) -> sp.Expr:
        """Every ``Step``/``Relu`` whose argument has one sign on the inputs' domains, resolved:
        ``abs(x - 1) = 1 - x`` for x in (0, 1). A unit entry is written ``t/(1 + t)`` with t > 0
        for the sign test, so SymPy's assumptions see both of its bounds."""
        kinks = f.atoms(Step, Relu)
        if not kinks:
            return f
        unit = {s: (lambda t: t / (1 + t))(sp.Dummy(positive=True))
                for s in f.free_symbols if self.domain_of.get(s) == "unit"}
        resolved = {}
        for kink in kinks:
            u = kink.args[0]
            c = _exact_constant(u)
            if c is not None:  # Σ softmax(x) − 1 is 0 everywhere: a tie by construction has one branch
                resolved[kink] = sp.Integer(1 if c > 0 or (c == 0 and not kink.strict) else 0) \
                    if isinstance(kink, Step) else sp.Rational(int(c.numerator), int(c.denominator)) * (c > 0)
                continue
            v = sp.together(u.xreplace(unit)) if unit else u
            if v.is_positive:
                resolved[kink] = sp.Integer(1) if isinstance(kink, Step) else u
            elif v.is_negative:
                resolved[kink] = sp.Integer(0)
        return sp.expand(f.xreplace(resolved)) if resolved else f

    def witness(self, expr: sp.Expr, rng: random.Random) -> tuple[float, dict[sp.Symbol, sp.Rational]] | None:
        """A point inside the inputs' domains where the input-level ``expr`` is certainly non-zero.

        No tolerance: the value is exact (rational inputs, rational arithmetic) or evaluated by
        SymPy with every digit certified (``evalf(strict=True)``), so any non-zero value is a
        counterexample, however small (``1e-12 * a``). Besides random points, the points on either
        side of every kink (each ``Step``/``Relu`` argument's roots in each of its symbols, or its
        changes of sign: :meth:`_kink_points`) are tried, so a branch no random draw reaches
        (``where(a > 5, …)``, ``clip(p, 0.01, 0.99)``, ``where(tanh(a) > 0.99, …)``) is still examined.
        A point where a kink's argument is exactly 0 is a tie, never sampled.
        Generic functions are replaced by one concrete smooth function and its derivatives: a
        claim must hold for every f, so one f where it fails refutes it.
        """
        expr = self._concrete_functions(expr)
        symbols = sorted(expr.free_symbols, key=lambda x: x.name)
        kinks = kink_arguments(expr)
        for point in self._points(symbols, kinks, rng):
            if any(self._tie_to_skip(k, _exact_or_certified(k.xreplace(point))) for k in kinks):
                continue  # a tie no trial reaches (or an undecidable kink)
            value = at_point(expr, point)
            if value is not None and value != 0:
                return float(value), point
        return None

    def _tie_to_skip(self, kink: sp.Expr, value) -> bool:
        """Is a point where this kink's argument takes ``value`` no evidence? Undecidable, or exactly 0 where the
        argument is 0 on a null set only (a coincidence no trial reaches, where ``>`` and ``>=`` were taken as
        one). A tie on a whole region (``clip(x, 0, 6) - 6`` for every x > 6) is a point like any other: both
        engines give a tie its one value."""
        if value is None:
            return True
        return value == 0 and self._ties_null(kink)

    def values_at(self, exprs: list[sp.Expr], point: Mapping[sp.Symbol, sp.Expr],
                  rng: random.Random) -> list[float | None]:
        """Entries' values (claimed, true) at a witness point — its other inputs drawn from their
        domains, as the witness's value does not depend on them — or None where not certified."""
        full = []
        for expr in exprs:
            f = softmax_as_exp(self.full(self.atomize(sp.sympify(expr, strict=True))))
            full.append(self._concrete_functions(f.xreplace(self.simplex) if self.simplex else f))
        others = sorted(set().union(*(f.free_symbols for f in full)) - set(point), key=lambda x: x.name)
        complete = {**self._random_point(others, rng, 1), **point}
        out = []
        for f in full:
            value = at_point(f, complete)
            out.append(None if value is None else float(value))
        return out

    def describe_domains(self) -> str | None:
        """The concrete draws this truth used for its domains (one-hot labels), for a report."""
        if not self.drawn:
            return None
        return "; ".join(f"{name} = {value.tolist()}" for name, value in self.drawn.items())

    def _points(self, symbols: list[sp.Symbol], kinks: list[sp.Expr], rng: random.Random):
        """Random points from the inputs' domains (also at 10x and 100x the usual scale for
        real inputs), then points on either side of each kink."""
        for _ in range(3):
            yield self._random_point(symbols, rng, 1)
        yield from self._kink_points(symbols, kinks, rng)
        for scale in (10, 100):
            yield self._random_point(symbols, rng, scale)

    def _kink_points(self, symbols: list[sp.Symbol], kinks: list[sp.Expr], rng: random.Random):
        """Points on either side of each kink, the other symbols at one random point: a polynomial argument's
        roots, each at distances from 1/4 and 2 (a branch of the real line) down to 1/1000 and halfway to an
        end of the domain (a branch near an end of (0, 1) or near 0 for a positive entry); any other
        argument's sign changes (``tanh(a) > 0.99``, ``log(p) > 4``), found by :mod:`.roots` on a grid over
        the domain, at most ``MAX_SCANS`` per call."""
        base = self._random_point(symbols, rng, 1)
        tried = scanned = 0
        crossings: dict[sp.Symbol, set] = {}  # each symbol's roots, of every kink: a window between two is tried
        for kink in kinks[:16]:
            for s in sorted(kink.free_symbols & set(symbols), key=lambda x: x.name)[:4]:
                if s in self.simplex:  # a column's last entry: written as one minus the others
                    continue
                g = kink.xreplace({k: v for k, v in base.items() if k != s})
                domain = self.domain_of.get(s, "positive" if s.is_positive else "real")
                domain = "unit" if domain == "simplex" else domain if domain in ("unit", "positive") else "real"
                roots = polynomial_roots(g, s)
                if roots is not None:
                    values = [v for root in roots for v in _either_side(root, domain)]
                elif scanned < MAX_SCANS:  # around the crossing, as around a root: a bracket's own ends lie
                    scanned += 1  # within 1e-12 of it, where SymPy cannot tell the sign of the kink to decide it
                    roots = [(low + high) / 2 for low, high in _scanned(g, s, domain)]
                    values = [v for root in roots for v in _either_side(root, domain)]
                else:
                    continue
                known = crossings.setdefault(s, set())
                # between two roots close by, of this kink or another (x > 0.7 and x < 0.7001; clip(x, 5, 5.001);
                # (x - 5)**2 < 1e-7), a window narrower than the distances _either_side steps off a root: its middle
                new = set(roots) - known
                known.update(roots)
                ordered = sorted(known)
                values += [(a + b) / 2 for a, b in zip(ordered, ordered[1:]) if (a in new or b in new)
                           and b - a < 2 * max(abs(a), abs(b), 1) / 1000]
                for value in values:
                    if self._inside(s, value):
                        tried += 1
                        yield self._on_simplex({**base, s: value}, s)
                        if tried > MAX_KINK_POINTS:
                            return

    def _inside(self, s: sp.Symbol, value: sp.Rational) -> bool:
        domain = self.domain_of.get(s, "real")
        if domain == "positive":
            return value > 0
        if domain in ("unit", "simplex"):
            return 0 < value < 1
        return True

    def _on_simplex(self, point: dict, s: sp.Symbol) -> dict:
        """``point`` with entry ``s`` of a simplex column moved: if the column's free entries now sum to 1 or
        more, the others shrink in proportion to half of what ``s`` leaves, and the column's last entry (one
        minus them) is the other half (``p > 0.99`` is reached at p = 0.995, the rest of the column at 0.005)."""
        column = next((c for c in self.columns if s in c), None)
        others = [c for c in column or () if c != s]
        total = sum(point[c] for c in others)
        if column is None or point[s] + total < 1:
            return point
        scale = (1 - point[s]) / (2 * total)  # total > 0: point[s] < 1 and the column reaches 1
        return {**point, **{c: point[c] * scale for c in others}}

    def _random_point(self, symbols: list[sp.Symbol], rng: random.Random, scale: int) -> dict:
        point: dict[sp.Symbol, sp.Rational] = {}
        for column in self.columns:  # a simplex column: positive entries, the free ones summing below 1
            weights = [rng.randint(1, 1000) for _ in range(len(column) + 1)]
            total = sum(weights)
            point.update((s, sp.Rational(w, total)) for s, w in zip(column, weights))
        for s in symbols:
            if s in point:
                continue
            domain = self.domain_of.get(s, "positive" if s.is_positive else "real")
            if domain == "unit":
                point[s] = sp.Rational(rng.randint(1, 999), 1000)
            elif domain in ("positive", "simplex"):
                point[s] = sp.Rational(rng.randint(1, 2000) * scale, 1000)
            else:
                point[s] = sp.Rational(rng.randint(-1500, 1500) * scale, 1000)
        return point

    def _concrete_functions(self, expr: sp.Expr) -> sp.Expr:
        """Every generic ``f``, ``f_prime``, … written as one concrete smooth function's derivatives."""
        names = {}
        for name in self.d.functions:
            for order in range(4):
                names[name + "_prime" * order] = order
        found = [e for e in expr.atoms(sp.Function) if type(e).__name__ in names]
        if not found:
            return expr
        x = sp.Dummy("x", real=True)
        standin = sp.sin(x) + x**2 / 5  # smooth, not odd, not even: no accidental identity
        return expr.xreplace({e: sp.diff(standin, x, names[type(e).__name__]).xreplace({x: e.args[0]})
                              for e in found})


def _either_side(root: sp.Rational, domain: str) -> list[sp.Rational]:
    """Points on both sides of a root: at 1/4 and 2 (for a branch of the real line), at 1/1000 of the root's size
    (or of 1, and of the root's own for a root below 1), and halfway to each finite end of the domain ((0, 1),
    or 0 for a positive one)."""
    near = max(abs(root), sp.Integer(1)) / 1000
    out = [root + sp.Rational(1, 4), root - sp.Rational(1, 4), root + 2, root - 2, root + near, root - near]
    if 0 < abs(root) < 1:  # a kink near 0 (x * x < 1e-12): its thin branch lies within 1/1000 of its size
        out += [root + abs(root) / 1000, root - abs(root) / 1000]
    if domain in ("unit", "positive"):
        out.append(root / 2)
    if domain == "unit":
        out.append((root + 1) / 2)
    return list(dict.fromkeys(out))


def _exact_constant(u: sp.Expr):
    """``u``'s value if exact rational arithmetic over independent generators (:mod:`.exact`) shows it is one
    constant wherever it is defined, else None."""
    try:
        return Converter()(u).constant()
    except (Unsupported, ZeroDivisionError, RecursionError):
        return None


_SCANNED: dict[tuple, list[tuple[sp.Rational, sp.Rational]]] = {}  # by (argument over a placeholder, domain)
_HOLDERS: dict[tuple, sp.Symbol] = {}


def _scanned(g: sp.Expr, s: sp.Symbol, domain: str) -> list[tuple[sp.Rational, sp.Rational]]:
    """:func:`.roots.sign_changes` of ``g`` in ``s``, kept by the argument's form: ``tanh(z[0]) - 99/100`` and
    ``tanh(z[1]) - 99/100`` are one scan (a scan evaluates the argument a few hundred times)."""
    holder = _HOLDERS.setdefault(s._assumptions0, sp.Symbol("⟨kink⟩", **s.assumptions0))
    key = (g.xreplace({s: holder}), domain)
    found = _SCANNED.get(key)
    if found is None:
        if len(_SCANNED) > 10_000:
            _SCANNED.clear()
        found = _SCANNED[key] = list(sign_changes(key[0], holder, domain))
    return found


_KINKS = (Step, Relu, sp.Abs, sp.sign, sp.Heaviside)


def at_point(expr: sp.Expr, point: Mapping[sp.Symbol, sp.Expr]) -> sp.Rational | sp.Float | None:
    """``expr`` at ``point``, exact or certified, every kink first replaced by its branch there (its argument's
    sign certified): ``cos(a) + (Step(u) - 1)·cos(a)`` is ``cos(a)`` where u > 0. Evaluated as it stands, the
    sum's exactly cancelling part cannot be told from zero to the digits asked for, and nothing was certified."""
    value = expr.xreplace(dict(point))
    for _ in range(8):  # a kink inside another's argument is met in the next round
        branches = {}
        for kink in value.atoms(*_KINKS):
            arg = kink.args[0]
            sign = _exact_or_certified(arg)
            if sign is None or sign == 0 or arg.free_symbols:
                continue
            positive = sign > 0
            if isinstance(kink, Step) or isinstance(kink, sp.Heaviside):
                branches[kink] = sp.Integer(1 if positive else 0)
            elif isinstance(kink, Relu):
                branches[kink] = arg if positive else sp.Integer(0)
            elif isinstance(kink, sp.Abs):
                branches[kink] = arg if positive else -arg
            else:
                branches[kink] = sp.Integer(1 if positive else -1)
        if not branches:
            break
        value = value.xreplace(branches)
    return _exact_or_certified(value)


def _exact_or_certified(value: sp.Expr) -> sp.Rational | sp.Float | None:
    """An exact rational, or a float whose digits SymPy certifies; None when neither is possible."""
    if value.is_Rational:
        return value
    try:
        out = value.evalf(30, strict=True)
    except (sp.core.evalf.PrecisionExhausted, TypeError, ValueError, ZeroDivisionError, ArithmeticError,
            RecursionError):  # mpmath recursing for the digits of an exactly-zero value
        return None
    if not out.is_Number or out.has(sp.nan, sp.zoo, sp.oo, -sp.oo) or not out.is_real:
        return None
    return out
