"""Shape inference over dim *names*, before any number is drawn.

``W @ a`` with W (m, n) and a (m,) is an error even in a trial where m == n:
that is what lets a square layer's wrong transpose be caught by shape alone
whenever the dims differ by name.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ShapeError
from .dims import Dim, Shape, fmt_shape
from .ir import Call, Const, DimSize, IndexDef, IndexRef, IndexSum, Node, Var
from .ops import OPS, ShapeMismatch


def infer(node: Node, env: Mapping[str, Shape]) -> Shape:
    """The shape of an expression, or a :class:`ShapeError` at the offending node."""
    if isinstance(node, Var):
        return env[node.name]
    if isinstance(node, (Const, DimSize)):
        return ()
    if isinstance(node, IndexRef):
        return ()
    if isinstance(node, IndexSum):
        return infer(node.body, env)
    if isinstance(node, Call):
        shapes = [infer(arg, env) for arg in node.args]
        op = OPS[node.op]
        try:
            return op.shape(*shapes, **node.params)
        except ShapeMismatch as exc:
            raise ShapeError(_message(node, exc), column=node.col, hint=_hint(node, env)) from None
    raise TypeError(f"unknown IR node {node!r}")


def _message(node: Call, exc: ShapeMismatch) -> str:
    text = f"`{node.src}`" if node.src else f"this {node.op}"
    return f"{text}: {exc}" if not str(exc).startswith("it ") else f"{text} {str(exc)[3:]}"


def _hint(node: Call, env: Mapping[str, Shape]) -> str | None:
    """The op's own suggestion for a failed shape rule (``@``: the other orientation of a matrix)."""
    hint = OPS[node.op].hint
    return hint(node, env, infer) if hint is not None else None


def infer_index(definition: IndexDef, env: Mapping[str, Shape], dims: Mapping[str, object],
                key_shape: Shape | None = None, integer_ranges: Mapping[str, Dim] | None = None) -> Shape:
    """Check an index-form body and find each free index's range from the shapes it indexes — or,
    for a claim (``"grad_w[f, c, p, q]"``), from the target's axes, which the key ranges over."""
    ranges: dict[int, Dim] = {axis: Dim.of(dim) for axis, dim in definition.bound_dims.items()}
    if key_shape is not None:
        if len(key_shape) != len(definition.free):
            raise ShapeError(f"the key has {len(definition.free)} index(es) but the target has shape "
                             f"{fmt_shape(key_shape)}")
        ranges.update(enumerate(key_shape))
    refs = [n for n in _walk(definition.body) if isinstance(n, IndexRef)]
    refs += _lookups(refs, env, integer_ranges or {})
    for ref in refs:
        shape = env[ref.name]
        if len(shape) != len(ref.subscripts):
            raise ShapeError(
                f"`{ref.src}` uses {len(ref.subscripts)} index(es) but {ref.name} has shape {fmt_shape(shape)}",
                column=ref.col,
            )
    free_axes = range(len(definition.free))
    # an index alone in a position ranges over that position's dim
    for ref in refs:
        for sub, dim in zip(ref.subscripts, env[ref.name]):
            if len(sub.terms) == 1 and sub.terms[0][1] == 1 and sub.const == 0 and not sub.dim_terms:
                axis = ref.axes[sub.terms[0][0]]
                if axis in ranges and ranges[axis] != dim:
                    raise ShapeError(
                        f"the index {sub.terms[0][0]!r} ranges over {ranges[axis]} but indexes "
                        f"`{ref.src}` where that axis has {dim} entries (it ranges over both {ranges[axis]} and {dim})",
                        column=ref.col,
                    )
                ranges.setdefault(axis, dim)
    # otherwise it follows from an affine position: x[t + k] with x (T + K - 1,), k in K gives t in T
    changed = True
    while changed:
        changed = False
        for ref in refs:
            for sub, dim in zip(ref.subscripts, env[ref.name]):
                unknown = [(n, c) for n, c in sub.terms if ref.axes[n] not in ranges]
                if len(unknown) == 1 and unknown[0][1] == 1:
                    span = dim - sub.offset
                    for n, c in sub.terms:
                        if ref.axes[n] in ranges:
                            extent = ranges[ref.axes[n]] - Dim.lit(1)
                            for _ in range(c):
                                span = span - extent
                    ranges[ref.axes[unknown[0][0]]] = span
                    changed = True
    for axis, name in enumerate(definition.free):
        if axis not in ranges:
            raise ShapeError(f"the range of the index {name!r} does not follow from the shapes it indexes")
    definition.ranges = ranges
    for ref in refs:
        for sub, dim in zip(ref.subscripts, env[ref.name]):
            _check_in_range(ref, sub, dim, ranges)
    body_shape = infer(definition.body, env)
    if body_shape != ():
        raise ShapeError(
            f"an index-form body must be a scalar expression of entries, but it has shape {fmt_shape(body_shape)}",
            column=definition.body.col,
        )
    return tuple(ranges[axis] for axis in free_axes)


def _lookups(refs: list[IndexRef], env: Mapping[str, Shape], integer_ranges: Mapping[str, Dim]) -> list[IndexRef]:
    """The integer arrays read as positions (``y[b]`` in ``logp[b, y[b]]``), as refs of their own:
    their indices range over their axes. Each must be an ``index`` input whose range is the axis
    it indexes, so the position stays inside for every draw."""
    out: list[IndexRef] = []
    todo = list(refs)
    while todo:
        ref = todo.pop()
        for sub, dim in zip(ref.subscripts, env[ref.name]):
            if sub.lookup is None:
                continue
            name, inner = sub.lookup
            if name not in integer_ranges:
                raise ShapeError(f"`{ref.src}`: {name} is used as a position, so it must be an integer input "
                                 f'(domain = "index", range = "{dim}")', column=ref.col)
            if integer_ranges[name] != dim:
                raise ShapeError(f"`{ref.src}`: {name} takes values in 0 … {integer_ranges[name]} - 1 but indexes an "
                                 f"axis of {dim} entries", column=ref.col)
            nested = IndexRef(ref.col, name, inner, ref.axes, src=f"{name}[...]")
            out.append(nested)
            todo.append(nested)
    return out


def _check_in_range(ref: IndexRef, sub, dim: Dim, ranges: dict[int, Dim]) -> None:
    """``x[t + k]`` must stay inside x for *every* size: the lowest index and the slack
    ``dim − 1 − highest index`` are expressions in the dims, and are ≥ 0 for all sizes ≥ 1 when
    their coefficients are ≥ 0 and they are ≥ 0 with every dim at 1. Negative coefficients
    (``gpad[t + K - 1 - k]``) lower the lowest index."""
    if sub.lookup is not None:
        return  # an integer input's range was matched with the axis in _lookups
    top = bottom = sub.offset
    for name, coeff in sub.terms:
        extent = ranges[ref.axes[name]] - Dim.lit(1)
        for _ in range(abs(coeff)):
            if coeff > 0:
                top = top + extent
            else:
                bottom = bottom - extent
    slack = dim - Dim.lit(1) - top
    for bound, where in ((slack, f"past the last index {dim - Dim.lit(1)}"), (bottom, "below the first index 0")):
        if not (bound.monotone and bound.at_ones >= 0):
            raise ShapeError(
                f"`{ref.src}`: the index {sub} runs from {bottom} to {top}, {where} of that axis of {ref.name} "
                f"(pad first, with a [backward] helper, to read zeros)",
                column=ref.col,
            )


def _walk(node: Node):
    from .ir import walk

    return walk(node)


def integer_kind(node: Node, integers: set[str]) -> bool:
    """Is the expression an integer array (an ``index`` input, through structural ops only)?

    An integer input is used only as an index (``C[I]``, ``one_hot``, ``take_along_axis``,
    ``scatter_add``), possibly after ``[:, None]``, ``reshape``, slices or ``transpose``;
    arithmetic on it is a located error, and so is a float where an index is needed.
    """
    if isinstance(node, Var):
        return node.name in integers
    if isinstance(node, IndexRef):
        if node.name in integers:
            raise ShapeError(f"`{node.src}`: the integer input {node.name} cannot be read as a number in index "
                             f"form; use it as an index in matrix form (C[{node.name}], one_hot({node.name}, V))",
                             column=node.col)
        return False
    if isinstance(node, IndexSum):
        integer_kind(node.body, integers)
        return False
    if not isinstance(node, Call):
        return False
    kinds = [integer_kind(arg, integers) for arg in node.args]
    op = OPS[node.op]
    for k, (arg, is_int) in enumerate(zip(node.args, kinds)):
        if k in op.index_args and not is_int:
            raise ShapeError(f"`{node.src}` needs an integer array as its index: an input with "
                             f"domain = \"index\" (and range = \"V\"), not `{arg.src}`", column=arg.col)
        if k not in op.index_args and is_int and not op.keeps_integer:
            name = next((n.name for n in _walk(arg) if isinstance(n, Var) and n.name in integers), arg.src)
            raise ShapeError(f"`{node.src}`: arithmetic on the integer input {name}; an integer input is only "
                             f"used as an index: C[{name}], one_hot({name}, V), take_along_axis(A, {name}, "
                             f"axis=k) or scatter_add(S, {name}, V)", column=arg.col)
    if op.keeps_integer and any(kinds):
        if not all(kinds):
            raise ShapeError(f"`{node.src}` mixes an integer array with floats", column=node.col)
        return True
    return False
