"""Part 1 of a claim's walk-through: the scalar chain rule for one entry of ``∇x``, lettered in the
file's own index convention, and one concrete instance at the walk-through's dims."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import sympy as sp  # type: ignore[import-untyped]

from ..lang.dims import Dim
from .analysis import Analysis
from .document import Explanation, Math
from .forms import Form, array_form
from .letters import Context, checked, generalize
from .printing import concrete_rename, dims_text, entry_tex, entry_text, generic_rename, prime_of, render

Term = tuple[sp.Expr | None, sp.Expr]  # (∇v entry, or None for a term of its own; the local partial)


@dataclass
class ChainRule:
    """The chain rule for ``∂E/∂x`` at one entry ``x_idx`` (lettered ``x_letters``), term by term."""

    a: Analysis
    x: str
    ctx: Context
    x_letters: list[str]
    x_idx: tuple[int, ...]
    chain: list[Math] = field(default_factory=list)  # ∂E/∂v · ∂v/∂x, each term as written
    value: list[Math] = field(default_factory=list)  # the same terms with the local partials' patterns
    concrete: list[Term] = field(default_factory=list)  # the instance at x_idx, in chain order
    dims_note: bool = False  # a lettered constant holds only at these dims
    incomplete: bool = False  # a Jacobian too large to build: the instance is the engine's truth instead
    loss_form: Form | None = None  # the direct term ∂E/∂x as an array expression, when it has one

    @classmethod
    def of(cls, a: Analysis, x: str) -> ChainRule:
        ctx = Context(a.letters)
        x_letters = [ctx.new(dim) for dim in a.d.shape_of(x)]
        return cls(a, x, ctx, x_letters, tuple(ctx.value[L] for L in x_letters))

    @property
    def x_entry(self) -> Math:
        return Math(entry_text(self.x, self.x_letters), entry_tex(self.x, self.x_letters))

    def add_upstream(self) -> None:
        """``∇x`` given (upstream mode)."""
        g = Math(entry_text(f"grad_{self.x}", self.x_letters), entry_tex(f"grad_{self.x}", self.x_letters))
        self.chain.append(Math(g.text + " (given)", g.tex + r"\ \text{(given)}"))
        self.value.append(g)
        self.concrete.append((None, self.a.truth.upstream[self.x][self.x_idx]))

    def add_loss(self) -> None:
        """The loss's own partial ``∂E/∂x`` (the direct term)."""
        a, x, xl = self.a, self.x, self.x_letters
        lg = a.loss_gradient(x)
        pattern = generalize(lg[self.x_idx], self.ctx, a.d)
        if pattern is not None:
            pattern, local_only = checked(a, pattern, xl, self.ctx,
                                          lambda an, val: an.loss_gradient(x)[tuple(val[L] for L in xl)])
            self.dims_note = self.dims_note or local_only
            if pattern is not None and not local_only:
                self.loss_form = array_form(pattern, xl, a.d.shape_of(x))
        e = self.x_entry
        self.chain.append(Math(f"∂E/∂{e.text}|direct",
                               rf"\left.\frac{{\partial E}}{{\partial {e.tex}}}\right|_{{\text{{direct}}}}"))
        self.value.append(render(pattern, generic_rename) if pattern is not None
                          else Math(f"∂E/∂{e.text}", rf"\frac{{\partial E}}{{\partial {e.tex}}}"))
        self.concrete.append((None, lg[self.x_idx]))

    def add_consumer(self, v: str) -> None:
        """``Σ ∂E/∂v · ∂v/∂x`` over the entries of v not tied to x's by a Kronecker delta."""
        a, x = self.a, self.x
        sub, v_letters, summed = self._letters_of(v)
        J = a.jacobian(v, x)
        if J is not None and summed:
            _nonzero_representative(sub, summed, v_letters, self.x_idx, J)
        local = J[tuple(sub.value[L] for L in v_letters) + self.x_idx] if J is not None else None
        sig = Math(("Σ_" + ",".join(summed) + " ") if summed else "",
                   (r"\sum_{" + ",".join(summed) + "} ") if summed else "")
        ve, e = Math(entry_text(v, v_letters), entry_tex(v, v_letters)), self.x_entry
        self.chain.append(Math(f"{sig.text}∂E/∂{ve.text} · ∂{ve.text}/∂{e.text}",
                               rf"{sig.tex}\frac{{\partial E}}{{\partial {ve.tex}}} \frac{{\partial {ve.tex}}}"
                               rf"{{\partial {e.tex}}}"))
        pattern = self._consumer_pattern(v, local, sub, v_letters)
        g = Math(entry_text(f"grad_{v}", v_letters), entry_tex(f"grad_{v}", v_letters))
        self.value.append(self._consumer_value(v, pattern, v_letters, Math(sig.text + g.text, sig.tex + g.tex), ve))
        if J is None:
            self.incomplete = True
            return
        G = a.gradient_atoms(v)
        for kv in np.ndindex(*G.shape):
            term = J[kv + self.x_idx]
            if term != 0 and G[kv] != 0:
                self.concrete.append((G[kv], term))

    def _letters_of(self, v: str) -> tuple[Context, list[str], list[str]]:
        """v's letters: x's own on the axes tied to x's, fresh (summed) letters on the others."""
        sub = Context(self.a.letters)
        sub.dim, sub.value, sub.ok = dict(self.ctx.dim), dict(self.ctx.value), self.ctx.ok
        ties = self.a.delta_ties(v, self.x)
        v_letters, summed = [], []
        for axis, dim in enumerate(self.a.d.shape_of(v)):
            if axis in ties:
                v_letters.append(self.x_letters[ties[axis]])
            else:
                letter = sub.new(dim)
                v_letters.append(letter)
                summed.append(letter)
        return sub, v_letters, summed

    def _consumer_pattern(self, v: str, local: sp.Expr | None, sub: Context, v_letters: list[str]) -> sp.Expr | None:
        """The local partial ``∂v/∂x`` as a lettered pattern that holds for every value of its letters."""
        pattern = generalize(local, sub, self.a.d) if local is not None else None
        if pattern is None:
            return None
        x, x_letters = self.x, self.x_letters

        def actual(an: Analysis, val: dict[str, int]) -> sp.Expr | None:
            jac = an.jacobian(v, x)
            if jac is None:
                return None
            return jac[tuple(val[L] for L in v_letters) + tuple(val[L] for L in x_letters)]

        pattern, local_only = checked(self.a, pattern, list(dict.fromkeys(v_letters + x_letters)), sub, actual)
        self.dims_note = self.dims_note or local_only
        return pattern

    def _consumer_value(self, v: str, pattern: sp.Expr | None, v_letters: list[str], g: Math, ve: Math) -> Math:
        """``Σ ∇v · (the pattern)``: by the function's name for ``v = f(x)``, as ∂v/∂x when no pattern holds."""
        e = self.x_entry
        if pattern is None:
            return Math(f"{g.text} · ∂{ve.text}/∂{e.text}", rf"{g.tex} \frac{{\partial {ve.tex}}}{{\partial {e.tex}}}")
        named = self.a.elementwise_of(v)
        if named is not None and named[1] == self.x and v_letters == self.x_letters:
            m = prime_of(named[0], e.text, e.tex)  # = the pattern, by name
            return Math(f"{g.text} · {m.text}", rf"{g.tex} \, {m.tex}")
        if pattern == 1:
            return g
        m = render(pattern, generic_rename)
        if isinstance(pattern, sp.Add):
            m = Math(f"({m.text})", rf"\left({m.tex}\right)")
        return Math(f"{g.text} · {m.text}", rf"{g.tex} \, {m.tex}")

    def write(self, out: Explanation) -> None:
        """The lettered chain rule, then the instance at these dims."""
        a, x, x_idx = self.a, self.x, self.x_idx
        if not self.chain:
            out.para(f"Nothing after {x} reads it and the loss does not use it: ∇{x} = 0.")
            return
        e = self.x_entry
        out.math(Math(f"∂E/∂{e.text} = " + " + ".join(m.text for m in self.chain) + " = "
                      + " + ".join(m.text for m in self.value),
                      rf"\frac{{\partial E}}{{\partial {e.tex}}} = " + " + ".join(m.tex for m in self.chain) + " = "
                      + " + ".join(m.tex for m in self.value)))
        concrete = [(None, a.truth.grads[x][x_idx])] if self.incomplete else self.concrete
        entry = Math(f"∂E/∂{x}[{','.join(map(str, x_idx))}]" if x_idx else f"∂E/∂{x}",
                     rf"\frac{{\partial E}}{{\partial {concrete_rename(a.arrays[x][x_idx])[1]}}}")
        m = chain_sum(concrete)
        out.para(f"At dims {dims_text(a.sizes)} (one instance):")
        out.math(Math(f"{entry.text} = {m.text}", f"{entry.tex} = {m.tex}"))
        if not self.ctx.ok:
            out.para("(A dim is too small here for a letter per index; use larger --dims for the general pattern.)")
        if self.dims_note:
            out.para("(The lettered formula holds at these dims; its constants change with the dims — see the "
                     "matrix form below for the general case.)")


def chain_sum(terms: list[Term]) -> Math:
    """``∇z[0]·W[0,2] + ∇z[1]·W[1,2]``: each term as gradient · local partial, in the chain rule's order."""
    parts = [_chain_term(g, local) for g, local in terms]
    return Math(" + ".join(m.text for m in parts) or "0", " + ".join(m.tex for m in parts) or "0")


def _chain_term(g: sp.Expr | None, local: sp.Expr) -> Math:
    m = render(local, concrete_rename)
    if g is None:
        return m
    gm = render(g, concrete_rename)
    if local == 1:
        return gm
    if isinstance(local, sp.Add) or m.text.startswith("-"):
        m = Math(f"({m.text})", rf"\left({m.tex}\right)")
    return Math(f"{gm.text}·{m.text}", rf"{gm.tex} \, {m.tex}")


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
