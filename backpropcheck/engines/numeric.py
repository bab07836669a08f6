"""The NumPy engine: inputs drawn from their domains, the forward pass, the true
gradients by one reverse sweep of the op table's vector-Jacobian products, and
the claims evaluated with every ``grad_X`` bound to its true value.

The truth is independent of the claims; the directional check in
:func:`directional_check` verifies it against complex-step derivatives, which
need only the forward evaluation.
"""

from __future__ import annotations

import functools
import math
import os
import zlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence

from ..errors import DerivationError
from ..lang.ir import Call, Const, IndexDef, Node
from ..lang.ops import ELEMENTWISE, GENERIC_STANDINS, OPS, Elementwise, LowRank, MissingRule, broadcast_to
from ..lang.ops import core as ops_core
from ..lang.ops.core import any_kept, kept_product, products_kept
from ..model import DEFAULT_ATOL, DEFAULT_RTOL, Derivation, Input
from ..workload import concrete_shapes
from .directional import Rank1, Tangent, dense, directions, inner, tangent_of, tolerance
from .evaluate import Backend, Tape, backprop, evaluate, evaluate_definition
from .numeric_blocks import largest, same_product, uniform


class NumericProblem(Exception):
    """NaN or Inf where the math has a finite value: reported, never a verdict."""

    def __init__(self, message: str, variable: str):
        super().__init__(message)
        self.variable = variable


class TruthMismatch(NumericProblem):
    """The reverse sweep disagrees with the forward-mode directional derivative: an internal
    error of backpropcheck (its op table), reported as such and never turned into a verdict."""


def standin_for(name: str, trial: int) -> tuple[str, Elementwise]:
    """The concrete smooth function that plays a generic ``f`` in this trial."""
    label, f, fprime = GENERIC_STANDINS[(trial + zlib.crc32(name.encode())) % len(GENERIC_STANDINS)]
    return label, Elementwise(name, f, fprime, lambda u: u)


def numeric_backend(derivation: Derivation, trial: int) -> Backend:
    """The NumPy engine's numbers and functions in this trial: the built-ins, and a stand-in for each generic
    ``f`` (one backend for every file without one: it would be the same in every trial)."""
    if not derivation.functions:
        return _BUILT_IN
    generic = {name: standin_for(name, trial)[1] for name in derivation.functions}

    def functions(name: str) -> Elementwise:
        return generic[name] if name in generic else ELEMENTWISE[name]

    def const(node: Const) -> float:
        return node.value

    return Backend(symbolic=False, functions=functions, const=const, scalar=float)


def _const(node: Const) -> float:
    return node.value


_BUILT_IN = Backend(symbolic=False, functions=ELEMENTWISE.__getitem__, const=_const, scalar=float)


def rng_for(seed: int, path: str, trial: int) -> np.random.Generator:
    """One generator per (seed, file, trial): reports never depend on run order or --jobs.

    It is ``np.random.default_rng([seed, crc, trial])``, the same stream (:func:`seeded_rng`)."""
    return seeded_rng((seed, _name_crc(path), trial))


def seeded_rng(entropy: int | tuple[int, ...]) -> np.random.Generator:
    """``np.random.default_rng(entropy)`` (a tuple as the list of its ints), the same stream, made in a tenth
    of the time when the entropy was seen before: the words its seed sequence generates for PCG64 are kept
    per entropy (:class:`_Seeded`; a SeedSequence takes ~9 µs to mix its pool and generate them, and a check
    of a loaded file repeated draws the same seeds)."""
    return np.random.Generator(np.random.PCG64(_Seeded(entropy)))  # type: ignore[arg-type]  # any ISeedSequence


class _Seeded(ISpawnableSeedSequence):
    """``SeedSequence(entropy)`` as PCG64 reads it: the four 64-bit words it generates, kept per entropy.
    Anything else asked of it (other words, :meth:`spawn`) comes from this object's own real SeedSequence."""

    __slots__ = ("entropy", "_real")

    def __init__(self, entropy: int | tuple[int, ...]) -> None:
        self.entropy = entropy
        self._real: np.random.SeedSequence | None = None

    def real(self) -> np.random.SeedSequence:
        if self._real is None:
            self._real = _seed_sequence(self.entropy)
        return self._real

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> np.ndarray:
        if n_words == 4 and dtype is np.uint64:
            return _pcg64_words(self.entropy)
        return self.real().generate_state(n_words, dtype)

    def spawn(self, n_children: int) -> list[np.random.SeedSequence]:  # type: ignore[override]  # as default_rng's
        return self.real().spawn(n_children)


def _seed_sequence(entropy: int | tuple[int, ...]) -> np.random.SeedSequence:
    return np.random.SeedSequence(list(entropy) if isinstance(entropy, tuple) else int(entropy))  # np.int64 too


@functools.lru_cache(maxsize=4096)
def _pcg64_words(entropy: int | tuple[int, ...]) -> np.ndarray:
    """What ``SeedSequence(entropy).generate_state(4, np.uint64)`` gives (read-only: it is shared)."""
    words = _seed_sequence(entropy).generate_state(4, np.uint64)
    words.flags.writeable = False
    return words


@functools.lru_cache(maxsize=1024)
def _name_crc(path: str) -> int:
    """The file's name (any name: its bytes as the OS has them), hashed: once per file, not per trial."""
    return zlib.crc32(os.fsencode(Path(path).name))


def draw_integers(shape: tuple[int, ...], high: int, rng: np.random.Generator, distinct: bool = False) -> np.ndarray:
    """Integers uniform in 0 … high-1, with at least one repeated index whenever there are two
    entries: a ``scatter_add`` replaced by an overwrite, or by a sum over positions, must show. With
    ``distinct``, every entry different where the range allows (a claim right only where some index repeats,
    reading how often one does, must show too)."""
    size = math.prod(shape)
    if distinct and 2 <= size <= high:
        return rng.permutation(high)[:size].reshape(shape)
    out = rng.integers(0, max(high, 1), size=shape)
    if out.size >= 2:
        flat = out.reshape(-1)
        flat[-1] = flat[0]
    return out


def sample_input(inp: Input, shape: tuple[int, ...], rng: np.random.Generator,
                 sizes: Mapping[str, int] | None = None, distinct: bool = False) -> np.ndarray:
    """Draw one input from its domain; matrices are scaled by 1/√(last dim) to keep layers unsaturated
    (``distinct``: an index input's entries all different where its range allows, see :func:`draw_integers`)."""
    if inp.domain == "index":
        assert inp.range is not None, "the loader gives every index input its range"
        return draw_integers(shape, inp.range.value(sizes or {}), rng, distinct)
    if inp.domain == "binary":
        return rng.integers(0, 2, size=shape).astype(float)
    if inp.domain == "positive":
        return rng.lognormal(0.0, 0.5, size=shape)
    if inp.domain == "unit":
        return rng.uniform(0.05, 0.95, size=shape)
    if inp.domain == "simplex":
        g = np.exp(rng.normal(size=shape))
        return g / g.sum(axis=inp.axis, keepdims=True)
    if inp.domain == "onehot":
        out = np.zeros(shape)
        moved = np.moveaxis(out, inp.axis, 0)
        hot = rng.integers(0, shape[inp.axis], size=moved.shape[1:])
        np.put_along_axis(moved, hot[None, ...], 1.0, axis=0)
        return out
    # uniform on (-√3, √3): mean 0, variance 1, like a standard normal but about 4x cheaper to draw,
    # which matters at production widths where drawing W costs as much as the forward pass itself
    scale = 1.0 / math.sqrt(shape[-1]) if len(shape) >= 2 else 1.0  # math.sqrt: the same correctly rounded root
    return uniform(shape, 2.0 * math.sqrt(3.0) * scale, rng)


class Factored(MutableMapping[str, np.ndarray]):
    """Arrays by name, some kept factored (a :class:`LowRank`: a product's gradient ``g xᵀ``, or a claim
    ``grad_Z @ X.T`` over a short inner dimension, :func:`claim_value`). One is made dense the first time it is read by name;
    :meth:`factored` gives it as it is, to the passes of the check that read it block by block or through
    its factors."""

    def __init__(self) -> None:
        self._data: dict[str, np.ndarray | LowRank] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._data[name]
        if isinstance(value, LowRank):
            value = self._data[name] = value.dense()
        return value

    def factored(self, name: str) -> np.ndarray | LowRank:
        return self._data[name]

    def __contains__(self, name: object) -> bool:  # without reading the value (Mapping's reads it: made dense)
        return name in self._data

    def __setitem__(self, name: str, value: np.ndarray | LowRank) -> None:
        self._data[name] = value

    def __delitem__(self, name: str) -> None:
        del self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


Truths = Factored  # the true gradients by name


class _ClaimEnv(dict):
    """The values and ``grad_X`` names a claim reads; a factored true gradient is made dense only when a
    claim or helper reads it."""

    def __init__(self, values: Mapping[str, np.ndarray], grads: Truths) -> None:
        super().__init__(values)
        self._grads = grads

    def __missing__(self, key: str) -> np.ndarray:
        if key.startswith("grad_") and key[5:] in self._grads:
            value = self[key] = self._grads[key[5:]]
            return value
        raise KeyError(key)


@dataclass
class NumericRun:
    """One trial: every value, every true gradient, every claim's value."""

    sizes: dict[str, int]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    grads: Truths = field(default_factory=Truths)
    claims: Factored = field(default_factory=Factored)  # a product over a short inner dim stays factored
    claim_errors: dict[str, str] = field(default_factory=dict)
    loss: float = 0.0


def run_trial(d: Derivation, sizes: Mapping[str, int], rng: np.random.Generator, trial: int,
              self_check: bool = True) -> NumericRun:
    """Forward pass, true gradients, claims — at one dim assignment. ``self_check``: the reverse sweep is
    checked against forward mode (:func:`directional_check`); every true gradient is checked finite anyway."""
    backend = numeric_backend(d, trial)
    shapes = concrete_shapes(d, sizes)
    run = NumericRun(dict(sizes))
    for name, inp in d.inputs.items():
        run.values[name] = sample_input(inp, shapes[name], rng, sizes, distinct=trial % 2 == 1)
    upstream = {h: rng.standard_normal(size=shapes[h]) for h in d.loss.upstream}  # = rng.normal, without its loc/scale pass
    directions = int(rng.integers(2**63))  # the directions' seed, drawn after the inputs: they stay as before

    tapes: dict[str, Tape] = {}
    with np.errstate(all="ignore"), products_kept():  # a claim that is a product the sweep made reads it
        for definition in d.forward:
            tape = Tape()
            try:
                value = evaluate_definition(definition.root, definition.index, run.values, sizes, backend, tape)
            except DerivationError as exc:  # e.g. an index-form entry out of range: name the key
                raise exc.located(key=definition.key) from None
            _finite(value, definition.name, definition.text, quiet=True)
            run.values[definition.name] = value
            tapes[definition.name] = tape

        adjoints: dict[str, np.ndarray] = {}
        loss_tape = Tape()
        if d.loss.expression is not None:
            loss = evaluate(d.loss.expression, run.values, sizes, backend, loss_tape)
            _finite(loss, "E", d.loss.text, quiet=True)
            run.loss = float(loss)
            _sweep(loss_tape, d.loss.expression, np.asarray(1.0), adjoints, shapes)
        else:
            for h, g in upstream.items():
                adjoints[h] = g.copy()
            run.loss = float(sum(_sum(g * run.values[h]) for h, g in upstream.items()))
        for definition in reversed(d.forward):
            if definition.name not in adjoints:  # not a default argument: that would allocate it every time
                adjoints[definition.name] = np.zeros(shapes[definition.name])
            seed = adjoints[definition.name] = dense(adjoints[definition.name])
            run.grads[definition.name] = seed.copy()
            _sweep(tapes[definition.name], definition.root, seed, adjoints, shapes, definition.index, sizes)
        for name, inp in d.inputs.items():
            if not inp.constant:
                run.grads[name] = adjoints[name] if name in adjoints else np.zeros(shapes[name])
        if self_check:  # first: every grad finite
            directional_check(d, run, tapes, loss_tape, upstream, shapes, seeded_rng(directions))
        else:
            grads_finite(run)
        del tapes, loss_tape

        env = _ClaimEnv(run.values, run.grads)
        for helper in d.backward:
            try:
                env[helper.name] = evaluate_definition(helper.root, helper.index, env, sizes, backend)
            except (ArithmeticError, ValueError) as exc:
                env[helper.name] = np.full(shapes[helper.name], np.nan)
                run.claim_errors[helper.name] = str(exc)
        for claim in d.claims:
            if claim.error is not None or claim.node is None:
                continue
            try:
                claimed = claim_value(claim.node, claim.index, env, sizes, backend, shapes.get(claim.target))
            except DerivationError:
                raise
            except (ArithmeticError, ValueError) as exc:
                run.claim_errors[claim.name] = f"evaluating the claim failed: {exc}"
                continue
            shape = shapes.get(claim.target, claimed.shape)
            if isinstance(claimed, LowRank) and claimed.shape == shape:
                run.claims[claim.name] = claimed
            else:
                run.claims[claim.name] = broadcast_to(dense(claimed), shape)
    return run


def claim_value(node: Node, index: IndexDef | None, env: Mapping[str, np.ndarray], sizes: Mapping[str, int],
                backend: Backend, shape: tuple[int, ...] | None = None) -> np.ndarray | LowRank:
    """A claim's value (of ``shape`` if known), as :func:`evaluate_definition` gives it; except that a large
    product over a short inner dimension (``grad_Z @ X.T`` over a batch, ``outer(g, x)``: the truth's own
    rule, ``LowRank.of``) is kept factored, a :class:`LowRank` of its two operands, and that a product the
    reverse sweep made of the same operands (``W.T @ grad_Z``) is read, not made again (:func:`kept_product`).
    Made dense, a factored claim is the array the product gives: the same call of ``matmul`` on the same
    operands, or for one term per entry the same rounded multiply of each pair (a NaN or 0·inf included)."""
    op = OPS[node.op] if type(node) is Call else None
    if (index is not None or type(node) is not Call or op is None or op.factors is None or len(node.args) != 2
            or (shape is not None and math.prod(shape) < ops_core.LOW_RANK_MIN and not any_kept())):
        return evaluate_definition(node, index, env, sizes, backend)  # nothing to factor or to read
    a, b = (evaluate(arg, env, sizes, backend) for arg in node.args)
    factors = op.factors(np.asarray(a), np.asarray(b))
    if factors is not None and LowRank.worth(*factors):  # large, short and float64: the truth's own rule
        return LowRank(*factors)
    if op.reads_kept_products and type(a) is np.ndarray and type(b) is np.ndarray:
        kept = kept_product(a, b)  # the truth's own product of the same operands (W.T @ grad_Z): made once
        if kept is not None:
            return kept
    return backend.wrap(op.numeric(a, b, **node.params))


def _sweep(*args) -> None:
    """The reverse sweep; an op without a derivative rule is an internal error, never a zero."""
    try:
        backprop(*args)
    except MissingRule as exc:
        raise TruthMismatch(f"internal error: {exc}; please report this file", "E") from None


def grads_finite(run: NumericRun) -> None:
    """Raise :class:`NumericProblem` if a true gradient has a NaN or an Inf, in the order the gradients were
    made: one sum over each (a product kept factored, through its factors' bound where it holds)."""
    for name in run.grads:
        g = run.grads.factored(name)
        if not (isinstance(g, LowRank) and g.bounded()):
            _finite(run.grads[name], f"grad_{name}", "the true gradient", quiet=True)


def directional_check(d: Derivation, run: NumericRun, tapes: Mapping[str, Tape], loss_tape: Tape,
                      upstream: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
                      rng: np.random.Generator) -> None:
    """Raise :class:`TruthMismatch` unless forward mode agrees with the reverse sweep (see
    :mod:`.directional`): ``dE = Σ_x ⟨grad_x, d_x⟩ + Σ_f ⟨grad_f, v_f⟩`` for random ±1 directions.

    First, :class:`NumericProblem` if a true gradient has a NaN or an Inf: the inner products read
    every gradient once, and a finite ``‖grad‖·‖d‖`` proves it finite without another pass (a trial not
    checked in forward mode reads :func:`grads_finite` instead)."""
    varied = [name for name, inp in d.inputs.items() if not inp.constant]
    drawn = directions([shapes[name] for name in varied] + [shapes[f.name] for f in d.forward], rng)
    dirs = dict(zip(varied, drawn))
    own = {f.name: v for f, v in zip(d.forward, drawn[len(varied):])}
    products = {x: inner(run.grads.factored(x), v) for x, v in dirs.items()}
    products.update({f: inner(run.grads.factored(f), v) for f, v in own.items()})
    for name in run.grads:  # in the order the gradients were made, as before
        value, size = products[name]
        if not (math.isfinite(value) and math.isfinite(size)):
            _finite(run.grads[name], f"grad_{name}", "the true gradient", quiet=True)  # the exact test (the product may only overflow)
    total: dict[str, np.ndarray] = {}

    def var_tangent(name: str) -> Tangent:
        return dirs[name] if name in dirs else total.get(name)

    try:
        for f in d.forward:
            t = tangent_of(tapes[f.name], var_tangent, f.index, run.sizes, shapes[f.name])
            total[f.name] = _add_tangent(t, own[f.name], shapes[f.name])
        if d.loss.expression is not None:
            t_loss = tangent_of(loss_tape, var_tangent)
            forward = 0.0 if t_loss is None else float(np.sum(dense(t_loss)))
            size = 0.0
        else:
            parts = [inner(g, total[h]) for h, g in upstream.items()]
            forward, size = sum(p[0] for p in parts), sum(p[1] for p in parts)
    except (ArithmeticError, ValueError, TypeError, MissingRule) as exc:
        raise TruthMismatch(f"internal error: the forward-mode pass failed ({exc}); please report this file",
                            "E") from None
    terms = list(products.values())
    reverse = sum(t[0] for t in terms)
    # Terms that cancel inside the loss itself (E = sum(softmax(z)) ≡ 1, logsumexp(log_softmax(z)) ≡ 0)
    # leave a rounding residue in forward mode that no gradient norm accounts for: the sizes of the
    # tangents entering the loss, and |E|, join the scale.
    entering = sum(_norm(dense(t)) for t in total.values() if t is not None)
    scale = sum(t[1] for t in terms) + size + abs(forward) + abs(run.loss) + entering
    entries = sum(math.prod(s) for s in shapes.values())
    if not abs(forward - reverse) <= tolerance(scale, entries):
        _ill_conditioned(d, run)
        raise TruthMismatch(
            f"internal error: the reverse-mode gradients disagree with a forward-mode directional derivative "
            f"(dE {forward:.17g} by forward mode, {reverse:.17g} by the reverse sweep); this is a bug in "
            f"backpropcheck, not in the derivation — please report this file",
            "E",
        )


def _norm(x: np.ndarray) -> float:
    """``float(np.linalg.norm(x))``, the same number (√ of one dot product of the flat entries) without its
    checks of arguments that are never given here."""
    if type(x) is not np.ndarray or x.dtype != np.float64:
        return float(np.linalg.norm(x))
    flat = x.ravel(order="K")
    return math.sqrt(float(flat.dot(flat)))


ILL_CONDITIONED = 1e6  # a forward value this large has an absolute rounding error above 1e-10


def _ill_conditioned(d: Derivation, run: NumericRun) -> None:
    """Raise :class:`NumericProblem` when the two derivatives may disagree by conditioning alone.

    With a forward value of magnitude 1e12, float64 carries it to about 1e-4, so functions of it
    (cos(z), a softmax of differences) lose every digit a derivative needs: the file is reported
    like a NaN (rescale, or declare a domain), not as a bug of backpropcheck.
    """
    for f in d.forward:
        peak = float(np.max(np.abs(run.values[f.name]))) if np.size(run.values[f.name]) else 0.0
        if peak > ILL_CONDITIONED:
            raise NumericProblem(
                f"{f.name} = {f.text} reaches {peak:.3g} at the sampled values, too large for float64 "
                f"derivatives to agree to rounding (the forward-mode and reverse checks differ); "
                f"rescale the expression or declare a domain",
                f.name,
            )
    if abs(run.loss) > ILL_CONDITIONED:
        raise NumericProblem(
            f"the loss reaches {run.loss:.3g} at the sampled values, too large for float64 derivatives to "
            f"agree to rounding (the forward-mode and reverse checks differ); rescale it or declare a domain",
            "E",
        )


def _add_tangent(t: Tangent, v: np.ndarray | Rank1, shape: tuple[int, ...]) -> np.ndarray:
    own = dense(v)
    if t is None:
        return own.copy()
    tangent: np.ndarray = dense(t)
    return (tangent if np.shape(tangent) == shape else np.broadcast_to(tangent, shape)) + own


def _sum(value: np.ndarray) -> np.floating:
    """``np.sum`` of an array, the same reduction (``np.add.reduce`` over every axis) without its Python
    layers of argument handling."""
    return _ADD_REDUCE(value, None)


_ADD_REDUCE = np.add.reduce


def _finite(value: np.ndarray, name: str, text: str, quiet: bool = False) -> None:
    """Raise :class:`NumericProblem` if ``value`` has a NaN or an Inf. ``quiet``: the caller ignores
    floating-point errors already (run_trial's errstate), so the sum needs no errstate of its own."""
    if quiet:
        total = _sum(value) if type(value) is np.ndarray else np.sum(value)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            total = _sum(value) if type(value) is np.ndarray else np.sum(value)
    if math.isfinite(total):
        return  # a NaN or an Inf would make the sum NaN or Inf; no entry-sized temporary
    if not np.all(np.isfinite(value)):
        bad = "NaN" if np.any(np.isnan(value)) else "Inf"
        raise NumericProblem(
            f"{name} = {text} is {bad} at the sampled values; if it needs positive or (0, 1) inputs, "
            f"declare a domain, e.g. x = {{ shape = [...], domain = \"positive\" }}",
            name,
        )


CHUNK = 1 << 18  # entries per block in compare(): temporaries stay small at production widths

# The default [check] tolerances: the one rule of "close enough" is close_entries() below.
RTOL = DEFAULT_RTOL
ATOL = DEFAULT_ATOL


def entry_tolerance(truth: np.ndarray, scale: float, rtol: float, atol: float) -> np.ndarray:
    """What each entry may differ by: ``atol + rtol·(|truth| + scale)``, ``scale`` = max|truth|; taken as
    ``atol + rtol·|truth| + rtol·scale``, as ``|truth| + scale`` overflows to inf near the float64 limit
    and an inf difference would then pass."""
    return atol + rtol * np.abs(truth) + rtol * scale


def close_entries(claimed: np.ndarray, truth: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> np.ndarray:
    """Entry-wise "close enough" (a boolean array of ``truth``'s shape), by the rule :func:`compare`
    applies: the tolerance is scaled by the tensor's largest true entry. NaN/Inf is never close."""
    truth = np.asarray(truth, dtype=float)
    claimed = np.broadcast_to(np.asarray(claimed, dtype=float), truth.shape)
    scale = float(np.max(np.abs(truth))) if truth.size else 0.0
    with np.errstate(invalid="ignore"):
        return np.isfinite(claimed) & (np.abs(claimed - truth) <= entry_tolerance(truth, scale, rtol, atol))


def is_close(claimed: np.ndarray, truth: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """True when every entry is close (:func:`close_entries`); arrays of different shapes never are."""
    if np.shape(claimed) != np.shape(truth):
        return False
    return bool(np.all(close_entries(claimed, truth, rtol, atol)))


def compare(claimed: np.ndarray | LowRank, truth: np.ndarray | LowRank, rtol: float,
            atol: float) -> tuple[bool, float, float, tuple]:
    """Entry-wise agreement, scaled by the tensor's largest true entry.

    A rounding error in float64 is about 1e-16 of the terms summed into an entry;
    scaling the tolerance by max|truth| keeps entries that cancel to near zero
    from raising false alarms, while any real mistake moves an entry by O(max|truth|).
    Returns (ok, max abs error, max relative error, index of the worst entry — when not ok).
    Large tensors are compared in blocks of rows, with the same results; a factored claim or truth
    (:class:`LowRank`) is read through its factors, and made dense only for the exact test of a claim
    not accepted at once.
    """
    if type(claimed) is np.ndarray and type(truth) is np.ndarray and claimed.shape == truth.shape:
        return _compare_entries(claimed, truth, rtol, atol)  # the common case: two arrays, nothing factored
    if claimed.shape != truth.shape:
        claimed = np.broadcast_to(dense(claimed), truth.shape)
    if isinstance(truth, LowRank) or isinstance(claimed, LowRank):  # the fast accept reads them by blocks
        if same_product(claimed, truth):  # every entry the same finite number: no error at all
            return True, 0.0, 0.0, (0, 0)
        if truth.size:
            max_abs, scale = largest(claimed, truth)
            if max_abs <= atol + rtol * scale:
                return True, max_abs, (max_abs / scale if scale > 0 else 0.0), (0, 0)
        return _compare_entries(dense(claimed), dense(truth), rtol, atol)  # not accepted at once: the exact test
    return _compare_entries(claimed, truth, rtol, atol)


def _compare_entries(claimed: np.ndarray, truth: np.ndarray, rtol: float,
                     atol: float) -> tuple[bool, float, float, tuple]:
    """:func:`compare` of two arrays of the same shape."""
    if truth.size == 0:
        return True, 0.0, 0.0, ()
    if truth.ndim == 0:
        ok, max_abs, max_rel, _ = compare(claimed.reshape(1), truth.reshape(1), rtol, atol)
        return ok, max_abs, max_rel, ()
    # Fast accept: every entry's tolerance is at least atol + rtol·max|truth|, so a largest error
    # below that passes every entry; only then is the per-entry test (and the worst index) needed.
    # NaN and Inf fail this test (a NaN difference makes max_abs NaN) and take the path below.
    max_abs, scale = largest(claimed, truth)
    if max_abs <= atol + rtol * scale:
        return True, max_abs, (max_abs / scale if scale > 0 else 0.0), (0,) * truth.ndim
    blocks = _blocks(truth.shape)
    for lo, hi in blocks:
        finite = np.isfinite(claimed[lo:hi])
        if not np.all(finite):
            flat = int(np.argmax(~finite)) + lo * (truth.size // truth.shape[0] if truth.ndim else 0)
            idx = np.unravel_index(flat, truth.shape)
            return False, float("inf"), float("inf"), tuple(int(i) for i in idx)
    scale = max(float(np.max(np.abs(truth[lo:hi]))) for lo, hi in blocks)
    ok, max_abs, worst_value, worst = True, 0.0, -np.inf, 0
    row = truth.size // truth.shape[0] if truth.ndim else 1
    for lo, hi in blocks:
        t = truth[lo:hi]
        err = np.abs(claimed[lo:hi] - t)
        tol = entry_tolerance(t, scale, rtol, atol)
        excess = err - tol
        k = int(np.argmax(excess))
        if excess.flat[k] > worst_value:
            worst_value, worst = float(excess.flat[k]), k + lo * row
        max_abs = max(max_abs, float(np.max(err)))
        ok = ok and bool(np.all(err <= tol))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    index = np.unravel_index(worst, truth.shape)
    return ok, max_abs, max_rel, tuple(int(i) for i in index)


def _blocks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Row ranges of at most ~CHUNK entries (one range when the tensor is small)."""
    size = int(np.prod(shape))
    if size <= CHUNK:
        return [(0, shape[0])]
    rows = max(1, CHUNK // (size // shape[0]))
    return [(lo, min(lo + rows, shape[0])) for lo in range(0, shape[0], rows)]
