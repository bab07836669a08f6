"""The four-part walk-through of each claim: the per-neuron chain rule, the Jacobian route, the
stacking into matrix form, and the verdict (see :mod:`backpropcheck.explain`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..checker import FileResult, Options, SymbolicTimeout, check_derivation, draw_dims, time_budget
from ..loader import load
from ..model import Claim, Derivation
from .analysis import Analysis
from .chainrule import ChainRule
from .document import Explanation, Math, code
from .forms import Form, opaque, tensor
from .printing import dims_text, shape_text, tex_name
from .structure import Structure
from .verdict import verdict

SMALL_DIMS = (3, 2, 4, 5, 6)  # distinct, so no layer is square by coincidence; at most explain's largest dim


def small_sizes(d: Derivation, given: Mapping[str, int] | None = None) -> dict[str, int]:
    """Small distinct dims for the walk-through: the given ones, else 3, 2, 4, 5, 6 (every shape ≥ 1).

    One explanation uses these dims throughout: walk-through, verdict, counterexample and grid."""
    given = {k: v for k, v in (given or {}).items() if k in d.dims}
    sizes = dict(given)
    unused = [v for v in SMALL_DIMS if v not in given.values()]
    for n in (n for n in d.dims if n not in given):
        sizes[n] = unused.pop(0) if unused else 2
    names = list(d.inputs) + [f.name for f in d.forward + d.backward]
    if all(dim.value(sizes) >= 1 for n in names for dim in d.shape_of(n)):
        return {n: sizes[n] for n in d.dims}
    rng = np.random.default_rng(0)
    return draw_dims(d, rng, 2, max(SMALL_DIMS), given)


def _at_these_dims(d: Derivation, opts: Options, checked: FileResult, sizes: dict[str, int]) -> FileResult:
    """A claim refuted at other dims is refuted again at the walk-through's ``sizes`` when it can be,
    so the counterexample, the grid and the walk-through show one set of dims; so is one refuted at these
    dims by the checker's localisation, whose small trial the grid cannot replay (it replays a numbered one)."""
    from dataclasses import replace

    elsewhere = {r.name for r in checked.claims
                 if r.verdict == "refuted" and r.counterexample is not None
                 and (r.counterexample.dims != sizes or not isinstance(r.counterexample.trial, int))}
    if not elsewhere:
        return checked
    try:
        # numeric only: a refutation is numeric, and only the refuted claims' results are taken
        again = check_derivation(d, replace(opts, dims=tuple(sizes.items()), symbolic=False))
    except Exception:  # noqa: BLE001 - the first verdicts stand
        return checked
    here = {r.name: r for r in again.claims if r.name in elsewhere and r.verdict == "refuted"
            and r.counterexample is not None and r.counterexample.dims == sizes}
    checked.claims = [here.get(r.name, r) for r in checked.claims]
    return checked


def explain_file(path: str | Path, claim: str | None = None, sizes: Mapping[str, int] | None = None,
                 options: Options | None = None) -> Explanation:
    """Load ``path`` (within ``options.limits``) and explain it (see :func:`explain_derivation`)."""
    return explain_derivation(load(path, options.limits) if options else load(path), claim, sizes, options)


def explain_derivation(d: Derivation, claim: str | None = None, sizes: Mapping[str, int] | None = None,
                       options: Options | None = None) -> Explanation:
    """The four-part explanation of every claim of ``d`` (or only ``claim``)."""
    with d.shape_rules():
        return _explain(d, claim, sizes, options)


def _explain(d: Derivation, claim: str | None, sizes: Mapping[str, int] | None,
             options: Options | None) -> Explanation:
    claims = [c for c in d.claims if claim is None or c.name == claim]
    if claim is not None and not claims:
        known = ", ".join(c.name for c in d.claims)
        raise KeyError(f"no claim {claim!r} in {d.path} (claims: {known})")
    unknown = sorted(set(sizes or {}) - set(d.dims))
    sizes = small_sizes(d, sizes)
    out = Explanation(d.title, d.path, sizes)
    if unknown:  # as check says it: a misspelt dim is not silently dropped
        out.para(f"(--dims names {', '.join(unknown)}, which this file does not declare.)")
    _preamble(out, d, sizes)
    opts = options or Options(trials=5, shapes=1, timeout=10.0)
    checked = _at_these_dims(d, opts, check_derivation(d, opts), sizes)
    results = {r.name: r for r in checked.claims}
    out.results = [results[c.name] for c in claims if c.name in results]
    out.error = checked.error if checked.status == "error" and not checked.claims else None
    analysis, problem = _analysis(d, sizes, opts.timeout)
    for c in claims:
        out.heading(f"{c.name} = ", 2, code(c.text))
        if analysis is None:
            out.para(f"(The per-neuron walk-through is not available for this file at dims {dims_text(sizes)}: "
                     f"{problem}.)")
        elif c.target in analysis.arrays and not (c.target in d.inputs and d.inputs[c.target].constant):
            _walk_claim(out, analysis, c, opts.timeout)
        verdict(out, d, c, results.get(c.name), sizes, analysis, checked.error)
    return out


def _preamble(out: Explanation, d: Derivation, sizes: Mapping[str, int]) -> None:
    """The file's summary, its shapes, its loss, and the layouts the walk-through uses."""
    if d.summary:
        out.para(" ".join(d.summary.split()))
    shapes = "; ".join(f"{n} {shape_text(d.shape_of(n))}" for n in list(d.inputs) + [f.name for f in d.forward])
    out.para(f"Shapes: {shapes}. Worked at small dims {dims_text(sizes)}; entries are 0-based.")
    if d.loss.upstream:
        given = ", ".join(f"∇{h} = ∂E/∂{h}" for h in d.loss.upstream)
        out.para(f"Loss: E is unknown beyond {', '.join(d.loss.upstream)}; {given} is given (upstream mode).")
    else:
        out.para("Loss: ", code(f"E = {d.loss.text}"), ".")
    out.para("Layout: a Jacobian ∂v/∂u is in numerator layout — one row per entry of v, one column per entry "
             "of u. A gradient ∇u = ∂E/∂u is in denominator layout — it has u's own shape (a column for a "
             "vector). The chain rule ∂E/∂u = ∂E/∂v · ∂v/∂u multiplies a row by the Jacobian; written for the "
             "column ∇u it is its transpose, ", Math("∇u = (∂v/∂u)ᵀ ∇v",
                                                    r"\nabla u = \left(\frac{\partial v}{\partial u}\right)^\top"
                                                    r" \nabla v"), ".")


def _analysis(d: Derivation, sizes: Mapping[str, int], timeout: float) -> tuple[Analysis | None, str | None]:
    """The per-neuron truth within the time budget, or None and why not."""
    try:
        with time_budget(timeout):
            return Analysis(d, sizes), None
    except SymbolicTimeout:
        return None, f"building the per-neuron truth ran past the {timeout:g} s budget (--timeout)"
    except Exception as exc:  # noqa: BLE001 - the verdicts still stand without the walk-through
        return None, str(exc) or type(exc).__name__


def _walk_claim(out: Explanation, analysis: Analysis, c: Claim, timeout: float) -> None:
    """Parts 1-3 for one claim, best effort: the verdict follows whatever happens here."""
    try:  # the true gradient does not depend on the claim: explain it even for an ill-shaped claim
        with time_budget(timeout):
            _explain_claim(out, analysis, c)
    except SymbolicTimeout:
        out.para(f"(The walk-through stopped at its {timeout:g} s budget; raise it with --timeout.)")
    except Exception as exc:  # noqa: BLE001 - explain is best effort on exotic files; the verdict stands
        out.para(f"(The walk-through stopped early: {type(exc).__name__}: {exc}.)")


def _explain_claim(out: Explanation, a: Analysis, c: Claim) -> None:
    x = c.target
    consumers = a.consumers(x)
    in_loss, upstream = x in a.loss_reads, x in a.d.loss.upstream
    out.heading("1. Per neuron: the scalar chain rule", 3)
    structures = {v: a.structure(v, x) for v in consumers}
    rule = ChainRule.of(a, x)
    if upstream:
        rule.add_upstream()
    if in_loss:
        rule.add_loss()
    for v in consumers:
        rule.add_consumer(v)
    rule.write(out)
    out.heading("2. The Jacobian route", 3)
    _route_part(out, a, x, structures)
    out.heading("3. Stacking into the matrix form", 3)
    terms: list[Form] = [tensor(a.d, f"grad_{x}")] if upstream else []
    if in_loss:
        direct = opaque(f"∂E/∂{x}", rf"\partial E / \partial {tex_name(x)}", a.d.shape_of(x))
        terms.append(rule.loss_form or direct)
    terms += [s.vjp for s in structures.values()]
    _stacking_part(out, a.d, c, rule.x_letters, terms)


def _route_part(out: Explanation, a: Analysis, x: str, structures: dict[str, Structure]) -> None:
    """Part 2: each local Jacobian from x towards the loss, named by its structure."""
    if x in a.d.loss.upstream:
        out.para(f"{x} is an upstream variable: ∇{x} = ∂E/∂{x} is given (E is unknown beyond it).")
    if x in a.loss_reads:
        out.para("The loss reads ", x, " directly: ", code(f"E = {a.d.loss.text}"),
                 f", whose gradient with respect to {x} is computed entry by entry above.")
    for v, s in structures.items():
        out.para(f"{v} reads {x}: ", *s.says)
    edges = _route(a, list(structures))
    if edges:
        out.para("Further along the route to the loss:")
        for v, u in edges:
            out.para("• ", *a.structure(v, u).says)
    chain = _vector_chain(a, x)
    if chain is not None:
        out.math(chain)


def _stacking_part(out: Explanation, d: Derivation, c: Claim, x_letters: list[str], terms: list[Form]) -> None:
    """Part 3: the entries stacked into x's shape, each term's shapes, and the sum in the file's language."""
    x = c.target
    xs = d.shape_of(x)
    if not terms:
        out.para(f"∇{x} = 0 {shape_text(xs)}.")
        return
    letters_t = ", ".join(f"{L} ∈ {dim}" for L, dim in zip(x_letters, xs))
    out.para(f"The formula above holds for every {letters_t}" if xs else "The formula above is the whole gradient",
             f"; stacking the entries into {x}'s own shape {shape_text(xs)} gives")
    out.math(Math(f"∇{x} = " + " + ".join(t.text for t in terms),
                  rf"\nabla {tex_name(x)} = " + " + ".join(t.tex for t in terms)))
    for t in terms:
        if t.annot:
            out.para("Shapes: ", Math(f"{t.text}: {t.annot}", rf"{t.tex}:\ {t.annot_tex}"), ".")
    if not all(t.code for t in terms):
        out.para(f"Compare with the claim {c.name} = ", code(c.text), ".")
        return
    out.para("In the file's language: ", code(" + ".join(t.code for t in terms)),
             f" — to compare with the claim {c.name} = ",
             code(c.text), ".")


def _route(a: Analysis, start: list[str], limit: int = 6) -> list[tuple[str, str]]:
    """Edges (v, u) after the first step, breadth first towards the loss."""
    out: list[tuple[str, str]] = []
    seen = set(start)
    queue = list(start)
    while queue and len(out) < limit:
        u = queue.pop(0)
        for v in a.consumers(u):
            out.append((v, u))
            if v not in seen:
                seen.add(v)
                queue.append(v)
            if len(out) >= limit:
                break
    return out


def _vector_chain(a: Analysis, x: str) -> Math | None:
    """For a chain of vectors with one reader each: ∇x = (∂v1/∂x)ᵀ (∂v2/∂v1)ᵀ … ∇h, named."""
    d = a.d
    path = [x]
    while True:
        readers = a.consumers(path[-1])
        if len(readers) != 1 or len(path) > 6:
            break
        path.append(readers[0])
    if len(path) < 3 or any(len(d.shape_of(n)) > 1 for n in path):
        return None
    end = path[-1]
    if end not in d.loss.upstream:
        return None
    named_t, named_x, sym_t, sym_x = [], [], [], []
    for u, v in zip(path, path[1:]):
        s = a.structure(v, u)
        if s.transposed is None:
            return None
        sym_t.append(f"(∂{v}/∂{u})ᵀ")
        sym_x.append(rf"\left(\frac{{\partial {tex_name(v)}}}{{\partial {tex_name(u)}}}\right)^\top")
        named_t.append(s.transposed.text)
        named_x.append(s.transposed.tex)
    return Math(f"∇{x} = {' '.join(sym_t)} ∇{end} = {' '.join(named_t)} ∇{end}",
                rf"\nabla {tex_name(x)} = {' '.join(sym_x)} \nabla {tex_name(end)} = {' '.join(named_x)} "
                rf"\nabla {tex_name(end)}")
