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
from backpropcheck.lang.symfuncs import Relu, Step, StepGe, derivative_of, generic

Sampler = Callable[[np.random.Generator], np.ndarray]


def real(*shape: int) -> Sampler:
    return lambda rng: rng.normal(size=shape)


def positive(*shape: int) -> Sampler:
    return lambda rng: rng.uniform(0.5, 2.0, size=shape)


def away_from_zero(*shape: int) -> Sampler:
    """Magnitudes in [0.3, 1.5] with random signs: kinks (abs, relu) are never within reach of a step."""
    return lambda rng: rng.uniform(0.3, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def indices(high: int, *shape: int) -> Sampler:
    """Integers in 0 … high-1 with a repeat: a gather's adjoint must add, not overwrite."""
    def draw(rng: np.random.Generator) -> np.ndarray:
        out = rng.integers(0, high, size=shape)
        out.reshape(-1)[-1] = out.reshape(-1)[0]
        return out

    return draw


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
    Case("gather", [real(5, 3), indices(5, 2, 4)], differentiable=(0,)),
    Case("scatter_add", [real(2, 4, 3), indices(5, 2, 4)], {"V": 5}, differentiable=(0,)),
    Case("one_hot", [indices(5, 2, 3)], {"V": 5}, differentiable=()),
    Case("take_along_axis", [real(4, 5), indices(5, 4, 1)], {"axis": 1}, differentiable=(0,)),
    Case("take_along_axis", [real(4, 5), indices(4, 3, 5)], {"axis": 0}, differentiable=(0,), label="take-axis0"),
    Case("einsum", [real(3, 4), real(4)], {"spec": "ij,j->i"}, label="einsum-mv"),
    Case("einsum", [real(3, 4), real(2, 4)], {"spec": "ij,kj->ik"}, label="einsum-abt"),
    Case("einsum", [real(3, 4)], {"spec": "ij->j"}, label="einsum-colsum"),
    Case("einsum", [real(3, 4), real(3)], {"spec": "ij,i->"}, label="einsum-scalar"),
    Case("einsum", [real(3, 4), real(5)], {"spec": "ij,k->ik"}, label="einsum-sum-inside"),
    Case("einsum", [real(2, 3), real(3, 4), real(4)], {"spec": "ij,jk,k->i"}, label="einsum-three"),
    Case("cumsum", [real(3, 4)], {"axis": 1}, label="cumsum-1"),
    Case("cumsum", [real(5)], {"axis": 0}, label="cumsum-vector"),
    Case("cumsum", [real(2, 3, 4)], {"axis": -2}, label="cumsum-middle"),
    Case("var", [real(3, 4)], {"axis": 1}, label="var-rows"),
    Case("var", [real(3, 4)], label="var-all"),
    Case("var", [real(2, 3, 4)], {"axis": (0, 2), "keepdims": True}, label="var-axes-keepdims"),
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
NOT_DIFFERENTIATED = {"gt", "ge", "lt", "le", "ones", "zeros", "eye", "one_hot"}


def _rng(case: Case) -> np.random.Generator:
    return np.random.default_rng(sum(map(ord, case.id)))


def _inputs(case: Case, rng: np.random.Generator) -> list[np.ndarray]:
    if case.op in ("maximum", "minimum"):
        a, b = _pair_distinct(rng, (3, 4))
        return [a, b if case.op == "maximum" else b[0]]  # minimum broadcasts (3, 4) with (4,)
    if case.op in ("gt", "ge", "lt", "le"):
        a, b = _pair_distinct(rng, (3,))
        return [a, b]
    return [np.asarray(s(rng)) if s.__qualname__.startswith("indices") else np.asarray(s(rng), dtype=float)
            for s in case.inputs]


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
    _check_vjp(case, _inputs(case, rng), rng)


def _check_vjp(case: Case, args: list[np.ndarray], rng: np.random.Generator) -> None:
    op = OPS[case.op]
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
    if case.op in NOT_DIFFERENTIATED:
        return
    rng = _rng(case)
    _check_tangent(case, _inputs(case, rng), rng)


def _check_tangent(case: Case, args: list[np.ndarray], rng: np.random.Generator) -> None:
    op = OPS[case.op]
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


CUMPROD = """
[derivation]
title = "a vector op registered without its derivative rules"

[dims]
n = "entries"

[inputs]
x = ["n"]

[forward]
h = "cumprod(x)"

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

    monkeypatch.setitem(OPS, "cumprod", Op("cumprod", lambda a, **_: a, np.cumprod, None, signature=sig("x")))
    result = check_text(tmp_path, CUMPROD, Options(trials=2, shapes=1, symbolic=symbolic))
    assert result.status == "error", [(c.name, c.verdict) for c in result.claims]
    assert not any(c.verdict in ("verified", "proved") for c in result.claims)
    assert "'cumprod' has no vector-Jacobian product" in str(result.error)


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
    assert Step(-x) == 1 - StepGe(x) and StepGe(-x) == 1 - Step(x)  # exact, ties included
    assert Step(sp.Integer(0)) == 0 and StepGe(sp.Integer(0)) == 1  # x > x is 0, x >= x is 1, as NumPy's
    assert Step(Relu(x)) == Step(x) and StepGe(Relu(x)) == 1
    assert sp.diff(Step(x), x) == 0 and sp.diff(StepGe(x), x) == 0
    assert sp.diff(Relu(x), x) == Step(x)
    assert Relu(sp.Integer(-2)) == 0 and Relu(sp.Rational(3, 2)) == sp.Rational(3, 2)
    assert derivative_of(ELEMENTWISE["tanh"].symbolic)(x) == 1 - sp.tanh(x) ** 2


def _random_reach_case(name: str, rng: np.random.Generator) -> tuple[Case, list[np.ndarray]]:
    """One random instance of a SPEC §6 op: random sizes 1–4, random axes, bounds and widths."""
    def size() -> int:
        return int(rng.integers(1, 5))

    def shape(rank: int) -> tuple[int, ...]:
        return tuple(size() for _ in range(rank))

    rank = int(rng.integers(1, 4))
    x = rng.normal(size=shape(rank))
    if name in ("max", "min"):
        x = rng.permutation(np.arange(x.size, dtype=float)).reshape(x.shape) * 0.37 + rng.normal(size=x.shape) * 0.01
        choice = rng.integers(0, 3)
        axes = rng.choice(rank, size=int(rng.integers(1, rank + 1)), replace=False)
        axis = None if choice == 0 else int(axes[0]) if choice == 1 else tuple(int(a) for a in axes)
        return Case(name, [], {"axis": axis, "keepdims": bool(rng.integers(0, 2))}), [x]
    if name == "clip":
        x = rng.choice([-1.5, -0.9, -0.2, 0.3, 0.8, 1.4], size=x.shape) + rng.uniform(-0.05, 0.05, x.shape)
        return Case(name, [], {"lo": -0.5, "hi": 0.6}), [x]
    if name == "reshape":
        p, q, r = shape(3)
        return Case(name, [], {"shape": (q, p * r)}), [rng.normal(size=(p * q, r))]
    if name == "transpose":
        return Case(name, [], {"axes": tuple(int(a) for a in rng.permutation(rank))}), [x]
    if name == "swapaxes":
        a, b = rng.integers(0, rank, size=2)
        return Case(name, [], {"axis1": int(a), "axis2": int(b)}), [x]
    if name == "flip":
        return Case(name, [], {"axis": int(rng.integers(0, rank))}), [x]
    if name == "slice":
        k = int(rng.integers(0, rank))
        lo = int(rng.integers(0, x.shape[k]))
        hi = int(rng.integers(lo + 1, x.shape[k] + 1))
        return Case(name, [], {"items": (":",) * k + ((lo, hi),)}), [x]
    if name in ("concat", "stack"):
        k = int(rng.integers(0, rank + (name == "stack")))
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            s = list(x.shape)
            if name == "concat":
                s[k] = size()
            parts.append(rng.normal(size=s))
        return Case(name, [], {"axis": k}), parts
    if name == "pad":
        widths = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(rank))
        return Case(name, [], {"widths": widths}), [x]
    V = size() + 1
    idx = indices(V, *shape(int(rng.integers(1, 3))))(rng)
    if name == "gather":
        return Case(name, [], differentiable=(0,)), [rng.normal(size=(V,) + shape(rank - 1)), idx]
    if name == "scatter_add":
        return Case(name, [], {"V": V}, differentiable=(0,)), [rng.normal(size=idx.shape + shape(rank - 1)), idx]
    if name == "take_along_axis":
        a = rng.normal(size=(size(), V))
        along = indices(V, a.shape[0], size())(rng)
        return Case(name, [], {"axis": 1}, differentiable=(0,)), [a, along]
    raise KeyError(name)


REACH_OPS = ["max", "min", "clip", "reshape", "transpose", "swapaxes", "flip", "slice", "concat", "stack", "pad",
             "gather", "scatter_add", "take_along_axis"]


@pytest.mark.parametrize("name", REACH_OPS)
def test_reach_ops_vjp_tangent_and_sympy_over_random_shapes(name: str) -> None:
    """Property test over random shapes: each op's VJP and tangent against central differences,
    and its SymPy evaluation against its NumPy one."""
    rng = np.random.default_rng(sum(map(ord, name)))
    for _ in range(25):
        case, args = _random_reach_case(name, rng)
        _check_vjp(case, args, rng)
        _check_tangent(case, args, rng)
        op = OPS[name]
        fn = op.symbolic if op.symbolic is not None else op.numeric
        numeric = np.asarray(op.numeric(*args, **case.params), dtype=float)
        symbolic = _to_float(fn(*[_to_sympy(a) for a in args], **case.params))
        np.testing.assert_allclose(symbolic, numeric, rtol=1e-10, atol=1e-12, err_msg=f"{name} {case.params}")


SPELLINGS = [
    "sum(X, axis=(0, 1), keepdims=True)", "mean(X, axis=1)", "max(X)", "min(X, axis=0, keepdims=True)",
    "logsumexp(X, axis=0)", "softmax(X, axis=1)", "log_softmax(X, axis=-1)", 'einsum("ij,j->i", X, v)',
    "concat([X, X], axis=1)", "stack([X, X])", "clip(X, -1, 0.5)", "reshape(X, (n, 2*m))", "transpose(X, (1, 0))",
    "swapaxes(X, 0, 1)", "flip(X, axis=1)", "pad(X, ((0, 1), (n, n - 1)))", "where(X, X, X)", "maximum(X, X)",
    "outer(v, v)", "dot(v, v)", "trace(X)", "diag(v)", "ones((n, m))", "zeros(n)", "eye(n)", "one_hot(I, n)",
    "take_along_axis(X, I, axis=1)", "scatter_add(X, I, n)",
    "var(X, axis=1, keepdims=True)", "tanh_prime(X)", "transpose(X)",
]


@pytest.mark.parametrize("text", SPELLINGS)
def test_spell_writes_a_call_back_as_the_parser_reads_it(text: str) -> None:
    """``spell`` (how ``derive`` writes an op it has no printer of its own for) is the parser's inverse,
    from the op's signature alone: an op added to the table is written back with its parameters."""
    from backpropcheck.lang.ir import Call
    from backpropcheck.lang.ops import spell
    from backpropcheck.lang.parse import Scope, parse_expression

    node = parse_expression(text, Scope(tensors={"X", "v", "I"}, dims={"n", "m"}))
    assert isinstance(node, Call)
    assert spell(node.op, [a.src for a in node.args], node.params) == text


RUNNING_SUM = """
[derivation]
title = "a running sum along time, weighted per step"

[dims]
B = "batch"
T = "time"

[inputs]
X = ["B", "T"]
w = ["T"]

[forward]
H = "cumsum(X * w[None, :], axis=1)"

[loss]
E = "sum(tanh(H))"

[claims]
grad_X = "flip(cumsum(flip(grad_H, axis=1), axis=1), axis=1) * w[None, :]"
grad_w = "sum(flip(cumsum(flip(grad_H, axis=1), axis=1), axis=1) * X, axis=0)"
"""
RIGHT_GRAD_X = '"flip(cumsum(flip(grad_H, axis=1), axis=1), axis=1) * w[None, :]"'
FORWARD_SUM = '"cumsum(grad_H, axis=1) * w[None, :]"'  # the usual slip: the running sum taken forwards


@pytest.mark.parametrize("symbolic", [False, True])
def test_cumsum_a_right_claim_holds_and_a_wrong_one_is_refuted(tmp_path, symbolic: bool) -> None:
    """The op added to show the table is the one place an op lives: its gradient is the running sum
    taken from the other end; the sum taken forwards (the usual slip) is refuted."""
    from conftest import check_text, verdicts

    from backpropcheck.checker import Options

    options = Options(trials=3, shapes=2, symbolic=symbolic)
    right = "proved" if symbolic else "verified"
    assert verdicts(check_text(tmp_path, RUNNING_SUM, options)) == {"grad_X": right, "grad_w": right}
    assert RIGHT_GRAD_X in RUNNING_SUM
    wrong = check_text(tmp_path, RUNNING_SUM.replace(RIGHT_GRAD_X, FORWARD_SUM), options, name="wrong.toml")
    assert verdicts(wrong) == {"grad_X": "refuted", "grad_w": right}


def test_cumsum_derive_writes_its_gradient_and_it_is_proved() -> None:
    """derive reads the op's adjoint template and spells it from the signature."""
    from backpropcheck.derive import derive

    derived = {c.name: c for c in derive(RUNNING_SUM).claims}
    assert derived["grad_X"].expr == "flip(cumsum(flip(grad_H, axis=1), axis=1), axis=1) * w"
    assert derived["grad_X"].verdict == "proved"


def test_cumsum_needs_one_axis_in_range() -> None:
    from backpropcheck.errors import DerivationError, ShapeError
    from backpropcheck.lang.parse import Scope, parse_expression
    from backpropcheck.lang.shapes import infer

    scope = Scope(tensors={"X"}, dims={"B", "T"})
    with pytest.raises(DerivationError, match=r"cumsum\(X, axis\)"):
        parse_expression("cumsum(X)", scope)
    node = parse_expression("cumsum(X, axis=2)", scope)
    from backpropcheck.lang.dims import Dim

    with pytest.raises(ShapeError, match="axis 2 is out of range"):
        infer(node, {"X": (Dim.of("B"), Dim.of("T"))})


@pytest.mark.parametrize("m,k,p", [(7, 5, 1), (1, 5, 3), (1, 4, 1), (6, 3, 2)])
def test_the_matmul_vjp_broadcasts_a_one_term_product_to_the_same_numbers(m: int, k: int, p: int) -> None:
    # a contraction over one term takes the broadcast product (NumPy's matmul is slow there): bit for bit
    # the numbers of g @ b.T and a.T @ g
    rng = np.random.default_rng(m * 100 + k * 10 + p)
    a, b, g = rng.standard_normal((m, k)), rng.standard_normal((k, p)), rng.standard_normal((m, p))
    grad_a, grad_b = OPS["matmul"].vjp(g, a @ b, a, b)
    assert np.array_equal(grad_a, g @ b.T) and np.array_equal(grad_b, a.T @ g)
    column, row = rng.standard_normal((m, 1)), rng.standard_normal((1, p))
    assert np.array_equal(OPS["matmul"].numeric(column, row), column @ row)
