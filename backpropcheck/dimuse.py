"""Dims used as numbers: the sizes at which such a use can change a claim's value.

A dim that enters an expression only through shapes, or as a number in a
polynomial or rational way (``sum(X) / B``, ``n / (n - 1)``), behaves alike at
every size the trials draw. A dim inside a non-polynomial function
(``relu(n - 64)``, ``where(n > 64, …)``, ``exp(n)``) may not: the claim can
agree at every drawn size (2 … max_dim) and differ beyond. For each such use
this module names the sizes to examine as well: both sides of every kink of
the dim-only argument (the roots of ``n - 64``, solved exactly; the sign changes
of ``sqrt(n) - 30``, found over the sizes), and sizes past the drawn range.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from .lang.ir import Call, DimSize, IndexRef, Node, Var, walk, walk_through
from .lang.ops import OPS
from .model import Derivation


def _roots(d: Derivation) -> Iterator[Node]:
    for f in d.forward + d.backward:
        yield f.root
    if d.loss.expression is not None:
        yield d.loss.expression
    for c in d.claims:
        if c.node is not None:
            yield c.node


def _non_rational(node: Call) -> bool:
    """A dim used as a number through this call may leave the polynomials and rational functions
    (the op table's ``rational``: ``x ** 0.5``, ``relu``, ``where``)."""
    return not OPS[node.op].is_rational(node.params)


def _matrix_definitions(d: Derivation) -> dict[str, Node]:
    """The [forward] and [backward] definitions in matrix form, by name: what a call reads through them."""
    return {f.name: f.node for f in d.forward + d.backward if f.index is None and f.node is not None}


def _dim_only(node: Node, definitions: dict[str, Node]) -> bool:
    """No tensor read (through the definitions it reads), and no array built from shapes alone (an op
    without operands: ``ones(n)``)."""
    return not any((isinstance(n, Var) and n.name not in definitions) or isinstance(n, IndexRef)
                   or (isinstance(n, Call) and OPS[n.op].arity[1] == 0) for n in walk_through(node, definitions))


Pins = tuple[tuple[str, int], ...]  # the other dims at the sizes a kink was solved at


def critical_sizes(d: Derivation, max_dim: int, largest: int = 8192) -> list[tuple[str, int, bool, Pins]]:
    """``(dim, size, kink, pins)`` for every size a dim used as a number must also be examined at;
    ``kink``: the size is next to a point where a piecewise function of the dim changes branch
    (the symbolic check examines those too; the sizes past the drawn range get numeric trials);
    ``pins``: the other dims the kink's argument reads, at the sizes it was solved at (``n - 7 * m - 100``
    is 0 at n = 114 with m = 2, not with any m).
    ``largest``: the largest size a kink of a non-polynomial argument is looked for at (the dim limit)."""
    found: dict[tuple[str, int, Pins], bool] = {}
    for node, dims, dim_only in _uses(d):
        for dim in dims:  # past the drawn range, whatever the function
            for size in (max_dim + 1, 4 * max_dim + 3):
                found.setdefault((dim, size, ()), False)
        for dim, size, pins in _kinks(d, node, dims, largest, dim_only):
            found[(dim, size, pins)] = True
    return sorted(((dim, size, kink, pins) for (dim, size, pins), kink in found.items()),
                  key=lambda t: (t[0], t[1], t[3]))


_Use = tuple[Call, frozenset[str], bool]


def _uses(d: Derivation) -> tuple[_Use, ...]:
    """Each call through which a dim may leave the rational functions: the dims it reads, and whether it
    is dim-only. Walked once per file (:func:`~.workload.file_memo`; every check walked every tree), kept
    with the trees it read (by identity: a tree is never changed in place once parsed) and the op table's
    entries it used."""
    from .workload import file_memo

    roots = tuple(_roots(d))
    kept = file_memo(d).get("dim_uses")
    if kept is not None and kept[0] == roots and all(OPS.get(name) is op for name, op in kept[1]):
        return kept[2]
    ops_read: dict[str, object] = {}
    uses: list[_Use] = []
    definitions = _matrix_definitions(d)
    for root in roots:
        for node in walk(root):
            if not isinstance(node, Call):
                continue
            ops_read[node.op] = OPS[node.op]
            if not _non_rational(node):
                continue
            dims = frozenset(n.dim for n in walk_through(node, definitions) if isinstance(n, DimSize))
            if dims:
                uses.append((node, dims, _dim_only(node, definitions)))
    found = tuple(uses)
    file_memo(d)["dim_uses"] = (roots, tuple(ops_read.items()), found)
    return found


def _kinks(d: Derivation, node: Call, dims: frozenset[str], largest: int,
           dim_only: bool = True) -> Iterator[tuple[str, int, Pins]]:
    """Sizes on both sides of every point where ``node`` changes branch as a dim varies: a polynomial
    argument's roots, solved exactly; a dim-only argument's other sign changes over the sizes 1 … ``largest``
    (``sqrt(n) > 30``, ``log(n) > 7``: :mod:`.engines.roots`), the other dims at 2. An argument that also reads
    tensors (``x * (n - 100) > 0``) is written with each tensor as one scalar (an entry), and only the roots
    that do not move with its value count: there the argument vanishes whatever the entries, a tie by
    construction (``>`` and ``>=`` differ at n = 100 on every entry)."""
    import numpy as np
    import sympy as sp

    from .engines.evaluate import Backend, evaluate
    from .engines.roots import integer_sign_changes, polynomial_roots
    from .engines.symbolic import symbolic_backend
    from .lang.symfuncs import kink_arguments

    symbols = {name: sp.Symbol(name, positive=True, integer=True) for name in dims}
    base = symbolic_backend(d)
    backend = Backend(symbolic=True, functions=base.functions, const=base.const, scalar=lambda v: v)
    definitions = _matrix_definitions(d)
    read = {n.name for n in walk_through(node, definitions) if isinstance(n, Var)}
    try:
        env: dict = {name: np.asarray(sp.Symbol(f"⟨{name}⟩", real=True), dtype=object)
                     for name in d.inputs if name in read and not dim_only}
        for name, definition in definitions.items():  # in file order: each reads only earlier ones
            if name in read:
                env[name] = evaluate(definition, env, symbols, backend)
        value = sp.sympify(evaluate(node, env, symbols, backend)[()], strict=True)
    except Exception:  # noqa: BLE001 - an argument SymPy cannot write: the sizes past the range remain
        return
    for argument in kink_arguments(value):
        entries = [t for t in argument.free_symbols if t not in symbols.values()]
        for name, s in symbols.items():
            if s not in argument.free_symbols:
                continue
            dims_read = [t for t in argument.free_symbols if t != s and t not in entries]

            def crossings(g: sp.Expr) -> set[int]:
                roots = polynomial_roots(g, s)  # noqa: B023 - used at once, in this iteration
                return ({math.floor(r) for r in roots} if roots is not None
                        else set(integer_sign_changes(g, s, largest)))  # noqa: B023

            def ties(g: sp.Expr) -> set[int]:
                """The sizes where ``g`` is exactly 0 (a polynomial's integer roots)."""
                roots = polynomial_roots(g, s)  # noqa: B023
                return {int(r) for r in roots or [] if r.is_integer and g.xreplace({s: r}) == 0}  # noqa: B023

            # the other dims at the smallest size; one other dim also at each size to 16, for the exact ties
            # only (n * m - 77 is 0 at n = 7 with m = 11: a root in n at m = 2 would miss it)
            assignments = [({t: 2 for t in dims_read}, crossings)]
            if len(dims_read) == 1:
                assignments += [({dims_read[0]: v}, ties) for v in range(1, 17) if v != 2]
            for others, roots_of in assignments:
                pins = tuple(sorted((t.name, v) for t, v in others.items()))
                g = argument.xreplace(others)
                # with entries, the roots that do not move with their value: there it vanishes for any entries
                found = (roots_of(g.xreplace({t: 2 for t in entries})) & roots_of(g.xreplace({t: 3 for t in entries}))
                         if entries else roots_of(g))
                for root in sorted(found):
                    for size in (root - 1, root, root + 1, root + 2):
                        if size >= 1:
                            yield name, int(size), pins
