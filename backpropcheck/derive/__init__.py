"""``derive``: write the matrix-form backprop of a file's forward pass, then prove it.

For every non-constant input and forward variable ``v`` the gradient is written on its
own step, from the ``grad_`` of each variable that reads ``v`` (the question's "given
∇a⁽ᵏ⁺¹⁾"): each consumer's definition is walked backwards through the op table's adjoint
templates (:data:`backpropcheck.lang.ops.ADJOINTS`), the contributions are summed, and a
rewrite pass turns the raw chain into the forms people write (transposes at the leaves,
no einsum where ``@`` serves, ones and identities folded away, a cross-entropy through a
softmax folded to ``P - Y`` where the labels' domain makes it true).

Every derived claim then goes through the loader and the checker exactly like a user's
claim; a derived claim that is not ``proved`` is a bug of ``derive``.

Nothing here evaluates file text: expressions are built as IR from the parser's output
and printed back to the expression language.

The package, by responsibility: :mod:`.tree` (the IR, printing, shapes, the backward walk),
:mod:`.rewrite` (the rules), :mod:`.index` (index form), :mod:`.folds` (shorter forms read
off the forward pass), :mod:`.result` (what derive returns), :mod:`.driver` (the walk over a
file and the proof), :mod:`.render` (the steps as text, Markdown, LaTeX).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .driver import derive, local_note
from .folds import fold_cross_entropy, spelled_out
from .index import entry_form, index_gradient, index_to_matrix, shifted_gradient
from .render import render_latex, render_markdown, render_text
from .result import DerivedClaim, DeriveResult, Step, _with_claims, claim_name, dump_toml
from .rewrite import (
    RULES,
    Rewriter,
    r_blocks,
    r_centred,
    r_constants,
    r_diag,
    r_einsum,
    r_factor,
    r_identity,
    r_leading_axis,
    r_masks,
    r_mean,
    r_ones,
    r_scalars_out,
    r_signs,
    r_sums,
    r_transpose,
)
from .tree import Context, as_tree, backprop, call, const, key, size, to_text

__all__ = [
    "RULES", "Context", "DeriveResult", "DerivedClaim", "Rewriter", "Step", "_with_claims", "as_tree", "backprop",
    "call", "claim_name", "const", "derive", "dump_toml", "entry_form", "fold_cross_entropy", "index_gradient",
    "index_to_matrix", "key", "local_note", "r_blocks", "r_centred", "r_constants", "r_diag", "r_einsum",
    "r_factor", "r_identity", "r_leading_axis", "r_masks", "r_mean", "r_ones", "r_scalars_out", "r_signs",
    "r_sums", "r_transpose", "render_latex", "render_markdown", "render_text", "shifted_gradient", "size",
    "spelled_out", "to_text",
]


# -- the API's name -----------------------------------------------------------------------------
# ``backpropcheck.derive`` is this package, and SPEC §9 wants ``bpc.derive(...)`` to be the API
# function; as with ``explain``, the module is callable: calling it is :func:`derive`.


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> DeriveResult:
        return derive(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
