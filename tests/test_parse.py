"""The expression language: every SPEC §2 construct parses; everything else is a located error."""

from __future__ import annotations

import pytest

from backpropcheck.errors import DerivationError, LimitError
from backpropcheck.lang.ir import Call, Const, DimSize, IndexRef, IndexSum, Var, names_used, walk
from backpropcheck.lang.ops import ELEMENTWISE
from backpropcheck.lang.parse import (
    Scope,
    parse_expression,
    parse_index_definition,
    parse_index_key,
)


def scope(**overrides: object) -> Scope:
    base = {
        "tensors": {"W", "a", "b", "X", "Z", "Y", "v", "x", "w", "grad_z", "C"},
        "dims": {"n", "m", "B", "T", "K", "d"},
        "functions": {"f", "g"},
        "hint_names": {"grad_h"},
    }
    base.update(overrides)
    return Scope(**base)  # type: ignore[arg-type]


SPEC_CONSTRUCTS = [
    "W @ a",
    "W @ X",
    "a @ W.T",
    "a @ a",
    "a * b",
    "a / b",
    "a + b",
    "a - b",
    "-a",
    "+a",
    "a ** 2",
    "a ** -1.5",
    "a ** 0.5",
    "W.T",
    "a.T",
    "X[:, None]",
    "a[None, :]",
    "sum(X, axis=1)[:, None]",
    "outer(a, b)",
    "dot(a, b)",
    "diag(a)",
    "diag(W)",
    "eye(n)",
    "ones(n)",
    "zeros(n)",
    "ones([n, m])",
    "zeros([n, 3])",
    "sum(X)",
    "sum(X, axis=0)",
    "sum(X, 0)",
    "mean(X)",
    "mean(X, axis=1, keepdims=True)",
    "sum(X, axis=-1, keepdims=False)",
    "trace(W)",
    *(f"{name}(a)" for name in ELEMENTWISE),
    *(f"{name}_prime(a)" for name in ELEMENTWISE),
    "f(a)",
    "f_prime(a)",
    "where(a > b, a, b)",
    "maximum(a, b)",
    "minimum(a, 0)",
    "a > b",
    "a >= b",
    "a < b",
    "a <= b",
    "softmax(X, axis=0)",
    "log_softmax(X, axis=1)",
    "logsumexp(X, axis=0)",
    "logsumexp(X, axis=0, keepdims=True)",
    'einsum("ij,j->i", W, a)',
    "einsum('ij,kj->ik', W, X)",
    "sum(X) / B",
    "1 / sqrt(d)",
    "(a + b) * 2",
    "2.5e-3 * a",
]


@pytest.mark.parametrize("text", SPEC_CONSTRUCTS)
def test_every_spec_construct_parses(text: str) -> None:
    node = parse_expression(text, scope())
    assert node.col >= 1
    assert node.src  # every node keeps its source for messages


def test_ir_of_a_dense_layer() -> None:
    node = parse_expression("W @ a + b", scope())
    assert isinstance(node, Call) and node.op == "add"
    left, right = node.args
    assert isinstance(left, Call) and left.op == "matmul"
    assert [type(x) for x in left.args] == [Var, Var]
    assert [x.name for x in left.args] == ["W", "a"]  # type: ignore[attr-defined]
    assert isinstance(right, Var) and right.name == "b" and right.col == 9
    assert names_used(node) == {"W", "a", "b"}


def test_ir_details() -> None:
    neg = parse_expression("-2", scope())
    assert isinstance(neg, Const) and neg.value == -2.0 and neg.text == "-2"
    size = parse_expression("B", scope())
    assert isinstance(size, DimSize) and size.dim == "B"
    power = parse_expression("a ** -1.5", scope())
    assert isinstance(power, Call) and power.op == "pow"
    assert power.params == {"exponent": -1.5, "text": "-1.5"}
    expand = parse_expression("X[:, None]", scope())
    assert isinstance(expand, Call) and expand.op == "expand" and expand.params["items"] == (":", None)
    reduce = parse_expression("mean(X, axis=1, keepdims=True)", scope())
    assert isinstance(reduce, Call) and reduce.params == {"axis": 1, "keepdims": True}
    positional = parse_expression("sum(X, 0)", scope())
    assert isinstance(positional, Call) and positional.params == {"axis": 0, "keepdims": False}
    ew = parse_expression("tanh_prime(a)", scope())
    assert isinstance(ew, Call) and ew.op == "elementwise" and ew.params == {"fn": "tanh", "prime": True}
    generic = parse_expression("f(a)", scope())
    assert isinstance(generic, Call) and generic.params == {"fn": "f", "prime": False}
    ein = parse_expression('einsum("ij,j->i", W, a)', scope())
    assert isinstance(ein, Call) and ein.params == {"spec": "ij,j->i"} and len(ein.args) == 2
    eye = parse_expression("eye(n)", scope())
    assert isinstance(eye, Call) and eye.params == {"shape": ("n",)} and eye.args == ()


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("W @ a + foo", 9, "unknown name 'foo'"),
        ("  W @ a + foo", 11, "unknown name 'foo'"),
        ("a + b.shape", 5, "attribute .shape"),
        ("a + (lambda: 1)()", 5, "only named functions"),
        ("a + [b]", 5, "a list"),
        ("a + b if a else b", 1, "conditional"),
        ("a and b", 1, "and/or"),
        ("a % b", 1, "the operator `%` is not allowed"),
        ("~a", 1, "the operator `~` is not allowed"),
        ("W^T @ grad_h", 1, "write W.T for a transpose"),  # in the file's words, not Python's "BitXor"
        ("a ^ 2", 1, "write x ** 2 for a power"),
        ("np.dot(W.T, a)", 1, "drop the `np.` prefix: write dot(...)"),
        ("numpy.outer(a, a)", 1, "drop the `numpy.` prefix: write outer(...)"),
        ("a == b", 1, "only >, >=, < and <="),
        ("a < b < W", 1, "chained"),
        ("a ** b", 6, "numeric literal"),
        ("a[0]", 1, "index-form"),
        ("a + 'text'", 5, "not a number"),
        ("a * True", 5, "not a number"),
        ("tanhh(a)", 1, "unknown function 'tanhh'"),
        ("__import__('os')", 1, "unknown function '__import__'"),
        ("a.__class__", 1, "attribute .__class__"),
        ("sum(X, axis=k)", 13, "small integer literal"),
        ("sum(X, keepdims=1)", 17, "keepdims must be True or False"),
        ("sum(X, foo=1)", 1, "only axis and keepdims"),
        ("softmax(X, keepdims=True)", 1, "only axis"),
        ("outer(a)", 1, "takes 2 argument"),
        ("tanh(a, b)", 1, "takes one argument"),
        ("tanh(a, axis=0)", 1, "no keyword"),
        ("tanh(*a)", 6, "*args"),
        ("einsum(W, a)", 1, "subscripts string first"),
        ("eye(n, m)", 1, "one dim name"),
        ("ones(q)", 6, "dim name or a positive integer"),
        ("sum(a for i in n)", 4, "index-form"),
        ("a @ tanh", 5, "is a function; call it"),
        ("f'{a}'", 1, "f-string"),
        ("a +", None, "syntax error"),
        ("(x := a)", 2, "walrus"),
        ("a + clip(b, 1, -1)", 5, "needs lo <= hi"),  # NumPy gives hi everywhere: the bounds swapped
    ],
)
def test_rejected_with_column(text: str, column: int | None, words: str) -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression(text, scope())
    assert words in str(info.value)
    if column is not None:
        assert info.value.column == column
        assert f"column {column}" in str(info.value)


def test_unknown_name_suggests_a_close_one() -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression("W.T @ grad_zz", scope())
    assert info.value.hint == "did you mean 'grad_z'?"
    assert "did you mean 'grad_z'?" in str(info.value)


def test_unknown_name_suggests_from_hint_names() -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression("grad_hh * a", scope())
    assert "did you mean 'grad_h'?" in str(info.value)


def test_unknown_function_suggests_a_close_one() -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression("sigmoidd(a)", scope())
    assert "did you mean 'sigmoid'?" in str(info.value)
    with pytest.raises(DerivationError) as info:
        parse_expression("tanh_prme(a)", scope())
    assert "did you mean 'tanh_prime'?" in str(info.value)


def test_unknown_name_without_a_close_one_has_no_hint() -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression("qqqqqqq", scope())
    assert info.value.hint is None


def test_prime_is_rejected_where_not_allowed() -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression("f_prime(a)", scope(allow_prime=False))
    assert "is a derivative" in str(info.value)
    with pytest.raises(DerivationError):
        parse_expression("tanh_prime(a)", scope(allow_prime=False))


def test_undeclared_generic_function_is_unknown() -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression("h(a)", scope())
    assert "unknown function 'h'" in str(info.value)
    assert "[functions]" in str(info.value)


def test_limits() -> None:
    with pytest.raises(LimitError) as info:
        parse_expression("a * 1e11", scope())
    assert "--max-literal" in str(info.value)
    with pytest.raises(LimitError) as info:
        parse_expression("a ** 100", scope())
    assert "--max-exponent" in str(info.value)
    with pytest.raises(LimitError):
        parse_expression("(" * 100 + "a" + ")" * 100, scope())
    with pytest.raises(LimitError):
        parse_expression("a + " * 1000 + "a", scope())


def test_non_string_expression() -> None:
    with pytest.raises(DerivationError) as info:
        parse_expression(3, scope())  # type: ignore[arg-type]
    assert "must be a string" in str(info.value)


# -- index form -----------------------------------------------------------------------


def test_parse_index_key() -> None:
    assert parse_index_key("z") is None
    assert parse_index_key("z[j]") == ("z", ("j",))
    assert parse_index_key("Xcol[t, k]") == ("Xcol", ("t", "k"))
    for bad in ("z[j, j]", "z[0]", "z[j", "f(x)[j]"):
        with pytest.raises(DerivationError):
            parse_index_key(bad)


def test_index_definition_of_the_spec_dense_layer() -> None:
    sc = scope()
    index = parse_index_definition("sum(W[i, j] * a[i] for i in n) + b[j]", ("j",), sc)
    assert index.free == ("j",)
    assert index.rank == 2  # j, then the summed i
    assert index.bound_dims == {1: "n"}
    sums = [node for node in walk(index.body) if isinstance(node, IndexSum)]
    assert len(sums) == 1 and sums[0].index == "i" and sums[0].dim == "n" and sums[0].axis == 1
    refs = {node.src: node for node in walk(index.body) if isinstance(node, IndexRef)}
    assert set(refs) == {"W[i, j]", "a[i]", "b[j]"}
    assert refs["W[i, j]"].axes == {"i": 1, "j": 0}


def test_index_definition_affine_subscript() -> None:
    index = parse_index_definition("sum(w[k] * x[t + k] for k in K)", ("t",), scope())
    ref = next(n for n in walk(index.body) if isinstance(n, IndexRef) and n.name == "x")
    assert ref.subscripts[0].terms == (("k", 1), ("t", 1))
    assert ref.subscripts[0].const == 0
    shifted = parse_index_definition("x[t + 2] - x[2*t]", ("t",), scope())
    subs = [n.subscripts[0] for n in walk(shifted.body) if isinstance(n, IndexRef)]
    assert {(s.terms, s.const) for s in subs} == {((("t", 1),), 2), ((("t", 2),), 0)}


def test_index_arithmetic_with_negative_coefficients_and_several_for_clauses() -> None:
    """SPEC §6.1: ``gpad[t + K - 1 - k]`` style subscripts, ``for p in P for q in Q`` in one sum."""
    d = parse_index_definition("sum(x[t - k] * W[p, q] for k in K for p in n for q in m)", ("t",), scope())
    sums = [n for n in walk(d.body) if isinstance(n, IndexSum)]
    assert [s.index for s in sums] == ["k", "p", "q"] and d.rank == 4
    (ref,) = [n for n in walk(d.body) if isinstance(n, IndexRef) and n.name == "x"]
    assert dict(ref.subscripts[0].terms) == {"k": -1, "t": 1}


@pytest.mark.parametrize(
    ("text", "free", "words"),
    [
        ("j * b[j]", ("j",), "only be used inside a subscript"),
        ("b[q]", ("j",), "not an index here"),
        ("b[j - k]", ("j",), "not an index here"),
        ("b[j * j]", ("j",), "affine expression of indices"),
        ("sum(W[i, j] for i in q)", ("j",), "ranges over a dim name"),
        ("sum(W[i, j] for i in n if i)", ("j",), "no conditions"),
        ("sum(W[j, j] for j in n)", ("j",), "already in use"),
        ("sum(W[i, j] for i, k in n)", ("j",), "single name"),
        ("tanh(a)[j]", ("j",), "named tensor"),
        ("b[j]", ("n",), "shadows"),
    ],
)
def test_index_definition_rejects(text: str, free: tuple[str, ...], words: str) -> None:
    with pytest.raises(DerivationError) as info:
        parse_index_definition(text, free, scope())
    assert words in str(info.value)
