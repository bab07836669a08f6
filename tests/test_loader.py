"""Loader validation: every mistake in a file is a DerivationError naming file, key and column."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    BUNDLED,
    DENSE_COLUMN,
    DENSE_INDEX,
    SOFTMAX_REGRESSION,
    dense_toml,
    derivation_toml,
    load_text,
    with_claims,
)

from backpropcheck.errors import DerivationError, LimitError, ShapeError
from backpropcheck.lang.dims import Dim
from backpropcheck.loader import load, loads

NAME = "some/dir/bad_file.toml"


def base(**changes: object) -> str:
    """A small valid derivation (conftest's dense layer); keyword arguments replace whole tables."""
    return dense_toml(**{"title": "a test derivation", **changes})


def error_of(text: str) -> DerivationError:
    with pytest.raises(DerivationError) as info:
        loads(text, NAME)
    return info.value


def assert_located(exc: DerivationError, key: str, words: str, column: int | None = None) -> None:
    text = str(exc)
    assert exc.file == NAME and NAME in text, text
    assert exc.key == key and f"[{key}]" in text, text
    assert words in text, text
    if column is not None:
        assert exc.column == column and f"column {column}" in text, text


# -- valid files -------------------------------------------------------------------------


def test_loads_the_spec_seed_example() -> None:
    d = load_text(DENSE_COLUMN)
    assert d.title == "Dense layer, column vectors"
    assert list(d.dims) == ["n", "m"]
    assert d.inputs["W"].shape == (Dim.of("m"), Dim.of("n"))
    assert d.functions == {"f"}
    assert [f.name for f in d.forward] == ["z", "h"]
    assert d.forward[0].shape == (Dim.of("m"),)
    assert d.loss.upstream == ("h",) and d.loss.expression is None
    assert [(c.name, c.target, c.expected) for c in d.claims] == [
        ("grad_z", "z", "holds"), ("grad_a", "a", "holds"), ("grad_W", "W", "holds"), ("grad_b", "b", "holds")
    ]
    assert all(c.error is None for c in d.claims)
    assert d.differentiable == ["a", "W", "b", "z", "h"]
    assert d.shape_of("grad_W") == d.shape_of("W")


def test_loads_index_form_and_a_real_loss() -> None:
    d = load_text(DENSE_INDEX)
    z = d.forward[0]
    assert z.name == "z" and z.index is not None and z.node is None
    assert z.shape == (Dim.of("m"),)
    s = load_text(SOFTMAX_REGRESSION)
    assert s.loss.expression is not None and s.loss.text == "-sum(Y * log(P)) / B"
    y = s.inputs["Y"]
    assert (y.domain, y.axis, y.constant) == ("simplex", 0, True)
    assert "Y" not in s.differentiable


def test_expect_check_backward_and_affine_dims() -> None:
    text = derivation_toml(
        dims={"T": "positions", "K": "taps"},
        inputs={"x": ["T + K - 1"], "w": ["K"], "p": '{ shape = ["K"], domain = "positive", axis = -1 }'},
        forward={"y[t]": "sum(w[k] * x[t + k] for k in K)", "q": "sum(log(p))"},
        loss={"upstream": ["y", "q"]},
        backward={"G": "grad_y * 2"},
        claims={"grad_w": "sum(w) * 0", "grad_p": "grad_q / p"},
        expect={"grad_w": "refuted"},
        check={"seed": 3, "trials": 4, "shapes": 1, "max_dim": 9, "rtol": 1e-6, "atol": 0},
    )
    d = load_text(text)
    assert d.inputs["x"].shape == (Dim.of("K") + Dim.of("T") - Dim.lit(1),)
    assert d.inputs["p"].axis == 0  # -1 of a rank-1 shape
    assert d.loss.upstream == ("y", "q")
    assert [b.name for b in d.backward] == ["G"]
    assert d.claims[0].expected == "refuted" and d.claims[1].expected == "holds"
    assert (d.check.seed, d.check.trials, d.check.shapes, d.check.max_dim) == (3, 4, 1, 9)
    assert d.check.rtol == 1e-6 and d.check.atol == 0


def test_claim_uses_follow_backward_helpers() -> None:
    d = load_text(base(backward={"D": "grad_h * tanh_prime(z)"}, claims={"grad_z": "D", "grad_b": "D * 1"}))
    assert d.claims[0].uses >= {"D", "grad_h", "z"}


@pytest.mark.parametrize("path", sorted(BUNDLED.rglob("*.toml")), ids=lambda p: p.name)
def test_every_bundled_derivation_loads_without_claim_errors_unless_expected(path: Path) -> None:
    d = load(path)
    for c in d.claims:
        if c.error is not None:
            assert c.expected == "shape-error", f"{path.name} {c.name}: {c.error}"


# -- invalid files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (base() + "\n[extra]\nx = 1\n", "extra", "unknown table [extra]"),
        (base() + "\n[claim]\nx = 1\n", "claim", "did you mean 'claims'?"),
        (base(dims={}), "dims", "at least one dim"),
        (base(forward={}), "forward", "at least one variable"),
        (base(claims={}), "claims", "at least one claim"),
        (base().replace('title = "a test derivation"', 'title = "t"\ntitel = "x"'), "derivation.titel",
         "did you mean 'title'?"),
        (base().replace('title = "a test derivation"', "title = 3"), "derivation.title", "must be a string"),
        (base().replace('title = "a test derivation"', 'title = ""'), "derivation.title", "title is required"),
        (base().replace('title = "a test derivation"', 'title = "t"\nreferences = "x"'), "derivation.references",
         "list of strings"),
        (base(dims={"n": "inputs", "m": 3}), "dims.m", "a short description"),
        (base(dims={"n": "", "m": "", "1x": ""}), "dims.1x", "not a valid name"),
        (base(dims={"n": "", "m": "", "tanh": ""}), "dims.tanh", "built-in function"),
        (base(dims={"n": "", "m": "", "grad_q": ""}), "dims.grad_q", "reserved for gradients"),
        (base(dims={"n": "", "m": "", "lambda": ""}), "dims.lambda", "not a valid name"),
        (base(inputs={"a": ["n"], "W": ["m", "q"], "b": ["m"]}), "inputs.W", "unknown dim 'q'"),
        (base(inputs={"a": ["n"], "W": "m", "b": ["m"]}), "inputs.W", "a shape list or a table"),
        (base(inputs={"a": ["n"], "W": ["m", "n"], "b": ["m"], "n": ["m"]}), "inputs.n", "defined twice"),
        (base(inputs={"a": '{ shape = ["n"], domian = "positive" }', "W": ["m", "n"], "b": ["m"]}),
         "inputs.a.domian", "did you mean 'domain'?"),
        (base(inputs={"a": '{ domain = "positive" }', "W": ["m", "n"], "b": ["m"]}), "inputs.a", "needs a shape"),
        (base(inputs={"a": '{ shape = ["n"], domain = "negative" }', "W": ["m", "n"], "b": ["m"]}),
         "inputs.a.domain", "unknown domain 'negative'"),
        (base(inputs={"a": '{ shape = ["n"], constant = "yes" }', "W": ["m", "n"], "b": ["m"]}),
         "inputs.a.constant", "true or false"),
        (base(inputs={"a": '{ shape = "n" }', "W": ["m", "n"], "b": ["m"]}), "inputs.a.shape", "list of dims"),
        (base(inputs={"a": '{ shape = ["n"], axis = 1 }', "W": ["m", "n"], "b": ["m"]}), "inputs.a.axis",
         "integer axis"),
        (base(inputs={"a": '{ shape = ["n"], domain = "onehot" }', "W": ["m", "n"], "b": ["m"]}), "inputs.a",
         "mark it constant"),
        (base(inputs={"a": ["n"], "W": ["m", "n"], "b": ["m"], "s": '{ shape = [], domain = "simplex" }'}),
         "inputs.s", "at least one axis"),
        (base(functions={"f": "scalar"}), "functions.f", 'declared "elementwise"'),
        (base(functions={"f_prime": "elementwise"}), "functions.f_prime", "comes with it"),
        (base(forward={"z": "W @ a + b", "z[j]": "b[j]"}), "forward.z[j]", "defined twice"),
        (base(forward={"z": "W @ a + b", "a": "z"}), "forward.a", "defined twice"),
        (base(forward={"z": "W @ a + b", "h": 3}), "forward.h", "a string expression"),
        (base(forward={"z": "W @ a + b", "h": "tanh_prime(z)"}), "forward.h", "is a derivative"),
        (base(forward={"z": "W @ a + b", "h": "tanh(grad_z)"}), "forward.h", "unknown name 'grad_z'"),
        (base(forward={"z": "W @ a + b", "h[": "z"}), "forward.h[", "neither a name nor an index form"),
        (base(loss={"E": "sum(h)", "upstream": "h"}), "loss", "exactly one of"),
        (base(loss={}), "loss", "exactly one of"),
        (base(loss={"upstraem": "h"}), "loss.upstraem", "did you mean 'upstream'?"),
        (base(loss={"upstream": "a"}), "loss.upstream", "'a' is not a forward variable"),
        (base(loss={"upstream": "hh"}), "loss.upstream", "did you mean 'h'?"),
        (base(loss={"upstream": ["h", "h"]}), "loss.upstream", "named twice"),
        (base(loss={"upstream": []}), "loss.upstream", "a forward variable's name"),
        (base(loss={"E": "h"}), "loss.E", "the loss must be a scalar, but it has shape (m,)"),
        (base(loss={"E": "sum(h) * tanh_prime(1)"}), "loss.E", "is a derivative"),
        (base(claims={"dz": "grad_h"}), "claims.dz", "named grad_X"),
        (base(claims={"grad_q": "grad_h"}), "claims.grad_q", "'q' is not an input or a forward variable"),
        (base(claims={"grad_zz": "grad_h"}), "claims.grad_zz", "did you mean 'z'?"),
        (base(claims={"grad_z": 1.5}), "claims.grad_z", "a string expression"),
        (base(expect={"grad_W": "refuted"}), "expect.grad_W", "'grad_W' is not a claim"),
        (base(expect={"grad_z": "fails"}), "expect.grad_z", "expect one of holds, refuted, shape-error"),
        (base(check={"trials": "many"}), "check.trials", "trials must be an integer at least 1"),
        (base(check={"seed": -1}), "check.seed", "seed must be at least 0, not -1"),
        (base(check={"shapes": 1.5}), "check.shapes", "shapes must be an integer at least 1"),
        (base(check={"trials": True}), "check.trials", "trials must be an integer at least 1"),
        (base(check={"rtol": "1e-7"}), "check.rtol", "rtol must be a number from 0 to 0.001"),
        (base(check={"atol": True}), "check.atol", "atol must be a number from 0 to 1e-06"),
        # a file may not switch off its own evidence (issue 10, point 1)
        (base(check={"trials": 0}), "check.trials", "trials must be at least 1, not 0"),
        (base(check={"shapes": 0}), "check.shapes", "shapes must be at least 1, not 0"),
        (base(check={"rtol": 1e300}), "check.rtol", "rtol must be from 0 to 0.001, not 1e+300"),
        (base(check={"atol": 1.0}), "check.atol", "atol must be from 0 to 1e-06, not 1.0"),
        (base(check={"tirals": 3}), "check.tirals", "did you mean 'trials'?"),
    ],
)
def test_invalid_file_names_file_and_key(text: str, key: str, words: str) -> None:
    assert_located(error_of(text), key, words)


def test_constant_input_cannot_be_claimed() -> None:
    text = base(inputs={"a": '{ shape = ["n"], constant = true }', "W": ["m", "n"], "b": ["m"]},
                claims={"grad_a": "W.T @ grad_z"})
    assert_located(error_of(text), "claims.grad_a", "'a' is a constant")


def test_grad_of_a_constant_is_unknown_in_a_claim() -> None:
    text = base(inputs={"a": '{ shape = ["n"], constant = true }', "W": ["m", "n"], "b": ["m"]},
                claims={"grad_W": "outer(grad_z, a) + 0 * grad_a[None, :]"})
    d = loads(text, NAME)
    err = d.claims[0].error
    assert err is not None and "'grad_a' does not exist: a is constant (constant = true), it has no gradient" in str(err)


@pytest.mark.parametrize(
    ("forward", "key", "words", "column"),
    [
        ({"z": "W @ a + foo"}, "forward.z", "unknown name 'foo'", 9),
        ({"z": "W @ a + bb"}, "forward.z", "did you mean 'b'?", 9),
        ({"z": "W @ a + b", "h": "tanh(z) + u", "u": "z * 2"}, "forward.h", "'u' is defined later", 11),
        ({"z": "W @ a + b + u", "u[j]": "b[j]"}, "forward.z", "'u' is defined later", 13),
        ({"z": "W @ a + b", "h": "W @ z"}, "forward.h", "multiplies an (m, n) matrix by an (m,) vector", 1),
        ({"z": "W @ a + b", "h": "tanh(z) + relu(a)"}, "forward.h", "do not broadcast", 1),
        ({"z": "W @ a + b", "h": "exp(z) + tahn(z)"}, "forward.h", "did you mean 'tanh'?", 10),
        ({"z": "W @ a + b", "h": "z ++"}, "forward.h", "syntax error", None),
        ({"z[j]": "sum(W[j, i] * a[k] for i in n for k in q)"}, "forward.z[j]", "ranges over a dim name", None),
        ({"z[j]": "sum(W[j, i] * a[i] for i in n) + b"}, "forward.z[j]", "must be a scalar expression", None),
        ({"z[j]": "W[j] + b[j]"}, "forward.z[j]", "uses 1 index(es) but W has shape (m, n)", None),
        ({"z[j]": "sum(W[j, i] * a[i] for i in n) + b[j]", "h[j]": "2.0"}, "forward.h[j]",
         "does not follow", None),
        ({"z[j]": "sum(W[j, i] * a[i] for i in m) + b[j]"}, "forward.z[j]",
         "the index 'i' ranges over m but indexes `W[j, i]` where that axis has n entries", 5),
    ],
)
def test_expression_errors_have_columns(forward: dict[str, str], key: str, words: str,
                                        column: int | None) -> None:
    text = base(forward=forward, loss={"upstream": list(forward)[0].split("[")[0]}, claims={"grad_b": "grad_b"})
    assert_located(error_of(text), key, words, column)


def test_claim_errors_are_kept_on_the_claim_with_location() -> None:
    d = loads(base(claims={"grad_z": "grad_h * tanh_prime(zz)", "grad_a": "W @ grad_z",
                           "grad_b": "grad_b"}), NAME)
    unknown, shape, itself = d.claims
    assert unknown.error is not None and not isinstance(unknown.error, ShapeError)
    assert_located(unknown.error, "claims.grad_z", "did you mean 'z'?", 21)
    assert isinstance(shape.error, ShapeError)
    assert_located(shape.error, "claims.grad_a", "multiplies an (m, n) matrix by an (m,) vector", 1)
    assert itself.error is not None and "uses grad_b itself" in str(itself.error)


def test_loader_error_messages_for_the_file_itself(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[derivation\ntitle = 1", encoding="utf-8")
    with pytest.raises(DerivationError) as info:
        load(bad)
    assert str(bad) in str(info.value) and "invalid TOML" in str(info.value)
    with pytest.raises(DerivationError) as info:
        load(tmp_path / "missing.toml")
    assert "missing.toml" in str(info.value) and "cannot read" in str(info.value)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"title = '\xe9'")
    with pytest.raises(DerivationError) as info:
        load(latin)
    assert "not UTF-8" in str(info.value)


def test_missing_required_tables() -> None:
    for table in ("derivation", "dims", "inputs", "forward", "loss", "claims"):
        text = base()
        start = text.index(f"[{table}]")
        end = text.find("\n[", start + 1)
        cut = text[:start] + (text[end + 1:] if end != -1 else "")
        exc = error_of(cut)
        assert f"the table [{table}] is missing" in str(exc)
        assert NAME in str(exc)


def test_table_that_is_not_a_table() -> None:
    exc = error_of('functions = "f"\n' + base())
    assert_located(exc, "functions", "must be a table")


def test_limits_are_errors_with_flags() -> None:
    many = {f"d{k}": "" for k in range(40)}
    with pytest.raises(LimitError) as info:
        loads(base(dims=many), NAME)
    assert "--max-dims" in str(info.value) and NAME in str(info.value)
    with pytest.raises(LimitError) as info:
        loads(base(inputs={"a": ["n"] * 9, "W": ["m", "n"], "b": ["m"]}), NAME)
    assert "--max-rank" in str(info.value)


def test_with_claims_helper_keeps_the_rest() -> None:
    d = load_text(with_claims(DENSE_COLUMN, {"grad_b": "grad_z"}, {"grad_b": "holds"}))
    assert [c.name for c in d.claims] == ["grad_b"]
    assert d.title == "Dense layer, column vectors"


def test_bundled_derivations_ship_with_the_installed_package() -> None:
    """In CI the package is installed from a wheel: every bundled file must be package data."""
    from importlib.resources import files

    shipped = files("backpropcheck") / "derivations"
    names = {p.name for p in shipped.iterdir() if p.name.endswith(".toml")}
    mistakes = {p.name for p in (shipped / "mistakes").iterdir() if p.name.endswith(".toml")}
    assert "dense_column.toml" in names and "softmax_regression_batch.toml" in names
    assert "f_prime_of_activation.toml" in mistakes
    if BUNDLED.is_dir():  # the checkout beside the tests: nothing may be left out of the wheel
        assert names == {p.name for p in BUNDLED.glob("*.toml")}
        assert mistakes == {p.name for p in (BUNDLED / "mistakes").glob("*.toml")}


# -- issue 14: a BOM, and a forward shape error's hint ---------------------------------------------------------


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Notepad writes a BOM before the first byte: the file is still the same derivation."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + DENSE_COLUMN.encode("utf-8"))
    d = load(path)
    assert d.title == "Dense layer, column vectors" and [c.name for c in d.claims][:2] == ["grad_z", "grad_a"]
    assert loads("\ufeff" + DENSE_COLUMN).title == "Dense layer, column vectors"


def test_a_forward_shape_error_gets_no_hint_about_the_gradient_flowing_back() -> None:
    exc = error_of(base(forward={"z": "W.T @ a + b", "h": "tanh(z)"}))
    assert isinstance(exc, ShapeError) and exc.key == "forward.z"
    assert "gradient" not in str(exc) and "flows back" not in str(exc)
    assert exc.hint is not None and "`W @ a` would fit" in exc.hint
    # a claim keeps it: that is where the gradient does flow back
    claim_error = load_text(base(claims={"grad_a": "W @ grad_h"})).claims[0].error
    assert claim_error is not None and "the gradient flows back through `W.T`" in str(claim_error)


@pytest.mark.parametrize("change, message", [
    # each message says what is wrong where a user looks for it (QA pass)
    (lambda t: "", "the file is empty: a derivation needs at least the tables [derivation]"),
    (lambda t: "   \n\t\n", "the file is empty"),
    (lambda t: t.replace('a = ["n"]', 'a = { shape = ["n"], domain = "postive" }'),
     "unknown domain 'postive' (one of real, positive, unit, simplex, onehot, index, binary) (hint: did you mean 'positive'?)"),
    (lambda t: t.replace('a = ["n"]', 'a = ["k"]'), "unknown dim 'k' (declare it in [dims])"),
    (lambda t: t.replace('a = ["n"]', 'a = ["k + 1"]'), "unknown dim 'k' in 'k + 1' (declare it in [dims])"),
])
def test_messages_for_common_slips(change, message: str) -> None:
    with pytest.raises(DerivationError) as caught:
        loads(change(DENSE_COLUMN), "d.toml")
    assert message in str(caught.value)


def test_a_file_that_is_not_utf8_names_the_line_and_column_of_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[derivation]\ntitle = "caf\xe9"\n')
    with pytest.raises(DerivationError, match="byte 0xe9 at line 2, column 13"):
        load(path)


def test_the_gradient_of_a_constant_is_named_as_such() -> None:
    """'unknown name grad_Y (hint: did you mean grad_Y?)' for a constant Y (QA pass)."""
    text = DENSE_COLUMN.replace('b = ["m"]', 'b = { shape = ["m"], constant = true }')
    d = loads(with_claims(text, {"grad_a": "W.T @ grad_z + 0 * grad_b"}), "d.toml")
    message = str(d.claims[0].error)
    assert "'grad_b' does not exist: b is constant (constant = true), it has no gradient" in message, message
    assert "did you mean 'grad_b'" not in message
