"""engines/directional.py: the forward-mode (tangent) check beside the reverse sweep — rank-1
directions, tangents equal to finite differences, agreement on the library and on degenerate but
valid files, and a wrong reverse step or table derivative caught as an internal error.

No test here asserts a time."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import BUNDLED, dense_toml

from backpropcheck.checker import Options, check_derivation, check_path
from backpropcheck.engines import numeric
from backpropcheck.engines.directional import RANK1_MIN, Rank1, direction, directions, inner, tangent_of
from backpropcheck.engines.evaluate import Tape, evaluate
from backpropcheck.lang import ops
from backpropcheck.lang.ops import dense
from backpropcheck.loader import load

LIB = BUNDLED


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


def _signs_one_call_each(shape, rng):
    """The directions as they were first drawn: one int8 draw of the generator per array, 2b - 1."""
    def signs(size):
        return np.multiply(rng.integers(0, 2, size=size, dtype=np.int8), 2.0) - 1.0

    if len(shape) == 2 and shape[0] * shape[1] >= RANK1_MIN:
        return Rank1(signs(shape[0]), signs(shape[1]))
    return signs(shape)


@pytest.mark.parametrize("seed", range(12))
def test_one_draw_of_a_trials_directions_gives_each_directions_own_draw(seed):
    """directions() draws the words of every array at once and reads the bits NumPy's int8 draw would:
    every value, shape and type equal to a draw per array (a NumPy that drew int8 otherwise fails here)."""
    shapes = [(), (1,), (3,), (4,), (5,), (0, 3), (2, 3, 4), (5, 7), (64, 32), (1, RANK1_MIN), (33, 31), (9,), ()]
    order = np.random.default_rng(seed).permutation(len(shapes))
    shapes = [shapes[k] for k in order]
    ref = np.random.default_rng([seed, 1])
    expected = [_signs_one_call_each(s, ref) for s in shapes]
    got = directions(shapes, np.random.default_rng([seed, 1]))
    assert len(got) == len(expected)
    for shape, g, e in zip(shapes, got, expected):
        assert type(g) is type(e), shape
        if isinstance(e, Rank1):
            assert np.array_equal(g.p, e.p) and np.array_equal(g.q, e.q), shape
        else:
            assert np.shape(g) == shape and np.array_equal(g, e) and np.asarray(g).dtype == np.float64, shape
    for shape in shapes:  # direction() alone draws as it did too
        one, first = direction(shape, np.random.default_rng(seed)), _signs_one_call_each(shape, np.random.default_rng(seed))
        assert type(one) is type(first) and np.array_equal(dense(one), dense(first)), shape


@pytest.mark.parametrize("shapes", [[(3,)], [(), (5,)], [(2, 3), (7,), (1,)], [(33, 31), (1,)]])
def test_directions_with_an_odd_number_of_words_are_each_arrays_own_draw(shapes):
    """directions() reads two 32-bit words from each raw 64-bit output: a trial whose words are odd in
    number ends on half of one, and every value is still the per-array int8 draw's."""
    ref = np.random.default_rng(7)
    expected = [_signs_one_call_each(s, ref) for s in shapes]
    got = directions(shapes, np.random.default_rng(7))
    assert sum(-(-math.prod(s) // 4) for s in shapes) % 2 == 1
    assert all(np.array_equal(dense(g), dense(e)) for g, e in zip(got, expected))


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


def test_a_wrong_table_derivative_is_caught_by_the_complex_step(monkeypatch):
    sigmoid = ops.ELEMENTWISE["sigmoid"]
    wrong = dataclasses.replace(sigmoid, derivative=lambda u: 1.01 * sigmoid.derivative(u))
    monkeypatch.setitem(ops.ELEMENTWISE, "sigmoid", wrong)
    result = check_path(str(LIB / "dense_column_batch.toml"), Options(symbolic=False, trials=1))
    assert result.status == "error" and "internal error" in result.error


# -- regressions found by fuzzing the directional check ---------------------------------

def _degenerate(z: str, h: str, loss: str, claim: str, extra_inputs: dict | None = None) -> str:
    """A dense layer with a chosen forward pass, loss and grad_b claim (conftest's dense layer)."""
    key, value = loss.split(" = ", 1)
    return dense_toml(title="a test derivation", forward={"z": z, "h": h}, loss={key: value.strip('"')},
                      claims={"grad_b": claim}, extra_inputs=extra_inputs)


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
