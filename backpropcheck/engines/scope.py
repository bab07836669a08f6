"""Proof scope: is a claim proved for *every* assignment of its dims, or only at the sampled ones?

A finite certificate (``docs/proof-scope.md`` states the argument in full). For a claim in the
class below, the difference ``claim − truth`` at one entry is, over the per-neuron *atoms*
(input entries, forward entries, gradient atoms ∇v, and generators such as ``f(z[j])`` or a
softmax entry, all treated as independent indeterminates), a sum of terms, each a product of
atoms indexed by a bounded number of index variables, with a coefficient that is a rational
function of the dims. Grouped by the pattern of equal and distinct index values (its *type*),
the coefficient of each type is a polynomial in every dim of a degree we bound from the
expressions. So: if every dim ``d`` is at least ``K_d`` (the most index variables over d in any
term: then every type occurs) and the difference is the zero rational function at ``deg_d + 1``
distinct sizes of every dim (a grid), it is zero at every size.

The zero test at the certificate's sizes must be *formal* — an identity in the atoms as
independent indeterminates (:meth:`SymbolicTruth.step_zero` and the exact test over the atoms),
never ``simplify`` or a substitution of the forward definitions, and without the simplex
substitution (which singles out the last entry of an axis).

This module decides membership of the class syntactically, over the IR, by an abstract
interpretation of every expression involved (the claim, its ``[backward]`` helpers and the
derivative of every definition the truth goes through, by abstract vector-Jacobian products).
Each op's abstract rules live in its op-table entry (``scope_value``/``scope_adjoint``, written in
:mod:`backpropcheck.lang.ops.certificate`); this module walks the IR with them.
Anything it does not recognise — an unknown op, index form, an affine dim, a dim inside a
non-polynomial function — is outside the class, and the claim keeps ``sampled shapes``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..lang.dims import Shape
from ..lang.ir import Call, Const, DimSize, IndexRef, IndexSum, Node, Var, names_used, walk, walk_through
from ..lang.ops import OPS, Op
from ..lang.ops.certificate import AV, Outside, add_counts, atom, max_counts, named, reduced_axes, sum_adjoints
from ..model import Claim, Derivation
from ..results import SymbolicEvidence

ALL_SHAPES = "all-shapes"
SAMPLED = "sampled-shapes"

MAX_SIZE = 9  # the largest dim the certificate will build a per-neuron truth at
MAX_POINTS = 24  # the most dim assignments one certificate may need
# onehot (and binary, index) inputs are concrete draws in the per-neuron truth: an identity at one
# draw per size says nothing of every label, so they are outside the class
DOMAINS = ("real", "positive", "unit", "simplex")


class _Broken(Exception):
    """A truth the certificate needs failed to build before (for another claim of the file)."""


@dataclass(frozen=True)
class Scope:
    kind: str  # ALL_SHAPES | SAMPLED
    argument: str
    extra_sizes: tuple[dict[str, int], ...] = ()
    timed_out: bool = False  # SAMPLED because the certificate ran past its share of the budget


# ---------------------------------------------------------------------------
# forward values


class Interpreter:
    """Abstract values of expressions over the atoms of one derivation."""

    def __init__(self, functions: set[str], env: dict[str, AV], atoms: set[str] | None = None,
                 helpers: Mapping[str, Node] | None = None):
        self.functions = functions  # generic element-wise functions declared in [functions]
        self.env = env
        self.atoms = set(env) if atoms is None else atoms  # tensors whose entries are independent
        self.helpers = helpers or {}  # [backward] helpers by name: what an argument reads through one
        self.memo: dict[int, AV] = {}

    def value(self, node: Node) -> AV:
        found = self.memo.get(id(node))
        if found is None:
            found = self.memo[id(node)] = self._value(node)
        return found

    def _value(self, node: Node) -> AV:
        if isinstance(node, Var):
            if node.name not in self.env:
                raise Outside(f"`{node.name}` is read where the certificate cannot follow it")
            return self.env[node.name]
        if isinstance(node, Const):
            return AV(())
        if isinstance(node, DimSize):
            return AV((), expl={node.dim: 1})
        if not isinstance(node, Call):
            raise Outside(f"`{node.src or type(node).__name__}` is index form")
        args = [self.value(a) for a in node.args]
        op = OPS.get(node.op)
        if op is None or op.scope_value is None:
            raise Outside(f"the op `{node.op}` is not in the certificate's class")
        return op.scope_value(self, node, args)

    def local_args(self, node: Call, args: list[AV]) -> None:
        for a in args:
            if not a.local:
                raise Outside(f"the argument of `{node.src or node.op}` holds a sum or a dim used as a number")
        # A generator must never be a relabelling of its own negative (x[i] - x[j], X - X.T): the
        # engines write tanh(-u) = -tanh(u), Step(-u) = 1 - Step(u) with a sign chosen by the order
        # of the index values, which is not the same at every size. So a tensor read twice in an
        # argument must be read at the same index tuple: no transpose, broadcast axis or diagonal.
        seen: dict[str, int] = {}
        moves = False
        for arg in node.args:
            for n in walk_through(arg, self.helpers):  # H = x[:, None] + x[None, :] reads x twice in tanh(H)
                if isinstance(n, Var):
                    seen[n.name] = seen.get(n.name, 0) + 1
                elif isinstance(n, Call) and not (n.op in OPS and OPS[n.op].same_site):
                    moves = True
        if moves and any(k > 1 for k in seen.values()):
            raise Outside(f"the argument of `{node.src or node.op}` reads one tensor at two index tuples")

    def whole_axis_operand(self, node: Call) -> None:
        """A softmax-like function reads a whole axis: its operand must be an atom that really varies
        along that axis (a tensor with a named dim there), so no dim hides inside the generator."""
        (arg,) = node.args
        if not isinstance(arg, Var) or arg.name not in self.atoms or arg.name not in self.env:
            raise Outside(f"`{node.src or node.op}` is not applied to a named tensor")
        av = self.env[arg.name]
        if av.bound or av.expl or av.inner or av.den or not av.monomial:
            raise Outside(f"`{node.src or node.op}` is applied to a value that is not an atom")
        for k in reduced_axes(node.params, len(av.shape)):
            if named(av.shape[k]) is None:
                raise Outside(f"`{node.src or node.op}` runs over an axis of literal size")


# ---------------------------------------------------------------------------
# abstract vector-Jacobian products: the terms of the per-neuron truth


class Backprop:
    """Abstract adjoints: ``vjp(root, g)`` adds the abstract value of ``g · ∂root/∂x`` to ``out[x]``."""

    def __init__(self, interp: Interpreter):
        self.interp = interp

    def vjp(self, root: Node, g: AV, out: dict[str, AV], only: set[str] | None = None) -> None:
        stack = [(root, g)]
        while stack:
            node, g = stack.pop()
            if isinstance(node, Var):
                if only is None or node.name in only:
                    out[node.name] = sum_adjoints(out.get(node.name), g)
                continue
            if not isinstance(node, Call):
                continue
            self.interp.value(node)  # the class's rules for the node itself (a dim inside tanh, …)
            op = OPS[node.op]
            if op.nograd:
                continue  # no operand, or never differentiated through
            for k, child in enumerate(node.args):
                if only is None or _reads(child, only):
                    share = self._adjoint(node, op, g, k)
                    if share is not None:  # None: no gradient flows there (where's mask)
                        stack.append((child, share))

    def _adjoint(self, node: Call, op: Op, g: AV, k: int) -> AV | None:
        """The abstract value of operand k's share ``g · ∂node/∂operand_k`` (summed over broadcasts)."""
        if op.scope_adjoint is None:
            raise Outside(f"the op `{node.op}` is not in the certificate's class")
        return op.scope_adjoint(self.interp, node, g, k, [self.interp.value(a) for a in node.args])


def _reads(node: Node, names: set[str]) -> bool:
    return any(isinstance(n, Var) and n.name in names for n in walk(node))


# ---------------------------------------------------------------------------
# the plan: which dims, how large, how many sizes


@dataclass(frozen=True)
class Plan:
    route: str  # "step" | "full"
    k: dict[str, int]  # the pattern threshold per dim
    degree: dict[str, int]  # the degree of the dims' polynomial per dim

    def describe(self) -> str:
        parts = []
        for d in sorted(set(self.k) | set(self.degree)):
            parts.append(f"{d}: {self.k.get(d, 0)} index variables, degree {self.degree.get(d, 0)}")
        return "; ".join(parts) or "no dim enters the claim"


def plan(d: Derivation, claim: Claim, route: str) -> Plan:
    """Pattern thresholds and degrees for ``claim − truth``, or :class:`Outside`."""
    if claim.node is None:
        raise Outside("the claim did not parse")
    env: dict[str, AV] = {name: atom(inp.shape) for name, inp in d.inputs.items()}
    for f in d.forward:
        env[f.name] = AV(tuple(f.shape), atoms=True)  # validated when it enters a term
    interp = Interpreter(set(d.functions), env, set(d.inputs) | {f.name for f in d.forward},
                         {h.name: h.node for h in d.backward if h.node is not None})
    back = Backprop(interp)
    target = claim.target
    forward_names = [f.name for f in d.forward]
    used_defs: list[Node] = []

    def definition(f) -> Node:
        if f.index is not None or f.node is None:
            raise Outside(f"`{f.name}` is defined in index form")
        used_defs.append(f.node)
        return f.node

    if route == "step":
        grads: dict[str, AV] = {}
        for name in forward_names:
            grads[f"grad_{name}"] = atom(env[name].shape)  # the gradient atoms ∇v

        def step_of(x: str) -> AV:
            out: dict[str, AV] = {}
            for f in d.forward:
                if f.node is not None and x in _names(f.node) or f.index is not None and x in _names(f.root):
                    back.vjp(definition(f), atom(f.shape), out, {x})
            if d.loss.expression is not None and x in _names(d.loss.expression):
                used_defs.append(d.loss.expression)
                back.vjp(d.loss.expression, AV(()), out, {x})
            if x in d.loss.upstream:
                out[x] = sum_adjoints(out.get(x), atom(env[x].shape))
            if x not in out:
                return AV(env[x].shape)
            return out[x]

        for name, inp in d.inputs.items():
            if not inp.constant and _claim_reads(d, claim, f"grad_{name}"):
                grads[f"grad_{name}"] = step_of(name)
        truth = step_of(target)
    else:
        grads = {}
        wanted = {target} | {n[5:] for n in set(claim.uses) | _names(claim.node) if n.startswith("grad_")}
        downstream = set(wanted)
        for f in d.forward:
            if _names(f.root) & downstream:
                downstream.add(f.name)
        adj: dict[str, AV] = {}
        if d.loss.expression is not None and _names(d.loss.expression) & downstream:
            used_defs.append(d.loss.expression)
            back.vjp(d.loss.expression, AV(()), adj, downstream)
        for h in d.loss.upstream:
            if h in downstream:
                adj[h] = sum_adjoints(adj.get(h), atom(env[h].shape))
        for f in reversed(d.forward):
            if f.name in adj and _names(f.root) & downstream:
                back.vjp(definition(f), adj[f.name], adj, downstream)
        for name in wanted:
            if name != target and name in adj:
                grads[f"grad_{name}"] = adj[name]
        truth = adj.get(target, AV(env[target].shape))
    env.update(grads)
    for helper in d.backward:
        if helper.index is not None or helper.node is None:
            if _claim_reads(d, claim, helper.name):
                raise Outside(f"the helper `{helper.name}` is in index form")
            continue
        if _claim_reads(d, claim, helper.name):
            env[helper.name] = interp.value(helper.node)
            used_defs.append(helper.node)
    claimed = interp.value(claim.node)
    used_defs.append(claim.node)
    _check_names(d, used_defs)
    free: dict[str, int] = {}
    for dim in env[target].shape:
        dim_name = named(dim)
        if dim_name is not None:
            free = add_counts(free, {dim_name: 1})
    u = max_counts(claimed.bound, truth.bound)
    k = add_counts(free, u)
    degree = add_counts(u, add_counts(claimed.expl, truth.expl))
    return Plan(route, k, degree)


def _names(node: Node) -> set[str]:
    return names_used(node)


def _claim_reads(d: Derivation, claim: Claim, name: str) -> bool:
    if name in claim.uses:
        return True
    return claim.node is not None and name in _names(claim.node)


def _check_names(d: Derivation, roots: list[Node]) -> None:
    """Every tensor a term reads must be one whose entries are independent indeterminates."""
    for root in roots:
        for n in walk(root):
            if isinstance(n, (IndexRef, IndexSum)):
                raise Outside("index form")
            if isinstance(n, Var) and n.name in d.inputs and d.inputs[n.name].domain not in DOMAINS:
                raise Outside(f"`{n.name}` has the domain {d.inputs[n.name].domain}")
            if isinstance(n, Var):
                try:
                    shape = d.shape_of(n.name)
                except KeyError:
                    continue
                for dim in shape:
                    named(dim)


def grid(p: Plan, dims: list[str]) -> list[dict[str, int]]:
    """Every dim at least its threshold (and 2), with degree + 1 distinct sizes each."""
    axes = []
    for name in dims:
        low = max(2, p.k.get(name, 0))
        axes.append([low + j for j in range(p.degree.get(name, 0) + 1)])
    return [dict(zip(dims, combo)) for combo in itertools.product(*axes)]


# ---------------------------------------------------------------------------
# the certificate


def formal_zero(truth, claim: Claim, route: str) -> bool:
    """Is ``claim − truth`` zero as an identity in the atoms, at this truth's dims?"""
    import numpy as np

    truth.formal()  # the last entry of a simplex axis is an atom like every other (see docs)
    if route == "step":
        return bool(truth.step_zero(claim.node, claim.target))
    target = truth.grads[claim.target]
    return bool(truth.identical_over_atoms(np.broadcast_to(truth.claim_value(claim.node), target.shape), target))


def _fmt(sizes: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sizes.items())


def sized_definitions(d: Derivation) -> frozenset[str]:
    """The forward variables whose own definition reads a dim as a number (``tanh(n * x)``, a ``mean`` inside
    a function) or lies outside the class (index form, a slice). At one size such a variable's entry can be the
    very expression of something else at every size (``tanh(n * x)`` is ``tanh(2 * x)`` at n = 2), and its
    definition need not lie on the claim's route, where the plan counts the dims: so the certificate's truths
    never write an expression as its atom (``SymbolicTruth(formal=True)``). Worked out once per file."""
    from ..workload import file_memo

    memo = file_memo(d)
    hit = memo.get("sized")
    if hit is not None and hit[0] is d.forward and hit[1] == len(d.forward):
        return hit[2]
    env: dict[str, AV] = {name: atom(inp.shape) for name, inp in d.inputs.items()}
    env.update((f.name, AV(tuple(f.shape), atoms=True)) for f in d.forward)
    interp = Interpreter(set(d.functions), env)
    sized = set()
    for f in d.forward:
        try:
            if f.index is not None or f.node is None:
                raise Outside("index form")
            if any(interp.value(f.node).expl.values()):
                sized.add(f.name)
        except (Outside, KeyError, ValueError, TypeError, RecursionError, AttributeError):
            sized.add(f.name)
    found = frozenset(sized)
    memo["sized"] = (d.forward, len(d.forward), found)
    return found


class Certifier:
    """One file's certificates: the per-neuron truths at the certificate's sizes are shared."""

    def __init__(self, d: Derivation, entries: Callable[[dict[str, int]], int], max_entries: int):
        self.d = d
        self.entries = entries
        self.max_entries = max_entries
        # its own truths, by sorted dims, built formal (``SymbolicTruth(formal=True)``): the checker's relate the
        # atoms as they are at their own sizes (a ∇v zero there is 0, an expression is written as the atom whose
        # definition it is there)
        self.truths: dict[tuple, Any] = {}
        self.broken: set[tuple] = set()  # sizes whose truth could not be built: not retried per claim

    def _truth(self, sizes: dict[str, int]):
        from .symbolic import SymbolicTruth

        key = tuple(sorted(sizes.items()))
        if key in self.broken:
            raise _Broken(f"the per-neuron truth at dims {_fmt(sizes)} could not be built for an earlier claim")
        if key not in self.truths:
            try:
                self.truths[key] = SymbolicTruth(self.d, sizes, formal=True)
            except BaseException:  # the budget's alarm included: then re-raised, as any failure
                self.broken.add(key)
                raise
        return self.truths[key]

    def certify(self, claim: Claim, proved: list[dict[str, int]]) -> Scope:
        """The claim is proved at ``proved``; may it be called proved for all shapes?

        Raises whatever the symbolic engine raises (the caller's budget included)."""
        reasons = []
        for route in ("step", "full"):
            try:
                p = plan(self.d, claim, route)
            except Outside as exc:
                reasons.append(f"{exc}")
                continue
            except (KeyError, ValueError, TypeError, RecursionError, AttributeError) as exc:
                reasons.append(f"the certificate could not read the expressions ({type(exc).__name__})")
                continue
            points = grid(p, list(self.d.dims))
            biggest = max((max(s.values()) for s in points if s), default=0)
            if len(points) > MAX_POINTS or biggest > MAX_SIZE:
                reasons.append(f"it needs {len(points)} dim assignments up to size {biggest} ({p.describe()}), "
                               f"beyond the certificate's limits")
                continue
            try:
                too_big = [s for s in points if self.entries(s) > self.max_entries]
            except Exception:  # noqa: BLE001 - a shape the sizes make empty: no certificate
                reasons.append("its sizes do not fit every shape of the file")
                continue
            if too_big:
                reasons.append(f"at dims {_fmt(too_big[0])} the arrays are too large for the symbolic engine")
                continue
            failed = None
            try:
                for sizes in points:
                    if not formal_zero(self._truth(sizes), claim, route):
                        failed = sizes
                        break
            except _Broken as exc:
                reasons.append(str(exc))
                continue
            if failed is not None:
                reasons.append(f"at dims {_fmt(failed)} the claim is not identical to the "
                               f"{'chain-rule step' if route == 'step' else 'per-neuron truth'} over the atoms")
                continue
            what = "one chain-rule step" if route == "step" else "the per-neuron truth"
            argument = (f"equal to {what} as an identity in the per-neuron atoms at {len(points)} dim "
                        f"assignment(s) ({'; '.join(_fmt(s) for s in points)}): every pattern of equal and "
                        f"distinct indices occurs there and every dependence on the dims is pinned down "
                        f"({p.describe()}); see docs/proof-scope.md")
            extra = tuple(s for s in points if s not in proved)
            return Scope(ALL_SHAPES, argument, extra)
        why = "; ".join(dict.fromkeys(reasons)) or "outside the certificate's class"
        return Scope(SAMPLED, f"no all-shapes certificate: {why}")


def certify_records(d: Derivation, claims: list[Claim], records: Mapping[str, SymbolicEvidence], budget: float,
                    spent: dict[str, float], entries: Callable[[dict[str, int]], int], max_entries: int,
                    time_budget: Callable, timeout: type[BaseException], failures: tuple, share: float = 1.0,
                    certifier: Certifier | None = None) -> dict[str, Scope]:
    """Add ``scope`` and ``argument`` to the record of every proved claim (the checker's call site), and
    return each one's :class:`Scope`.

    Each claim's certificate runs within ``share`` of what is left of its own symbolic budget (CPU seconds).
    ``certifier``: one made by an earlier call for the same file, whose truths serve again."""
    certifier = certifier or Certifier(d, entries, max_entries)
    scopes: dict[str, Scope] = {}
    for claim in claims:
        record = records.get(claim.name)
        if record is None or record.status != "proved":
            continue
        left = budget - spent.get(claim.name, 0.0) if budget > 0 else 0.0
        if budget > 0 and left <= 0.05:
            record.scope, record.argument = SAMPLED, "no budget was left for the all-shapes certificate"
            continue
        started, wall = time.process_time(), time.perf_counter()
        try:
            with time_budget(left * share):
                scope = certifier.certify(claim, record.shapes)
        except timeout:
            scope = Scope(SAMPLED, "the all-shapes certificate ran past the budget (--timeout)", timed_out=True)
        except failures as exc:
            scope = Scope(SAMPLED, f"the all-shapes certificate failed ({exc})")
        except Exception as exc:  # noqa: BLE001 - a certificate's trouble never costs the claim its proof
            scope = Scope(SAMPLED, f"the all-shapes certificate failed ({type(exc).__name__}: {exc})")
        spent[claim.name] = spent.get(claim.name, 0.0) + time.process_time() - started
        record.seconds += time.perf_counter() - wall
        record.scope, record.argument = scope.kind, scope.argument
        scopes[claim.name] = scope
    return scopes


def expression_plan(node: Node, shapes: Mapping[str, Shape], functions: Collection[str] = frozenset()) -> Plan:
    """The certificate's thresholds for one expression whose tensors are independent atoms (``e1 - e2``
    of two expressions to compare): every dim at least ``k``, ``degree + 1`` sizes of each."""
    av = Interpreter(set(functions), {n: atom(s) for n, s in shapes.items()}).value(node)
    free: dict[str, int] = {}
    for dim in av.shape:
        name = named(dim)
        if name is not None:
            free = add_counts(free, {name: 1})
    return Plan("expression", add_counts(free, av.bound), add_counts(dict(av.bound), av.expl))
