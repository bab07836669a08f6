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
