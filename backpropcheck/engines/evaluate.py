"""One IR walker for both engines, and the reverse sweep over its tape.

The walker knows no individual operation: it looks each one up in the op table
and calls its NumPy or SymPy evaluation. Index-form definitions are evaluated
on an *index space*: one array axis per free index and per summed index, so
``sum(W[i, j] * a[i] for i in n)`` is a gather, a broadcast product and a sum
over the ``i`` axis — vectorised, for both engines alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DerivationError
from ..lang.ir import Call, Const, DimSize, IndexDef, IndexRef, IndexSum, Node, Var
from ..lang.ops import OPS, Elementwise, LowRank, add_low_rank, dense, unbroadcast


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


def _params(node: Call, backend: Backend, sizes: Mapping[str, int]) -> dict:
    op = OPS[node.op]
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
    """The value of an expression (iterative post-order walk: deep trees are fine)."""
    values: dict[int, np.ndarray] = {}
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        current, ready = stack.pop()
        children = current.children()
        if not ready and children:
            stack.append((current, True))
            stack.extend((c, False) for c in reversed(children))
            continue
        args = tuple(values.pop(id(c)) for c in children)
        out, params = _step(current, args, env, sizes, backend, space)
        if tape is not None:
            tape.entries.append((current, args, out, params))
        values[id(current)] = out
    return values[id(node)]


def _step(node, args, env, sizes, backend, space):
    if isinstance(node, Var):
        value = env[node.name]
        return (_to_rank(value, space.rank) if space else value), {}
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
        body = _to_rank(body, space.rank)
        count = space.ranges[node.axis]
        if body.shape[node.axis] == 1:
            return backend.wrap(body * backend.scalar(count)), {"count": count}
        if backend.symbolic and body.dtype == object:
            return backend.wrap(_object_sum(body, node.axis)), {}
        return backend.wrap(np.sum(body, axis=node.axis, keepdims=True)), {}
    params = _params(node, backend, sizes)
    op = OPS[node.op]
    fn = backend.faster.get(node.op) or (op.symbolic if backend.symbolic and op.symbolic is not None else op.numeric)
    try:
        return backend.wrap(fn(*args, **params)), params
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
            local = g * params["count"] if "count" in params else np.broadcast_to(g, body_shape)
            _push(grads, node.body, unbroadcast(local, np.shape(body)) if np.ndim(body) else local.sum())
        elif isinstance(node, Call):
            op = OPS[node.op]
            if op.nograd:
                continue  # a comparison, a constant, an integer result: no derivative by nature
            if not isinstance(g, LowRank):
                g = unbroadcast(np.broadcast_to(g, np.broadcast_shapes(g.shape, out.shape)), out.shape)
            for child, arg, local in zip(node.args, args, op.backward(g, out, *args, **params)):
                if isinstance(local, LowRank) and local.shape == np.shape(arg):
                    _push(grads, child, local)
                elif local is not None:
                    _push(grads, child, unbroadcast(np.asarray(dense(local)), np.shape(arg)))


def _push(grads: dict[int, Any], node: Node, g: np.ndarray | LowRank) -> None:
    key = id(node)
    grads[key] = add_low_rank(grads[key], g) if key in grads else g


def _accumulate(adjoints: dict[str, Any], name: str, g: np.ndarray | LowRank, shape) -> None:
    if name in adjoints:
        adjoints[name] = add_low_rank(adjoints[name], g)
    elif isinstance(g, LowRank):
        adjoints[name] = g
    elif isinstance(g, np.ndarray) and g.dtype == float and g.base is None and g.flags.writeable:
        adjoints[name] = g.reshape(shape)  # a fresh result (e.g. a matrix product): no copy
    else:
        adjoints[name] = np.array(g, dtype=float).reshape(shape)
