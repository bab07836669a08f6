"""Shape inference over dim names, and the messages a wrong shape gets."""

from __future__ import annotations

import pytest
from conftest import DENSE_INDEX, load_text, with_claims

from backpropcheck.errors import ShapeError
from backpropcheck.lang.dims import Dim, Shape, parse_dim
from backpropcheck.lang.ops import ShapeMismatch, broadcast
from backpropcheck.lang.parse import Scope, parse_expression, parse_index_definition
from backpropcheck.lang.shapes import infer, infer_index

DIMS = {"n": "", "m": "", "B": "", "T": "", "K": ""}


def shape(*names: str | int) -> Shape:
    return tuple(parse_dim(x, DIMS) for x in names)


ENV: dict[str, Shape] = {
    "W": shape("m", "n"),
    "V": shape("n", "n"),
    "a": shape("n"),
    "b": shape("m"),
    "X": shape("n", "B"),
    "Z": shape("m", "B"),
    "s": shape(),
    "r": shape(1, "B"),
    "x": shape("T + K - 1"),
    "w": shape("K"),
    "grad_z": shape("m"),
}


def infer_text(text: str) -> Shape:
    node = parse_expression(text, Scope(tensors=set(ENV), dims=set(DIMS), functions={"f"}))
    return infer(node, ENV)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("W @ a", ("m",)),
        ("W @ X", ("m", "B")),
        ("b @ W", ("n",)),
        ("a @ a", ()),
        ("dot(a, a)", ()),
        ("W.T", ("n", "m")),
        ("a.T", ("n",)),
        ("W @ a + b", ("m",)),
        ("Z + b[:, None]", ("m", "B")),
        ("Z * r", ("m", "B")),
        ("b[None, :]", (1, "m")),
        ("s * W", ("m", "n")),
        ("2 * W - 1", ("m", "n")),
        ("outer(b, a)", ("m", "n")),
        ("sum(Z)", ()),
        ("sum(Z, axis=0)", ("B",)),
        ("sum(Z, axis=1)", ("m",)),
        ("sum(Z, axis=-1)", ("m",)),
        ("sum(Z, axis=0, keepdims=True)", (1, "B")),
        ("sum(Z, keepdims=True)", (1, 1)),
        ("mean(X, axis=1)", ("n",)),
        ("softmax(Z, axis=0)", ("m", "B")),
        ("log_softmax(Z, axis=1)", ("m", "B")),
        ("logsumexp(Z, axis=0)", ("B",)),
        ("trace(V)", ()),
        ("diag(a)", ("n", "n")),
        ("diag(V)", ("n",)),
        ("eye(n)", ("n", "n")),
        ("ones(B)", ("B",)),
        ("zeros([m, 3])", ("m", 3)),
        ("tanh(W) * f(W)", ("m", "n")),
        ("where(Z > 0, Z, 0)", ("m", "B")),
        ("maximum(a, 0)", ("n",)),
        ('einsum("ij,j->i", W, a)', ("m",)),
        ('einsum("mb,nb->mn", Z, X)', ("m", "n")),
        ('einsum("ij->", W)', ()),
        ("sum(X) / B", ()),
        ("a ** 2", ("n",)),
    ],
)
def test_inferred_shapes(text: str, expected: tuple) -> None:
    assert infer_text(text) == shape(*expected)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("W @ b", "multiplies an (m, n) matrix by an (m,) vector"),
        ("a @ W", "multiplies an (n,) vector by an (m, n) matrix"),
        ("W @ W", "the inner dims n and m differ"),
        ("s @ a", "not scalars"),
        ("a + b", "(n,) and (m,) do not broadcast"),
        ("Z + b", "do not broadcast"),  # trailing axes align: B against m
        ("X + Z", "n and m differ"),
        ("outer(W, a)", "outer takes two vectors"),
        ("trace(W)", "square matrix"),
        ("diag(W)", "vector or a square matrix"),
        ("sum(Z, axis=2)", "axis 2 is out of range"),
        ("softmax(a, axis=1)", "out of range"),
        ('einsum("ij,i->j", W, a)', "index i is both m and n"),
        ('einsum("ij,j", W, a)', "explicit output"),
        ('einsum("ii->i", V)', "repeats an index"),
        ('einsum("ijk,j->i", W, a)', "has 3 indices but rank 2"),
        ('einsum("ij,j->k", W, a)', "output index k is in no operand"),
        ("X[:, :, None, :]", "too many ':'"),
    ],
)
def test_shape_errors_are_located_and_worded(text: str, words: str) -> None:
    with pytest.raises(ShapeError) as info:
        infer_text(text)
    assert words in str(info.value)
    assert info.value.column is not None and info.value.column >= 1


def test_shape_error_column_points_at_the_failing_operation() -> None:
    with pytest.raises(ShapeError) as info:
        infer_text("b + W @ b")
    assert info.value.column == 5
    assert "`W @ b`" in info.value.message


def test_names_not_sizes_decide() -> None:
    # W (m, n) @ b (m,) is wrong even in a trial where m == n
    with pytest.raises(ShapeError):
        infer_text("W @ b")
    # a square matrix with one dim name is fine either way round
    assert infer_text("V @ a") == infer_text("V.T @ a") == shape("n")


def test_matmul_hint_names_the_matrix_to_transpose() -> None:
    with pytest.raises(ShapeError) as info:
        infer_text("W @ b")
    assert info.value.hint is not None
    assert "W.T" in info.value.hint and "W.T @ b" in info.value.hint


def test_broadcast_rules() -> None:
    n, m, one = Dim.of("n"), Dim.of("m"), Dim.lit(1)
    assert broadcast((n,), (n,)) == (n,)
    assert broadcast((m, n), (n,)) == (m, n)
    assert broadcast((m, one), (one, n)) == (m, n)
    assert broadcast((), (m, n)) == (m, n)
    assert broadcast((one,), (one,)) == (one,)
    with pytest.raises(ShapeMismatch):
        broadcast((m, n), (m,))
    with pytest.raises(ShapeMismatch):
        broadcast((n,), (n + one,))


# -- the SPEC §1.2 messages, through the loader ------------------------------------------


def test_spec_1_2_wrong_grad_a_message_and_hint() -> None:
    d = load_text(with_claims(DENSE_INDEX, {"grad_a": "W.T @ grad_z"}))
    (c,) = d.claims
    assert isinstance(c.error, ShapeError)
    text = str(c.error)
    assert "`W.T @ grad_z` multiplies an (m, n) matrix by an (m,) vector" in text
    assert c.error.hint is not None
    assert "with W of shape (n, m)" in c.error.hint
    assert "`W`" in c.error.hint and "W @ grad_z" in c.error.hint


def test_claim_shape_message_transposed_layout() -> None:
    d = load_text(with_claims(DENSE_INDEX, {"grad_W": "outer(grad_z, a)"}))
    (c,) = d.claims
    assert isinstance(c.error, ShapeError)
    assert "the claim is (m, n), W is (n, m)" in c.error.message
    assert "transposed layout" in c.error.message


def test_claim_shape_message_missing_sum_over_the_batch() -> None:
    from conftest import SOFTMAX_REGRESSION

    d = load_text(with_claims(SOFTMAX_REGRESSION, {"grad_b": "(P - Y) / B"}))
    (c,) = d.claims
    assert isinstance(c.error, ShapeError)
    assert "the claim is (k, B), b is (k,)" in c.error.message
    assert "missing sum over B" in c.error.message


def test_claim_shape_message_scalar_for_an_array() -> None:
    d = load_text(with_claims(DENSE_INDEX, {"grad_z": "grad_h @ f_prime(z)"}))
    (c,) = d.claims
    assert isinstance(c.error, ShapeError)
    assert "a scalar where the gradient is an array" in c.error.message


# -- index form ---------------------------------------------------------------------------


def _index(text: str, free: tuple[str, ...]):
    index = parse_index_definition(text, free, Scope(tensors=set(ENV), dims=set(DIMS)))
    return index, infer_index(index, ENV, DIMS)


def test_index_form_ranges_follow_from_the_shapes() -> None:
    index, result = _index("sum(W[j, i] * a[i] for i in n) + b[j]", ("j",))
    assert result == shape("m")
    assert index.ranges == {0: Dim.of("m"), 1: Dim.of("n")}


def test_index_form_affine_ranges_for_a_valid_convolution() -> None:
    index, result = _index("sum(w[k] * x[t + k] for k in K)", ("t",))
    # x has T + K - 1 entries and k runs over K, so t runs over T
    assert result == shape("T")
    assert index.ranges[0] == Dim.of("T")


def test_index_form_two_free_indices() -> None:
    _, result = _index("W[i, j] * a[j]", ("i", "j"))
    assert result == shape("m", "n")


@pytest.mark.parametrize(
    ("text", "free", "words"),
    [
        ("W[j] * 2", ("j",), "uses 1 index(es) but W has shape (m, n)"),
        ("a[j] + b[j]", ("j",), "ranges over both"),
        ("2 * s", ("j",), "does not follow from the shapes"),
        ("a[j] * a", ("j",), "must be a scalar expression"),
        ("sum(W[i, i] for i in n)", (), "ranges over n but indexes `W[i, i]` where that axis has m entries"),
    ],
)
def test_index_form_errors(text: str, free: tuple[str, ...], words: str) -> None:
    with pytest.raises(ShapeError) as info:
        _index(text, free)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("text", "free", "words"),
    [
        ("a[j] + a[j + 1]", ("j",), "the index j + 1 runs from 1 to n, past the last index n - 1 of that axis of a"),
        ("sum(a[i + 1] for i in n)", (), "past the last index n - 1"),
    ],
)
def test_index_form_positions_must_stay_inside_for_every_size(text: str, free: tuple[str, ...], words: str) -> None:
    with pytest.raises(ShapeError) as info:
        _index(text, free)
    assert words in str(info.value)


def test_a_shifted_index_whose_range_follows_from_the_shift_is_in_range() -> None:
    assert _index("a[j + 1]", ("j",))[1] == (Dim.of("n") - Dim.lit(1),)
