"""The driver: read the file, walk each gradient back through its readers, prove what was written."""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import notes
from ..checker import Options, check_derivation
from ..errors import DerivationError
from ..lang.dims import Dim, Shape, fmt_shape
from ..lang.ir import Call, Const, IndexRef, Node, Var, names_used, walk
from ..lang.ops import NoAdjoint, spell
from ..loader import loads
from ..model import Definition, Derivation
from .folds import fold_cross_entropy, spelled_out
from .index import _entry_text, _factors, _plain_index, entry_form, index_gradient, index_to_matrix, shifted_gradient
from .result import DerivedClaim, DeriveResult, Step, _with_claims, claim_name
from .rewrite import Rewriter
from .tree import _KEYS, Context, _is, _is_const, backprop, call, const, key, size, to_text


def _is_text(source: str | Path) -> bool:
    return isinstance(source, str) and ("\n" in source or source.lstrip().startswith("["))


def _read(source: str | Path, name: str | None) -> tuple[str, str, Callable[[DerivationError], DerivationError]]:
    """The TOML text, its name in messages, and how to locate an error in it: a note's block
    (``notes.md:LINE``, or a note holding one block) is located at the note's own lines, as check does."""
    if _is_text(source):
        return str(source), name or "<string>", lambda exc: exc
    if notes.split_ref(str(source)) is not None or notes.is_note(source):
        path, block = notes.find_block(str(source), display=name)
        return block.text, f"{path}:{block.line}", lambda exc: notes.relocate(exc, path, block)
    try:
        return Path(source).read_text(encoding="utf-8"), name or str(source), lambda exc: exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DerivationError(f"cannot read the file: {exc}", file=str(source)) from None


def derive(source: str | Path, targets: Iterable[str] | None = None, options: Options | None = None,
           check: bool = True, name: str | None = None) -> DeriveResult:
    """Derive (and, unless ``check=False``, prove) the gradients of a derivation file, a note's block
    (``notes.md:LINE``) or TOML text; ``name`` labels it in messages (default ``<string>`` for text).
    A source that cannot be read (or names no block) raises :class:`DerivationError`."""
    text, name, locate = _read(source, name)
    options = options or Options()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return DeriveResult(name, "", error=str(locate(DerivationError(f"invalid TOML: {exc}", file=name))))
    forward = doc.get("forward") if isinstance(doc.get("forward"), dict) else None
    if not forward:
        return DeriveResult(name, "", error=str(locate(DerivationError("[forward] must define at least one "
                                                                       "variable", file=name))))
    # the user's claims play no part: one placeholder claim, on a variable that has a gradient (not an integer
    # one, J = flip(I, axis=0): the last definition, else any other, else an input)
    inputs: dict[str, Any] = doc["inputs"] if isinstance(doc.get("inputs"), dict) else {}
    candidates = [k.split("[")[0].strip() for k in reversed(list(forward))] + [str(k) for k in inputs]
    d: Derivation | None = None
    first_error: DerivationError | None = None
    for candidate in dict.fromkeys(candidates):
        try:
            d = loads(_with_claims(doc, {f"grad_{candidate}": "0"}), name, options.limits)
            break
        except DerivationError as exc:
            if first_error is None:
                first_error = exc
    if d is None:
        assert first_error is not None  # [forward] names one variable at least
        return DeriveResult(name, "", error=str(locate(first_error)))
    file_claims = doc.get("claims", {}) if isinstance(doc.get("claims"), dict) else {}
    file_claims = {claim_name(k): v for k, v in file_claims.items()}
    result = _derived(d, targets, name, file_claims)
    if check and result.claims:
        _prove(result, doc, name, options)
        if any(c.verdict == "refuted" for c in result.claims):
            _split_ties(result, _derived(d, targets, name, file_claims, split_ties=True), doc, name, options)
    return result


def _derived(d: Derivation, targets: Iterable[str] | None, name: str, file_claims: dict[str, str],
             split_ties: bool = False) -> DeriveResult:
    try:
        with d.shape_rules():
            result = _Deriver(d, split_ties).run(targets)
    finally:
        _KEYS.clear()
    result.path = name
    for c in result.claims:
        c.file_claim = file_claims.get(c.name)
    return result


def _split_ties(result: DeriveResult, split: DeriveResult, doc: dict[str, Any], name: str, options: Options) -> None:
    """A refuted claim that splits a max's gradient differently is written with the even split over the entries
    that reach the max (the max of copies, ``max(concat([x, x]))``, ties by construction), and proved again."""
    other = {c.name: c for c in split.claims}
    changed = [c for c in result.claims if c.verdict == "refuted" and c.name in other and other[c.name].expr != c.expr]
    if not changed:
        return
    kept = {c.name: (c.expr, c.steps, c.helpers, c.verdict, c.message) for c in changed}
    for c in changed:
        c.expr, c.steps, c.helpers = other[c.name].expr, other[c.name].steps, other[c.name].helpers
    _prove(result, doc, name, options)
    for c in changed:  # no better: the first form stays, with its verdict
        if c.verdict != "proved":
            c.expr, c.steps, c.helpers, c.verdict, c.message = kept[c.name]


def _prove(result: DeriveResult, doc: dict[str, Any], name: str, options: Options) -> None:
    claims = {c.toml_key: c.expr for c in result.claims}
    try:
        d = loads(_with_claims(doc, claims, result.helpers), name, options.limits)
        checked = check_derivation(d, options)
    except DerivationError as exc:
        result.error = f"derive wrote a file the loader refuses (a bug of derive): {exc}"
        return
    if checked.status == "error" and not checked.claims:
        result.error = f"checking the derived claims failed: {checked.error}"
        for c in result.claims:  # not derive's bug: the file's check stopped (a bound, a NaN) before any verdict
            c.verdict, c.message = "not checked", result.error
        return
    verdicts = {c.name: c for c in checked.claims}
    for c in result.claims:
        r = verdicts.get(c.name)
        if r is not None:
            c.verdict, c.message = r.verdict, r.message
    too_big = [c for c in result.claims if c.verdict == "error" and "exceeds the limit" in c.message]
    for c in too_big:  # a long definition's gradient: the bound is the file's to raise, not a bug
        result.not_derived[c.target] = (f"the derived expression is past a bound ({c.message}); split the forward "
                                        "definition into smaller steps")
        result.claims.remove(c)


class _Deriver:
    def __init__(self, d: Derivation, split_ties: bool = False):
        self.d = d
        env: dict[str, Shape] = {n: i.shape for n, i in d.inputs.items()}
        for f in d.forward:
            env[f.name] = f.shape
        for n in d.differentiable:
            env[f"grad_{n}"] = env[n]
        self.exprs: dict[str, Node] = {}  # forward name -> its matrix-form expression
        self.cx = Context(env, self.exprs, split_ties)
        self.unsupported: dict[str, str] = {}
        names: dict[tuple, str] = {}
        def nameable(node: Node) -> bool:  # naming W.T after `Wt = W.T` would hide the transpose
            return not (isinstance(node, Var) or (_is(node, "T") and isinstance(node.args[0], Var)))

        for f in d.forward:
            node = f.node if f.index is None else index_to_matrix(f, shapes=env)
            if node is None:
                self.unsupported[f.name] = "index form goes beyond sums of products of plain entries (e.g. x[t + k])"
                continue
            if f.index is not None and Context(env).shape(node) != f.shape:  # every term broadcast
                self.unsupported[f.name] = "index form has no term that reads every free index"
                continue
            self.exprs[f.name] = node
            if f.index is None and nameable(node):
                names.setdefault(key(node), f.name)
        self.rw = Rewriter(self.cx, names)
        self.matrix_names = dict(names)
        for f in d.forward:  # an index-form definition's rewritten einsum names its variable too
            if f.index is not None and f.name in self.exprs:
                matrix = Rewriter(self.cx)(self.exprs[f.name])
                if nameable(matrix):
                    self.matrix_names.setdefault(key(matrix), f.name)
        self.rw.names = self.matrix_names
        self.derived: dict[str, Node] = {}
        self.helpers: dict[str, str] = {}  # [backward] helpers the derived claims read, in order

    def holder(self, ref: IndexRef, range_of: Callable[[str], Dim | None]) -> tuple[str, tuple[str, ...]] | None:
        """A forward variable F with ``F[p, q] = ref`` up to factors of ones (an im2col ``Xcol``):
        ``(F, the indices to read it at)``, or None."""
        ones = {f.name for f in self.d.forward if f.index is None and _is(f.node, "ones")}
        names = sorted({n for sub in ref.subscripts for n, _ in sub.terms})
        for f in self.d.forward:
            if f.index is None or len(f.index.free) > len(names):
                continue
            factors = _factors(f.index.body)
            if factors is None:
                continue
            rest = [x for x in factors if not (_is_const(x, 1) or (isinstance(x, IndexRef) and x.name in ones))]
            if len(rest) != 1 or not isinstance(rest[0], IndexRef) or rest[0].name != ref.name:
                continue
            mine = rest[0]
            for chosen in itertools.permutations(names, len(f.index.free)):
                rename = dict(zip(f.index.free, chosen))
                same = all(
                    tuple(sorted((rename.get(n, "?" + n), c) for n, c in a.terms)) == tuple(sorted(b.terms))
                    and a.const == b.const for a, b in zip(mine.subscripts, ref.subscripts))
                if same and all(f.shape[k] == range_of(i) for k, i in enumerate(chosen)):
                    return f.name, chosen
        return None

    def consumers(self, v: str) -> list[str]:
        out = [f.name for f in self.d.forward if v in names_used(f.root)]
        if self.d.loss.expression is not None and v in names_used(self.d.loss.expression):
            out.append("E")
        return out

    def live(self) -> set[str]:
        """Variables E depends on (the rest have a zero gradient)."""
        live = set(self.d.loss.upstream)
        if self.d.loss.expression is not None:
            live |= names_used(self.d.loss.expression)
        for f in reversed(self.d.forward):
            if f.name in live:
                live |= names_used(f.root)
        return live

    def order(self) -> list[str]:
        """Backprop order: each forward variable from the last, inputs after their first reader."""
        d = self.d
        first_reader: dict[str, str] = {}
        for name, inp in d.inputs.items():
            if inp.constant:
                continue
            readers = self.consumers(name)
            first_reader[name] = readers[0] if readers else ""
        out = [n for n, r in first_reader.items() if r == "E"]
        for f in reversed(d.forward):
            if f.name not in d.loss.upstream and f.name not in d.integer_forward:  # an index has no gradient
                out.append(f.name)
            out.extend(n for n, r in first_reader.items() if r == f.name)
        out.extend(n for n, r in first_reader.items() if r == "")
        return out

    def run(self, targets: Iterable[str] | None) -> DeriveResult:
        d = self.d
        result = DeriveResult(d.path, d.title)
        wanted = None
        if targets is not None:
            named = {t[5:] if t.startswith("grad_") else t: t for t in targets}
            wanted = set(named)
            unknown = wanted - set(d.differentiable)
            if unknown:
                result.error = (f"--for {', '.join(sorted(named[u] for u in unknown))}: "
                                f"{', '.join(sorted(unknown))} is not a non-constant input or forward variable "
                                f"(those are {', '.join(d.differentiable)})")
                return result
            given = wanted & set(d.loss.upstream)
            if given:
                result.error = (f"--for names {', '.join(sorted(given))}: upstream in [loss], so its grad_ is given, "
                                "not derived")
                return result
        live = self.live()
        for v in self.order():
            if wanted is not None and v not in wanted:
                continue
            try:
                claim = self.derive_one(v, live)
            except NoAdjoint as exc:
                result.not_derived[v] = str(exc)
                continue
            except DerivationError as exc:  # an ill-shaped template or rewrite
                result.not_derived[v] = f"derive built an ill-shaped expression, a bug of derive: {exc.message}"
                continue
            except Exception as exc:  # noqa: BLE001 - last resort, as check's: one gradient's bug is no traceback
                result.not_derived[v] = f"internal error of derive ({type(exc).__name__}: {exc}); please report this file"
                continue
            result.claims.append(claim)
        return result

    def derive_one(self, v: str, live: set[str]) -> DerivedClaim:
        d, cx = self.d, self.cx
        shape = cx.shape(Var(0, v))
        steps: list[Step] = []
        parts: list[Node] = []
        for c in self.consumers(v):
            if c != "E" and c not in live:
                continue
            if c != "E" and c in self.unsupported:
                definition = next(f for f in d.forward if f.name == c)
                index = definition.index
                if index is None:  # only an index-form definition is left unsupported
                    raise NoAdjoint(f"{v} feeds {c}, whose {self.unsupported[c]}")
                alt = index_to_matrix(definition, self.holder, protect=v, only=v, shapes=self.cx.env)
                if alt is None or v not in names_used(alt):
                    written = self.index_claim(v, definition, live)
                    if written is not None:
                        return written
                    shifted = [n for n in walk(index.body) if isinstance(n, IndexRef) and n.name == v
                               and any(_plain_index(sub) is None for sub in n.subscripts)]
                    if shifted:
                        written = self.shifted_claim(v, definition, live)
                        if written is not None:
                            return written
                        read = _entry_text(("@", shifted[0]), list(index.free))
                        raise NoAdjoint(f"{v} is read at shifted positions in {c} ({read}): its gradient is a full "
                                        f"correlation that reads grad_{c} past the ends of its axes, which takes a "
                                        "zero-padded [backward] helper; a [claims] table cannot hold one")
                    raise NoAdjoint(f"{v} feeds {c}, whose {self.unsupported[c]}")
                expr = alt  # for v's gradient only: the shifted entries are read from the variable holding them
                held = sorted(names_used(alt) - names_used(index.body))
                note_extra = (f"; the shifted entries are read from {', '.join(held)}, which holds exactly them"
                              if held else f"; only the terms that read {v} are kept")
            else:
                loss = d.loss.expression
                expr = loss if c == "E" and loss is not None else self.exprs[c]  # "E" reads v: it has one
                note_extra = ""
            g: Node = const(1) if c == "E" else Var(0, f"grad_{c}")
            known = self.derived.get(c)
            if isinstance(known, Const) or _is(known, "eye") or _is(known, "ones"):
                g = known  # a constant gradient (E = q + r, E = trace(M)) is written out, not named
            try:
                raw_parts = backprop(cx, expr, g, v)
            except NoAdjoint:
                written = self.unpad_claim(v, expr, c, live)
                if written is None:
                    raise
                return written
            if not raw_parts:  # read only through a comparison: no gradient flows there
                continue
            raw = raw_parts[0]
            for p in raw_parts[1:]:
                raw = call("add", raw, p)
            raw = cx.unbroadcast(raw, shape)
            simple = self.rw(raw)
            if c != "E" and isinstance(expr, Call) and c in self.derived:
                folded = fold_cross_entropy(cx, d, expr, self.derived[c], c)
                if folded is not None:
                    simple = self.rw(folded)
            named = spelled_out(expr, v) if c != "E" else None
            if named is not None:  # gelu spelled out with erf: grad_gq * gelu_prime(q), when shorter
                shorter = self.rw(cx.unbroadcast(backprop(cx, named, g, v)[0], shape))
                if size(shorter) < size(simple):
                    simple = shorter
                    note_extra += f"; {c} is {named.params['fn']}({v}) spelled out, so its derivative is " \
                                  f"{named.params['fn']}_prime({v})"
            parts.append(simple)
            entries = [entry_form(p, f"grad_{v}" if len(raw_parts) == 1 else "") for p in raw_parts]
            entry = " + ".join(e for e in entries if e) if all(entries) else ""
            jac = f"∂{c}/∂{v}, {fmt_shape(cx.shape(expr))} × {fmt_shape(shape)}"
            steps.append(Step(c, d.loss.text if c == "E" else self._def_text(c), _root_op(expr),
                              local_note(cx, expr, v) + note_extra, to_text(raw), to_text(simple), entry, jac))
        if not parts:
            from ..lang.ops import _shape_names

            node: Node = call("zeros", shape=_shape_names(shape))
            steps.append(Step("-", "", "", f"nothing computed after {v} reaches the loss: the gradient is zero",
                              "", to_text(node)))
        else:
            node = parts[0]
            for p in parts[1:]:
                node = call("add", node, p)
            node = self.rw(cx.full(node, shape))
        self.derived[v] = node
        return DerivedClaim(f"grad_{v}", v, to_text(node), steps=steps, shape=fmt_shape(shape))

    def _only_reader(self, v: str, c: str, live: set[str]) -> bool:
        return [r for r in self.consumers(v) if r == "E" or r in live] == [c]

    def index_claim(self, v: str, definition: Definition, live: set[str]) -> DerivedClaim | None:
        """``v``'s gradient in index form, when v is read (at plain indices) by an index-form
        definition that reads some other entry at shifted positions with no variable holding them
        (a convolution's kernel): ``grad_w[k] = Σ_t grad_y[t] · x[t + k]``. Every read of the body
        is one the forward makes, so it stays inside its axis. None when v has other readers."""
        if not self._only_reader(v, definition.name, live):
            return None
        written = index_gradient(definition, v, self.cx.shape(Var(0, v)))
        if written is None:
            return None
        key_text, body = written
        step = Step(definition.name, self._def_text(definition.name), "index form",
                    f"{v} is read at plain indices: each entry of grad_{v} sums grad_{definition.name} times the "
                    f"other factors over the indices {v} does not carry (index form: the other factor is read at "
                    "shifted positions, which no matrix product writes)", "", body, "",
                    f"∂{definition.name}/∂{v}, {fmt_shape(definition.shape)} × {fmt_shape(self.cx.shape(Var(0, v)))}")
        return DerivedClaim(f"grad_{v}", v, body, steps=[step], shape=fmt_shape(self.cx.shape(Var(0, v))),
                            key=key_text)

    def shifted_claim(self, v: str, definition: Definition, live: set[str]) -> DerivedClaim | None:
        """``v``'s gradient in index form when ``definition`` reads it at shifted positions (a
        convolution's input): a full correlation of the zero-padded ``grad_`` with the flipped
        kernel, the padding a [backward] helper (:func:`shifted_gradient`)."""
        if not self._only_reader(v, definition.name, live):
            return None
        taken = set(self.cx.env) | set(self.d.functions) | set(self.helpers)
        helper_name = f"gpad_{definition.name}"
        while helper_name in taken:
            helper_name += "_"
        shape = self.cx.shape(Var(0, v))
        written = shifted_gradient(definition, v, shape, helper_name)
        if written is None:
            return None
        helpers = []
        if written.helper is not None:
            self.helpers[written.helper[0]] = written.helper[1]
            helpers.append(written.helper)
        c = definition.name
        shown = f"{written.helper[0]} = {written.helper[1]}" if written.helper else ""
        step = Step(c, self._def_text(c), "index form",
                    f"{v} is read at shifted positions: each entry of {v} feeds {c} at every position the kernel "
                    f"reaches it from, so grad_{v} is a full correlation of grad_{c} with the flipped kernel, "
                    f"grad_{c} zero-padded so that the reads past the ends of its axes are zeros", "", written.body, "",
                    f"∂{c}/∂{v}, {fmt_shape(definition.shape)} × {fmt_shape(shape)}", shown)
        return DerivedClaim(f"grad_{v}", v, written.body, steps=[step], shape=fmt_shape(shape), key=written.key,
                            helpers=helpers)

    def unpad_claim(self, v: str, expr: Node, c: str, live: set[str]) -> DerivedClaim | None:
        """``xp = pad(x, widths)`` where the block holding x cannot be sliced for every size (x's own
        axis, like ``Ho + K - 3``, is not ≥ 1 at all ones): ``grad_x[i, j] = grad_xp[i + a, j + b]``."""
        if not (_is(expr, "pad") and isinstance(expr.args[0], Var) and expr.args[0].name == v
                and self._only_reader(v, c, live)):
            return None
        shape = self.cx.shape(Var(0, v))
        taken = {n for n in self.cx.env} | {str(x) for d in shape for x in d.names}
        indices = [n for n in ("i", "j", "k", "l", "m", "n", "p", "q", "r", "s", "t", "u") if n not in taken]
        if len(indices) < len(shape):
            return None
        indices = indices[:len(shape)]
        reads = []
        for i, (lo, _) in zip(indices, expr.params["widths"]):
            reads.append(i if not lo.terms and lo.const == 0 else f"{i} + {lo}")
        body = f"grad_{c}[{', '.join(reads)}]"
        step = Step(c, self._def_text(c), "pad", f"{v} sits inside the zeros: its gradient is the block of grad_{c} "
                    "that holds it, read in index form (the slice would be empty for some sizes)", "", body, "",
                    f"∂{c}/∂{v}, {fmt_shape(self.cx.shape(expr))} × {fmt_shape(shape)}")
        return DerivedClaim(f"grad_{v}", v, body, steps=[step], shape=fmt_shape(shape),
                            key=f"grad_{v}[{', '.join(indices)}]")

    def _def_text(self, name: str) -> str:
        for f in self.d.forward:
            if f.name == name:
                key_text = f.key.split(".", 1)[1] if "." in f.key else name
                return f"{key_text} = {f.text}"
        return name


def _root_op(node: Node) -> str:
    """The op at the root, by the name a file calls it (``tanh``, ``tanh_prime``, ``sum``, ``add``)."""
    if isinstance(node, Call):
        return spell(node.op, ["x"] * len(node.args), node.params).partition("(")[0]
    return "identity"


def local_note(cx: Context, expr: Node, v: str) -> str:
    """The structure of the local Jacobian ∂(expr)/∂v, in the words ``explain`` uses."""
    from ..explain import jacobian_note

    notes: list[str] = []
    for node in _path_ops(expr, v):
        shapes = [cx.shape(a) for a in node.args]
        position = next(k for k, a in enumerate(node.args) if v in names_used(a))
        note = jacobian_note(node.op, node.params, position, shapes)
        if note and note not in notes:
            notes.append(note)
    plain = [n for n in notes if not n.startswith("the identity")]
    return "; ".join(plain or notes)  # "+ b" says nothing beside the op that acts


def _path_ops(expr: Node, v: str) -> list[Call]:
    out: list[Call] = []
    stack = [expr]
    while stack:
        n = stack.pop()
        if isinstance(n, Call) and v in names_used(n):
            out.append(n)
            stack.extend(a for a in n.args if v in names_used(a))
    return out


