"""The Jacobian route for ``explain`` and ``demo``, generated from the derivation itself.

For one claim ``grad_X`` at small dims (``n=3, m=2``), everything is read off the
symbolic engine's per-neuron truth:

1. the scalar chain rule ``∂E/∂X_I = Σ_K ∂E/∂v_K · ∂v_K/∂X_I`` for every forward
   variable v that reads X, with the engine's local partials written with index
   letters in the file's own convention;
2. every local Jacobian ``∂v/∂u`` on the way from X to the loss, named by its
   structure: zero, identity, diagonal (→ an element-wise product), equal to an
   input matrix ``W`` or to ``Wᵀ``, Kronecker-structured (one nonzero block per row
   → an outer product or a product with a batch matrix), or dense;
3. the stacking ``∇X = Σ_v (∂v/∂X)ᵀ ∇v`` into matrix form, shapes over dim names;
4. the checker's verdict on the user's claim, and for a refuted claim a grid of
   true vs claimed entries.

Layouts: a Jacobian ``∂v/∂u`` is in numerator layout (one row per entry of v);
gradients are in denominator layout (``∇u`` has u's shape), hence the transpose.

The package, by responsibility: :mod:`.document` (the blocks every renderer reads),
:mod:`.printing` (names and SymPy printers), :mod:`.tex` (the LaTeX escaper),
:mod:`.letters` (index letters and lettered patterns), :mod:`.forms` (matrix
expressions with shapes), :mod:`.jacobian` (Jacobian arrays: ties, routing, constants),
:mod:`.analysis` (the truth and its local Jacobians), :mod:`.structure` (naming each
Jacobian), :mod:`.walkthrough` (parts 1-3), :mod:`.verdict` (part 4), :mod:`.render`
(text, markdown, LaTeX) and :mod:`.opnotes` (one op's Jacobian in words, for ``derive``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .analysis import MAX_JACOBIAN, Analysis
from .document import Block, Explanation, Grid, Math, Segment, code, select
from .forms import Form
from .opnotes import jacobian_note
from .render import render_latex, render_markdown, render_text
from .structure import Structure
from .tex import tex_text as _tex_text
from .verdict import numeric_grid, symbolic_mismatches
from .walkthrough import SMALL_DIMS, explain_derivation, explain_file, small_sizes

FORMATS = ("text", "markdown", "latex")

__all__ = [
    "FORMATS", "MAX_JACOBIAN", "SMALL_DIMS", "Analysis", "Block", "Explanation", "Form", "Grid", "Math", "Segment",
    "Structure", "_tex_text", "code", "explain_derivation", "explain_file", "jacobian_note", "numeric_grid",
    "render_latex", "render_markdown", "render_text", "run_demo", "select", "small_sizes", "symbolic_mismatches",
]


def __getattr__(name: str) -> Any:
    """``run_demo`` lives beside the CLI (:mod:`backpropcheck.demo`, which imports this package)."""
    if name == "run_demo":
        from ..demo import run_demo

        return run_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the API's name ---------------------------------------------------------------------------------------------
# ``backpropcheck.explain`` is this package (Python sets it on ``backpropcheck`` at import), and it must also be
# the API function ``bpc.explain(...)`` (SPEC §9). So the module is callable: calling it is ``api.explain``.


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ..api import explain as api_explain

        return api_explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
