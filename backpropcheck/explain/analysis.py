"""The per-neuron truth at small dims (the symbolic engine's), and the local Jacobians read off it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import sympy as sp  # type: ignore[import-untyped]

from ..engines.symbolic import SymbolicTruth, partials
from ..lang.ops import function_of
from ..model import Derivation
from .forms import Form, spelled, tensor, tr
from .jacobian import dim_constant, same, tie_candidates, tied_block
from .letters import Letters
from .structure import Structure, classify

MAX_JACOBIAN = 4096  # entries of a local Jacobian worth building at small dims


class Analysis:
    """The per-neuron truth at small dims, and the local Jacobians read off it."""

    def __init__(self, d: Derivation, sizes: Mapping[str, int]):
        self.d = d
        self.sizes = dict(sizes)
        self.truth = SymbolicTruth(d, sizes)
        self.letters = Letters(d, sizes)
        self.names = list(d.inputs) + [f.name for f in d.forward]
        self.arrays = {n: self.truth.env[n] for n in self.names}
        self.owner: dict[sp.Symbol, str] = {}
        for name, arr in self.arrays.items():
            for s in arr.flat:
                self.owner[s] = name
        self.reads: dict[str, set[str]] = {}
        for name, atoms in self.truth.order:
            used: set[str] = set()
            for atom in atoms.flat:
                used |= {self.owner[s] for s in self.truth.local[atom].free_symbols if s in self.owner}
            self.reads[name] = used
        loss = getattr(self.truth, "loss", None)
        self.loss_reads = {self.owner[s] for s in loss.free_symbols if s in self.owner} if loss is not None else set()
        self._templates: dict[tuple[sp.Expr, sp.Symbol], sp.Expr] = {}  # the engine's derivative templates, shared by every Jacobian built here
        self._jac: dict[tuple[str, str], np.ndarray | None] = {}
        self._structure: dict[tuple[str, str], Structure] = {}

    def consumers(self, u: str) -> list[str]:
        """The forward variables whose definitions read u."""
        return [name for name, _ in self.truth.order if u in self.reads[name] and name != u]

    def size(self, name: str) -> int:
        return int(np.prod(self.arrays[name].shape)) if self.arrays[name].shape else 1

    def gradient_atoms(self, v: str) -> np.ndarray:
        """The engine's gradient atoms ``∇v[k]`` of a forward variable (0 where v[k] cannot reach the loss)."""
        return np.asarray(self.truth.step_env[f"grad_{v}"])

    def jacobian(self, v: str, u: str) -> np.ndarray | None:
        """``J[kv + ku] = ∂ v[kv] / ∂ u[ku]`` from v's local definition (None when too large)."""
        key = (v, u)
        if key not in self._jac:
            self._jac[key] = self._build_jacobian(v, u) if self.size(v) * self.size(u) <= MAX_JACOBIAN else None
        return self._jac[key]

    def _build_jacobian(self, v: str, u: str) -> np.ndarray:
        """The engine's local partials of each entry of v, at the entries of u they read."""
        V, U = self.arrays[v], self.arrays[u]
        where = _positions(U)
        J = np.full(V.shape + U.shape, sp.Integer(0), dtype=object)
        for kv in np.ndindex(*V.shape):
            for s, ds in partials(self.truth.local[V[kv]], set(where), self._templates).items():
                J[kv + where[s]] = self.truth.atomize(ds)
        return J

    def loss_gradient(self, u: str) -> np.ndarray:
        """``∂E/∂u`` through E's own expression only (the direct term), from the engine's partials."""
        U = self.arrays[u]
        found = partials(self.truth.loss, set(_positions(U)), self._templates)
        out = np.empty(U.shape, dtype=object)
        for k in np.ndindex(*U.shape):
            out[k] = found.get(U[k], sp.Integer(0))
        return out

    # -- structure -------------------------------------------------------------------

    def _matrices(self, shape: tuple[int, ...]) -> list[tuple[str, bool, np.ndarray]]:
        """Every 2-D tensor of the file, and every transpose, of this shape: (name, transposed, entries)."""
        out = []
        for name, arr in self.arrays.items():
            if arr.ndim == 2:
                out += [(name, transposed, m) for m, transposed in ((arr, False), (arr.T, True)) if m.shape == shape]
        return out

    def _named(self, name: str, transposed: bool) -> Form:
        f = tensor(self.d, name)
        return tr(f) if transposed else f

    def match_matrix(self, M: np.ndarray) -> Form | None:
        """``W`` or ``Wᵀ`` (or their negatives) when M's entries are exactly a 2-D tensor's symbols."""
        for name, transposed, candidate in self._matrices(M.shape):
            for sign in (1, -1):
                if all(same(M[k], sign * candidate[k]) for k in np.ndindex(*M.shape)):
                    f = self._named(name, transposed)
                    return f if sign == 1 else Form("-" + f.text, "-" + f.tex, spelled("-{}", f), f.shape,
                                                    base=None, atom=False)
        return None

    def match_scaled(self, M: np.ndarray, redo: Callable[[Analysis], np.ndarray | None]
                     ) -> tuple[Form, sp.Expr] | None:
        """``(W, 1)``, or ``(K, 1/sqrt(d))`` when M is a constant multiple of a 2-D tensor (or its
        transpose); the constant is named in dims by redoing the block (``redo``) at dims one larger."""
        f = self.match_matrix(M)
        if f is not None:
            return f, sp.Integer(1)
        if M.ndim != 2 or M.size == 0:
            return None
        for name, transposed, candidate in self._matrices(M.shape):
            c = sp.simplify(M.flat[0] / candidate.flat[0])
            if c == 0 or c.free_symbols or not all(same(M[k], c * candidate[k]) for k in np.ndindex(*M.shape)):
                continue
            general = self._general_constant(c, name, transposed, redo)
            return None if general is None else (self._named(name, transposed), general)
        return None

    def _general_constant(self, c: sp.Expr, name: str, transposed: bool,
                          redo: Callable[[Analysis], np.ndarray | None]) -> sp.Expr | None:
        """The constant c of ``c · name`` in dims, read off the same block redone at dims one larger."""
        big = self.larger()
        M2 = redo(big) if big is not None else None
        if big is None or M2 is None or M2.shape[0] == 0:
            return None
        big_arr = big.arrays[name].T if transposed else big.arrays[name]
        if M2.shape != big_arr.shape:
            return None
        return dim_constant(c, sp.simplify(M2.flat[0] / big_arr.flat[0]), self.sizes, big.sizes)

    def match_vector(self, c: np.ndarray) -> Form | None:
        """A 1-D tensor whose symbols are exactly c's entries."""
        for name, arr in self.arrays.items():
            if arr.ndim == 1 and arr.shape == c.shape and all(same(c[k], arr[k]) for k in range(c.shape[0])):
                return tensor(self.d, name)
        return None

    def larger(self) -> Analysis | None:
        """The same derivation at every dim one larger, to tell general constants from these dims'."""
        if not hasattr(self, "_larger"):
            try:
                self._larger: Analysis | None = Analysis(self.d, {k: v + 1 for k, v in self.sizes.items()})
            except Exception:  # noqa: BLE001 - without it, patterns are only claimed at these dims
                self._larger = None
        return self._larger

    def delta_ties(self, v: str, u: str) -> dict[int, int]:
        """The most axes of v tied to axes of u by a Kronecker delta (∂v/∂u vanishes off the tie)."""
        J = self.jacobian(v, u)
        if J is None:
            return {}
        rv = len(self.d.shape_of(v))
        for ties in tie_candidates(self.d.shape_of(v), self.d.shape_of(u)):
            if tied_block(J, rv, ties) is not None:
                return ties
        return {}

    def structure(self, v: str, u: str) -> Structure:
        """The classified local Jacobian ``∂v/∂u`` (cached)."""
        key = (v, u)
        if key not in self._structure:
            self._structure[key] = classify(self, v, u)
        return self._structure[key]

    def elementwise_of(self, v: str) -> tuple[str, str] | None:
        """``("sigmoid", "z")`` when the file defines ``v = sigmoid(z)`` in matrix form."""
        definition = next((f for f in self.d.forward if f.name == v), None)
        return function_of(definition.root) if definition is not None and definition.index is None else None


def _positions(U: np.ndarray) -> dict[sp.Symbol, tuple[int, ...]]:
    """Each symbol of an array of entries, with its index (concrete entries, such as labels, left out)."""
    return {U[k]: k for k in np.ndindex(*U.shape) if isinstance(U[k], sp.Symbol)}
