"""A true gradient that is a product over a short inner dimension (``grad_W = g xᵀ``, a batch's sum of
outer products) is kept factored (:class:`LowRank`) by the reverse sweep, and the numeric check reads it
block by block or through its factors: the same numbers, the same comparisons, the same verdicts and
counterexamples as the dense array it stands for."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import BUNDLED, load_text, with_claims

from backpropcheck.checker import Options, check_derivation
from backpropcheck.engines import numeric_blocks
from backpropcheck.engines.directional import Rank1, inner
from backpropcheck.engines.numeric import compare, rng_for, run_trial
from backpropcheck.lang.ops import OPS, LowRank, add_low_rank, core
from backpropcheck.limits import DEFAULT_LIMITS
from backpropcheck.loader import load

BATCH = BUNDLED / "dense_column_batch.toml"


@pytest.mark.parametrize("m,k,n", [(300, 1, 400), (400, 3, 300), (257, 7, 600)])
def test_the_matmul_vjp_keeps_a_large_short_product_factored_with_the_same_numbers(m: int, k: int, n: int) -> None:
    # z = W @ X with X of k columns: W's gradient g Xᵀ sums k terms per entry (factored), X's Wᵀ g sums m
    rng = np.random.default_rng(m + k + n)
    W, X, gz = rng.standard_normal((m, n)), rng.standard_normal((n, k)), rng.standard_normal((m, k))
    grad_W, grad_X = OPS["matmul"].vjp(gz, W @ X, W, X)
    assert isinstance(grad_W, LowRank) and grad_W.shape == (m, n)
    assert np.array_equal(grad_W.dense(), gz @ X.T)  # bit for bit the product it stands for
    assert np.array_equal(grad_X, W.T @ gz)
    rows = grad_W.rows(5, 9)  # one term per entry: bit for bit; more: BLAS may order a block's sums its own way
    assert np.array_equal(rows, (gz @ X.T)[5:9]) if k == 1 else np.allclose(rows, (gz @ X.T)[5:9], rtol=1e-14)
    assert np.allclose(grad_W.T.dense(), (gz @ X.T).T, rtol=1e-14, atol=1e-15)
    # the transposed orientation, z = Xᵀ Wᵀ: Wᵀ's gradient is X gᵀ
    _, grad_Wt = OPS["matmul"].vjp(gz.T, X.T @ W.T, X.T, W.T)
    assert isinstance(grad_Wt, LowRank) and np.array_equal(grad_Wt.dense(), X @ gz.T)


def test_a_vector_product_and_small_or_symbolic_products_keep_their_old_form() -> None:
    rng = np.random.default_rng(1)
    W, x, g = rng.standard_normal((300, 400)), rng.standard_normal(400), rng.standard_normal(300)
    grad_W, grad_x = OPS["matmul"].vjp(g, W @ x, W, x)
    assert isinstance(grad_W, LowRank) and np.array_equal(grad_W.dense(), np.multiply.outer(g, x))
    small, _ = OPS["matmul"].vjp(g[:20], W[:20, :30] @ x[:30], W[:20, :30], x[:30])
    assert isinstance(small, np.ndarray) and np.array_equal(small, np.multiply.outer(g[:20], x[:30]))
    # a product over as many terms as the result is wide is not smaller factored
    wide, _ = OPS["matmul"].vjp(rng.standard_normal((300, 200)), None, rng.standard_normal((300, 400)),
                                rng.standard_normal((400, 200)))
    assert isinstance(wide, np.ndarray)
    objects = np.array([[1.0]] * 300, dtype=object)
    sym, _ = OPS["matmul"].vjp(objects @ np.ones((1, 300), dtype=object), None, objects,
                               np.ones((1, 300), dtype=object))
    assert isinstance(sym, np.ndarray) and sym.dtype == object


def test_two_factored_gradients_add_up_factored_while_small() -> None:
    rng = np.random.default_rng(2)
    p1, q1, p2, q2 = (rng.standard_normal((s, 1)) for s in (300, 400, 300, 400))
    total = add_low_rank(LowRank(p1, q1), LowRank(p2, q2))
    assert isinstance(total, LowRank) and total.p.shape == (300, 2)
    np.testing.assert_allclose(total.dense(), p1 @ q1.T + p2 @ q2.T, rtol=1e-13, atol=1e-15)
    dense = rng.standard_normal((300, 400))
    assert np.array_equal(add_low_rank(dense, LowRank(p1, q1)), dense + p1 @ q1.T)


@pytest.fixture
def many_blocks(monkeypatch):
    """Small blocks and three threads: every path of the blocked passes at test sizes."""
    monkeypatch.setattr(numeric_blocks, "BLOCK", 1000)
    monkeypatch.setattr(numeric_blocks, "PARALLEL_MIN", 8)
    monkeypatch.setattr(numeric_blocks, "threads", lambda: 3)


@pytest.mark.parametrize("k", [1, 4])
def test_a_factored_truth_compares_as_its_dense_array(many_blocks, k: int) -> None:
    rng = np.random.default_rng(3 + k)
    truth = LowRank(rng.standard_normal((210, k)), rng.standard_normal((130, k)))
    full = truth.dense()
    claims = [full.copy(), full + 1e-9 * rng.standard_normal(full.shape)]
    for index, value in (((3, 7), 1e-3), ((209, 129), -5.0), ((100, 0), np.nan), ((0, 1), np.inf)):
        wrong = full.copy()
        wrong[index] += value
        claims.append(wrong)
    claims.append(np.broadcast_to(full[:1], full.shape))  # a broadcast claim: blocks of its rows
    for claimed in claims:
        got, expected = compare(claimed, truth, 1e-7, 1e-12), compare(claimed, full, 1e-7, 1e-12)
        assert got[0] == expected[0] and got[3] == expected[3]
        assert got[1:3] == pytest.approx(expected[1:3], rel=1e-12, nan_ok=True)
        assert numeric_blocks.largest(claimed, truth) == pytest.approx(numeric_blocks.largest(claimed, full),
                                                                         rel=1e-12, nan_ok=True)


def test_a_nan_in_a_factor_is_never_close(many_blocks) -> None:
    rng = np.random.default_rng(5)
    p, q = rng.standard_normal((210, 1)), rng.standard_normal((130, 1))
    claimed = p @ q.T
    p[17, 0] = np.nan
    max_abs, scale = numeric_blocks.largest(claimed, LowRank(p, q))
    assert math.isnan(max_abs) and math.isnan(scale)
    assert not compare(claimed, LowRank(p, q), 1e-7, 1e-12)[0]


def test_the_inner_product_of_a_factored_gradient_is_that_of_its_entries() -> None:
    rng = np.random.default_rng(6)
    for k in (1, 3):
        g = LowRank(rng.standard_normal((300, k)), rng.standard_normal((200, k)))
        for t in (Rank1(rng.choice([-1.0, 1.0], 300), rng.choice([-1.0, 1.0], 200)),
                  rng.choice([-1.0, 1.0], (300, 200))):
            assert inner(g, t) == pytest.approx(inner(g.dense(), t), rel=1e-12)
    # factors whose terms could overflow: the entries decide, as for a dense gradient
    huge = LowRank(np.full((300, 2), 1e200), np.array([[1e200, -1e200]] * 200))
    t = Rank1(np.ones(300), np.ones(200))
    with np.errstate(all="ignore"):  # as the check runs it
        value, norm = inner(huge, t)
    assert not (math.isfinite(value) and math.isfinite(norm))


def test_a_trial_keeps_the_weight_gradient_factored_and_reads_it_dense_by_name() -> None:
    d = load(BATCH)
    for batch in (1, 3):
        run = run_trial(d, {"n": 300, "m": 400, "B": batch}, rng_for(0, d.path, 0), 0)
        factored = run.grads.factored("W")
        assert isinstance(factored, LowRank)
        expected = run.grads["Z"] @ run.values["X"].T
        assert np.array_equal(run.grads["W"], expected)  # read by name: the array, kept from then on
        assert isinstance(run.grads.factored("W"), np.ndarray)
        assert dict(run.grads)["W"] is run.grads["W"]
        assert np.array_equal(run.claims["grad_W"], expected)


SHARED_W = """
[derivation]
title = "One weight matrix applied to two inputs"

[dims]
n = "inputs"
m = "outputs"

[inputs]
x = ["n"]
y = ["n"]
W = ["m", "n"]

[forward]
z = "W @ x + W @ y"
h = "tanh(z)"

[loss]
upstream = "h"

[claims]
grad_z = "grad_h * (1 - h**2)"
grad_W = "outer(grad_z, x + y)"
"""


def test_a_weight_used_twice_sums_its_factored_gradients() -> None:
    d = load_text(SHARED_W)
    run = run_trial(d, {"n": 300, "m": 400}, rng_for(0, d.path, 0), 0)
    factored = run.grads.factored("W")
    assert isinstance(factored, LowRank) and factored.p.shape == (400, 2)
    assert compare(run.claims["grad_W"], factored, 1e-7, 1e-12)[0]


# grad_W = grad_z (x + y)ᵀ, so grad_W (x + y) / |x + y|² is grad_z again
CLAIM_READS_GRAD_W = with_claims(SHARED_W, {"grad_z": "grad_W @ (x + y) / sum((x + y) ** 2)",
                                            "grad_x": "W.T @ grad_z * 1.01"})


def _numeric_only(d, dims: dict[str, int], monkeypatch, dense: bool):
    if dense:
        monkeypatch.setattr(core, "LOW_RANK_MIN", 10**18)
    options = Options(symbolic=False, trials=1, dims=tuple(dims.items()),
                      limits=dataclasses.replace(DEFAULT_LIMITS, max_entries=10**9))
    result = check_derivation(d, options)
    monkeypatch.undo()
    return [(c.name, c.verdict, c.message, c.numeric, c.counterexample and dataclasses.astuple(c.counterexample)[:6])
            for c in result.claims]


@pytest.mark.parametrize("claims,verdicts", [
    ({"grad_W": "grad_Z @ X.T", "grad_b": "sum(grad_Z, axis=1)"}, ["verified", "verified"]),
    ({"grad_W": "grad_Z @ X.T * 1.001", "grad_X": "W.T @ grad_Z"}, ["refuted", "verified"]),
    ({"grad_W": "(grad_Z + 1e-3) @ X.T"}, ["refuted"]),
    ({"grad_W": "grad_H @ X.T"}, ["refuted"]),
])
@pytest.mark.parametrize("batch", [1, 3])
def test_verdicts_and_counterexamples_are_those_of_the_dense_truth(monkeypatch, claims, verdicts,
                                                                   batch: int) -> None:
    text = BATCH.read_text(encoding="utf-8").split("[claims]")[0]
    d = load_text(text + "[claims]\n" + "".join(f'{k} = "{v}"\n' for k, v in claims.items()))
    dims = {"n": 300, "m": 400, "B": batch}
    factored = _numeric_only(d, dims, monkeypatch, dense=False)
    assert factored == _numeric_only(d, dims, monkeypatch, dense=True)
    assert [v for _, v, *_ in factored] == verdicts


def test_a_claim_that_reads_the_factored_gradient_gets_its_entries(monkeypatch) -> None:
    d = load_text(CLAIM_READS_GRAD_W)
    dims = {"n": 300, "m": 400}
    got = _numeric_only(d, dims, monkeypatch, dense=False)
    assert got == _numeric_only(d, dims, monkeypatch, dense=True)
    assert [v for _, v, *_ in got] == ["verified", "refuted"]


@pytest.mark.slow  # 3 s: a sweep of the library (CI runs it)
def test_every_library_file_has_the_same_numeric_verdicts_with_every_product_gradient_factored(monkeypatch) -> None:
    # every matmul gradient of every bundled file factored, however small or wide: the verdicts, and any
    # counterexample, are those of the dense truths
    from conftest import LIBRARY_FILES

    from backpropcheck.checker import check_path

    def results() -> list:
        out = []
        for path in LIBRARY_FILES:
            result = check_path(str(path), Options(symbolic=False))
            out.append([(c.name, c.verdict, c.counterexample and dataclasses.astuple(c.counterexample)[:6])
                        for c in result.claims])
        return out

    dense = results()
    factored: list[int] = []
    real = LowRank.of

    def always(p, q):
        made = real(p, q)
        factored.append(isinstance(made, LowRank))
        return made

    monkeypatch.setattr(core, "LOW_RANK_MIN", 0)
    monkeypatch.setattr(core, "LOW_RANK_SHARE", 0)
    monkeypatch.setattr(LowRank, "of", staticmethod(always))
    assert results() == dense
    assert sum(factored) > 100  # it did factor them


# the block threads: helpers are started without waiting for them, and take pieces in turn


def _record_pieces():
    import threading

    done: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(lo: int, hi: int) -> None:
        with lock:
            done.append((lo, hi))

    return done, work


def test_every_block_is_done_once_whichever_thread_takes_it() -> None:
    for runs in ([(0, 10), (10, 20)], [(0, 3), (3, 5), (5, 9)], [(0, 1), (1, 2)]):
        done, work = _record_pieces()
        numeric_blocks.in_threads(work, runs)
        blocks = sorted(b for lo, hi in done for b in range(lo, hi))
        assert blocks == list(range(runs[-1][1]))
        assert min(done) == (runs[0][0], runs[0][0] + max(1, (runs[0][1] - runs[0][0]) // numeric_blocks.PIECES))


def test_a_helper_that_is_never_scheduled_holds_nothing_up(monkeypatch) -> None:
    # on a busy machine a new thread may not run for milliseconds: the caller does every piece itself and
    # returns; the helper, when it runs at last, finds nothing left and touches nothing
    pending: list = []
    monkeypatch.setattr(numeric_blocks._thread, "start_new_thread", lambda fn, args: pending.append(fn))
    done, work = _record_pieces()
    numeric_blocks.in_threads(work, [(0, 8), (8, 16)])
    assert sorted(b for lo, hi in done for b in range(lo, hi)) == list(range(16))
    assert len(pending) == 1
    count = len(done)
    pending[0]()
    assert len(done) == count


def test_a_helper_that_cannot_start_leaves_its_pieces_to_the_caller(monkeypatch) -> None:
    def refuse(fn, args):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(numeric_blocks._thread, "start_new_thread", refuse)
    done, work = _record_pieces()
    numeric_blocks.in_threads(work, [(0, 5), (5, 9), (9, 12)])
    assert sorted(b for lo, hi in done for b in range(lo, hi)) == list(range(12))


def test_after_the_callers_alarm_no_helper_is_still_at_work() -> None:
    # the deadline's alarm lands in the calling thread's piece and ticks on in the wait: the call raises only
    # once the helpers have done every piece left (none writes into the abandoned trial's arrays after it)
    import signal
    import threading
    import time

    from backpropcheck.budget import repeating_alarm

    class Deadline(BaseException):
        pass

    begun, ended = [], []
    lock = threading.Lock()

    def work(lo: int, hi: int) -> None:
        with lock:
            begun.append(lo)
        time.sleep(0.3 if lo == 0 else 0.05)
        with lock:
            ended.append(lo)

    with pytest.raises(Deadline), repeating_alarm(signal.ITIMER_REAL, signal.SIGALRM, 0.05, Deadline):
        numeric_blocks.in_threads(work, [(0, 4), (4, 8)])
    settled = (sorted(begun), sorted(ended))
    time.sleep(0.2)
    assert (sorted(begun), sorted(ended)) == settled  # nothing ran after the call
    assert sorted(begun) == list(range(8)) and sorted(ended) == list(range(1, 8))  # the caller's piece was cut


def test_a_factored_gradient_flows_through_a_transpose_as_it_is(monkeypatch) -> None:
    # PyTorch's row-major Y = X @ W.T: Wᵀ's gradient Xᵀ g is factored, and W's is its transpose, still factored
    d = load(BUNDLED / "dense_rowmajor_batch.toml")
    for batch in (1, 3):
        dims = {"B": batch, "n": 300, "m": 400}
        run = run_trial(d, dims, rng_for(0, d.path, 0), 0)
        factored = run.grads.factored("W")
        assert isinstance(factored, LowRank) and factored.shape == (400, 300)
        assert np.allclose(factored.dense(), run.grads["Y"].T @ run.values["X"], rtol=1e-13, atol=1e-15)
        got = _numeric_only(d, dims, monkeypatch, dense=False)
        assert got == _numeric_only(d, dims, monkeypatch, dense=True)
        assert all(v == "verified" for _, v, *_ in got)


def test_the_work_queue_steps_no_alarm_may_cut_are_shielded() -> None:
    # found in review: an alarm that landed in take()'s `with` just after the lock was taken left it taken,
    # and the shielded wait() on the way out then waited for it forever (a worker hung past its deadline)
    from backpropcheck import budget

    for step in (numeric_blocks._Queue.take, numeric_blocks._Queue.ended, numeric_blocks._Queue.wait,
                 numeric_blocks._start):
        assert step.__code__ in budget._SHIELDED, step


def test_helpers_that_cannot_start_leave_their_work_to_the_caller(monkeypatch) -> None:
    # found in review: _thread.start_new_thread may raise MemoryError, not only RuntimeError; it escaped
    # in_threads while the helpers already started went on writing
    started = []

    def start_one_then_fail(fn, args):
        if started:
            raise MemoryError
        started.append(fn)
        return 0  # never run: its pieces stay in the queue for the caller

    monkeypatch.setattr(numeric_blocks._thread, "start_new_thread", start_one_then_fail)
    done: list[int] = []
    numeric_blocks.in_threads(lambda lo, hi: done.extend(range(lo, hi)), [(0, 4), (4, 8), (8, 12)])
    assert sorted(done) == list(range(12))


def test_a_factored_norm_is_never_lost_to_overflow_and_underflow_together() -> None:
    # found in review: with pᵀp overflowing while qᵀq underflowed, their product's NaN was clamped to a norm of 0
    rng = np.random.default_rng(0)
    g = LowRank(rng.uniform(1, 2, (300, 2)) * 1e200, rng.uniform(1, 2, (400, 2)) * 1e-200)
    t = rng.uniform(-1, 1, g.shape)
    with np.errstate(all="ignore"):  # as in a trial
        got = inner(g, t)
        want = inner(g.dense(), t)
    assert got[1] > 0 and math.isclose(got[0], want[0], rel_tol=1e-9) and math.isclose(got[1], want[1], rel_tol=1e-9)
