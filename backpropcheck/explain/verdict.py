"""The checker's verdict on a claim, and for a refuted claim the true entries beside the claimed ones."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sympy as sp  # type: ignore[import-untyped]

from ..checker import DEFAULTS, ClaimResult, Counterexample, Options, draw_dims, settings
from ..engines.evaluate import evaluate_definition
from ..engines.numeric import close_entries
from ..engines.symbolic import SymbolicTruth
from ..model import Claim, Derivation
from .analysis import Analysis
from .document import Explanation, Grid, Math
from .jacobian import same
from .printing import concrete_rename, dims_text, render, tex_name


def verdict(out: Explanation, d: Derivation, c: Claim, r: ClaimResult | None, sizes: dict[str, int],
             a: Analysis | None, file_error: str | None = None) -> None:
    out.heading("4. Verdict on the claim", 3)
    if r is None:
        out.para(f"(no verdict: the file could not be checked: {file_error or 'unknown error'})")
        return
    expected = "" if r.expected == "holds" else f" (the file expects {r.expected})"
    out.para(f"{c.name} = {c.text}: {r.verdict.upper()}{expected}. {r.message}")
    scope = (r.symbolic or {}).get("scope") if r.verdict == "proved" else None
    if scope is not None:  # SPEC §8: for every shape, or only at the sampled ones, and why
        which = "for all shapes" if scope == "all-shapes" else "at the sampled shapes only"
        out.para(f"Scope: proved {which} — {(r.symbolic or {}).get('argument', '')}.")
    if r.diagnosis:
        out.para(f"Diagnosis: {r.diagnosis}.")
    if r.verdict == "refuted" and c.node is not None:
        _refutation(out, d, c, r.counterexample, sizes, a)


def _refutation(out: Explanation, d: Derivation, c: Claim, cex: Counterexample | None, sizes: dict[str, int],
                a: Analysis | None) -> None:
    """A refuted claim: the grid of true vs claimed entries (at the checker's dims when these hide the
    mistake), then the first mismatching entries in per-neuron symbols."""
    cfg = settings(d, Options())  # the file's own [check] settings, as the checker read them
    max_dim, tolerance = cfg["max_dim"], (cfg["rtol"], cfg["atol"])
    grid = numeric_grid(d, c, sizes, cex, max_dim, tolerance)
    if (grid is None or not any(any(row) for row in grid.bad)) and cex is not None and cex.dims \
            and cex.dims != sizes and all(v <= 6 for v in cex.dims.values()):
        out.para(f"(At the walk-through's dims {dims_text(sizes)} this claim happens to agree; the checker's "
                 f"counterexample is at dims {dims_text(cex.dims)}.)")
        grid = numeric_grid(d, c, cex.dims, cex, max_dim, tolerance)  # these dims hide the mistake, not the checker's
    if grid is not None:
        out.para("True entries next to the claimed ones (mismatches marked):")
        out.add_grid(grid)
    if a is not None:
        for line in symbolic_mismatches(a, c):
            out.math(line)


def numeric_grid(d: Derivation, c: Claim, sizes: Mapping[str, int], cex: Counterexample | None = None,
                 max_dim: int = 64, tolerance: tuple[float, float] | None = None) -> Grid | None:
    """True vs claimed entries from one numeric trial at ``sizes`` (None if the claim cannot be evaluated).

    With a counterexample at these dims, the grid replays its very trial: its true and claimed
    values are entries of the grid. An entry is marked as the checker's comparison would judge it,
    at ``tolerance`` = (rtol, atol) (the checker's defaults when not given)."""
    from ..engines.numeric import rng_for, run_trial

    try:
        if cex is not None and isinstance(cex.trial, int) and cex.dims == dict(sizes):
            rng = rng_for(cex.seed, d.path, cex.trial)
            draw_dims(d, rng, 2, max(2, max_dim), dict(sizes))  # as the checker's trial drew them
            run = run_trial(d, dict(sizes), rng, cex.trial)
        else:
            run = run_trial(d, dict(sizes), rng_for(0, d.path, 300_000), 0)
    except Exception:  # noqa: BLE001 - the grid is an illustration; the verdict stands without it
        return None
    if c.name not in run.claims:
        return None
    true = np.asarray(run.grads[c.target], dtype=float)
    claimed = np.asarray(np.broadcast_to(run.claims[c.name], true.shape), dtype=float)
    if true.ndim > 2 or true.size > 64:
        return None
    t2 = true.reshape(-1, 1) if true.ndim < 2 else true
    c2 = claimed.reshape(-1, 1) if claimed.ndim < 2 else claimed
    rtol, atol = tolerance or (DEFAULTS["rtol"], DEFAULTS["atol"])
    bad = mismatched_entries(c2, t2, rtol, atol)
    dims = dims_text(sizes)
    with np.errstate(all="ignore"):
        ratio = [[f"{c / t:.3f}" if abs(t) > 1e-12 else "—" for c, t in zip(rc, rt)] for rc, rt in zip(c2, t2)]
    return Grid(f"grad_{c.target} at dims {dims} (random inputs; rows × columns as in {c.target})",
                [[f"{x:.3f}" for x in row] for row in t2], [[f"{x:.3f}" for x in row] for row in c2],
                bad.tolist(), ratio)


def mismatched_entries(claimed: np.ndarray, true: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """The entries the checker's comparison rejects: the numeric engine's one rule of "close enough"
    (:func:`~backpropcheck.engines.numeric.close_entries`, scaled by the tensor's largest true entry)."""
    return ~close_entries(claimed, true, rtol, atol)


def symbolic_mismatches(a: Analysis, c: Claim, limit: int = 2) -> list[Math]:
    """The first mismatching entries, true vs claimed, in per-neuron symbols: the claim read as the
    symbolic engine judges one chain-rule step (each ``∇v`` an atom), beside the engine's step."""
    truth = a.truth
    steps = truth.steps.get(c.target)
    if steps is None or c.node is None:
        return []
    try:
        claimed = np.broadcast_to(evaluate_definition(c.node, c.index, truth.step_env, a.sizes, truth.backend),
                                  steps.shape)
    except Exception:  # noqa: BLE001 - an illustration; the verdict stands without it
        return []
    out = []
    for idx in np.ndindex(*steps.shape):
        t = sp.sympify(claimed[idx], strict=True)
        shown = _in_claims_atoms(truth, t, steps[idx])
        if _identical(truth, t, shown) or same(truth.full(t), truth.full(truth.grads[c.target][idx])):
            continue
        lhs = f"[{','.join(map(str, idx))}]" if idx else ""
        tt = render(shown, concrete_rename)
        cc = render(t, concrete_rename)
        out.append(Math(f"true ∇{c.target}{lhs} = {tt.text}    claimed = {cc.text}",
                        rf"\text{{true }} (\nabla {tex_name(c.target)})_{{{','.join(map(str, idx))}}} = {tt.tex}"
                        rf"\qquad \text{{claimed}} = {cc.tex}"))
        if len(out) >= limit:
            break
    return out


def _identical(truth: SymbolicTruth, a: sp.Expr, b: sp.Expr) -> bool:
    """The engine's identity test over its atoms (the one behind its one-step proof), for one entry."""
    pair = np.empty((2,), dtype=object)
    pair[0], pair[1] = a, b
    return truth.identical_over_atoms(pair[:1], pair[1:])


def _in_claims_atoms(truth: SymbolicTruth, claimed: sp.Expr, step: sp.Expr) -> sp.Expr:
    """The one-step truth; for a claim that skips steps, its gradient atoms on the way to the ones the
    claim reads are replaced by their own steps, as the engine's chain proof does (``∇xp`` by its step
    when the claim reads ``∇y`` one variable later). Atoms of a path that never reaches what the claim
    reads (a sibling gate's ``∇i`` for a claim reading ``∇f``) stay, so the two can be compared."""
    read = _gradient_tensors(truth, claimed)
    if read <= _gradient_tensors(truth, step):
        return step
    leads = _leading_to(truth, read)
    for _ in range(len(truth.order) + 1):
        deeper = {s: truth.grad_atoms[s] for s in step.free_symbols
                  if s in truth.grad_atoms and _tensor_of(s) in leads}
        if not deeper:
            break
        step = step.xreplace(deeper)
    return step


def _tensor_of(atom: sp.Symbol) -> str:
    return str(atom.name).split("[")[0]


def _gradient_tensors(truth: SymbolicTruth, e: sp.Expr) -> set[str]:
    return {_tensor_of(s) for s in e.free_symbols if s in truth.grad_atoms}


def _leading_to(truth: SymbolicTruth, read: set[str]) -> set[str]:
    """The gradient tensors not in ``read`` whose steps lead, step after step, to one in ``read``."""
    feeds: dict[str, set[str]] = {}  # ∇v -> the gradient tensors its step is written with
    for atom, step in truth.grad_atoms.items():
        feeds.setdefault(_tensor_of(atom), set()).update(_gradient_tensors(truth, step))
    leads: set[str] = set()
    grew = True
    while grew:
        grew = False
        for name, used in feeds.items():
            if name not in read and name not in leads and used & (read | leads):
                leads.add(name)
                grew = True
    return leads
