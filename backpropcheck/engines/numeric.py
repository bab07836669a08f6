"""The NumPy engine: inputs drawn from their domains, the forward pass, the true
gradients by one reverse sweep of the op table's vector-Jacobian products, and
the claims evaluated with every ``grad_X`` bound to its true value.

The truth is independent of the claims; the directional check in
:func:`directional_check` verifies it against complex-step derivatives, which
need only the forward evaluation.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import DerivationError
from ..lang.ir import Const
from ..lang.ops import ELEMENTWISE, GENERIC_STANDINS, Elementwise
from ..model import Derivation, Input
from .evaluate import Backend, Tape, backprop, evaluate, evaluate_definition


class NumericProblem(Exception):
    """NaN or Inf where the math has a finite value: reported, never a verdict."""

    def __init__(self, message: str, variable: str):
        super().__init__(message)
        self.variable = variable


def standin_for(name: str, trial: int) -> tuple[str, Elementwise]:
    """The concrete smooth function that plays a generic ``f`` in this trial."""
    label, f, fprime = GENERIC_STANDINS[(trial + zlib.crc32(name.encode())) % len(GENERIC_STANDINS)]
    return label, Elementwise(name, f, fprime, lambda u: u)


def numeric_backend(derivation: Derivation, trial: int) -> Backend:
    generic = {name: standin_for(name, trial)[1] for name in derivation.functions}

    def functions(name: str) -> Elementwise:
        return generic[name] if name in generic else ELEMENTWISE[name]

    def const(node: Const) -> float:
        return node.value

    return Backend(symbolic=False, functions=functions, const=const, scalar=float)


def rng_for(seed: int, path: str, trial: int) -> np.random.Generator:
    """One generator per (seed, file, trial): reports never depend on run order or --jobs."""
    from pathlib import Path

    return np.random.default_rng([seed, zlib.crc32(Path(path).name.encode()), trial])


def sample_input(inp: Input, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw one input from its domain; matrices are scaled by 1/√(last dim) to keep layers unsaturated."""
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
    scale = 1.0 / np.sqrt(shape[-1]) if len(shape) >= 2 else 1.0
    return rng.normal(size=shape) * scale


@dataclass
class NumericRun:
    """One trial: every value, every true gradient, every claim's value."""

    sizes: dict[str, int]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    claims: dict[str, np.ndarray] = field(default_factory=dict)
    claim_errors: dict[str, str] = field(default_factory=dict)
    loss: float = 0.0


def concrete_shapes(d: Derivation, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    names = list(d.inputs) + [f.name for f in d.forward + d.backward]
    return {n: tuple(dim.value(sizes) for dim in d.shape_of(n)) for n in names}


def run_trial(d: Derivation, sizes: Mapping[str, int], rng: np.random.Generator, trial: int) -> NumericRun:
    """Forward pass, true gradients, claims — at one dim assignment."""
    backend = numeric_backend(d, trial)
    shapes = concrete_shapes(d, sizes)
    run = NumericRun(dict(sizes))
    for name, inp in d.inputs.items():
        run.values[name] = sample_input(inp, shapes[name], rng)
    upstream = {h: rng.normal(size=shapes[h]) for h in d.loss.upstream}

    tapes: dict[str, Tape] = {}
    with np.errstate(all="ignore"):
        for definition in d.forward:
            tape = Tape()
            value = evaluate_definition(definition.root, definition.index, run.values, sizes, backend, tape)
            _finite(value, definition.name, definition.text)
            run.values[definition.name] = value
            tapes[definition.name] = tape

        adjoints: dict[str, np.ndarray] = {}
        if d.loss.expression is not None:
            tape = Tape()
            loss = evaluate(d.loss.expression, run.values, sizes, backend, tape)
            _finite(loss, "E", d.loss.text)
            run.loss = float(loss)
            backprop(tape, d.loss.expression, np.asarray(1.0), adjoints, shapes)
        else:
            for h, g in upstream.items():
                adjoints[h] = g.copy()
            run.loss = float(sum(np.sum(g * run.values[h]) for h, g in upstream.items()))
        for definition in reversed(d.forward):
            seed = adjoints.setdefault(definition.name, np.zeros(shapes[definition.name]))
            run.grads[definition.name] = seed.copy()
            backprop(tapes[definition.name], definition.root, seed, adjoints, shapes, definition.index, sizes)
        for name, inp in d.inputs.items():
            if not inp.constant:
                run.grads[name] = adjoints.get(name, np.zeros(shapes[name]))
        for name, g in run.grads.items():
            _finite(g, f"grad_{name}", "the true gradient")

        env = dict(run.values)
        env.update({f"grad_{n}": g for n, g in run.grads.items()})
        for helper in d.backward:
            try:
                env[helper.name] = evaluate(helper.root, env, sizes, backend)
            except (ArithmeticError, ValueError) as exc:
                env[helper.name] = np.full(shapes[helper.name], np.nan)
                run.claim_errors[helper.name] = str(exc)
        for claim in d.claims:
            if claim.error is not None or claim.node is None:
                continue
            try:
                value = evaluate(claim.node, env, sizes, backend)
            except DerivationError:
                raise
            except (ArithmeticError, ValueError) as exc:
                run.claim_errors[claim.name] = f"evaluating the claim failed: {exc}"
                continue
            run.claims[claim.name] = np.broadcast_to(value, shapes.get(claim.target, value.shape))
    return run


def _finite(value: np.ndarray, name: str, text: str) -> None:
    if not np.all(np.isfinite(value)):
        bad = "NaN" if np.any(np.isnan(value)) else "Inf"
        raise NumericProblem(
            f"{name} = {text} is {bad} at the sampled values; if it needs positive or (0, 1) inputs, "
            f"declare a domain, e.g. x = {{ shape = [...], domain = \"positive\" }}",
            name,
        )


def compare(claimed: np.ndarray, truth: np.ndarray, rtol: float, atol: float) -> tuple[bool, float, float, tuple]:
    """Entry-wise agreement, scaled by the tensor's largest true entry.

    A rounding error in float64 is about 1e-16 of the terms summed into an entry;
    scaling the tolerance by max|truth| keeps entries that cancel to near zero
    from raising false alarms, while any real mistake moves an entry by O(max|truth|).
    Returns (ok, max abs error, max relative error, index of the worst entry).
    """
    if claimed.shape != truth.shape:
        claimed = np.broadcast_to(claimed, truth.shape)
    err = np.abs(claimed - truth)
    if err.size == 0:
        return True, 0.0, 0.0, ()
    if not np.all(np.isfinite(claimed)):
        idx = np.unravel_index(int(np.argmax(~np.isfinite(claimed))), claimed.shape)
        return False, float("inf"), float("inf"), tuple(int(i) for i in idx)
    scale = float(np.max(np.abs(truth)))
    tol = atol + rtol * (np.abs(truth) + scale)
    worst = np.unravel_index(int(np.argmax(err - tol)), err.shape)
    max_abs = float(np.max(err))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return bool(np.all(err <= tol)), max_abs, max_rel, tuple(int(i) for i in worst)
