"""Names and printers: tensor names and entries in Unicode and LaTeX, SymPy expressions in both."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import sympy as sp  # type: ignore[import-untyped]
from sympy.printing.latex import LatexPrinter  # type: ignore[import-untyped]
from sympy.printing.str import StrPrinter  # type: ignore[import-untyped]

from ..lang.dims import Shape, fmt_shape
from .document import Math

GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "lambda", "mu", "nu", "xi", "pi", "rho",
         "sigma", "tau", "phi", "chi", "psi", "omega"}
_ENTRY = re.compile(r"^(∇?\w+)\[([\d,]*)\]$")


def tex_name(name: str) -> str:
    """``W`` → ``W``, ``mu`` → ``\\mu``, ``grad_z`` → ``\\nabla z``, ``xhat`` → ``\\mathrm{xhat}``."""
    if name.startswith("grad_"):
        return r"\nabla " + tex_name(name[5:])
    if name in GREEK:
        return "\\" + name
    if len(name) == 1:
        return name
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


def text_name(name: str) -> str:
    """``grad_z`` → ``∇z``."""
    return "∇" + name[5:] if name.startswith("grad_") else name


def _sub_text(letters: list[str]) -> str:
    if all(len(x) == 1 for x in letters):
        return "".join(letters)
    return "{" + ",".join(letters) + "}"


def entry_text(name: str, letters: list[str]) -> str:
    """``W``, ``[j, i]`` → ``W_ji``."""
    return text_name(name) + ("_" + _sub_text(letters) if letters else "")


def entry_tex(name: str, letters: list[str]) -> str:
    """``W``, ``[j, i]`` → ``W_{ji}``; a gradient in brackets, ``(\\nabla z)_{j}``."""
    base = tex_name(name)
    if name.startswith("grad_") and letters:
        base = f"({base})"
    if not letters:
        return base
    sep = "" if all(len(x) == 1 for x in letters) else ","
    return base + "_{" + sep.join(letters) + "}"


def split_entry(symbol: sp.Symbol) -> tuple[str, tuple[int, ...]]:
    """``W[0,2]`` → ``("W", (0, 2))``, ``∇z[1]`` → ``("grad_z", (1,))``; a scalar → ``(name, ())``."""
    m = _ENTRY.match(symbol.name)
    if not m:
        return _tensor_name(symbol.name), ()
    return _tensor_name(m.group(1)), tuple(int(x) for x in m.group(2).split(",") if x)


def _tensor_name(name: str) -> str:
    """The symbolic engine's gradient atoms are ``∇z[k]``: the file names that gradient ``grad_z``."""
    return "grad_" + name[1:] if name.startswith("∇") else name


_LOWER = {"Relu": "relu", "Step": "step", "StepGe": "step_ge"}  # [u > 0] and [u ≥ 0]


def _func_name(expr: sp.Expr) -> tuple[str, bool]:
    name = type(expr).__name__
    if name.endswith("_prime"):
        return name[: -len("_prime")], True
    return name, False


class _TextPrinter(StrPrinter):  # type: ignore[misc]  # SymPy is untyped
    """Unicode: entries by ``rename``, ``f'(z)`` for a derivative, ``relu(x)``."""

    def __init__(self, rename: Callable[[sp.Symbol], tuple[str, str]]) -> None:
        super().__init__()
        self.rename = rename

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return self.rename(expr)[0]

    def _print_ArgShare(self, expr, exp=None) -> str:  # the max's partial: its arg-max indicator off ties
        return str(self._print(expr.indicator()))

    def _print_Function(self, expr: sp.Expr) -> str:
        name, prime = _func_name(expr)
        args = ", ".join(self._print(a) for a in expr.args)
        return f"{_LOWER.get(name, name)}{chr(39) if prime else ''}({args})"


class _TexPrinter(LatexPrinter):  # type: ignore[misc]  # SymPy is untyped
    """LaTeX: entries by ``rename``, products without a sign, ``\\operatorname{f}'`` for a derivative."""

    def __init__(self, rename: Callable[[sp.Symbol], tuple[str, str]]) -> None:
        super().__init__({"mul_symbol": None})
        self.rename = rename

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        return self.rename(expr)[1]

    def _print_ArgShare(self, expr, exp=None) -> str:  # the max's partial: its arg-max indicator off ties
        return str(self._print(expr.indicator()))

    def _print_Function(self, expr: sp.Expr, exp: str | None = None) -> str:
        if type(expr).__module__.startswith("sympy."):
            return str(super()._print_Function(expr, exp))
        name, prime = _func_name(expr)
        base = name if len(name) == 1 else r"\operatorname{" + name.lower().replace("_", r"\_") + "}"
        args = ", ".join(self._print(a) for a in expr.args)
        out = base + ("'" if prime else "") + r"\left(" + args + r"\right)"
        return f"{out}^{{{exp}}}" if exp else out


class _CodePrinter(StrPrinter):  # type: ignore[misc]  # SymPy is untyped
    """The expression language: bare tensor names (``f_prime(z)``), for 'in the file's language'."""

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return bare_rename(expr)[0].replace("∇", "grad_")

    def _print_ArgShare(self, expr, exp=None) -> str:  # the max's partial: its arg-max indicator off ties
        return str(self._print(expr.indicator()))

    def _print_Function(self, expr: sp.Expr) -> str:
        name = type(expr).__name__
        args = ", ".join(self._print(a) for a in expr.args)
        return f"{_LOWER.get(name, name)}({args})"


def render(expr: sp.Expr, rename: Callable[[sp.Symbol], tuple[str, str]]) -> Math:
    """``expr`` in Unicode and in LaTeX, each symbol written by ``rename``."""
    expr = _file_names(expr)
    text = _TextPrinter(rename).doprint(expr).replace("**", "^").replace("*", "·")
    return Math(text, _TexPrinter(rename).doprint(expr))


def _file_names(expr: sp.Expr) -> sp.Expr:
    """The engine's gradient atoms ``∇z[k]`` under the file's name ``grad_z[k]``: SymPy orders the terms
    and factors it prints by symbol name, and a product reads ``∇z[0]·W[0,2]`` under the file's names."""
    atoms = {s: sp.Symbol(_tensor_name(s.name), **s.assumptions0)
             for s in expr.free_symbols if s.name.startswith("∇")}
    return expr.xreplace(atoms) if atoms else expr


def concrete_rename(symbol: sp.Symbol) -> tuple[str, str]:
    """``W[0,1]`` → ``W[0,1]`` / ``W_{0,1}``; ``grad_z[1]`` → ``∇z[1]`` / ``(\\nabla z)_{1}``."""
    name, idx = split_entry(symbol)
    if not idx:
        return text_name(name), tex_name(name)
    base = f"({tex_name(name)})" if name.startswith("grad_") else tex_name(name)
    return f"{text_name(name)}[{','.join(map(str, idx))}]", base + "_{" + ",".join(map(str, idx)) + "}"


def prime_of(fn: str, arg_text: str, arg_tex: str) -> Math:
    """``sigmoid'(z)`` in Unicode and in LaTeX."""
    base = fn if len(fn) == 1 else r"\operatorname{" + fn.replace("_", r"\_") + "}"
    return Math(f"{fn}'({arg_text})", rf"{base}'\left({arg_tex}\right)")


def generic_rename(symbol: sp.Symbol) -> tuple[str, str]:
    """Lettered entries (``W@j,i``) as ``W_ji``; others as concrete entries."""
    if "@" in symbol.name:
        name, letters = symbol.name.split("@")
        parts = letters.split(",")
        return entry_text(name, parts), entry_tex(name, parts)
    return concrete_rename(symbol)


def bare_rename(symbol: sp.Symbol) -> tuple[str, str]:
    """Any entry as its tensor's bare name (``z_j`` → ``z``), for array expressions."""
    name = _tensor_name(symbol.name.split("@")[0].split("[")[0])
    return text_name(name), tex_name(name)


def dims_text(sizes: Mapping[str, int]) -> str:
    """``n=3, m=2``."""
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def shape_text(shape: Shape | None) -> str:
    """``(n, m)`` over dim names, ``?`` when unknown."""
    return "?" if shape is None else fmt_shape(shape)


def code_text(expr: sp.Expr) -> str:
    """``expr`` in the expression language, every entry as its tensor's bare name (``f_prime(z)``)."""
    return str(_CodePrinter().doprint(expr))
