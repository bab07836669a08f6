"""The op table, entry by entry: each vector-Jacobian product against central finite
differences, each SymPy evaluation against the NumPy one, each ``NAME_prime`` against
SymPy's own derivative. A new op without a row here fails ``test_every_op_is_covered``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import sympy as sp

from backpropcheck.lang.ops import ELEMENTWISE, GENERIC_STANDINS, OPS, MissingRule, Op, sig, unbroadcast
from backpropcheck.lang.symfuncs import Relu, Step, derivative_of, generic

Sampler = Callable[[np.random.Generator], np.ndarray]


def real(*shape: int) -> Sampler:
    return lambda rng: rng.normal(size=shape)


def positive(*shape: int) -> Sampler:
    return lambda rng: rng.uniform(0.5, 2.0, size=shape)


def away_from_zero(*shape: int) -> Sampler:
    """Magnitudes in [0.3, 1.5] with random signs: kinks (abs, relu) are never within reach of a step."""
    return lambda rng: rng.uniform(0.3, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def mask(*shape: int) -> Sampler:
    return lambda rng: (rng.uniform(size=shape) > 0.5).astype(float)


@dataclass
class Case:
    op: str
    inputs: list[Sampler]
    params: dict[str, Any] = field(default_factory=dict)
    differentiable: tuple[int, ...] | None = None  # arguments the vjp covers (None: all)
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or self.op


def _pair_distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=shape)
    return a, a + rng.uniform(0.3, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


CASES: list[Case] = [
    Case("add", [real(3, 4), real(4)], label="add-broadcast"),
    Case("add", [real(3, 1), real(1, 4)], label="add-outer-broadcast"),
    Case("sub", [real(3, 4), real(3, 4)]),
    Case("sub", [real(), real(3)], label="sub-scalar"),
    Case("mul", [real(3, 4), real(3, 1)]),
    Case("div", [real(3, 4), away_from_zero(4)]),
    Case("neg", [real(2, 3)]),
    Case("pow", [real(3, 2)], {"exponent": 2.0, "text": "2"}, label="pow-2"),
    Case("pow", [positive(4)], {"exponent": -1.5, "text": "-1.5"}, label="pow-neg-frac"),
    Case("pow", [positive(4)], {"exponent": 0.5, "text": "0.5"}, label="pow-half"),
    Case("matmul", [real(3, 4), real(4, 2)], label="matmul-mm"),
    Case("matmul", [real(3, 4), real(4)], label="matmul-mv"),
    Case("matmul", [real(3), real(3, 4)], label="matmul-vm"),
    Case("matmul", [real(4), real(4)], label="matmul-vv"),
    Case("dot", [real(4), real(4)]),
    Case("dot", [real(2, 3), real(3)], label="dot-mv"),
    Case("outer", [real(3), real(4)]),
    Case("T", [real(3, 4)]),
    Case("T", [real(3)], label="T-vector"),
    Case("expand", [real(3)], {"items": (":", None)}, label="expand-col"),
    Case("expand", [real(3)], {"items": (None, ":")}, label="expand-row"),
    Case("expand", [real(3, 2)], {"items": (":", None)}, label="expand-middle"),
    Case("sum", [real(3, 4)], {"axis": None, "keepdims": False}, label="sum-all"),
    Case("sum", [real(3, 4)], {"axis": 0, "keepdims": False}, label="sum-0"),
    Case("sum", [real(3, 4)], {"axis": 1, "keepdims": True}, label="sum-1-keep"),
    Case("sum", [real(3, 4)], {"axis": None, "keepdims": True}, label="sum-all-keep"),
    Case("mean", [real(3, 4)], {"axis": None, "keepdims": False}, label="mean-all"),
    Case("mean", [real(3, 4)], {"axis": 1, "keepdims": False}, label="mean-1"),
    Case("mean", [real(3, 4)], {"axis": 0, "keepdims": True}, label="mean-0-keep"),
    Case("trace", [real(3, 3)]),
    Case("diag", [real(3)], label="diag-vector"),
    Case("diag", [real(3, 3)], label="diag-matrix"),
    Case("ones", [], {"shape": ("n", 2), "dims": (3, 2)}, differentiable=()),
    Case("zeros", [], {"shape": ("n",), "dims": (3,)}, differentiable=()),
    Case("eye", [], {"shape": ("n",), "dims": (3, 3)}, differentiable=()),
    Case("gt", [real(3), real(3)], differentiable=()),
    Case("ge", [real(3), real(3)], differentiable=()),
    Case("lt", [real(3), real(3)], differentiable=()),
    Case("le", [real(3), real(3)], differentiable=()),
    Case("where", [mask(3, 4), real(3, 4), real(4)], differentiable=(1, 2)),
    Case("maximum", [real(3, 4), real(3, 4)]),
    Case("minimum", [real(3, 4), real(4)]),
    Case("softmax", [real(3, 4)], {"axis": 0}, label="softmax-0"),
    Case("softmax", [real(3, 4)], {"axis": 1}, label="softmax-1"),
    Case("softmax", [real(5)], {"axis": None}, label="softmax-all"),
    Case("log_softmax", [real(3, 4)], {"axis": 0}, label="log_softmax-0"),
    Case("log_softmax", [real(3, 4)], {"axis": -1}, label="log_softmax-last"),
    Case("logsumexp", [real(3, 4)], {"axis": 0, "keepdims": False}, label="logsumexp-0"),
    Case("logsumexp", [real(3, 4)], {"axis": 1, "keepdims": True}, label="logsumexp-1-keep"),
    Case("logsumexp", [real(3, 4)], {"axis": None, "keepdims": False}, label="logsumexp-all"),
    Case("sum", [real(2, 3, 4)], {"axis": (0, 2), "keepdims": False}, label="sum-tuple"),
    Case("mean", [real(2, 3, 4)], {"axis": (1, -1), "keepdims": True}, label="mean-tuple-keep"),
    Case("logsumexp", [real(2, 3, 4)], {"axis": (0, 1), "keepdims": False}, label="logsumexp-tuple"),
    Case("max", [real(3, 4)], {"axis": 1, "keepdims": False}, label="max-1"),
    Case("max", [real(3, 4)], {"axis": None, "keepdims": False}, label="max-all"),
    Case("max", [real(2, 3, 4)], {"axis": (1, 2), "keepdims": True}, label="max-tuple-keep"),
    Case("min", [real(3, 4)], {"axis": 0, "keepdims": True}, label="min-0-keep"),
    Case("min", [real(2, 3, 4)], {"axis": -1, "keepdims": False}, label="min-last"),
    Case("clip", [lambda rng: rng.choice([-1.2, -0.8, -0.3, 0.1, 0.4, 0.9], size=(3, 4)) + rng.uniform(-0.05, 0.05, (3, 4))],
         {"lo": -0.5, "hi": 0.6}, label="clip"),
    Case("reshape", [real(6, 4)], {"shape": (2, 3, 2, 2)}),
    Case("transpose", [real(2, 3, 4)], {"axes": (1, 2, 0)}),
    Case("transpose", [real(2, 3, 4)], {"axes": None}, label="transpose-reverse"),
    Case("swapaxes", [real(2, 3, 4)], {"axis1": 0, "axis2": 2}),
    Case("flip", [real(3, 4)], {"axis": 1}),
    Case("flip", [real(2, 3, 4)], {"axis": (0, 2)}, label="flip-tuple"),
    Case("slice", [real(3, 8)], {"items": (":", (2, 5))}),
    Case("slice", [real(2, 3, 8)], {"items": ("...", (0, 4), None)}, label="slice-ellipsis-none"),
    Case("concat", [real(3, 2), real(3, 4), real(3, 1)], {"axis": 1}),
    Case("stack", [real(3, 2), real(3, 2)], {"axis": 1}),
    Case("pad", [real(3, 4)], {"widths": ((0, 1), (2, 3))}),
    Case("einsum", [real(3, 4), real(4)], {"spec": "ij,j->i"}, label="einsum-mv"),
    Case("einsum", [real(3, 4), real(2, 4)], {"spec": "ij,kj->ik"}, label="einsum-abt"),
    Case("einsum", [real(3, 4)], {"spec": "ij->j"}, label="einsum-colsum"),
    Case("einsum", [real(3, 4), real(3)], {"spec": "ij,i->"}, label="einsum-scalar"),
    Case("einsum", [real(3, 4), real(5)], {"spec": "ij,k->ik"}, label="einsum-sum-inside"),
    Case("einsum", [real(2, 3), real(3, 4), real(4)], {"spec": "ij,jk,k->i"}, label="einsum-three"),
]

_DOMAIN: dict[str, Callable[..., Sampler]] = {
    "log": positive, "sqrt": positive, "rsqrt": positive, "log1p": positive,
    "logit": lambda *s: (lambda rng: rng.uniform(0.1, 0.9, size=s)),
    "abs": away_from_zero, "relu": away_from_zero, "sign": away_from_zero,
}
for _name, _fn in ELEMENTWISE.items():
    _sampler = _DOMAIN.get(_name, real)(3, 2)
    CASES.append(Case("elementwise", [_sampler], {"fn": _fn, "prime": False}, label=f"elementwise-{_name}",
                      differentiable=() if _fn.nograd else None))

# ops the table defines but that are never differentiated through
NOT_DIFFERENTIATED = {"gt", "ge", "lt", "le", "ones", "zeros", "eye"}


def _rng(case: Case) -> np.random.Generator:
    return np.random.default_rng(sum(map(ord, case.id)))


def _inputs(case: Case, rng: np.random.Generator) -> list[np.ndarray]:
    if case.op in ("maximum", "minimum"):
        a, b = _pair_distinct(rng, (3, 4))
        return [a, b if case.op == "maximum" else b[0]]  # minimum broadcasts (3, 4) with (4,)
    if case.op in ("gt", "ge", "lt", "le"):
        a, b = _pair_distinct(rng, (3,))
        return [a, b]
    return [np.asarray(s(rng), dtype=float) for s in case.inputs]


def test_every_op_is_covered() -> None:
    assert {c.op for c in CASES} == set(OPS)
    assert {c.params["fn"].name for c in CASES if c.op == "elementwise"} == set(ELEMENTWISE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_vjp_matches_central_differences(case: Case) -> None:
    """⟨g, J dx⟩ by central differences equals ⟨vjp(g), dx⟩, argument by argument."""
    op = OPS[case.op]
    if case.op in NOT_DIFFERENTIATED:
        assert op.vjp is None and op.nograd
        return
    rng = _rng(case)
    args = _inputs(case, rng)
    out = np.asarray(op.numeric(*args, **case.params), dtype=float)
    g = rng.normal(size=out.shape)
    local = op.vjp(g, out, *args, **case.params)
    assert len(local) == len(args)
    diff_args = range(len(args)) if case.differentiable is None else case.differentiable
    for k in range(len(args)):
        if k not in diff_args:
            assert local[k] is None, f"argument {k} of {case.op} must not be differentiated"
            continue
        grad = unbroadcast(np.asarray(local[k], dtype=float), args[k].shape)
        assert grad.shape == args[k].shape
        dx = rng.normal(size=args[k].shape)
        eps = 1e-6
        plus = list(args)
        minus = list(args)
        plus[k] = args[k] + eps * dx
        minus[k] = args[k] - eps * dx
        fd = (np.asarray(op.numeric(*plus, **case.params)) - np.asarray(op.numeric(*minus, **case.params))) / (2 * eps)
        expected = float(np.sum(g * fd))
        got = float(np.sum(grad * dx))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-8), f"{case.id}: argument {k}"


def test_every_op_has_its_rules_or_says_it_has_none() -> None:
    """An op is either marked ``nograd`` or carries both a VJP and a tangent rule."""
    for name, op in OPS.items():
        assert op.nograd == (name in NOT_DIFFERENTIATED), name
        if not op.nograd:
            assert op.vjp is not None and op.tangent is not None, name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_tangent_matches_central_differences(case: Case) -> None:
    """The table's forward-mode rule: tangent(da, db, …) equals (op(x + ε·dx) − op(x − ε·dx)) / 2ε."""
    op = OPS[case.op]
    if case.op in NOT_DIFFERENTIATED:
        return
    rng = _rng(case)
    args = _inputs(case, rng)
    out = np.asarray(op.numeric(*args, **case.params), dtype=float)
    diff_args = range(len(args)) if case.differentiable is None else case.differentiable
    tans = [rng.normal(size=np.shape(a)) if k in diff_args else None for k, a in enumerate(args)]
    got = op.forward_tangent(tuple(args), out, case.params, tans)
    got = np.zeros(out.shape) if got is None else np.asarray(got, dtype=float)  # None: a zero tangent
    eps = 1e-6
    plus = [a if t is None else a + eps * t for a, t in zip(args, tans)]
    minus = [a if t is None else a - eps * t for a, t in zip(args, tans)]
    fd = (np.asarray(op.numeric(*plus, **case.params)) - np.asarray(op.numeric(*minus, **case.params))) / (2 * eps)
    np.testing.assert_allclose(np.broadcast_to(got, fd.shape), fd, rtol=1e-6, atol=1e-8, err_msg=case.id)


def test_a_missing_rule_raises_instead_of_being_zero() -> None:
    op = Op("nothing", lambda a, **_: a, lambda a: a, None)
    with pytest.raises(MissingRule, match="vector-Jacobian"):
        op.backward(np.ones(2), np.ones(2), np.ones(2))
    with pytest.raises(MissingRule, match="tangent"):
        op.forward_tangent((np.ones(2),), np.ones(2), {}, [np.ones(2)])


CUMSUM = """
[derivation]
title = "a vector op registered without its derivative rules"

[dims]
n = "entries"

[inputs]
x = ["n"]

[forward]
h = "cumsum(x)"

[loss]
upstream = "h"

[claims]
grad_x = "grad_h"
"""


@pytest.mark.parametrize("symbolic", [False, True])
def test_a_wrong_claim_through_an_op_without_rules_is_an_error_not_verified(
    tmp_path, monkeypatch, symbolic: bool
) -> None:
    """Regression: a vector op without a VJP was treated as "never differentiated" by both the
    reverse sweep and the forward check, so ``grad_x = grad_h`` through a cumsum came back
    ``verified``. Now the missing rule is an error of backpropcheck, whatever else agrees."""
    from conftest import check_text

    from backpropcheck.checker import Options

    monkeypatch.setitem(OPS, "cumsum", Op("cumsum", lambda a, **_: a, np.cumsum, None, signature=sig("x")))
    result = check_text(tmp_path, CUMSUM, Options(trials=2, shapes=1, symbolic=symbolic))
    assert result.status == "error", [(c.name, c.verdict) for c in result.claims]
    assert not any(c.verdict in ("verified", "proved") for c in result.claims)
    assert "'cumsum' has no vector-Jacobian product" in str(result.error)


def _to_sympy(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(*x.shape):
        out[idx] = sp.Rational(str(float(x[idx])))
    return out


def _to_float(value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=object)
    out = np.empty(arr.shape)
    for idx in np.ndindex(*arr.shape):
        out[idx] = float(sp.N(sp.sympify(arr[idx]), 30))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sympy_evaluation_agrees_with_numpy(case: Case) -> None:
    """The symbolic engine runs the op's SymPy evaluation (or its NumPy one on object arrays)."""
    op = OPS[case.op]
    rng = _rng(case)
    args = _inputs(case, rng)
    numeric = np.asarray(op.numeric(*args, **case.params), dtype=float)
    fn = op.symbolic if op.symbolic is not None else op.numeric
    symbolic = _to_float(fn(*[_to_sympy(a) for a in args], **case.params))
    assert symbolic.shape == numeric.shape
    np.testing.assert_allclose(symbolic, numeric, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_prime_numeric_matches_sympy_derivative(name: str) -> None:
    """``NAME_prime`` in NumPy equals SymPy's diff of the SymPy definition, at random points."""
    fn = ELEMENTWISE[name]
    x = np.asarray(_DOMAIN.get(name, real)(6)(np.random.default_rng(len(name))), dtype=float)
    op = OPS["elementwise"]
    numeric = op.numeric(x, fn=fn, prime=True)
    symbolic = _to_float(op.symbolic(_to_sympy(x), fn=fn, prime=True))
    np.testing.assert_allclose(symbolic, numeric, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_prime_matches_central_differences(name: str) -> None:
    fn = ELEMENTWISE[name]
    x = np.asarray(_DOMAIN.get(name, real)(6)(np.random.default_rng(7 + len(name))), dtype=float)
    eps = 1e-6
    fd = (fn.numeric(x + eps) - fn.numeric(x - eps)) / (2 * eps)
    np.testing.assert_allclose(fn.derivative(x), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("label", [s[0] for s in GENERIC_STANDINS])
def test_generic_standins_have_the_right_derivative(label: str) -> None:
    _, f, fprime = next(s for s in GENERIC_STANDINS if s[0] == label)
    x = np.linspace(-2.0, 2.0, 17)
    eps = 1e-6
    np.testing.assert_allclose(fprime(x), (f(x + eps) - f(x - eps)) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_generic_function_is_uninterpreted_with_its_prime_as_derivative() -> None:
    x = sp.Symbol("x", real=True)
    f = generic("f")
    assert sp.diff(f(x), x) == generic("f_prime")(x)
    assert generic("f") is f  # one class per name, so equal expressions compare equal
    assert sp.diff(f(2 * x), x) == 2 * generic("f_prime")(2 * x)


def test_step_and_relu() -> None:
    x = sp.Symbol("x", real=True)
    assert Step(sp.Integer(3)) == 1 and Step(sp.Rational(-1, 2)) == 0
    assert Step(-x) == 1 - Step(x)
    assert sp.diff(Step(x), x) == 0
    assert sp.diff(Relu(x), x) == Step(x)
    assert Relu(sp.Integer(-2)) == 0 and Relu(sp.Rational(3, 2)) == sp.Rational(3, 2)
    assert derivative_of(ELEMENTWISE["tanh"].symbolic)(x) == 1 - sp.tanh(x) ** 2
