"""Proof scope (SPEC §8, issue 16): ``proved (all shapes)`` only by a finite certificate; traps never.

Each trap is a claim that holds at the sampled dims only (the file's ``[check]`` keeps every
sampled and symbolic dim where the trap vanishes) and is checked twice: with the trap term the
claim is proved at the sampled shapes only; without it, the same claim is proved for all
shapes — so each test would fail if the certificate called the trap all-shapes, and also if it
never said all-shapes at all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import DENSE_COLUMN, LIBRARY_FILES, REPO, library_result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backpropcheck.checker import Options, check_path
from backpropcheck.engines.scope import ALL_SHAPES, SAMPLED, Outside, expression_plan, grid, plan
from backpropcheck.lang.dims import Dim
from backpropcheck.lang.ir import Call, Var
from backpropcheck.limits import Limits
from backpropcheck.loader import loads

QUICK = Options(trials=3)


def _check(tmp_path: Path, text: str, name: str = "case.toml", options: Options = QUICK):
    path = tmp_path / name
    path.write_text(text)
    return {c.name: c for c in check_path(str(path), options).claims}


def _scope(claim) -> str | None:
    assert claim.verdict == "proved", claim.message
    return claim.symbolic.get("scope")


def test_every_claim_of_the_dense_seed_file_is_proved_for_all_shapes(tmp_path: Path) -> None:
    claims = _check(tmp_path, DENSE_COLUMN)
    assert {n: _scope(c) for n, c in claims.items()} == dict.fromkeys(claims, ALL_SHAPES)
    for c in claims.values():
        assert "pattern" in c.symbolic["argument"] and "docs/proof-scope.md" in c.symbolic["argument"]


def test_a_certified_claim_leaves_the_sampled_proof_after_the_first_small_dims(tmp_path: Path, monkeypatch) -> None:
    """The certificate runs after the first small dims: a claim it proves for all shapes holds at the other small
    dims too, so none of them is checked again, and a file whose every claim is certified builds no truth there.
    A claim it does not certify goes on to every small dims."""
    import backpropcheck.engines.symbolic as symbolic

    built: list[dict[str, int]] = []
    made = symbolic.SymbolicTruth.__init__

    def counting(self, d, sizes, *args, **kwargs):
        built.append(dict(sizes))
        made(self, d, sizes, *args, **kwargs)

    monkeypatch.setattr(symbolic.SymbolicTruth, "__init__", counting)
    sampled = _check(tmp_path, DENSE_COLUMN, options=Options(trials=3, scope=False))
    small = sampled["grad_W"].symbolic["shapes"]
    assert len(small) == 3 and len(built) == 3
    built.clear()
    claims = _check(tmp_path, DENSE_COLUMN)
    for c in claims.values():
        assert _scope(c) == ALL_SHAPES
        points = re.search(r"assignment\(s\) \(([^)]*)\)", c.symbolic["argument"]).group(1).split("; ")
        listed = [",".join(f"{k}={v}" for k, v in s.items()) for s in c.symbolic["shapes"]]
        assert c.symbolic["shapes"][0] == small[0] and set(listed[1:]) == set(points) - {listed[0]}
    assert small[1] not in built and small[2] not in built and small[0] in built
    trapped = DENSE_TRAP.replace("{trap}", " + (n - 2) * (n - 3) * a").replace("shapes = 1", "shapes = 2")
    built.clear()
    claims = _check(tmp_path, trapped)
    assert _scope(claims["grad_a"]) == SAMPLED and len(claims["grad_a"].symbolic["shapes"]) == 2
    assert all(s in built for s in claims["grad_a"].symbolic["shapes"])


def test_most_proved_claims_in_derivations_are_all_shapes() -> None:
    """A guard against regressions, not the target: issue 16 asks for 80 %; with the §6 library
    (index-form convolutions, reshapes, slices, integer and binary inputs, outside the class) the
    share is 68 % (80 % on the files before it). Raise the bound as the class grows."""
    proved = scoped = 0
    for path in LIBRARY_FILES:  # checked once per session, shared with test_library
        for c in library_result(path).claims:
            if c.verdict == "proved":
                proved += 1
                scoped += c.symbolic.get("scope") == ALL_SHAPES
                assert c.symbolic.get("scope") in (ALL_SHAPES, SAMPLED)
    assert proved > 100 and scoped / proved >= 0.65, (scoped, proved)


# -- traps -------------------------------------------------------------------------------

SQUARE = """
[derivation]
title = "{title}"
[dims]
n = "size"
[inputs]
A = ["n", "n"]
[forward]
{forward}
[loss]
{loss}
[claims]
grad_A = "{claim}"
[check]
max_dim = 2
shapes = 1
"""

# A² − tr(A)·A + det(A)·I = 0 for every 2×2 matrix (Cayley–Hamilton), det(A) = (tr(A)² − tr(A²))/2
CAYLEY_HAMILTON = "(A @ A - trace(A) * A + 0.5 * (trace(A) ** 2 - trace(A @ A)) * eye(n))"


@pytest.mark.parametrize("trap, expected", [(f" + {CAYLEY_HAMILTON}", SAMPLED), ("", ALL_SHAPES)])
def test_a_cayley_hamilton_term_that_vanishes_only_at_n_le_2_is_never_all_shapes(tmp_path, trap, expected) -> None:
    text = SQUARE.format(title="Cayley-Hamilton", forward='M = "A @ A"', loss='upstream = "M"',
                         claim=f"grad_M @ A.T + A.T @ grad_M{trap}")
    (claim,) = _check(tmp_path, text, options=Options()).values()
    assert _scope(claim) == expected
    # the trap did pass the sampled proof; the certified claim is proved at the certificate's dims as well
    assert claim.symbolic["shapes"] == ([{"n": 2}] if trap else [{"n": 2}, {"n": 3}, {"n": 4}])


# tr(A³) = 3/2·tr(A)·tr(A²) − 1/2·tr(A)³ for n ≤ 2 (Newton's identities with e₃ = 0): its gradient
TRACE_CUBED = "1.5 * trace(A @ A) * eye(n) + 3 * trace(A) * A.T - 1.5 * trace(A) ** 2 * eye(n)"


@pytest.mark.parametrize("claim_text, expected", [(TRACE_CUBED, SAMPLED), ("3 * (A @ A).T", ALL_SHAPES)])
def test_a_trace_of_a_cube_identity_that_holds_only_at_small_n_is_never_all_shapes(tmp_path, claim_text,
                                                                                    expected) -> None:
    text = SQUARE.format(title="trace(A @ A @ A)", forward='S = "A @ A @ A"', loss='E = "trace(S)"',
                         claim=claim_text)
    (claim,) = _check(tmp_path, text, options=Options()).values()
    assert _scope(claim) == expected


DENSE_TRAP = DENSE_COLUMN.replace('grad_a = "W.T @ grad_z"', 'grad_a = "W.T @ grad_z{trap}"') + """
[check]
max_dim = 3
shapes = 1
"""


@pytest.mark.parametrize("trap, expected", [(" + (n - 2) * (n - 3) * a", SAMPLED), ("", ALL_SHAPES)])
def test_an_added_n_minus_2_times_n_minus_3_term_is_never_all_shapes(tmp_path, trap, expected) -> None:
    claims = _check(tmp_path, DENSE_TRAP.replace("{trap}", trap), options=Options())
    assert all(s["n"] in (2, 3) for s in claims["grad_a"].symbolic["shapes"])
    assert _scope(claims["grad_a"]) == expected


HIDDEN_N = """
[derivation]
title = "the size of n, hidden in a sum of ones"
[dims]
n = "units"
[inputs]
a = ["n"]
[functions]
f = "elementwise"
[forward]
h = "f(a)"
[loss]
upstream = "h"
[claims]
grad_a = "grad_h * f_prime(a){trap}"
[check]
max_dim = 2
shapes = 1
"""


@pytest.mark.parametrize("trap, expected", [(" * (sum(ones(n)) - 1)", SAMPLED), (" * (sum(ones(n)) - n + 1)",
                                                                                   ALL_SHAPES)])
def test_a_dim_hidden_in_a_sum_over_a_constant_axis_is_pinned_down_too(tmp_path, trap, expected) -> None:
    """No dim name is written, yet sum(ones(n)) - 1 is n - 1: 1 at n = 2 only."""
    (claim,) = _check(tmp_path, HIDDEN_N.replace("{trap}", trap), options=Options()).values()
    assert _scope(claim) == expected


def test_a_dim_inside_a_non_polynomial_function_is_outside_the_class(tmp_path: Path) -> None:
    """log(n) and sqrt(d) are not rational in the dim: no finite set of sizes pins them down."""
    text = HIDDEN_N.replace("{trap}", " * (1 + log(n) - log(2))")
    with pytest.raises(Outside, match="dim used as a number"):
        d = loads(text, "x.toml")
        plan(d, d.claims[0], "step")
    # and the checker examines the dim past max_dim = 2 (see dimuse): the claim, true at n = 2 only,
    # is refuted rather than proved at the sampled shapes
    (claim,) = _check(tmp_path, text, options=Options()).values()
    assert claim.verdict == "refuted", claim.message


def test_a_sum_of_a_whole_axis_softmax_of_a_constant_is_outside_the_class() -> None:
    """softmax(zeros(n)) is 1/n and logsumexp of it log(n): a whole-axis function of a value that
    does not vary along the axis is refused, not certified."""
    text = HIDDEN_N.replace("{trap}", " * logsumexp(zeros(n))")
    d = loads(text, "x.toml")
    for route in ("step", "full"):
        with pytest.raises(Outside, match="not applied to a named tensor"):
            plan(d, d.claims[0], route)


# -- outside the class: index form, unknown ops, simplex ----------------------------------


def test_index_form_and_unknown_ops_fall_back_to_sampled_shapes(tmp_path: Path) -> None:
    claims = _check(tmp_path, (REPO / "derivations" / "dense_index_convention.toml").read_text())
    assert _scope(claims["grad_z"]) == ALL_SHAPES  # reads z as an atom: how z is defined does not matter
    assert _scope(claims["grad_a"]) == SAMPLED and "index form" in claims["grad_a"].symbolic["argument"]
    d = loads(DENSE_COLUMN, "x.toml")
    claim = d.claims[1]
    claim.node = Call(1, "conv2d", (Var(1, "grad_z"),), {})  # an op added later, unknown here
    with pytest.raises(Outside, match="conv2d"):
        plan(d, claim, "step")


def test_a_claim_that_needs_the_simplex_constraint_is_never_all_shapes(tmp_path: Path) -> None:
    """(P - Y)/B holds because each column of Y sums to 1: the certificate treats Y's entries as
    independent (the simplex substitution singles out the last entry of an axis)."""
    claims = _check(tmp_path, (REPO / "derivations" / "softmax_regression_batch.toml").read_text())
    assert _scope(claims["grad_Z"]) == SAMPLED
    assert _scope(claims["grad_W"]) == ALL_SHAPES


def test_reports_show_the_scope(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from backpropcheck.cli import main

    path = tmp_path / "attention.toml"
    path.write_text((REPO / "derivations" / "attention.toml").read_text())
    runner = CliRunner()
    text = runner.invoke(main, ["check", str(path), "--trials", "3"]).output
    assert "grad_V proved (all shapes)" in text
    assert "grad_Q proved (at T=" in text
    data = json.loads(runner.invoke(main, ["check", str(path), "--trials", "3", "--format", "json"]).output)
    scopes = {c["name"]: c["symbolic"]["scope"] for c in data["files"][0]["claims"]}
    assert scopes["grad_V"] == "all-shapes" and scopes["grad_Q"] == "sampled-shapes"
    junit = runner.invoke(main, ["check", str(path), "--trials", "3", "--format", "junit"]).output
    assert 'name="scope" value="all-shapes"' in junit
    md = runner.invoke(main, ["check", str(path), "--trials", "3", "--format", "markdown"]).output
    assert "proved (all shapes)" in md
    explained = runner.invoke(main, ["explain", str(path), "--claim", "grad_Q"]).output
    assert "Scope: proved at the sampled shapes only" in explained and "sqrt(d)" in explained


def test_without_the_symbolic_check_there_is_no_scope(tmp_path: Path) -> None:
    claims = _check(tmp_path, DENSE_COLUMN, options=Options(trials=3, symbolic=False))
    assert all(c.verdict == "verified" and "scope" not in (c.symbolic or {}) for c in claims.values())


# -- the property: in the class, equal at the certificate's sizes ⇒ equal at every size -----

SHAPES = {"A": (Dim.of("n"), Dim.of("n")), "B": (Dim.of("n"), Dim.of("m")), "x": (Dim.of("n"),),
          "y": (Dim.of("m"),)}

VEC_N = st.deferred(lambda: st.one_of(
    st.just("x"),
    st.builds("(A @ {})".format, VEC_N), st.builds("(A.T @ {})".format, VEC_N), st.builds("(B @ {})".format, VEC_M),
    st.builds("({} * {})".format, VEC_N, VEC_N), st.builds("({} + {})".format, VEC_N, VEC_N),
    st.builds("(sum({}) * {})".format, VEC_N, VEC_N), st.builds("(trace(A) * {})".format, VEC_N),
    st.builds("(mean({}) * x)".format, VEC_N), st.builds("(n * {})".format, VEC_N),
    st.builds("(tanh(x) * {})".format, VEC_N), st.builds("(dot({}, {}) * x)".format, VEC_N, VEC_N),
))
VEC_M = st.deferred(lambda: st.one_of(
    st.just("y"), st.builds("(B.T @ {})".format, VEC_N), st.builds("(sum({}) * y)".format, VEC_N),
    st.builds("({} * {})".format, VEC_M, VEC_M), st.builds("(m * {})".format, VEC_M),
))
# terms that vanish at some sizes only, or for every size (so that some pairs are equal)
PERTURB = st.sampled_from([
    "0 * x", "(n - 2) * x", "(sum(ones(n)) - 3) * x", "(n - 2) * (m - 3) * x",
    f"{CAYLEY_HAMILTON} @ x",
    "(trace(A @ A @ A) - 1.5 * trace(A) * trace(A @ A) + 0.5 * trace(A) ** 3) * x",
    "(A @ x - A.T @ x)", "(sum(x) - n * mean(x)) * x", "(dot(x, x) - sum(x * x)) * (A @ x)",
    "(m * sum(y) - sum(ones(m)) * sum(y)) * x", "(B @ (B.T @ x) - sum(B * B, axis=1) * x)",
])


def _parse(text: str):
    from backpropcheck.lang.parse import Scope, parse_expression

    return parse_expression(text, Scope(tensors=set(SHAPES), dims={"n", "m"}))


def _value(node, sizes: dict[str, int], inputs: dict[str, np.ndarray]) -> np.ndarray:
    from backpropcheck.engines.evaluate import Backend, evaluate
    from backpropcheck.lang.ops import ELEMENTWISE

    backend = Backend(symbolic=False, functions=ELEMENTWISE.__getitem__, const=lambda c: c.value, scalar=float)
    return np.asarray(evaluate(node, inputs, sizes, backend), dtype=float)


def _differs(left, right, sizes: dict[str, int], seed: int) -> bool:
    rng = np.random.default_rng(seed)
    for _ in range(2):
        inputs = {k: rng.uniform(-1, 1, size=tuple(d.value(sizes) for d in s)) for k, s in SHAPES.items()}
        a, b = _value(left, sizes, inputs), _value(right, sizes, inputs)
        if not np.allclose(a, b, rtol=1e-9, atol=1e-9):
            return True
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=VEC_N, perturb=st.lists(PERTURB, min_size=1, max_size=2), seed=st.integers(0, 2**16))
def test_random_expressions_equal_at_the_certificate_sizes_are_equal_at_larger_sizes(left, perturb, seed) -> None:
    # the parser refuses brackets nested past max_depth (64): such a draw is a parse error, not a certificate,
    # and Hypothesis's report of a 40-deep builds() chain takes minutes to print
    assume(left.count("(") <= 24)
    right = "(" + left + " + " + " + ".join(perturb) + ")"
    p = expression_plan(_parse(f"{left} - {right}"), SHAPES)
    left, right = _parse(left), _parse(right)
    points = grid(p, ["n", "m"])
    if len(points) > 40 or max(max(s.values()) for s in points) > 12:
        return  # the certificate would give up: nothing is claimed
    if any(_differs(left, right, s, seed) for s in points):
        return  # not equal at the certificate's sizes: nothing is claimed
    rng = np.random.default_rng(seed)
    for _ in range(3):
        sizes = {"n": int(rng.integers(1, 14)), "m": int(rng.integers(1, 14))}
        assert not _differs(left, right, sizes, seed + 1), (left.src, right.src, sizes, p)


def test_the_property_test_can_fail_a_certificate_with_too_few_sizes() -> None:
    """Sanity: with the degree ignored, (n - 2) * x passes at n = 2 and fails at larger n, so the
    property above is not vacuous."""
    p = expression_plan(_parse("(n - 2) * x"), SHAPES)
    assert p.degree["n"] == 1 and len(grid(p, ["n", "m"])) == 2
    left, right = _parse("x"), _parse("x + (n - 2) * x")
    assert not _differs(left, right, {"n": 2, "m": 2}, 0) and _differs(left, right, {"n": 3, "m": 2}, 0)


# -- the counts are bounds: no term of the truth or the claim has more index values than K ----

_ENTRY = re.compile(r"^(?:∇)?([A-Za-z_][A-Za-z_0-9]*)\[([0-9,]+)\]$")


def _values_per_dim(d, expr, target_index: dict[str, set[int]]) -> dict[str, int]:
    """The most distinct index values per dim in one term of ``expr`` (expanded over the atoms)."""
    import sympy as sp

    most: dict[str, int] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        seen = {k: set(v) for k, v in target_index.items()}
        for s in term.free_symbols:
            m = _ENTRY.match(s.name)
            if not m:
                continue
            name = m.group(1)
            for dim, i in zip(d.shape_of(name), m.group(2).split(",")):
                if dim.terms:
                    seen.setdefault(dim.terms[0][0], set()).add(int(i))
        for k, v in seen.items():
            most[k] = max(most.get(k, 0), len(v))
    return most


@pytest.mark.parametrize("name", ["dense_column", "dense_column_batch", "matrix_trace", "quadratic_form",
                                  "mlp_two_layer_mse", "mlp_weight_decay", "rnn_two_steps", "batch_norm",
                                  "layer_norm", "logistic_regression_bce"])
def test_no_term_has_more_index_values_than_the_certificate_counts(name: str) -> None:
    """At sizes above the thresholds, every term of claim and truth, expanded over the atoms, reads
    at most K_d distinct index values of each dim: the abstract interpretation's counts are bounds.
    (Files with a softmax are left out: a softmax entry reads its whole slice, by design.)"""
    import numpy as np

    from backpropcheck.engines.symbolic import SymbolicTruth

    d = loads((REPO / "derivations" / f"{name}.toml").read_text(), f"{name}.toml")
    checked = 0
    for claim in d.claims:
        for route in ("step", "full"):
            try:
                p = plan(d, claim, route)
            except Outside:
                continue
            sizes = {dim: max(p.k.get(dim, 0), 1) + 2 for dim in d.dims}
            if max(sizes.values()) > 6:
                continue
            truth = SymbolicTruth(d, sizes)
            if route == "step":
                env, target = truth.step_env, truth.steps[claim.target]
            else:
                env, target = truth.claim_env, truth.grads[claim.target]
            from backpropcheck.engines.evaluate import evaluate

            claimed = np.broadcast_to(evaluate(claim.node, env, sizes, truth.backend), target.shape)
            shape = d.shape_of(claim.target)
            for idx in np.ndindex(*target.shape):
                free: dict[str, set[int]] = {}
                for dim, i in zip(shape, idx):
                    if dim.terms:
                        free.setdefault(dim.terms[0][0], set()).add(i)
                for expr in (target[idx], claimed[idx]):
                    for dim, count in _values_per_dim(d, expr, free).items():
                        assert count <= max(p.k.get(dim, 0), 0) or count <= len(free.get(dim, ())), (
                            claim.name, route, dim, count, p)
            checked += 1
    assert checked


ANTISYMMETRIC = HIDDEN_N.replace("{trap}", " * sum(a[:, None] > a[None, :])")


def test_a_generator_that_is_a_relabelling_of_its_own_negative_is_outside_the_class(tmp_path: Path) -> None:
    """sum(a[:, None] > a[None, :]) counts the pairs i < j of distinct entries: n(n-1)/2, 1 at n = 2.
    Step(a_i - a_j) and Step(a_j - a_i) are one generator up to a sign the engines choose by index
    order, so the argument refuses it (the degree alone would have caught this one)."""
    d = loads(ANTISYMMETRIC, "x.toml")
    with pytest.raises(Outside, match="two index tuples"):
        plan(d, d.claims[0], "step")
    (claim,) = _check(tmp_path, ANTISYMMETRIC, options=Options()).values()
    assert _scope(claim) == SAMPLED
    same_site = HIDDEN_N.replace("{trap}", " * (a > 2 * a) + grad_h * f_prime(a) * (2 * a >= a)")
    d = loads(same_site, "y.toml")
    plan(d, d.claims[0], "step")  # one tensor read twice at the same index: in the class


def test_a_softmax_of_a_helper_is_outside_the_class() -> None:
    """A [backward] helper is an expression, not a tensor of independent entries: it may be constant
    along the softmax axis (b[:, None] * ones(B)), so that the softmax is 1/B in disguise."""
    text = HIDDEN_N.replace("[claims]", '[backward]\nC = "a[:, None] * ones(n)[None, :]"\n[claims]').replace(
        "{trap}", " * sum(softmax(C, axis=1), axis=1)")
    d = loads(text, "x.toml")
    with pytest.raises(Outside, match="not applied to a named tensor"):
        plan(d, d.claims[0], "step")


def test_a_dim_inside_a_function_of_a_forward_definition_is_outside_the_class() -> None:
    """h = tanh(n * a): the truth's derivative carries tanh'(n * a) — a dim inside a generator —
    even though the claim itself never names n."""
    text = HIDDEN_N.replace('h = "f(a)"', 'h = "tanh(n * a)"').replace("{trap}", "")
    text = text.replace('grad_a = "grad_h * f_prime(a)"', 'grad_a = "grad_h * n * tanh_prime(n * a)"')
    d = loads(text, "x.toml")
    for route in ("step", "full"):
        with pytest.raises(Outside, match="dim used as a number"):
            plan(d, d.claims[0], route)
    text = text.replace("tanh_prime(n * a)", "tanh_prime(a)").replace("tanh(n * a)", "tanh(a)").replace(
        "grad_h * n *", "grad_h *")
    d = loads(text, "y.toml")
    plan(d, d.claims[0], "step")  # without the dim: in the class


def _claims_with_traps():
    """Every claim of every bundled file; by default the first of each file, the rest under -m slow."""
    for path in sorted((REPO / "derivations").glob("*.toml")):
        text = path.read_text()
        d = loads(text, path.name)
        first = True
        for c in d.claims:
            names = [dim.terms[0][0] for dim in d.shape_of(c.target) if dim.terms] if c.error is None else []
            if names:
                yield pytest.param(path.name, c.name, c.target, names[0], id=f"{path.stem}-{c.name}",
                                   marks=() if first else pytest.mark.slow)
                first = False


@pytest.mark.parametrize("file, name, target, dim", list(_claims_with_traps()))
def test_no_bundled_claim_with_a_vanishing_trap_added_is_certified(file, name, target, dim) -> None:
    """Every claim of derivations/, plus (n−2)(n−3)·X, (Σ 1 − 2)(n−3)·X, (12/(n+1) − 20/(n+2) + 1)·X or
    √(Σ 1 − 2)·(n−3)·X (each zero at n = 2 and 3):
    the certificate never calls it all-shapes (it is checked directly, with no sampled proof first)."""
    from backpropcheck.engines.scope import Certifier

    text = (REPO / "derivations" / file).read_text()
    line = re.compile(rf'^{name}\s*=\s*"(.*)"', re.M).search(text)
    if line is None:  # an index-form claim ("grad_w[f, c, p, q]" = ...): outside the class as it stands
        d = loads(text, file)
        (claim,) = [c for c in d.claims if c.name == name]
        assert Certifier(d, lambda sizes: 0, 10**9).certify(claim, []).kind == SAMPLED
        return
    for trap in (f"({dim} - 2) * ({dim} - 3) * {target}", f"(sum(ones({dim})) - 2) * ({dim} - 3) * {target}",
                 # a degree-2 numerator behind two denominators; a square root of a sum (QA)
                 f"(12 / (sum(ones({dim})) + 1) - 20 / (sum(ones({dim})) + 2) + 1) * {target}",
                 f"(sum(ones({dim})) - 2) ** 0.5 * ({dim} - 3) * {target}"):
        d = loads(text[:line.start(1)] + f"{line.group(1)} + {trap}" + text[line.end(1):], file)
        (claim,) = [c for c in d.claims if c.name == name]
        assert Certifier(d, lambda sizes: 0, 10**9).certify(claim, []).kind == SAMPLED, trap


def test_a_truth_that_ran_out_of_budget_is_not_rebuilt_for_every_claim(monkeypatch) -> None:
    from backpropcheck.engines import scope as scope_module
    from backpropcheck.engines import symbolic

    built = []

    class Exploding:
        def __init__(self, d, sizes):
            built.append(dict(sizes))
            raise MemoryError("too big")

    monkeypatch.setattr(symbolic, "SymbolicTruth", Exploding)
    d = loads(DENSE_COLUMN, "x.toml")
    from backpropcheck.checker import _SYMBOLIC_FAILURES, SymbolicTimeout, time_budget
    from backpropcheck.results import SymbolicEvidence

    records = {c.name: SymbolicEvidence(status="proved", shapes=[], seconds=0.0) for c in d.claims}

    scope_module.certify_records(d, d.claims, records, 10.0, {}, lambda s: 0, 10**9, time_budget,
                                 SymbolicTimeout, _SYMBOLIC_FAILURES)
    assert all(r.scope == SAMPLED for r in records.values())
    assert len(built) == len({tuple(sorted(s.items())) for s in built})  # each size tried once


def test_the_certificate_reads_each_ops_rules_from_the_op_table(monkeypatch) -> None:
    """The certificate names no op: its abstract rules are the op's table entry. An op without them
    (cumsum: a running sum is outside the class) is refused, and so is an op whose rules are taken away."""
    import dataclasses

    from backpropcheck.lang.ops import OPS

    assert expression_plan(_parse("A @ x + x"), SHAPES).k == {"n": 2}
    with pytest.raises(Outside, match="cumsum"):
        expression_plan(_parse("cumsum(x, axis=0)"), SHAPES)
    monkeypatch.setitem(OPS, "matmul", dataclasses.replace(OPS["matmul"], scope_value=None))
    with pytest.raises(Outside, match="matmul"):
        expression_plan(_parse("A @ x + x"), SHAPES)


ONE_INPUT = """
[derivation]
title = "{title}"
[dims]
n = "units"
[inputs]
x = ["n"]
y = ["n"]
Y = ["n", "n"]
[forward]
{forward}
[loss]
upstream = "h"
{backward}
[claims]
{claim}
"""

# (title, forward, [backward], the wrong claim, its right twin): each wrong claim is an identity in the atoms at
# the sizes a flawed certificate chose (n = 2, or 2 and 3) and wrong at larger n. Found by a QA pass when the
# certificate briefly ran before the sampled proof, where each one was reported proved (all shapes).
CERTIFICATE_TRAPS = [
    ("a sum in two denominators", 'h = "2 * x"', "",
     'grad_x = "2 * grad_h + grad_h * (12 / (sum(ones(n)) + 1) - 20 / (sum(ones(n)) + 2) + 1)"',
     'grad_x = "2 * grad_h"'),
    ("a negative power of a sum", 'h = "2 * x"', "",
     'grad_x = "2 * grad_h + grad_h * (12 * (trace(eye(n)) + 1) ** -1 - 20 * (trace(eye(n)) + 2) ** -1 + 1)"',
     'grad_x = "2 * grad_h"'),
    ("the denominators in a helper", 'h = "2 * x"',
     '[backward]\nc = "12 / (sum(ones(n)) + 1) - 20 / (sum(ones(n)) + 2) + 1"',
     'grad_x = "2 * grad_h + grad_h * c"', 'grad_x = "2 * grad_h"'),
    ("the denominators in the forward pass", 'h = "x * (2 + 12 / (sum(ones(n)) + 1) - 20 / (sum(ones(n)) + 2) + 1)"',
     "", 'grad_x = "2 * grad_h"', 'grad_x = "grad_h * (2 + 12 / (sum(ones(n)) + 1) - 20 / (sum(ones(n)) + 2) + 1)"'),
    ("a square root of a sum", 'h = "2 * x"', "", 'grad_x = "2 * grad_h + grad_h * (sum(ones(n)) - 2) ** 0.5"',
     'grad_x = "2 * grad_h"'),
    ("an inverse square root of a sum", 'h = "2 * x"', "",
     'grad_x = "2 * grad_h + grad_h * ((sum(eye(n)) - 2) ** 2 + 1) ** -0.5 - grad_h"', 'grad_x = "2 * grad_h"'),
    # a pairwise helper equals tanh(sum(x)) off the diagonal at n = 2 only: tanh(H) reads x at two index tuples
    ("a helper reading x twice", 's = "tanh(sum(x))"\nh = "Y * s"', '[backward]\nH = "x[:, None] + x[None, :]"',
     'grad_Y = "grad_h * (tanh(H) * (1 - eye(n)) + s * eye(n))"', 'grad_Y = "grad_h * s"'),
    # at n = 2, x >= max(x) and x > min(x) are one indicator: a mask's max atom may not be read as its definition
    ("the arg-max for the above-min mask", 'mx = "max(x)"\nmn = "min(x)"\nh = "y * (x > mn)"', "",
     'grad_y = "grad_h * (x >= mx)"', 'grad_y = "grad_h * (x > mn)"'),
]


@pytest.mark.parametrize("title, forward, backward, wrong, right", CERTIFICATE_TRAPS, ids=[t[0] for t in CERTIFICATE_TRAPS])
def test_the_certificate_calls_no_claim_wrong_at_larger_n_all_shapes(tmp_path, title, forward, backward, wrong,
                                                                       right) -> None:
    from backpropcheck.engines.scope import Certifier

    def certify(claim_text: str) -> str:
        d = loads(ONE_INPUT.format(title=title, forward=forward, backward=backward, claim=claim_text), "x.toml")
        (claim,) = d.claims
        return Certifier(d, lambda sizes: 0, 10**9).certify(claim, []).kind

    assert certify(wrong) == SAMPLED
    if "max(x)" not in forward and "H =" not in backward:  # its right twin: all shapes (not through a max or H)
        assert certify(right) == ALL_SHAPES
    (claim,) = _check(tmp_path, ONE_INPUT.format(title=title, forward=forward, backward=backward, claim=wrong),
                      options=Options(shapes=5)).values()
    assert claim.verdict in ("refuted", "verified"), claim.message  # and the sampled proof sees it is wrong


SIGMOID_LAYER = """[derivation]
title = "sigmoid units, written every way"
[dims]
n = "units"
m = "inputs"
[inputs]
W = ["n", "m"]
a = ["m"]
[forward]
z = "W @ a"
h = "sigmoid(z)"
q = "sigmoid(2 * z + 1)"
[loss]
E = "sum(h * h) + sum(q)"
[claims]
grad_z = "CLAIM"
"""


@pytest.mark.parametrize("claim, scope", [
    ("grad_h * h * (1 - h) + 2 * grad_q * q * (1 - q)", ALL_SHAPES),  # the textbook form, with the units' own values
    ("grad_h * sigmoid(z) * (1 - sigmoid(z)) + 2 * grad_q * sigmoid_prime(2 * z + 1)", ALL_SHAPES),
    ("2 * h * h * (1 - h) + 2 * q * (1 - q)", ALL_SHAPES),
    ("grad_h * exp(-z) / (1 + exp(-z))**2 + grad_q * 2 * exp(-2*z-1) / (1 + exp(-2*z-1))**2", SAMPLED),
    ("grad_h * h * (1 - h) + 2 * grad_q * q * (1 - q) + 1e-13 * h", None),
    ("grad_h * h * (1 - h) + grad_q * q * (1 - q)", None),
    ("grad_h * h * (1 - q) + 2 * grad_q * q * (1 - q)", None),
])
def test_a_sigmoids_partial_is_its_units_own_s_times_1_minus_s(tmp_path: Path, claim: str, scope: str | None) -> None:
    """The truth writes a sigmoid's partial as ``s·(1 − s)`` with the unit's own value ``s`` (as SymPy writes
    tanh's ``1 − h²``), so the textbook form is one chain-rule step, proved for all shapes; SymPy's
    ``exp(−z)/(1 + exp(−z))²`` is the same value, proved at the sampled shapes; a wrong one, however slightly
    (``1e-13 * h``, a lost factor, another unit's value), is refuted."""
    result = _check(tmp_path, SIGMOID_LAYER.replace("CLAIM", claim), options=Options())["grad_z"]
    if scope is None:
        assert result.verdict == "refuted", result.message
    else:
        assert _scope(result) == scope


# -- the certificate after the first small dims (QA, round 14) -------------------------------------------------

OFF_ROUTE = """
[derivation]
title = "an off-route variable that reads a dim as a number"
[dims]
n = "size"
[inputs]
x = []
y = ["n"]
[forward]
c = "{c}"
z = "c * y"
[loss]
upstream = "z"
[claims]
grad_y = "grad_z * c + 1e-13 * grad_z * ({other} - c)"
"""


@pytest.mark.parametrize("c, other", [("tanh(n * x)", "tanh(2 * x)"), ("exp(n * x)", "exp(2 * x)"),
                                      ("tanh(x * (1 + (n - 2) * (n - 3) * (n - 4)))", "tanh(x)")])
@pytest.mark.parametrize("shapes", [1, 3])
def test_a_definition_that_reads_a_dim_is_never_written_as_its_atom_in_the_certificate(tmp_path, c, other,
                                                                                     shapes) -> None:
    """``c = tanh(n * x)`` is ``tanh(2 * x)`` at n = 2, where the truth wrote ``tanh(2 * x)`` as the atom ``c``; c's
    definition is off the claim's route, so the plan never counted n, and the certificate called the claim (off by
    1e-13 (tanh(2x) - tanh(nx)), wrong for n >= 3) all-shapes at n = 2 alone. Once it ran after the first small dims,
    that was a false ``proved``. With three small dims the claim is refuted (but for the cubic, zero at n = 2, 3, 4,
    which stays proved at the sampled shapes only); with one, proved at the sampled shapes only."""
    text = OFF_ROUTE.replace("{c}", c).replace("{other}", other) + f"[check]\nshapes = {shapes}\n"
    (claim,) = _check(tmp_path, text, options=Options(trials=3, seed=0)).values()
    if shapes == 3 and "(n - 4)" not in c:
        assert claim.verdict == "refuted", claim.message
    else:
        assert _scope(claim) == SAMPLED, claim.symbolic


def test_sized_definitions_are_those_that_read_a_dim_or_leave_the_class() -> None:
    from backpropcheck.engines.scope import sized_definitions

    text = OFF_ROUTE.replace("{c}", "tanh(n * x)").replace("{other}", "x").replace(
        'z = "c * y"', 'z = "c * y"\nh = "tanh(y)"\nm = "exp(mean(y)) * ones(n)"\ns = "y[0:1]"')
    assert sized_definitions(loads(text, "t.toml")) == {"c", "m", "s"}


def test_the_first_certificate_leaves_half_the_budget_to_the_sampled_proof_and_is_tried_again(
        tmp_path, monkeypatch) -> None:
    """A certificate that runs past its share after the first small dims leaves the claim to the other small dims
    (which keep the other half of what is left: the claim is proved there, as before the certificate moved), and
    is tried again at the end with what is left then."""
    import time

    import backpropcheck.engines.scope as scope_module

    calls: list[float] = []

    def endless(self, claim, proved):
        calls.append(time.process_time())
        while True:  # the budget's alarm ends it
            sum(range(100))

    monkeypatch.setattr(scope_module.Certifier, "certify", endless)
    claims = _check(tmp_path, DENSE_TRAP.replace("{trap}", "").replace("shapes = 1", "shapes = 3").replace(
        "max_dim = 3", "max_dim = 5"), options=Options(trials=3, timeout=1.0))
    for c in claims.values():
        assert c.verdict == "proved" and len(c.symbolic["shapes"]) == 3, c.message
        assert _scope(c) == SAMPLED and "ran past the budget" in c.symbolic["argument"]
    assert len(calls) == 2 * len(claims)  # twice per claim: after the first small dims, and again at the end


def test_a_claim_left_verified_after_its_certificate_carries_no_scope(tmp_path) -> None:
    """The certificate after the first small dims gives a scope; a claim the symbolic check then gives up on
    (the next small dims too large) is ``verified``, with no scope left over."""
    text = SQUARE.format(title="A B A", forward='M = "A @ B @ A"', loss='upstream = "M"',
                         claim="A.T @ grad_M @ A.T * (n + 1) / (n + 1)").replace(
        'A = ["n", "n"]', 'A = ["n", "n"]\nB = ["n", "n"]').replace("grad_A", "grad_B").replace(
        "max_dim = 2\nshapes = 1", "max_dim = 6\nshapes = 3")
    limits = Limits(max_symbolic_entries=100)
    (claim,) = _check(tmp_path, text, options=Options(trials=3, limits=limits)).values()
    assert claim.verdict == "verified" and "max-symbolic-entries" in claim.message, claim.message
    assert "scope" not in claim.symbolic and "argument" not in claim.symbolic, claim.symbolic


# (forward, loss, claim): a gradient atom the claim reads is zero at n = 2 by a later definition, the loss or a
# binary draw, none of which the certificate's one-step route reads (QA, round 14)
VANISHING_AT_2 = [
    ('h = "tanh(x)"\nc = "(n - 2) * h"', 'upstream = "c"', "7 * grad_h * (1 - h ** 2)"),
    ('h = "tanh(x)"\nc = "(n - 2) * h"', 'upstream = "c"', "grad_h * (1 - h ** 2) * (1 + 1e-9)"),
    ('h = "tanh(x)"', 'E = "sum(h) - 2 * mean(h)"', "0 * x"),
    ('h = "tanh(x)"\nc = "h * Ma / 0.8"', 'upstream = "c"', "grad_h * (1 - h ** 2) * (1 + 1e-9)"),
]


@pytest.mark.parametrize("forward, loss, claim_text", VANISHING_AT_2)
@pytest.mark.parametrize("shapes", [1, 3])
def test_a_gradient_atom_that_vanishes_at_one_size_stays_an_indeterminate_in_the_certificate(
        tmp_path, forward, loss, claim_text, shapes) -> None:
    """The truth wrote ∇h as 0 where its step vanished at n = 2, so the certificate's step route found any claim
    ``k * grad_h * …`` identical at n = 2, its only grid size: all-shapes for a claim wrong at every n >= 3, and a
    false ``proved`` once certified claims skip the other small dims. Its truths keep every ∇v an indeterminate."""
    text = f"""
[derivation]
title = "a gradient atom zero at n = 2"
[dims]
n = "size"
[inputs]
x = ["n"]
Ma = {{ shape = ["n"], domain = "binary", constant = true }}
[forward]
{forward}
[loss]
{loss}
[claims]
grad_x = "{claim_text}"
[check]
shapes = {shapes}
"""
    for seed in range(2):
        (claim,) = _check(tmp_path, text, options=Options(trials=3, seed=seed)).values()
        if shapes == 3:
            assert claim.verdict == "refuted", claim.message
        elif claim.verdict == "proved":
            assert claim.symbolic.get("scope") == SAMPLED, claim.symbolic


def test_an_axis_that_is_a_product_of_dims_is_outside_the_class(tmp_path) -> None:
    """An axis ``n*m`` was read as a dim of its own, whose thresholds and degree the grid (which sizes n and m)
    never saw: a claim off by ``(N - 4)(N - 6)`` with N = n·m entries was all-shapes at n, m = 2, 3 (QA, round 14),
    and since certified claims skip the later small dims, proved. The docs say it: no products."""
    text = """
[derivation]
title = "an axis of n*m entries"
[dims]
n = "rows"
m = "columns"
[inputs]
x = ["n*m"]
[forward]
h = "tanh(x)"
[loss]
upstream = "h"
[claims]
grad_x = "grad_h * (1 - h ** 2) + 1e-16 * grad_h * (sum(x / x) - 4) * (sum(x / x) - 6)"
"""
    for seed in range(3):
        (claim,) = _check(tmp_path, text, options=Options(trials=3, seed=seed)).values()
        assert claim.verdict == "refuted", claim.message
    (claim,) = _check(tmp_path, text.replace(" + 1e-16 * grad_h * (sum(x / x) - 4) * (sum(x / x) - 6)", "")).values()
    assert _scope(claim) == SAMPLED and "n*m" in claim.symbolic["argument"].replace("m*n", "n*m")
