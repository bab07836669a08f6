"""TOML → :class:`Derivation`: validation, parsing and shape inference, with located errors.

A typo must never be silently ignored: unknown tables and keys are errors, and
every error names the file, the key and (for expressions) the column.
"""

from __future__ import annotations

import difflib
import keyword
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from .errors import DerivationError, LimitError, ShapeError
from .lang.dims import Dim, Shape, fmt_shape, parse_dim
from .lang.parse import BUILTIN_FUNCTIONS, Scope, parse_expression, parse_index_definition, parse_index_key
from .lang.shapes import infer, infer_index, integer_kind
from .limits import DEFAULT_LIMITS, Limits, exceeded
from .model import (
    DOMAINS,
    EXPECTATIONS,
    SETTING_RANGES,
    CheckSettings,
    Claim,
    Definition,
    Derivation,
    Input,
    Loss,
    setting_range_text,
)

TABLES = {
    "derivation": True, "dims": True, "inputs": True, "functions": False, "forward": True,
    "loss": True, "backward": False, "claims": True, "expect": False, "check": False,
}
CHECK_KEYS = {"seed": int, "trials": int, "shapes": int, "max_dim": int, "rtol": float, "atol": float}


def load(path: str | Path, limits: Limits = DEFAULT_LIMITS, name: str | None = None) -> Derivation:
    """Read and validate one derivation file; raise :class:`DerivationError` on the first problem.

    ``notes.md:LINE`` (or a note holding one block) loads the ``toml backpropcheck`` block there.
    ``name`` is how reports name the file (default: ``path`` as given).
    """
    from . import notes

    if notes.split_ref(str(path)) is not None or notes.is_note(path):
        return notes.load_ref(str(path), limits, name)
    path = Path(path)
    name = str(path) if name is None else name
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # /dev/zero or a FIFO behind a symlink would never end
            raise DerivationError("not a regular file (a device, FIFO or socket?)", file=name)
        if info.st_size > limits.max_file_bytes:
            raise LimitError(exceeded("the file size in bytes", info.st_size, "max_file_bytes", limits), file=name)
        with path.open("rb") as handle:  # a bounded read, even if the file grows meanwhile
            data = handle.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise DerivationError(f"cannot read the file: {exc.strerror or exc}", file=name) from None
    return loads(data, name, limits)


def not_utf8(data: bytes, exc: UnicodeDecodeError, name: str) -> DerivationError:
    """The error for bytes that are not UTF-8, at the line and column of the first bad byte."""
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return DerivationError(f"the file is not UTF-8: byte 0x{data[exc.start]:02x} at line {line}, column {column}",
                           file=name)


def loads(data: bytes | str, name: str = "<string>", limits: Limits = DEFAULT_LIMITS) -> Derivation:
    if isinstance(data, bytes):
        if len(data) > limits.max_file_bytes:
            raise LimitError(exceeded("the file size in bytes", len(data), "max_file_bytes", limits), file=name)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise not_utf8(data, exc, name) from None
    else:
        text = data
    text = text.removeprefix("\ufeff")  # a byte-order mark (Notepad) is not part of the TOML
    if not text.strip():
        raise DerivationError("the file is empty: a derivation needs at least the tables [derivation], [dims], "
                              "[inputs], [forward], [loss] and [claims] (backpropcheck new PATH writes a template)",
                              file=name)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DerivationError(f"invalid TOML: {exc}", file=name) from None
    except RecursionError:
        raise DerivationError("invalid TOML: nested too deeply", file=name) from None
    try:
        return _Builder(_nfkc_names(doc), name, limits).build()
    except DerivationError as exc:
        raise exc.located(file=name) from None
    except RecursionError:  # only reachable when --max-depth is raised past what Python's stack allows
        raise LimitError(exceeded("the expression nesting", "too deep for Python's stack", "max_depth", limits),
                         file=name) from None


def _nfkc_names(doc: dict[str, Any]) -> dict[str, Any]:
    """Names NFKC-normalised, as Python's parser does to the identifiers of every expression: a function
    declared as ``"ｅｘｐ"`` is the ``ｅｘｐ`` (that is, ``exp``) that an expression calls. That is the keys
    of every table and of [inputs]' inline tables, the names in [loss] upstream and the dims of a
    shape. Expressions, titles and descriptions keep their text (and their columns)."""
    import unicodedata

    def norm(value: Any) -> Any:
        return unicodedata.normalize("NFKC", value) if isinstance(value, str) else value

    def keys(table: Any, where: str) -> Any:
        if not isinstance(table, dict):
            return table
        out: dict[str, Any] = {}
        for key, value in table.items():
            new = norm(key)
            if new in out:
                raise _fail(f"{where}{new}", f"{key!r} is {new!r} after NFKC normalisation (as Python reads "
                                             f"names), which is already defined")
            out[new] = value
        return out

    doc = keys(doc, "")
    for table, value in list(doc.items()):
        doc[table] = keys(value, f"{table}.")
    if isinstance(doc.get("inputs"), dict):
        for name, spec in doc["inputs"].items():
            if isinstance(spec, dict):
                spec = keys(spec, f"inputs.{name}.")
                if isinstance(spec.get("shape"), list):
                    spec["shape"] = [norm(d) for d in spec["shape"]]
            elif isinstance(spec, list):
                spec = [norm(d) for d in spec]
            doc["inputs"][name] = spec
    loss = doc.get("loss")
    if isinstance(loss, dict) and "upstream" in loss:
        up = loss["upstream"]
        loss["upstream"] = [norm(u) for u in up] if isinstance(up, list) else norm(up)
    return doc


def _fail(key: str, message: str, hint: str | None = None) -> DerivationError:
    return DerivationError(message, key=key, hint=hint)


def _did_you_mean(word: str, options) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean {close[0]!r}?" if close else None


class _Builder:
    def __init__(self, doc: dict[str, Any], name: str, limits: Limits):
        self.doc = doc
        self.d = Derivation(path=name, title="")
        self.limits = limits
        self.env: dict[str, Shape] = {}

    def build(self) -> Derivation:
        for table in self.doc:
            if table not in TABLES:
                raise _fail(table, f"unknown table [{table}]", _did_you_mean(table, TABLES))
        for table, required in TABLES.items():
            if required and table not in self.doc:
                raise _fail(table, f"the table [{table}] is missing")
            if table in self.doc and not isinstance(self.doc[table], dict):
                raise _fail(table, f"[{table}] must be a table")
        self._meta()
        self._dims()
        self._functions()
        self._inputs()
        with self.d.shape_rules():
            self._forward()
            self._loss()
            self._backward()
            self._claims()
        self._expect()
        self._check()
        return self.d

    # -- tables --------------------------------------------------------------

    def _meta(self) -> None:
        meta = self.doc["derivation"]
        for key, value in meta.items():
            where = f"derivation.{key}"
            if key in ("title", "summary"):
                if not isinstance(value, str):
                    raise _fail(where, f"{key} must be a string")
            elif key == "references":
                if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
                    raise _fail(where, "references must be a list of strings")
            else:
                raise _fail(where, f"unknown key {key!r}", _did_you_mean(key, ["title", "summary", "references"]))
        if not meta.get("title"):
            raise _fail("derivation.title", "a title is required")
        self.d.title = meta["title"]
        self.d.summary = meta.get("summary", "")
        self.d.references = list(meta.get("references", []))

    def _name(self, where: str, name: str) -> None:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise _fail(where, f"{name!r} is not a valid name (letters, digits and _, not a Python keyword)")
        if name.startswith("grad_"):
            raise _fail(where, f"{name!r}: names starting with grad_ are reserved for gradients")
        if name in ("None", "True", "False"):
            raise _fail(where, f"{name!r} is a Python constant, not a name")
        # a name like a built-in function (mean, max, cos) is fine: a call is the function, a bare name this
        taken = set(self.d.dims) | set(self.d.inputs) | self.d.functions
        taken |= {x.name for x in self.d.forward + self.d.backward}
        if name in taken:
            raise _fail(where, f"{name!r} is defined twice")
        if len(name) > 64:
            raise _fail(where, "names are limited to 64 characters")

    def _dims(self) -> None:
        dims = self.doc["dims"]
        if not dims:
            raise _fail("dims", "[dims] must declare at least one dim")
        if len(dims) > self.limits.max_dims:
            raise LimitError(exceeded("the number of dims", len(dims), "max_dims", self.limits), key="dims")
        for name, desc in dims.items():
            self._name(f"dims.{name}", name)
            if name in BUILTIN_FUNCTIONS:  # variables may be named like functions (SPEC §6.1), dims not
                raise _fail(f"dims.{name}", f"{name!r} is the name of a built-in function; name the dim otherwise")
            if not isinstance(desc, str):
                raise _fail(f"dims.{name}", "a dim maps to a short description (a string)")
            self.d.dims[name] = desc

    def _functions(self) -> None:
        functions = self.doc.get("functions", {})
        if len(functions) > self.limits.max_functions:
            raise LimitError(exceeded("the number of functions", len(functions), "max_functions", self.limits),
                             key="functions")
        for name, kind in functions.items():
            self._name(f"functions.{name}", name)
            if kind != "elementwise":
                raise _fail(f"functions.{name}", f'a function must be declared "elementwise", not {kind!r}')
            if name.endswith("_prime"):
                raise _fail(f"functions.{name}", "declare f; f_prime is its derivative and comes with it")
            if name in BUILTIN_FUNCTIONS:  # a call could mean either function
                raise _fail(f"functions.{name}", f"{name!r} is the name of a built-in function; name yours otherwise")
            self.d.functions.add(name)

    def _shape(self, where: str, value: Any) -> Shape:
        if not isinstance(value, list):
            raise _fail(where, "a shape is a list of dims, like [\"m\", \"n\"] ([] for a scalar)")
        if len(value) > self.limits.max_rank:
            raise LimitError(exceeded("the rank", len(value), "max_rank", self.limits), key=where)
        shape = []
        for entry in value:
            try:
                shape.append(parse_dim(entry, self.d.dims))
            except ValueError as exc:
                raise _fail(where, str(exc)) from None
            if abs(shape[-1].const) > self.limits.max_dim:
                raise LimitError(exceeded(f"the literal part of the dim {entry!r}", shape[-1].const, "max_dim",
                                          self.limits), key=where)
        return tuple(shape)

    def _inputs(self) -> None:
        inputs = self.doc["inputs"]
        if len(inputs) > self.limits.max_inputs:
            raise LimitError(exceeded("the number of inputs", len(inputs), "max_inputs", self.limits), key="inputs")
        for name, spec in inputs.items():
            where = f"inputs.{name}"
            self._name(where, name)
            if isinstance(spec, list):
                inp = Input(name, self._shape(where, spec))
            elif isinstance(spec, dict):
                keys = ["shape", "domain", "axis", "constant", "range"]
                for key in spec:
                    if key not in keys:
                        raise _fail(f"{where}.{key}", f"unknown key {key!r}", _did_you_mean(key, keys))
                if "shape" not in spec:
                    raise _fail(where, "an input table needs a shape")
                domain = spec.get("domain", "real")
                if domain not in DOMAINS:
                    raise _fail(f"{where}.domain", f"unknown domain {domain!r} (one of {', '.join(DOMAINS)})",
                                _did_you_mean(str(domain), DOMAINS))
                constant = spec.get("constant", False)
                if not isinstance(constant, bool):
                    raise _fail(f"{where}.constant", "constant must be true or false")
                inp = Input(name, self._shape(f"{where}.shape", spec["shape"]), domain, 0, constant)
                axis = spec.get("axis", 0)
                if type(axis) is not int or not (-len(inp.shape) <= axis < max(len(inp.shape), 1)):
                    raise _fail(f"{where}.axis", f"axis must be an integer axis of the shape {fmt_shape(inp.shape)}")
                inp.axis = axis % len(inp.shape) if inp.shape else 0
                if domain in ("simplex", "onehot") and not inp.shape:
                    raise _fail(where, f"a {domain} input needs at least one axis")
                if domain == "onehot" and not constant:
                    raise _fail(where, "a onehot input is a label: mark it constant = true")
                if domain == "binary" and not constant:  # a 0/1 draw has no derivative to take
                    raise _fail(where, "a binary input is a mask: mark it constant = true")
                if ("range" in spec) != (domain == "index"):
                    raise _fail(where, 'an integer input is { shape = [...], domain = "index", range = "V" }: '
                                'range goes with domain = "index" and only with it')
                if domain == "index":
                    (inp.range,) = self._shape(f"{where}.range", [spec["range"]])
                    inp.constant = True  # integers have no gradient
            else:
                raise _fail(where, "an input is a shape list or a table { shape = [...], domain = ... }")
            self.d.inputs[name] = inp
            self.env[name] = inp.shape

    def _integer_ranges(self) -> dict[str, Dim]:
        return {n: i.range for n, i in self.d.inputs.items() if i.domain == "index" and i.range is not None}

    def _scope(self, extra: set[str], allow_prime: bool) -> Scope:
        return Scope(
            tensors=set(self.d.inputs) | {f.name for f in self.d.forward} | extra,
            dims=set(self.d.dims),
            functions=set(self.d.functions),
            allow_prime=allow_prime,
            hint_names=self._all_names(),
        )

    def _all_names(self) -> set[str]:
        names = set(self.doc.get("forward", {})) | set(self.doc.get("backward", {}))
        names = {_base_name(n) if "[" in n else n for n in names}
        return names | {f"grad_{n}" for n in names | set(self.doc.get("inputs", {}))}

    def _expr(self, where: str, text: Any, scope: Scope, later: set[str]):
        if not isinstance(text, str):
            raise _fail(where, "an expression must be a string")
        try:
            return parse_expression(text, scope, self.limits)
        except DerivationError as exc:
            self._explain_later(exc, later)
            raise exc.located(key=where) from None

    def _explain_later(self, exc: DerivationError, later: set[str]) -> None:
        """An unknown name said better: one defined further down, or the ``grad_`` of a constant."""
        for name in later:
            if exc.message == f"unknown name {name!r}":
                exc.message = f"{name!r} is defined later; definitions are read in order"
                exc.hint = None
        for name, inp in self.d.inputs.items():
            if inp.constant and exc.message == f"unknown name 'grad_{name}'":
                exc.message = f"'grad_{name}' does not exist: {name} is constant (constant = true), it has no gradient"
                exc.hint = None

    def _forward(self) -> None:
        forward = self.doc["forward"]
        if not forward:
            raise _fail("forward", "[forward] must define at least one variable")
        self._definitions("forward", forward, self.d.forward, grads=False)

    def _definitions(self, table: str, items: dict[str, Any], out: list[Definition], grads: bool) -> None:
        if len(items) + len(self.d.forward) + len(self.d.backward) > self.limits.max_definitions:
            raise LimitError(
                exceeded("the number of definitions", len(items), "max_definitions", self.limits), key=table
            )
        keys = list(items)
        grad_names = {f"grad_{n}" for n in self.d.differentiable} if grads else set()
        for k, key in enumerate(keys):
            where = f"{table}.{key}"
            text = items[key]
            if not isinstance(text, str):
                raise _fail(where, "a definition is a string expression")
            try:
                indexed = parse_index_key(key)
            except DerivationError as exc:
                raise exc.located(key=where) from None
            name = indexed[0] if indexed else key
            self._name(where, name)
            later = {_base_name(x) for x in keys[k + 1:]}
            extra = grad_names | {b.name for b in self.d.backward}
            scope = self._scope(extra, allow_prime=grads)
            try:
                if indexed:
                    index = parse_index_definition(text, indexed[1], scope, self.limits)
                    shape = infer_index(index, self.env, self.d.dims, integer_ranges=self._integer_ranges())
                    definition = Definition(name, text, None, shape, index, key=where)
                else:
                    node = self._expr(where, text, scope, later)
                    definition = Definition(name, text, node, infer(node, self.env), key=where)
                if integer_kind(definition.root, self.d.integers):
                    if table != "forward":
                        raise _fail(where, "a [backward] helper cannot be an integer array; use the input itself")
                    self.d.integer_forward.append(name)
            except DerivationError as exc:
                self._explain_later(exc, later)
                if not grads:
                    _forward_hint(exc)
                raise exc.located(key=where) from None
            out.append(definition)
            self.env[name] = definition.shape

    def _loss(self) -> None:
        loss = self.doc["loss"]
        for key in loss:
            if key not in ("E", "upstream"):
                raise _fail(f"loss.{key}", f"unknown key {key!r}: [loss] takes E or upstream",
                            _did_you_mean(key, ["E", "upstream"]))
        if ("E" in loss) == ("upstream" in loss):
            raise _fail("loss", "[loss] takes exactly one of E = \"...\" or upstream = \"name\"")
        if "E" in loss:
            node = self._expr("loss.E", loss["E"], self._scope(set(), allow_prime=False), set())
            try:
                shape = infer(node, self.env)
            except DerivationError as exc:
                _forward_hint(exc)
                raise exc.located(key="loss.E") from None
            if shape != ():
                raise _fail("loss.E", f"the loss must be a scalar, but it has shape {fmt_shape(shape)}",
                            "sum it: E = \"sum(...)\"")
            try:
                integer_kind(node, self.d.integers)
            except DerivationError as exc:
                raise exc.located(key="loss.E") from None
            self.d.loss = Loss(expression=node, text=loss["E"])
            return
        names = loss["upstream"]
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _fail("loss.upstream", "upstream is a forward variable's name or a list of them")
        forward = [f.name for f in self.d.forward]
        for n in names:
            if n not in forward:
                raise _fail("loss.upstream", f"{n!r} is not a forward variable", _did_you_mean(n, forward))
        if len(set(names)) != len(names):
            raise _fail("loss.upstream", "an upstream variable is named twice")
        self.d.loss = Loss(upstream=tuple(names))

    def _backward(self) -> None:
        for name in self.d.differentiable:
            self.env[f"grad_{name}"] = self.env[name]
        self._definitions("backward", self.doc.get("backward", {}), self.d.backward, grads=True)

    def _claims(self) -> None:
        claims = self.doc["claims"]
        if not claims:
            raise _fail("claims", "[claims] must make at least one claim")
        if len(claims) > self.limits.max_claims:
            raise LimitError(exceeded("the number of claims", len(claims), "max_claims", self.limits), key="claims")
        differentiable = self.d.differentiable
        grad_names = {f"grad_{n}" for n in differentiable}
        scope = self._scope(grad_names | {b.name for b in self.d.backward}, allow_prime=True)
        helpers = {b.name: b for b in self.d.backward}
        for key, text in claims.items():
            where = f"claims.{key}"
            try:
                indexed = parse_index_key(key)  # "grad_x[t]" = "...": a claim in index form
            except DerivationError as exc:
                raise exc.located(key=where) from None
            name = indexed[0] if indexed else key
            if not name.startswith("grad_"):
                raise _fail(where, f"a claim is named grad_X for an input or forward variable X, not {name!r}")
            target = name[5:]
            if target in self.d.inputs and self.d.inputs[target].constant:
                raise _fail(where, f"{target!r} is a constant: it has no gradient to claim")
            if target not in differentiable:
                raise _fail(where, f"{target!r} is not an input or a forward variable",
                            _did_you_mean(target, differentiable))
            if not isinstance(text, str):
                raise _fail(where, "a claim is a string expression")
            if any(c.name == name for c in self.d.claims):
                raise _fail(where, f"{name} is claimed twice")
            claim = Claim(name, target, text, None)
            self.d.claims.append(claim)
            try:
                if indexed:
                    claim.index = parse_index_definition(text, indexed[1], scope, self.limits)
                    claim.node = claim.index.body
                else:
                    claim.node = parse_expression(text, scope, self.limits)
                claim.uses = frozenset(_closure(claim.node, helpers))
                if name in claim.uses:
                    raise DerivationError(f"the claim uses {name} itself, so it would hold trivially")
                if claim.index is not None:
                    shape = infer_index(claim.index, self.env, self.d.dims, key_shape=self.env[target],
                                        integer_ranges=self._integer_ranges())
                else:
                    shape = infer(claim.node, self.env)
                if integer_kind(claim.node, self.d.integers):
                    raise ShapeError("a claim cannot be an integer array")
                expected = self.env[target]
                if shape != expected:
                    raise ShapeError(claim_shape_message(target, shape, expected, self.d), column=1)
            except DerivationError as exc:
                self._explain_later(exc, set())
                claim.error = exc.located(file=self.d.path, key=where)

    def _expect(self) -> None:
        claims = {c.name: c for c in self.d.claims}
        for name, value in self.doc.get("expect", {}).items():
            where = f"expect.{name}"
            if name not in claims:
                raise _fail(where, f"{name!r} is not a claim", _did_you_mean(name, claims))
            if value not in EXPECTATIONS:
                raise _fail(where, f"expect one of {', '.join(EXPECTATIONS)}, not {value!r}")
            claims[name].expected = value

    def _check(self) -> None:
        values: dict[str, Any] = {}
        for key, value in self.doc.get("check", {}).items():
            where = f"check.{key}"
            if key not in CHECK_KEYS:
                raise _fail(where, f"unknown key {key!r}", _did_you_mean(key, CHECK_KEYS))
            kind = CHECK_KEYS[key]
            low, high = SETTING_RANGES[key]
            if kind is int and type(value) is not int:
                raise _fail(where, f"{key} must be an integer {setting_range_text(key)}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
                raise _fail(where, f"{key} must be a number {setting_range_text(key)}")
            if value < low or (high is not None and value > high):
                raise _fail(where, f"{key} must be {setting_range_text(key)}, not {value!r}")
            values[key] = value
        self.d.check = CheckSettings(**values)


_BACKWARD_HINT = re.compile(r"with (?P<name>\w+) of shape (?P<shape>.+?) the gradient flows back through `(?P<via>[^`]+)`: "
                            r"try `(?P<fixed>[^`]+)`")


def _forward_hint(exc: DerivationError) -> None:
    """A forward definition computes values, it sends no gradient back: say which orientation would fit."""
    match = _BACKWARD_HINT.fullmatch(exc.hint or "")
    if match:
        exc.hint = (f"`{match['fixed']}` would fit: which orientation of {match['name']} (shape {match['shape']}) "
                    f"does the forward pass use?")


def _base_name(key: str) -> str:
    """``grad_x[t]`` → ``grad_x``; a key that is not a valid index key stays as it is."""
    try:
        parsed = parse_index_key(key)
    except DerivationError:
        return key
    return parsed[0] if parsed is not None else key


def _closure(node, helpers: dict[str, Definition]) -> set[str]:
    """Every name an expression reads, following [backward] helpers."""
    from .lang.ir import names_used

    seen: set[str] = set()
    todo = list(names_used(node))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in helpers:
            todo.extend(names_used(helpers[name].root))
    return seen


def claim_shape_message(target: str, got: Shape, want: Shape, d: Derivation) -> str:
    """Why a claim's shape cannot be the gradient's, with the likely slip named."""
    base = f"the claim is {fmt_shape(got)}, {target} is {fmt_shape(want)}"
    if len(got) == len(want) == 2 and tuple(reversed(got)) == want:
        return base + ": a transposed layout? grad_X always has X's shape"
    extra = [dim for dim in got if dim not in want]
    if len(got) == len(want) + 1 and all(dim in got for dim in want) and len(extra) == 1:
        return base + f": a missing sum over {extra[0]}?"
    if not got and want:
        return base + ": a scalar where the gradient is an array (a dot product instead of an element-wise one?)"
    return base


__all__ = ["load", "loads", "Dim"]
