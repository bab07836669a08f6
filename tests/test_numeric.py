"""engines/numeric.py (and evaluate.py): NumPy's reverse sweep agrees with central finite
differences of the loss, in loss, upstream and index form; inputs sample their domains; the
blocked comparison equals the whole-array one."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BUNDLED, DENSE_COLUMN, DENSE_INDEX, SOFTMAX_REGRESSION, check_text, derivation_toml, load_text
from numpy.random.bit_generator import ISeedSequence

from backpropcheck.engines import numeric, numeric_blocks
from backpropcheck.engines.evaluate import evaluate, evaluate_definition
from backpropcheck.engines.numeric import (
    NumericProblem,
    compare,
    numeric_backend,
    rng_for,
    run_trial,
    sample_input,
    standin_for,
)
from backpropcheck.lang.dims import Dim
from backpropcheck.lang.ops import GENERIC_STANDINS, LowRank
from backpropcheck.loader import load
from backpropcheck.model import Derivation, Input


def _forward_loss(d: Derivation, values: dict[str, np.ndarray], sizes: dict[str, int], trial: int,
                  upstream: dict[str, np.ndarray]) -> float:
    """E at the given inputs: the loss expression, or Σ grad_h · h in upstream mode."""
    backend = numeric_backend(d, trial)
    env = {k: v for k, v in values.items() if k in d.inputs}
    for definition in d.forward:
        env[definition.name] = evaluate_definition(definition.root, definition.index, env, sizes, backend)
    if d.loss.expression is not None:
        return float(evaluate(d.loss.expression, env, sizes, backend))
    return float(sum(np.sum(g * env[h]) for h, g in upstream.items()))


def _check_against_finite_differences(d: Derivation, sizes: dict[str, int], trial: int = 0) -> None:
    rng = rng_for(0, d.path, trial)
    run = run_trial(d, sizes, rng, trial)
    upstream = {h: run.grads[h] for h in d.loss.upstream}
    assert _forward_loss(d, run.values, sizes, trial, upstream) == pytest.approx(run.loss, rel=1e-12)
    eps = 1e-6
    checked = 0
    for name, inp in d.inputs.items():
        if inp.constant:
            assert name not in run.grads
            continue
        x = np.array(run.values[name], dtype=float)
        fd = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            plus = dict(run.values)
            minus = dict(run.values)
            plus[name] = x.copy()
            minus[name] = x.copy()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            fd[idx] = (_forward_loss(d, plus, sizes, trial, upstream)
                       - _forward_loss(d, minus, sizes, trial, upstream)) / (2 * eps)
        np.testing.assert_allclose(run.grads[name], fd, rtol=1e-5, atol=1e-7, err_msg=f"grad_{name}")
        checked += 1
    assert checked > 0


def test_numeric_truth_matches_finite_differences_softmax_regression() -> None:
    d = load_text(SOFTMAX_REGRESSION)
    _check_against_finite_differences(d, {"n": 3, "k": 4, "B": 2})


@pytest.mark.parametrize("trial", range(len(GENERIC_STANDINS)))
def test_numeric_truth_matches_finite_differences_generic_f_every_standin(trial: int) -> None:
    # each trial substitutes another concrete function for the generic f
    _check_against_finite_differences(load_text(DENSE_COLUMN), {"n": 3, "m": 2}, trial)


def test_numeric_truth_matches_finite_differences_index_form() -> None:
    _check_against_finite_differences(load_text(DENSE_INDEX), {"n": 2, "m": 3})


INDEX_TOUR = derivation_toml(
    dims={"n": "inputs", "m": "outputs"},
    inputs={"W": ["m", "n"], "a": ["n"], "b": ["m"]},
    forward={
        "c[j]": "sum(b[j] for i in n)",  # a body constant along the summed index: n * b
        "M[j, i]": "W[j, i] * a[i]",  # two free indices
        "y[j]": "sum(M[j, i] for i in n) + c[j] * c[j]",
    },
    loss={"upstream": "y"},
    claims={"grad_c": "2 * c * grad_y", "grad_b": "n * grad_c", "grad_M": "grad_y[:, None] * ones([m, n])",
            "grad_W": "grad_M * a[None, :]", "grad_a": "sum(grad_M * W, axis=0)"},
)


def test_numeric_truth_matches_finite_differences_index_tour() -> None:
    _check_against_finite_differences(load_text(INDEX_TOUR), {"n": 3, "m": 2})


def test_index_tour_claims_are_proved(tmp_path) -> None:
    result = check_text(tmp_path, INDEX_TOUR)
    assert {c.name: c.verdict for c in result.claims} == {
        "grad_c": "proved", "grad_b": "proved", "grad_M": "proved", "grad_W": "proved", "grad_a": "proved"}


@pytest.mark.parametrize(
    "name",
    ["conv1d_valid.toml", "mlp_two_layer_mse.toml", "layer_norm.toml", "attention.toml", "rnn_two_steps.toml",
     "logistic_regression_bce.toml", "log_softmax_nll.toml", "batch_norm.toml"],
)
def test_numeric_truth_matches_finite_differences_bundled(name: str) -> None:
    d = load(BUNDLED / name)
    sizes = {dim: 2 + k for k, dim in enumerate(d.dims)}
    _check_against_finite_differences(d, sizes)


def test_conv_index_form_values_and_gradient() -> None:
    d = load(BUNDLED / "conv1d_valid.toml")
    sizes = {"T": 4, "K": 3}
    run = run_trial(d, sizes, rng_for(0, d.path, 0), 0)
    x, w = run.values["x"], run.values["w"]
    assert x.shape == (6,)
    expected_y = np.array([sum(w[k] * x[t + k] for k in range(3)) for t in range(4)])
    np.testing.assert_allclose(run.values["y"], expected_y, rtol=1e-12)
    gy = run.grads["y"]
    expected_w = np.array([sum(gy[t] * x[t + k] for t in range(4)) for k in range(3)])
    np.testing.assert_allclose(run.grads["w"], expected_w, rtol=1e-12)
    # the claims evaluated with grad_y bound to its truth
    np.testing.assert_allclose(run.claims["grad_w"], expected_w, rtol=1e-12)


def test_every_trial_mod_four_uses_another_standin() -> None:
    labels = {standin_for("f", trial)[0] for trial in range(len(GENERIC_STANDINS))}
    assert labels == {label for label, _, _ in GENERIC_STANDINS}


def test_claims_are_evaluated_with_true_gradients() -> None:
    d = load_text(DENSE_COLUMN)
    run = run_trial(d, {"n": 4, "m": 3}, rng_for(0, d.path, 0), 0)
    np.testing.assert_allclose(run.claims["grad_W"], np.outer(run.grads["z"], run.values["a"]))
    np.testing.assert_allclose(run.claims["grad_a"], run.values["W"].T @ run.grads["z"])
    for name in ("z", "a", "W", "b"):
        ok, *_ = compare(run.claims[f"grad_{name}"], run.grads[name], 1e-7, 1e-12)
        assert ok


def test_runs_are_deterministic_per_seed_file_and_trial() -> None:
    d = load_text(SOFTMAX_REGRESSION)
    sizes = {"n": 3, "k": 2, "B": 4}
    one = run_trial(d, sizes, rng_for(5, "x/softmax.toml", 2), 2)
    two = run_trial(d, sizes, rng_for(5, "y/softmax.toml", 2), 2)  # only the file name counts
    other = run_trial(d, sizes, rng_for(6, "x/softmax.toml", 2), 2)
    np.testing.assert_array_equal(one.values["X"], two.values["X"])
    assert not np.array_equal(one.values["X"], other.values["X"])


def test_sample_input_domains() -> None:
    rng = np.random.default_rng(0)
    shape = (4, 5)
    pos = sample_input(Input("p", (), "positive"), shape, rng)
    assert np.all(pos > 0)
    unit = sample_input(Input("u", (), "unit"), shape, rng)
    assert np.all((unit > 0) & (unit < 1))
    simplex = sample_input(Input("s", (), "simplex", axis=0), shape, rng)
    assert np.all(simplex >= 0)
    np.testing.assert_allclose(simplex.sum(axis=0), 1.0)
    rows = sample_input(Input("s", (), "simplex", axis=1), shape, rng)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    onehot = sample_input(Input("y", (), "onehot", axis=1, constant=True), shape, rng)
    assert set(np.unique(onehot)) == {0.0, 1.0}
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    real = sample_input(Input("x", (), "real"), (200,), rng)
    assert real.min() < 0 < real.max()


def test_nan_in_the_forward_pass_is_a_numeric_problem_not_a_verdict() -> None:
    text = DENSE_COLUMN.replace('h = "f(z)"', 'h = "log(z)"').replace('[functions]\nf = "elementwise"\n', "")
    text = text.replace('grad_z = "grad_h * f_prime(z)"', 'grad_z = "grad_h / z"')
    d = load_text(text)
    with pytest.raises(NumericProblem) as info:
        for trial in range(5):
            run_trial(d, {"n": 3, "m": 4}, rng_for(0, d.path, trial), trial)
    assert info.value.variable == "h"
    assert "domain" in str(info.value)


def test_compare_scales_by_the_largest_entry() -> None:
    truth = np.array([1.0, 1e-20, -2.0])
    ok, max_abs, max_rel, worst = compare(truth + np.array([0, 1e-14, 0]), truth, 1e-7, 1e-12)
    assert ok and max_abs == pytest.approx(1e-14)
    ok, _, _, worst = compare(truth * np.array([1, 1, 1.01]), truth, 1e-7, 1e-12)
    assert not ok and worst == (2,)
    ok, max_abs, _, _ = compare(np.array([1.0, np.nan, 0.0]), truth, 1e-7, 1e-12)
    assert not ok and max_abs == float("inf")


def test_index_form_out_of_range_is_located() -> None:
    from backpropcheck.errors import DerivationError

    d = load_text(DENSE_INDEX)
    sizes = {"n": 2, "m": 3}
    z = d.forward[0]
    assert z.index is not None
    z.index.ranges[1] = Dim.of("m")  # pretend i ran over m: W[i, j] reaches past n
    with pytest.raises(DerivationError) as info:
        evaluate_definition(z.root, z.index, {"W": np.zeros((2, 3)), "a": np.zeros(2), "b": np.zeros(3)},
                            sizes, numeric_backend(d, 0))
    assert "reaches index 2 of an axis of size 2" in str(info.value)


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


@pytest.mark.parametrize(("block", "threads"), [(64, 1), (7, 1), (7, 3), (1 << 16, 1)])
def test_blocked_compare_equals_the_whole_array_compare(monkeypatch, block, threads):
    # CHUNK: the rows of the per-entry test; BLOCK: the fused pass that accepts (64 and 7 split every
    # array here into blocks, of flat entries or, for a broadcast claim, of whole rows; 1 << 16 does not),
    # on one thread or, every array of 8 entries or more, on three
    monkeypatch.setattr(numeric, "CHUNK", 64)
    monkeypatch.setattr(numeric_blocks, "BLOCK", block)
    monkeypatch.setattr(numeric_blocks, "PARALLEL_MIN", 8)
    monkeypatch.setattr(numeric_blocks, "threads", lambda: threads)
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


def _upstream_file(forward: dict[str, str], claims: dict[str, str]) -> Derivation:
    return load_text(derivation_toml(dims={"n": "entries"}, inputs={"x": ["n"]}, forward=forward,
                                     loss={"upstream": "h"}, claims=claims))


@pytest.mark.parametrize("self_check", [True, False])  # in forward mode's inner products, or one sum each
def test_a_nan_true_gradient_of_a_finite_forward_pass_is_a_numeric_problem(self_check: bool) -> None:
    # sqrt(x - x) = 0 everywhere, but its reverse step divides by sqrt(0): grad_x = inf - inf = NaN
    d = _upstream_file({"h": "sqrt(x - x)"}, {"grad_x": "0 * x"})
    with pytest.raises(NumericProblem) as info:
        run_trial(d, {"n": 3}, rng_for(0, d.path, 0), 0, self_check=self_check)
    assert info.value.variable == "grad_x"
    assert "the true gradient" in str(info.value)


def test_a_nan_true_gradient_kept_factored_is_a_numeric_problem_in_every_trial() -> None:
    # grad_W = grad_Z xᵀ, kept as its two factors: a NaN in grad_Z must not hide behind them
    d = load_text(derivation_toml(dims={"n": "in", "m": "out"}, inputs={"W": ["m", "n"], "x": ["n"]},
                                  forward={"z": "W @ x", "h": "sqrt(z - z)"}, loss={"upstream": "h"},
                                  claims={"grad_W": "0 * W"}))
    for self_check in (True, False):
        with pytest.raises(NumericProblem) as info:
            run_trial(d, {"n": 40, "m": 50}, rng_for(0, d.path, 1), 1, self_check=self_check)
        assert info.value.variable in ("grad_z", "grad_W")


def test_a_low_rank_product_is_bounded_only_where_no_entry_can_overflow() -> None:
    p, q = np.ones((4, 1)), np.ones((5, 1))
    assert LowRank(p, q).bounded()
    assert not LowRank(p * 1e200, q * 1e200).bounded()  # an entry is 1e400: inf
    assert not LowRank(np.array([[1.0], [np.nan], [1.0], [1.0]]), q).bounded()
    assert not LowRank(p, np.full((5, 1), np.inf)).bounded()


@pytest.mark.parametrize("self_check", [True, False])
def test_a_huge_but_finite_true_gradient_is_not_a_numeric_problem(self_check: bool) -> None:
    # ‖grad_x‖² overflows to Inf although every entry is finite: the exact test decides, and passes
    d = _upstream_file({"h": "exp(x + 400)"}, {"grad_x": "grad_h * exp(x + 400)"})
    run = run_trial(d, {"n": 3}, rng_for(0, d.path, 0), 0, self_check=self_check)
    assert np.all(np.isfinite(run.grads["x"])) and np.max(np.abs(run.grads["x"])) > 1e170
    assert compare(run.claims["grad_x"], run.grads["x"], 1e-7, 1e-12)[0]


PINNED_LARGE_DRAW = [-0.004026283513926607, -0.038643436529084, -0.07143142847800002]


class _Words(ISeedSequence):
    """A seed sequence that hands SFC64 these three words (SFC64 seeds itself from generate_state(3))."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = words

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        assert (n_words, dtype) == (3, np.uint64)
        return np.array(self.words, dtype=np.uint64)


def _blocked_reference(shape: tuple[int, ...], width: float, rng: np.random.Generator, block: int) -> np.ndarray:
    """The documented large draw, written out on one thread with NumPy's own SFC64 seeding: block k from
    SFC64 seeded with raw words 3k … 3k+2 of ``rng``, all drawn before any block."""
    size = int(np.prod(shape))
    count = -(-size // block)
    seeds = rng.bit_generator.random_raw(3 * count).reshape(count, 3)
    parts = [np.random.Generator(np.random.SFC64(_Words(seeds[k]))).random(min(block, size - k * block))
             for k in range(count)]
    return ((np.concatenate(parts) - 0.5) * width).reshape(shape)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_a_uniform_draw_is_the_same_on_any_number_of_threads(monkeypatch, threads: int) -> None:
    # one block: exactly the one-draw formula; more: block k from its own SFC64 stream seeded from rng's raw
    # words, so neither the values nor where rng is left depend on the threads (a 32-bit half buffered
    # before stays buffered)
    monkeypatch.setattr(numeric_blocks, "BLOCK", 10)
    monkeypatch.setattr(numeric_blocks, "PARALLEL_MIN", 8)
    monkeypatch.setattr(numeric_blocks, "threads", lambda: threads)
    for shape in [(97,), (7, 13), (3, 5, 11), (10,), (5,), ()]:
        ref, blocked = np.random.default_rng(7), np.random.default_rng(7)
        for rng in (ref, blocked):
            rng.integers(0, 2**32, size=3, dtype=np.uint32)
        size = int(np.prod(shape))
        expected = ((ref.random(shape) - 0.5) * 0.25 if size <= 10
                    else _blocked_reference(shape, 0.25, ref, 10))
        got = numeric_blocks.uniform(shape, 0.25, blocked)
        np.testing.assert_array_equal(got, expected)
        assert got.shape == expected.shape
        np.testing.assert_array_equal(blocked.integers(0, 2**32, size=5, dtype=np.uint32),
                                      ref.integers(0, 2**32, size=5, dtype=np.uint32))
        np.testing.assert_array_equal(blocked.random(4), ref.random(4))


def test_a_large_draw_is_uniform_and_its_blocks_independent() -> None:
    # 16 blocks of the real size: in range, the moments of U(-w/2, w/2), no two blocks alike, no entry
    # repeated (53 random bits each), and no correlation between neighbouring blocks
    x = numeric_blocks.uniform((16, numeric_blocks.BLOCK), 2.0, np.random.default_rng(1))
    assert x.min() >= -1.0 and x.max() < 1.0
    n = x.size
    assert abs(x.mean()) < 5 / np.sqrt(3 * n)  # five standard errors
    assert abs(x.var() - 1 / 3) < 5 * np.sqrt(4 / 45 / n)
    assert np.unique(x).size == n
    for a, b in zip(x, x[1:]):
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)


def test_a_real_input_is_drawn_as_before() -> None:
    # uniform on (-√3, √3) scaled by 1/√(last dim). One block (up to 131,072 entries): the values of the
    # one-draw formula, so a seed's counterexample reproduces across versions. Larger: pinned entries of the
    # blocked SFC64 draw (first, last, and one past the first block)
    shape = (250, 500)
    expected = (np.random.default_rng(3).random(shape) - 0.5) * (2.0 * np.sqrt(3.0) * (1.0 / np.sqrt(500)))
    np.testing.assert_array_equal(sample_input(Input("W", (), "real"), shape, np.random.default_rng(3)), expected)
    big = sample_input(Input("W", (), "real"), (300, 500), np.random.default_rng(3))
    np.testing.assert_array_equal(big, _blocked_reference((300, 500), 2.0 * np.sqrt(3.0) * (1.0 / np.sqrt(500)),
                                                          np.random.default_rng(3), numeric_blocks.BLOCK))
    assert [big.flat[0], big.flat[-1], big.flat[numeric_blocks.BLOCK]] == PINNED_LARGE_DRAW


def test_threads_follow_the_blas_setting(monkeypatch) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert numeric_blocks.threads() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert numeric_blocks.threads() == 1
    assert numeric_blocks.spans(10, 1 << 30) == [(0, 10)]
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert numeric_blocks.spans(10, 1 << 30) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert numeric_blocks.spans(10, 100) == [(0, 10)]  # small: one thread


def test_an_error_in_a_block_thread_reaches_the_caller() -> None:
    def work(lo: int, hi: int) -> None:
        if lo == 2:
            raise ValueError("block 2")

    with pytest.raises(ValueError, match="block 2"):
        numeric_blocks.in_threads(work, [(0, 2), (2, 4)])


def test_a_trial_draws_its_inputs_and_upstream_gradient_as_before() -> None:
    # inputs in file order from the trial's generator, then the upstream gradient as rng.normal drew it:
    # a seed's trial (and so its counterexample) is the same numbers across versions
    d = load(BUNDLED / "dense_column_batch.toml")
    sizes = {"n": 300, "m": 200, "B": 5}
    run = run_trial(d, sizes, rng_for(0, d.path, 0), 0)
    rng = rng_for(0, d.path, 0)
    for name, shape in (("X", (300, 5)), ("W", (200, 300)), ("b", (200,))):
        width = 2.0 * np.sqrt(3.0) * (1.0 / np.sqrt(shape[-1]) if len(shape) >= 2 else 1.0)
        np.testing.assert_array_equal(run.values[name], (rng.random(shape) - 0.5) * width)
    np.testing.assert_array_equal(run.grads["H"], rng.normal(size=(200, 5)))


def test_the_calling_threads_exception_goes_first_and_no_block_thread_outlives_the_call() -> None:
    import threading
    import time

    finished = threading.Event()

    def work(lo: int, hi: int) -> None:
        if lo == 0:
            raise KeyboardInterrupt  # as a deadline's alarm would, on the calling thread
        time.sleep(0.05)
        finished.set()
        raise ValueError("a block thread")

    with pytest.raises(KeyboardInterrupt):
        numeric_blocks.in_threads(work, [(0, 2), (2, 4)])
    assert finished.is_set()  # joined before the exception left in_threads


def test_block_threads_work_under_the_callers_errstate(monkeypatch) -> None:
    # NumPy keeps errstate per context and a new thread does not inherit it: an overflow in a block thread
    # warned (an exception under -W error) although the check runs under errstate(all="ignore")
    import warnings

    monkeypatch.setattr(numeric_blocks, "PARALLEL_MIN", 8)
    monkeypatch.setattr(numeric_blocks, "threads", lambda: 3)
    truth = np.full((600, 600), 1.5e308)
    claimed = -truth
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("error")
        max_abs, scale = numeric_blocks.largest(claimed, truth)
    assert max_abs == np.inf and scale == 1.5e308


def test_a_parsed_tree_is_freed_once_nothing_else_holds_it() -> None:
    """The evaluator remembers each tree's post-order by the tree (weakly): a long-lived process (the API, the
    pytest plugin) that loads file after file must not keep every tree it ever evaluated."""
    import gc
    import weakref

    from backpropcheck.engines.evaluate import post_order

    d = load_text(DENSE_COLUMN)
    root = d.forward[0].root
    first = post_order(root)
    assert first[-1][0] is root and post_order(root) == first  # the same order, read back with its root
    assert [n for n, _ in first].count(root) == 1
    alive = weakref.ref(root)
    del d, root, first
    gc.collect()
    assert alive() is None


CLIP_AT_A_BOUND = """
[derivation]
title = "clip of a dim's size, which sits on the upper bound at n = 2"
[dims]
n = "n"
[inputs]
x = ["n"]
[forward]
b = "n"
c = "clip(b, -1.5, 2)"
h = "x * c"
[loss]
E = "sum(h * h)"
[claims]
grad_c = "sum(2 * h * x)"
grad_b = "grad_c * (b > -1.5) * (b < 2)"
grad_x = "2 * h * c"
"""


@pytest.mark.parametrize("n", [1, 2, 3])
def test_clip_at_its_bound_has_one_derivative_in_both_modes(tmp_path, n: int) -> None:
    """At n = 2, ``clip(n, -1.5, 2)`` sits exactly on its bound: the complex-step tangent passed the value
    through (derivative 1) while the reverse rule, strictly inside, gave 0, and the run stopped on an
    'internal error' (found by the fuzz test). Both now take the bound's derivative, 0."""
    from backpropcheck.checker import Options

    result = check_text(tmp_path, CLIP_AT_A_BOUND, Options(dims=(("n", n),)))
    assert result.status == "passed", (result.error, [(c.name, c.verdict, c.message) for c in result.claims])
