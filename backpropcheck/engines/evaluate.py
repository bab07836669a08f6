"""One IR walker for both engines, and the reverse sweep over its tape.

The walker knows no individual operation: it looks each one up in the op table
and calls its NumPy or SymPy evaluation. Index-form definitions are evaluated
on an *index space*: one array axis per free index and per summed index, so
``sum(W[i, j] * a[i] for i in n)`` is a gather, a broadcast product and a sum
over the ``i`` axis — vectorised, for both engines alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np

from ..errors import DerivationError
from ..lang.ir import Call, Const, DimSize, IndexDef, IndexRef, IndexSum, Node, Var
from ..lang.ops import OPS, Elementwise, LowRank, Op, add_low_rank, broadcast_to, dense, to_shape_of, unbroadcast
from ..lang.ops.core import forget_product


@dataclass
class Backend:
    """What differs between the engines: numbers, and how functions are resolved."""

    symbolic: bool
    functions: Callable[[str], Elementwise]
    const: Callable[[Const], Any]
    scalar: Callable[[int], Any]
    #: op name -> a faster evaluation of the same op on this backend's arrays (the symbolic engine's
    #: entry-wise product); the op table's rule stays the meaning, this only its cost
    faster: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    def wrap(self, value: Any) -> np.ndarray:
        return np.asarray(value, dtype=object) if self.symbolic else np.asarray(value, dtype=float)


@dataclass
class Tape:
    """Evaluation records ``(node, argument values, result, params)`` in post-order."""

    entries: list[tuple[Node, tuple, Any, dict]] = field(default_factory=list)


@dataclass
class _IndexSpace:
    rank: int
    aranges: dict[int, np.ndarray]
    ranges: dict[int, int]


def _params(node: Call, op: Op, backend: Backend, sizes: Mapping[str, int]) -> dict:
    params = dict(node.params)
    for name in op.functions:  # a built-in, or this trial's stand-in for a generic f
        params[name] = backend.functions(params[name])
    return op.bind(params, sizes) if op.bind is not None else params


def evaluate(
    node: Node,
    env: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    backend: Backend,
    tape: Tape | None = None,
    space: _IndexSpace | None = None,
) -> np.ndarray:
    """The value of an expression, by its post-order (iterative: deep trees are fine); the arguments of
    a node are the last values computed."""
    values: list[Any] = []
    args: tuple[Any, ...]
    # symbolic sums over several indices (sum(... for c in C for p in K)): summed over all their axes at once
    nested = _nested_sums(node) if backend.symbolic and tape is None and space is not None else ()
    for current, arity in post_order(node):
        if arity:  # a call (most nodes) or a sum over an index
            if arity == 1:
                args = (values.pop(),)
            else:
                args = tuple(values[-arity:])
                del values[-arity:]
            if nested and type(current) is IndexSum:
                assert space is not None
                values.append(_sum_of_sums(current, args[0], current in nested, space, backend))
                continue
            out, params = (_call(current, args, sizes, backend) if type(current) is Call
                           else _step(current, args, env, sizes, backend, space))
        else:
            args = ()
            out, params = _step(current, args, env, sizes, backend, space)
        if tape is not None:
            tape.entries.append((current, args, out, params))
        values.append(out)
    return values[-1]


# a tree's post-order without the root's own entry: a value that held its key would keep it alive forever
_POST_ORDER: WeakKeyDictionary[Node, tuple[tuple[tuple[Node, int], ...], int]] = WeakKeyDictionary()


def post_order(root: Node) -> tuple[tuple[Node, int], ...]:
    """Every node of a tree, children before parents, with its number of children: once per tree
    (a tree is never changed once parsed), as every trial evaluates the same trees again."""
    kept = _POST_ORDER.get(root)
    if kept is not None:
        return kept[0] + ((root, kept[1]),)
    steps: list[tuple[Node, int]] = []
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        current, ready = stack.pop()
        children = current.children()
        if not ready and children:
            stack.append((current, True))
            stack.extend((c, False) for c in reversed(children))
            continue
        steps.append((current, len(children)))
    _POST_ORDER[root] = tuple(steps[:-1]), steps[-1][1]
    return tuple(steps)


def _step(node, args, env, sizes, backend, space):
    if isinstance(node, Var):
        value = env[node.name]
        return (_to_rank(value, space.rank) if space else value), {}
    if isinstance(node, Call):
        return _call(node, args, sizes, backend)
    if isinstance(node, Const):
        return backend.wrap(backend.const(node)), {}
    if isinstance(node, DimSize):
        return backend.wrap(backend.scalar(sizes[node.dim])), {}
    if isinstance(node, IndexRef):
        assert space is not None
        index = _gather_index(node.subscripts, node, env[node.name].shape, space, sizes, env)
        return _to_rank(env[node.name][index], space.rank), {"index": index}
    if isinstance(node, IndexSum):
        assert space is not None
        (body,) = args
        return _index_sum(body, node.axis, space, backend)
    raise TypeError(f"not a node of the IR: {node!r}")


def _index_sum(body: Any, axis: int, space: _IndexSpace, backend: Backend) -> tuple[np.ndarray, dict]:
    """One ``sum(body for index in dim)`` over the index's axis, and the parameters of its step."""
    body = _to_rank(body, space.rank)
    count = space.ranges[axis]
    if body.shape[axis] == 1:
        return backend.wrap(body * backend.scalar(count)), {"count": count}
    if backend.symbolic and body.dtype == object:
        return backend.wrap(_object_sum(body, axis)), {}
    return backend.wrap(np.sum(body, axis=axis, keepdims=True)), {}


_NESTED: WeakKeyDictionary[Node, frozenset[IndexSum]] = WeakKeyDictionary()


def _nested_sums(root: Node) -> frozenset[IndexSum]:
    """The sums over an index whose value is only the body of another sum over an index (a node that occurs once
    in the tree), once per tree."""
    found = _NESTED.get(root)
    if found is None:
        order = post_order(root)
        occurs = Counter(id(n) for n, _ in order)
        found = _NESTED[root] = frozenset(n.body for n, _ in order if type(n) is IndexSum
                                          and type(n.body) is IndexSum and occurs[id(n.body)] == 1)
    return found


@dataclass
class _Pending:
    """A symbolic body whose sums over ``axes`` (innermost first) are left to the sum around them."""

    body: np.ndarray
    axes: tuple[int, ...]


def _sum_of_sums(node: IndexSum, value: Any, inner: bool, space: _IndexSpace, backend: Backend) -> Any:
    """A symbolic sum over an index: left pending if another sum takes its value (``inner``), else summed
    over every pending axis at once, one ``Add`` per entry of all its terms (:func:`.products.direct_sum`):
    the very sum the sums one axis after another build (each a sum of the sums inside it, flattened), without
    flattening every term again at each axis. Else, or for a body constant along an axis, one axis at a time."""
    body, axes = (value.body, value.axes + (node.axis,)) if isinstance(value, _Pending) else (value, (node.axis,))
    body = _to_rank(body, space.rank)
    if inner:
        return _Pending(body, axes)
    if len(axes) > 1 and body.dtype == object and all(body.shape[a] > 1 for a in axes):
        summed = _object_sum_over(body, axes)
        if summed is not None:
            return backend.wrap(summed)
    for axis in axes:
        body = _index_sum(body, axis, space, backend)[0]
    return body


def _call(node: Call, args: tuple, sizes: Mapping[str, int], backend: Backend) -> tuple[Any, dict]:
    """An op of the table on its arguments' values: its result and the parameters it was called with."""
    op = OPS[node.op]
    params = _params(node, op, backend, sizes) if op.functions or op.bind is not None else dict(node.params)
    if backend.symbolic:
        fn = backend.faster.get(node.op) or (op.symbolic if op.symbolic is not None else op.numeric)
    else:
        fn = (backend.faster.get(node.op) if backend.faster else None) or op.numeric
    try:
        value = fn(*args, **params)
        if type(value) is np.ndarray and value.dtype == np.float64 and not backend.symbolic:
            return value, params  # what wrap() gives it back: the array itself
        return backend.wrap(value), params
    except IndexError:
        if not op.index_args:
            raise
        # the shapes agree over names, but an integer input drawn from its range reached past the axis
        # it indexes: the range and the axis differ
        raise DerivationError(f"`{node.src}`: an integer index reaches past the axis it indexes; declare the "
                              f"index input's range = \"…\" as that axis's dim", column=node.col) from None


def _object_sum(body: np.ndarray, axis: int) -> np.ndarray:
    """``Σ`` over one axis of SymPy entries, each result one ``Add`` of its terms: NumPy's pairwise
    ``+`` re-flattens a growing sum at every step (quadratic in the terms, and a conv2d's index
    space sums many)."""
    from .products import add

    moved = np.moveaxis(body, axis, -1)
    out = np.empty(moved.shape[:-1], dtype=object)
    for idx in np.ndindex(*out.shape):
        out[idx] = add(*moved[idx])
    return np.expand_dims(out, axis)


def _object_sum_over(body: np.ndarray, axes: tuple[int, ...]) -> np.ndarray | None:
    """``Σ`` over several axes of SymPy entries, each result one directly built ``Add`` of all its terms,
    or None if some result needs SymPy's own sum (like terms, coefficients: summed axis by axis instead)."""
    from .products import direct_sum

    moved = np.moveaxis(body, axes, tuple(range(body.ndim - len(axes), body.ndim)))
    kept = moved.shape[:body.ndim - len(axes)]
    terms = moved.reshape(kept + (-1,))
    out = np.empty(kept, dtype=object)
    for idx in np.ndindex(*kept):
        total = direct_sum(terms[idx].tolist())
        if total is None:
            return None
        out[idx] = total
    return np.expand_dims(out, tuple(sorted(axes)))


def _to_rank(value: np.ndarray, rank: int) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim < rank:
        value = value.reshape((1,) * (rank - value.ndim) + value.shape)
    return value


def _gather_index(subscripts, node: IndexRef, shape: tuple[int, ...], space: _IndexSpace,
                  sizes: Mapping[str, int], env: Mapping[str, np.ndarray]) -> tuple:
    index = []
    for k, sub in enumerate(subscripts):
        if sub.lookup is not None:  # logp[b, y[b]]: the entries of an integer array as positions
            name, inner = sub.lookup
            values = env[name][_gather_index(inner, node, env[name].shape, space, sizes, env)]
            index.append(np.asarray(np.real(values) if np.iscomplexobj(values) else values).astype(int))
            continue
        position: Any = sub.offset_value(sizes)
        low = high = position
        for name, coeff in sub.terms:
            axis = node.axes[name]
            position = position + coeff * space.aranges[axis]
            if coeff > 0:
                high += coeff * (space.ranges[axis] - 1)
            else:
                low += coeff * (space.ranges[axis] - 1)
        if low < 0 or high >= shape[k]:
            raise DerivationError(
                f"`{node.src}` reaches index {high if high >= shape[k] else low} of an axis of size {shape[k]}",
                column=node.col,
            )
        index.append(np.asarray(position))
    return tuple(index)


def evaluate_definition(
    definition_root: Node | None,
    index: IndexDef | None,
    env: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    backend: Backend,
    tape: Tape | None = None,
) -> np.ndarray:
    """A [forward]/[backward] value: a matrix-form expression, or an index-form body on its space.
    A claim that did not parse has no root: evaluating it is the caller's error."""
    if definition_root is None:
        raise ValueError("an expression that did not parse cannot be evaluated")
    if index is None:
        return evaluate(definition_root, env, sizes, backend, tape)
    space = index_space(index, sizes)
    value = evaluate(definition_root, env, sizes, backend, tape, space)
    free = tuple(space.ranges[a] for a in range(len(index.free)))
    full = np.broadcast_to(_to_rank(value, space.rank), free + (1,) * (space.rank - len(free)))
    return backend.wrap(full.reshape(free).copy())


def index_space(index: IndexDef, sizes: Mapping[str, int]) -> _IndexSpace:
    ranges = {axis: dim.value(sizes) for axis, dim in index.ranges.items()}
    for n in ranges.values():
        if n < 1:
            raise DerivationError(f"an index range is empty at the drawn dims ({n})")
    aranges = {
        axis: np.arange(n).reshape([-1 if k == axis else 1 for k in range(index.rank)])
        for axis, n in ranges.items()
    }
    return _IndexSpace(index.rank, aranges, ranges)


def backprop(tape: Tape, root: Node, seed: np.ndarray, adjoints: dict[str, np.ndarray],
             shapes: Mapping[str, tuple[int, ...]], index: IndexDef | None = None,
             sizes: Mapping[str, int] | None = None) -> None:
    """Reverse sweep over one expression's tape: ``adjoints[x] += seedᵀ ∂expr/∂x`` for every leaf x.

    Each node's local step is the op table's vector-Jacobian product.
    """
    grads: dict[int, np.ndarray] = {}
    if index is not None:
        space = index_space(index, sizes or {})
        free = len(index.free)
        seed = np.asarray(seed).reshape(seed.shape + (1,) * (space.rank - free))
    grads[id(root)] = np.asarray(seed, dtype=float)
    for node, args, out, params in reversed(tape.entries):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if isinstance(g, LowRank):  # a factored product's gradient reaches an input as it is (through a .T)
            if isinstance(node, Var) and g.shape == shapes[node.name]:
                _accumulate(adjoints, node.name, g, g.shape)
                continue
            if not (isinstance(node, Call) and OPS[node.op].factored and g.shape == out.shape):
                g = g.dense()
        if isinstance(node, Var):
            shape = shapes[node.name]
            if g.shape != out.shape:
                g = unbroadcast(np.broadcast_to(g, np.broadcast_shapes(g.shape, out.shape)), out.shape)
            _accumulate(adjoints, node.name, g if g.shape == shape else g.reshape(shape), shape)
        elif isinstance(node, Call):
            op = OPS[node.op]
            if op.nograd:
                continue  # a comparison, a constant, an integer result: no derivative by nature
            if not isinstance(g, LowRank):
                g = to_shape_of(g, out.shape)
            vjp = op.vjp  # the table's rule, called directly; op.backward names a missing one
            for child, arg, local in zip(node.args, args, vjp(g, out, *args, **params) if vjp is not None
                                         else op.backward(g, out, *args, **params)):
                if op.forgets_products and type(child) is not Var:  # kept only for a named variable's claim
                    forget_product(local)
                if type(local) is np.ndarray:  # the common case, first
                    _push(grads, child, unbroadcast(local, np.shape(arg)))
                elif isinstance(local, LowRank) and local.shape == np.shape(arg):
                    _push(grads, child, local)
                elif local is not None:
                    _push(grads, child, unbroadcast(np.asarray(dense(local)), np.shape(arg)))
        elif isinstance(node, IndexRef):
            shape = shapes[node.name]
            target = np.zeros(shape)
            full = np.broadcast_shapes(g.shape, out.shape)
            positions = tuple(np.broadcast_to(i, full) for i in params["index"])
            np.add.at(target, positions, np.broadcast_to(g, full))
            _accumulate(adjoints, node.name, target, shape)
        elif isinstance(node, IndexSum):
            (body,) = args
            body_shape = _to_rank(body, out.ndim).shape
            local = g * params["count"] if "count" in params else broadcast_to(g, body_shape)
            _push(grads, node.body, unbroadcast(local, np.shape(body)) if np.ndim(body) else local.sum())


def _push(grads: dict[int, Any], node: Node, g: np.ndarray | LowRank) -> None:
    key = id(node)
    grads[key] = add_low_rank(grads[key], g) if key in grads else g


def _accumulate(adjoints: dict[str, Any], name: str, g: np.ndarray | LowRank, shape) -> None:
    # never ``+=`` into an adjoint: a fresh product kept as it is may also be a claim's value (core.keep_product)
    if name in adjoints:
        adjoints[name] = add_low_rank(adjoints[name], g)
    elif isinstance(g, LowRank):
        adjoints[name] = g
    elif isinstance(g, np.ndarray) and g.dtype == float and g.base is None and g.flags.writeable:
        adjoints[name] = g.reshape(shape)  # a fresh result (e.g. a matrix product): no copy
    else:
        adjoints[name] = np.array(g, dtype=float).reshape(shape)
