"""Expression text → IR, by ``ast.parse(mode="eval")`` and a whitelist.

Nothing from a file is ever evaluated: each AST node is either translated to an
IR node or rejected with the column where it starts.
"""

from __future__ import annotations

import ast
import difflib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DerivationError, LimitError
from ..limits import DEFAULT_LIMITS, Limits, exceeded
from .dims import Dim, dim_from_ast
from .ir import Call, Const, DimSize, IndexDef, IndexRef, IndexSum, Node, Subscript, Var
from .ops import ELEMENTWISE, OPS, Op, Param

BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.MatMult: "matmul"}
COMPARE = {ast.Gt: "gt", ast.GtE: "ge", ast.Lt: "lt", ast.LtE: "le"}
# what to write instead of the PyTorch/NumPy spellings people transcribe
INSTEAD = {
    "view": "reshape(X, (B, T, C))", "concatenate": "concat([A, B], axis=k)", "cat": "concat([A, B], axis=k)",
    "permute": "transpose(X, (0, 2, 1, 3))", "index_add": "scatter_add(S, I, V)", "amax": "max(X, axis=k)",
    "amin": "min(X, axis=k)", "gather": "take_along_axis(A, I, axis=k)", "embedding": "C[I]",
    "range": "take_along_axis(L, y[:, None], axis=1) to pick L[i, y[i]] for every row i",
    "clamp": "clip(X, lo, hi)",
}
# the functions a file may call: the op table's entries with a signature, and the element-wise ones
BUILTIN_FUNCTIONS = (
    {name for name, op in OPS.items() if op.signature is not None}
    | set(ELEMENTWISE) | {f"{n}_prime" for n in ELEMENTWISE}
)


# Python's operator names, in the file's own spelling
_OPERATOR_WORDS = {ast.BitAnd: "`&`", ast.BitOr: "`|`", ast.LShift: "`<<`", ast.RShift: "`>>`",
                   ast.FloorDiv: "`//` (write / for a division)", ast.Mod: "`%`", ast.MatMult: "`@`",
                   ast.Invert: "`~`", ast.Not: "`not`"}


@dataclass
class Scope:
    """What names mean in one expression."""

    tensors: set[str]
    dims: set[str]
    functions: set[str] = field(default_factory=set)  # generic element-wise functions
    allow_prime: bool = True
    hint_names: set[str] = field(default_factory=set)  # names to suggest in "did you mean"


@dataclass
class _IndexState:
    free: tuple[str, ...]
    bound: dict[str, int] = field(default_factory=dict)  # index -> its axis, while inside its sum
    bound_dims: dict[int, str] = field(default_factory=dict)  # axis -> dim of every sum
    next_axis: int = 0

    def axis(self, name: str) -> int:
        return self.bound[name] if name in self.bound else self.free.index(name)


class _Parser:
    def __init__(self, text: str, scope: Scope, limits: Limits, index: _IndexState | None):
        self.text = text
        self.scope = scope
        self.limits = limits
        self.index = index

    def error(self, node: ast.AST | None, message: str, hint: str | None = None) -> DerivationError:
        col = getattr(node, "col_offset", None)
        return DerivationError(message, column=None if col is None else col + 1, hint=hint)

    # -- entry points -----------------------------------------------------

    def expr(self, node: ast.AST) -> Node:
        method = _DISPATCH.get(type(node))  # a fixed table: no attribute is looked up by a computed name
        if method is None:
            raise self.error(node, f"{_describe(node)} is not allowed in an expression")
        result = method(self, node)
        if not result.src:
            result.src = ast.get_source_segment(self.text, node) or ""
        return result

    # -- leaves -------------------------------------------------------------

    def _Constant(self, node: ast.Constant) -> Node:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(node, f"the literal {value!r} is not a number")
        if abs(value) > self.limits.max_literal:
            raise LimitError(
                exceeded("the numeric literal", value, "max_literal", self.limits), column=node.col_offset + 1
            )
        text = ast.get_source_segment(self.text, node) or repr(value)
        return Const(node.col_offset + 1, float(value), text)

    def _Name(self, node: ast.Name) -> Node:
        name = node.id
        col = node.col_offset + 1
        if self.index is not None and (name in self.index.free or name in self.index.bound):
            raise self.error(node, f"the index {name!r} can only be used inside a subscript, like x[{name}]")
        if name in self.scope.tensors:
            return Var(col, name)
        if name in self.scope.dims:
            return DimSize(col, name)
        if name in BUILTIN_FUNCTIONS or name in self.scope.functions:
            raise self.error(node, f"{name!r} is a function; call it: {name}(...)")
        known = sorted((self.scope.tensors | self.scope.dims | self.scope.hint_names) - {name})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        raise self.error(node, f"unknown name {name!r}", hint)

    # -- operators ----------------------------------------------------------

    def _BinOp(self, node: ast.BinOp) -> Node:
        col = node.col_offset + 1
        if isinstance(node.op, ast.Pow):
            exponent, text = self._exponent(node.right)
            return Call(col, "pow", (self.expr(node.left),), {"exponent": exponent, "text": text})
        op = BINOPS.get(type(node.op))
        if op is None:
            if isinstance(node.op, ast.BitXor):
                first = node.right
                while isinstance(first, ast.BinOp):  # W^T @ g parses as W ^ (T @ g)
                    first = first.left
                if isinstance(first, ast.Name) and first.id == "T":
                    left = ast.get_source_segment(self.text, node.left) or "W"
                    raise self.error(node, f"`^T` is not a transpose here: write {left}.T for a transpose")
                raise self.error(node, "`^` is not a power here: write x ** 2 for a power, or W.T for a transpose")
            raise self.error(node, f"the operator {_OPERATOR_WORDS.get(type(node.op), type(node.op).__name__)} "
                                   "is not allowed")
        return Call(col, op, (self.expr(node.left), self.expr(node.right)))

    def _exponent(self, node: ast.AST) -> tuple[float, str]:
        sign = 1
        inner = node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            inner = node.operand
        literal = _numeric(inner)
        if literal is None:
            raise self.error(node, "an exponent must be a numeric literal, like x ** 2 or x ** -1.5")
        value = sign * float(literal)
        if abs(value) > self.limits.max_exponent:
            raise LimitError(
                exceeded("the exponent", value, "max_exponent", self.limits), column=_column(node)
            )
        text = ast.get_source_segment(self.text, inner) or repr(literal)
        return value, ("-" if sign < 0 else "") + text

    def _UnaryOp(self, node: ast.UnaryOp) -> Node:
        if isinstance(node.op, ast.UAdd):
            return self.expr(node.operand)
        if isinstance(node.op, ast.USub):
            inner = self.expr(node.operand)
            if isinstance(inner, Const):
                return Const(node.col_offset + 1, -inner.value, "-" + inner.text)
            return Call(node.col_offset + 1, "neg", (inner,))
        raise self.error(node, f"the operator {_OPERATOR_WORDS.get(type(node.op), type(node.op).__name__)} "
                               "is not allowed")

    def _Compare(self, node: ast.Compare) -> Node:
        if len(node.ops) != 1:
            raise self.error(node, "chained comparisons are not allowed; compare two things at a time")
        op = COMPARE.get(type(node.ops[0]))
        if op is None:
            raise self.error(node, "only >, >=, < and <= are allowed as comparisons")
        return Call(node.col_offset + 1, op, (self.expr(node.left), self.expr(node.comparators[0])))

    def _Attribute(self, node: ast.Attribute) -> Node:
        if node.attr != "T":
            raise self.error(node, f"the attribute .{node.attr} is not allowed (only .T, the transpose)")
        return Call(node.col_offset + 1, "T", (self.expr(node.value),))

    def _Subscript(self, node: ast.Subscript) -> Node:
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if any(isinstance(it, ast.Slice) and not _is_colon(it) for it in items) or any(_is_ellipsis(it) for it in items):
            return self._slice(node, items)
        if all(_is_colon(it) or _is_none(it) for it in items):
            if not any(_is_none(it) for it in items):
                raise self.error(node, "a subscript of only ':' does nothing; remove it")
            kinds = tuple(":" if _is_colon(it) else None for it in items)
            return Call(node.col_offset + 1, "expand", (self.expr(node.value),), {"items": kinds})
        if self.index is None:
            if any(isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id in ("range", "arange")
                   for it in items):
                raise self.error(node, "rows picked by labels, as in L[range(n), y]: write "
                                       "take_along_axis(L, y[:, None], axis=1)")
            if len(items) == 1 and not isinstance(items[0], ast.Constant):
                # C[I]: integer-array indexing along C's first axis (an embedding lookup)
                return Call(node.col_offset + 1, "gather", (self.expr(node.value), self.expr(items[0])))
            raise self.error(
                node,
                "entries like x[i] are only allowed in index-form definitions (\"z[j]\" = ...); "
                "in matrix form use [:, None] or [None, :] to add an axis, a:b to slice, or C[I] with an "
                "integer input I to gather rows",
            )
        if not isinstance(node.value, ast.Name) or node.value.id not in self.scope.tensors:
            raise self.error(node, "only a named tensor can be indexed, as in W[i, j]")
        subs = tuple(self._subscript(it) for it in items)
        assert self.index is not None
        axes = {name: self.index.axis(name) for sub in _flat_subscripts(subs) for name, _ in sub.terms}
        return IndexRef(node.col_offset + 1, node.value.id, subs, axes)

    def _slice(self, node: ast.Subscript, items: Sequence[ast.AST]) -> Node:
        """``X[:, H:2*H]``, ``X[..., a:b]``: bounds are dim expressions, no steps."""
        kinds: list[object] = []
        for it in items:
            if _is_ellipsis(it):
                if "..." in kinds:
                    raise self.error(it, "one ... per subscript")
                kinds.append("...")
            elif _is_none(it):
                kinds.append(None)
            elif _is_colon(it):
                kinds.append(":")
            elif isinstance(it, ast.Slice):
                if it.step is not None:
                    raise self.error(it.step, "slices take no step; write X[a:b]")
                lo = None if it.lower is None else self._dim(it.lower)
                hi = None if it.upper is None else self._dim(it.upper)
                kinds.append((lo, hi))
            else:
                raise self.error(it, "in a slice, each position is ':', a:b with dim expressions, None or ...")
        return Call(node.col_offset + 1, "slice", (self.expr(node.value),), {"items": tuple(kinds)})

    def _subscript(self, node: ast.AST) -> Subscript:
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in self.scope.tensors:
            # logp[b, y[b]]: an entry of an integer input as the position (checked to be one at load)
            inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return Subscript((), 0, (), lookup=(node.value.id, tuple(self._subscript(it) for it in inner)))
        terms: dict[str, int] = {}
        dim_terms: dict[str, int] = {}
        const = 0
        stack = [(node, 1)]
        while stack:
            current, sign = stack.pop()
            if isinstance(current, ast.Name) and current.id in self.scope.dims and self.index is not None and \
                    current.id not in self.index.free and current.id not in self.index.bound:
                dim_terms[current.id] = dim_terms.get(current.id, 0) + sign  # a dim in the offset: t + K - 1
            elif isinstance(current, ast.Name):
                assert self.index is not None
                if current.id not in self.index.free and current.id not in self.index.bound:
                    raise self.error(current, f"{current.id!r} is not an index here (indices: "
                                     f"{', '.join(list(self.index.free) + list(self.index.bound))})")
                terms[current.id] = terms.get(current.id, 0) + sign
            elif isinstance(current, ast.Constant) and type(current.value) is int:
                const += sign * current.value
            elif isinstance(current, ast.BinOp) and isinstance(current.op, (ast.Add, ast.Sub)):
                stack.append((current.left, sign))
                stack.append((current.right, sign if isinstance(current.op, ast.Add) else -sign))
            elif (
                isinstance(current, ast.BinOp) and isinstance(current.op, ast.Mult)
                and isinstance(current.left, ast.Constant) and type(current.left.value) is int
                and isinstance(current.right, ast.Name)
            ):
                stack.append((current.right, sign * current.left.value))
            elif isinstance(current, ast.UnaryOp) and isinstance(current.op, (ast.USub, ast.UAdd)):
                stack.append((current.operand, -sign if isinstance(current.op, ast.USub) else sign))
            elif (
                isinstance(current, ast.BinOp) and isinstance(current.op, ast.Mult)
                and isinstance(current.right, ast.Constant) and type(current.right.value) is int
                and isinstance(current.left, ast.Name)
            ):
                stack.append((current.left, sign * current.right.value))
            else:
                raise self.error(current, "an index must be an affine expression of indices, like t + k - 1")
        if any(abs(c) > 64 for c in terms.values()) or abs(const) > self.limits.max_dim:
            raise self.error(node, "index coefficients are limited to 64 and offsets to --max-dim")
        return Subscript(tuple(sorted((k, v) for k, v in terms.items() if v)), const,
                         tuple(sorted((k, v) for k, v in dim_terms.items() if v)))

    # -- calls ---------------------------------------------------------------

    def _Call(self, node: ast.Call) -> Node:
        if not isinstance(node.func, ast.Name):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                prefix = func.value.id
                raise self.error(node, f"drop the `{prefix}.` prefix: write {func.attr}(...)")
            raise self.error(node, "only named functions can be called, like tanh(z)")
        name = node.func.id
        col = node.col_offset + 1
        if any(kw.arg is None for kw in node.keywords):
            raise self.error(node, "**kwargs are not allowed")
        kwargs: dict[str, ast.AST] = {kw.arg: kw.value for kw in node.keywords if kw.arg is not None}
        if name == "sum" and len(node.args) == 1 and isinstance(node.args[0], ast.GeneratorExp):
            if kwargs:
                raise self.error(node, "an index sum takes no keywords: sum(... for i in n)")
            return self._index_sum(node.args[0], col)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error(arg, "*args are not allowed")
        op = OPS.get(name)  # read at call time: an entry added to the table is callable at once
        if op is not None and op.signature is not None:
            return self._table_call(node, name, op, kwargs)
        base, prime = (name[: -len("_prime")], True) if name.endswith("_prime") else (name, False)
        if base in ELEMENTWISE or base in self.scope.functions:
            if kwargs:
                raise self.error(node, f"{name}() takes no keyword arguments: write {name}(x)")
            if prime and not self.scope.allow_prime:
                raise self.error(
                    node, f"{name} is a derivative: use it in [claims] or [backward], not in the forward pass"
                )
            if len(node.args) != 1:
                raise self.error(node, f"{name}() takes one argument")
            return Call(col, "elementwise", (self.expr(node.args[0]),), {"fn": base, "prime": prime})
        if name in INSTEAD:
            raise self.error(node.func, f"unknown function {name!r}: write {INSTEAD[name]} instead")
        known = sorted(BUILTIN_FUNCTIONS | self.scope.functions)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "declare a generic function in [functions]"
        raise self.error(node.func, f"unknown function {name!r}", hint)

    def _table_call(self, node: ast.Call, name: str, op: Op, kwargs: dict[str, ast.AST]) -> Node:
        """A call read by the op's signature in the table: tensors become arguments of the IR call,
        everything else a static parameter read from literals."""
        signature = op.signature
        assert signature is not None
        params_in = list(signature.params)
        usage = _usage(name, params_in)
        given: dict[str, ast.AST | list[ast.AST]] = {}
        positional: list[ast.AST] = list(node.args)
        for k, p in enumerate(params_in):
            if not positional:
                break
            if signature.variadic and k == len(params_in) - 1:
                given[p.name] = positional
                positional = []
            else:
                given[p.name] = positional.pop(0)
        if positional:
            required = sum(1 for p in params_in if p.default is ...)
            count = f"{required} argument(s)" if required == len(params_in) else f"at most {len(params_in)} arguments"
            raise self.error(node, f"{name}() takes {count} ({_words(params_in)}), not {len(node.args)}: "
                             f"write {usage}")
        keywords = {p.name for p in params_in if p.kind != "tensor" and p.keyword}
        for key, keyword_value in kwargs.items():
            if key not in keywords:
                if not keywords:
                    raise self.error(node, f"{name}() takes no keyword arguments: write {usage}")
                raise self.error(node, f"{name}() takes only {' and '.join(sorted(keywords))} as keywords, "
                                 f"not {key!r}: write {usage}")
            if key in given:
                raise self.error(node, f"{name}() got {key} twice")
            given[key] = keyword_value
        args: list[Node] = []
        params: dict[str, object] = {}
        for p in params_in:
            if p.name not in given:
                if p.default is ...:
                    required = sum(1 for q in params_in if q.default is ...)
                    raise self.error(node, f"{name}() takes {required} argument(s) ({_words(params_in)}), "
                                     f"not {len(node.args)}: write {usage}")
                if p.kind not in ("tensor", "tensors"):
                    params[p.name] = p.default
                continue
            value = given[p.name]
            if isinstance(value, list):  # the variadic tensor parameter: every remaining positional argument
                low, high = op.arity
                if not low <= len(value) <= high:
                    raise self.error(node, f"{name}() takes between {low} and {high} operands")
                args.extend(self.expr(v) for v in value)
            elif p.kind == "tensor":
                args.append(self.expr(value))
            elif p.kind == "tensors":
                if not isinstance(value, (ast.List, ast.Tuple)) or not value.elts:
                    raise self.error(value, f"{name}() takes a list of arrays: write {usage}")
                args.extend(self.expr(v) for v in value.elts)
            else:
                params[p.name] = self._static(value, p, node, name)
        if op.name == "clip" and params["lo"] > params["hi"]:  # type: ignore[operator]
            # NumPy gives hi everywhere then, a constant: almost surely the bounds swapped
            raise self.error(node, f"clip(X, lo, hi) needs lo <= hi, not lo = {params['lo']} > hi = {params['hi']}: "
                             f"swap the bounds")
        return Call(node.col_offset + 1, op.name, tuple(args), params)

    def _static(self, node: ast.AST, p: Param, call: ast.Call, name: str) -> object:
        """A static parameter from literals (never evaluated): its kind says how to read it."""
        if p.kind == "axis" and isinstance(node, ast.Tuple):
            if not node.elts:
                raise self.error(node, "axis=() names no axis; leave axis out to reduce over every axis")
            return tuple(self._int_literal(e, p.name, tuple_ok=False) for e in node.elts)
        if p.kind in ("axis", "axis1"):
            return self._int_literal(node, p.name, tuple_ok=p.kind == "axis")
        if p.kind == "number":
            return self._number(node, p.name)
        if p.kind == "bool":
            if not (isinstance(node, ast.Constant) and isinstance(node.value, bool)):
                raise self.error(node, f"{p.name} must be True or False")
            return bool(node.value)
        if p.kind == "spec":
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                raise self.error(call, f'{name} takes a subscripts string first: {name}("ij,j->i", W, a)')
            if len(node.value) > 64:
                raise self.error(node, f"the {name} subscripts are limited to 64 characters")
            return node.value
        if p.kind in ("shape", "dim"):
            return self._shape_arg(node, square=p.kind == "dim")
        if p.kind == "int":
            return self._int_literal(node, p.name)
        if p.kind == "ints":
            if isinstance(node, ast.Constant) and node.value is None:
                return None
            if not isinstance(node, (ast.Tuple, ast.List)):
                raise self.error(node, f"{p.name} must be a tuple of integers, like (0, 2, 1, 3)")
            return tuple(self._int_literal(e, p.name) for e in node.elts)
        if p.kind == "dimexpr":
            return self._dim(node)
        if p.kind == "dims":
            items = node.elts if isinstance(node, (ast.Tuple, ast.List)) else [node]
            return tuple(self._dim(e) for e in items)
        if p.kind == "pads":
            if not isinstance(node, (ast.Tuple, ast.List)) or not all(
                isinstance(e, (ast.Tuple, ast.List)) and len(e.elts) == 2 for e in node.elts
            ):
                raise self.error(node, "pad widths are one (before, after) pair per axis, like ((0, 0), (K - 1, K - 1))")
            return tuple((self._dim(e.elts[0]), self._dim(e.elts[1])) for e in node.elts)  # type: ignore[attr-defined]
        raise self.error(node, f"{name}() cannot read its argument {p.name}")  # a table entry without a reader

    def _int_literal(self, node: ast.AST, what: str, tuple_ok: bool = False) -> int | None:
        if isinstance(node, ast.Constant) and node.value is None:
            return None
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 16:
            return sign * node.value
        more = f" or a tuple of them, like {what}=(0, 1)" if tuple_ok else ""
        raise self.error(node, f"{what} must be a small integer literal, like {what}=0{more}")

    def _dim(self, node: ast.AST) -> Dim:
        """A dim expression in the text (``H*D``, ``K - 1``, ``2*H``): sums of products of dim names."""
        text = ast.get_source_segment(self.text, node) or "?"
        try:
            dim = dim_from_ast(node, self.scope.dims, text)
        except ValueError as exc:
            raise self.error(node, str(exc)) from None
        if abs(dim.const) > self.limits.max_dim:
            raise self.error(node, f"the literal part of {text!r} is limited to --max-dim")
        return dim

    def _number(self, node: ast.AST, what: str) -> float:
        """A numeric literal, with a sign: ``clip(X, -1, 1)``."""
        sign, inner = 1, node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign, inner = (-1 if isinstance(node.op, ast.USub) else 1), node.operand
        literal = _numeric(inner)
        if literal is None:
            raise self.error(node, f"{what} must be a numeric literal, like -1 or 0.5")
        if abs(literal) > self.limits.max_literal:
            raise LimitError(exceeded("the numeric literal", literal, "max_literal", self.limits),
                             column=_column(node))
        return sign * float(literal)

    def _shape_arg(self, node: ast.AST, square: bool) -> tuple[str | int, ...]:
        items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
        if square and len(items) != 1:
            raise self.error(node, "eye() takes one dim name: write eye(n)")
        out: list[str | int] = []
        for it in items:
            if isinstance(it, ast.Name) and it.id in self.scope.dims:
                out.append(it.id)
            elif isinstance(it, ast.Constant) and type(it.value) is int and 1 <= it.value <= self.limits.max_dim:
                out.append(it.value)
            elif isinstance(it, ast.BinOp) and not square:
                out.append(self._dim(it))  # type: ignore[arg-type]
            else:
                raise self.error(it, "a shape entry must be a dim name or a positive integer (or a dim expression "
                                     "like 2*H)")
        if len(out) > self.limits.max_rank:
            raise LimitError(exceeded("the rank", len(out), "max_rank", self.limits), column=_column(node))
        return tuple(out)

    def _index_sum(self, gen: ast.GeneratorExp, col: int) -> Node:
        if self.index is None:
            raise self.error(
                gen, "sum(... for i in n) is only allowed in index-form definitions (\"z[j]\" = ...)"
            )
        bound: list[tuple[str, str, int]] = []  # (index, dim, axis); several for clauses are nested sums
        try:
            for comp in gen.generators:
                if comp.ifs or comp.is_async:
                    raise self.error(gen, "an index sum takes no conditions: sum(... for i in n)")
                if not isinstance(comp.target, ast.Name):
                    raise self.error(comp.target, "the index of a sum must be a single name")
                if not (isinstance(comp.iter, ast.Name) and comp.iter.id in self.scope.dims):
                    raise self.error(comp.iter, "an index ranges over a dim name: sum(... for i in n)")
                index = comp.target.id
                if index in self.index.free or index in self.index.bound:
                    raise self.error(comp.target, f"the index {index!r} is already in use here")
                if index in self.scope.tensors or index in self.scope.dims:
                    raise self.error(comp.target, f"the index {index!r} shadows a tensor or dim of the same name")
                axis = len(self.index.free) + self.index.next_axis
                self.index.next_axis += 1
                self.index.bound[index] = axis
                self.index.bound_dims[axis] = comp.iter.id
                bound.append((index, comp.iter.id, axis))
            body = self.expr(gen.elt)
        finally:
            for index, _, _ in bound:
                self.index.bound.pop(index, None)
        for index, dim, axis in reversed(bound):
            body = IndexSum(col, body, index, dim, axis)
        return body


_DISPATCH: dict[type[ast.AST], Callable[[_Parser, Any], Node]] = {
    ast.Constant: _Parser._Constant, ast.Name: _Parser._Name, ast.BinOp: _Parser._BinOp,
    ast.UnaryOp: _Parser._UnaryOp, ast.Compare: _Parser._Compare, ast.Attribute: _Parser._Attribute,
    ast.Subscript: _Parser._Subscript, ast.Call: _Parser._Call,
}


KIND_WORDS = {
    "tensor": "an array", "tensors": "a list of arrays", "dim": "one dim name", "dims": "dim expressions",
    "shape": "a dim name or a list of dims", "spec": "a subscripts string", "axis": "an axis", "dimexpr": "a dim",
    "bool": "True or False", "int": "an integer", "ints": "a tuple of integers", "number": "a number",
    "pads": "pad widths",
}


def _words(params: list[Param]) -> str:
    return ", ".join(KIND_WORDS.get(p.kind, p.kind) for p in params if p.default is ...)


def _usage(name: str, params: list[Param]) -> str:
    """How to call an op, from its signature: ``sum(X, axis=None, keepdims=False)``."""
    parts = []
    for p in params:
        if p.kind in ("tensor", "tensors"):
            parts.append(f"[{p.name}, ...]" if p.kind == "tensors" else p.name)
        elif p.default is ...:
            parts.append(p.name)
        else:
            parts.append(f"{p.name}={p.default!r}")
    return f"{name}({', '.join(parts)})"


def _numeric(node: ast.AST) -> int | float | None:
    """The value of a numeric literal (not a bool); None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    return None


def _column(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0) + 1


def _is_colon(node: ast.AST) -> bool:
    return isinstance(node, ast.Slice) and node.lower is None and node.upper is None and node.step is None


def _flat_subscripts(subs) -> list[Subscript]:
    """Every subscript, the ones inside a lookup (``y[b]`` in ``logp[b, y[b]]``) included."""
    out: list[Subscript] = []
    stack = list(subs)
    while stack:
        sub = stack.pop()
        out.append(sub)
        if sub.lookup is not None:
            stack.extend(sub.lookup[1])
    return out


def _is_ellipsis(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _describe(node: ast.AST) -> str:
    names = {
        "Lambda": "a lambda", "ListComp": "a list comprehension", "GeneratorExp": "a generator expression",
        "JoinedStr": "an f-string", "NamedExpr": "the walrus operator :=", "IfExp": "a conditional expression",
        "BoolOp": "and/or", "Dict": "a dict", "Set": "a set", "List": "a list", "Tuple": "a tuple",
        "Starred": "*args", "Await": "await", "Yield": "yield", "SetComp": "a set comprehension",
        "DictComp": "a dict comprehension", "Slice": "a slice",
    }
    return names.get(type(node).__name__, f"the syntax {type(node).__name__}")


def _check_size(text: str, limits: Limits) -> None:
    if not isinstance(text, str):
        raise DerivationError(f"an expression must be a string, not {type(text).__name__}")
    if len(text) > limits.max_expr_chars:
        raise LimitError(exceeded("the expression length", len(text), "max_expr_chars", limits),
                         column=limits.max_expr_chars + 1)
    depth = 0
    for col, ch in enumerate(text, start=1):
        if ch in "([{":
            depth += 1
            if depth > limits.max_depth:
                raise LimitError(exceeded("the bracket nesting", f"{depth} or more", "max_depth", limits), column=col)
        elif ch in ")]}":
            depth -= 1


def parse_quietly(text: str) -> ast.Expression:
    """``ast.parse(text, mode="eval")`` with the compiler's warnings as syntax errors, so that
    ``1if x`` ("invalid decimal literal") is an error with a column, never a warning on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ast.parse(text, mode="eval")


def _tree(text: str, limits: Limits) -> ast.Expression:
    _check_size(text, limits)
    if "\x00" in text:
        raise DerivationError("the expression contains a NUL character", column=text.index("\x00") + 1)
    try:
        tree = parse_quietly(text.strip())
    except SyntaxError as exc:
        col = exc.offset + _leading(text) if exc.offset is not None and exc.lineno == 1 else exc.offset
        raise DerivationError(f"syntax error: {exc.msg}", column=col) from None
    except ValueError as exc:  # e.g. a NUL character, which ast.parse refuses outright
        raise DerivationError(f"the expression cannot be parsed: {exc}", column=1) from None
    except (RecursionError, MemoryError):
        raise LimitError(exceeded("the expression nesting", "too deep", "max_depth", limits), column=1) from None
    # the AST's depth bounds the recursion of every later pass
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise LimitError(
                exceeded("the expression nesting depth", depth, "max_depth", limits),
                column=getattr(node, "col_offset", 0) + 1,
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _leading(text: str) -> int:
    return len(text) - len(text.lstrip())


def parse_expression(text: str, scope: Scope, limits: Limits = DEFAULT_LIMITS) -> Node:
    """Parse a matrix-form expression."""
    return _parse_body(text, scope, limits, None)


def _parse_body(text: str, scope: Scope, limits: Limits, index: _IndexState | None) -> Node:
    """The IR of one expression, with columns counted in the text as the file wrote it."""
    tree = _tree(text, limits)
    try:
        return _Parser(text.strip(), scope, limits, index).expr(tree.body)
    except DerivationError as exc:
        if exc.column is not None:
            exc.column += _leading(text)
        raise
    except RecursionError:  # only when --max-depth is raised past what Python's stack allows
        raise LimitError(exceeded("the expression nesting", "too deep for Python's stack", "max_depth", limits),
                         column=1) from None


def parse_index_key(key: str) -> tuple[str, tuple[str, ...]] | None:
    """``"z[j]"`` → ``("z", ("j",))``; a plain name → None."""
    if "[" not in key:
        return None
    try:
        node = parse_quietly(key.strip()).body
    except (SyntaxError, ValueError):  # ValueError: a NUL on Python < 3.11.4
        raise DerivationError(f"{key!r} is neither a name nor an index form like \"z[j]\"") from None
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
        raise DerivationError(f"{key!r} is neither a name nor an index form like \"z[j]\"")
    items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    if not all(isinstance(it, ast.Name) for it in items):
        raise DerivationError(f"the indices of {key!r} must be plain names, like \"z[i, j]\"")
    names = tuple(it.id for it in items)  # type: ignore[attr-defined]
    if len(set(names)) != len(names):
        raise DerivationError(f"{key!r} repeats an index")
    return node.value.id, names


def parse_index_definition(
    text: str, free: tuple[str, ...], scope: Scope, limits: Limits = DEFAULT_LIMITS
) -> IndexDef:
    """Parse the right-hand side of ``"z[j]" = "sum(W[i, j] * a[i] for i in n) + b[j]"``."""
    for name in free:
        if name in scope.tensors or name in scope.dims:
            raise DerivationError(f"the index {name!r} shadows a tensor or dim of the same name")
    state = _IndexState(free=free)
    body = _parse_body(text, scope, limits, state)
    return IndexDef(free=free, body=body, rank=len(free) + state.next_axis, bound_dims=state.bound_dims)
