"""The SymPy engine: per-neuron scalar truth at small dims, and exact equality.

At one dim assignment every input entry is a SymPy symbol and every forward
entry an *atom* ``z[j]`` with its local definition (``z[j] = Σ_i W[j,i] a[i] + b[j]``).
One reverse sweep of the scalar chain rule,

    ∂E/∂p += ∂E/∂v_k · ∂(def v_k)/∂p    for every parent entry p of v_k,

gives the true adjoint of every entry — the per-neuron derivatives the matrix
forms must equal. Claims are evaluated on the same symbols, each ``grad_X``
bound to its true value, and the difference is decided by the cheapest sound
test first: zero as built or after expansion; then, with the atoms replaced by
their definitions, a probe at a random point (a definite counterexample ends
the search), cancellation, expansion, and ``simplify`` last, all under the
caller's time budget.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..lang.ir import Const
from ..lang.ops import ELEMENTWISE, Elementwise
from ..lang.symfuncs import SoftmaxEntry, generic, softmax_as_exp
from ..model import Derivation
from .evaluate import Backend, evaluate, evaluate_definition
from .exact import Converter, Unsupported


def symbolic_backend(d: Derivation) -> Backend:
    def functions(name: str) -> Elementwise:
        if name in d.functions:
            return Elementwise(name, None, None, generic(name))  # type: ignore[arg-type]
        return ELEMENTWISE[name]

    def const(node: Const):
        try:
            return sp.Rational(node.text)
        except (TypeError, ValueError):
            return sp.Float(node.value)

    return Backend(symbolic=True, functions=functions, const=const, scalar=sp.Integer)


def entry_name(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{','.join(str(i) for i in idx)}]" if idx else name


def symbol_array(name: str, shape: tuple[int, ...], **assumptions) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = sp.Symbol(entry_name(name, idx), **assumptions)
    return out


@dataclass
class Decision:
    """``zero`` True: proved; False: a definite counterexample; None: undecided."""

    zero: bool | None
    how: str
    value: float | None = None


class SymbolicTruth:
    """The per-neuron truth of one derivation at one dim assignment, shared by all its claims."""

    def __init__(self, d: Derivation, sizes: Mapping[str, int]):
        self.d = d
        self.sizes = dict(sizes)
        self.backend = symbolic_backend(d)
        shapes = {n: tuple(dim.value(sizes) for dim in d.shape_of(n))
                  for n in list(d.inputs) + [f.name for f in d.forward + d.backward]}
        self.shapes = shapes
        self.env: dict[str, np.ndarray] = {}
        self.simplex: dict[sp.Symbol, sp.Expr] = {}
        differentiable: set[sp.Symbol] = set()
        concrete = _concrete_inputs(d, sizes)  # integer and binary inputs: numbers, not symbols
        for name, inp in d.inputs.items():
            if name in concrete:
                self.env[name] = concrete[name]
                continue
            positive = inp.domain in ("positive", "unit", "simplex")
            arr = symbol_array(name, shapes[name], **({"positive": True} if positive else {"real": True}))
            self.env[name] = arr
            if not inp.constant:
                differentiable.update(arr.flat)
            if inp.domain in ("simplex", "onehot"):
                moved = np.moveaxis(arr, inp.axis, 0)
                for col in np.ndindex(*moved.shape[1:]):
                    column = [moved[(k,) + col] for k in range(moved.shape[0])]
                    self.simplex[column[-1]] = 1 - sum(column[:-1])
        # forward atoms and their local definitions
        self.local: dict[sp.Symbol, sp.Expr] = {}
        self.order: list[tuple[str, np.ndarray]] = []
        for definition in d.forward:
            value = evaluate_definition(definition.root, definition.index, self.env, sizes, self.backend)
            if definition.name in d.integer_forward:  # y[:, None] of an integer input: still concrete
                self.env[definition.name] = value
                continue
            atoms = symbol_array(definition.name, shapes[definition.name], real=True)
            for idx in np.ndindex(*atoms.shape):
                self.local[atoms[idx]] = sp.sympify(value[idx], strict=True)
            self.env[definition.name] = atoms
            self.order.append((definition.name, atoms))
            differentiable.update(atoms.flat)
        # A local partial that contains an entry's own definition is written with its atom:
        # ∂P_i/∂Z_j = P_i (δ_ij − P_j), ∂h/∂z = 1 − h² for h = tanh(z).
        self.by_definition = {value: atom for atom, value in self.local.items() if value.is_Function}
        # one reverse sweep of the scalar chain rule; each adjoint is a list of parts, summed once
        templates: dict[tuple, sp.Expr] = {}
        parts: dict[sp.Symbol, list[sp.Expr]] = {}
        self.upstream: dict[str, np.ndarray] = {}
        if d.loss.expression is not None:
            loss = sp.sympify(evaluate(d.loss.expression, self.env, sizes, self.backend)[()], strict=True)
            self.loss = loss
            for s, ds in partials(loss, differentiable, templates).items():
                parts[s] = [ds]
        else:
            for h in d.loss.upstream:
                g = symbol_array(f"grad_{h}", shapes[h], real=True)
                self.upstream[h] = g
                for idx in np.ndindex(*g.shape):
                    parts[self.env[h][idx]] = [g[idx]]
        # Beside the expanded adjoints, the same sweep with the *gradient atoms* ∇v[k] of each
        # forward entry as multipliers gives every adjoint as one chain-rule step:
        # step[p] = Σ ∇v[k] · ∂(def v[k])/∂p, the per-neuron form of "judged on its own step".
        steps = {s: list(ts) for s, ts in parts.items()}
        adj: dict[sp.Symbol, sp.Expr] = {}
        step: dict[sp.Symbol, sp.Expr] = {}
        self.grad_atoms: dict[sp.Symbol, sp.Expr] = {}  # ∇v[k] -> its step expression
        self.grads: dict[str, np.ndarray] = {}
        self.steps: dict[str, np.ndarray] = {}
        gradient_atoms: dict[str, np.ndarray] = {}
        for name, atoms in reversed(self.order):
            for atom in atoms.flat:
                if atom in parts:
                    adj[atom] = sp.Add(*parts.pop(atom))
                    step[atom] = sp.Add(*steps.pop(atom))
            self.grads[name] = _array_of(atoms, adj)
            self.steps[name] = _array_of(atoms, step)
            nabla = symbol_array(f"∇{name}", atoms.shape, real=True)
            for idx in np.ndindex(*atoms.shape):
                if step.get(atoms[idx], 0) == 0:
                    nabla[idx] = sp.Integer(0)
                else:
                    self.grad_atoms[nabla[idx]] = step[atoms[idx]]
            gradient_atoms[name] = nabla
            for idx in np.ndindex(*atoms.shape):
                atom = atoms[idx]
                a = adj.get(atom)
                if a is None or a == 0:
                    continue
                for p, dp in partials(self.local[atom], differentiable, templates).items():
                    dp = dp.xreplace(self.by_definition) if self.by_definition else dp
                    parts.setdefault(p, []).append(a * dp)
                    steps.setdefault(p, []).append(nabla[idx] * dp)
        for s, terms in parts.items():
            adj[s] = sp.Add(*terms)
            step[s] = sp.Add(*steps[s])
        for name, inp in d.inputs.items():
            if not inp.constant:
                self.grads[name] = _array_of(self.env[name], adj)
                self.steps[name] = _array_of(self.env[name], step)
        self._full: dict[sp.Symbol, sp.Expr] = {}
        self._over_atoms = Converter(self._lookup_simplex)
        self._over_inputs = Converter(self._lookup_definition)
        # claims read the same symbols, with every grad_X bound to its truth
        self.claim_env = dict(self.env)
        self.claim_env.update({f"grad_{n}": g for n, g in self.grads.items()})
        for helper in d.backward:
            self.claim_env[helper.name] = evaluate_definition(helper.root, helper.index, self.claim_env, sizes,
                                                              self.backend)
        # ... or, for the one-step comparison, every grad_v of a forward variable bound to ∇v
        self.step_env = dict(self.env)
        self.step_env.update({f"grad_{n}": g for n, g in self.steps.items() if n in d.inputs})
        self.step_env.update({f"grad_{n}": g for n, g in gradient_atoms.items()})
        for helper in d.backward:
            self.step_env[helper.name] = evaluate_definition(helper.root, helper.index, self.step_env, sizes,
                                                             self.backend)

    def atomize(self, e: sp.Expr) -> sp.Expr:
        """Write every forward definition that appears whole as its atom (``tanh(z[0])`` → ``h[0]``),
        as the sweep writes the local partials: equal values, one form for both sides."""
        return e.xreplace(self.by_definition) if self.by_definition else e

    def claim_value(self, node, index=None) -> np.ndarray:
        return evaluate_definition(node, index, self.claim_env, self.sizes, self.backend)

    def step_zero(self, node, target: str, index=None) -> bool:
        """Does the claim equal the truth as one chain-rule step, every ``∇v`` an independent atom?

        Sound: an identity in independent atoms holds at the atoms' true values. It is the cheap
        proof for a claim that reads the next gradient (``W.T @ grad_z``), whose expanded form
        can be large.
        """
        claimed = np.broadcast_to(evaluate_definition(node, index, self.step_env, self.sizes, self.backend),
                                  self.steps[target].shape)
        truth = self.steps[target]
        for idx in np.ndindex(*truth.shape):
            e = self.atomize(sp.sympify(claimed[idx] - truth[idx], strict=True))
            if e == 0:
                continue
            try:
                if not self._over_atoms.is_zero(e):
                    return False
            except (Unsupported, ZeroDivisionError):
                return False
        return True

    def full(self, expr: sp.Expr) -> sp.Expr:
        """Replace every forward atom by its definition, down to the inputs."""
        atoms = [s for s in expr.free_symbols if s in self.local]
        if not atoms:
            return expr
        return expr.xreplace({s: self._expand_atom(s) for s in atoms})

    def _expand_atom(self, atom: sp.Symbol) -> sp.Expr:
        if atom not in self._full:
            definition = softmax_as_exp(self.local[atom])
            inner = [s for s in definition.free_symbols if s in self.local]
            self._full[atom] = definition.xreplace({s: self._expand_atom(s) for s in inner}) if inner else definition
        return self._full[atom]

    def _lookup_simplex(self, s: sp.Symbol):
        if s in self.simplex:
            return self._over_atoms(self.simplex[s])
        return None

    def _lookup_definition(self, s: sp.Symbol):
        if s in self.simplex:
            return self._over_inputs(self.simplex[s])
        if s in self.local:
            return self._over_inputs(softmax_as_exp(self.local[s]))
        return None

    def exact_zero(self, e: sp.Expr) -> str | None:
        """Prove ``e == 0`` by exact rational arithmetic (see :mod:`.exact`), or None.

        First with the forward atoms as independent variables, then with every atom
        replaced by its definition (each atom converted once and cached).
        """
        try:
            if self._over_atoms.is_zero(e):
                return "exact rational arithmetic over the per-neuron atoms"
            if (any(s in self.local for s in e.free_symbols) or e.has(SoftmaxEntry)) and \
                    self._over_inputs.is_zero(softmax_as_exp(e)):
                return "exact rational arithmetic after substituting the forward definitions"
        except (Unsupported, ZeroDivisionError):
            return None
        return None

    def decide(self, difference: sp.Expr, rng: random.Random) -> Decision:
        """Is ``claim - truth`` identically zero? The cheapest sound test first."""
        e = self.atomize(sp.sympify(difference, strict=True))
        if e == 0:
            return Decision(True, "identical")
        how = self.exact_zero(e)
        if how is not None:
            return Decision(True, how)
        if self.simplex:
            e = e.xreplace(self.simplex)
        if sp.expand(e) == 0:
            return Decision(True, "expand")
        f = softmax_as_exp(self.full(e))
        if self.simplex:
            f = f.xreplace(self.simplex)
        probe = self.probe(f, rng)
        if probe is not None and abs(probe) > 1e-9:
            return Decision(False, "evaluated at a random point", probe)
        for how, step in (("cancel", _cancel), ("expand", sp.expand), ("simplify", sp.simplify)):
            if step(f) == 0:
                return Decision(True, f"{how} after substituting the forward definitions")
        return Decision(None, "could not reduce the difference to zero")

    def probe(self, expr: sp.Expr, rng: random.Random) -> float | None:
        """The value of an input-level expression at random inputs from their domains (50 digits)."""
        values = {}
        for s in expr.free_symbols:
            if s.is_positive:
                values[s] = sp.Rational(rng.randint(10, 90), 100)
            else:
                values[s] = sp.Rational(rng.randint(-150, 150), 100)
        try:
            value = expr.xreplace(values).evalf(50)
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        if not value.is_Number or value.has(sp.nan, sp.zoo, sp.oo):
            return None
        return float(value)


def _concrete_inputs(d: Derivation, sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """``index`` inputs (integers, with a repeat) and ``binary`` ones (0/1) as concrete SymPy integer
    arrays, drawn once per dim assignment (SPEC §6.1): ``C[I]`` then reads concrete rows."""
    import zlib

    from .numeric import draw_integers

    out = {}
    for name, inp in d.inputs.items():
        if inp.domain not in ("index", "binary"):
            continue
        shape = tuple(dim.value(sizes) for dim in inp.shape)
        rng = np.random.default_rng([zlib.crc32(name.encode()), *sorted(sizes.values()), len(sizes)])
        high = inp.range.value(sizes) if inp.domain == "index" else 2
        values = draw_integers(shape, high, rng) if inp.domain == "index" else rng.integers(0, 2, size=shape)
        out[name] = np.vectorize(sp.Integer, otypes=[object])(values) if values.size else np.empty(shape, object)
    return out


def partials(expr: sp.Expr, wrt: set[sp.Symbol], templates: dict | None = None) -> dict[sp.Symbol, sp.Expr]:
    """``{s: ∂expr/∂s}`` for every symbol of ``wrt`` in ``expr`` (zero partials left out).

    The same expressions as ``sp.diff(expr, s)`` for each s (SymPy differentiates a sum
    term by term), but each term of a sum is visited only for the symbols it contains:
    O(size) instead of O(size · symbols) for a long loss or a wide dot product.
    """
    terms = expr.args if expr.is_Add else (expr,)
    found: dict[sp.Symbol, list[sp.Expr]] = {}
    for term in terms:
        for s, ds in _term_partials(term, wrt, {} if templates is None else templates):
            found.setdefault(s, []).append(ds)
    out = {}
    for s, ds in found.items():
        total = sp.Add(*ds)
        if total != 0:
            out[s] = total
    return out


def _diff(term: sp.Expr, s: sp.Symbol, templates: dict) -> sp.Expr:
    """``term.diff(s)``, computed once per *shape* of term: every neuron of a layer has the same
    local definition up to the names of its symbols, so the derivative is taken on a template
    whose symbols are placeholders (same assumptions, numbered in name order) and renamed back."""
    symbols = sorted(term.free_symbols, key=lambda x: x.name)
    if len(symbols) > 8:
        return term.diff(s)
    holders = [_placeholder(k, x) for k, x in enumerate(symbols)]
    template = term.xreplace(dict(zip(symbols, holders)))
    key = (template, holders[symbols.index(s)])
    found = templates.get(key)
    if found is None:
        found = templates[key] = template.diff(key[1])
    return found.xreplace(dict(zip(holders, symbols)))


def _placeholder(k: int, like: sp.Symbol) -> sp.Symbol:
    # "⟨k⟩" cannot be the name of an entry (those are identifiers, or name[i,j])
    return sp.Symbol(f"⟨{k}⟩", **like.assumptions0)


def _term_partials(term: sp.Expr, wrt: set[sp.Symbol], templates: dict):
    """``(s, ∂term/∂s)`` for the symbols of ``wrt`` in one product term.

    A symbol that is a bare factor of a product and occurs nowhere else has the
    other factors as its partial: ``Mul(*others)``, which is the expression SymPy's
    own Leibniz rule builds, without its dispatch overhead.
    """
    if term.is_Symbol:
        if term in wrt:
            yield term, sp.Integer(1)
        return
    if not term.is_Mul:
        for s in term.free_symbols & wrt:
            yield s, _diff(term, s, templates)
        return
    bare: dict[sp.Symbol, int] = {}
    deep: set[sp.Symbol] = set()
    for k, factor in enumerate(term.args):
        if factor.is_Symbol:
            bare[factor] = k
        else:
            deep |= factor.free_symbols
    for s in (set(bare) | deep) & wrt:
        if s in deep:
            yield s, _diff(term, s, templates)
        else:
            k = bare[s]
            yield s, sp.Mul(*term.args[:k], *term.args[k + 1:])


def _cancel(e: sp.Expr) -> sp.Expr:
    return sp.cancel(sp.together(e))


def _array_of(symbols: np.ndarray, adj: Mapping[sp.Symbol, sp.Expr]) -> np.ndarray:
    out = np.empty(symbols.shape, dtype=object)
    for idx in np.ndindex(*symbols.shape):
        out[idx] = adj.get(symbols[idx], sp.Integer(0))
    return out
