"""What each local Jacobian ``∂v/∂u`` is — zero, identity, diagonal, a matrix of the file, Kronecker,
a selection, a band, dense — and how its transpose acts on ``∇v``, in matrix form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp  # type: ignore[import-untyped]

from ..lang.dims import Dim, Shape
from .document import Math, Segment
from .forms import Form, array_form, hadamard, matmul, opaque, outer, permuted, reduce_sum, scaled, spelled, tensor, tr
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


@dataclass
class _Edge:
    """One local Jacobian ``∂v/∂u`` being classified, with the pieces every sentence names."""

    an: Analysis
    v: str
    u: str
    J: np.ndarray
    unnamed: dict[int, int] | None = None  # ties of a constant block that is no single tensor of the file

    @property
    def sv(self) -> Shape:
        return self.an.d.shape_of(self.v)

    @property
    def su(self) -> Shape:
        return self.an.d.shape_of(self.u)

    @property
    def rv(self) -> int:
        return len(self.sv)

    @property
    def gv(self) -> Form:
        return tensor(self.an.d, f"grad_{self.v}")

    @property
    def jname(self) -> Math:
        return _jacobian_name(self.v, self.u)

    @property
    def generic_vjp(self) -> Form:
        return _generic_vjp(self.v, self.u, self.su)

    @property
    def shapes(self) -> str:
        return f"({shape_text(self.sv)} × {shape_text(self.su)})"

    def gradient_is(self, vjp: Form) -> Math:
        """``∇u = <vjp>``."""
        return Math(f"∇{self.u} = {vjp.text}", rf"\nabla {tex_name(self.u)} = {vjp.tex}")


def _jacobian_name(v: str, u: str) -> Math:
    return Math(f"∂{v}/∂{u}", rf"\partial {tex_name(v)} / \partial {tex_name(u)}")


def _generic_vjp(v: str, u: str, su: Shape) -> Form:
    return opaque(f"(∂{v}/∂{u})ᵀ ∇{v}",
                  rf"\left(\frac{{\partial {tex_name(v)}}}{{\partial {tex_name(u)}}}\right)^\top "
                  rf"\nabla {tex_name(v)}", su)


def classify(an: Analysis, v: str, u: str) -> Structure:
    """Name ``∂v/∂u`` by the first structure that fits, from the most specific to dense."""
    J = an.jacobian(v, u)
    if J is None:
        gv = tensor(an.d, f"grad_{v}")
        return Structure("large", [_jacobian_name(v, u), f" is too large to build at these dims; ∇{u} contracts its "
                                   "transpose with ", Math(gv.text, gv.tex), "."], _generic_vjp(v, u, an.d.shape_of(u)))
    e = _Edge(an, v, u, J)
    for rule in (_zero, _diagonal, _kronecker_any, _matrix, _unnamed_kronecker, _routed, _block, _scalar_gradient):
        found = rule(e)
        if found is not None:
            return found
    return _dense(e)


def _zero(e: _Edge) -> Structure | None:
    if all(x == 0 for x in e.J.flat):
        return Structure("zero", [e.jname, " is zero."], opaque("0", "0", e.su))
    return None


def _diagonal(e: _Edge) -> Structure | None:
    """The same shape, nonzero only where the indices agree: the identity, a constant times it, or diag(·)."""
    if e.sv != e.su or e.rv == 0:
        return None
    ties = {k: k for k in range(e.rv)}
    if tied_block(e.J, e.rv, ties) is None:
        return None
    diag = np.empty(e.an.arrays[e.v].shape, dtype=object)
    for k in np.ndindex(*diag.shape):
        diag[k] = e.J[k + k]
    gv, jname = e.gv, e.jname
    if all(x == 1 for x in diag.flat):
        return Structure("identity", [jname, " is the identity I: the gradient passes through "
                                      "unchanged."], gv, ties, opaque("I", "I", e.sv))
    if all(same(x, diag.flat[0]) for x in diag.flat) and not diag.flat[0].free_symbols:
        c = diag.flat[0]
        return Structure("scaled", [jname, " is ", render(c, concrete_rename),
                                    " times the identity: a constant factor."], scaled(c, gv), ties)
    vec = _diag_form(e.an, e.v, diag)
    mul = hadamard(gv, vec)
    v, u = e.v, e.u
    return Structure(
        "diagonal",
        [jname, " is diagonal, diag(", Math(vec.text, vec.tex), "): entry ", Math(
            entry_text(v, ["k"]), entry_tex(v, ["k"])),
         " depends only on ", Math(entry_text(u, ["k"]), entry_tex(u, ["k"])),
         ". Multiplying by a diagonal matrix is an element-wise product, so its transpose (itself) "
         "acts as ", Math(mul.text, mul.tex), "."],
        mul, ties, opaque(f"diag({vec.text})", rf"\operatorname{{diag}}\left({vec.tex}\right)", None))


def _kronecker_any(e: _Edge) -> Structure | None:
    """Some axes of v tied to axes of u by a delta, the rest a fixed block (remembered when unnamed)."""
    for ties in tie_candidates(e.sv, e.su):
        U = tied_block(e.J, e.rv, ties, constant=True)
        if U is None:
            continue
        found = _kronecker(e, ties, U)
        if found is not None:
            return found
        e.unnamed = ties if e.unnamed is None else e.unnamed
    return None


def _matrix(e: _Edge) -> Structure | None:
    """A vector's Jacobian equal to a matrix of the file (or its transpose), up to a constant."""
    if e.rv != 1 or len(e.su) != 1:
        return None
    v, u = e.v, e.u
    found = e.an.match_scaled(e.J, lambda big: big.jacobian(v, u))
    if found is None:
        return None
    M, c = found
    back = tr(M)
    vjp = matmul(back, e.gv)
    if c != 1:
        M, back, vjp = scaled(c, M), scaled(c, back), scaled(c, vjp)
    return Structure("matrix", [e.jname, " = ", Math(M.text, M.tex), f" {shape_text(M.shape)}: entry (",
                                "row of ", v, ", column of ", u, ") is ", Math(M.text, M.tex),
                                "'s entry there. The gradient takes the transposed Jacobian: ",
                                Math(f"∇{u} = (∂{v}/∂{u})ᵀ ∇{v} = {vjp.text}",
                                     rf"\nabla {tex_name(u)} = \left(\frac{{\partial {tex_name(v)}}}"
                                     rf"{{\partial {tex_name(u)}}}\right)^\top \nabla {tex_name(v)}"
                                     rf" = {vjp.tex}"), "."],
                     vjp, {}, back)


def _unnamed_kronecker(e: _Edge) -> Structure | None:
    if not e.unnamed:
        return None
    v, u = e.v, e.u
    return Structure("kronecker", [e.jname, f" has Kronecker structure {e.shapes}: "
                                   f"a Kronecker delta ties {_ties_text(v, u, e.sv, e.unnamed)}, and every slice has "
                                   "the same block (not a single tensor of the file, but built from them), so ∇", u,
                                   " is that block's transpose applied to each slice of ∇", v, "."],
                     e.generic_vjp, e.unnamed)


def _routed(e: _Edge) -> Structure | None:
    kind = routing(e.J, e.rv)
    if kind is None:
        return None
    return Structure(kind, _routing_says(kind, e.jname, e.v, e.u, e.sv, e.su), e.generic_vjp)


def _block(e: _Edge) -> Structure | None:
    ties = e.an.delta_ties(e.v, e.u)
    if not ties:
        return None
    v, u = e.v, e.u
    return Structure("block", [e.jname, f" is block-diagonal {e.shapes}: a "
                               f"Kronecker delta ties {_ties_text(v, u, e.sv, ties)}, so each slice of {v} depends "
                               f"only on the same slice of {u}; the blocks differ from slice to slice, so ∇{u} is "
                               f"each block's transpose times ∇{v}'s slice."],
                     e.generic_vjp, ties)


def _dense(e: _Edge) -> Structure:
    J, v, u = e.J, e.v, e.u
    symmetric = ""
    if e.rv == 1 and len(e.su) == 1 and J.shape[0] == J.shape[1] and all(
            same(J[i, k], J[k, i]) for i in range(J.shape[0]) for k in range(i)):
        symmetric = " It is symmetric, so its transpose is the Jacobian itself."
    return Structure("dense", [e.jname, f" is dense {e.shapes}: entries of {v} "
                               f"depend on several entries of {u}, so no element-wise shortcut; ∇{u} is the "
                               "full transposed Jacobian times ∇", v, "." + symmetric], e.generic_vjp)


def _scalar_gradient(e: _Edge) -> Structure | None:
    """∂v/∂u for a scalar v: the identity (a trace), a tensor of the file (``sum(A * B)``), or as is."""
    if e.rv != 0:
        return None
    an, v, u, J, jname, gv, su = e.an, e.v, e.u, e.J, e.jname, e.gv, e.su
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
        return Structure("gradient", says + ["."], e.generic_vjp)
    vjp = Form(f"{gv.text} {named.text}", rf"{gv.tex} \, {named.tex}", spelled("{} * {}", gv, named), su,
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
    if big is None or c2 is None:
        return None
    return dim_constant(c, c2, an.sizes, big.sizes)

def _kronecker(e: _Edge, ties: dict[int, int], U: np.ndarray) -> Structure | None:
    """A Kronecker-structured Jacobian whose block is named: a row or column read whole, a matrix of the
    file applied to every slice, a broadcast, or a permutation of the axes."""
    sv, su = e.sv, e.su
    v_rest = [k for k in range(len(sv)) if k not in ties]
    u_rest = [k for k in range(len(su)) if k not in ties.values()]
    if not v_rest and len(u_rest) == 1 and len(sv) == 1 and len(su) == 2:
        return _kron_slice(e, ties, U, su[u_rest[0]])
    if len(v_rest) == 1 and len(u_rest) == 1 and len(sv) == 2 and len(su) == 2:
        return _kron_matrix(e, ties, U)
    if len(v_rest) == 1 and not u_rest:
        found = _kron_broadcast(e, ties, U, v_rest[0])
        if found is not None:
            return found
    if len(ties) == len(sv) == len(su) and all(x == 1 for x in U.flat):
        v, u = e.v, e.u
        # axis j of u is axis k of v where ties[k] = j: ∇u is ∇v with its axes put back in u's order
        back = tuple(sorted(ties, key=lambda k: ties[k]))
        if len(back) == 2:
            return Structure("permutation", [e.jname, " is a permutation: ", v, " is ", u,
                                             " with its axes swapped, so ∇", u, " is ∇", v, " transposed."],
                             tr(e.gv), ties)
        return Structure("permutation", [e.jname, " is a permutation: ", v, " is ", u, " with its axes permuted, "
                                         "so ∇", u, " is ∇", v, " with its axes put back: axis j of ∇", u,
                                         " is the axis of ∇", v, " that axis j of ", u, " became."],
                         permuted(e.gv, back), ties)
    return None


def _kron_slice(e: _Edge, ties: dict[int, int], U: np.ndarray, rest: Dim) -> Structure | None:
    """Entry v[k] reads row (or column) k of u: a mean or sum of it, or its dot product with a vector."""
    v, u, gv = e.v, e.u, e.gv
    shared = ties[0]
    side = "row" if shared == 0 else "column"
    k = _constant_block(e.an, U, v, u)
    if k is not None:  # a mean or a sum over the rest axis: every entry of the slice gets the same share
        ones = Form(f"1_{rest}", rf"\mathbf{{1}}_{{{rest}}}", f"ones({rest})", (rest,))
        vjp = outer(gv, ones) if shared == 0 else outer(ones, gv)
        if k != 1:
            vjp = scaled(k, vjp)
        return Structure(
            "kronecker",
            [e.jname, f" has Kronecker structure: entry {v}[k] reads only {side} "
             f"k of {u}, each of its {rest} entries with the same weight ", render(k, concrete_rename),
             f". So every entry of that {side} receives the same share of ∇",
             v, ": ", e.gradient_is(vjp), "."], vjp, ties)
    c = e.an.match_vector(U)
    if c is None:
        return None
    vjp = outer(gv, c) if shared == 0 else outer(c, gv)
    block = Math(f"{c.text}ᵀ", rf"{c.tex}^\top")
    return Structure(
        "kronecker",
        [e.jname, f" has Kronecker structure {e.shapes}: entry {v}[k] depends "
         f"only on {side} k of {u} — each row of the "
         "Jacobian has one nonzero block, equal to ", block,
         f" (a Kronecker delta ties {_ties_text(v, u, e.sv, ties)}). "
         "Contracting ∇", v, " with it stacks the blocks into an outer product: ",
         Math(vjp.text, vjp.tex), "."],
        vjp, ties)


def _kron_matrix(e: _Edge, ties: dict[int, int], U: np.ndarray) -> Structure | None:
    """Matrices v and u with one axis tied: the same matrix of the file applied to every slice."""
    v, u, gv, rv = e.v, e.u, e.gv, e.rv

    def redo(big: Analysis) -> np.ndarray | None:
        J2 = big.jacobian(v, u)
        return None if J2 is None else tied_block(J2, rv, ties, constant=True)

    found = e.an.match_scaled(U, redo)
    if found is None:
        return None
    M, c = found
    (a, b), = ties.items()
    # which side M multiplies, and whether ∇v or M is transposed, follows from which axes are tied
    vjp = {(1, 1): lambda: matmul(tr(M), gv), (0, 0): lambda: matmul(gv, M),
           (0, 1): lambda: matmul(tr(M), tr(gv)), (1, 0): lambda: matmul(tr(gv), M)}[(a, b)]()
    if c != 1:
        M, vjp = scaled(c, M), scaled(c, vjp)
    return Structure(
        "kronecker",
        [e.jname, f" has Kronecker structure: a Kronecker delta ties {_ties_text(v, u, e.sv, ties)}, and the "
         "remaining block is ", Math(M.text, M.tex), " — the same linear map applied to every slice. So ",
         e.gradient_is(vjp), "."],
        vjp, ties)


def _kron_broadcast(e: _Edge, ties: dict[int, int], U: np.ndarray, axis: int) -> Structure | None:
    """u copied along one axis of v: every copy's gradient adds up (a sum over that axis)."""
    k = _constant_block(e.an, U, e.v, e.u)
    if k is None:
        return None
    v, u, sv = e.v, e.u, e.sv
    vjp = reduce_sum(e.gv, axis, sv[axis])
    vjp = vjp if k == 1 else scaled(k, vjp)
    return Structure(
        "kronecker",
        [e.jname, f": {u} is broadcast along {v}'s axis {axis} ({sv[axis]}); every copy receives the "
         f"gradient, so they add up: ", e.gradient_is(vjp),
         "."], vjp, ties)


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
