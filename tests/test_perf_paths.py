"""The fast paths of issue 7: each must give the same answers as the slow route it shortcuts.

No test here asserts a time.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import derivation_toml

from backpropcheck.checker import Options, check_derivation, check_path
from backpropcheck.engines import numeric
from backpropcheck.engines.directional import Rank1, direction, inner, tangent_of
from backpropcheck.engines.evaluate import Tape, evaluate
from backpropcheck.engines.exact import Converter, Unsupported
from backpropcheck.engines.symbolic import SymbolicTruth, partials
from backpropcheck.lang import ops
from backpropcheck.lang.symfuncs import Relu, Step, generic
from backpropcheck.loader import load

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "backpropcheck" / "derivations"

x, y, z = sp.symbols("x y z", real=True)
v = sp.Symbol("v", positive=True)
f = generic("f")


# ---------------------------------------------------------------------------
# exact zero test


@pytest.mark.parametrize(
    "expr",
    [
        sp.diff(1 / (1 + sp.exp(-x)), x) - (1 / (1 + sp.exp(-x))) * (1 - 1 / (1 + sp.exp(-x))),
        sp.exp(x) / (sp.exp(x) + sp.exp(y)) + sp.exp(y) / (sp.exp(x) + sp.exp(y)) - 1,
        sp.exp(x + y) - sp.exp(x) * sp.exp(y),
        sp.exp(2 * x) - sp.exp(x) ** 2,
        sp.exp(x / 2) ** 2 - sp.exp(x),
        (v + 1) ** sp.Rational(-3, 2) * (v + 1) - 1 / sp.sqrt(v + 1),
        Step(x - y) + Step(y - x) - 1,
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


def _random_expr(rng: random.Random, depth: int) -> sp.Expr:
    leaves = [x, y, z, sp.Integer(rng.randint(1, 3)), sp.Rational(1, rng.randint(2, 4))]
    if depth == 0:
        return rng.choice(leaves)
    a, b = _random_expr(rng, depth - 1), _random_expr(rng, depth - 1)
    kind = rng.randrange(7)
    if kind == 0:
        return a + b
    if kind == 1:
        return a - b
    if kind == 2:
        return a * b
    if kind == 3:
        return a / (b ** 2 + 1)
    if kind == 4:
        return sp.exp(a / 3)
    if kind == 5:
        return sp.tanh(a)
    return a ** 2


def test_exact_is_sound_on_random_expressions():
    """Whatever the converter calls zero evaluates to zero; most rewritten copies are proved zero
    (not all: it knows no symmetry of tanh, for one — the caller then falls back to SymPy)."""
    rng = random.Random(7)
    proved = missed = 0
    for _ in range(150):
        e = _random_expr(rng, 3)
        g = _random_expr(rng, 2)
        for candidate, must in ((e - g, False), (sp.expand(e * g) - e * g, True), (e * (g + 1) - e * g - e, True)):
            try:
                zero = Converter().is_zero(candidate)
            except (Unsupported, ZeroDivisionError):
                continue
            if zero:
                proved += 1
                point = {x: 0.3, y: -0.7, z: 1.1}
                assert abs(complex(candidate.evalf(30, subs=point))) < 1e-12, candidate
            elif must:
                missed += 1
    assert proved > 100
    assert missed <= proved // 20


def test_symbolic_decides_softmax_regression_exactly():
    d = load(str(LIB / "softmax_regression_batch.toml"))
    truth = SymbolicTruth(d, {"n": 2, "k": 3, "B": 2})
    claim = next(c for c in d.claims if c.name == "grad_Z")
    claimed = truth.claim_value(claim.node)
    rng = random.Random(0)
    hows = {truth.decide(claimed[idx] - truth.grads["Z"][idx], rng).how for idx in np.ndindex(3, 2)}
    # the softmax's local partials are written through its own atoms (P_i (δ_ij − P_j)),
    # so (P - Y) / B is proved with P as an atom, without the exponentials
    assert hows == {"exact rational arithmetic over the per-neuron atoms"}


# ---------------------------------------------------------------------------
# truth construction


def test_partials_equal_sympy_diff():
    rng = random.Random(3)
    wrt = {x, y, z}
    for _ in range(60):
        e = sp.sympify(_random_expr(rng, 3)) + x * y * _random_expr(rng, 1)
        got = partials(e, wrt, {})
        for s in wrt:
            expected = sp.diff(e, s)
            assert got.get(s, sp.Integer(0)) == expected, (e, s)


def test_truth_is_the_same_with_templates_shared_across_neurons():
    d = load(str(ROOT / "bench" / "dense_sigmoid_mse.toml"))
    truth = SymbolicTruth(d, {"n": 3, "m": 4})
    for j in range(4):
        z_j = truth.env["z"][j]
        h_j = truth.env["h"][j]
        assert truth.grads["z"][j] == sp.diff(truth.local[h_j], z_j) * truth.grads["h"][j]


def test_symbolic_matmul_matches_numpy_object_matmul():
    a = np.array([[x, y, 2], [z, x * y, 1]], dtype=object)
    b = np.array([[1, x], [y, 2], [z, 3]], dtype=object)
    vec = np.array([x, y, z], dtype=object)
    for left, right in ((a, b), (a, vec), (vec, b), (vec, vec)):
        expected = np.asarray(left @ right, dtype=object)
        got = np.asarray(ops._matmul_sym(left, right), dtype=object)
        assert got.shape == expected.shape
        assert all(g == e for g, e in zip(got.flat, expected.flat))
    with pytest.raises(ValueError):
        ops._matmul_sym(a, a)


# ---------------------------------------------------------------------------
# numeric fast paths


def _compare_reference(claimed, truth, rtol, atol):
    if claimed.shape != truth.shape:
        claimed = np.broadcast_to(claimed, truth.shape)
    err = np.abs(claimed - truth)
    if err.size == 0:
        return True, 0.0, 0.0, ()
    if not np.all(np.isfinite(claimed)):
        idx = np.unravel_index(int(np.argmax(~np.isfinite(claimed))), claimed.shape)
        return False, float("inf"), float("inf"), tuple(int(i) for i in idx)
    scale = float(np.max(np.abs(truth)))
    tol = atol + rtol * (np.abs(truth) + scale)
    worst = np.unravel_index(int(np.argmax(err - tol)), err.shape)
    max_abs = float(np.max(err))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return bool(np.all(err <= tol)), max_abs, max_rel, tuple(int(i) for i in worst)


def test_blocked_compare_equals_the_whole_array_compare(monkeypatch):
    monkeypatch.setattr(numeric, "CHUNK", 64)
    rng = np.random.default_rng(1)
    for shape in [(), (0,), (5,), (300,), (7, 50), (50, 7), (3, 40, 9), (200, 3)]:
        for case in range(6):
            t = rng.normal(size=shape)
            c = np.array(t + rng.normal(size=shape) * 1e-12)
            if case == 1 and c.size:
                c.flat[rng.integers(c.size)] += 1.0
            if case == 2 and c.size:
                c.flat[rng.integers(c.size)] = np.nan
            if case == 3 and c.size:
                c.flat[rng.integers(c.size)] = np.inf
            if case == 4:
                c, t = np.zeros(shape), np.zeros(shape)
            if case == 5 and shape and shape[0]:
                c = np.broadcast_to(c[:1], shape)
            got, want = numeric.compare(c, t, 1e-7, 1e-12), _compare_reference(c, t, 1e-7, 1e-12)
            assert got[:3] == want[:3]
            if not want[0]:  # the worst entry is reported (and needed) only when the claim fails
                assert got[3] == want[3]


def test_finite_still_reports_nan_and_inf():
    numeric._finite(np.array([1e308, 1e308]), "x", "x")  # the sum overflows; the entries are finite
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(numeric.NumericProblem):
            numeric._finite(np.array([1.0, bad]), "x", "x")


def test_rank1_directions_and_inner_products():
    rng = np.random.default_rng(0)
    t = direction((64, 32), rng)
    assert isinstance(t, Rank1)
    g = rng.normal(size=(64, 32))
    value, scale = inner(g, t)
    assert value == pytest.approx(float(np.vdot(g, t.dense())))
    assert scale >= abs(value)
    small = direction((3,), rng)
    assert set(np.unique(small)) <= {-1.0, 1.0}


def test_tangent_pass_matches_finite_differences():
    d = load(str(LIB / "softmax_regression_batch.toml"))
    sizes = {"n": 3, "k": 4, "B": 2}
    backend = numeric.numeric_backend(d, 0)
    rng = np.random.default_rng(5)
    values = {name: numeric.sample_input(inp, numeric.concrete_shapes(d, sizes)[name], rng)
              for name, inp in d.inputs.items()}
    dirs = {"W": rng.normal(size=(4, 3)), "X": rng.normal(size=(3, 2)), "b": rng.normal(size=4)}

    def forward(env):
        env = dict(env)
        tapes = {}
        for definition in d.forward:
            tapes[definition.name] = Tape()
            env[definition.name] = evaluate(definition.root, env, sizes, backend, tapes[definition.name])
        tape = Tape()
        return float(evaluate(d.loss.expression, env, sizes, backend, tape)), env, tapes, tape

    loss, env, tapes, loss_tape = forward(values)
    totals = {}

    def var_tangent(name):
        return dirs.get(name, totals.get(name))

    for definition in d.forward:
        totals[definition.name] = tangent_of(tapes[definition.name], var_tangent)
    t_loss = float(tangent_of(loss_tape, var_tangent))
    step = 1e-6
    plus = forward({k: values[k] + step * dirs.get(k, 0) for k in values})[0]
    minus = forward({k: values[k] - step * dirs.get(k, 0) for k in values})[0]
    assert t_loss == pytest.approx((plus - minus) / (2 * step), rel=1e-6)


@pytest.mark.parametrize("name", ["dense_column_batch", "softmax_regression_batch", "attention", "layer_norm",
                                  "conv1d_valid", "elementwise_piecewise", "rnn_two_steps", "batch_norm"])
def test_directional_check_agrees_on_the_library(name):
    result = check_path(str(LIB / f"{name}.toml"), Options(symbolic=False, trials=4))
    assert result.status == "passed", result.error


def test_a_wrong_reverse_step_is_an_internal_error_not_a_verdict(monkeypatch):
    original = ops.OPS["softmax"]
    monkeypatch.setitem(ops.OPS, "softmax", dataclasses.replace(original, vjp=lambda g, out, a, axis=None: (out * g,)))
    result = check_path(str(LIB / "softmax_regression_batch.toml"), Options(symbolic=False, trials=2))
    assert result.status == "error"
    assert "internal error" in result.error and "forward-mode" in result.error
    assert result.claims == []


def test_production_dims_path_with_rank1_directions():
    d = load(str(LIB / "dense_column_batch.toml"))
    result = check_derivation(d, Options(symbolic=False, trials=1, dims=(("n", 64), ("m", 48), ("B", 5))))
    assert [c.verdict for c in result.claims] == ["verified"] * 4


# ---------------------------------------------------------------------------
# start-up


def _modules_after(args: list[str]) -> set[str]:
    code = (
        "import sys\nfrom backpropcheck.cli import main\n"
        f"try:\n    main({args!r}, prog_name='backpropcheck')\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(m for m in ('numpy', 'sympy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    line = next(li for li in out.stdout.splitlines() if li.startswith("MODULES"))
    return set(line.split()[1:])


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["check", "--help"]])
def test_version_and_help_import_neither_numpy_nor_sympy(args):
    assert _modules_after(args) == set()


def test_no_symbolic_never_imports_sympy():
    assert _modules_after(["check", str(LIB / "dense_column.toml"), "--no-symbolic", "-q"]) == {"numpy"}


def test_a_wrong_table_derivative_is_caught_by_the_complex_step(monkeypatch):
    sigmoid = ops.ELEMENTWISE["sigmoid"]
    wrong = dataclasses.replace(sigmoid, derivative=lambda u: 1.01 * sigmoid.derivative(u))
    monkeypatch.setitem(ops.ELEMENTWISE, "sigmoid", wrong)
    result = check_path(str(LIB / "dense_column_batch.toml"), Options(symbolic=False, trials=1))
    assert result.status == "error" and "internal error" in result.error


# -- regressions found by fuzzing the directional check ---------------------------------

def _degenerate(z: str, h: str, loss: str, claim: str, extra_inputs: dict | None = None) -> str:
    """A dense layer with a chosen forward pass, loss and grad_b claim (conftest's TOML builder)."""
    key, value = loss.split(" = ", 1)
    return derivation_toml(
        dims={"n": "inputs", "m": "outputs"},
        inputs={"a": ["n"], "W": ["m", "n"], "b": ["m"], **(extra_inputs or {})},
        forward={"z": z, "h": h}, loss={key: value.strip('"')}, claims={"grad_b": claim},
    )


@pytest.mark.parametrize(
    ("z", "h", "loss", "claim"),
    [
        # E ≡ 1: forward mode leaves a rounding residue where every gradient is zero
        ("W @ a + b", "tanh(z)", 'E = "sum(softmax(z, axis=0))"', "zeros(m)"),
        ("W @ a + b", "tanh(z)", 'E = "logsumexp(log_softmax(z, axis=0), axis=0)"', "zeros(m)"),
        # log of a tiny p = x ** 16: the complex step must be small relative to p itself
        ("W @ a + b", "(W @ a + 1) ** 16", 'E = "-sum(log(h))"', "zeros(m)"),
        # ties: z has its own direction, so the complex step must pick the branch the backward mask picks
        ("b", "maximum(z, b)", 'upstream = "h"', "grad_h"),
        ("b", "minimum(z, b)", 'upstream = "h"', "grad_h"),
        ("b", "minimum(b, z)", 'upstream = "h"', "grad_h"),
        ("b", "where(z > b, z, b) + where(z < b, z, 0)", 'upstream = "h"', "grad_h"),
    ],
)
def test_directional_check_agrees_on_degenerate_but_valid_files(tmp_path, z, h, loss, claim):
    path = tmp_path / "degenerate.toml"
    path.write_text(_degenerate(z, h, loss, claim))
    result = check_path(str(path), Options(trials=20, shapes=1))
    assert result.status == "passed", (result.error, [c.message for c in result.claims])


def test_softmax_entries_differentiate_through_themselves():
    from backpropcheck.lang.symfuncs import SoftmaxEntry, softmax_as_exp

    a, b, c = sp.symbols("a b c", real=True)
    s0 = SoftmaxEntry(sp.Integer(0), a, b, c)
    s1 = SoftmaxEntry(sp.Integer(1), a, b, c)
    assert sp.diff(s0, a) == s0 * (1 - s0)
    assert sp.diff(s0, b) == -s0 * s1
    # the same derivative as the exponential form's
    exp_form = softmax_as_exp(s0)
    assert sp.simplify(softmax_as_exp(sp.diff(s0, b)) - sp.diff(exp_form, b)) == 0
    assert abs(float(s0.subs({a: 1, b: 0, c: 0}).evalf()) - float(sp.E / (sp.E + 2))) < 1e-15


def test_claims_in_either_form_prove_against_a_softmax_or_a_log_softmax(tmp_path):
    text = """
[derivation]
title = "softmax forms"
[dims]
k = "classes"
B = "batch"
[inputs]
Z = ["k", "B"]
Y = { shape = ["k", "B"], domain = "simplex", constant = true }
[forward]
L = "log_softmax(Z, axis=0)"
P = "softmax(Z, axis=0)"
[loss]
E = "-sum(Y * L) + sum(P * P)"
[claims]
grad_L = "-Y"
grad_P = "2 * P"
grad_Z = "exp(L) - Y + P * (grad_P - sum(grad_P * P, axis=0, keepdims=True))"
"""
    path = tmp_path / "forms.toml"
    path.write_text(text)
    result = check_path(str(path), Options(trials=3, shapes=2))
    assert [c.verdict for c in result.claims] == ["proved"] * 3, [c.message for c in result.claims]


def test_a_disagreement_at_huge_forward_values_is_a_conditioning_error_not_a_bug(tmp_path):
    # z reaches ~1e25: cos(z) keeps no digit of its derivative, so the two checks cannot agree
    path = tmp_path / "huge.toml"
    path.write_text(_degenerate("log_softmax(sum(b ** 16) * (n * u) ** 16, axis=0)", "cos(z)", 'upstream = "h"',
                                "zeros(m)", extra_inputs={"u": ["m"]}))
    result = check_path(str(path), Options(trials=5, shapes=1))
    assert result.status == "error"
    assert "internal error" not in result.error and "too large for float64" in result.error


def test_a_disagreement_with_a_huge_loss_is_a_conditioning_error_not_a_bug(tmp_path):
    # logsumexp(log_softmax(h)) is 0 up to rounding, so 1/(it + 1e-12) is ~1e12 and its derivative noise
    path = tmp_path / "huge_loss.toml"
    path.write_text(_degenerate("W @ a + b", "tanh(z)",
                                'E = "(logsumexp(log_softmax(h, axis=0), axis=0) + 1e-12) ** -1"', "zeros(m)"))
    result = check_path(str(path), Options(trials=5, shapes=1))
    assert result.status == "error" and "internal error" not in result.error, result.error
