"""SPEC §6: the reach constructs, parsed in the file's own language and checked end to end."""

from __future__ import annotations

import pytest
from conftest import check_text, derivation_toml, verdicts

from backpropcheck.checker import Options
from backpropcheck.errors import DerivationError
from backpropcheck.lang.ir import Call
from backpropcheck.lang.parse import Scope, parse_expression

FAST = Options(trials=3, shapes=2)


def scope() -> Scope:
    return Scope(tensors={"X", "x", "mean", "max"}, dims={"n", "m", "B"})


@pytest.mark.parametrize(
    "text, op, params",
    [
        ("max(X, axis=1, keepdims=True)", "max", {"axis": 1, "keepdims": True}),
        ("max(X)", "max", {"axis": None, "keepdims": False}),
        ("min(X, 0)", "min", {"axis": 0, "keepdims": False}),
        ("sum(X, axis=(0, 1))", "sum", {"axis": (0, 1), "keepdims": False}),
        ("logsumexp(X, axis=(0, -1), keepdims=True)", "logsumexp", {"axis": (0, -1), "keepdims": True}),
        ("clip(X, -1, 1.5)", "clip", {"lo": -1.0, "hi": 1.5}),
    ],
)
def test_reach_calls_parse_to_the_table_entry(text: str, op: str, params: dict) -> None:
    node = parse_expression(text, scope())
    assert isinstance(node, Call) and node.op == op and node.params == params


@pytest.mark.parametrize(
    "text, words",
    [
        ("max(X, axis=k)", "axis=(0, 1)"),  # says what to write instead
        ("softmax(X, axis=(0, 1))", "small integer literal"),
        ("max(X, foo=1)", "write max(X, axis=None, keepdims=False)"),
        ("clip(X, lo, 1)", "numeric literal"),
        ("tanh(X, axis=0)", "write tanh(x)"),
    ],
)
def test_reach_errors_speak_the_file_language(text: str, words: str) -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression(text, scope())
    assert words in str(info.value)
    assert "positional argument" not in str(info.value)  # no Python message leaks through


def test_a_variable_named_like_a_function_is_the_variable_when_bare() -> None:
    node = parse_expression("mean(mean) + max(max, axis=0)", scope())
    assert isinstance(node, Call) and node.op == "add"
    assert [a.op for a in node.args] == ["mean", "max"]  # type: ignore[union-attr]


def _file(forward: dict[str, str], claims: dict[str, str], expect: dict[str, str] | None = None,
          inputs: dict[str, object] | None = None, loss: dict[str, object] | None = None) -> str:
    return derivation_toml(
        dims={"B": "rows", "K": "columns"},
        inputs=inputs or {"X": ["B", "K"]},
        forward=forward,
        loss=loss or {"upstream": list(forward)[-1]},
        claims=claims,
        expect=expect,
    )


def test_max_reduction_gradient_goes_to_the_arg_max(tmp_path) -> None:
    """Variables named like functions, and a mask against a max of shifted entries."""
    text = _file(
        {"mean": "mean(X, axis=1, keepdims=True)", "max": "max(X - mean, axis=1)"},
        {"grad_X": "(X - mean >= max[:, None]) * grad_max[:, None] + grad_mean / K"},
    )
    assert verdicts(check_text(tmp_path, text, FAST)) == {"grad_X": "proved"}


@pytest.mark.parametrize(
    "claim, verdict",
    [
        ("(X >= m[:, None]) * grad_m[:, None]", "proved"),
        ("grad_m[:, None] / K + 0 * X", "refuted"),  # the pooling gradient spread over the window
        ("(X > m[:, None]) * grad_m[:, None]", "refuted"),  # strict: the arg-max itself is masked out
    ],
)
def test_max_mask_claims(tmp_path, claim: str, verdict: str) -> None:
    text = _file({"m": "max(X, axis=1)"}, {"grad_X": claim},
                 expect=None if verdict == "proved" else {"grad_X": "refuted"})
    result = check_text(tmp_path, text, FAST)
    assert verdicts(result) == {"grad_X": verdict}


def test_min_over_a_tuple_of_axes(tmp_path) -> None:
    text = _file({"m": "min(X, axis=(0, 1), keepdims=True)"}, {"grad_X": "(X <= m) * grad_m"})
    assert verdicts(check_text(tmp_path, text, FAST)) == {"grad_X": "proved"}


@pytest.mark.parametrize("fn", ["cosh", "sinh", "expm1", "atan", "silu", "gelu_tanh"])
def test_new_elementwise_functions_prove_their_prime(tmp_path, fn: str) -> None:
    text = _file({"h": f"{fn}(X)"}, {"grad_X": f"grad_h * {fn}_prime(X)"})
    assert verdicts(check_text(tmp_path, text, FAST)) == {"grad_X": "proved"}


def test_sign_has_no_gradient_and_clip_passes_it_inside(tmp_path) -> None:
    text = _file({"h": "sign(X) + clip(X, -0.5, 0.5)"}, {"grad_X": "grad_h * (X > -0.5) * (X < 0.5)"})
    assert verdicts(check_text(tmp_path, text, FAST)) == {"grad_X": "proved"}
    wrong = _file({"h": "sign(X) * X"}, {"grad_X": "grad_h * sign(X) + grad_h * X"}, expect={"grad_X": "refuted"})
    assert verdicts(check_text(tmp_path, wrong, FAST)) == {"grad_X": "refuted"}


def _struct(forward: dict[str, str], claims: dict[str, str], **kw) -> str:
    return derivation_toml(
        dims={"B": "batch", "T": "time", "H": "heads", "D": "head size"},
        inputs={"X": ["B*T", "H*D"]},
        forward=forward,
        loss={"upstream": list(forward)[-1]},
        claims=claims,
        check={"max_dim": 4},
        **kw,
    )


@pytest.mark.parametrize(
    "expression, words",
    [
        ("reshape(X, (B, T, H, H))", "reshape from (B*T, D*H) to (B, T, H, H)"),  # products compared over names
        ("reshape(X, (B, T, H*D + 1))", "differ for some dims"),
        ("X[:, H*D:2*H*D]", "does not stay inside"),
        ("X[:, 1:H*D]", None),  # empty at H = D = 1: a slice must be non-empty for every size
        ("pad(X, ((0, 0), (1 - H, 0)))", "must be ≥ 0"),
        ("transpose(X, (0, 0))", "not a permutation"),
        ("concat([X, X.T], axis=0)", "differ on axis 1"),
    ],
)
def test_structural_shapes_are_checked_over_dim_names(tmp_path, expression: str, words: str | None) -> None:
    result = check_text(tmp_path, _struct({"y": expression}, {"grad_X": "0 * X"}), FAST)
    if words is None:
        assert result.status == "error" and "does not stay inside" in (result.error or "")
        return
    assert result.status == "error" and words in (result.error or ""), result.error


def test_reshape_heads_and_back_needs_the_transpose(tmp_path) -> None:
    """Multi-head split: (B*T, H*D) → (B, H, T, D) and back; without the transpose it is refuted."""
    forward = {"q": "transpose(reshape(X, (B, T, H, D)), (0, 2, 1, 3))", "y": "tanh(q)"}
    right = "reshape(transpose(grad_q, (0, 2, 1, 3)), (B*T, H*D))"
    wrong = "reshape(swapaxes(grad_q, 1, 1), (B*T, H*D))"
    result = check_text(tmp_path, _struct(forward, {"grad_X": right}), FAST)
    assert verdicts(result) == {"grad_X": "proved"}
    result = check_text(tmp_path, _struct(forward, {"grad_X": wrong}, expect={"grad_X": "refuted"}), FAST)
    assert verdicts(result) == {"grad_X": "refuted"}


def _embedding(forward: dict[str, str], claims: dict[str, str], expect: dict[str, str] | None = None) -> str:
    return derivation_toml(
        dims={"B": "batch", "V": "vocabulary", "E": "width"},
        inputs={"X": '{ shape = ["B"], domain = "index", range = "V" }', "C": ["V", "E"]},
        forward=forward,
        loss={"upstream": list(forward)[-1]},
        claims=claims,
        expect=expect,
        check={"max_dim": 6},
    )


@pytest.mark.parametrize(
    "expression, words",
    [
        ("C[X + 1]", "arithmetic on the integer input X"),
        ("C[X] * X[:, None]", "arithmetic on the integer input X"),
        ("C[C]", "needs an integer array as its index"),
        ("one_hot(C, V)", "needs an integer array"),
    ],
)
def test_arithmetic_on_an_integer_input_is_a_located_error(tmp_path, expression: str, words: str) -> None:
    result = check_text(tmp_path, _embedding({"h": expression}, {"grad_C": "0 * C"}), FAST)
    assert result.status == "error" and words in (result.error or "") and "[forward.h]" in (result.error or "")
    assert "column" in (result.error or "")


@pytest.mark.parametrize(
    "claim, verdict",
    [
        ("scatter_add(grad_h, X, V)", "proved"),
        ("one_hot(X, V).T @ grad_h", "proved"),
        # the classic slip: every row gets the sum over all positions
        ("sum(grad_h, axis=0)[None, :] + 0 * C", "refuted"),
    ],
)
def test_embedding_gradient_is_a_scatter_add(tmp_path, claim: str, verdict: str) -> None:
    text = _embedding({"h": "C[X]"}, {"grad_C": claim}, None if verdict == "proved" else {"grad_C": verdict})
    assert verdicts(check_text(tmp_path, text, FAST)) == {"grad_C": verdict}


def test_integer_inputs_repeat_at_small_dims() -> None:
    """A scatter_add that overwrote instead of adding would pass without a repeated index."""
    import numpy as np

    from backpropcheck.engines.numeric import draw_integers

    for seed in range(20):
        drawn = draw_integers((2, 3), 50, np.random.default_rng(seed))
        assert len(set(drawn.reshape(-1).tolist())) < drawn.size


def test_dropout_with_a_binary_mask(tmp_path) -> None:
    text = derivation_toml(
        dims={"B": "batch", "n": "width"},
        inputs={"X": ["B", "n"], "M": '{ shape = ["B", "n"], domain = "binary", constant = true }'},
        forward={"h": "X * M / (1 - 0.25)"},
        loss={"upstream": "h"},
        claims={"grad_X": "grad_h * M / 0.75"},
    )
    assert verdicts(check_text(tmp_path, text, FAST)) == {"grad_X": "proved"}
    wrong = text.replace('grad_X = "grad_h * M / 0.75"', 'grad_X = "grad_h * M"') + '\n[expect]\ngrad_X = "refuted"\n'
    assert verdicts(check_text(tmp_path, wrong, FAST)) == {"grad_X": "refuted"}


CONV1D = derivation_toml(
    dims={"T": "outputs", "K": "taps"},
    inputs={"x": ["T + K - 1"], "w": ["K"]},
    forward={"y[t]": "sum(w[k] * x[t + k] for k in K)"},
    loss={"upstream": "y"},
    backward={"gpad": "pad(grad_y, ((K - 1, K - 1),))", "S[k]": "sum(grad_y[t] * x[t + k] for t in T)"},
    claims={"grad_x[t]": "sum(w[k] * gpad[t + K - 1 - k] for k in K)", "grad_w": "S"},
)


def test_index_form_claims_and_helpers_full_convolution(tmp_path) -> None:
    """grad_x of a valid conv1d is a full convolution with the flipped kernel (an index-form claim
    reading a padded [backward] helper with a negative coefficient); unflipped, it is refuted."""
    assert verdicts(check_text(tmp_path, CONV1D, FAST)) == {"grad_x": "proved", "grad_w": "proved"}
    wrong = CONV1D.replace("gpad[t + K - 1 - k]", "gpad[t + k]") + '\n[expect]\ngrad_x = "refuted"\n'
    assert verdicts(check_text(tmp_path, wrong, FAST))["grad_x"] == "refuted"


@pytest.mark.parametrize(
    "claim, words",
    [
        ("sum(w[k] * grad_y[t - k] for k in K)", "the index t - k runs from -K + 1"),  # read outside: pad first
        ("sum(w[k] * gpad[t + K - k] for k in K)", "past the last index"),
    ],
)
def test_an_index_form_read_outside_an_axis_is_a_load_error(tmp_path, claim: str, words: str) -> None:
    text = CONV1D.replace("sum(w[k] * gpad[t + K - 1 - k] for k in K)", claim)
    result = check_text(tmp_path, text, FAST)
    assert verdicts(result)["grad_x"] == "shape-error"
    (c,) = [c for c in result.claims if c.name == "grad_x"]
    assert words in c.message and "pad first" in c.message


def test_several_for_clauses_in_one_sum(tmp_path) -> None:
    text = derivation_toml(
        dims={"n": "rows", "m": "columns"},
        inputs={"A": ["n", "m"], "v": '{ shape = ["m"], constant = true }'},
        forward={"s": "sum(A * A)"},
        loss={"E": "s"},
        backward={"r[i]": "sum(A[i, j] * v[j] for j in m)"},
        claims={"grad_A[i, j]": "2 * A[i, j] + sum(A[p, q] * v[q] * r[p] for p in n for q in m) * 0"},
    )
    assert verdicts(check_text(tmp_path, text, FAST)) == {"grad_A": "proved"}


@pytest.mark.parametrize(
    "text, words",
    [
        ("view(X, (B, n))", "write reshape(X, (B, T, C)) instead"),
        ("index_add(X, x, n)", "write scatter_add(S, I, V) instead"),
        ("X[range(n), x]", "take_along_axis(L, y[:, None], axis=1)"),
        ("cat([X, X], axis=0)", "concat([A, B], axis=k)"),
    ],
)
def test_unsupported_spellings_say_what_to_write_instead(text: str, words: str) -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression(text, scope())
    assert words in str(info.value)


NLL = derivation_toml(
    dims={"B": "rows", "K": "classes"},
    inputs={"Z": ["B", "K"], "y": '{ shape = ["B"], domain = "index", range = "K" }', "W": ["B", "K"]},
    forward={"L": "log_softmax(Z, axis=1)", "picked[b]": "L[b, y[b]]"},
    loss={"E": "-mean(picked)"},
    claims={"grad_Z": "(softmax(Z, axis=1) - one_hot(y, K)) / B"},
)


def test_an_integer_input_as_an_index_form_subscript(tmp_path) -> None:
    """logp[b, y[b]]: the labels pick one entry per row in index form (SPEC §6.1)."""
    assert verdicts(check_text(tmp_path, NLL, FAST)) == {"grad_Z": "proved"}
    wrong = NLL.replace("one_hot(y, K)) / B", "one_hot(y, K))") + '\n[expect]\ngrad_Z = "refuted"\n'
    assert verdicts(check_text(tmp_path, wrong, FAST)) == {"grad_Z": "refuted"}


@pytest.mark.parametrize(
    "change, words",
    [
        (('range = "K"', 'range = "B"'), "y takes values in 0 … B - 1 but indexes an axis of K entries"),
        (("L[b, y[b]]", "L[b, W[b, b]]"), "must be an integer input"),
    ],
)
def test_a_lookup_subscript_must_be_an_integer_input_of_the_axis_range(tmp_path, change, words) -> None:
    result = check_text(tmp_path, NLL.replace(*change), FAST)
    assert result.status == "error" and words in (result.error or ""), result.error


def test_an_index_range_past_the_indexed_axis_is_a_located_error(tmp_path) -> None:
    """The shapes agree over names, but y drawn in 0 … W-1 reaches past C's V rows: a file error at the
    definition, never an internal error."""
    text = """
[derivation]
title = "embedding with a range that is not C's first dim"
[dims]
V = "vocabulary"
E = "embedding"
B = "batch"
W = "another dim"
[inputs]
C = ["V", "E"]
y = { shape = ["B"], domain = "index", range = "W" }
[forward]
h = "C[y]"
[loss]
upstream = "h"
[claims]
grad_C = "scatter_add(grad_h, y, V)"
[check]
max_dim = 6
"""
    result = check_text(tmp_path, text, Options(trials=8, shapes=1))
    assert result.status == "error", result
    assert "[forward.h]" in result.error and "range" in result.error and "internal error" not in result.error
