"""What the checker keeps between checks of one loaded file (workload.layout, dimuse's uses, rng_for's
words, the resolved settings) never stands in for what a changed file, claim subset, op or bound gives."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import DENSE_COLUMN, dense_toml, with_claims

from backpropcheck import dimuse, workload
from backpropcheck.checker import Options, check_derivation, draw_dims, settings
from backpropcheck.engines.numeric import _name_crc, rng_for, seeded_rng
from backpropcheck.errors import LimitError
from backpropcheck.lang.ops import OPS
from backpropcheck.limits import DEFAULT_LIMITS, Limits
from backpropcheck.loader import loads
from backpropcheck.model import CheckSettings

REPO = Path(__file__).resolve().parent.parent
BATCH = (REPO / "backpropcheck" / "derivations" / "dense_column_batch.toml").read_text()
WRONG_W = BATCH.replace('grad_W = "grad_Z @ X.T"', 'grad_W = "grad_Z @ X.T * 2"')
RUN = Options(symbolic=False, trials=2, dims=(("n", 5), ("m", 7), ("B", 3)))


def _verdicts(d, options: Options = RUN) -> dict[str, str]:
    return {c.name: c.verdict for c in check_derivation(d, options).claims}


def _fresh_spaces(d, claims, limits: Limits = DEFAULT_LIMITS) -> tuple[list, list]:
    out: list = []
    products: list = []
    workload._walk_spaces(d, claims, limits, out, products, {})
    return out, products


def _report(d, options: Options) -> list[dict]:
    return [{k: v for k, v in vars(c).items() if k != "seconds"} for c in check_derivation(d, options).claims]


def test_two_files_checked_in_turn_each_get_their_own_verdicts() -> None:
    assert WRONG_W != BATCH
    right, wrong = loads(BATCH, "batch.toml"), loads(WRONG_W, "batch.toml")  # the same name: the same draws
    for _ in range(3):
        assert _verdicts(right) == dict.fromkeys(("grad_Z", "grad_W", "grad_b", "grad_X"), "verified")
        assert _verdicts(wrong)["grad_W"] == "refuted"


def test_a_check_repeated_gives_the_first_checks_report(tmp_path: Path) -> None:
    d = loads(BATCH, "batch.toml")
    for options in (RUN, Options(symbolic=False, trials=4, seed=3), Options(symbolic=False, trials=2, max_dim=9)):
        first = _report(d, options)
        assert _report(d, options) == first == _report(loads(BATCH, "batch.toml"), options)


def test_a_claim_changed_in_place_is_checked_as_it_now_is() -> None:
    d, wrong = loads(BATCH, "batch.toml"), loads(WRONG_W, "batch.toml")
    assert _verdicts(d)["grad_W"] == "verified"
    d.claims[1].node = wrong.claims[1].node  # as tests/test_scope.py does: the same claim, another tree
    assert _verdicts(d)["grad_W"] == "refuted"
    assert workload.layout(d, d.claims, DEFAULT_LIMITS).spaces == tuple(_fresh_spaces(d, d.claims)[0])


def test_the_layout_is_the_claims_own() -> None:
    d = loads(BATCH, "batch.toml")
    for claims in (d.claims, d.claims[:1], d.claims[2:], [], d.claims, d.claims[:1]):
        products: list = []
        spaces = workload.spaces(d, claims, DEFAULT_LIMITS, products)
        assert (spaces, products) == _fresh_spaces(d, claims)
    assert len(workload.spaces(d, d.claims[:1], DEFAULT_LIMITS)) < len(workload.spaces(d, d.claims, DEFAULT_LIMITS))


def test_a_smaller_max_rank_is_refused_after_a_larger_one_was_kept() -> None:
    d = loads(BATCH, "batch.toml")
    workload.layout(d, d.claims, DEFAULT_LIMITS)
    with pytest.raises(LimitError, match="max-rank"):
        workload.spaces(d, d.claims, Limits(max_rank=1))
    assert workload.layout(d, d.claims, Limits(max_rank=2)) is workload.layout(d, d.claims, DEFAULT_LIMITS)


def test_an_op_replaced_in_the_table_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    d = loads(BATCH, "batch.toml")
    assert workload.layout(d, d.claims, DEFAULT_LIMITS).products  # the matrix products' multiply-adds
    monkeypatch.setitem(OPS, "matmul", dataclasses.replace(OPS["matmul"], work=None))
    assert workload.layout(d, d.claims, DEFAULT_LIMITS).products == ()


def test_the_preflight_counts_are_those_of_the_dims_asked() -> None:
    d = loads(BATCH, "batch.toml")
    found = workload.layout(d, d.claims, DEFAULT_LIMITS)
    for sizes in ({"n": 2, "m": 3, "B": 4}, {"n": 5, "m": 2, "B": 2}, {"n": 2, "m": 3, "B": 4}):
        entries, flops = found.count(sizes)
        assert entries == workload.work(d, found.spaces, sizes)[0]
        n, m, b = sizes["n"], sizes["m"], sizes["B"]
        # W @ X in the forward pass (thrice: the product and its two vector-Jacobian products), and the
        # claims grad_Z @ X.T and W.T @ grad_Z once each
        assert flops == 3 * m * n * b + m * b * n + n * m * b


def test_dims_used_as_numbers_follow_the_claims() -> None:
    text = with_claims(DENSE_COLUMN, {"grad_a": "(W.T @ grad_z) * (1 + relu(n - 64))"})
    d = loads(text, "kink.toml")
    plain = loads(DENSE_COLUMN, "kink.toml")
    kinked = dimuse.critical_sizes(d, 64)
    assert ("n", 64, True, ()) in kinked and ("n", 4 * 64 + 3, False, ()) in kinked  # a kink, and past the range
    assert dimuse.critical_sizes(d, 64) == kinked
    assert ("n", 4 * 100 + 3, False, ()) in dimuse.critical_sizes(d, 100)
    assert dimuse.critical_sizes(plain, 64) == []
    d.claims = plain.claims  # the kink gone: nothing to examine
    assert dimuse.critical_sizes(d, 64) == []


def test_a_files_memo_goes_with_it() -> None:
    d = loads(BATCH, "batch.toml")
    check_derivation(d, RUN)
    key, alive = id(d), weakref.ref(d)
    assert key in workload._MEMOS
    del d
    gc.collect()
    assert alive() is None and key not in workload._MEMOS  # nothing kept holds its file
    kept = len(workload._MEMOS)
    for _ in range(20):
        check_derivation(loads(BATCH, "batch.toml"), RUN)
    gc.collect()
    assert len(workload._MEMOS) <= kept


@pytest.mark.parametrize("seed, path, trial", [(0, "a.toml", 0), (3, "x/dense_column_batch.toml", 17),
                                               (2**40, "ü.toml", 100_002), (7, "b.toml", 300_001)])
def test_rng_for_is_default_rngs_stream(seed: int, path: str, trial: int) -> None:
    for _ in range(2):  # the words are kept after the first
        ours, theirs = rng_for(seed, path, trial), np.random.default_rng([seed, _name_crc(path), trial])
        assert ours.bit_generator.state == theirs.bit_generator.state
        assert np.array_equal(ours.standard_normal(9), theirs.standard_normal(9))
        assert ours.integers(2**63) == theirs.integers(2**63)
        assert [c.random() for c in ours.spawn(2)] == [c.random() for c in theirs.spawn(2)]
        assert ours.bit_generator.seed_seq.generate_state(3).tolist() == theirs.bit_generator.seed_seq.generate_state(3).tolist()
    renamed = str(Path(path).with_name("other_" + Path(path).name))
    other = rng_for(seed, renamed, trial)  # another file at the same seed and trial: its own stream
    assert other.bit_generator.state == np.random.default_rng([seed, _name_crc(renamed), trial]).bit_generator.state
    assert other.bit_generator.state != rng_for(seed, path, trial).bit_generator.state


@pytest.mark.parametrize("entropy", [0, 7, 2**32 - 1, 2**32, 2**63 - 1, (3, 2**40, 5)])
def test_seeded_rng_is_default_rngs_stream(entropy: int | tuple[int, ...]) -> None:
    for _ in range(2):  # the words are kept after the first
        ours = seeded_rng(entropy)
        theirs = np.random.default_rng(entropy if isinstance(entropy, int) else list(entropy))
        assert ours.bit_generator.state == theirs.bit_generator.state
        assert np.array_equal(ours.bit_generator.random_raw(5), theirs.bit_generator.random_raw(5))
        assert [c.random() for c in ours.spawn(3)] == [c.random() for c in theirs.spawn(3)]
    if isinstance(entropy, int):  # run_trial's: the seed drawn as a NumPy integer, as default_rng took it
        assert seeded_rng(entropy).bit_generator.state == np.random.default_rng(np.int64(entropy)).bit_generator.state


@pytest.mark.parametrize("high", [2, 64, 8192, 20_000])
def test_dims_all_given_draw_nothing_as_a_choice_of_none(high: int) -> None:
    d = loads(BATCH, "batch.toml")
    fixed = {"n": 5, "m": 7, "B": 3}
    ours, twin = np.random.default_rng(high), np.random.default_rng(high)
    assert draw_dims(d, ours, 2, high, fixed) == fixed
    assert twin.choice(high - 1, size=0, replace=False).shape == (0,)  # what it drew before: nothing
    assert ours.bit_generator.state == twin.bit_generator.state


def test_settings_follow_the_options_and_the_files_check() -> None:
    d = loads(BATCH, "batch.toml")
    assert settings(d, Options(trials=4)).trials == 4
    assert settings(d, Options(trials=5)).trials == 5
    assert settings(d, Options()).trials == 20
    d.check = CheckSettings(trials=7)
    assert settings(d, Options()).trials == 7
    d.check = CheckSettings(trials=8, seed=2)
    assert (settings(d, Options()).trials, settings(d, Options()).seed) == (8, 2)
    same = Options(shapes=2)  # one run's options, two files with their own [check]
    other = loads(BATCH.replace("[dims]", "[check]\ntrials = 9\n\n[dims]"), "other.toml")
    assert [settings(f, same).trials for f in (d, other, d, other)] == [8, 9, 8, 9]


def test_a_files_inputs_replaced_are_read_again() -> None:
    d = loads(BATCH.replace('b = ["m"]', 'b = ["m"]\nc = ["m"]'), "batch.toml")
    other = loads(BATCH.replace('b = ["m"]', 'b = ["m"]\nc = ["n"]'), "batch.toml")
    sizes = {"n": 2, "m": 3, "B": 4}
    assert workload.concrete_shapes(d, sizes)["c"] == (3,)
    d.inputs = other.inputs  # as many inputs as before, one of another shape
    assert workload.concrete_shapes(d, sizes)["c"] == (2,)


def test_a_different_file_of_the_same_shapes_is_laid_out_again() -> None:
    small = loads(dense_toml(), "small.toml")
    big = loads(BATCH, "small.toml")
    assert workload.layout(small, small.claims, DEFAULT_LIMITS).spaces == tuple(_fresh_spaces(small, small.claims)[0])
    assert workload.layout(big, big.claims, DEFAULT_LIMITS).spaces == tuple(_fresh_spaces(big, big.claims)[0])
