"""The four-part walk-through of each claim: the per-neuron chain rule, the Jacobian route, the
stacking into matrix form, and the verdict (see :mod:`backpropcheck.explain`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import sympy as sp

from ..checker import Options, SymbolicTimeout, check_derivation, draw_dims, time_budget
from ..lang.dims import Dim
from ..loader import load
from ..model import Claim, Derivation
from .analysis import Analysis
from .document import Explanation, Math, code
from .forms import Form, array_form, opaque, tensor
from .letters import Context, checked, generalize
from .printing import concrete_rename, entry_tex, entry_text, generic_rename, prime_of, render, shape_text, tex_name
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


def _at_these_dims(d: Derivation, opts: Options, checked, sizes: dict[str, int]):
    """A claim refuted at other dims is refuted again at the walk-through's ``sizes`` when it can be,
    so the counterexample, the grid and the walk-through show one set of dims."""
    from dataclasses import replace

    elsewhere = {r.name for r in checked.claims
                 if r.verdict == "refuted" and r.counterexample is not None and r.counterexample.dims != sizes}
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
    """Load ``path`` and explain it (see :func:`explain_derivation`)."""
    return explain_derivation(load(path), claim, sizes, options)


def explain_derivation(d: Derivation, claim: str | None = None, sizes: Mapping[str, int] | None = None,
                       options: Options | None = None) -> Explanation:
    """The four-part explanation of every claim of ``d`` (or only ``claim``)."""
    claims = [c for c in d.claims if claim is None or c.name == claim]
    if claim is not None and not claims:
        known = ", ".join(c.name for c in d.claims)
        raise KeyError(f"no claim {claim!r} in {d.path} (claims: {known})")
    sizes = small_sizes(d, sizes)
    out = Explanation(d.title, d.path, sizes)
    dims = ", ".join(f"{k}={v}" for k, v in sizes.items())
    if d.summary:
        out.para(" ".join(d.summary.split()))
    shapes = "; ".join(f"{n} {shape_text(d.shape_of(n))}" for n in list(d.inputs) + [f.name for f in d.forward])
    out.para(f"Shapes: {shapes}. Worked at small dims {dims}; entries are 0-based.")
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
    opts = options or Options(trials=5, shapes=1, timeout=10.0)
    checked = _at_these_dims(d, opts, check_derivation(d, opts), sizes)
    results = {r.name: r for r in checked.claims}
    out.results = [results[c.name] for c in claims if c.name in results]
    out.error = checked.error if checked.status == "error" and not checked.claims else None
    try:
        with time_budget(opts.timeout):
            analysis: Analysis | None = Analysis(d, sizes)
        problem = None
    except SymbolicTimeout:
        analysis, problem = None, f"building the per-neuron truth ran past the {opts.timeout:g} s budget (--timeout)"
    except Exception as exc:  # noqa: BLE001 - the verdicts below still stand without the walk-through
        analysis, problem = None, str(exc) or type(exc).__name__
    for c in claims:
        out.heading(f"{c.name} = ", 2, code(c.text))
        if analysis is None:
            out.para(f"(The per-neuron walk-through is not available for this file at dims {dims}: {problem}.)")
        elif c.target in analysis.arrays and not (c.target in d.inputs and d.inputs[c.target].constant):
            try:  # the true gradient does not depend on the claim: explain it even for an ill-shaped claim
                with time_budget(opts.timeout):
                    _explain_claim(out, analysis, c)
            except SymbolicTimeout:
                out.para(f"(The walk-through stopped at its {opts.timeout:g} s budget; raise it with --timeout.)")
            except Exception as exc:  # noqa: BLE001 - explain is best effort on exotic files; the verdict stands
                out.para(f"(The walk-through stopped early: {type(exc).__name__}: {exc}.)")
        verdict(out, d, c, results.get(c.name), sizes, analysis, checked.error)
    return out


def _explain_claim(out: Explanation, a: Analysis, c: Claim) -> None:
    d = a.d
    x = c.target
    consumers = a.consumers(x)
    in_loss = x in a.loss_reads
    upstream = x in d.loss.upstream
    # 1. the per-neuron chain rule
    out.heading("1. Per neuron: the scalar chain rule", 3)
    ctx = Context(a.letters)
    xs = d.shape_of(x)
    x_letters = [ctx.new(dim) for dim in xs]
    x_idx = tuple(ctx.value[L] for L in x_letters)
    lhs = Math(f"∂E/∂{entry_text(x, x_letters)}", rf"\frac{{\partial E}}{{\partial {entry_tex(x, x_letters)}}}")
    chain_t, chain_x, value_t, value_x = [], [], [], []
    concrete_terms: list[tuple[sp.Expr | None, sp.Expr]] = []  # (∇v entry, local partial), in chain order
    structures: dict[str, Structure] = {}
    dims_note = False
    incomplete = False
    loss_form: Form | None = None  # the direct term ∂E/∂x as an array expression, when it has one
    if upstream:
        g = Math(entry_text(f"grad_{x}", x_letters), entry_tex(f"grad_{x}", x_letters))
        chain_t.append(g.text + " (given)")
        chain_x.append(g.tex + r"\ \text{(given)}")
        value_t.append(g.text)
        value_x.append(g.tex)
        concrete_terms.append((None, a.truth.upstream[x][x_idx]))
    if in_loss:
        lg = a.loss_gradient(x)
        pattern = generalize(lg[x_idx], ctx, d)
        if pattern is not None:
            pattern, local_only = checked(a, pattern, x_letters, ctx,
                                           lambda an, val: an.loss_gradient(x)[tuple(val[L] for L in x_letters)])
            dims_note = dims_note or local_only
            if pattern is not None and not local_only:
                loss_form = array_form(pattern, x_letters, xs)
        chain_t.append(f"∂E/∂{entry_text(x, x_letters)}|direct")
        chain_x.append(rf"\left.\frac{{\partial E}}{{\partial {entry_tex(x, x_letters)}}}\right|_{{\text{{direct}}}}")
        if pattern is not None:
            m = render(pattern, generic_rename)
            value_t.append(m.text)
            value_x.append(m.tex)
        else:
            value_t.append(f"∂E/∂{entry_text(x, x_letters)}")
            value_x.append(rf"\frac{{\partial E}}{{\partial {entry_tex(x, x_letters)}}}")
        concrete_terms.append((None, lg[x_idx]))
    for v in consumers:
        s = a.structure(v, x)
        structures[v] = s
        vs = d.shape_of(v)
        sub = Context(a.letters)
        sub.dim, sub.value, sub.ok = dict(ctx.dim), dict(ctx.value), ctx.ok
        v_letters = []
        summed = []
        ties = a.delta_ties(v, x)
        for axis, dim in enumerate(vs):
            if axis in ties:
                v_letters.append(x_letters[ties[axis]])
            else:
                L = sub.new(dim)
                v_letters.append(L)
                summed.append(L)
        J = a.jacobian(v, x)
        if J is not None and summed:
            _nonzero_representative(sub, summed, v_letters, x_idx, J)
        v_idx = tuple(sub.value[L] for L in v_letters)
        local = J[v_idx + x_idx] if J is not None else None
        sig_t = ("Σ_" + ",".join(summed) + " ") if summed else ""
        sig_x = (r"\sum_{" + ",".join(summed) + "} ") if summed else ""
        ve_t, ve_x = entry_text(v, v_letters), entry_tex(v, v_letters)
        chain_t.append(f"{sig_t}∂E/∂{ve_t} · ∂{ve_t}/∂{entry_text(x, x_letters)}")
        chain_x.append(rf"{sig_x}\frac{{\partial E}}{{\partial {ve_x}}} \frac{{\partial {ve_x}}}"
                       rf"{{\partial {entry_tex(x, x_letters)}}}")
        pattern = generalize(local, sub, d) if local is not None else None
        if pattern is not None:
            def actual(an: Analysis, val: dict[str, int], v=v, v_letters=v_letters) -> sp.Expr | None:
                jac = an.jacobian(v, x)
                if jac is None:
                    return None
                return jac[tuple(val[L] for L in v_letters) + tuple(val[L] for L in x_letters)]

            pattern, local_only = checked(a, pattern, list(dict.fromkeys(v_letters + x_letters)), sub, actual)
            dims_note = dims_note or local_only
        g_t, g_x = entry_text(f"grad_{v}", v_letters), entry_tex(f"grad_{v}", v_letters)
        named = a.elementwise_of(v)
        if pattern is not None and named is not None and named[1] == x and v_letters == x_letters:
            m = prime_of(named[0], entry_text(x, x_letters), entry_tex(x, x_letters))  # = the pattern, by name
            value_t.append(f"{sig_t}{g_t} · {m.text}")
            value_x.append(rf"{sig_x}{g_x} \, {m.tex}")
        elif pattern is not None:
            m = render(pattern, generic_rename)
            mt = f"({m.text})" if isinstance(pattern, sp.Add) else m.text
            mx = rf"\left({m.tex}\right)" if isinstance(pattern, sp.Add) else m.tex
            value_t.append(f"{sig_t}{g_t}" + ("" if pattern == 1 else f" · {mt}"))
            value_x.append(rf"{sig_x}{g_x}" + ("" if pattern == 1 else rf" \, {mx}"))
        else:
            value_t.append(f"{sig_t}{g_t} · ∂{ve_t}/∂{entry_text(x, x_letters)}")
            value_x.append(rf"{sig_x}{g_x} \frac{{\partial {ve_x}}}{{\partial {entry_tex(x, x_letters)}}}")
        if J is not None:
            G = a.gradient_atoms(v)
            for kv in np.ndindex(*G.shape):
                term = J[kv + x_idx]
                if term != 0 and G[kv] != 0:
                    concrete_terms.append((G[kv], term))
        else:
            incomplete = True
    if incomplete:  # a Jacobian too large to build: the instance is the engine's expanded truth instead
        concrete_terms = [(None, a.truth.grads[x][x_idx])]
    if not chain_t:
        out.para(f"Nothing after {x} reads it and the loss does not use it: ∇{x} = 0.")
    else:
        out.math(Math(f"{lhs.text} = " + " + ".join(chain_t) + " = " + " + ".join(value_t),
                      f"{lhs.tex} = " + " + ".join(chain_x) + " = " + " + ".join(value_x)))
        entry = Math(f"∂E/∂{x}[{','.join(map(str, x_idx))}]" if x_idx else f"∂E/∂{x}",
                     rf"\frac{{\partial E}}{{\partial {concrete_rename(a.arrays[x][x_idx])[1]}}}")
        m = _chain_sum(concrete_terms)
        out.para(f"At dims {', '.join(f'{k}={v}' for k, v in a.sizes.items())} (one instance):")
        out.math(Math(f"{entry.text} = {m.text}", f"{entry.tex} = {m.tex}"))
        if not ctx.ok:
            out.para("(A dim is too small here for a letter per index; use larger --dims for the general pattern.)")
        if dims_note:
            out.para("(The lettered formula holds at these dims; its constants change with the dims — see the "
                     "matrix form below for the general case.)")
    # 2. the Jacobian route
    out.heading("2. The Jacobian route", 3)
    if upstream:
        out.para(f"{x} is an upstream variable: ∇{x} = ∂E/∂{x} is given (E is unknown beyond it).")
    if in_loss:
        out.para("The loss reads ", x, " directly: ", code(f"E = {d.loss.text}"),
                 f", whose gradient with respect to {x} is computed entry by entry above.")
    for v in consumers:
        s = structures[v]
        out.para(f"{v} reads {x}: ", *s.says)
    edges = _route(a, consumers)
    if edges:
        out.para("Further along the route to the loss:")
        for v, u in edges:
            out.para("• ", *a.structure(v, u).says)
    chain = _vector_chain(a, x)
    if chain is not None:
        out.math(chain)
    # 3. stacking
    out.heading("3. Stacking into the matrix form", 3)
    terms: list[Form] = []
    if upstream:
        terms.append(tensor(d, f"grad_{x}"))
    if in_loss:
        terms.append(loss_form or opaque(f"∂E/∂{x}", rf"\partial E / \partial {tex_name(x)}", xs))
    terms += [structures[v].vjp for v in consumers]
    if not terms:
        out.para(f"∇{x} = 0 {shape_text(xs)}.")
        return
    letters_t = ", ".join(f"{L} ∈ {dim}" for L, dim in zip(x_letters, xs))
    total_t = " + ".join(t.text for t in terms)
    total_x = " + ".join(t.tex for t in terms)
    out.para(f"The formula above holds for every {letters_t}" if xs else "The formula above is the whole gradient",
             f"; stacking the entries into {x}'s own shape {shape_text(xs)} gives")
    out.math(Math(f"∇{x} = {total_t}", rf"\nabla {tex_name(x)} = {total_x}"))
    for t in terms:
        if t.annot:
            out.para("Shapes: ", Math(f"{t.text}: {t.annot}", rf"{t.tex}:\ {t.annot_tex}"), ".")
    if not all(t.code for t in terms):
        out.para(f"Compare with the claim {c.name} = ", code(c.text), ".")
        return
    out.para("In the file's language: ", code(" + ".join(t.code for t in terms)),
             f" — to compare with the claim {c.name} = ",
             code(c.text), ".")


def _chain_sum(terms: list[tuple[sp.Expr | None, sp.Expr]]) -> Math:
    """``∇z[0]·W[0,2] + ∇z[1]·W[1,2]``: each term as gradient · local partial, in the chain rule's order."""
    texts, texes = [], []
    for g, local in terms:
        m = render(local, concrete_rename)
        wrap = isinstance(local, sp.Add) or m.text.startswith("-")
        mt, mx = (f"({m.text})", rf"\left({m.tex}\right)") if wrap else (m.text, m.tex)
        if g is None:
            texts.append(m.text)
            texes.append(m.tex)
        else:
            gm = render(g, concrete_rename)
            texts.append(gm.text if local == 1 else f"{gm.text}·{mt}")
            texes.append(gm.tex if local == 1 else rf"{gm.tex} \, {mx}")
    return Math(" + ".join(texts) or "0", " + ".join(texes) or "0")


def _nonzero_representative(ctx: Context, summed: list[str], v_letters: list[str], x_idx: tuple[int, ...],
                            J: np.ndarray) -> None:
    """Give the summed letters values (distinct from the other letters of their dim) at which the
    local partial is nonzero, so the general pattern is read off a term that occurs."""
    choices = []
    for L in summed:
        dim = ctx.dim[L]
        taken = {v for x, v in ctx.value.items() if ctx.dim[x] == dim and x not in summed}
        choices.append([v for v in range(dim.value(ctx.letters.sizes) - 1, -1, -1) if v not in taken])
    for values in itertools.product(*choices):
        per_dim: dict[tuple[Dim, int], int] = {}
        if any(per_dim.setdefault((ctx.dim[L], v), k) != k for k, (L, v) in enumerate(zip(summed, values))):
            continue  # two summed letters of one dim need two values
        trial = dict(ctx.value)
        trial.update(zip(summed, values))
        v_idx = tuple(trial[L] for L in v_letters)
        if J[v_idx + x_idx] != 0:
            ctx.value.update(zip(summed, values))
            return


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
