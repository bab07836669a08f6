"""SymPy definitions the op table needs beyond SymPy's own functions.

Imported only by the symbolic engine, so ``--no-symbolic`` runs never import SymPy.
"""

from __future__ import annotations

from functools import cache

import sympy as sp


class Step(sp.Function):
    """``[u > 0]``: 1 where the argument is positive, 0 where it is zero or negative (``a > b`` is Step(a − b)).

    Its twin :class:`StepGe` is ``[u ≥ 0]`` (``a >= b``). ``Step(-u)`` is written ``1 - StepGe(u)`` (and
    ``StepGe(-u)`` as ``1 - Step(u)``), exactly, ties included, so that equal masks look equal. That the two
    agree off ties is a fact about an argument's values, not its form: the symbolic engine merges them only
    where the argument's zero set is null (:meth:`.SymbolicTruth.atomize`). Masks are never differentiated
    through, so the derivative is 0.
    """

    nargs = 1
    strict = True

    @classmethod
    def eval(cls, x):  # noqa: D102 - SymPy's hook
        if x.is_Number:
            return sp.Integer(1) if (x > 0 if cls.strict else x >= 0) else sp.Integer(0)
        extreme = _against_extreme(x, cls.strict)
        if extreme is not None:
            return extreme
        if x.could_extract_minus_sign():
            return 1 - cls.twin()(-x)
        coeff, rest = x.as_coeff_Mul()
        if coeff.is_Number and coeff > 0 and coeff != 1:
            return cls(rest)  # the sign of c·x is the sign of x for c > 0
        if isinstance(x, Relu):  # relu(x) > 0 exactly where x > 0; relu(x) >= 0 everywhere
            return cls(x.args[0]) if cls.strict else sp.Integer(1)
        return None

    @classmethod
    def twin(cls) -> type[Step]:
        """The step of the other strictness: ``Step(-u) = 1 - twin(u)``."""
        return StepGe if cls.strict else Step

    def fdiff(self, argindex=1):  # noqa: D102
        return sp.Integer(0)

    def _eval_evalf(self, prec):
        value = self.args[0].evalf(prec)
        if value.is_Number:
            return sp.Integer(1) if (value > 0 if self.strict else value >= 0) else sp.Integer(0)
        return None


class StepGe(Step):
    """``[u ≥ 0]``: 1 where the argument is positive or zero (``a >= b`` is StepGe(a − b)); see :class:`Step`."""

    strict = False


def sign_of(u: sp.Expr) -> sp.Expr:
    """``sign(u)``: 1, 0 or -1, with 0 at 0 as NumPy's (``[u > 0] + [u >= 0] - 1``)."""
    return Step(u) + StepGe(u) - 1


def is_mask(e: sp.Expr) -> bool:
    """0 or 1 by construction: a number 0 or 1, a step, one minus a mask, or a product or power of masks."""
    if e.is_Number:
        return e in (0, 1)
    if isinstance(e, Step):
        return True
    if e.is_Mul or (e.is_Pow and e.exp.is_Integer and e.exp > 0):
        return all(is_mask(a) for a in (e.args if e.is_Mul else (e.base,)))
    if e.is_Add and len(e.args) == 2 and sp.Integer(1) in e.args:
        other = e.args[1] if e.args[0] == 1 else e.args[0]
        return is_mask(-other)
    return False


def nonzero(c: sp.Expr) -> sp.Expr:
    """``[c != 0]``, the condition of ``where``: ``c`` itself for a mask, else ``[c > 0] + [c < 0]``."""
    return c if is_mask(c) else Step(c) + Step(-c)


class Relu(sp.Function):
    """``max(x, 0)`` with derivative ``Step(x)``."""

    nargs = 1

    @classmethod
    def eval(cls, x):  # noqa: D102
        if x.is_Number:
            return x if x > 0 else sp.Integer(0)
        coeff, rest = x.as_coeff_Mul()
        if coeff.is_Number and coeff > 0 and coeff != 1:
            return coeff * cls(rest)  # relu is positively homogeneous
        return None

    def fdiff(self, argindex=1):  # noqa: D102
        return Step(self.args[0])

    def _eval_evalf(self, prec):
        value = self.args[0].evalf(prec)
        if value.is_Number:
            return value if value > 0 else sp.Integer(0)
        return None


class SoftmaxEntry(sp.Function):
    """Entry ``i`` of ``softmax(x)`` for one slice ``x = (x_0, …, x_{k-1})``: args ``(i, x_0, …)``.

    Its derivative is written through softmax entries themselves,
    ``∂s_i/∂x_j = s_i (δ_ij − s_j)``, so an adjoint through a softmax stays a small
    expression in the output atoms instead of a rational function of exponentials.
    :meth:`as_exp` gives ``exp(x_i) / Σ_j exp(x_j)``.
    """

    @classmethod
    def eval(cls, i, *xs):  # noqa: D102 - SymPy's hook
        return None

    def fdiff(self, argindex=1):  # noqa: D102
        if argindex == 1:
            return sp.Integer(0)  # the entry's position is not a variable
        i, xs = int(self.args[0]), self.args[1:]
        j = argindex - 2
        other = SoftmaxEntry(sp.Integer(j), *xs)
        return self * ((1 if i == j else 0) - other)

    def as_exp(self) -> sp.Expr:
        i, xs = int(self.args[0]), self.args[1:]
        return applied(sp.exp, xs[i]) / sp.Add(*[applied(sp.exp, x) for x in xs])

    def _eval_evalf(self, prec):
        return self.as_exp().evalf(prec)

    def _sympystr(self, printer) -> str:
        i, xs = int(self.args[0]), self.args[1:]
        return f"softmax({', '.join(printer.doprint(x) for x in xs)})[{i}]"


def softmax_as_exp(expr: sp.Expr) -> sp.Expr:
    """Every :class:`SoftmaxEntry` of ``expr`` written as ``exp(x_i) / Σ_j exp(x_j)``."""
    if not expr.has(SoftmaxEntry):
        return expr
    return expr.replace(lambda e: isinstance(e, SoftmaxEntry), lambda e: e.as_exp())


def applied(fn: type[sp.Function], u: sp.Expr) -> sp.Expr:
    """``fn(u)`` for ``fn`` one of exp, log, tanh: the very expression SymPy builds, without its ``eval`` where
    that returns ``u``'s node unchanged anyway. On a sum of products (``W[0,0]*x[0] + … + b[0]``), ``exp``'s
    eval builds ``exp`` of every term and asks whether the sum is zero, which costs milliseconds of deduction
    over the terms' assumptions (100 times the node itself); ``log``'s and ``tanh``'s ask the same. On a sum
    with free symbols, no float term (``exp(1.5)`` is evaluated to a number), and no ``log``, ``I``, ``pi`` or
    infinity inside, those evals change nothing but tanh's sign, for the sums this engine builds: over real and
    positive symbols (never one assumed zero, which would let SymPy prove ``x*z + z`` zero), with its own
    functions, none of which SymPy can prove zero."""
    if not (isinstance(u, sp.Add) and u.free_symbols) or any(a.is_Float for a in u.args) or \
            u.has(sp.log, sp.I, sp.pi, sp.oo, -sp.oo, sp.zoo, sp.nan):
        return fn(u)
    if fn is sp.tanh and u.could_extract_minus_sign():
        return -sp.tanh(-u, evaluate=False)  # tanh is odd: its eval's one rewrite of such a sum
    if fn is sp.exp or fn is sp.log or fn is sp.tanh:
        return fn(u, evaluate=False)
    return fn(u)


@cache
def generic(name: str) -> type[sp.Function]:
    """An uninterpreted element-wise function ``f`` whose derivative is ``f_prime``.

    Proofs made with it hold for every differentiable f.
    """

    def fdiff(self, argindex=1):
        return generic(f"{name}_prime")(self.args[0])

    return type(name, (sp.Function,), {"nargs": 1, "fdiff": fdiff})


@cache
def derivative_of(fn):
    """``u ↦ F'(u)`` for a one-argument SymPy builder F, by SymPy's own ``diff``; a sigmoid's as ``s·(1 − s)``,
    the form the truth's sweep writes it in (with the sigmoid's atom for s)."""
    x = sp.Dummy("x", real=True)
    value = fn(x)
    w = sigmoid_exponent(value)
    expr = sp.diff(value, x) if w is None else -sp.diff(w, x) * value * (1 - value)
    return lambda u: expr.xreplace({x: u})


def sigmoid_exponent(value: sp.Expr) -> sp.Expr | None:
    """``w`` of ``1/(1 + exp(w))`` (the sigmoid of ``u = −w``, as the op table writes it), else None."""
    if value.__class__ is sp.Pow and value.args[1] is sp.S.NegativeOne:
        base = value.args[0]
        if base.__class__ is sp.Add and len(base.args) == 2 and base.args[0] is sp.S.One \
                and base.args[1].__class__ is sp.exp:
            return base.args[1].args[0]
    return None


class MaxOf(sp.Function):
    """``max(x_0, …, x_{k-1})`` of one slice. Its partial ``∂/∂x_i`` is :class:`ArgShare`: the gradient goes
    to the largest entry, shared evenly among tied ones."""

    @classmethod
    def eval(cls, *xs):  # noqa: D102
        if len(xs) == 1:
            return xs[0]
        if all(x.is_Number for x in xs):
            return max(xs)
        return _distinct(cls, xs)

    def fdiff(self, argindex=1):  # noqa: D102
        return ArgShare(argindex - 1, 1, *self.args)

    def _eval_evalf(self, prec):
        values = [x.evalf(prec) for x in self.args]
        return max(values) if all(v.is_Number for v in values) else None


class MinOf(sp.Function):
    """``min(x_0, …, x_{k-1})``: ``∂/∂x_i`` is :class:`ArgShare` of the arg-min."""

    @classmethod
    def eval(cls, *xs):  # noqa: D102
        if len(xs) == 1:
            return xs[0]
        if all(x.is_Number for x in xs):
            return min(xs)
        return _distinct(cls, xs)

    def fdiff(self, argindex=1):  # noqa: D102
        return ArgShare(argindex - 1, -1, *self.args)

    def _eval_evalf(self, prec):
        values = [x.evalf(prec) for x in self.args]
        return min(values) if all(v.is_Number for v in values) else None


def _distinct(cls: type, xs: tuple) -> sp.Expr | None:
    """The max (min) of a slice holding one entry twice is that of its distinct entries (the max of
    ``concat([x, x])`` is the max of x): written so, each entry's partial is its own arg-max indicator once,
    not once per copy (which summed to 2 at the arg-max, where the gradient is 1). None when all differ."""
    distinct = tuple(dict.fromkeys(xs))
    return cls(*distinct) if len(distinct) < len(xs) else None


class ArgShare(sp.Function):
    """The partial of ``max(x_0, …)`` (``sign`` 1) or ``min`` (``sign`` -1) by ``x_i``; args ``(i, sign, x_0, …)``.

    1 where x_i is the only extreme entry, 1/k where k entries tie at the extreme, else 0: the even split of
    the numeric engine (and of JAX), which a slice of copies (``x[:, None] * ones((n, 2))``) reaches by
    construction. Where x_i ties with no other entry but on a null set it is the arg-max indicator
    ``Π_{j≠i} [x_i > x_j]`` (:meth:`indicator`, the exact test's form); :meth:`as_steps` is exact everywhere.
    """

    @classmethod
    def eval(cls, i, sign, *xs):  # noqa: D102 - SymPy's hook
        if all(x.is_Number for x in xs):
            values = [sign * x for x in xs]
            top = max(values)
            tied = sum(1 for v in values if v == top)
            return sp.Rational(1, tied) if values[int(i)] == top else sp.Integer(0)
        return None

    def fdiff(self, argindex=1):  # noqa: D102
        return sp.Integer(0)  # piecewise constant

    def parts(self) -> tuple[int, int, tuple]:
        i, sign, *xs = self.args
        return int(i), int(sign), tuple(xs)

    def indicator(self) -> sp.Expr:
        """``Π_{j≠i} [x_i > x_j]`` (for a min, ``[x_j > x_i]``): the share wherever x_i ties with no other entry."""
        i, sign, xs = self.parts()
        # unevaluated, so x_i comes first in each step as a reader expects (the exact test normalises anyway)
        return sp.Mul(*[Step(sign * (xs[i] - x), evaluate=False) for j, x in enumerate(xs) if j != i])

    def reaches(self, k: int | None = None) -> sp.Expr:
        """``T_k = Π_{j≠k} [x_k >= x_j]``: entry k (by default i) reaches the extreme, ties included (the mask
        ``x >= max(x)``); equal to the share wherever entry i ties with no other."""
        i, sign, xs = self.parts()
        k = i if k is None else k
        return sp.Mul(*[StepGe(sign * (xs[k] - x)) for j, x in enumerate(xs) if j != k])

    def as_steps(self) -> sp.Expr:
        """``T_i / Σ_k T_k`` (:meth:`reaches`): exact, ties included."""
        return self.reaches() / sp.Add(*[self.reaches(k) for k in range(len(self.args) - 2)])

    def differences(self) -> list[sp.Expr]:
        """``sign·(x_i − x_j)`` for every other entry j: where one is 0 the share is decided by a tie."""
        i, sign, xs = self.parts()
        return [sign * (xs[i] - x) for j, x in enumerate(xs) if j != i]

    def _eval_evalf(self, prec):
        i, sign, xs = self.parts()
        values = [x.evalf(prec) for x in xs]
        if not all(v.is_Number for v in values):
            return None
        # a tie only where the entries are one expression (copies); two values within rounding of each other
        # written differently (sigmoid(x) and 0.5 + 0.5 tanh(x / 2)) cannot be told apart at this precision
        scale = max([abs(v) for v in values] + [sp.Integer(1)])
        for j, v in enumerate(values):
            if j != i and xs[j] != xs[i] and abs(values[i] - v) <= sp.Float(2.0) ** (-prec // 2) * scale:
                return None
        return ArgShare(i, sign, *[values[j] if xs[j] != xs[i] else values[i] for j in range(len(xs))])


def ties_extreme(e: MaxOf | MinOf, i: int) -> sp.Expr:
    """1 where entry ``i`` of the slice equals its max (or min), ties included: ``x_i >= x_j`` for every j."""
    return ArgShare(i, 1 if isinstance(e, MaxOf) else -1, *e.args).reaches()


def _equal_expanded(a: sp.Expr, b: sp.Expr) -> bool:
    """``expand(a - b) == 0`` for two entries of a max/min that are not identical; two distinct symbols (a
    max-pool window's entries) are never equal, and need no expansion to say so."""
    if a.is_Symbol and b.is_Symbol:
        return False
    return sp.expand(a - b) == 0


def _against_extreme(x: sp.Expr, strict: bool) -> sp.Expr | None:
    """A step of an entry x_i of xs against ``max(xs)``, written by construction rather than left to a
    sampled tie: ``x_i >= max(xs)`` is the indicator that x_i reaches the max (:func:`ties_extreme`),
    ``x_i > max(xs)`` is 0, ``max(xs) > x_i`` is 1 minus that indicator, ``max(xs) >= x_i`` is 1 (likewise
    for min). The mask ``x >= max(x)`` is so exactly the arg-max indicator where the entries differ."""
    if not x.is_Add:
        return None
    found = [(t, 1) if isinstance(t, (MaxOf, MinOf)) else (t.args[1], -1) for t in x.args
             if isinstance(t, (MaxOf, MinOf)) or (t.is_Mul and len(t.args) == 2 and t.args[0] == -1
                                                  and isinstance(t.args[1], (MaxOf, MinOf)))]
    if len(found) == 1:
        term, sign = found[0]
        entry = -(x - sign * term) if sign == 1 else x + term
        matches = [k for k, arg in enumerate(term.args) if arg == entry or _equal_expanded(arg, entry)]
        if not matches:
            return None
        # with copies of the entry among xs (max(concat([x, x]))), "x_i reaches the extreme" is the same for each
        reaches = ties_extreme(term, matches[0])
        # the argument is x_i − max or min − x_i (never positive, 0 where x_i reaches the extreme),
        # or its negative (never negative)
        at_most_zero = (sign == -1) == isinstance(term, MaxOf)
        if at_most_zero:
            return sp.Integer(0) if strict else reaches
        return 1 - reaches if strict else sp.Integer(1)
    return None


def kink_arguments(e: sp.Basic) -> list[sp.Expr]:
    """The arguments whose sign picks a branch somewhere in ``e``: each ``Step``/``Relu``/``Abs``/``sign``/
    ``Heaviside``'s own, and a ``Clip``'s two (``u − lo`` and ``hi − u``). Whoever looks for the sizes or
    points on both sides of every kink reads them here."""
    out = [k.args[0] for k in e.atoms(Step, Relu, sp.Abs, sp.sign, sp.Heaviside)]  # StepGe is a Step
    out += [arg for c in e.atoms(Clip) for arg in (c.args[0] - c.args[1], c.args[2] - c.args[0])]
    return out


class Clip(sp.Function):
    """``clip(u, lo, hi)`` with ``lo``/``hi`` numbers; its derivative is the product
    ``Step(u − lo)·Step(hi − u)`` (1 strictly inside, 0 outside), the form a mask claim takes."""

    nargs = 3

    @classmethod
    def eval(cls, u, lo, hi):  # noqa: D102
        if u.is_Number:
            return min(max(u, lo), hi)
        return None

    def fdiff(self, argindex=1):  # noqa: D102
        if argindex != 1:
            return sp.Integer(0)  # the bounds are literals
        u, lo, hi = self.args
        return Step(u - lo) * Step(hi - u)

    def _eval_evalf(self, prec):
        u, lo, hi = (a.evalf(prec) for a in self.args)
        return min(max(u, lo), hi) if u.is_Number else None
