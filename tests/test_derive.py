"""``derive``: the op table's adjoint templates, the rewrite rules, and the derived claims.

Every adjoint template is compared with central finite differences of ``sum(G * op(...))``
at random shapes; every rewrite rule is checked to keep an expression's value (on hand-made
cases where it must fire, and as a hypothesis property over random trees); and the derived
claims of the bundled derivations are checked to be the textbook forms, all proved.
"""

from __future__ import annotations

import json
import re
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BUNDLED, DENSE_COLUMN, FAST, sweep
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backpropcheck import derive as dv
from backpropcheck.checker import Options
from backpropcheck.cli import main
from backpropcheck.engines.evaluate import Backend, evaluate
from backpropcheck.lang import ops
from backpropcheck.lang.dims import Dim, parse_dim
from backpropcheck.lang.ir import Call, Var, walk
from backpropcheck.lang.ops import ELEMENTWISE
from backpropcheck.lang.parse import Scope, parse_expression
from backpropcheck.lang.shapes import infer

BACKEND = Backend(symbolic=False, functions=ELEMENTWISE.__getitem__, const=lambda n: n.value, scalar=float)
DIMS = ("m", "n", "p")


# integer inputs of the adjoint cases, and the dim their entries index
INDEX_RANGE = {"I": "p", "I1": "n", "J": "m", "K3": "n"}


def _dim(d):
    return parse_dim(d, {k: None for k in DIMS}) if isinstance(d, str) else Dim.lit(d)


def _setup(shapes: dict[str, tuple[str, ...]], text: str):
    env = {name: tuple(_dim(d) for d in dims) for name, dims in shapes.items()}
    node = parse_expression(text, Scope(tensors=set(shapes) | {"G"}, dims=set(DIMS)))
    env["G"] = infer(node, env)
    return node, dv.Context(env)


def _arrays(shapes, sizes, rng, domain):
    out = {}
    for name, dims in shapes.items():
        shape = tuple(_dim(d).value(sizes) for d in dims)
        if name in INDEX_RANGE:
            out[name] = rng.integers(0, sizes[INDEX_RANGE[name]], shape).astype(float)
        elif domain == "positive":
            out[name] = rng.uniform(0.5, 2.0, shape)
        elif domain == "unit":
            out[name] = rng.uniform(0.1, 0.9, shape)
        else:
            out[name] = rng.normal(size=shape)
    return out


def _value(node, env, sizes):
    return np.asarray(evaluate(dv.as_tree(node), env, sizes, BACKEND), dtype=float)


# (expression, shapes of its operands, domain of their entries)
ADJOINT_CASES = [
    ("A + b", {"A": ("m", "n"), "b": ("n",)}, "real"),
    ("A + c", {"A": ("m", "n"), "c": ("m", 1)}, "real"),
    ("A - B", {"A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("b - A", {"A": ("m", "n"), "b": ("n",)}, "real"),
    ("A * b", {"A": ("m", "n"), "b": ("n",)}, "real"),
    ("A * s", {"A": ("m", "n"), "s": ()}, "real"),
    ("A / B", {"A": ("m", "n"), "B": ("m", "n")}, "positive"),
    ("A / b[:, None]", {"A": ("m", "n"), "b": ("m",)}, "positive"),
    ("-A", {"A": ("m", "n")}, "real"),
    ("A ** 3", {"A": ("m", "n")}, "real"),
    ("A ** -1.5", {"A": ("m", "n")}, "positive"),
    ("A @ B", {"A": ("m", "n"), "B": ("n", "p")}, "real"),
    ("A @ x", {"A": ("m", "n"), "x": ("n",)}, "real"),
    ("x @ A", {"A": ("n", "p"), "x": ("n",)}, "real"),
    ("x @ y", {"x": ("n",), "y": ("n",)}, "real"),
    ("dot(x, y)", {"x": ("n",), "y": ("n",)}, "real"),
    ("dot(A, x)", {"A": ("m", "n"), "x": ("n",)}, "real"),
    ("outer(x, y)", {"x": ("m",), "y": ("n",)}, "real"),
    ("A.T", {"A": ("m", "n")}, "real"),
    ("x[:, None] * A", {"x": ("m",), "A": ("m", "n")}, "real"),
    ("x[None, :] * A", {"x": ("n",), "A": ("m", "n")}, "real"),
    ("sum(A)", {"A": ("m", "n")}, "real"),
    ("sum(A, axis=0)", {"A": ("m", "n")}, "real"),
    ("sum(A, axis=1, keepdims=True)", {"A": ("m", "n")}, "real"),
    ("sum(A, axis=-1)", {"A": ("m", "n")}, "real"),
    ("mean(A)", {"A": ("m", "n")}, "real"),
    ("mean(A, axis=0, keepdims=True)", {"A": ("m", "n")}, "real"),
    ("mean(A, axis=1)", {"A": ("m", "n")}, "real"),
    ("mean(sum(A, axis=0))", {"A": ("m", "n")}, "real"),  # a scalar gradient reaching an axis sum
    ("sum(logsumexp(A, axis=1))", {"A": ("m", "n")}, "real"),
    ("sum(log_softmax(A, axis=0))", {"A": ("m", "n")}, "real"),  # a scalar gradient into an axis op
    ("sum(softmax(x))", {"x": ("n",)}, "real"),
    ("trace(S)", {"S": ("n", "n")}, "real"),
    ("diag(x)", {"x": ("n",)}, "real"),
    ("diag(S)", {"S": ("n", "n")}, "real"),
    ("softmax(A, axis=0)", {"A": ("m", "n")}, "real"),
    ("softmax(A, axis=1)", {"A": ("m", "n")}, "real"),
    ("softmax(x)", {"x": ("n",)}, "real"),
    ("log_softmax(A, axis=0)", {"A": ("m", "n")}, "real"),
    ("log_softmax(A, axis=1)", {"A": ("m", "n")}, "real"),
    ("logsumexp(A, axis=0)", {"A": ("m", "n")}, "real"),
    ("logsumexp(A, axis=1, keepdims=True)", {"A": ("m", "n")}, "real"),
    ("logsumexp(A)", {"A": ("m", "n")}, "real"),
    ("where(C > 0, A, B)", {"C": ("m", "n"), "A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("where(C > 0, A, b)", {"C": ("m", "n"), "A": ("m", "n"), "b": ("n",)}, "real"),
    ("where(C >= 0, A, B)", {"C": ("m", "n"), "A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("where(C < 0, A, B) + where(C <= 0, B, A)", {"C": ("m", "n"), "A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("A * ones([m, n]) + zeros([m, n])", {"A": ("m", "n")}, "real"),
    ("S @ eye(n)", {"S": ("n", "n")}, "real"),
    ("maximum(A, B)", {"A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("minimum(A, b)", {"A": ("m", "n"), "b": ("n",)}, "real"),
    ("einsum('ij,j->i', A, x)", {"A": ("m", "n"), "x": ("n",)}, "real"),
    ("einsum('ij,jk->ki', A, B)", {"A": ("m", "n"), "B": ("n", "p")}, "real"),
    ("einsum('i,ij,j->', x, A, y)", {"x": ("m",), "A": ("m", "n"), "y": ("n",)}, "real"),
    ("einsum('ij,ij->ji', A, B)", {"A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("einsum('ij->ji', A)", {"A": ("m", "n")}, "real"),
    # SPEC §6 ops: structural ops, max/min reductions, clip and the integer-index ops
    ("reshape(A, (n, m))", {"A": ("m", "n")}, "real"),
    ("reshape(R, (m*n, p))", {"R": ("m", "n", "p")}, "real"),
    ("transpose(R, (1, 2, 0))", {"R": ("m", "n", "p")}, "real"),
    ("transpose(R)", {"R": ("m", "n", "p")}, "real"),
    ("swapaxes(R, 0, 2)", {"R": ("m", "n", "p")}, "real"),
    ("flip(A, axis=1)", {"A": ("m", "n")}, "real"),
    ("cumsum(A, axis=1)", {"A": ("m", "n")}, "real"),
    ("cumsum(R, axis=0)", {"R": ("m", "n", "p")}, "real"),
    ("var(A, axis=1)", {"A": ("m", "n")}, "real"),
    ("var(A)", {"A": ("m", "n")}, "real"),
    ("var(R, axis=(0, 2), keepdims=True)", {"R": ("m", "n", "p")}, "real"),
    ("flip(R)", {"R": ("m", "n", "p")}, "real"),
    ("A[:, n:n + p]", {"A": ("m", "n + p")}, "real"),
    ("A[:n]", {"A": ("n + p", "m")}, "real"),
    ("A[None, m:, None, :p]", {"A": ("2*m", "p + 1")}, "real"),
    ("R[..., 1:p + 1]", {"R": ("m", "n", "p + 2")}, "real"),
    ("concat([A, B], axis=1)", {"A": ("m", "n"), "B": ("m", "p")}, "real"),
    ("concat([A, B, A], axis=0)", {"A": ("m", "n"), "B": ("p", "n")}, "real"),
    ("stack([A, B], axis=1)", {"A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("stack([A, B, A])", {"A": ("m", "n"), "B": ("m", "n")}, "real"),
    ("pad(A, ((1, 0), (n, p)))", {"A": ("m", "n")}, "real"),
    ("pad(x, ((p - 1, p - 1),))", {"x": ("n",)}, "real"),
    ("max(A)", {"A": ("m", "n")}, "real"),
    ("max(A, axis=1, keepdims=True)", {"A": ("m", "n")}, "real"),
    ("min(A, axis=0)", {"A": ("m", "n")}, "real"),
    ("max(R, axis=(0, 2))", {"R": ("m", "n", "p")}, "real"),
    ("min(R, axis=(1, 2), keepdims=True)", {"R": ("m", "n", "p")}, "real"),
    ("mean(R, axis=(0, 2))", {"R": ("m", "n", "p")}, "real"),
    ("sum(R, axis=(0, 1))", {"R": ("m", "n", "p")}, "real"),
    ("clip(A, -0.5, 0.5)", {"A": ("m", "n")}, "real"),
    ("Em[I]", {"Em": ("p", "n"), "I": ("m", 2)}, "real"),
    ("scatter_add(S, I, p)", {"S": ("m", 2, "n"), "I": ("m", 2)}, "real"),
    ("take_along_axis(A, I1[:, None], axis=1)", {"A": ("m", "n"), "I1": ("m",)}, "real"),
    ("take_along_axis(A, J, axis=0)", {"A": ("m", "n"), "J": (2, "n")}, "real"),
    ("take_along_axis(R, K3, axis=1)", {"R": ("m", "n", "p"), "K3": ("m", 3, "p")}, "real"),
    ("one_hot(I1, n) * A", {"A": ("m", "n"), "I1": ("m",)}, "real"),
] + [
    (f"{name}(A)", {"A": ("m", "n")},
     "unit" if name == "logit" else "positive" if name in ("log", "log1p", "sqrt", "rsqrt") else "real")
    for name in sorted(ELEMENTWISE)
]


def _finite_difference(node, env, sizes, g, name, h=1e-6):
    x = env[name]
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        plus, minus = dict(env), dict(env)
        plus[name] = x.copy()
        minus[name] = x.copy()
        plus[name][idx] += h
        minus[name][idx] -= h
        grad[idx] = (np.sum(g * _value(node, plus, sizes)) - np.sum(g * _value(node, minus, sizes))) / (2 * h)
    return grad


@pytest.mark.parametrize("text,shapes,domain", ADJOINT_CASES, ids=[c[0] for c in ADJOINT_CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_each_adjoint_template_matches_finite_differences(text, shapes, domain, seed):
    rng = np.random.default_rng([seed, len(text)])
    sizes = dict(zip(DIMS, rng.permutation([2, 3, 4, 5])[:3].tolist()))
    node, cx = _setup(shapes, text)
    env = _arrays(shapes, sizes, rng, domain)
    if "C" in env:
        env["C"] = rng.choice([-1.0, 1.0], env["C"].shape)
    out = _value(node, env, sizes)
    env["G"] = rng.normal(size=out.shape)
    for name in shapes:
        if name == "C" or name in INDEX_RANGE:  # a mask or an index: no gradient flows there
            assert dv.backprop(cx, node, Var(0, "G"), name) == []
            continue
        parts = dv.backprop(cx, node, Var(0, "G"), name)
        assert parts, f"no gradient reached {name}"
        raw = parts[0]
        for p in parts[1:]:
            raw = dv.call("add", raw, p)
        raw = cx.full(cx.unbroadcast(raw, cx.env[name]), cx.env[name])
        expected = _finite_difference(node, env, sizes, env["G"], name)
        got = _value(raw, env, sizes)
        assert got.shape == env[name].shape, (text, name, dv.to_text(raw))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{text}: {dv.to_text(raw)}")
        simple = dv.Rewriter(cx)(raw)
        np.testing.assert_allclose(_value(simple, env, sizes), expected, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{text}: rewritten {dv.to_text(simple)}")
        # the printed form reads back as the same expression (shapes, axes, bounds and widths included)
        printed = parse_expression(dv.to_text(simple), Scope(tensors=set(shapes) | {"G"}, dims=set(DIMS)))
        np.testing.assert_allclose(_value(printed, env, sizes), expected, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{text}: printed {dv.to_text(simple)}")


def test_every_op_of_the_table_has_a_finite_difference_case():
    used = set()
    for text, shapes, _ in ADJOINT_CASES:
        node, _ = _setup(shapes, text)
        used |= {n.op for n in walk(node) if isinstance(n, Call)}
    assert set(ops.OPS) - used == set()


def test_every_rule_fires_on_some_random_tree():
    """The property test below only checks the rules the random trees reach: all of them."""
    from hypothesis import Phase, find

    for rule in dv.RULES:
        def fires(text, rule=rule):
            node, cx = _setup(RULE_SHAPES, text)
            return any(isinstance(n, Call) and rule(cx, n) is not None for n in walk(node))

        assert find(trees(), fires, settings=settings(max_examples=3000, database=None, deadline=None,
                                                            phases=[Phase.generate]))


def test_every_op_of_the_table_has_an_adjoint_template():
    missing = [name for name, op in ops.OPS.items() if op.adjoint is None]
    assert missing == []


# -- rewrite rules ---------------------------------------------------------------------------------

RULE_SHAPES = {"A": ("m", "n"), "B": ("n", "p"), "S": ("n", "n"), "x": ("n",), "y": ("m",), "u": ("n",),
               "s": (), "k": ("m", 1), "R": ("m", "n", "p")}

# for each rule: expressions at whose root it must fire
RULE_CASES = {
    "r_identity": ["1 * A", "A * 1", "0 + A", "A + 0", "A - 0", "0 - A", "A / 1", "A ** 1", "-1 * A", "A * -1"],
    "r_constants": ["2 * (0.5 * A / s)", "A * 2", "2 * (3 * A)", "2 * 3", "(2 * s) * A"],
    "r_signs": ["--A", "-(A - 2 * A)", "-A * A", "A * -A", "-A @ B", "A @ -B", "A / -s", "outer(-x, y)",
                "A + -A", "-A + A", "A - -A", "(-A).T"],
    "r_transpose": ["A.T.T", "x.T", "(A @ B).T", "outer(x, y).T", "(s * A).T", "(A / s).T", "eye(n) @ S",
                    "S @ eye(n)"],
    "r_ones": ["ones([m, n]) * A", "A * ones([m, n])", "A + A"],
    "r_sums": ["sum(sum(A, axis=1, keepdims=True), axis=1)", "sum(sum(A))", "sum(sum(A, keepdims=True))", "sum(s)",
               "sum(sum(A, axis=1), axis=0)", "sum(sum(R, axis=2), axis=0)", "sum(sum(R, axis=(0, 2)), axis=0)",
               "sum(sum(R, axis=1), axis=-1)"],
    "r_blocks": ["pad(A, ((0, 0), (0, p))) + pad(A @ B, ((0, 0), (n, 0)))",
                 "pad(x, ((m, n),)) + pad(2 * y, ((0, 2*n),)) + pad(u, ((n + m, 0),))"],
    "r_einsum": ["einsum('ij,j->i', A, x)", "einsum('ij,jk->ik', A, B)", "einsum('ij,jk->ki', A, B)",
                 "einsum('ji,j->i', A, y)", "einsum('i,j->ij', y, x)", "einsum('i,j->ji', y, x)",
                 "einsum(',ij->ij', s, A)", "einsum('ij->ji', A)", "einsum('ij->i', A)", "einsum('ij,ij->ij', A, A)",
                 "einsum('ij,j->ij', A, x)", "einsum('ij,i->ij', A, y)", "einsum('i,ij,j->', y, A, x)",
                 "einsum('i,i->', x, u)", "einsum('i,jk,k->ij', y, S, x)"],
    "r_scalars_out": ["(A / s) @ B", "A @ (B / s)", "(s * A) @ B", "outer(s * x, y)"],
    "r_leading_axis": ["x[None, :] * A", "A - x[None, :]", "x[None, :] / s"],
    "r_factor": ["A @ x + A @ x", "S @ x - S.T @ x", "(x / s) * u", "A * x - A * A", "x * A + A * A",
                 "k * A - k * x"],
    "r_masks": ["A * (A > x) + 0.1 * (A * (A <= x))", "(x < A) * k / s + 2 * ((x >= A) * k) / s",
                "2 * (A >= 0) + (A < 0)"],
    "r_centred": ["A + sum(k * (A - mean(A, axis=1, keepdims=True)), axis=1, keepdims=True)",
                  "-sum(2 * ((A - mean(A, axis=1, keepdims=True)) * k / s), axis=1, keepdims=True) - k",
                  "x - sum(s * (R - mean(R, axis=(0, 2), keepdims=True)), axis=(0, 2))"],
    "r_diag": ["diag(outer(x, u))", "diag(u) @ x", "diag(y) @ A", "A @ diag(x)", "x @ diag(u)", "diag(x).T"],
    "r_mean": ["sum(-A, axis=0)", "sum(A, axis=0) / m", "sum(A, axis=1, keepdims=True) / n"],
}


def _rule_env(seed=0):
    rng = np.random.default_rng(seed)
    sizes = {"m": 3, "n": 4, "p": 5}
    env = {name: rng.uniform(0.5, 1.5, tuple(sizes[d] if isinstance(d, str) else d for d in dims))
           for name, dims in RULE_SHAPES.items()}
    return env, sizes


def test_every_rule_has_cases():
    assert set(RULE_CASES) == {r.__name__ for r in dv.RULES}


@pytest.mark.parametrize("rule,text", [(r, t) for r, texts in RULE_CASES.items() for t in texts])
def test_each_rewrite_rule_fires_and_keeps_the_value(rule, text):
    node, cx = _setup(RULE_SHAPES, text)
    fn = getattr(dv, rule)
    out = fn(cx, node)
    assert out is not None, f"{rule} did not fire on {text}"
    env, sizes = _rule_env()
    assert cx.shape(out) == cx.shape(node)
    np.testing.assert_allclose(_value(out, env, sizes), _value(node, env, sizes), rtol=1e-12, atol=1e-12)


def test_a_centred_sum_vanishes_only_when_the_other_factors_are_constant_along_its_axis():
    for text in ["A + sum(A * (A - mean(A, axis=1, keepdims=True)), axis=1, keepdims=True)",  # A varies along 1
                 "A + sum(k * (A - mean(A, axis=0, keepdims=True)), axis=1, keepdims=True)",  # the other axis
                 "A + sum(k * (A - mean(A, axis=1)[:, None]), axis=1, keepdims=True)"]:
        node, cx = _setup(RULE_SHAPES, text)
        assert dv.r_centred(cx, node) is None, text


def test_spelled_out_functions_are_recognised_by_their_values():
    _, cx = _setup({"q": ("n",), "w": ("n",)}, "q")
    for text, name in [("q * (1 + erf(q / sqrt(2))) / 2", "gelu"), ("1 / (1 + exp(-q))", "sigmoid"),
                       ("q * q", "square"), ("log(1 + exp(q))", "softplus")]:
        node = parse_expression(text, Scope(tensors={"q"}, dims=set(DIMS)))
        found = dv.spelled_out(node, "q")
        assert found is not None and found.params["fn"] == name, text
    for text in ["q * (1 + erf(q / 2)) / 2", "q * w", "tanh(q)", "q ** 3", "q"]:
        node = parse_expression(text, Scope(tensors={"q", "w"}, dims=set(DIMS)))
        assert dv.spelled_out(node, "q") is None, text


def test_shorter_forms_for_spelled_out_functions_centred_sums_common_factors_and_masks():
    smooth, _ = _claims(BUNDLED / "elementwise_smooth.toml")
    assert smooth["grad_q"].expr == "grad_gq * gelu_prime(q)"  # gq = q * (1 + erf(q / sqrt(2))) / 2
    norm, _ = _claims(BUNDLED / "layer_norm.toml")
    assert norm["grad_mu"].expr == "-sum(grad_xhat * rsqrt(var + eps), axis=1, keepdims=True)"  # no var path
    gru, _ = _claims(BUNDLED / "gru_cell.toml")
    assert gru["grad_z"].expr == "grad_h2 * (h - n)"
    piecewise, _ = _claims(BUNDLED / "elementwise_piecewise.toml")
    assert piecewise["grad_g"].expr == "grad_lk * where(g > 0.1 * g, 1, 0.1)"  # lk = maximum(g, 0.1 * g)
    assert all(c.verdict == "proved" for c in [*smooth.values(), *norm.values(), *gru.values(), *piecewise.values()])


def test_pads_that_overlap_or_leave_a_hole_are_not_a_concat():
    for text in ("pad(x, ((0, n),)) + pad(u, ((0, n),))",  # both blocks at 0
                 "pad(x, ((0, m + n),)) + pad(y, ((2*n, 0),))",  # a hole of n between them
                 "pad(x, ((0, n),)) + 2 * pad(u, ((n, 0),))"):  # a block scaled after padding: not a pad
        node, cx = _setup(RULE_SHAPES, text)
        assert dv.r_blocks(cx, node) is None, text


# random trees over RULE_SHAPES, built shape-first so every tree is well-shaped
MAT, VEC_N, VEC_M, SCALAR = ("m", "n"), ("n",), ("m",), ()


def _tree(draw, shape, depth):
    leaves = {MAT: ["A"], VEC_N: ["x", "u"], VEC_M: ["y"], SCALAR: ["s", "2", "1", "0", "-1"]}
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(leaves[shape]))
    sub = lambda sh: _tree(draw, sh, depth - 1)  # noqa: E731
    options = ["add", "sub", "mul", "neg", "scal", "ones"]
    if shape == MAT:
        options += ["TT", "matmul_mm", "outer", "einsum_t", "expand", "div", "diag_l", "diag_r", "centred", "masks"]
    if shape == VEC_N:
        options += ["matvec_t", "sumaxis0", "einsum_mv"]
    if shape == VEC_M:
        options += ["matvec", "sumaxis1keep"]
    if shape == SCALAR:
        options += ["sum", "dot", "blocks"]
    choice = draw(st.sampled_from(options))
    if choice in ("add", "sub", "mul"):
        sym = {"add": "+", "sub": "-", "mul": "*"}[choice]
        return f"({sub(shape)} {sym} {sub(shape if draw(st.booleans()) else SCALAR)})"
    if choice == "neg":
        return f"(-{sub(shape)})"
    if choice == "scal":
        return f"({sub(SCALAR)} * {sub(shape)})"
    if choice == "ones":
        dims = {MAT: "[m, n]", VEC_N: "n", VEC_M: "m", SCALAR: None}[shape]
        return f"(ones({dims}) * {sub(shape)})" if dims else sub(shape)
    if choice == "TT":
        return f"({sub(MAT)}.T.T)"
    if choice == "matmul_mm":
        return f"(A @ S.T @ ({sub(MAT)}.T @ A))"
    if choice == "outer":
        return f"outer({sub(VEC_M)}, {sub(VEC_N)})"
    if choice == "einsum_t":
        return f"einsum('ji->ij', {sub(MAT)}.T)"
    if choice == "expand":
        return f"({sub(VEC_N)}[None, :] * {sub(MAT)})"
    if choice == "diag_l":
        return f"(diag({sub(VEC_M)}).T @ {sub(MAT)})"
    if choice == "diag_r":
        return f"({sub(MAT)} @ diag({sub(VEC_N)}))"
    if choice == "div":
        return f"({sub(MAT)} / (2 + s))"
    if choice == "blocks":  # two vectors padded into one: a concat
        return f"sum(pad({sub(VEC_N)}, ((0, m),)) + pad({sub(VEC_M)}, ((n, 0),)))"
    if choice == "centred":  # deviations from a row mean, times a factor constant along the row, summed
        x = sub(MAT)
        return f"({sub(MAT)} - sum(k * {sub(SCALAR)} * ({x} - mean({x}, axis=1, keepdims=True)), axis=1, keepdims=True))"
    if choice == "masks":  # a leaky ReLU's two slopes
        g, a, b = sub(MAT), sub(MAT), sub(MAT)
        return f"({g} * ({a} > {b}) + {sub(SCALAR)} * ({g} * ({a} <= {b})))"
    if choice == "matvec_t":
        return f"({sub(MAT)}.T @ {sub(VEC_M)})"
    if choice == "sumaxis0":
        return f"sum(sum({sub(MAT)}, axis=0, keepdims=True), axis=0)"
    if choice == "einsum_mv":
        return f"einsum('ij,i->j', {sub(MAT)}, {sub(VEC_M)})"
    if choice == "matvec":
        return f"({sub(MAT)} @ {sub(VEC_N)})"
    if choice == "sumaxis1keep":
        return f"(sum({sub(MAT)}, axis=1) / n)"
    if choice == "sum":
        return f"sum(-{sub(MAT)})"
    return f"dot({sub(VEC_N)}, {sub(VEC_N)})"


@st.composite
def trees(draw):
    shape = draw(st.sampled_from([MAT, VEC_N, VEC_M, SCALAR]))
    return _tree(draw, shape, 4)


_COMPARISONS = {"gt", "ge", "lt", "le"}


def _near_tie(node, env, sizes) -> bool:
    """Whether a comparison in ``node`` weighs two values equal up to rounding (``A - sum(k * (A - mean(A)))``
    against ``A``): its mask is rounding noise then, which a rewrite to the exact value need not keep."""
    for sub in walk(node):
        if isinstance(sub, Call) and sub.op in _COMPARISONS:
            a, b = (_value(arg, env, sizes) for arg in sub.args)
            gap = np.abs(a - b)
            if np.any((gap > 0) & (gap <= 1e-9 * (1 + np.abs(a) + np.abs(b)))):
                return True
    return False


def test_a_comparison_of_values_equal_up_to_rounding_is_a_near_tie():
    # found by Hypothesis in CI's environment: the masks of this tree flip on 1e-16 residues, and the
    # (exact) rewrite of the centred sum to 0 then differs from the float value in 8 of 12 entries
    env, sizes = _rule_env(1)
    tie = "A * ((A - sum(k * s * (A - mean(A, axis=1, keepdims=True)), axis=1, keepdims=True)) > A)"
    assert _near_tie(_setup(RULE_SHAPES, tie)[0], env, sizes)
    assert not _near_tie(_setup(RULE_SHAPES, "A * ((A + 1) > A) + A * (A > A)")[0], env, sizes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_rewrites_keep_the_value_of_random_trees(text):
    node, cx = _setup(RULE_SHAPES, text)
    env, sizes = _rule_env(1)
    assume(not _near_tie(node, env, sizes))
    want = _value(node, env, sizes)
    for sub in list(walk(node)):
        if not isinstance(sub, Call):
            continue
        for rule in dv.RULES:  # each rule, wherever it fires
            out = rule(cx, sub)
            if out is not None:
                assert cx.shape(out) == cx.shape(sub), (rule.__name__, dv.to_text(sub))
                np.testing.assert_allclose(_value(out, env, sizes), _value(sub, env, sizes), rtol=1e-9, atol=1e-9,
                                           err_msg=f"{rule.__name__} on {dv.to_text(sub)} -> {dv.to_text(out)}")
    simple = dv.Rewriter(cx)(node)
    np.testing.assert_allclose(_value(simple, env, sizes), want, rtol=1e-9, atol=1e-9,
                               err_msg=f"{text} -> {dv.to_text(simple)}")
    # the printed text parses back to the same value: what derive writes is what gets checked
    again, _ = _setup(RULE_SHAPES, dv.to_text(simple))
    np.testing.assert_allclose(_value(again, env, sizes), want, rtol=1e-9, atol=1e-9)


def test_the_printer_keeps_precedence():
    for text in ["-(A @ B).T", "(A - A) * A", "A - (A - A)", "(-2) ** 2 * s", "-A ** 2", "x @ (A.T @ y)",
                 "A * (x[None, :] > 0)", "s / (s * s)", "-(A * A) @ S"]:
        shapes = {**RULE_SHAPES}
        node, _ = _setup(shapes, text)
        again, _ = _setup(shapes, dv.to_text(node))
        env, sizes = _rule_env()
        np.testing.assert_allclose(_value(again, env, sizes), _value(node, env, sizes), err_msg=text)


# -- derived claims ------------------------------------------------------------------------------


def _claims(source, **kw):
    result = dv.derive(source, options=FAST, **kw)
    assert result.error is None, result.error
    return {c.name: c for c in result.claims}, result


def test_dense_layer_in_both_conventions():
    column, _ = _claims(BUNDLED / "dense_column.toml")
    assert column["grad_a"].expr == "W.T @ grad_z"
    assert column["grad_W"].expr == "outer(grad_z, a)"
    assert column["grad_z"].expr == "grad_h * f_prime(z)"
    assert column["grad_b"].expr == "grad_z"
    index, _ = _claims(BUNDLED / "dense_index_convention.toml")
    assert index["grad_a"].expr == "W @ grad_z"
    assert index["grad_W"].expr == "outer(a, grad_z)"
    assert index["grad_a"].steps[0].entry == "grad_a[i] = sum_j grad_z[j] * W[i, j]"  # the file's own indices
    assert all(c.verdict == "proved" for c in [*column.values(), *index.values()])


ROWS = """
[derivation]
title = "batch as rows, W (n, m)"
[dims]
B = "batch"
n = "in"
m = "out"
[inputs]
X = ["B", "n"]
W = ["n", "m"]
b = ["m"]
[forward]
Z = "X @ W + b"
H = "tanh(Z)"
[loss]
upstream = "H"
[claims]
grad_W = "X.T @ grad_Z"
"""


def test_batch_as_columns_and_as_rows():
    columns, _ = _claims(BUNDLED / "dense_column_batch.toml")
    assert columns["grad_W"].expr == "grad_Z @ X.T"
    assert columns["grad_b"].expr == "sum(grad_Z, axis=1)"
    assert columns["grad_X"].expr == "W.T @ grad_Z"
    rows, _ = _claims(ROWS)
    assert rows["grad_W"].expr == "X.T @ grad_Z"
    assert rows["grad_X"].expr == "grad_Z @ W.T"
    assert rows["grad_b"].expr == "sum(grad_Z, axis=0)"
    assert rows["grad_Z"].expr == "grad_H * tanh_prime(Z)"
    pytorch, _ = _claims(BUNDLED / "dense_rowmajor_batch.toml")
    assert pytorch["grad_W"].expr == "grad_Y.T @ X"
    assert all(c.verdict == "proved" for c in [*columns.values(), *rows.values(), *pytorch.values()])


def test_cross_entropy_folds_only_where_the_labels_domain_makes_it_true():
    ce, _ = _claims(BUNDLED / "softmax_cross_entropy.toml")
    assert ce["grad_z"].expr == "p - y" and ce["grad_z"].verdict == "proved"
    batch, _ = _claims(BUNDLED / "softmax_regression_batch.toml")
    assert batch["grad_Z"].expr == "(P - Y) / B" and batch["grad_Z"].verdict == "proved"
    nll, _ = _claims(BUNDLED / "log_softmax_nll.toml")
    assert nll["grad_Z"].expr == "softmax(Z, axis=0) - Y" and nll["grad_Z"].verdict == "proved"
    real_labels = (BUNDLED / "softmax_cross_entropy.toml").read_text().replace('domain = "simplex", ', "")
    plain, _ = _claims(real_labels)
    assert plain["grad_z"].expr != "p - y" and plain["grad_z"].verdict == "proved"
    assert plain["grad_z"].expr == "p * (grad_p - sum(grad_p * p, axis=0, keepdims=True))"


CORRECT = sorted(p for p in BUNDLED.glob("*.toml"))
MISTAKES = sorted((BUNDLED / "mistakes").glob("*.toml"))  # wrong claims, but a sound forward pass


def _grad_names_read(expr: str) -> set[str]:
    return set(re.findall(r"\bgrad_\w+", expr))


@pytest.mark.parametrize("path", sweep(CORRECT + MISTAKES), ids=[p.name for p in CORRECT + MISTAKES])
def test_every_claimed_gradient_is_derived_and_proved(path):
    result = dv.derive(path, options=FAST)
    assert result.error is None
    # every gradient derive writes is proved
    assert [(c.name, c.expr, c.verdict, c.message) for c in result.claims if c.verdict != "proved"] == []
    doc = tomllib.loads(path.read_text())
    derived = {c.name for c in result.claims}
    upstream = doc["loss"].get("upstream", [])
    upstream = {f"grad_{n}" for n in ([upstream] if isinstance(upstream, str) else upstream)}
    # every gradient the file claims, or a derived claim reads, is derived
    needed = {dv.claim_name(k) for k in doc["claims"]}
    needed |= {n for c in result.claims for n in _grad_names_read(c.expr)} - upstream
    assert needed - derived == set()
    assert result.not_derived == {}


MAX_OVER_COPIES = """
[derivation]
title = "a max over copies of the input: entries tie by construction"
[dims]
n = "n"
[inputs]
x = ["n"]
[forward]
c = "concat([x, x])"
m = "max(c)"
[loss]
upstream = "m"
[claims]
grad_x = "0 * x"
"""


def test_a_max_over_copies_is_derived_with_the_even_split():
    """The plain mask gives the max's gradient to every copy that reaches it (twice the truth for two copies), and
    derive reported its own claim refuted as a bug of derive; the even split over the entries that reach the
    max is proved, and where no copies tie (max-pool) the plain mask stays."""
    copies, _ = _claims(MAX_OVER_COPIES)
    assert copies["grad_c"].expr == "grad_m * ((c >= m) / sum(c >= m, keepdims=True))"
    assert all(c.verdict == "proved" for c in copies.values()), [(c.expr, c.message) for c in copies.values()]
    pool, _ = _claims(BUNDLED / "maxpool_2x2.toml")
    assert "/ sum(" not in pool["grad_windows"].expr and pool["grad_windows"].verdict == "proved"


def test_contributions_from_several_readers_are_summed():
    rnn, _ = _claims(BUNDLED / "rnn_two_steps.toml")
    assert rnn["grad_W"].expr == "outer(grad_a1, h0) + outer(grad_a2, h1)"
    assert rnn["grad_b"].expr == "grad_a1 + grad_a2"
    quad, _ = _claims(BUNDLED / "quadratic_form.toml")
    assert quad["grad_x"].expr == "(A + A.T) @ x"


def test_for_selects_targets_and_rejects_unknown_names():
    claims, _ = _claims(DENSE_COLUMN, targets=["grad_W", "b"])
    assert list(claims) == ["grad_W", "grad_b"]
    result = dv.derive(DENSE_COLUMN, targets=["grad_nope"], options=FAST)
    assert result.error and "nope" in result.error
    given = dv.derive(DENSE_COLUMN, targets=["grad_h"], options=FAST)
    assert given.error and "upstream" in given.error


def test_results_display_in_a_notebook():
    _, result = _claims(DENSE_COLUMN)
    assert "<td><code>W.T @ grad_z</code></td><td>proved</td>" in result._repr_html_()
    assert "| `grad_a` | `W.T @ grad_z` | proved |" in result._repr_markdown_()


def _wrong_sign(cx, g, out, a, b):
    first, second = ops._adj_matmul(cx, g, out, a, b)
    return first, dv.call("neg", second)


def test_a_derived_claim_that_is_not_proved_is_reported_as_a_bug(monkeypatch):
    monkeypatch.setitem(ops.OPS, "matmul", ops._replace(ops.OPS["matmul"], adjoint=_wrong_sign))
    result = dv.derive(BUNDLED / "mlp_two_layer_mse.toml", options=FAST)
    assert not result.ok
    bad = {c.name: c.verdict for c in result.claims if not c.ok}
    assert bad == {"grad_h1": "refuted", "grad_x": "refuted"}


def test_an_ill_shaped_template_is_reported_as_a_bug_not_raised(monkeypatch):
    def transposeless(cx, g, out, a, b):
        return ops._adj_matmul(cx, g, out, a, b)[0], dv.call("matmul", a, g)

    monkeypatch.setitem(ops.OPS, "matmul", ops._replace(ops.OPS["matmul"], adjoint=transposeless))
    result = dv.derive(BUNDLED / "mlp_two_layer_mse.toml", options=FAST)
    assert set(result.not_derived) == {"h1", "x"} and not result.ok
    assert all("a bug of derive" in why for why in result.not_derived.values())


# -- command line --------------------------------------------------------------------------------


def test_cli_toml_pastes_into_the_file_and_checks(tmp_path):
    runner = CliRunner()
    shown = runner.invoke(main, ["derive", str(BUNDLED / "softmax_regression_batch.toml")])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[1] == "[claims]"
    text = (BUNDLED / "softmax_regression_batch.toml").read_text()
    pasted = re.sub(r"\[claims\].*?(?=\n\[|\Z)", lambda _: shown.output.split("\n", 1)[1], text, flags=re.S)
    assert tomllib.loads(pasted)["claims"]["grad_Z"] == "(P - Y) / B"
    target = tmp_path / "pasted.toml"
    target.write_text(pasted)
    checked = runner.invoke(main, ["check", str(target), "--trials", "3", "--shapes", "1"])
    assert checked.exit_code == 0, checked.output


CONVOLUTIONS = [BUNDLED / "conv1d_valid.toml", BUNDLED / "conv2d_zero_padding.toml",
                *(BUNDLED / "mistakes" / f"{n}.toml" for n in
                  ("conv1d_kernel_not_flipped", "conv1d_wrong_padding", "conv2d_padding_offset_forgotten"))]


def _without(text: str, tables: tuple[str, ...]) -> str:
    """``text`` with the named tables (and their contents) cut out."""
    for table in tables:
        text = re.sub(rf"^\[{table}\]\n.*?(?=^\[|\Z)", "", text, flags=re.S | re.M)
    return text


# the 1-D layer by default (the helper and the index claim are the same kind in 2-D, at 20x the cost); the rest
# under -m slow
@pytest.mark.parametrize("path", [CONVOLUTIONS[0], *(pytest.param(p, marks=pytest.mark.slow) for p in CONVOLUTIONS[1:])],
                         ids=[p.name for p in CONVOLUTIONS])
def test_cli_toml_with_backward_helpers_pastes_into_the_file_and_checks(path, tmp_path):
    """A convolution's input gradient is a full correlation of the zero-padded upstream gradient:
    derive writes the padding as a [backward] helper and prints it with the claims, so the
    output pasted into the file (without its own claims, helpers and expectations) proves."""
    runner = CliRunner()
    shown = runner.invoke(main, ["derive", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "[backward]\ngpad_y = " in shown.output and "\n[claims]\n" in shown.output
    target = tmp_path / path.name
    target.write_text(_without(path.read_text(), ("claims", "backward", "expect")) + "\n" + shown.output)
    doc = tomllib.loads(target.read_text())
    assert any(k.startswith("grad_x[") or k.startswith("grad_xp[") for k in doc["claims"])
    checked = runner.invoke(main, ["check", str(target), "--trials", "3", "--shapes", "1", "--format", "json"])
    assert checked.exit_code == 0, checked.output
    verdicts = [c["verdict"] for f in json.loads(checked.output)["files"] for c in f["claims"]]
    assert verdicts and set(verdicts) == {"proved"}


def test_a_convolution_input_gradient_is_the_full_correlation_with_the_flipped_kernel():
    claims, result = _claims(BUNDLED / "conv1d_valid.toml")
    assert result.helpers == {"gpad_y": "pad(grad_y, ((K - 1, K - 1),))"}
    assert claims["grad_x"].key == "grad_x[t]"
    assert claims["grad_x"].expr == "sum(w[k] * gpad_y[t - k + K - 1] for k in K)"
    conv2d, result = _claims(BUNDLED / "conv2d_zero_padding.toml")
    assert result.helpers == {"gpad_y": "pad(grad_y, ((0, 0), (K - 1, K - 1), (K - 1, K - 1)))"}
    assert conv2d["grad_xp"].expr == ("sum(w[f, c, p, q] * gpad_y[f, u - p + K - 1, v - q + K - 1] "
                                      "for f in F for p in K for q in K)")
    assert conv2d["grad_x"].expr == "grad_xp[i, j + 1, k + 1]"
    assert all(c.verdict == "proved" for c in [*claims.values(), *conv2d.values()])


def test_cli_json_and_text_formats():
    runner = CliRunner()
    shown = runner.invoke(main, ["derive", str(BUNDLED / "dense_column.toml"), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert {"name": "grad_a", "expr": "W.T @ grad_z", "verdict": "proved"} in data["claims"]
    text = runner.invoke(main, ["derive", str(BUNDLED / "softmax_regression_batch.toml"), "--format", "text"])
    assert text.exit_code == 0
    assert "grad_Z = (P - Y) / B   proved" in text.output
    assert "chain:" in text.output and "local Jacobian ∂P/∂Z, (k, B) × (k, B): diag(p) − p pᵀ" in text.output
    for fmt, marker in (("markdown", "| `grad_W` | `grad_Z @ X.T` | proved |"), ("latex", "\\begin{itemize}")):
        out = runner.invoke(main, ["derive", str(BUNDLED / "softmax_regression_batch.toml"), "--format", fmt])
        assert out.exit_code == 0 and marker in out.output
    latex = runner.invoke(main, ["derive", str(BUNDLED / "softmax_regression_batch.toml"), "--format", "latex"]).output
    assert latex.startswith("\\documentclass") and latex.isascii()  # pdflatex-safe, like explain's


# a convolution's input that another variable reads too: its index-form gradient would have to add
# a matrix-form contribution, which derive does not write
TWO_READERS = (BUNDLED / "conv1d_valid.toml").read_text().replace(
    'upstream = "y"', 'upstream = ["y", "s"]').replace('taps = "ones(K)"', 'taps = "ones(K)"\ns = "sum(x)"')


def test_cli_exit_status(tmp_path, monkeypatch):
    runner = CliRunner()
    assert runner.invoke(main, ["derive", str(BUNDLED / "conv1d_valid.toml")]).exit_code == 0
    two_readers = tmp_path / "two_readers.toml"
    two_readers.write_text(TWO_READERS)
    conv = runner.invoke(main, ["derive", str(two_readers)])
    assert conv.exit_code == 1 and "grad_x not derived" in conv.output  # x[t + k] and sum(x): not written
    bad = tmp_path / "bad.toml"
    bad.write_text("[derivation]\ntitle = 'x'\n")
    assert runner.invoke(main, ["derive", str(bad)]).exit_code == 2

    monkeypatch.setitem(ops.OPS, "matmul", ops._replace(ops.OPS["matmul"], adjoint=_wrong_sign))
    broken = runner.invoke(main, ["derive", str(BUNDLED / "mlp_two_layer_mse.toml"), "--no-symbolic"])
    assert broken.exit_code == 1 and "a bug of derive" in broken.output


def test_derive_never_hands_text_to_an_evaluator():
    from pathlib import Path

    modules = sorted(Path(dv.__file__).parent.glob("*.py"))  # the package, every module of it
    assert len(modules) >= 8
    for module in modules:
        source = module.read_text(encoding="utf-8")
        for word in ("eval(", "exec(", "sympify", "parse_expr", "lambdify"):
            assert word not in source, (module.name, word)


def test_python_entry_takes_text_or_a_path():
    from_text, _ = _claims(DENSE_COLUMN)
    from_path, _ = _claims(str(BUNDLED / "dense_column.toml"))
    assert {n: c.expr for n, c in from_text.items()} == {n: c.expr for n, c in from_path.items()}
    assert [c.expr for c in dv(DENSE_COLUMN, check=False).claims] == [c.expr for c in from_text.values()]  # callable
    unchecked = dv.derive(DENSE_COLUMN, check=False)
    assert unchecked.claims[0].verdict == "error" and not unchecked.ok


def test_a_gradient_past_the_limits_is_not_derived_rather_than_a_bug():
    deep = "tanh(" * 30 + "W @ a" + ")" * 30
    text = DENSE_COLUMN.replace('z = "W @ a + b"', f'z = "{deep} + b"')
    result = dv.derive(text, options=FAST)
    assert "grad_a" not in {c.name for c in result.claims} and "a" in result.not_derived
    assert "split the forward definition" in result.not_derived["a"]
    assert {c.name: c.verdict for c in result.claims}["grad_b"] == "proved"


INDEX_FORMS = """
[derivation]
title = "index forms"
[dims]
n = "n"
m = "m"
p = "p"
B = "B"
[inputs]
W = ["m", "n"]
X = ["n", "B"]
c = ["m"]
A = ["m", "m"]
x = ["m"]
P = ["m", "n"]
Q = ["n", "p"]
r = ["p"]
u = ["m"]
v = ["n"]
[forward]
"Z[i, b]" = "sum(W[i, j] * X[j, b] for j in n) + c[i]"
"y[i]" = "2 * x[i] - sum(A[i, j] * x[j] for j in m)"
"s[i]" = "sum(sum(P[i, j] * Q[j, k] * r[k] for k in p) for j in n)"
"T[j, i]" = "W[i, j]"
"O[i, j]" = "u[i] + v[j]"
[loss]
upstream = ["Z", "y", "s", "T", "O"]
[claims]
grad_W = "W"
"""


def test_index_form_forwards_derive_to_matrix_form():
    claims, result = _claims(INDEX_FORMS)
    assert not result.not_derived
    assert {n: c.expr for n, c in claims.items()} == {
        "grad_u": "sum(grad_O, axis=1)", "grad_v": "sum(grad_O, axis=0)",
        "grad_P": "outer(grad_s, Q @ r)", "grad_Q": "outer(P.T @ grad_s, r)", "grad_r": "Q.T @ (P.T @ grad_s)",
        "grad_A": "-outer(grad_y, x)", "grad_x": "2 * grad_y - A.T @ grad_y",
        "grad_W": "grad_Z @ X.T + grad_T.T", "grad_X": "W.T @ grad_Z", "grad_c": "sum(grad_Z, axis=1)",
    }
    assert all(c.verdict == "proved" for c in claims.values())


def test_a_kernel_gradient_reads_the_shifted_entries_from_a_variable_that_holds_exactly_them():
    conv = (BUNDLED / "conv1d_valid.toml").read_text()
    claims, result = _claims(conv)
    assert claims["grad_w"].expr == "Xcol.T @ grad_y" and claims["grad_w"].verdict == "proved"
    assert "read from Xcol" in claims["grad_w"].steps[0].note
    assert "Xcol" not in claims["grad_x"].expr  # x itself sits at the shifted index: never replaced
    scaled = conv.replace('taps = "ones(K)"', 'taps = "2 * ones(K)"')
    assert scaled != conv
    claims, result = _claims(scaled)
    # Xcol no longer holds x[t + k]: the kernel's gradient is written in index form instead
    assert claims["grad_w"].key == "grad_w[k]" and claims["grad_w"].verdict == "proved"
    assert claims["grad_w"].expr == "sum(grad_y[t] * x[t + k] for t in T)"
    assert claims["grad_x"].expr == "sum(w[k] * gpad_y[t - k + K - 1] for k in K)"
    assert claims["grad_x"].verdict == "proved"
    _, result = _claims(TWO_READERS)  # x read by y and by s: the full correlation alone is not its gradient
    assert "shifted positions" in result.not_derived["x"]


def test_index_form_gradients_and_unpadding_are_written_in_the_files_indices():
    conv, result = _claims(BUNDLED / "conv2d_zero_padding.toml")
    assert conv["grad_w"].key == "grad_w[f, c, p, q]"
    assert conv["grad_w"].expr == "sum(grad_y[f, u, v] * xp[c, u + p, v + q] for u in Ho for v in Wo)"
    assert conv["grad_b"].expr == "sum(grad_y, axis=(1, 2))"  # only b's own term of y is differentiated
    # x's block of the padded gradient is empty for some sizes as a slice (Ho + K - 3): index form
    assert conv["grad_x"].key == "grad_x[i, j, k]" and conv["grad_x"].expr == "grad_xp[i, j + 1, k + 1]"
    assert all(c.verdict == "proved" for c in conv.values())
    toml = result.to_toml()
    assert '"grad_w[f, c, p, q]" = ' in toml and re.search(r'^"grad_xp\[c, u, v\]" +=', toml, re.M)
    assert toml.index("[backward]\ngpad_y = ") < toml.index("[claims]")
    assert result.to_json()["backward"] == [{"name": "gpad_y", "expr": result.helpers["gpad_y"]}]
    as_json = {c["name"]: c for c in result.to_json()["claims"]}
    assert as_json["grad_w"]["key"] == "grad_w[f, c, p, q]" and "key" not in as_json["grad_b"]
    labels, _ = _claims(BUNDLED / "cross_entropy_integer_labels.toml")  # logp[b, y[b]]: a one-hot pick
    assert labels["grad_logp"].expr == "grad_picked[:, None] * one_hot(y, K)"
    assert labels["grad_logp"].verdict == "proved"


def test_a_file_without_claims_is_derived_and_its_expectations_play_no_part(tmp_path):
    bare = DENSE_COLUMN.split("[claims]")[0]
    claims, _ = _claims(bare)
    assert claims["grad_a"].expr == "W.T @ grad_z" and claims["grad_a"].verdict == "proved"
    wrong = DENSE_COLUMN.replace('grad_a = "W.T @ grad_z"', 'grad_a = "W @ grad_z"') + '[expect]\ngrad_a = "refuted"\n'
    claims, _ = _claims(wrong)
    assert claims["grad_a"].expr == "W.T @ grad_z" and claims["grad_a"].verdict == "proved"
    out = tmp_path / "claims.toml"
    path = tmp_path / "layer.toml"
    path.write_text(bare)
    shown = CliRunner().invoke(main, ["derive", str(path), "--output", str(out)])
    assert shown.exit_code == 0 and shown.output == ""
    assert tomllib.loads(out.read_text())["claims"]["grad_W"] == "outer(grad_z, a)"


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6))
def test_random_forward_passes_never_crash_derive_or_build_ill_shaped_claims(seed):
    import random
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.fuzz import typed_file

    text = typed_file(random.Random(seed), b"").decode()
    result = dv.derive(text, options=Options(trials=2, shapes=1, timeout=2))
    if result.error:  # the file's own problem (an ill-shaped or NaN forward pass), located
        assert result.error.startswith(("<string>", "checking the derived claims failed: <string>")), result.error
        return
    assert not any("bug of derive" in why for why in result.not_derived.values()), result.not_derived
    assert all(c.verdict in ("proved", "verified", "refuted") for c in result.claims), \
        [(c.name, c.verdict, c.message) for c in result.claims]


def test_cli_takes_a_bundled_name_and_a_note_block(tmp_path):
    runner = CliRunner()
    bundled = runner.invoke(main, ["derive", "dense_column.toml", "--format", "json"])
    assert bundled.exit_code == 0, bundled.output
    assert {"name": "grad_W", "expr": "outer(grad_z, a)", "verdict": "proved"} in json.loads(bundled.output)["claims"]
    note = tmp_path / "notes.md"
    note.write_text("# Notes\n\n```toml backpropcheck\n" + DENSE_COLUMN.strip() + "\n```\n")
    for ref in (str(note), f"{note}:4"):
        shown = runner.invoke(main, ["derive", ref])
        assert shown.exit_code == 0, shown.output
        assert 'grad_a = "W.T @ grad_z"' in shown.output and f"{note}:4" in shown.output
    assert runner.invoke(main, ["derive", f"{note}:9"]).exit_code == 2


def test_for_names_an_unknown_target_as_given_and_lists_the_known_ones() -> None:
    """'--for grad_q' said '--for names q' (QA pass)."""
    result = dv.derive(DENSE_COLUMN, ["grad_q"], FAST)
    assert result.error == ("--for grad_q: q is not a non-constant input or forward variable "
                            "(those are a, W, b, z, h)")


def test_every_step_through_a_structural_op_says_what_its_jacobian_is() -> None:
    """derive --format text left 'local Jacobian …:' blank for slices, pad, concat and transpose (QA pass): the
    op table had no note for them."""
    from backpropcheck.lang.ops import OPS

    for name in ("reshape", "transpose", "swapaxes", "flip", "slice", "concat", "stack", "pad"):
        assert OPS[name].jacobian_note(0, [(), ()]), name
    text = """
[derivation]
title = "moving entries"
[dims]
n = "rows"
m = "cols"
[inputs]
x = ["n", "m"]
y = ["n", "m"]
[forward]
c = "concat([x, y], axis=0)"
p = "pad(c, ((1, 0), (0, 0)))"
t = "transpose(p)"
s = "t[:, 1:2 * n + 1]"
[loss]
upstream = "s"
[claims]
grad_x = "grad_s"
"""
    result = dv.derive(text, None, FAST)
    steps = [step for c in result.claims for step in c.steps]
    assert steps and all(step.note for step in steps), [(s.op, s.note) for s in steps if not s.note]


LSE_OVER_AXES = """
[derivation]
title = "logsumexp over two axes"
[dims]
n = "n"
m = "m"
k = "k"
[inputs]
a = ["n", "m", "k"]
[forward]
s = "logsumexp(a, axis=(0, 2), keepdims=True)"
[loss]
upstream = "s"
[claims]
grad_a = "0 * a"
"""


def test_logsumexp_over_several_axes_is_derived_and_proved():
    """softmax takes one axis, so the adjoint over several is exp(a - lse): the softmax template crashed derive
    with a traceback (QA pass, round 11)."""
    claims, result = _claims(LSE_OVER_AXES)
    assert claims["grad_a"].expr == "grad_s * exp(a - s)"
    assert claims["grad_a"].verdict == "proved", claims["grad_a"].message


def test_an_internal_error_of_derive_is_reported_not_raised(monkeypatch):
    from backpropcheck.derive import driver

    def broken(self, v, live):
        raise TypeError("a rule's bug")

    monkeypatch.setattr(driver._Deriver, "derive_one", broken)
    result = dv.derive(DENSE_COLUMN, options=FAST)
    assert not result.claims and "internal error of derive (TypeError: a rule's bug)" in result.not_derived["z"]


INTEGER_FORWARD = """
[derivation]
title = "an integer forward variable"
[dims]
N = "n"
V = "v"
E = "e"
[inputs]
I = { shape = ["N"], domain = "index", range = "V" }
C = ["V", "E"]
[forward]
J = "flip(I, axis=0)"
L = "C[J]"
[loss]
upstream = "L"
[claims]
grad_C = "0 * C"
"""


def test_an_integer_forward_variable_first_is_no_gradient_to_derive():
    """derive's placeholder claim was on the first forward variable, here an index (no gradient): the file was
    refused with exit 2 although check proves it (QA pass, round 11); nor is its gradient derived."""
    claims, result = _claims(INTEGER_FORWARD)
    assert set(claims) == {"grad_C"} and claims["grad_C"].expr == "scatter_add(grad_L, J, V)"
    assert claims["grad_C"].verdict == "proved", claims["grad_C"].message


def test_derived_claims_a_bound_stops_are_not_checked_not_a_bug_of_derive(tmp_path):
    """A bound that stops the derived file's check (its entries past --max-entries) left every claim 'error' and
    printed 'a bug of derive, please report it ()' for each (QA pass, round 11): they are 'not checked', and the
    bound is named once."""
    from backpropcheck.limits import Limits

    result = dv.derive(DENSE_COLUMN, options=Options(limits=Limits(max_entries=10)))
    assert result.claims and all(c.verdict == "not checked" for c in result.claims)
    assert "max-entries" in (result.error or "")
    path = tmp_path / "dense.toml"
    path.write_text(DENSE_COLUMN)
    run = CliRunner().invoke(main, ["derive", str(path), "--max-entries", "10"])
    assert run.exit_code == 1
    assert "bug of derive" not in run.output and "# not checked" in run.output
