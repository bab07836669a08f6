"""explain: the Jacobian route is generated from the derivation, names each local Jacobian's
structure, stacks with shapes, and draws a refuted claim's mismatch."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from backpropcheck.checker import Options
from backpropcheck.explain import (
    Analysis,
    Explanation,
    explain_derivation,
    render_latex,
    render_markdown,
    select,
    small_sizes,
)
from backpropcheck.loader import load, loads

DERIVATIONS = Path(__file__).resolve().parent.parent / "backpropcheck" / "derivations"
FAST = Options(trials=2, shapes=1, timeout=5.0)
SIZES = {"n": 3, "m": 2}


def plain(e: Explanation) -> str:
    """Every paragraph and formula of an explanation, in its Unicode form."""
    out = []
    for b in e.blocks:
        for p in b.parts:
            out.append(p if isinstance(p, str) else p.text)
        if b.grid is not None:
            out.append(b.grid.caption)
        out.append("\n")
    return "".join(out)


def claim_text(d, name: str) -> str:
    return plain(select(explain_derivation(d, name, SIZES, FAST), "1234"))


@pytest.fixture(scope="module")
def column():
    return load(DERIVATIONS / "dense_column.toml")


@pytest.fixture(scope="module")
def index_form():
    return load(DERIVATIONS / "dense_index_convention.toml")


# -- the SPEC's dense examples, both conventions ------------------------------------------------


def test_column_grad_z_is_a_diagonal_jacobian_and_an_elementwise_product(column):
    text = claim_text(column, "grad_z")
    assert "∂h/∂z is diagonal, diag(f'(z))" in text
    assert "element-wise product" in text
    assert "∇z = ∇h ⊙ f'(z)" in text
    assert "(m,) ⊙ (m,) → (m,)" in text
    assert "∂E/∂z_j = ∂E/∂h_j · ∂h_j/∂z_j = ∇h_j · f'(z_j)" in text


def test_column_grad_a_takes_the_transposed_jacobian(column):
    text = claim_text(column, "grad_a")
    assert "∂z/∂a = W (m, n)" in text
    assert "transposed Jacobian" in text
    assert "∇a = (∂z/∂a)ᵀ ∇z = Wᵀ ∇z" in text
    assert "Wᵀ ∇z: (n, m) · (m,) → (n,)" in text
    assert "∂E/∂a_i = Σ_j ∂E/∂z_j · ∂z_j/∂a_i = Σ_j ∇z_j · W_ji" in text
    assert "∂E/∂a[2] = ∇z[0]·W[0,2] + ∇z[1]·W[1,2]" in text  # the instance at n=3, m=2
    assert "∇a = (∂z/∂a)ᵀ (∂h/∂z)ᵀ ∇h = Wᵀ diag(f'(z)) ∇h" in text


def test_column_grad_w_is_an_outer_product(column):
    text = claim_text(column, "grad_W")
    assert "Kronecker structure" in text and "one nonzero block, equal to aᵀ" in text
    assert "outer product" in text
    assert "∇W = ∇z aᵀ" in text
    assert "(m,) column times (n,)ᵀ row → (m, n)" in text
    assert "∂E/∂W_ji = ∂E/∂z_j · ∂z_j/∂W_ji = ∇z_j · a_i" in text
    assert "outer(grad_z, a)" in text


def test_index_convention_grad_a_takes_w_itself(index_form):
    text = claim_text(index_form, "grad_a")
    assert "∂z/∂a = Wᵀ (m, n)" in text
    assert "transposed Jacobian" in text
    assert "∇a = (∂z/∂a)ᵀ ∇z = W ∇z" in text
    assert "W ∇z: (n, m) · (m,) → (n,)" in text
    assert "Σ_j ∇z_j · W_ij" in text  # the file's own W[i, j] convention


def test_index_convention_grad_w_is_the_outer_product_input_first(index_form):
    text = claim_text(index_form, "grad_W")
    assert "∂E/∂W_ij = ∂E/∂z_j · ∂z_j/∂W_ij = ∇z_j · a_i" in text
    assert "∇W = a ∇zᵀ" in text
    assert "(n,) column times (m,)ᵀ row → (n, m)" in text
    assert "outer product" in text
    assert "∂h/∂z is diagonal" in plain(explain_derivation(index_form, "grad_z", SIZES, FAST))


def test_batch_layer_stacks_into_matrix_products_and_a_batch_sum():
    d = load(DERIVATIONS / "dense_column_batch.toml")
    text = plain(explain_derivation(d, None, {"n": 3, "m": 2, "B": 4}, FAST))
    assert "∇W = ∇Z Xᵀ" in text and "(m, B) · (B, n) → (m, n)" in text
    assert "∇b = Σ_B ∇Z" in text
    assert "∇X = Wᵀ ∇Z" in text


# -- generated from the file, not canned ------------------------------------------------------------

RENAMED = """
[derivation]
title = "Renamed layer"
[dims]
p = "in"
q = "out"
[inputs]
u = ["p"]
V = ["q", "p"]
c = ["q"]
[forward]
s = "V @ u + c"
y = "tanh(s)"
[loss]
upstream = "y"
[claims]
grad_s = "grad_y * tanh_prime(s)"
grad_u = "V @ grad_s"
grad_V = "outer(grad_s, u)"
"""


def test_explanation_follows_the_files_own_names_and_dims():
    d = loads(RENAMED.replace('"V @ grad_s"', '"V.T @ grad_s"'), "renamed.toml")
    text = plain(explain_derivation(d, None, {"p": 3, "q": 2}, FAST))
    assert "∂y/∂s is diagonal, diag(tanh'(s))" in text
    assert "∇u = (∂s/∂u)ᵀ ∇s = Vᵀ ∇s" in text
    assert "∇V = ∇s uᵀ" in text and "(q,) column times (p,)ᵀ row → (q, p)" in text
    assert not re.search(r"\bW\b", text) and "∇z" not in text


def test_refuted_claim_draws_the_mismatch_grid_and_symbolic_entries():
    d = loads(RENAMED.replace('q = "out"\n', "").replace('"q"', '"p"'), "square.toml")
    e = explain_derivation(d, "grad_u", {"p": 3}, FAST)
    text = plain(e)
    assert "REFUTED" in text
    grids = [b.grid for b in e.blocks if b.grid is not None]
    assert len(grids) == 1
    assert any(any(row) for row in grids[0].bad)
    assert len(grids[0].true) == 3  # one row per entry of u at p=3
    # V used where Vᵀ belongs: the true entry sums down a column of V, the claim along a row
    assert "true ∇u[0] = V[0,0]·∇s[0] + V[1,0]·∇s[1] + V[2,0]·∇s[2]" in text
    assert "claimed = V[0,0]·∇s[0] + V[0,1]·∇s[1] + V[0,2]·∇s[2]" in text


def test_proved_claim_has_no_grid(column):
    e = explain_derivation(column, "grad_a", SIZES, FAST)
    assert "PROVED" in plain(e)
    assert not any(b.grid is not None for b in e.blocks)


def test_structures_are_classified_from_the_symbolic_jacobians(column):
    a = Analysis(column, SIZES)
    assert a.structure("h", "z").kind == "diagonal"
    assert a.structure("z", "a").kind == "matrix"
    assert a.structure("z", "a").transposed.text == "Wᵀ"
    assert a.structure("z", "W").kind == "kronecker"
    assert a.structure("z", "b").kind == "identity"
    assert a.jacobian("z", "a").shape == (2, 3)


def test_unknown_claim_is_a_key_error(column):
    with pytest.raises(KeyError, match="grad_q"):
        explain_derivation(column, "grad_q", SIZES, FAST)


def test_small_sizes_default_and_given(column):
    assert small_sizes(column) == {"n": 3, "m": 2}
    assert small_sizes(column, {"m": 4}) == {"n": 3, "m": 4}


# -- formats -------------------------------------------------------------------------------------------


def test_markdown_uses_github_math(column):
    md = render_markdown(explain_derivation(column, "grad_a", SIZES, FAST))
    assert md.startswith("# Dense layer, column vectors")
    assert "$$\n" in md and md.count("$$") % 2 == 0
    assert r"\nabla a = \left(\frac{\partial z}{\partial a}\right)^\top \nabla z = W^\top \nabla z" in md
    assert "### 2. The Jacobian route" in md


def _latex_engine() -> list[str] | None:
    for name, args in (("pdflatex", ["-interaction=nonstopmode", "-halt-on-error"]), ("lualatex", [
            "-interaction=nonstopmode", "-halt-on-error"]), ("tectonic", [])):
        path = shutil.which(name)
        if path:
            return [path, *args]
    return None


def test_latex_is_a_standalone_ascii_document(column):
    d = loads(RENAMED.replace('q = "out"\n', "").replace('"q"', '"p"'), "square.toml")  # with a refuted grid
    for e in (explain_derivation(column, None, SIZES, FAST), explain_derivation(d, None, {"p": 3}, FAST)):
        tex = render_latex(e)
        assert tex.startswith(r"\documentclass")
        assert tex.rstrip().endswith(r"\end{document}")
        assert tex.isascii()
        assert tex.count(r"\[") == tex.count(r"\]")
        assert tex.count("{") == tex.count("}")


def test_latex_compiles(column, tmp_path):
    engine = _latex_engine()
    if engine is None:
        pytest.skip("no TeX engine (pdflatex, lualatex or tectonic) on PATH: the LaTeX was not compiled")
    d = loads(RENAMED.replace('q = "out"\n', "").replace('"q"', '"p"'), "square.toml")
    for k, e in enumerate((explain_derivation(column, None, SIZES, FAST),
                           explain_derivation(d, None, {"p": 3}, FAST))):
        src = tmp_path / f"explain{k}.tex"
        src.write_text(render_latex(e), encoding="ascii")
        run = subprocess.run([*engine, src.name], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:]
        assert (tmp_path / f"explain{k}.pdf").exists()


# -- patterns are only claimed where they hold --------------------------------------------------------------


def test_a_softmax_partial_is_not_passed_off_as_a_general_pattern():
    d = load(DERIVATIONS / "softmax_regression_batch.toml")
    text = plain(explain_derivation(d, "grad_Z", {"n": 3, "k": 2, "B": 2}, FAST))
    # softmax over axis 0 ties the batch column: the sum runs over classes only, and the k=2 entry
    # formula (which differs on the diagonal p = j) is not generalised
    assert "∂E/∂Z_jl = Σ_p ∂E/∂P_pl · ∂P_pl/∂Z_jl = Σ_p ∇P_pl · ∂P_pl/∂Z_jl" in text
    assert "∂P/∂Z is block-diagonal" in text


def test_a_mean_is_a_kronecker_block_weighted_one_over_the_dim():
    d = load(DERIVATIONS / "batch_norm.toml")
    text = plain(explain_derivation(d, "grad_X", {"B": 3, "d": 2}, FAST))
    assert "each of its B entries with the same weight 1/B" in text
    assert "∇X = 1/B (1_B ∇muᵀ)" in text
    assert "diag(1/sqrt(eps + var))" in text  # var (d,) broadcasts along the rows of xhat (B, d)
    # the lettered formula reads 1/3 at B=3: it is flagged as holding at these dims only
    assert "∇mu_j · 1/3" in text and "holds at these dims" in text


def test_an_ill_shaped_claim_still_gets_the_true_route(index_form):
    text = (DERIVATIONS / "dense_index_convention.toml").read_text()
    assert 'grad_a = "W @ grad_z"' in text
    d = loads(text.replace('grad_a = "W @ grad_z"', 'grad_a = "W.T @ grad_z"'), "twist.toml")
    out = plain(explain_derivation(d, "grad_a", SIZES, FAST))
    assert "∇a = W ∇z" in out and "W ∇z: (n, m) · (m,) → (n,)" in out
    assert "SHAPE-ERROR" in out and "multiplies an (m, n) matrix by an (m,) vector" in out


def test_a_scaled_matrix_is_named_with_its_dim_constant():
    d = load(DERIVATIONS / "attention.toml")
    text = plain(explain_derivation(d, "grad_Q", {"T": 3, "d": 2, "dv": 2}, FAST))
    assert "the remaining block is 1/sqrt(d) K" in text
    assert "∇Q = 1/sqrt(d) (∇S K)" in text


def test_reductions_name_the_identity_and_the_ones_vector():
    d = load(DERIVATIONS / "reductions_tour.toml")
    text = plain(explain_derivation(d, None, {"k": 3, "B": 2}, FAST))
    assert "∇A = ∇t I" in text and "grad_t * eye(k)" in text  # the trace
    assert "∇R = ∇rs 1_Bᵀ" in text  # a row sum sends each row's gradient to all its entries
    assert "∂lse/∂Z is block-diagonal" in text


def test_a_jacobian_too_large_to_build_still_gives_a_true_instance(column, monkeypatch):
    import backpropcheck.explain.analysis as analysis

    monkeypatch.setattr(analysis, "MAX_JACOBIAN", 3)
    text = plain(explain_derivation(column, "grad_a", SIZES, FAST))
    assert "too large to build" in text
    assert "∂E/∂a[2] = W[0,2]·∇h[0]·f'(z[0]) + W[1,2]·∇h[1]·f'(z[1])" in text


BUNDLED_DIR = Path(__file__).resolve().parent.parent / "backpropcheck" / "derivations"


@pytest.mark.parametrize("file, sizes, v, u, kind", [
    ("conv1d_valid.toml", {"T": 3, "K": 2}, "y", "x", "band"),  # a convolution's Toeplitz band
    ("maxpool_2x2.toml", None, "m", "windows", "mask"),  # the arg-max of each window
    ("embedding_cross_entropy.toml", None, "picked", "logp", "selection"),  # a gather by the labels
])
def test_reach_jacobians_are_named_by_their_structure(file: str, sizes, v: str, u: str, kind: str) -> None:
    d = load(str(BUNDLED_DIR / file))
    a = Analysis(d, sizes or small_sizes(d))
    assert a.structure(v, u).kind == kind
    words = {"band": "Toeplitz band", "mask": "never spread over the window", "selection": "scatter_add"}[kind]
    assert words in "".join(str(x) for x in a.structure(v, u).says)


def test_a_dense_jacobian_is_not_called_a_band_or_a_selection(column):
    a = Analysis(column, SIZES)
    assert a.structure("z", "a").kind not in ("band", "selection", "mask")


# -- explain reads the engines instead of re-deriving them ------------------------------------------------------


def test_the_public_names_stay_importable_and_the_demo_lives_beside_the_cli() -> None:
    import subprocess
    import sys

    import backpropcheck.demo as demo
    import backpropcheck.explain as explain

    for name in ("explain_file", "explain_derivation", "render_text", "render_markdown", "render_latex",
                 "jacobian_note", "_tex_text", "select", "small_sizes", "Analysis", "MAX_JACOBIAN"):
        assert hasattr(explain, name), name
    assert explain.run_demo is demo.run_demo
    # importing the demo first (as `backpropcheck demo` does) must not trip over the package importing it back
    done = subprocess.run([sys.executable, "-c", "import backpropcheck.demo, backpropcheck.explain as e; e.run_demo"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_one_latex_escaper_for_prose_and_code() -> None:
    from backpropcheck.explain import _tex_text, code

    assert _tex_text("a_b & 50% ∂x ~ é") == r"a\_b \& 50\% $\partial$x \textasciitilde{} ?"
    assert code("grad_W = W.T @ x").tex == r"\texttt{" + _tex_text("grad_W = W.T @ x") + "}"


def test_the_engines_gradient_atoms_print_under_the_files_names() -> None:
    import sympy as sp

    from backpropcheck.explain.printing import concrete_rename, render

    z1, h0 = sp.Symbol("∇z[1]", real=True), sp.Symbol("h[0]", real=True)
    assert concrete_rename(z1) == ("∇z[1]", r"(\nabla z)_{1}")
    assert render(z1 * h0, concrete_rename).text == "∇z[1]·h[0]"  # ordered as grad_z[1]·h[0] always was


def test_the_instance_is_the_engines_step_terms_that_reach_the_loss_only() -> None:
    d = load(DERIVATIONS / "matrix_trace.toml")
    text = plain(explain_derivation(d, "grad_X", {"p": 3, "m": 2, "n": 4}, FAST))
    instance = next(line for line in text.splitlines() if line.startswith("∂E/∂X["))
    assert "∇M[0,0]" in instance and "∇M[1,1]" in instance
    assert "∇M[0,1]" not in instance  # E = trace(M): the engine's ∇M is zero off the diagonal


def test_a_correct_claim_has_no_symbolic_mismatch_even_past_the_jacobian_limit(column, monkeypatch) -> None:
    import backpropcheck.explain.analysis as analysis
    from backpropcheck.explain import symbolic_mismatches

    monkeypatch.setattr(analysis, "MAX_JACOBIAN", 3)  # used to swap in the expanded truth: every entry "differed"
    a = Analysis(column, SIZES)
    claims = {c.name: c for c in column.claims}
    assert symbolic_mismatches(a, claims["grad_a"]) == []
    wrong = loads(column_text().replace('grad_a = "W.T @ grad_z"', 'grad_a = "W.T @ grad_z * 2"'), "wrong.toml")
    lines = symbolic_mismatches(Analysis(wrong, SIZES), next(c for c in wrong.claims if c.name == "grad_a"))
    assert len(lines) == 2 and lines[0].text.startswith("true ∇a[0] = ")


def column_text() -> str:
    return (DERIVATIONS / "dense_column.toml").read_text()


def test_a_claim_that_skips_a_step_is_compared_in_the_gradients_it_reads() -> None:
    from backpropcheck.explain import symbolic_mismatches

    d = load(DERIVATIONS.parent.parent / "derivations" / "mistakes" / "f_prime_of_activation.toml")
    a = Analysis(d, small_sizes(d))
    lines = symbolic_mismatches(a, next(c for c in d.claims if c.name == "grad_z1"))
    assert lines
    true, claimed = lines[0].text.split("    claimed = ")
    assert "∇z2" in true and "∇h1" not in true and "f'(z1[0])" in true  # the claim reads grad_z2, not grad_h1
    assert "f'(h1[0])" in claimed


def test_the_grid_marks_entries_as_the_checker_compares_them(column) -> None:
    import numpy as np

    from backpropcheck.engines.numeric import compare
    from backpropcheck.explain import numeric_grid
    from backpropcheck.explain.verdict import mismatched_entries

    true = np.array([[1000.0], [1e-3]])
    near = np.array([[1000.0], [1e-3 + 1e-6]])  # far off relatively, but not on the tensor's scale
    assert not mismatched_entries(near, true, 1e-7, 1e-12).any() and compare(near, true, 1e-7, 1e-12)[0]
    far = np.array([[1000.5], [1e-3]])
    assert mismatched_entries(far, true, 1e-7, 1e-12).tolist() == [[True], [False]]
    scaled = loads(column_text().replace('grad_b = "grad_z"', 'grad_b = "1.1 * grad_z"'), "scaled.toml")
    claim = next(c for c in scaled.claims if c.name == "grad_b")
    strict = numeric_grid(scaled, claim, SIZES)
    loose = numeric_grid(scaled, claim, SIZES, tolerance=(0.5, 0.0))  # the file's [check] rtol, when it sets one
    assert strict is not None and all(all(row) for row in strict.bad)
    assert loose is not None and not any(any(row) for row in loose.bad)


def test_a_dim_the_file_does_not_declare_is_named_not_dropped(column):
    """explain --dims q=3 worked at other dims and said nothing of q; check says the file does not declare it."""
    text = plain(explain_derivation(column, "grad_a", {"q": 3, "n": 4}, FAST))
    assert "--dims names q, which this file does not declare" in text
    assert "n=4" in text
    assert "does not declare" not in plain(explain_derivation(column, "grad_a", {"n": 4}, FAST))


@pytest.mark.parametrize("axes, back", [("(1, 2, 0)", "(2, 0, 1)"), ("(1, 0, 2)", "(1, 0, 2)"), ("(2, 1, 0)", "(2, 1, 0)")])
def test_an_axis_permutation_of_a_3d_tensor_is_undone_by_the_inverse_permutation(axes: str, back: str):
    """'∇X = ∇Pᵀ' (grad_P.T) was printed for every permutation: on a 3-D array .T reverses all axes, so it was
    a shape-error for (1, 2, 0) and wrong for (1, 0, 2) (QA pass)."""
    d = loads(f"""
[derivation]
title = "an axis permutation"
[dims]
a = "first"
b = "second"
c = "third"
[inputs]
X = ["a", "b", "c"]
[forward]
P = "transpose(X, {axes})"
[loss]
upstream = "P"
[claims]
grad_X = "transpose(grad_P, {back})"
""", "perm.toml")
    e = explain_derivation(d, "grad_X", {"a": 3, "b": 2, "c": 4}, FAST)
    text = plain(e)
    assert f"∇X = transpose(∇P, {back})" in text and "grad_P.T" not in text
    assert all(r.verdict == "proved" for r in e.results)
    assert f"transpose(grad_P, {back})" in render_markdown(e)


MASKED_BY_THE_MAX = """
[derivation]
title = "a mask against the max"
[dims]
n = "n"
[inputs]
x = ["n"]
y = ["n"]
[forward]
m = "max(x)"
h = "y * (x >= m)"
[loss]
upstream = "h"
[claims]
grad_y = "grad_h * (x >= m)"
"""


def test_a_term_with_no_spelling_in_the_language_is_not_spelled_as_empty_parentheses():
    """The diagonal of a mask has no expression-language spelling: the walk-through wrote 'In the file's
    language: grad_h * ()'; now it says nothing in the language and compares with the claim."""
    text = plain(explain_derivation(loads(MASKED_BY_THE_MAX, "masked.toml"), "grad_y", {"n": 3}, FAST))
    assert "* ()" not in text and "In the file's language" not in text
    assert "Compare with the claim grad_y = grad_h * (x >= m)" in text
