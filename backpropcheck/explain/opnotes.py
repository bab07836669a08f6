"""The local Jacobian of one op, in words (shared with ``derive``'s steps)."""

from __future__ import annotations

from collections.abc import Mapping

from ..lang.dims import Shape


def jacobian_note(op: str, params: Mapping[str, object], position: int, shapes: list[Shape]) -> str:
    """What ``∂out/∂arg`` of one op is, and what its transpose does to the upstream gradient,
    in the vocabulary of the Jacobian walk above (diagonal → element-wise product, W → Wᵀ,
    Kronecker → outer product, copies → a sum)."""
    ranks = [len(s) for s in shapes]
    if op in ("matmul", "dot"):
        other = 1 - position
        if ranks[other] == 2 and ranks[position] >= 1:
            side = "on the left" if position == 1 else "on the right"
            if ranks[position] == 2:
                return f"a matrix product: the transposed Jacobian multiplies by the other factor, transposed, {side}"
            return "∂(W x)/∂x = W: the gradient takes the transposed Jacobian, Wᵀ"
        if ranks[position] == 2:
            return "Kronecker structure (one block per row): the transposed Jacobian is an outer product"
        return "a dot product: the Jacobian is the other vector"
    if op == "outer":
        return "Kronecker structure: the transposed Jacobian contracts the gradient with the other vector"
    if op in ("add", "sub"):
        if shapes and any(s != shapes[position] for s in shapes):
            return "the identity on copies (broadcasting): the transposed Jacobian sums over the broadcast axes"
        return "the identity" + (" (negated)" if op == "sub" and position == 1 else "")
    if op in ("mul", "div", "pow", "elementwise", "where", "maximum", "minimum", "neg"):
        return "diagonal: its transpose is itself, an element-wise product"
    if op == "T":
        return "a permutation (the transpose): the gradient is transposed back"
    if op == "expand":
        return "a new axis of size one: the gradient drops it again"
    if op in ("sum", "mean"):
        tail = " divided by the count" if op == "mean" else ""
        return f"a row of ones (a sum): its transpose copies the gradient back over the summed axis{tail}"
    if op == "softmax":
        return "diag(p) − p pᵀ along the axis: the transpose gives p ⊙ (g − Σ g ⊙ p)"
    if op == "log_softmax":
        return "I − 1 pᵀ along the axis: the transpose gives g − p Σ g"
    if op == "logsumexp":
        return "the softmax as a row: the gradient is copied back and weighted by softmax"
    if op == "trace":
        return "the identity matrix's entries (only the diagonal counts)"
    if op == "diag":
        return "a diagonal embedding: the gradient keeps only the diagonal"
    if op == "einsum":
        return "a contraction: the transposed Jacobian contracts the gradient with the other operands"
    return ""
