"""engines/exact.py: the exact zero test over the per-neuron atoms proves identities, never
calls a nonzero zero, and declines what it cannot represent (the caller then falls back to SymPy)."""

from __future__ import annotations

import random

import mpmath
import numpy as np
import pytest
import sympy as sp
from conftest import BUNDLED, random_sympy_expr

from backpropcheck.engines.exact import Converter, Unsupported
from backpropcheck.engines.symbolic import SymbolicTruth
from backpropcheck.lang.symfuncs import Relu, Step, StepGe, generic
from backpropcheck.loader import load

x, y, z = sp.symbols("x y z", real=True)
v = sp.Symbol("v", positive=True)
f = generic("f")
POINT = (mpmath.mpf(3) / 10, mpmath.mpf(-7) / 10, mpmath.mpf(11) / 10)


@pytest.mark.parametrize(
    "expr",
    [
        sp.diff(1 / (1 + sp.exp(-x)), x) - (1 / (1 + sp.exp(-x))) * (1 - 1 / (1 + sp.exp(-x))),
        sp.exp(x) / (sp.exp(x) + sp.exp(y)) + sp.exp(y) / (sp.exp(x) + sp.exp(y)) - 1,
        sp.exp(x + y) - sp.exp(x) * sp.exp(y),
        sp.exp(2 * x) - sp.exp(x) ** 2,
        sp.exp(x / 2) ** 2 - sp.exp(x),
        (v + 1) ** sp.Rational(-3, 2) * (v + 1) - 1 / sp.sqrt(v + 1),
        Step(x - y) + StepGe(y - x) - 1,  # [a > b] + [b >= a] is 1, ties included
        StepGe(0 * x) - 1,
        Step(2 * x) - Step(x),
        Relu(x) - Relu(-x) - x,
        sp.exp(-sp.log(1 + sp.exp(x))) - 1 / (1 + sp.exp(x)),
        x / (x + y) - 1 / (1 + y / x),
        f(x + y) * 2 - f(y + x) - f(x + y),
        sp.tanh(x) ** 2 + (1 - sp.tanh(x) ** 2) - 1,
    ],
)
def test_exact_proves_identities(expr):
    assert Converter().is_zero(expr)


@pytest.mark.parametrize(
    "expr",
    [
        x - y,
        sp.exp(x) - x,
        Step(x) - Step(y),
        Step(x - y) + Step(y - x) - 1,  # -1 at x = y: a tie by construction (z = 1 * x) is no sample
        StepGe(x) - Step(x),  # 1 at x = 0
        sp.log(x * y) - sp.log(x) - sp.log(y),  # false for negative x, y: must not be "proved"
        generic("Step")(x) + generic("Step")(-x) - 1,  # a user's function named Step is uninterpreted
        sp.sqrt(x ** 2) - x,
    ],
)
def test_exact_never_proves_a_nonzero(expr):
    try:
        assert not Converter().is_zero(expr)
    except Unsupported:
        pass


def test_exact_declines_floats():
    with pytest.raises(Unsupported):
        Converter().is_zero(sp.Float(0.1) * x - y)


def _sound_on_random_expressions(seed: int, count: int) -> None:
    """Whatever the converter calls zero evaluates to zero; most rewritten copies are proved zero
    (not all: it knows no symmetry of tanh, for one — the caller then falls back to SymPy)."""
    rng = random.Random(seed)
    proved = missed = 0
    for _ in range(count):
        e = random_sympy_expr(rng, 3)
        g = random_sympy_expr(rng, 2)
        for candidate, must in ((e - g, False), (sp.expand(e * g) - e * g, True), (e * (g + 1) - e * g - e, True)):
            try:
                zero = Converter().is_zero(candidate)
            except (Unsupported, ZeroDivisionError):
                continue
            if zero:
                proved += 1
                # at 60 fixed digits (mpmath): SymPy's adaptive evalf chases the digits of an exact 0
                # and costs six times as much
                with mpmath.workdps(60):
                    value = sp.lambdify((x, y, z), candidate, "mpmath")(*POINT)
                assert abs(value) < 1e-12, candidate
            elif must:
                missed += 1
    assert proved > count * 2 // 3  # about two of the three candidates per expression are zero
    assert missed <= proved // 20


def test_exact_is_sound_on_random_expressions() -> None:
    _sound_on_random_expressions(7, 150)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 9))
def test_exact_is_sound_on_many_random_expressions(seed: int) -> None:
    _sound_on_random_expressions(seed, 150)


def test_symbolic_decides_softmax_regression_exactly():
    d = load(str(BUNDLED / "softmax_regression_batch.toml"))
    truth = SymbolicTruth(d, {"n": 2, "k": 3, "B": 2})
    claim = next(c for c in d.claims if c.name == "grad_Z")
    claimed = truth.claim_value(claim.node)
    rng = random.Random(0)
    hows = {truth.decide(claimed[idx] - truth.grads["Z"][idx], rng).how for idx in np.ndindex(3, 2)}
    # the softmax's local partials are written through its own atoms (P_i (δ_ij − P_j)),
    # so (P - Y) / B is proved with P as an atom, without the exponentials
    assert hows == {"exact rational arithmetic over the per-neuron atoms"}


def test_equal_side_by_side_agrees_with_the_difference() -> None:
    """Converter.equal decides a == b from each side's conversion, and falls back to the difference when a
    side alone is beyond the test (a float that cancels only in a - b)."""
    import sympy as sp

    from backpropcheck.engines.exact import Converter

    x, y = sp.symbols("x y", real=True)
    conv = Converter()
    assert conv.equal(x * (y + 1), x * y + x)
    assert conv.equal(sp.exp(x) * sp.exp(y), sp.exp(x + y))
    assert not conv.equal(x * (y + 1), x * y)
    assert conv.equal(sp.Float(0.5) * x + y, sp.Float(0.5) * x + y)  # only the difference is float-free
    assert not conv.equal(sp.Float(0.5) * x + y, sp.Float(0.5) * x)


def test_a_zero_numerator_over_a_denominator_is_the_constant_zero() -> None:
    """Σ softmax − 1 over the shared sum converts to 0 / (e0 + e1): a constant, so a step of it has one value
    (StepGe: 1, Step: 0), while a nonzero fraction of generators is no constant."""
    x0, x1 = sp.symbols("x0 x1", real=True)
    e0, e1 = sp.exp(x0), sp.exp(x1)
    u = e0 / (e0 + e1) + e1 / (e0 + e1) - 1
    assert Converter()(u).constant() == 0
    assert Converter()(e0 / (e0 + e1)).constant() is None
    assert Converter().is_zero(StepGe(u) - 1) and Converter().is_zero(Step(u))
    assert not Converter().is_zero(Step(u) - StepGe(u))
