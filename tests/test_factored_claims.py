"""A claim that is a product over a short inner dimension (``grad_W = grad_Z @ X.T``, ``outer(grad_z, a)``)
is kept factored like the truth it is compared with (:func:`claim_value`): the comparison reads both through
their factors, block by block, and never makes the m·n array unless the claim is not accepted at once. Every
verdict, counterexample and reported number stays that of the dense claim."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BUNDLED, load_text, with_claims
from test_low_rank import _numeric_only

from backpropcheck.engines import numeric, numeric_blocks
from backpropcheck.engines.evaluate import evaluate_definition
from backpropcheck.engines.numeric import claim_value, compare, numeric_backend, rng_for, run_trial
from backpropcheck.lang.ops import LowRank, core
from backpropcheck.loader import load

BATCH = BUNDLED / "dense_column_batch.toml"


@pytest.fixture
def many_blocks(monkeypatch):
    """Small blocks and three threads: every path of the blocked passes at test sizes."""
    monkeypatch.setattr(numeric_blocks, "BLOCK", 1000)
    monkeypatch.setattr(numeric_blocks, "PARALLEL_MIN", 8)
    monkeypatch.setattr(numeric_blocks, "threads", lambda: 3)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64).view(np.int64)


def _claim(d, run, name: str):
    claim = next(c for c in d.claims if c.name == name)
    env = dict(run.values)
    env.update({f"grad_{k}": v for k, v in run.grads.items()})
    backend = numeric_backend(d, 0)
    factored = claim_value(claim.node, claim.index, env, run.sizes, backend)
    return factored, evaluate_definition(claim.node, claim.index, env, run.sizes, backend)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_a_product_claim_is_factored_and_is_the_dense_product_bit_for_bit(batch: int) -> None:
    d = load(BATCH)
    run = run_trial(d, {"n": 300, "m": 400, "B": batch}, rng_for(0, d.path, 0), 0)
    factored, evaluated = _claim(d, run, "grad_W")
    assert isinstance(factored, LowRank) and factored.p.shape == (400, batch)
    assert np.array_equal(_bits(factored.dense()), _bits(evaluated))  # every bit, the sign of a zero too
    assert isinstance(run.claims.factored("grad_W"), LowRank)
    read = run.claims["grad_W"]  # read by name (a report, explain): the dense array, kept from then on
    assert isinstance(read, np.ndarray) and np.array_equal(_bits(read), _bits(evaluated))
    assert run.claims.factored("grad_W") is read
    # a product over a long inner dimension, a vector product: dense, as before
    for name in ("grad_X", "grad_b"):
        value, evaluated = _claim(d, run, name)
        assert isinstance(value, np.ndarray) and np.array_equal(value, evaluated)


def test_nan_inf_and_signed_zeros_in_a_factor_give_the_dense_products_entries() -> None:
    rng = np.random.default_rng(7)
    g, x = rng.standard_normal((400, 1)), rng.standard_normal((300, 1))
    g[3, 0], g[5, 0], g[8, 0], x[7, 0], x[9, 0], x[11, 0] = np.nan, np.inf, -0.0, 0.0, -np.inf, -0.0
    text = """
[derivation]
title = "t"
[dims]
n = "n"
m = "m"
[inputs]
g = ["m", 1]
x = ["n", 1]
u = ["m"]
v = ["n"]
[forward]
h = "sum(g) + sum(x) + sum(u) + sum(v)"
[loss]
upstream = "h"
[claims]
grad_g = "g @ x.T"
grad_u = "outer(u, v)"
"""
    d = load_text(text)
    backend = numeric_backend(d, 0)
    env = {"g": g, "x": x, "u": g[:, 0], "v": x[:, 0]}
    for claim in d.claims:
        with np.errstate(all="ignore"):
            factored = claim_value(claim.node, None, env, {"n": 300, "m": 400}, backend)
            evaluated = evaluate_definition(claim.node, None, env, {"n": 300, "m": 400}, backend)
            made = factored.dense()
        assert isinstance(factored, LowRank)
        assert np.isnan(made[5, 7]) and np.isnan(made[3, 0]) and np.signbit(made[8, 0])  # 0·inf is NaN
        assert np.array_equal(_bits(made), _bits(evaluated))


@pytest.mark.parametrize("k", [1, 4])
def test_a_factored_claim_compares_as_its_dense_array(many_blocks, k: int) -> None:
    rng = np.random.default_rng(11 + k)
    p, q = rng.standard_normal((210, k)), rng.standard_normal((130, k))
    truth = LowRank(p, q)
    full = truth.dense()
    claims = [LowRank(p, q), LowRank(p.copy(), q.copy()), LowRank(p * (1 + 1e-12), q), LowRank(p * 1.001, q),
              LowRank(-p, q), LowRank(p, q[::-1])]
    # one entry wrong, and one only: q's row 5 is the only one p's changed row meets
    q1 = np.where(np.arange(130)[:, None] == 5, q, 0.0)
    p1 = p.copy()
    p1[17] *= 3.0
    pairs = [(c, truth) for c in claims] + [(LowRank(p1, q1), LowRank(p, q1))]
    pairs += [(c, full) for c in claims]  # a factored claim against a dense truth
    pairs += [(LowRank(p, q).dense(), truth)]  # a dense claim against a factored truth, as before
    for claimed, true in pairs:
        dense_claim = claimed.dense() if isinstance(claimed, LowRank) else claimed
        dense_truth = true.dense() if isinstance(true, LowRank) else true
        got, expected = compare(claimed, true, 1e-7, 1e-12), compare(dense_claim, dense_truth, 1e-7, 1e-12)
        assert got[0] == expected[0] and got[3] == expected[3]
        assert got[1:3] == pytest.approx(expected[1:3], rel=1e-12, nan_ok=True)
        if k == 1:  # one term per entry: the blocks are the entries, bit for bit
            assert got == expected
    ok, max_abs, _, index = compare(LowRank(p1, q1), LowRank(p, q1), 1e-7, 1e-12)
    assert not ok and index == (17, 5) and max_abs == pytest.approx(2 * abs(p[17] @ q1[5]))


@pytest.mark.parametrize("where", ["p", "q"])
def test_a_nan_or_an_inf_in_a_factored_claim_is_reported_where_the_dense_claim_has_it(many_blocks, where) -> None:
    rng = np.random.default_rng(13)
    p, q = rng.standard_normal((210, 1)), rng.standard_normal((130, 1))
    truth = LowRank(p, q)
    for bad in (np.nan, np.inf):
        for zero in (False, True):
            p2, q2 = p.copy(), q.copy()
            (p2 if where == "p" else q2)[9, 0] = bad
            if zero:  # 0·inf: NaN in the entries of the zero's row or column only
                (q2 if where == "p" else p2)[4, 0] = 0.0
            claimed = LowRank(p2, q2)
            with np.errstate(all="ignore"):
                got, expected = compare(claimed, truth, 1e-7, 1e-12), compare(claimed.dense(), truth.dense(),
                                                                              1e-7, 1e-12)
            assert got == expected and not got[0]
            # the same non-finite factors on both sides: never "the same product" (an inf entry minus itself
            # is NaN), as the dense comparison says
            with np.errstate(all="ignore"):
                assert not numeric_blocks.same_product(claimed, LowRank(p2.copy(), q2.copy()))
                assert compare(claimed, LowRank(p2.copy(), q2.copy()), 1e-7, 1e-12) == \
                    compare(claimed.dense(), claimed.dense(), 1e-7, 1e-12)


def test_the_same_product_needs_the_same_factors_values_and_layout() -> None:
    rng = np.random.default_rng(17)
    p, q = rng.standard_normal((300, 4)), rng.standard_normal((200, 4))
    assert numeric_blocks.same_product(LowRank(p, q), LowRank(p.copy(), q.copy()))
    assert not numeric_blocks.same_product(LowRank(np.asfortranarray(p), q), LowRank(p, q))  # another BLAS route
    assert not numeric_blocks.same_product(LowRank(p, q), LowRank(p, np.nextafter(q, np.inf)))
    assert not numeric_blocks.same_product(LowRank(p, q), p @ q.T)
    huge = LowRank(p * 1e160, q * 1e160)  # entries near overflow: the entries decide
    assert not numeric_blocks.same_product(huge, LowRank(p * 1e160, q * 1e160))


COLUMN = (BUNDLED / "dense_column.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("claims,verdicts", [
    ({"grad_W": "outer(grad_z, a)"}, ["verified"]),
    ({"grad_W": "outer(grad_z, a) * 1.001"}, ["refuted"]),
    ({"grad_W": "outer(grad_z * 1.001, a)"}, ["refuted"]),  # factored, wrong: the worst entry as the dense claim
    ({"grad_W": "outer(a, grad_z).T"}, ["verified"]),
    ({"grad_W": "outer(grad_z, a + 1e-3)"}, ["refuted"]),
])
def test_outer_claims_have_the_verdicts_messages_and_numbers_of_the_dense_claim(monkeypatch, claims,
                                                                                  verdicts) -> None:
    d = load_text(with_claims(COLUMN, claims))
    dims = {"n": 300, "m": 400}
    factored = _numeric_only(d, dims, monkeypatch, dense=False)
    assert factored == _numeric_only(d, dims, monkeypatch, dense=True)
    assert [v for _, v, *_ in factored] == verdicts


# the delta is a [backward] helper: the claim's outer product reads it; and a helper that is itself an outer
# product is read by a claim (dense: a helper's value may be read by any op)
HELPERS = COLUMN.split("[claims]")[0] + """
[backward]
delta = "grad_h * f_prime(z)"
G = "outer(delta, a)"

[claims]
grad_z = "delta"
grad_W = "outer(delta, a)"
grad_b = "G @ a / sum(a ** 2)"
"""


def test_a_factored_claim_that_reads_a_helper_and_a_helper_that_is_an_outer_product(monkeypatch) -> None:
    d = load_text(HELPERS + 'grad_a = "W.T @ delta * 1.001"\n')
    dims = {"n": 300, "m": 400}
    run = run_trial(d, dims, rng_for(0, d.path, 0), 0)
    assert isinstance(run.claims.factored("grad_W"), LowRank)
    assert np.array_equal(run.claims["grad_W"], np.multiply.outer(run.grads["z"], run.values["a"]))
    assert isinstance(run.claims.factored("grad_b"), np.ndarray)
    factored = _numeric_only(d, dims, monkeypatch, dense=False)
    assert factored == _numeric_only(d, dims, monkeypatch, dense=True)
    assert [v for _, v, *_ in factored] == ["verified", "verified", "verified", "refuted"]


# a claim that is the very product the reverse sweep made (grad_X = W.T @ grad_Z is the truth's Wᵀ g) reads it


def test_a_claim_that_is_the_sweeps_own_product_reads_it_and_it_is_that_product_bit_for_bit(monkeypatch) -> None:
    d = load(BATCH)
    made: list[np.ndarray] = []
    real = core.keep_product

    def keep(x, y, value):
        made.append(value)
        return real(x, y, value)

    monkeypatch.setattr(core, "keep_product", keep)  # LowRank.of's products
    for batch in (1, 5):
        made.clear()
        run = run_trial(d, {"n": 300, "m": 400, "B": batch}, rng_for(0, d.path, 0), 0)
        claimed = run.claims["grad_X"]
        assert any(np.shares_memory(claimed, m) for m in made)  # read, not made again
        expected = run.values["W"].T @ run.grads["Z"]
        assert np.array_equal(_bits(claimed), _bits(expected))


def test_a_product_is_kept_only_within_a_trial_and_only_for_the_same_operands() -> None:
    rng = np.random.default_rng(19)
    W, g = rng.standard_normal((300, 200)), rng.standard_normal((300, 4))
    made = W.T @ g
    assert core.kept_product(W.T, g) is None  # nothing kept outside products_kept()
    with core.products_kept():
        core.keep_product(W.T, g, made)
        assert core.kept_product(W.T, g.copy()) is made  # the small operand by its values
        assert core.kept_product(W.copy().T, g) is None  # the large one only as the same memory
        assert core.kept_product(np.asfortranarray(W).T, g) is None  # another layout: another BLAS route
        assert core.kept_product(W.T, np.nextafter(g, np.inf)) is None
        nan = g.copy()
        nan[0, 0] = np.nan
        core.keep_product(W.T, nan, W.T @ nan)
        assert core.kept_product(W.T, nan.copy()) is None  # a NaN is unequal to itself: made again
        assert core.kept_product(W.T, nan) is not None  # ... unless it is the very same memory
    assert core.kept_product(W.T, g) is None
    with core.products_kept():  # a small product is made again faster than it is found: not kept
        core.keep_product(W[:5].T, g[:5], W[:5].T @ g[:5])
        assert core.kept_product(W[:5].T, g[:5]) is None


@pytest.mark.parametrize("path,wrong", [
    (BATCH, ("W.T @ grad_Z", "W.T @ (grad_Z * 1.001)")),
    (BUNDLED / "dense_column.toml", ("W.T @ grad_z", "(W * 1.001).T @ grad_z")),
    (BUNDLED / "dense_rowmajor_batch.toml", ("grad_Y @ W", "grad_Y @ (W * 1.001)")),
])
@pytest.mark.parametrize("refuted", [False, True])
def test_reading_the_kept_product_changes_no_verdict_message_or_number(monkeypatch, path, wrong, refuted) -> None:
    text = path.read_text(encoding="utf-8")
    assert wrong[0] in text
    d = load_text(text.replace(*wrong) if refuted else text)
    dims = {"n": 300, "m": 400, "B": 5} if "B" in d.dims else {"n": 300, "m": 400}
    kept = _numeric_only(d, dims, monkeypatch, dense=False)
    monkeypatch.setattr(numeric, "kept_product", lambda x, y: None)
    assert kept == _numeric_only(d, dims, monkeypatch, dense=False)
    assert [v for _, v, *_ in kept].count("refuted") == refuted


@pytest.mark.parametrize("batch", [1, 5])
def test_a_right_product_claim_is_accepted_without_making_the_weight_sized_array(monkeypatch, batch: int) -> None:
    d = load(BATCH)
    made: list[tuple[int, int]] = []
    real = LowRank.dense

    def dense(self):
        made.append(self.shape)
        return real(self)

    monkeypatch.setattr(LowRank, "dense", dense)
    result = _numeric_only(d, {"n": 300, "m": 400, "B": batch}, monkeypatch, dense=False)
    assert [v for _, v, *_ in result] == ["verified"] * 4
    assert (400, 300) not in made  # neither the claim grad_W nor its truth was made whole


CHAIN = """
[derivation]
title = "two products in a row: the inner one's gradient flows into an intermediate"
[dims]
n = "width"
[inputs]
A = ["n", "n"]
B = ["n", "n"]
C = ["n", "n"]
[forward]
H = "tanh(A @ B) @ C"
[loss]
upstream = "H"
[claims]
grad_C = "tanh(A @ B).T @ grad_H"
grad_A = "((grad_H @ C.T) * (1 - tanh(A @ B) ** 2)) @ B.T"
"""


def test_a_product_that_flows_into_an_intermediate_is_not_kept_to_the_end_of_the_trial(monkeypatch) -> None:
    d = load_text(CHAIN)
    kept: list[list] = []
    real = core.products_kept

    def spy():
        manager = real()
        manager.__enter__()
        kept.append(core._KEPT.get())
        return _Exit(manager)

    class _Exit:
        def __init__(self, manager):
            self.manager = manager

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            kept.append(list(kept[-1]))  # what is still kept when the trial ends
            return self.manager.__exit__(*exc)

    monkeypatch.setattr(numeric, "products_kept", spy)
    run = run_trial(d, {"n": 300}, rng_for(0, d.path, 0), 0)
    left = kept[-1]
    # the gradient of tanh(A @ B), grad_H @ C.T, fed an intermediate: gone; the inputs' gradients stay (they
    # are the very arrays the truth keeps: no memory held for them)
    assert sorted(name for *_, value in left for name in "ABC" if np.shares_memory(value, run.grads[name])) == [
        "A", "B", "C"]
    assert len(left) == 3
    for name in ("grad_A", "grad_C"):
        ok, *_ = compare(run.claims[name], run.grads[name[5:]], 1e-7, 1e-9)
        assert ok, name


def test_a_trial_never_writes_into_an_input_so_a_kept_product_is_what_its_operands_give(monkeypatch) -> None:
    """A kept product is matched to a claim by the memory of its larger operand (an input, a forward value):
    sound only while nothing writes into them during a trial. Read-only inputs make any such write fail here."""
    real = numeric.sample_input

    def frozen(*args, **kwargs):
        value = real(*args, **kwargs)
        value.flags.writeable = False
        return value

    monkeypatch.setattr(numeric, "sample_input", frozen)
    for path in sorted(BUNDLED.glob("*.toml")):
        d = load(path)
        dims = {name: 300 if k < 2 else 3 for k, name in enumerate(d.dims)}
        run = run_trial(d, dims, rng_for(0, d.path, 0), 0)  # a write into an input raises here
        assert run.claims or not d.claims, path.name
