"""An independent check of the reverse sweep: one forward-mode (tangent) pass.

Every non-constant input x gets a random ±1 direction ``d_x`` and every forward
variable f its own ±1 perturbation ``v_f`` at creation. Forward mode then gives
the directional derivative of the loss,

    dE = Σ_x ⟨∂E/∂x, d_x⟩ + Σ_f ⟨grad_f, v_f⟩,

where ``grad_f`` is the adjoint of f through everything computed after it — the
same quantities the reverse sweep produced. The tangent pass replays the real
forward tape (no second primal evaluation), each op by the tangent rule of its
entry in the op table: linear and bilinear ops propagate tangents directly, and
most others take a complex step, ``Im op(a + i·h·t) / h`` (exact to first
order, no cancellation) — element-wise functions too where their NumPy form is
complex-analytic, so the table's derivatives are checked as well. An op without
a tangent rule is an error (:class:`~..lang.ops.MissingRule`), never a zero. A large matrix input gets a rank-one direction
``p qᵀ`` so that ``d_W @ X = p (qᵀ X)`` costs no matrix product and no copy
of W. The pass costs O(1) forward passes, never one per parameter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import numpy as np

from ..lang.ir import Call, Const, DimSize, IndexDef, IndexRef, IndexSum, Node, Var
from ..lang.ops import OPS, LowRank, Rank1, dense
from .evaluate import Tape, _to_rank, index_space

EPS = float(np.finfo(float).eps)
RANK1_MIN = 1024  # matrices with at least this many entries get a rank-one direction


Tangent = np.ndarray | Rank1 | None


def direction(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray | Rank1:
    """A random ±1 direction: rank-one for a large matrix, dense otherwise."""
    if _rank_one(shape):
        return Rank1(_signs(shape[0], rng), _signs(shape[1], rng))
    return _signs(shape, rng)


def directions(shapes: list[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray | Rank1]:
    """``[direction(shape, rng) for shape in shapes]`` — the same values — from one draw of the generator,
    which must have drawn no 32-bit value yet (a fresh one, as :func:`..numeric.run_trial`'s).

    ``rng.integers(0, 2, size=n, dtype=np.int8)`` uses ⌈n/4⌉ 32-bit words of the generator, and its entry i
    is the top bit of byte i % 4 (least significant first) of word i // 4: NumPy's buffered Lemire draw,
    which never rejects with two outcomes. One draw of every call's words, each call's starting at a word
    of its own as before, gives the same bits without a call per direction (a few µs each, in every
    trial); tests/test_directional.py pins the equality. The words are the generator's raw 64-bit outputs,
    each two 32-bit words, the low one first (what its 32-bit draws are when none is buffered), read as
    little-endian bytes: ``random_raw`` skips ``integers``' checks of its arguments (8 µs a trial). After an
    odd number of words it leaves no buffered half-word as ``integers`` would: the generator is not for
    further use. The directions are read-only views of one array.
    """
    counts: list[int] = []
    for shape in shapes:
        counts += [shape[0], shape[1]] if _rank_one(shape) else [math.prod(shape)]
    words = [-(-n // 4) for n in counts]
    raw = rng.bit_generator.random_raw(-(-sum(words) // 2))  # the 32-bit words in order, and half of one more
    signs = _SIGN_OF_BYTE.take(raw.astype("<u8", copy=False).view(np.uint8))  # -1.0 below 128, else 1.0
    signs.flags.writeable = False
    starts = iter(4 * offset for offset in itertools.accumulate(words, initial=0))
    out: list[np.ndarray | Rank1] = []
    for shape in shapes:
        if _rank_one(shape):
            p, q = next(starts), next(starts)
            out.append(Rank1(signs[p:p + shape[0]], signs[q:q + shape[1]]))
        else:
            start = next(starts)
            out.append(signs[start] if shape == () else signs[start:start + math.prod(shape)].reshape(shape))
    return out


def _rank_one(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[0] * shape[1] >= RANK1_MIN


_PLUS_MINUS = np.array([-1.0, 1.0])
_SIGN_OF_BYTE = _PLUS_MINUS.take(np.arange(256) >> 7)  # 2b - 1 for b the top bit of a byte


def _signs(shape: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``2b - 1`` for bits ``b`` — looked up, one new float array. The bits are drawn flat and reshaped: the
    same values and generator state as ``size=shape``, without NumPy's np.prod of a tuple."""
    flat = rng.integers(0, 2, size=shape if isinstance(shape, int) else math.prod(shape), dtype=np.int8)
    return _PLUS_MINUS.take(flat if isinstance(shape, int) else flat.reshape(shape))


def inner(g: np.ndarray | LowRank, t: np.ndarray | Rank1) -> tuple[float, float]:
    """``(⟨g, t⟩, ‖g‖·‖t‖)`` — the second bounds ``Σ|g_i t_i|``, the scale of the terms summed
    (Cauchy–Schwarz), without an entry-sized temporary. Each sum is one BLAS call over the whole array:
    a BLAS call per cache-sized block would read ``g`` once instead of twice, but a multithreaded BLAS
    meets its threads at every call, and on a loaded machine hundreds of such meetings cost seconds."""
    if isinstance(g, LowRank):
        factored = _inner_low_rank(g, t)
        if factored is not None:
            return factored
        g = g.dense()
    g = np.ascontiguousarray(g, dtype=float)
    norm_g = math.sqrt(float(np.vdot(g, g)))
    if isinstance(t, Rank1):
        g = g.reshape(t.shape)
        return float(t.p @ g @ t.q), norm_g * math.sqrt(float(t.p @ t.p) * float(t.q @ t.q))
    t = np.ascontiguousarray(t if t.shape == g.shape else np.broadcast_to(t, g.shape), dtype=float)
    return float(np.vdot(g, t)), norm_g * math.sqrt(float(np.vdot(t, t)))


def _inner_low_rank(g: LowRank, t: np.ndarray | Rank1) -> tuple[float, float] | None:
    """:func:`inner` of ``g = p qᵀ`` through its factors, without its m·n entries: ``⟨p qᵀ, a bᵀ⟩ =
    (pᵀa)·(qᵀb)`` and ``‖p qᵀ‖² = Σ (pᵀp) ∘ (qᵀq)``. None when the factors cannot show that every entry
    of ``p @ q.T`` is finite (k·max|p|·max|q| past 1e300, or a NaN): the caller reads the entries then."""
    if not g.bounded():
        return None
    p, q = g.p, g.q
    k = p.shape[1]
    if k == 1:
        norm_g = math.sqrt(float(p[:, 0] @ p[:, 0])) * math.sqrt(float(q[:, 0] @ q[:, 0]))
    else:
        square = float(np.sum((p.T @ p) * (q.T @ q)))  # NaN if pᵀp overflows where qᵀq underflows
        if not math.isfinite(square):
            return None
        norm_g = math.sqrt(max(0.0, square))  # a rounding below 0 is 0
    if not math.isfinite(norm_g):
        return None
    if isinstance(t, Rank1):
        value = float((t.p @ p) @ (t.q @ q))
        return value, norm_g * math.sqrt(float(t.p @ t.p) * float(t.q @ t.q))
    t = np.ascontiguousarray(np.broadcast_to(t, g.shape), dtype=float)
    return float(np.vdot(p, t @ q)), norm_g * math.sqrt(float(np.vdot(t, t)))


# ---------------------------------------------------------------------------
# tangent propagation over a recorded forward tape


def _jvp(node: Call, args: tuple, out: np.ndarray, params: dict, tans: list[Tangent]) -> Tangent:
    """The op table's tangent rule; an op with no derivative by nature carries none."""
    op = OPS[node.op]
    if op.nograd:
        return None  # masks, comparisons and constants are never differentiated through
    for t in tans:
        if t is not None:
            rule = op.tangent  # the table's rule, called directly; op.forward_tangent names a missing one
            return rule(args, out, params, tans) if rule is not None else op.forward_tangent(args, out, params, tans)
    return None  # no argument varies


def tangent_of(tape: Tape, var_tangent: Callable[[str], Tangent], index: IndexDef | None = None,
               sizes: Mapping[str, int] | None = None, shape: tuple[int, ...] | None = None) -> Tangent:
    """Replay one expression's tape in forward mode; ``var_tangent(name)`` seeds the leaves.

    For an index-form definition the result is brought to the definition's free shape.
    """
    space = index_space(index, sizes or {}) if index is not None else None
    tangents: dict[int, Tangent] = {}
    root: Node | None = None
    for node, args, out, params in tape.entries:
        root = node
        if isinstance(node, Var):
            t = var_tangent(node.name)
            if space is not None and t is not None:
                t = _to_rank(dense(t), space.rank)
            tangents[id(node)] = t
        elif isinstance(node, Call):
            tans = [tangents.pop(id(c)) for c in node.args]
            tangents[id(node)] = _jvp(node, args, out, params, tans)
        elif isinstance(node, IndexRef):
            assert space is not None  # an entry read: index form
            t = dense(var_tangent(node.name))
            tangents[id(node)] = None if t is None else _to_rank(t[params["index"]], space.rank)
        elif isinstance(node, IndexSum):
            assert space is not None
            t = tangents.pop(id(node.body))
            if t is None:
                tangents[id(node)] = None
                continue
            t = _to_rank(dense(t), space.rank)
            if "count" in params:
                tangents[id(node)] = t * params["count"]
            else:
                full = np.broadcast_to(t, np.broadcast_shapes(t.shape, _to_rank(args[0], space.rank).shape))
                tangents[id(node)] = np.sum(full, axis=node.axis, keepdims=True)
        elif isinstance(node, (Const, DimSize)):
            tangents[id(node)] = None
        else:
            raise TypeError(f"not a node of the IR: {node!r}")
    t = tangents.get(id(root)) if root is not None else None
    if space is not None and index is not None and t is not None and shape is not None:
        free = len(index.free)
        t = np.broadcast_to(_to_rank(dense(t), space.rank), shape + (1,) * (space.rank - free)).reshape(shape)
    return t


def tolerance(scale: float, entries: int) -> float:
    """A float64 bound for the disagreement of two computations of a sum of ``entries`` terms
    whose absolute values add up to ``scale``: rounding grows like √N·ε per level, with margin."""
    return 1e4 * EPS * math.sqrt(max(entries, 1)) * scale + 1e-300
