"""SymPy definitions the op table needs beyond SymPy's own functions.

Imported only by the symbolic engine, so ``--no-symbolic`` runs never import SymPy.
"""

from __future__ import annotations

from functools import cache

import sympy as sp


class Step(sp.Function):
    """1 where the argument is positive, 0 where it is negative.

    Comparisons and masks are never differentiated through (ties are never
    sampled), so the derivative is 0. ``Step(-x)`` is written ``1 - Step(x)`` so
    that equal masks look equal.
    """

    nargs = 1

    @classmethod
    def eval(cls, x):  # noqa: D102 - SymPy's hook
        if x.is_Number:
            return sp.Integer(1) if x > 0 else sp.Integer(0)
        if x.could_extract_minus_sign():
            return 1 - cls(-x)
        coeff, rest = x.as_coeff_Mul()
        if coeff.is_Number and coeff > 0 and coeff != 1:
            return cls(rest)  # the sign of c·x is the sign of x for c > 0
        if isinstance(x, Relu):
            return cls(x.args[0])  # relu(x) > 0 exactly where x > 0
        return None

    def fdiff(self, argindex=1):  # noqa: D102
        return sp.Integer(0)

    def _eval_evalf(self, prec):
        value = self.args[0].evalf(prec)
        if value.is_Number:
            return sp.Integer(1) if value > 0 else sp.Integer(0)
        return None


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
        return sp.exp(xs[i]) / sp.Add(*[sp.exp(x) for x in xs])

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
    """``u ↦ F'(u)`` for a one-argument SymPy builder F, by SymPy's own ``diff``."""
    x = sp.Dummy("x", real=True)
    expr = sp.diff(fn(x), x)
    return lambda u: expr.xreplace({x: u})
