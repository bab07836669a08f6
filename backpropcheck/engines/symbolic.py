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
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import sympy as sp

from ..lang.ir import Const
from ..lang.ops import ELEMENTWISE, Elementwise
from ..lang.symfuncs import (
    ArgShare,
    MaxOf,
    MinOf,
    SoftmaxEntry,
    Step,
    applied,
    generic,
    sigmoid_exponent,
    softmax_as_exp,
)
from ..model import Derivation
from .draws import concrete_inputs, draw_onehot, integer_array
from .entrywise import COMPARISONS, elementwise_arrays
from .evaluate import Backend, evaluate, evaluate_definition
from .exact import Converter, Unsupported
from .exact import add as add_frac
from .partials import _TEMPLATES, by_template, partials
from .products import add, add_arrays, einsum_arrays, matmul_arrays, mul, mul_arrays, outer_arrays, sum_arrays
from .witness import WitnessSearch, at_point

__all__ = ["Decision", "SymbolicTruth", "entry_name", "partials", "symbol_array", "symbolic_backend"]


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

    return Backend(symbolic=True, functions=functions, const=const, scalar=sp.Integer,
                   faster={"mul": mul_arrays, "add": add_arrays, "matmul": matmul_arrays, "dot": matmul_arrays,
                           "einsum": einsum_arrays, "sum": sum_arrays, "outer": outer_arrays,
                           "elementwise": elementwise_arrays, **COMPARISONS})


def _against_extreme_once(kind: type, u: sp.Expr) -> sp.Expr:
    """``kind(u)`` for a step against a max/min (its arg-max indicator, costly to derive), once per process."""
    key = (kind, u)
    found = _AGAINST_EXTREME.get(key)
    if found is None:
        if len(_AGAINST_EXTREME) > 50_000:
            _AGAINST_EXTREME.clear()
        found = _AGAINST_EXTREME[key] = by_template(kind, u)
    return found


def entry_name(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{','.join(str(i) for i in idx)}]" if idx else name


_ZERO = sp.S.Zero
_SYMBOLS: dict[tuple, sp.Symbol] = {}
_ARRAYS: dict[tuple, np.ndarray] = {}  # (name, shape, assumptions) -> the array of symbol_array


def symbol_array(name: str, shape: tuple[int, ...], **assumptions) -> np.ndarray:
    """The entries' symbols, each made once per process (every truth of a file, and the next file's, names the
    same entries again), and made from one symbol of the same assumptions (:func:`_symbol_like`)."""
    facts = tuple(sorted(assumptions.items()))
    made = _ARRAYS.get((name, shape, facts))
    if made is not None:  # the whole array too: a file's truths and certificate name the same arrays again
        return made.copy()
    out = np.empty(shape, dtype=object)
    if len(_SYMBOLS) > 200_000 or len(_ARRAYS) > 20_000:
        _SYMBOLS.clear()
        _ARRAYS.clear()
    for idx in np.ndindex(*shape):
        entry = entry_name(name, idx)
        symbol = _SYMBOLS.get((entry, facts))
        if symbol is None:
            like = _LIKE.get(facts)
            if like is None:
                like = _LIKE[facts] = sp.Symbol("⟨like⟩", **assumptions)
            symbol = _SYMBOLS[(entry, facts)] = _symbol_like(entry, like, assumptions)
        out[idx] = symbol
    _ARRAYS[(name, shape, facts)] = out.copy()
    return out


_LIKE: dict[tuple, sp.Symbol] = {}  # assumptions -> a symbol that has them


def _new_symbol_like(name: str, like: sp.Symbol, assumptions: Mapping[str, bool]) -> sp.Symbol:
    """``sp.Symbol(name, **assumptions)``, ``like``'s assumptions, its stores shared with ``like``, as SymPy
    shares them while its cache holds them. SymPy deduces a symbol's facts once per set of assumptions, in an
    LRU cache of 1000 entries that a truth's own expressions evict: each new symbol deduced them again (25 µs;
    8,700 symbols over derivations/). Used only if it builds what SymPy builds (checked on import below; else
    SymPy's own ``Symbol(name, **assumptions)`` is)."""
    obj = object.__new__(sp.Symbol)
    obj._mhash = None
    obj._args = ()
    obj._assumptions = like._assumptions
    obj.name = name
    obj._assumptions_orig = like._assumptions_orig
    obj._assumptions0 = like._assumptions0
    return obj


def _same_symbol() -> bool:
    """Does :func:`_new_symbol_like` set every field SymPy's ``Symbol`` sets, to what it sets (this SymPy)?"""
    like, want = sp.Symbol("⟨like⟩", real=True), sp.Symbol("⟨a⟩", real=True)
    made = _new_symbol_like("⟨a⟩", like, {"real": True})
    slots = {n for k in sp.Symbol.__mro__ for n in k.__dict__.get("__slots__", ())}
    fields = [(x._args, x._assumptions_orig, x._assumptions0, x.name, dict(x._assumptions), type(x._assumptions))
              for x in (made, want)]
    return slots == {"_mhash", "_args", "_assumptions", "name", "_assumptions_orig", "_assumptions0"} and \
        not hasattr(want, "__dict__") and fields[0] == fields[1] and made == want and hash(made) == hash(want) \
        and made.is_real and made.is_positive is None


_symbol_like = _new_symbol_like if _same_symbol() else (lambda name, like, assumptions: sp.Symbol(name, **assumptions))


@dataclass
class Decision:
    """``zero`` True: proved; False: a definite counterexample; None: undecided."""

    zero: bool | None
    how: str
    value: float | None = None
    point: dict | None = None  # the inputs' values of a counterexample found by evaluation


class SymbolicTruth(WitnessSearch):
    """The per-neuron truth of one derivation at one dim assignment, shared by all its claims."""

    def __init__(self, d: Derivation, sizes: Mapping[str, int], seed: int = 0,
                 given: Mapping[str, np.ndarray] | None = None, formal: bool = False):
        """``given``: the concrete inputs' values (labels, indices) to use instead of drawing them.

        ``formal``: built for the all-shapes certificate, and :meth:`formal` from the start. Nothing relates
        the atoms beyond what holds at every size: no expression is written as the atom of a variable whose
        definition reads a dim as a number (``scope.sized_definitions``: ``tanh(n*x)`` is ``tanh(2*x)`` at
        n = 2), and every gradient atom ∇v stays an indeterminate where its step vanishes at these sizes (a later
        ``(n - 2) * h``, which the certificate's one-step route does not read, makes ∇h zero at n = 2)."""
        self.d = d
        self.sizes = dict(sizes)
        self.backend = symbolic_backend(d)
        shapes = {n: tuple(dim.value(sizes) for dim in d.shape_of(n))
                  for n in list(d.inputs) + [f.name for f in d.forward + d.backward]}
        self.shapes = shapes
        self.env: dict[str, np.ndarray] = {}
        self.simplex: dict[sp.Symbol, sp.Expr] = {}
        # The inputs' domains hold in the truth as in the trials: the symbol of an entry knows its
        # domain (for the probes), a simplex column's last entry is 1 minus the others, and a
        # one-hot label is a concrete one-hot array drawn for these dims (``drawn``).
        self.domain_of: dict[sp.Symbol, str] = {}
        self.columns: list[list[sp.Symbol]] = []  # the free entries of each simplex column
        self.drawn: dict[str, np.ndarray] = {}
        differentiable: set[sp.Symbol] = set()
        concrete = concrete_inputs(d, sizes)  # integer and binary inputs: numbers, not symbols
        for name, inp in d.inputs.items():
            if name in concrete:  # integer and binary inputs: concrete draws, like a one-hot label
                self.drawn[name] = concrete[name] if given is None else np.asarray(given[name]).astype(int)
                self.env[name] = integer_array(self.drawn[name])
                continue
            if inp.domain == "onehot":  # constant by the loader's rule
                self.drawn[name] = draw_onehot(inp, shapes[name], seed, name, self.sizes) if given is None \
                    else np.asarray(given[name]).astype(int)
                self.env[name] = integer_array(self.drawn[name])
                continue
            positive = inp.domain in ("positive", "unit", "simplex")
            arr = symbol_array(name, shapes[name], **({"positive": True} if positive else {"real": True}))
            self.env[name] = arr
            self.domain_of.update((s, inp.domain) for s in arr.flat)
            if not inp.constant:
                differentiable.update(arr.flat)
            if inp.domain == "simplex":
                moved = np.moveaxis(arr, inp.axis, 0)
                for col in np.ndindex(*moved.shape[1:]):
                    column = [moved[(k,) + col] for k in range(moved.shape[0])]
                    self.simplex[column[-1]] = 1 - sum(column[:-1])
                    self.columns.append(column[:-1])
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
        # A sigmoid's definition 1/(1 + exp(−u)) is no function call, but is written as its atom alike (its
        # partial s·(1 − s) reads the atom: _local_partials).
        # The certificate's truths leave out the variables whose definition reads a dim as a number: at one size
        # it is the very expression of another at every size (tanh(n*x) is tanh(2*x) at n = 2).
        never_atoms: Collection[str] = ()
        if formal:
            from .scope import sized_definitions

            never_atoms = sized_definitions(d)
        kept = [atom for name, atoms in self.order if name not in never_atoms for atom in atoms.flat] \
            if never_atoms else self.local
        self.by_definition = {value: atom for atom in kept
                              if (value := self.local[atom]).is_Function or sigmoid_exponent(value) is not None}
        # A mask compares an entry with its slice's max atom (``x >= m``); inside a Step that atom is
        # written as its definition, so the mask is the arg-max indicator by construction (see
        # symfuncs._against_extreme) and a claim ``mask * grad_m`` matches the truth's one step.
        self.extremes = {atom: value for atom, value in self.local.items() if isinstance(value, (MaxOf, MinOf))}
        # the atoms that copy another entry (a concat, slice or reshape of it), for a mask that compares that
        # entry itself with their max (see _kink_against_extreme)
        self.gathered = {atom: value for atom, value in self.local.items()
                         if value.__class__ is sp.Symbol} if self.extremes else {}
        self._kinks: dict[sp.Expr, sp.Expr] = {}
        # atomize's two replacements, memoised by sub-expression: entries, claims and steps share them
        self._as_atoms: dict[sp.Basic, sp.Basic] = {}
        self._unkinked: dict[sp.Basic, sp.Basic] = {}
        self._formal = False  # see formal()
        self._null_ties: dict[tuple, bool] = {}  # _ties_null by (argument, formal), _apart by (a, b, formal)
        self._gradient_atoms_of: dict[sp.Basic, frozenset] = {}
        self._forward_atoms_of: dict[sp.Basic, frozenset] = {}
        # one reverse sweep of the scalar chain rule; each adjoint is a list of parts, summed once
        templates = _TEMPLATES  # shared by every truth: a template's derivative never depends on the dims
        if len(templates) > 50_000:
            templates.clear()
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
        # The sweep runs with the *gradient atoms* ∇v[k] of each forward entry as multipliers, so
        # every adjoint is one chain-rule step: step[p] = Σ ∇v[k] · ∂(def v[k])/∂p, the per-neuron
        # form of "judged on its own step". The expanded adjoints (every ∇v replaced by its own
        # expanded value) are made from the steps only when a claim needs them (:attr:`grads`).
        steps = parts
        step: dict[sp.Symbol, sp.Expr] = {}
        self.grad_atoms: dict[sp.Symbol, sp.Expr] = {}  # ∇v[k] -> its step expression
        self.steps: dict[str, np.ndarray] = {}
        gradient_atoms: dict[str, np.ndarray] = {}
        as_atoms = self._definitions_as_atoms if self.by_definition else None
        for name, atoms in reversed(self.order):
            entries = atoms.ravel().tolist()
            for atom in entries:
                if atom in steps:
                    step[atom] = add(*steps.pop(atom))
            self.steps[name] = _array_of(atoms, step)
            nabla = symbol_array(f"∇{name}", atoms.shape, real=True)
            for k, (atom, g) in enumerate(zip(entries, nabla.ravel().tolist())):
                total = step.get(atom)
                if total is None or total is _ZERO:  # (only SymPy's zero equals 0)
                    if not formal:
                        nabla.flat[k] = sp.Integer(0)
                        continue
                    total = sp.Integer(0)  # zero at these sizes only, maybe: ∇v stays an indeterminate
                self.grad_atoms[g] = total
                for p, dp in self._local_partials(atom, differentiable, templates).items():
                    if as_atoms is not None and dp.__class__ is not sp.Symbol:  # a symbol is no definition
                        dp = as_atoms(dp)
                    steps.setdefault(p, []).append(mul(g, dp))
            gradient_atoms[name] = nabla
        for s, terms in steps.items():
            step[s] = add(*terms)
        self._differentiable_inputs = [name for name, inp in d.inputs.items() if not inp.constant]
        for name in self._differentiable_inputs:
            self.steps[name] = _array_of(self.env[name], step)
        self._grads: _ExpandedAdjoints | None = None
        self._full: dict[sp.Symbol, sp.Expr] = {}
        self._layered: list | None = None  # the layered witness's points, made on first use
        self._over_atoms = Converter(self._lookup_simplex, self._ties_null, self._ties_alone)
        self._over_inputs = Converter(self._lookup_definition, self._ties_null, self._ties_alone)
        self._gradient_atoms = gradient_atoms
        self._position = {atom: k for k, (_, atoms) in enumerate(self.order) for atom in atoms.flat}
        # the forward variables each definition reads (see _reads), and the converters of peeled_zero,
        # one per set of variables written as their definitions
        self._reads_made: list[set[int]] | None = None
        self._plain_reads: list[set[int]] = []
        self._peeled: dict[frozenset, Converter] = {}
        self._claim_env: _ClaimEnv | None = None  # made on first use (most claims never need it)
        self._step_env: dict[str, np.ndarray] | None = None
        self._stepped: dict[tuple[int, int], np.ndarray] = {}  # a claim's value over the gradient atoms
        if formal:
            self.formal()

    def _local_partials(self, atom: sp.Symbol, wrt: set[sp.Symbol], templates: dict) -> dict[sp.Symbol, sp.Expr]:
        """``∂(def atom)/∂p`` for every p of ``wrt`` in the atom's definition; a sigmoid's written with its own
        atom, ``s·(1 − s)·∂u/∂p`` (an identity), as SymPy writes tanh's ``1 − h²``: one form for the truth and
        a claim that writes ``grad_s * s * (1 - s)``, where SymPy's ``exp(−u)/(1 + exp(−u))²`` would send the
        claim to the costlier tests over the inputs."""
        value = self.local[atom]
        w = sigmoid_exponent(value)
        if w is None:
            return partials(value, wrt, templates)
        slope = atom * (1 - atom)
        return {p: -dw * slope for p, dw in partials(w, wrt, templates).items()}

    def formal(self) -> None:
        """From here on, decide identities in the atoms as independent indeterminates: without the simplex
        substitution (which singles out the last entry of an axis), and with no conversion made with it;
        with no mask against a max/min atom written as its arg-max indicator (a relation that reads the
        atom's definition: at n = 2, ``x >= max(x)`` and ``x > min(x)`` are one indicator); and with
        ``StepGe(u)`` merged into ``Step(u)`` only where ``u`` reads the inputs alone (an atom's definition
        may tie at another size: ``c = x * (n - 100)`` at n = 100). Once formal, a truth stays so: the
        conversions made since serve every later claim (a certificate's grid point is shared by the claims)."""
        if self._formal:
            return
        self.simplex = {}
        self.extremes = {}
        self.gathered = {}
        self._formal = True
        # converted afresh: a conversion made before may hold the simplex or a merge this test does not allow
        self._over_atoms = Converter(self._lookup_simplex, self._ties_null, self._ties_alone)
        self._over_inputs = Converter(self._lookup_definition, self._ties_null, self._ties_alone)
        self._peeled = {}
        self._unkinked = {}

    @property
    def grads(self) -> _ExpandedAdjoints:
        """The expanded true adjoint of every entry: each step with every ``∇v`` replaced by ``v``'s
        own expanded adjoint, made per variable (and per gradient atom) on first use."""
        if self._grads is None:
            self._grads = _ExpandedAdjoints(self)
        return self._grads

    @property
    def claim_env(self) -> Mapping[str, np.ndarray]:
        """The symbols of the truth, every ``grad_X`` bound to its true (expanded) adjoint."""
        if self._claim_env is None:
            env = _ClaimEnv(dict(self.env), self.grads)
            for helper in self.d.backward:
                env.own[helper.name] = evaluate_definition(helper.root, helper.index, env, self.sizes,
                                                           self.backend)
            self._claim_env = env
        return self._claim_env

    @property
    def step_env(self) -> dict[str, np.ndarray]:
        """For the one-step comparison: every ``grad_v`` of a forward variable bound to ``∇v``."""
        if self._step_env is None:
            env = dict(self.env)
            env.update({f"grad_{n}": g for n, g in self.steps.items() if n in self.d.inputs})
            env.update({f"grad_{n}": g for n, g in self._gradient_atoms.items()})
            for helper in self.d.backward:
                env[helper.name] = evaluate_definition(helper.root, helper.index, env, self.sizes, self.backend)
            self._step_env = env
        return self._step_env

    def _stepped_value(self, node, target: str, index) -> np.ndarray:
        """A claim's value over the gradient atoms (shared by :meth:`step_zero` and :meth:`chain_zero`)."""
        key = (id(node), id(index))
        if key not in self._stepped:
            value = evaluate_definition(node, index, self.step_env, self.sizes, self.backend)
            self._stepped[key] = np.broadcast_to(value, self.steps[target].shape)
        return self._stepped[key]

    def atomize(self, e: sp.Expr) -> sp.Expr:
        """Write every forward definition that appears whole as its atom (``tanh(z[0])`` → ``h[0]``),
        as the sweep writes the local partials: equal values, one form for both sides; and every max/min
        atom inside a step as its definition (a mask against the max is its indicator). (The exact test
        writes ``StepGe(u)`` as ``Step(u)`` where ``u`` ties on a null set only: :meth:`_ties_null`.)"""
        e = self._definitions_as_atoms(e) if self.by_definition else e
        return self._kinks_settled(e) if self.extremes else e

    def _definitions_as_atoms(self, e: sp.Basic) -> sp.Basic:
        """``e.xreplace(self.by_definition)``, each sub-expression replaced once per truth."""
        if not _has_args(e):  # a symbol or a number: only itself can be replaced
            return self.by_definition.get(e, e) if isinstance(e, sp.Basic) else e
        if not e.is_Function and all(a.is_Symbol or a.is_Number for a in e.args):  # no definition inside
            return e
        memo = self._as_atoms
        found = memo.get(e)
        if found is None:
            found = self.by_definition.get(e)
            if found is None:
                found = _rebuilt(e, [self._definitions_as_atoms(a) for a in e.args])
            memo[e] = _UNCHANGED if found is e else found
        return e if found is _UNCHANGED else found

    def _kinks_settled(self, e: sp.Basic) -> sp.Basic:
        """``e`` with every (outermost) step whose argument reads a max/min atom replaced by
        :meth:`_kink_against_extreme` (``e.xreplace`` of those steps), and every max's partial whose entry ties
        alone on a null set by the mask it then equals, each sub-expression once per truth."""
        if not _has_args(e):  # no step inside
            return e
        memo = self._unkinked
        found = memo.get(e)
        if found is None:
            if isinstance(e, Step) and not e.args[0].free_symbols.isdisjoint(self.extremes):
                found = self._kink_against_extreme(e)
            elif type(e) is ArgShare and self._ties_alone(e):
                found = by_template(ArgShare.reaches, e)  # the mask x >= max(x) writes it so: one form for both
            else:
                found = _rebuilt(e, [self._kinks_settled(a) for a in e.args])
            memo[e] = _UNCHANGED if found is e else found
        return e if found is _UNCHANGED else found

    def _ties_alone(self, share: ArgShare) -> bool:
        """Does entry i of a max's partial tie with no other entry but on a null set (so the share is the mask
        ``x_i >= max``)?"""
        i, sign, xs = share.parts()
        return all(self._apart(xs[i], x) for j, x in enumerate(xs) if j != i)

    def _apart(self, a: sp.Expr, b: sp.Expr) -> bool:
        """:meth:`_ties_null` of ``a - b``, first without building it: two entries whose forms over the inputs
        differ by a nonzero polynomial in the inputs (a window's x[i] and x[j])."""
        key = (a, b, self._formal)
        found = self._null_ties.get(key)
        if found is None:
            found = False
            if self._may_merge(a) and self._may_merge(b):
                try:
                    inputs = self._over_inputs
                    found = inputs.nonzero_polynomial_frac(add_frac(inputs(a), inputs(b), -1))
                except (Unsupported, ZeroDivisionError):
                    found = False
            found = found or self._ties_null(a - b)
            self._null_ties[key] = self._null_ties[(b, a, self._formal)] = found
        return found

    def _ties_null(self, u: sp.Expr) -> bool:
        """Is ``u = 0`` a null set of the inputs' domains, so that ``u >= 0`` and ``u > 0`` agree wherever a
        trial can land? Proved when ``u``, written over the inputs, is real-analytic on the whole domain (a
        connected open set) and not zero at one point: such a function vanishes on a null set. Anything else
        (a gradient atom, a kink or a generic function below ``u``, a tie by construction) keeps the two
        steps apart."""
        known = self._null_ties.get((u, self._formal))
        if known is not None:
            return known
        # a nonzero polynomial in the inputs (x[i] - x[j] of a window) at once, else the general test
        found = self._may_merge(u) and (self._over_inputs.nonzero_polynomial(u) or self._null_over_inputs(u))
        self._null_ties[(u, self._formal)] = found
        return found

    def _may_merge(self, e: sp.Expr) -> bool:
        """May a tie test read ``e`` through its definitions? Not through a gradient atom (∇v is independent only
        for the one-step identity, not in value), nor in the formal test through a forward atom (its
        definition may tie at another size: ``x * (n - 100)``)."""
        return not self._gradient_atoms_in(e) and not (self._formal and self._forward_atoms_in(e))

    def _null_over_inputs(self, u: sp.Expr) -> bool:
        """:meth:`_ties_null` for ``u`` written over the inputs, decided once per process for each such form."""
        f = self.full(u)
        if self.simplex:
            f = f.xreplace(self.simplex)
        found = _NULL_TIES.get(f)
        if found is None:
            found = _analytic(f) and any(
                (v := at_point(f, self._random_point(sorted(f.free_symbols, key=lambda x: x.name), rng, 1)))
                is not None and v != 0 for rng in (random.Random(k) for k in (1, 2)))
            if len(_NULL_TIES) > 50_000:
                _NULL_TIES.clear()
            _NULL_TIES[f] = found
        return found

    def _kink_against_extreme(self, kink: sp.Expr) -> sp.Expr:
        """A step of ``u`` with the max/min atoms of ``u`` written as their definitions, once per kink; the
        rewritten step (its arg-max indicator, costly to derive) is shared by every truth of the process,
        as a window's max has the same definition at every dims (and in a file's mistaken twin)."""
        found = self._kinks.get(kink)
        if found is None:
            u = kink.args[0].xreplace(self.extremes)
            found = _against_extreme_once(type(kink), u)
            if self.gathered and found.has(MaxOf, MinOf):
                # an entry against the max of entries copied from it (x >= max(concat([x, x]))): the same
                # comparison with each copy written as the entry it copies
                through = u.xreplace(self.gathered)
                if through != u:
                    resolved = _against_extreme_once(type(kink), through)
                    if not resolved.has(MaxOf, MinOf):
                        found = resolved
            self._kinks[kink] = found
        return found

    def claim_value(self, node, index=None) -> np.ndarray:
        return evaluate_definition(node, index, self.claim_env, self.sizes, self.backend)

    def step_zero(self, node, target: str, index=None) -> bool:
        """Does the claim equal the truth as one chain-rule step, every ``∇v`` an independent atom?

        Sound: an identity in independent atoms holds at the atoms' true values. It is the cheap
        proof for a claim that reads the next gradient (``W.T @ grad_z``), whose expanded form
        can be large.
        """
        return self.identical_over_atoms(self._stepped_value(node, target, index), self.steps[target])

    def identical_over_atoms(self, claimed: np.ndarray, truth: np.ndarray) -> bool:
        """Is every entry of ``claimed - truth`` zero by exact arithmetic, the atoms independent?"""
        for idx in np.ndindex(*truth.shape):
            c, t = sp.sympify(claimed[idx], strict=True), sp.sympify(truth[idx], strict=True)
            if c == t:
                continue
            try:  # each side on its own: the difference of two long sums is never built in SymPy
                c, t = self.atomize(c), self.atomize(t)
                if c == t:  # one form for both (a mask against the max is its arg-max indicator)
                    continue
                if not self._over_atoms.equal(c, t):
                    return False
            except (Unsupported, ZeroDivisionError):
                return False
        return True

    def chain_zero(self, node, target: str, index=None) -> bool:
        """Does the claim equal the truth over several chain-rule steps, each ``∇v`` the claim reads
        an independent atom?

        For a claim that skips steps (``grad_x`` written with ``grad_xn`` of a layer norm two
        variables later), every gradient atom of the one-step truth that the claim does not read
        is replaced by its own step (``∇v = Σ ∇w ∂w/∂v``, an identity), until only atoms the
        claim reads remain; then forward atoms may be replaced by their definitions (``xn`` by
        ``xc·rstd``) while the gradient atoms stay independent. Sound for the same reason as
        :meth:`step_zero`, and far smaller than the fully expanded adjoints.
        """
        claimed = self._stepped_value(node, target, index)
        truth = self.steps[target]
        for idx in np.ndindex(*truth.shape):
            c = sp.sympify(claimed[idx], strict=True)
            t: sp.Expr = truth[idx]
            read = self._gradient_atoms_in(c)
            for _ in range(len(self.order) + 1):
                deeper = {s: self.grad_atoms[s] for s in self._gradient_atoms_in(t) if s not in read}
                if not deeper:
                    break
                t = t.xreplace(deeper)
            else:
                return False
            if c == t:
                continue
            try:
                c, t = self.atomize(c), self.atomize(t)
                if self._over_atoms.equal(c, t):  # side by side: the difference is built only if needed
                    continue
                e = c - t
                if self.peeled_zero(e) or self._over_inputs.is_zero(softmax_as_exp(e)):
                    continue
                return False
            except (Unsupported, ZeroDivisionError):
                return False
        return True

    def _gradient_atoms_in(self, e: sp.Basic) -> frozenset:
        """The gradient atoms among ``e.free_symbols``, memoised per truth by sub-expression (claims and steps
        share them)."""
        return _symbols_in(e, self.grad_atoms, self._gradient_atoms_of)

    def _forward_atoms_in(self, e: sp.Basic) -> frozenset:
        """The forward atoms among ``e.free_symbols``, memoised per truth by sub-expression (a difference's
        terms and the local definitions below it recur from entry to entry)."""
        return _symbols_in(e, self.local, self._forward_atoms_of)

    def _reach_is_small(self, e: sp.Expr, limit: int = 16) -> bool:
        """Do at most ``limit`` forward atoms lie below ``e``'s (its whole form over the inputs is small)?"""
        seen: set[sp.Symbol] = set()
        todo = list(self._forward_atoms_in(e))
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            if len(seen) > limit:
                return False
            todo.extend(t for t in self._forward_atoms_in(self.local[s]) if t not in seen)
        return True

    def peeled_zero(self, e: sp.Expr, rounds: int = 6) -> bool:
        """Is ``e`` zero with the latest forward atoms replaced by their local definitions, one layer
        at a time (``xn`` by ``xc·rstd``, then ``rstd`` by its definition over ``xc``), the earlier
        atoms and every ``∇v`` still independent? Sound like :meth:`identical_over_atoms` (each
        replacement is an equality), and far smaller than substituting down to the inputs, which for
        a late layer (the second LayerNorm of a transformer block) carries the whole block."""
        expand: set[int] = set()  # forward variables (by position) written as their definitions
        frontier = {self._position[s] for s in e.free_symbols if s in self.local}
        e = softmax_as_exp(e)
        # read outside any function's argument or root's base: written as a definition, such a variable can
        # cancel term by term (mean(x - mu) = 0 needs mu's definition; var inside sqrt(var + eps) needs none)
        plain = {self._position[s] for s in _plain_symbols(e, self.local, {})}
        for _ in range(rounds):
            if not frontier:
                return False
            latest = max(frontier & plain or frontier)
            expand.add(latest)
            frontier.discard(latest)
            frontier |= self._reads()[latest] - expand
            if latest in plain:
                plain |= self._reads(plain=True)[latest]
            key = frozenset(expand)
            peeled = self._peeled.get(key)
            if peeled is None:  # one converter per layer set, shared by every entry and claim
                peeled = self._peeled[key] = Converter(ties_null=self._ties_null, ties_alone=self._ties_alone)
                peeled.lookup = partial(self._lookup_peeled, peeled, key)
            if peeled.is_zero(e):
                return True
        return False

    def _reads(self, plain: bool = False) -> list[set[int]]:
        """The forward variables (by position) each variable's definition reads (only peeled_zero needs them);
        ``plain``: those it reads outside any function's argument or root's base (:func:`_plain_symbols`)."""
        if self._reads_made is None:
            self._reads_made = [{self._position[s] for atom in atoms.flat for s in self.local[atom].free_symbols
                                 if s in self._position} for _, atoms in self.order]
            memo: dict[sp.Basic, frozenset] = {}
            self._plain_reads = [{self._position[s] for atom in atoms.flat
                                  for s in _plain_symbols(softmax_as_exp(self.local[atom]), self._position, memo)}
                                 for _, atoms in self.order]
        return self._plain_reads if plain else self._reads_made

    def _lookup_peeled(self, converter: Converter, expand: frozenset, s: sp.Symbol):
        if s in self.simplex:
            return converter(self.simplex[s])
        if self._position.get(s) in expand:
            return converter(softmax_as_exp(self.local[s]))
        return None

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

    def exact_zero(self, e: sp.Expr, over_inputs: bool = True) -> str | None:
        """Prove ``e == 0`` by exact rational arithmetic (see :mod:`.exact`), or None.

        First with the forward atoms as independent variables, then with every atom
        replaced by its definition (each atom converted once and cached).
        """
        try:
            if self._over_atoms.is_zero(e):
                return "exact rational arithmetic over the per-neuron atoms"
            if over_inputs and (any(s in self.local for s in e.free_symbols) or e.has(SoftmaxEntry)) and \
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
        how = self.exact_zero(e, over_inputs=False)
        small = how is None and self._reach_is_small(e)
        if small:  # few atoms below: the exact test over the inputs is cheap, and it proves a true claim
            how = self.exact_zero(e)
        if how is None:  # a quick look for a counterexample before the costly exact test over the inputs
            found = self.layered_witness(e.xreplace(self.simplex) if self.simplex else e, rng)
            if found is not None:
                value, point = found
                return Decision(False, "evaluated layer by layer at 60 digits at a point inside the inputs' "
                                       "domains", value, point)
            if not small:
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
        f = self.resolve_kinks(f)
        if f == 0:
            return Decision(True, "the inputs' domains fix every branch")
        found = self.witness(f, rng)
        if found is not None:
            value, point = found
            return Decision(False, "evaluated exactly at a point inside the inputs' domains", value, point)
        for how, step in (("cancel", _cancel), ("expand", sp.expand), ("simplify", sp.simplify)):
            if step(f) == 0:
                return Decision(True, f"{how} after substituting the forward definitions")
        return Decision(None, "could not reduce the difference to zero")

_AGAINST_EXTREME: dict[tuple, sp.Expr] = {}  # Step(u) by (step, u), for u against a max/min atom's definition
_NULL_TIES: dict[sp.Expr, bool] = {}  # SymbolicTruth._ties_null by the argument over the inputs

# real-analytic on the whole real line: an argument built from these, sums, products and integer powers ties
# on a null set unless identically zero
_ANALYTIC = (sp.exp, sp.sin, sp.cos, sp.tanh, sp.sinh, sp.cosh, sp.atan, sp.erf)


def _analytic(e: sp.Expr) -> bool:
    """Is ``e`` real-analytic wherever its symbols' assumptions let them range (a power with an exponent
    other than a natural number, and a log, only of an argument SymPy proves positive)?"""
    if not e.args:
        return bool(e.is_real)
    if e.is_Add or e.is_Mul:
        return all(_analytic(a) for a in e.args)
    if e.is_Pow:
        base, exponent = e.args
        if not exponent.is_number or not _analytic(base):
            return False
        return bool(exponent.is_Integer and exponent >= 0) or base.is_positive is True
    if isinstance(e, _ANALYTIC):
        return _analytic(e.args[0])
    if isinstance(e, sp.log):
        return _analytic(e.args[0]) and e.args[0].is_positive is True
    return False


class _ExpandedAdjoints(Mapping[str, np.ndarray]):
    """``grad[name]``: the truth's steps with every ``∇v`` replaced by its expanded value, each gradient
    atom expanded once and only when an entry asked for reads it."""

    def __init__(self, truth: SymbolicTruth):
        self.truth = truth
        self.names = [name for name, _ in truth.order] + list(truth._differentiable_inputs)
        self.arrays: dict[str, np.ndarray] = {}
        self.memo: dict[sp.Symbol, sp.Expr] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            if name not in self.truth.steps:
                raise KeyError(name)
            steps = self.truth.steps[name]
            out = np.empty(steps.shape, dtype=object)
            for idx in np.ndindex(*steps.shape):
                out[idx] = self.expand(steps[idx])
            self.arrays[name] = out
        return self.arrays[name]

    def entry(self, name: str, idx: tuple) -> sp.Expr:
        """One entry of ``self[name]``, expanding that entry alone (a counterexample's report needs one)."""
        if name in self.arrays:
            return self.arrays[name][idx]
        if name not in self.truth.steps:
            raise KeyError(name)
        return self.expand(self.truth.steps[name][idx])

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def expand(self, e: sp.Expr) -> sp.Expr:
        atoms = [s for s in e.free_symbols if s in self.truth.grad_atoms] if e != 0 else []
        for s in atoms:
            if s not in self.memo:  # a ∇v's step reads only later variables' ∇: the depth is the layers'
                self.memo[s] = self.expand(self.truth.grad_atoms[s])
        return e.xreplace({s: self.memo[s] for s in atoms}) if atoms else e


class _ClaimEnv(Mapping[str, np.ndarray]):
    """The truth's symbols and helpers (``own``), and ``grad_X`` read from the expanded adjoints on use."""

    def __init__(self, own: dict[str, np.ndarray], grads: Mapping[str, np.ndarray]):
        self.own = own
        self.grads = grads

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self.own:
            return self.own[key]
        if key.startswith("grad_") and key[5:] in self.grads:
            return self.grads[key[5:]]
        raise KeyError(key)

    def __iter__(self):
        yield from self.own
        yield from (f"grad_{n}" for n in self.grads if f"grad_{n}" not in self.own)

    def __len__(self) -> int:
        return sum(1 for _ in self)


_UNCHANGED: Any = object()  # a memo's mark for "the expression itself": an equal one is another object


def _symbols_in(e: sp.Basic, keep: Mapping, memo: dict[sp.Basic, frozenset]) -> frozenset:
    """The symbols of ``e.free_symbols`` that are keys of ``keep``, memoised in ``memo`` by sub-expression."""
    found = memo.get(e)
    if found is None:
        if not _has_args(e) or not _free_symbols_of_args(type(e)):  # a symbol, a number, or its own rule
            found = frozenset(s for s in e.free_symbols if s in keep) if isinstance(e, sp.Basic) else frozenset()
        else:
            found = frozenset().union(*[_symbols_in(a, keep, memo) for a in e.args])
        memo[e] = found
    return found


def _plain_symbols(e: sp.Basic, keep: Mapping, memo: dict[sp.Basic, frozenset]) -> frozenset:
    """The symbols of ``keep`` that ``e`` reads outside any function's argument and any base of a non-integer
    power (through sums, products and integer powers alone), memoised in ``memo`` by sub-expression."""
    found = memo.get(e)
    if found is None:
        if isinstance(e, sp.Symbol):
            found = frozenset((e,)) if e in keep else frozenset()
        elif isinstance(e, (sp.Add, sp.Mul)):
            found = frozenset().union(*[_plain_symbols(a, keep, memo) for a in e.args])
        elif isinstance(e, sp.Pow) and e.exp.is_Integer:
            found = _plain_symbols(e.base, keep, memo)
        else:
            found = frozenset()
        memo[e] = found
    return found


_FREE_BY_ARGS: dict[type, bool] = {}


def _free_symbols_of_args(cls: type) -> bool:
    """Are the free symbols of a ``cls`` node those of its arguments (``Basic.free_symbols``, not a rule of its
    own as for a bound variable)?"""
    found = _FREE_BY_ARGS.get(cls)
    if found is None:
        owner = next((k for k in cls.__mro__ if "free_symbols" in k.__dict__), None)
        found = _FREE_BY_ARGS[cls] = owner is sp.Basic
    return found


def _has_args(e: object) -> bool:
    """Is ``e`` an expression with arguments (``xreplace`` leaves anything else as it is)?"""
    return isinstance(e, sp.Basic) and bool(e.args)


def _rebuilt(e: sp.Basic, args: list) -> sp.Basic:
    """``e`` on new arguments as ``xreplace`` rebuilds it (``e.func(*args)``), or ``e`` if none changed."""
    if all(a is b for a, b in zip(args, e.args)):
        return e
    if e.func in _APPLIED and len(args) == 1:  # exp, log, tanh of a new argument: as SymPy builds it, without
        return applied(e.func, args[0])  # the eval that changes nothing there (symfuncs.applied)
    return e.func(*args)


_APPLIED = {sp.exp, sp.log, sp.tanh}


def _cancel(e: sp.Expr) -> sp.Expr:
    return sp.cancel(sp.together(e))


def _array_of(symbols: np.ndarray, adj: Mapping[sp.Symbol, sp.Expr]) -> np.ndarray:
    out = np.empty(symbols.shape, dtype=object)
    for idx in np.ndindex(*symbols.shape):
        out[idx] = adj.get(symbols[idx], sp.Integer(0))
    return out
