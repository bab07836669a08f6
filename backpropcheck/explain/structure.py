"""What each local Jacobian ``∂v/∂u`` is — zero, identity, diagonal, a matrix of the file, Kronecker,
a selection, a band, dense — and how its transpose acts on ``∇v``, in matrix form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ..lang.dims import Shape
from .document import Math, Segment
from .forms import Form, array_form, hadamard, matmul, opaque, outer, reduce_sum, scaled, tensor, tr
from .jacobian import dim_constant, routing, same, tie_candidates, tied_block
from .letters import Context, generalize, pattern_holds
from .printing import (
    concrete_rename,
    entry_tex,
    entry_text,
    generic_rename,
    prime_of,
    render,
    shape_text,
    tex_name,
    text_name,
)

if TYPE_CHECKING:
    from .analysis import Analysis


@dataclass
class Structure:
    """What ``∂v/∂u`` is, and how its transpose acts on ``∇v``."""

    kind: str  # zero | identity | scaled | diagonal | permutation | matrix | kronecker | selection | mask | band
    #            | block | gradient | dense | large
    says: list[Segment]  # a sentence naming the structure
    vjp: Form  # the contribution (∂v/∂u)ᵀ ∇v to ∇u, in matrix form
    ties: dict[int, int] = field(default_factory=dict)  # axis of v -> axis of u with a Kronecker delta
    transposed: Form | None = None  # (∂v/∂u)ᵀ as a named matrix, for vector chains


def classify(an: Analysis, v: str, u: str) -> Structure:
    d = an.d
    gv = tensor(d, f"grad_{v}")
    sv, su = d.shape_of(v), d.shape_of(u)
    jname = Math(f"∂{v}/∂{u}", rf"\partial {tex_name(v)} / \partial {tex_name(u)}")
    generic_vjp = opaque(f"(∂{v}/∂{u})ᵀ ∇{v}",
                         rf"\left(\frac{{\partial {tex_name(v)}}}{{\partial {tex_name(u)}}}\right)^\top "
                         rf"\nabla {tex_name(v)}", su)
    J = an.jacobian(v, u)
    if J is None:
        return Structure("large", [jname, f" is too large to build at these dims; ∇{u} contracts its transpose with ",
                                   Math(gv.text, gv.tex), "."], generic_vjp)
    rv, ru = len(sv), len(su)
    if all(e == 0 for e in J.flat):
        return Structure("zero", [jname, " is zero."], opaque("0", "0", su))
    # diagonal: the same shape, nonzero only where the indices agree
    if sv == su and rv > 0:
        ties = {k: k for k in range(rv)}
        U = tied_block(J, rv, ties)
        if U is not None:
            diag = np.empty(an.arrays[v].shape, dtype=object)
            for k in np.ndindex(*diag.shape):
                diag[k] = J[k + k]
            if all(e == 1 for e in diag.flat):
                return Structure("identity", [jname, " is the identity I: the gradient passes through "
                                              "unchanged."], gv, ties, opaque("I", "I", sv))
            if all(same(e, diag.flat[0]) for e in diag.flat) and not diag.flat[0].free_symbols:
                c = diag.flat[0]
                return Structure("scaled", [jname, " is ", render(c, concrete_rename),
                                            " times the identity: a constant factor."], scaled(c, gv), ties)
            vec = _diag_form(an, v, diag)
            mul = hadamard(gv, vec)
            return Structure(
                "diagonal",
                [jname, " is diagonal, diag(", Math(vec.text, vec.tex), "): entry ", Math(
                    entry_text(v, ["k"]), entry_tex(v, ["k"])),
                 " depends only on ", Math(entry_text(u, ["k"]), entry_tex(u, ["k"])),
                 ". Multiplying by a diagonal matrix is an element-wise product, so its transpose (itself) "
                 "acts as ", Math(mul.text, mul.tex), "."],
                mul, ties, opaque(f"diag({vec.text})", rf"\operatorname{{diag}}\left({vec.tex}\right)", None))
    # Kronecker structure: some axes of v tied to axes of u by a delta, the rest a fixed block
    unnamed: dict[int, int] | None = None  # a constant block that is no single tensor of the file
    for ties in tie_candidates(sv, su):
        U = tied_block(J, rv, ties, constant=True)
        if U is None:
            continue
        found = _kronecker(an, v, u, ties, U, jname, gv)
        if found is not None:
            return found
        unnamed = ties if unnamed is None else unnamed
    if rv == 1 and ru == 1:
        found = an.match_scaled(J, lambda big: big.jacobian(v, u))
        if found is not None:
            M, c = found
            back = tr(M)
            vjp = matmul(back, gv)
            if c != 1:
                M, back, vjp = scaled(c, M), scaled(c, back), scaled(c, vjp)
            return Structure("matrix", [jname, " = ", Math(M.text, M.tex), f" {shape_text(M.shape)}: entry (",
                                        "row of ", v, ", column of ", u, ") is ", Math(M.text, M.tex),
                                        "'s entry there. The gradient takes the transposed Jacobian: ",
                                        Math(f"∇{u} = (∂{v}/∂{u})ᵀ ∇{v} = {vjp.text}",
                                             rf"\nabla {tex_name(u)} = \left(\frac{{\partial {tex_name(v)}}}"
                                             rf"{{\partial {tex_name(u)}}}\right)^\top \nabla {tex_name(v)}"
                                             rf" = {vjp.tex}"), "."],
                             vjp, {}, back)
    if unnamed:
        tie_words = _ties_text(v, u, sv, unnamed)
        return Structure("kronecker", [jname, f" has Kronecker structure ({shape_text(sv)} × {shape_text(su)}): "
                                       f"a Kronecker delta ties {tie_words}, and every slice has the same block (not a "
                                       "single tensor of the file, but built from them), so ∇", u,
                                       " is that block's transpose applied to each slice of ∇", v, "."],
                         generic_vjp, unnamed)
    routed = routing(J, rv)
    if routed is not None:
        return Structure(routed, _routing_says(routed, jname, v, u, sv, su), generic_vjp)
    ties = an.delta_ties(v, u)
    if ties:
        tie_words = _ties_text(v, u, sv, ties)
        return Structure("block", [jname, f" is block-diagonal ({shape_text(sv)} × {shape_text(su)}): a "
                                   f"Kronecker delta ties {tie_words}, so each slice of {v} depends only on the "
                                   f"same slice of {u}; the blocks differ from slice to slice, so ∇{u} is "
                                   f"each block's transpose times ∇{v}'s slice."],
                         generic_vjp, ties)
    if rv == 0:
        return _scalar_gradient(an, v, u, J, jname, gv, generic_vjp)
    symmetric = ""
    if rv == 1 and ru == 1 and J.shape[0] == J.shape[1]:
        if all(same(J[i, k], J[k, i]) for i in range(J.shape[0]) for k in range(i)):
            symmetric = " It is symmetric, so its transpose is the Jacobian itself."
    return Structure("dense", [jname, f" is dense ({shape_text(sv)} × {shape_text(su)}): entries of {v} "
                               f"depend on several entries of {u}, so no element-wise shortcut; ∇{u} is the "
                               "full transposed Jacobian times ∇", v, "." + symmetric], generic_vjp)

def _scalar_gradient(an: Analysis, v: str, u: str, J: np.ndarray, jname: Math, gv: Form,
                     generic_vjp: Form) -> Structure:
    """∂v/∂u for a scalar v: the identity (a trace), a tensor of the file (``sum(A * B)``), or as is."""
    su = an.d.shape_of(u)
    says: list[Segment] = [jname, f" is the gradient of the scalar {v}, shaped like {u} {shape_text(su)}"]
    named: Form | None = None
    if J.ndim == 2 and J.shape[0] == J.shape[1] and all(
            J[i, k] == (1 if i == k else 0) for i in range(J.shape[0]) for k in range(J.shape[1])):
        named = Form("I", "I", f"eye({su[0]})", su)
        says.append(": the identity matrix (only the diagonal entries count)")
    elif J.ndim == 2 and (found := an.match_matrix(J)) is not None:
        named = found
        says += [": equal to ", Math(found.text, found.tex)]
    elif J.ndim == 1 and (found := an.match_vector(J)) is not None:
        named = found
        says += [": equal to ", Math(found.text, found.tex)]
    if named is None:
        return Structure("gradient", says + ["."], generic_vjp)
    vjp = Form(f"{gv.text} {named.text}", rf"{gv.tex} \, {named.tex}", f"{gv.code} * {named.code}", su,
               atom=False)
    return Structure("gradient", says + [". A scalar's gradient just scales it: ",
                                         Math(f"∇{u} = {vjp.text}", rf"\nabla {tex_name(u)} = {vjp.tex}"), "."],
                     vjp)

def _diag_form(an: Analysis, v: str, diag: np.ndarray) -> Form:
    """The diagonal as an array expression: ``sigmoid'(z)`` when the file defines ``v = sigmoid(z)``,
    else the entries' own formula (``f'(z)``) when each reads only same-index entries."""
    named = an.elementwise_of(v)
    if named is not None:
        fn, u = named
        m = prime_of(fn, text_name(u), tex_name(u))
        return Form(m.text, m.tex, f"{fn}_prime({u})", an.d.shape_of(v))
    shape = an.d.shape_of(v)
    ctx = Context(an.letters)
    letters = [ctx.new(dim) for dim in shape]
    idx = tuple(ctx.value[L] for L in letters)
    pattern = generalize(diag[idx], ctx, an.d)
    if pattern is None or not pattern_holds(an, pattern, letters, ctx,
                                             lambda an, val: diag[tuple(val[L] for L in letters)]):
        return opaque(f"∂{v}_k/∂u_k", rf"\partial {tex_name(v)}_k / \partial u_k", shape)
    form = array_form(pattern, letters, shape)
    if form is not None:
        return form
    m = render(pattern, generic_rename)
    return opaque(m.text, m.tex, shape)

def _constant_block(an: Analysis, U: np.ndarray, v: str, u: str) -> sp.Expr | None:
    """The one value of a constant block — as ``c`` or ``c/dim`` (a mean) when comparing with
    the same Jacobian at dims one larger says which; None if the block is not constant."""
    values = list(U.flat)
    c = values[0] if values else None
    if c is None or c == 0 or c.free_symbols or not all(same(e, c) for e in values):
        return None
    if c == 1:
        return sp.Integer(1)
    big = an.larger()
    J2 = big.jacobian(v, u) if big is not None else None
    c2 = next((e for e in J2.flat if e != 0), None) if J2 is not None else None
    if c2 is None:
        return None
    return dim_constant(c, c2, an.sizes, big.sizes)

def _kronecker(an: Analysis, v: str, u: str, ties: dict[int, int], U: np.ndarray, jname: Math,
               gv: Form) -> Structure | None:
    d = an.d
    sv, su = d.shape_of(v), d.shape_of(u)
    v_rest = [k for k in range(len(sv)) if k not in ties]
    u_rest = [k for k in range(len(su)) if k not in ties.values()]
    tie_words = _ties_text(v, u, sv, ties)
    if not v_rest and len(u_rest) == 1 and len(sv) == 1 and len(su) == 2:
        shared, rest = ties[0], su[u_rest[0]]
        k = _constant_block(an, U, v, u)
        if k is not None:  # a mean or a sum over the rest axis: every entry of the slice gets the same share
            ones = Form(f"1_{rest}", rf"\mathbf{{1}}_{{{rest}}}", f"ones({rest})", (rest,))
            vjp = outer(gv, ones) if shared == 0 else outer(ones, gv)
            if k != 1:
                vjp = scaled(k, vjp)
            return Structure(
                "kronecker",
                [jname, f" has Kronecker structure: entry {v}[k] reads only {'row' if shared == 0 else 'column'} "
                 f"k of {u}, each of its {rest} entries with the same weight ", render(k, concrete_rename),
                 f". So every entry of that {'row' if shared == 0 else 'column'} receives the same share of ∇",
                 v, ": ", Math(f"∇{u} = {vjp.text}", rf"\nabla {tex_name(u)} = {vjp.tex}"), "."], vjp, ties)
        c = an.match_vector(U)
        if c is None:
            return None
        vjp = outer(gv, c) if shared == 0 else outer(c, gv)
        block = Math(f"{c.text}ᵀ", rf"{c.tex}^\top")
        return Structure(
            "kronecker",
            [jname, f" has Kronecker structure ({shape_text(sv)} × {shape_text(su)}): entry {v}[k] depends "
             f"only on {'row' if shared == 0 else 'column'} k of {u} — each row of the "
             "Jacobian has one nonzero block, equal to ", block, f" (a Kronecker delta ties {tie_words}). "
             "Contracting ∇", v, " with it stacks the blocks into an outer product: ",
             Math(vjp.text, vjp.tex), "."],
            vjp, ties)
    if len(v_rest) == 1 and len(u_rest) == 1 and len(sv) == 2 and len(su) == 2:
        def redo(big: Analysis) -> np.ndarray | None:
            J2 = big.jacobian(v, u)
            return None if J2 is None else tied_block(J2, len(sv), ties, constant=True)

        found = an.match_scaled(U, redo)
        if found is None:
            return None
        M, c = found
        v_shared_last = list(ties)[0] == 1
        u_shared_last = ties[list(ties)[0]] == 1
        if v_shared_last and u_shared_last:
            vjp = matmul(tr(M), gv)
        elif not v_shared_last and not u_shared_last:
            vjp = matmul(gv, M)
        elif not v_shared_last and u_shared_last:
            vjp = matmul(tr(M), tr(gv))
        else:
            vjp = matmul(tr(gv), M)
        if c != 1:
            M, vjp = scaled(c, M), scaled(c, vjp)
        return Structure(
            "kronecker",
            [jname, f" has Kronecker structure: a Kronecker delta ties {tie_words}, and the remaining block is ",
             Math(M.text, M.tex), " — the same linear map applied to every slice. So ",
             Math(f"∇{u} = {vjp.text}", rf"\nabla {tex_name(u)} = {vjp.tex}"), "."],
            vjp, ties)
    k = _constant_block(an, U, v, u) if len(v_rest) == 1 and not u_rest else None
    if k is not None:
        axis = v_rest[0]
        vjp = reduce_sum(gv, axis, sv[axis])
        vjp = vjp if k == 1 else scaled(k, vjp)
        return Structure(
            "kronecker",
            [jname, f": {u} is broadcast along {v}'s axis {axis} ({sv[axis]}); every copy receives the "
             f"gradient, so they add up: ", Math(f"∇{u} = {vjp.text}", rf"\nabla {tex_name(u)} = {vjp.tex}"),
             "."], vjp, ties)
    if len(ties) == len(sv) == len(su) and all(e == 1 for e in U.flat):
        vjp = tr(gv)
        return Structure("permutation", [jname, " is a permutation: ", v, " is ", u,
                                         " with its axes swapped, so ∇", u, " is ∇", v, " transposed."],
                         vjp, ties)
    return None


def _routing_says(kind: str, jname: Math, v: str, u: str, sv: Shape, su: Shape) -> list[Segment]:
    shapes = f"({shape_text(sv)} × {shape_text(su)})"
    if kind == "selection":
        return [jname, f" is a selection {shapes}: each entry of {v} is one entry of {u} (a gather, a slice or a "
                f"reshape), so its transpose scatters: ∇{u} adds up ∇{v} at the entries that read each entry "
                f"of {u} (zero where none does, a sum where several do — scatter_add)."]
    if kind == "mask":
        return [jname, f" is a mask {shapes}: each entry of {v} is one entry of {u} chosen by a comparison (the "
                f"arg-max of a pooling window), so ∇{u} receives ∇{v} only at the chosen entries and zero elsewhere "
                "— never spread over the window."]
    return [jname, f" is a Toeplitz band {shapes}: each entry depends only on the offset between the indices of "
            f"{v} and {u}, as a convolution's kernel slides. Its transpose is the band read the other way: ∇{u} "
            f"is a full correlation of ∇{v} with the flipped kernel (pad ∇{v}, then flip)."]


def _ties_text(v: str, u: str, sv: Shape, ties: dict[int, int]) -> str:
    """``z's axis 0 (n) with W's axis 0``, for every tied pair."""
    return ", ".join(f"{v}'s axis {a} ({sv[a]}) with {u}'s axis {b}" for a, b in ties.items())
