"""Matrix expressions in three notations (Unicode, LaTeX, the expression language), with shapes."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp  # type: ignore[import-untyped]

from ..lang.dims import Dim, Shape
from ..lang.ops import OPS, ShapeMismatch
from ..model import Derivation
from .printing import bare_rename, code_text, concrete_rename, render, shape_text, tex_name, text_name


@dataclass
class Form:
    """A matrix expression in three notations, with its shape over dim names."""

    text: str
    tex: str
    code: str
    shape: Shape | None
    atom: bool = True
    base: str | None = None  # the tensor name, for atoms and their transposes
    transposed: bool = False
    annot: str = ""  # the operands' shapes and the result's, e.g. "(n, m) · (m,) → (n,)"
    annot_tex: str = ""


def spelled(template: str, *forms: Form) -> str:
    """``template`` with each ``{}`` the code of a form, or "" when one has no expression-language spelling
    (an opaque term spells nothing, never ``grad_h * ()``)."""
    codes = [f.code for f in forms]
    return template.format(*codes) if all(codes) else ""


def tensor(d: Derivation, name: str) -> Form:
    """A named tensor of the file, with its shape."""
    return Form(text_name(name), tex_name(name), name, d.shape_of(name), base=name)


def tr(f: Form) -> Form:
    """The transpose (``Wᵀᵀ = W``; a no-op on vectors, as in NumPy)."""
    shape = tuple(reversed(f.shape)) if f.shape is not None else None
    if f.shape is not None and len(f.shape) < 2:
        return f
    if f.base is not None:
        if f.transposed:
            return Form(text_name(f.base), tex_name(f.base), f.base, shape, base=f.base)
        return Form(f.text + "ᵀ", f.tex + r"^\top", spelled("{}.T", f), shape, base=f.base, transposed=True)
    return Form(f"({f.text})ᵀ", rf"\left({f.tex}\right)^\top", spelled("({}).T", f), shape, atom=True)


def permuted(f: Form, axes: tuple[int, ...]) -> Form:
    """``transpose(f, axes)``: NumPy's axis permutation (axis k of the result is axis ``axes[k]`` of ``f``);
    for two axes swapped, the plain transpose."""
    if len(axes) == 2 and axes == (1, 0):
        return tr(f)
    if axes == tuple(range(len(axes))):
        return f
    shape = tuple(f.shape[k] for k in axes) if f.shape is not None else None
    order = ", ".join(str(k) for k in axes)
    return Form(f"transpose({f.text}, ({order}))", rf"\operatorname{{transpose}}\left({f.tex}, ({order})\right)",
                spelled(f"transpose({{}}, ({order}))", f), shape, atom=True)


def _paren(f: Form) -> Form:
    if f.atom:
        return f
    return Form(f"({f.text})", rf"\left({f.tex}\right)", spelled("({})", f), f.shape)


def _shape_rule(op: str, *shapes: Shape | None, **params: object) -> Shape | None:
    """The op table's shape rule for ``op`` over dim names; None when a shape is unknown or they do not fit."""
    known = [s for s in shapes if s is not None]
    if len(known) < len(shapes):
        return None
    try:
        return OPS[op].shape(*known, **params)
    except ShapeMismatch:
        return None


def matmul(a: Form, b: Form) -> Form:
    """``a b`` (matrix-matrix, matrix-vector or vector-matrix), with its shape rule annotated."""
    a, b = _paren(a), _paren(b)
    shape = _shape_rule("matmul", a.shape, b.shape)
    return Form(f"{a.text} {b.text}", f"{a.tex} {b.tex}", spelled("{} @ {}", a, b), shape, atom=False,
                annot=f"{shape_text(a.shape)} · {shape_text(b.shape)} → {shape_text(shape)}",
                annot_tex=rf"{shape_text(a.shape)} \cdot {shape_text(b.shape)} \to {shape_text(shape)}")


def hadamard(a: Form, b: Form) -> Form:
    """``a ⊙ b``, the element-wise product."""
    a, b = _paren(a), _paren(b)
    return Form(f"{a.text} ⊙ {b.text}", rf"{a.tex} \odot {b.tex}", spelled("{} * {}", a, b), a.shape, atom=False,
                annot=f"{shape_text(a.shape)} ⊙ {shape_text(b.shape)} → {shape_text(a.shape)} (entry by entry)",
                annot_tex=rf"{shape_text(a.shape)} \odot {shape_text(b.shape)} \to {shape_text(a.shape)}"
                          r"\ \text{(entry by entry)}")


def outer(u: Form, v: Form) -> Form:
    """``u vᵀ``, the outer product of two vectors."""
    shape = _shape_rule("outer", u.shape, v.shape)
    return Form(f"{u.text} {v.text}ᵀ", rf"{u.tex} {v.tex}^\top", spelled("outer({}, {})", u, v), shape, atom=False,
                annot=f"{shape_text(u.shape)} column times {shape_text(v.shape)}ᵀ row → {shape_text(shape)}, "
                      "an outer product",
                annot_tex=rf"{shape_text(u.shape)}\,{shape_text(v.shape)}^\top \to {shape_text(shape)}"
                          r"\ \text{(an outer product)}")


def scaled(c: sp.Expr, f: Form) -> Form:
    """``c f`` for a constant c (``1/B``, ``1/sqrt(d)``)."""
    m = render(c, concrete_rename)
    f = _paren(f)
    return Form(f"{m.text} {f.text}", rf"{m.tex} \, {f.tex}", f"{c} * {f.code}" if f.code else "", f.shape,
                atom=False, annot=f.annot, annot_tex=f.annot_tex)


def reduce_sum(f: Form, axis: int, dim: Dim) -> Form:
    """``Σ_dim f``, a sum over one axis."""
    shape = _shape_rule("sum", f.shape, axis=axis)
    return Form(f"Σ_{dim} {f.text}", rf"\textstyle\sum_{{{dim}}} {f.tex}", spelled(f"sum({{}}, axis={axis})", f), shape,
                atom=False, annot=f"{shape_text(f.shape)} summed over axis {axis} ({dim}) → {shape_text(shape)}",
                annot_tex=rf"{shape_text(f.shape)} \xrightarrow{{\sum_{{{dim}}}}} {shape_text(shape)}")


def opaque(text: str, tex: str, shape: Shape | None) -> Form:
    """A term with no expression-language spelling (``code`` empty)."""
    return Form(text, tex, "", shape, atom=False)


def array_form(pattern: sp.Expr, letters: list[str], shape: Shape) -> Form | None:
    """The lettered pattern as an array expression over a tensor with index ``letters``
    (``h_j - y_j`` → ``h - y``), when every entry it reads broadcasts along trailing axes (NumPy's rule)."""
    suffixes = [letters[len(letters) - k:] if k else [] for k in range(len(letters) + 1)]
    if not all(sym.name.split("@")[1].split(",") in suffixes for sym in pattern.free_symbols if "@" in sym.name):
        return None
    m = render(pattern, bare_rename)
    return Form(m.text, m.tex, code_text(pattern), shape, atom=not isinstance(pattern, sp.Add))
