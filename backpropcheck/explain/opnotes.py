"""The local Jacobian of one op, in words (shared with ``derive``'s steps)."""

from __future__ import annotations

from collections.abc import Mapping

from ..lang.dims import Shape

# ops whose local Jacobian reads the same whatever the argument's position and shapes
_FIXED = {
    "outer": "Kronecker structure: the transposed Jacobian contracts the gradient with the other vector",
    **dict.fromkeys(("mul", "div", "pow", "elementwise", "where", "maximum", "minimum", "neg"),
                    "diagonal: its transpose is itself, an element-wise product"),
    "T": "a permutation (the transpose): the gradient is transposed back",
    "expand": "a new axis of size one: the gradient drops it again",
    "sum": "a row of ones (a sum): its transpose copies the gradient back over the summed axis",
    "mean": "a row of ones (a sum): its transpose copies the gradient back over the summed axis divided by the count",
    "softmax": "diag(p) − p pᵀ along the axis: the transpose gives p ⊙ (g − Σ g ⊙ p)",
    "log_softmax": "I − 1 pᵀ along the axis: the transpose gives g − p Σ g",
    "logsumexp": "the softmax as a row: the gradient is copied back and weighted by softmax",
    "trace": "the identity matrix's entries (only the diagonal counts)",
    "diag": "a diagonal embedding: the gradient keeps only the diagonal",
    "einsum": "a contraction: the transposed Jacobian contracts the gradient with the other operands",
}


def jacobian_note(op: str, params: Mapping[str, object], position: int, shapes: list[Shape]) -> str:
    """What ``∂out/∂arg`` of one op is, and what its transpose does to the upstream gradient,
    in the vocabulary of the Jacobian walk above (diagonal → element-wise product, W → Wᵀ,
    Kronecker → outer product, copies → a sum)."""
    if op in ("matmul", "dot"):
        return _product_note(position, [len(s) for s in shapes])
    if op in ("add", "sub"):
        if shapes and any(s != shapes[position] for s in shapes):
            return "the identity on copies (broadcasting): the transposed Jacobian sums over the broadcast axes"
        return "the identity" + (" (negated)" if op == "sub" and position == 1 else "")
    return _FIXED.get(op, "")


def _product_note(position: int, ranks: list[int]) -> str:
    """``@`` by the ranks of its factors: a matrix product, W x, an outer product, a dot product."""
    other = 1 - position
    if ranks[other] == 2 and ranks[position] >= 1:
        side = "on the left" if position == 1 else "on the right"
        if ranks[position] == 2:
            return f"a matrix product: the transposed Jacobian multiplies by the other factor, transposed, {side}"
        return "∂(W x)/∂x = W: the gradient takes the transposed Jacobian, Wᵀ"
    if ranks[position] == 2:
        return "Kronecker structure (one block per row): the transposed Jacobian is an outer product"
    return "a dot product: the Jacobian is the other vector"
