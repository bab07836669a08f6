"""The op table: every primitive defined once, with all that the engines need.

For each op (:class:`Op`): its parse signature, shape rule over dim names, NumPy evaluation,
SymPy evaluation on object arrays of scalar expressions (by default the NumPy one, which
works on object arrays), vector-Jacobian product (the local backward step, as micrograd keeps
``_backward`` beside the forward), tangent rule (the local forward step), an explicit
``nograd`` marker, and the matrix-form adjoint template ``derive`` writes. A rule an op lacks
raises :class:`MissingRule` the moment a derivative needs it — never a silent zero.
Element-wise functions add their derivative, which ``NAME_prime`` names. What the rest of the
package asks of an op is read here too, never from its name: its multiply-adds (``work``, the
checker's bounds), whether a dim used as a number stays rational through it (``rational``),
how a call is written (:func:`spell`, ``text``), its local Jacobian in words (``note``, for
``explain`` and ``derive``) and the element-wise function it applies (``applies``).

The table is one package, grouped by kind of op:

- :mod:`.core` — the :class:`Op` record, the registry :data:`OPS`, shared helpers;
- :mod:`.elementwise` — ``tanh``, ``relu``, … and the ``elementwise`` op;
- :mod:`.arith` — ``+ - * / **``, comparisons, ``where``, ``maximum``/``minimum``, ``clip``;
- :mod:`.linalg` — ``@``, ``dot``, ``outer``, ``.T``, ``trace``, ``diag``, ``ones``/``zeros``/``eye``, ``einsum``;
- :mod:`.reduce` — ``sum``, ``mean``, ``var``, ``max``/``min``, ``softmax``, ``log_softmax``, ``logsumexp``, ``cumsum``;
- :mod:`.structure` — ``[:, None]``, ``reshape``, ``transpose``, slices, ``concat``, ``stack``, ``pad``;
- :mod:`.indexing` — ``C[I]``, ``scatter_add``, ``one_hot``, ``take_along_axis``;
- :mod:`.adjoints` — every op's adjoint template for ``derive``;
- :mod:`.certificate` — every op's rules in the all-shapes certificate (``engines/scope.py``).

Adding an op is one entry in the module of its kind plus a test.
"""

from __future__ import annotations

from dataclasses import replace as _replace

from . import arith, certificate, elementwise, indexing, linalg, reduce, structure  # noqa: F401 - registers the ops
from .adjoints import ADJOINTS, NoAdjoint, _adj_matmul, _shape_names, num_text
from .core import (
    AXIS,
    AXIS1,
    KEEPDIMS,
    LOW_RANK_MIN,
    OPS,
    H,
    LowRank,
    MissingRule,
    Op,
    Param,
    Rank1,
    ShapeMismatch,
    Signature,
    add_low_rank,
    broadcast,
    broadcast_to,
    dense,
    function_of,
    sig,
    spell,
    sum_sym,
    to_shape_of,
    unbroadcast,
)
from .elementwise import ELEMENTWISE, GENERIC_STANDINS, Elementwise
from .linalg import _einsum_sym, _matmul_sym, parse_einsum

__all__ = [
    "ADJOINTS", "AXIS", "AXIS1", "ELEMENTWISE", "GENERIC_STANDINS", "H", "KEEPDIMS", "OPS", "Elementwise",
    "LOW_RANK_MIN", "LowRank", "MissingRule", "NoAdjoint", "Op", "Param", "Rank1", "ShapeMismatch", "Signature", "add_low_rank", "broadcast", "broadcast_to", "dense", "function_of",
    "num_text", "parse_einsum", "sig", "spell", "sum_sym", "to_shape_of", "unbroadcast", "_adj_matmul", "_matmul_sym", "_einsum_sym", "_replace", "_shape_names",
]
