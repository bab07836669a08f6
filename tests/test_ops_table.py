"""The op table is the one place an op lives: an op registered there alone (no other module
touched) is parsed, shaped, evaluated, differentiated, proved, derived, printed, explained and
bounded; and the modules that used to keep per-op lists now name no op."""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import check_text, derivation_toml, verdicts

import backpropcheck
from backpropcheck.checker import Options
from backpropcheck.lang.dims import Dim
from backpropcheck.lang.ir import Call, Var
from backpropcheck.lang.ops import AXIS1, ELEMENTWISE, OPS, Op, dense, sig

# ---------------------------------------------------------------------------
# a temporary op, registered by the test alone: centre(X, axis=k) = X - mean(X, axis=k, keepdims=True)


def _centre(a, axis=None):
    """The count is an exact integer, so a SymPy entry stays rational."""
    count = math.prod(np.shape(a)) if axis is None else np.shape(a)[axis]
    return a - np.sum(a, axis=axis, keepdims=True) / count


def _centre_adjoint(cx, g, out, a, axis=None):
    """The centring is a symmetric projection: its adjoint is itself."""
    return (Call(0, "centre", (cx.full(g, cx.shape(out)),), {"axis": axis}),)


NOTE = "a centring (I − 11ᵀ/N along the axis): symmetric, so its transpose centres the gradient"
WORK = Dim.lit(7)  # a stand-in iteration axis: the checker must count what the table says

CENTRE = Op(
    "centre",
    lambda a, axis=None, **_: a,
    _centre,
    lambda g, out, a, axis=None: (_centre(g, axis),),
    params=("axis",),
    tangent=lambda args, out, params, tans: _centre(dense(tans[0]), params.get("axis")),
    signature=sig("X", AXIS1),
    adjoint=_centre_adjoint,
    rational=True,
    note=NOTE,
    work=lambda shapes, out, **_: tuple(out) + (WORK,),
)

def _row_op_file(title: str, name: str, value: str, claim: str) -> str:
    """A (B, d) input weighted per feature, one row-wise op ``name = value``, then ``sum(tanh(name))``."""
    return derivation_toml(title=title, dims={"B": "batch", "d": "features"}, inputs={"X": ["B", "d"], "w": ["d"]},
                           forward={name: value}, loss={"E": f"sum(tanh({name}))"}, claims={"grad_X": claim})


CENTRED = _row_op_file("a row centring registered by a test", "C", "centre(X * w, axis=1)",
                       "centre(grad_C, axis=1) * w")


@pytest.fixture
def centre(monkeypatch):
    monkeypatch.setitem(OPS, "centre", CENTRE)
    return CENTRE


@pytest.mark.parametrize("symbolic", [False, True])
def test_an_op_registered_alone_is_checked_and_a_slip_through_it_refuted(tmp_path, centre, symbolic: bool) -> None:
    options = Options(trials=3, shapes=2, symbolic=symbolic)
    right = "proved" if symbolic else "verified"
    assert verdicts(check_text(tmp_path, CENTRED, options)) == {"grad_X": right}
    wrong = CENTRED.replace('"centre(grad_C, axis=1) * w"', '"grad_C * w"')  # the centring's own Jacobian dropped
    assert verdicts(check_text(tmp_path, wrong, options, name="wrong.toml")) == {"grad_X": "refuted"}


def test_an_op_registered_alone_is_derived_printed_and_explained(centre) -> None:
    """derive reads its adjoint template and prints it from its signature; the step's note is its own."""
    from backpropcheck.derive import derive

    result = derive(CENTRED)
    derived = {c.name: c for c in result.claims}
    assert derived["grad_X"].expr == "centre(grad_C, axis=1) * w"
    assert derived["grad_X"].verdict == "proved"
    assert any(NOTE in s.note and s.op == "centre" for s in derived["grad_X"].steps)


def test_an_op_registered_alone_is_read_by_dimuse_workload_and_explain(centre) -> None:
    from backpropcheck import workload
    from backpropcheck.dimuse import _non_rational
    from backpropcheck.explain import jacobian_note
    from backpropcheck.limits import Limits
    from backpropcheck.loader import loads

    call = Call(0, "centre", (Var(0, "X"),), {"axis": 1})
    assert not _non_rational(call)  # rational=True: a dim through it stays rational
    assert jacobian_note("centre", {"axis": 1}, 0, [(Dim.of("B"), Dim.of("d"))]) == NOTE
    d = loads(CENTRED, "centred.toml")
    products: list = []
    workload.spaces(d, d.claims, Limits(), products)
    assert ("forward.C", (Dim.of("B"), Dim.of("d"), WORK)) in products
    assert ("claims.grad_X", (Dim.of("B"), Dim.of("d"), WORK)) in products
    # without a work rule in the table, nothing is counted beyond the entries
    OPS["centre"] = replace(CENTRE, work=None)
    products.clear()
    workload.spaces(d, d.claims, Limits(), products)
    assert products == []


# ---------------------------------------------------------------------------
# var, the op added this way: a per-row variance, as layer norm takes it

SPREAD = _row_op_file("a per-row spread through var", "v", "var(X * w, axis=1)",
                      "2 * grad_v[:, None] * (X * w - mean(X * w, axis=1, keepdims=True)) / d * w")
RIGHT = '/ d * w"'
WRONG = '/ B * w"'  # the count of the wrong axis


@pytest.mark.parametrize("symbolic", [False, True])
def test_var_a_right_claim_holds_and_the_wrong_count_is_refuted(tmp_path, symbolic: bool) -> None:
    options = Options(trials=3, shapes=2, symbolic=symbolic)
    assert verdicts(check_text(tmp_path, SPREAD, options)) == {"grad_X": "proved" if symbolic else "verified"}
    assert RIGHT in SPREAD
    wrong = check_text(tmp_path, SPREAD.replace(RIGHT, WRONG), options, name="wrong.toml")
    assert verdicts(wrong) == {"grad_X": "refuted"}


def test_var_derive_writes_its_gradient_and_it_is_proved() -> None:
    from backpropcheck.derive import derive

    derived = {c.name: c for c in derive(SPREAD).claims}
    assert derived["grad_X"].expr == "(2 * grad_v)[:, None] * (X * w - mean(X * w, axis=1, keepdims=True)) * w / d"
    assert derived["grad_X"].verdict == "proved"


def test_var_is_numpys_population_variance() -> None:
    x = np.random.default_rng(3).normal(size=(3, 4, 2))
    for axis in (None, 0, 2, (0, 2)):
        for keepdims in (False, True):
            np.testing.assert_allclose(OPS["var"].numeric(x, axis=axis, keepdims=keepdims),
                                       np.var(x, axis=axis, keepdims=keepdims), rtol=1e-12)


# ---------------------------------------------------------------------------
# the modules that kept per-op lists name no op now


@pytest.mark.parametrize("module", ["lang/shapes.py", "engines/evaluate.py", "engines/numeric.py", "engines/directional.py",
                                    "engines/scope.py", "workload.py", "dimuse.py", "diagnose.py",
                                    "explain/opnotes.py", "explain/analysis.py", "explain/verdict.py"])
def test_the_walkers_name_no_op(module: str) -> None:
    """Per-op knowledge lives in the op table: these modules compare no op name (a string literal
    naming an op, docstrings aside)."""
    root = Path(backpropcheck.__file__).parent
    names = set(OPS) | set(ELEMENTWISE)
    tree = ast.parse((root / module).read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = {n.value for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings}
    assert not found & names, (module, found & names)


def test_derive_prints_calls_only_through_the_table() -> None:
    """derive's printer spells the parser's operators itself and every call by the table's spell:
    no op it prints as a call is named in it."""
    from backpropcheck.derive import tree

    source = Path(tree.__file__).read_text(encoding="utf-8")
    printer = source[source.index("def _text("):source.index("# shapes, and the context")]
    named = {n.value for n in ast.walk(ast.parse(printer)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    calls = {name for name, op in OPS.items() if op.signature is not None or op.text is not None}
    assert not named & calls, named & calls
