"""Element-wise functions of the symbolic engine's arrays, each built once per argument.

An op like ``gelu_tanh(z)`` builds a SymPy expression per entry, and SymPy's arithmetic makes that costly
(milliseconds for the GELU's cubic inside a tanh). Most arguments are a forward atom, a bare symbol: the
function is then built once on a placeholder with the symbol's assumptions and renamed to each symbol
(:func:`.partials._renamed`: one symbol, so no order among names to keep). Every value is also kept by its
argument, as the same entries recur at every dims of a file, in its mistaken twin and in the certificate's
truths. The values are the op table's own (``_ew_symbolic``), equal expression for expression (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import sympy as sp

from ..lang.ops import Elementwise
from ..lang.symfuncs import Step, StepGe, derivative_of
from .partials import _placeholder, _renamed, by_template

_BUILT: dict[tuple, Any] = {}  # (builder, type, argument) -> value
_TEMPLATES: dict[tuple, tuple[sp.Symbol, Any]] = {}  # (builder, assumptions) -> (placeholder, value)


def elementwise_arrays(a: Any, fn: Elementwise, prime: bool) -> np.ndarray:
    """``fn`` (or its derivative) applied to every entry of ``a``: the op table's symbolic rule, cheaper."""
    builder = derivative_of(fn.symbolic) if prime else fn.symbolic
    if len(_BUILT) > 100_000:
        _BUILT.clear()

    def one(u: Any) -> Any:
        key = (builder, u.__class__, u)
        found = _BUILT.get(key)
        if found is None:
            found = _BUILT[key] = _by_template(builder, u) if u.__class__ is sp.Symbol else builder(u)
        return found

    return np.asarray(np.frompyfunc(one, 1, 1)(a), dtype=object)


def _by_template(builder: Any, u: sp.Symbol) -> Any:
    key = (builder, u._assumptions0)
    template = _TEMPLATES.get(key)
    if template is None:
        holder = _placeholder(0, u)
        template = _TEMPLATES[key] = (holder, builder(holder))
    holder, value = template
    return _renamed(value, {holder: u})


def comparison_arrays(strict: bool, flip: bool) -> Callable[[Any, Any], np.ndarray]:
    """The op table's comparison (``lang.ops.arith._compare``: ``a > b`` is ``Step(a − b)``, ``a >= b`` is
    ``StepGe(a − b)``), each step evaluated once per shape of its argument (:func:`.partials.by_template`):
    a mask against a max (``x >= max(x)``) derives its arg-max indicator in the step's eval."""
    steps = _strict_steps if strict else _steps_ge

    def symbolic(a: Any, b: Any) -> np.ndarray:
        high, low = (b, a) if flip else (a, b)
        return np.asarray(steps(high - low), dtype=object)

    return symbolic


def _step(kind: type[Step], u: Any) -> Any:
    return by_template(kind, u) if isinstance(u, sp.Basic) else kind(u)


_strict_steps = np.frompyfunc(partial(_step, Step), 1, 1)
_steps_ge = np.frompyfunc(partial(_step, StepGe), 1, 1)

COMPARISONS = {"gt": comparison_arrays(True, False), "ge": comparison_arrays(False, False),
               "lt": comparison_arrays(True, True), "le": comparison_arrays(False, True)}
