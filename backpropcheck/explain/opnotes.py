"""The local Jacobian of one op, in words (shared with ``derive``'s steps): read from the op table."""

from __future__ import annotations

from collections.abc import Mapping

from ..lang.dims import Shape
from ..lang.ops import OPS


def jacobian_note(op: str, params: Mapping[str, object], position: int, shapes: list[Shape]) -> str:
    """What ``∂out/∂arg`` of one op is, and what its transpose does to the upstream gradient,
    in the vocabulary of the Jacobian walk above (diagonal → element-wise product, W → Wᵀ,
    Kronecker → outer product, copies → a sum): the op's ``note`` in the table."""
    return OPS[op].jacobian_note(position, shapes)
