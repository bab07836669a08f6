"""Element-wise functions (``tanh``, ``relu``, …), their derivatives (``NAME_prime``) and the one
``elementwise`` op that applies any of them, or a generic f declared in ``[functions]``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .core import H, MissingRule, Op, _apply_sym, _register, _sf, _sp, dense


@dataclass(frozen=True)
class Elementwise:
    """``f`` applied entry by entry: NumPy value, NumPy derivative, SymPy builder."""

    name: str
    numeric: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray], np.ndarray]
    symbolic: Callable[[Any], Any]
    complex_safe: bool = False  # the NumPy form is complex-analytic: the tangent takes a complex step
    nograd: bool = False  # a derivative of 0 by nature (sign): never differentiated through
    # the all-shapes certificate's class (certificate.py): the value, NAME_prime's value, the
    # derivative and NAME_prime's derivative are polynomials in generators (no denominator besides
    # monomials); ``monomial_den``: the derivative's denominator is the argument itself
    poly_value: bool = False
    poly_prime_value: bool = False
    poly_derivative: bool = False
    poly_prime_derivative: bool = False
    monomial_den: bool = False


def _sigmoid(x):
    return 0.5 * (1.0 + _tanh_in_place(0.5 * x))


def _tanh_in_place(t):
    """``np.tanh(t)``, written into ``t``: only ever called on a temporary just made (the same values; a
    fresh 256 KB array costs its page faults, 4× the tanh at 32k entries). The caller's next operation
    still sees a temporary, so NumPy elides it as before, in the same operand order (a complex product
    by a constant is order-sensitive in a NaN's sign)."""
    if type(t) is np.ndarray and t.dtype.kind in "fc":
        return np.tanh(t, out=t)
    return np.tanh(t)  # a scalar (a 0-d input comes back as one), or an object array


def _times(s, u):
    """``s * u`` for a ``u`` made just now, written into ``u`` when it is an array of the product's shape
    and dtype: the same values, in the same order, as ``s * u`` with ``s`` a temporary (which NumPy
    computes in place in ``s``), without a fresh array."""
    if type(u) is np.ndarray and type(s) is np.ndarray and s.shape == u.shape and s.dtype == u.dtype:
        return np.multiply(s, u, out=u)
    return s * u


def _sigmoid_prime(x):
    """``σ(x)·(1 - σ(x))``, with σ computed once."""
    s = _sigmoid(x)
    return _times(s, 1.0 - s)


def _silu_prime(x):
    """``σ(x)·(1 + x·(1 - σ(x)))``, with σ computed once."""
    s = _sigmoid(x)
    return _times(s, 1.0 + x * (1.0 - s))


def _erf(x):
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=float)  # a scalar comes back as a float


_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh_inner(x):
    """``tanh(√(2/π)·(x + 0.044715·x³))``, shared by the value and the derivative (each computes only its own
    terms: the value computed alongside the derivative cost the value a third more, the complex step twice)."""
    return _tanh_in_place(_GELU_C * (x + 0.044715 * x**3))


def _gelu_tanh(x):
    """``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``."""
    t = _gelu_tanh_inner(x)
    return 0.5 * x * (1.0 + t)


def _gelu_tanh_prime(x):
    """The derivative of :func:`_gelu_tanh`."""
    t = _gelu_tanh_inner(x)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)


def _exp(u):
    return _sf().applied(_sp().exp, u)


def _log(u):
    return _sf().applied(_sp().log, u)


def _tanh(u):
    return _sf().applied(_sp().tanh, u)


def _gelu_tanh_sym(u):
    sp = _sp()
    return u * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (u + sp.Rational(44715, 10**6) * u**3))) / 2

ELEMENTWISE: dict[str, Elementwise] = {
    e.name: e
    for e in [
        Elementwise("exp", np.exp, np.exp, _exp),
        Elementwise("log", np.log, lambda x: 1.0 / x, _log),
        Elementwise("log1p", np.log1p, lambda x: 1.0 / (1.0 + x), lambda u: _log(1 + u)),
        Elementwise("sqrt", np.sqrt, lambda x: 0.5 / np.sqrt(x), lambda u: _sp().sqrt(u)),
        Elementwise(
            "rsqrt", lambda x: 1.0 / np.sqrt(x), lambda x: -0.5 * x**-1.5, lambda u: 1 / _sp().sqrt(u)
        ),
        Elementwise("tanh", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2, _tanh),
        Elementwise(
            "sigmoid",
            _sigmoid,
            _sigmoid_prime,
            lambda u: 1 / (1 + _exp(-u)),
        ),
        Elementwise(
            "logit",
            lambda x: np.log(x) - np.log1p(-x),
            lambda x: 1.0 / (x * (1.0 - x)),
            lambda u: _log(u) - _log(1 - u),
        ),
        Elementwise(
            "relu", lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float), lambda u: _sf().Relu(u)
        ),
        Elementwise(
            "softplus", lambda x: np.logaddexp(0.0, x), _sigmoid, lambda u: _log(1 + _exp(u))
        ),
        Elementwise(
            "gelu",
            lambda x: 0.5 * x * (1.0 + _erf(x / _SQRT2)),
            lambda x: 0.5 * (1.0 + _erf(x / _SQRT2)) + x * np.exp(-0.5 * x * x) / _SQRT2PI,
            lambda u: u * (1 + _sp().erf(u / _sp().sqrt(2))) / 2,
        ),
        Elementwise(
            "erf", _erf, lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x), lambda u: _sp().erf(u)
        ),
        Elementwise("sin", np.sin, np.cos, lambda u: _sp().sin(u)),
        Elementwise("cos", np.cos, lambda x: -np.sin(x), lambda u: _sp().cos(u)),
        Elementwise("abs", np.abs, np.sign, lambda u: u * _sf().sign_of(u)),  # abs' = sign, 0 at 0
        Elementwise("square", np.square, lambda x: 2.0 * x, lambda u: u**2),
        Elementwise("cosh", np.cosh, np.sinh, lambda u: _sp().cosh(u)),
        Elementwise("sinh", np.sinh, np.cosh, lambda u: _sp().sinh(u)),
        Elementwise("expm1", np.expm1, np.exp, lambda u: _exp(u) - 1),
        Elementwise("atan", np.arctan, lambda x: 1.0 / (1.0 + x * x), lambda u: _sp().atan(u)),
        Elementwise(
            "silu",
            lambda x: x * _sigmoid(x),
            _silu_prime,
            lambda u: u / (1 + _exp(-u)),
        ),
        Elementwise("gelu_tanh", _gelu_tanh, _gelu_tanh_prime, lambda u: _gelu_tanh_sym(u)),
        Elementwise(
            "sign", np.sign, lambda x: np.zeros(np.shape(x)), lambda u: _sf().sign_of(u), nograd=True
        ),
    ]
}


# NumPy forms that are complex-analytic: their tangent is a complex step through the function itself
for _name in ("exp", "log", "log1p", "sqrt", "rsqrt", "tanh", "sigmoid", "sin", "cos", "square", "cosh", "sinh",
              "expm1", "atan", "silu", "gelu_tanh"):
    ELEMENTWISE[_name] = replace(ELEMENTWISE[_name], complex_safe=True)

# the certificate's class, per function (see the fields of Elementwise)
for _name in ("exp", "tanh", "sin", "cos", "erf", "gelu", "abs", "square", "relu"):
    ELEMENTWISE[_name] = replace(ELEMENTWISE[_name], poly_value=True, poly_prime_value=True, poly_derivative=True,
                                 poly_prime_derivative=_name not in ("erf", "gelu"))
for _name in ("softplus", "log", "log1p", "sqrt", "logit"):
    ELEMENTWISE[_name] = replace(ELEMENTWISE[_name], poly_value=True)
for _name in ("log", "sqrt", "rsqrt"):
    ELEMENTWISE[_name] = replace(ELEMENTWISE[_name], monomial_den=True)


# Concrete smooth stand-ins for a generic f declared in [functions]: (f, f').
GENERIC_STANDINS: list[tuple[str, Callable, Callable]] = [
    ("tanh", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    ("sin", np.sin, np.cos),
    ("x + x³/3", lambda x: x + x**3 / 3.0, lambda x: 1.0 + x**2),
    ("softplus", lambda x: np.logaddexp(0.0, x), _sigmoid),
]


def _ew_numeric(a, fn: Elementwise, prime: bool):
    return (fn.derivative if prime else fn.numeric)(a)


def _ew_symbolic(a, fn: Elementwise, prime: bool):
    builder = _sf().derivative_of(fn.symbolic) if prime else fn.symbolic
    return _apply_sym(builder, a)


def _ew_vjp(g, out, a, fn: Elementwise, prime: bool):
    if prime:
        raise MissingRule(f"{fn.name}_prime is a derivative: it has no derivative rule of its own")
    if fn.nograd:
        return (None,)  # sign: a derivative of 0 by nature
    return (g * fn.derivative(a),)


def _ew_tangent(args, out, params, tans):
    """f'(a)·da — for a built-in whose NumPy form is complex-analytic, a complex step through f
    itself instead (independent of the table's derivative, which is thereby checked too), with a
    step relative to each entry (log of a tiny p needs h ≪ p)."""
    fn, (t,) = params["fn"], tans
    if params.get("prime"):
        raise MissingRule("a NAME_prime in the forward pass has no tangent rule")
    if fn.nograd:
        return None
    if fn.complex_safe and ELEMENTWISE.get(fn.name) is fn:
        a = np.asarray(args[0], dtype=float)
        h = H * np.where(a != 0, np.abs(a), 1.0)
        with np.errstate(all="ignore"):
            return np.imag(fn.numeric(a + 1j * h * dense(t))) / h
    return fn.derivative(args[0]) * dense(t)


def _fn_name(fn: str | Elementwise) -> str:
    """The function's name as the file writes it (before resolution ``fn`` is that name)."""
    return fn if isinstance(fn, str) else fn.name


def _ew_text(args: list[str], params: Mapping[str, Any]) -> str:
    """``tanh(x)``, ``tanh_prime(x)``: the call by the function's name."""
    return f"{_fn_name(params['fn'])}{'_prime' if params.get('prime') else ''}({args[0]})"


# ``fn`` is resolved by the engine: a built-in, or this trial's stand-in for a generic f.
# ``NAME_prime`` is the same op with prime=True; it is never differentiated through.
_register(
    Op("elementwise", lambda a, **_: a, _ew_numeric, _ew_vjp, symbolic=_ew_symbolic, params=("fn", "prime"), functions=("fn",),
       tangent=_ew_tangent, text=_ew_text, applies=lambda p: None if p.get("prime") else _fn_name(p["fn"]))
)
