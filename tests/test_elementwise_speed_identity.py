"""The element-wise forms rewritten for speed (issue 11) compute exactly what the formulas they replace
computed: the same bits, NaN signs and signed zeros included, for every dtype, shape and layout they may
meet. The formulas before the rewrite are kept here verbatim as the reference.

Sizes below and above NumPy's temporary-elision threshold (256 KiB: ``a * tmp`` is then computed in place
as ``tmp * a``, which differs in the sign of a NaN when both operands are NaN) are both covered."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from backpropcheck.lang.ops import ELEMENTWISE, GENERIC_STANDINS, H, Rank1, dense
from backpropcheck.lang.ops.elementwise import _ew_tangent, _ew_vjp, _sigmoid

# --- the formulas before the rewrite, verbatim -------------------------------------------------------


def _old_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_GELU_C = math.sqrt(2.0 / math.pi)


def _old_gelu_tanh(x):
    """``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` and its derivative."""
    inner = _GELU_C * (x + 0.044715 * x**3)
    t = np.tanh(inner)
    value = 0.5 * x * (1.0 + t)
    slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return value, slope


OLD: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {  # name: (value, derivative)
    "sigmoid": (_old_sigmoid, lambda x: _old_sigmoid(x) * (1.0 - _old_sigmoid(x))),
    "silu": (lambda x: x * _old_sigmoid(x), lambda x: _old_sigmoid(x) * (1.0 + x * (1.0 - _old_sigmoid(x)))),
    "softplus": (lambda x: np.logaddexp(0.0, x), _old_sigmoid),
    "gelu_tanh": (lambda x: _old_gelu_tanh(x)[0], lambda x: _old_gelu_tanh(x)[1]),
}


def _old_tangent(a, t, numeric: Callable[[Any], Any]):
    """``_ew_tangent``'s complex step, verbatim, through the old value formula."""
    a = np.asarray(a, dtype=float)
    h = H * np.where(a != 0, np.abs(a), 1.0)
    with np.errstate(all="ignore"):
        return np.imag(numeric(a + 1j * h * dense(t))) / h


# --- inputs ---------------------------------------------------------------------------------------

_SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, -5e-324, 1e-310,
                     -1e-310, 1.0, -1.0, 36.0, -36.0, 710.0, -710.0, 800.0, -800.0, -1e5, 1e5, -3e300])
# 7 entries, 32768 entries (exactly the elision threshold in float64), more than it, and 16384 (the
# threshold in complex128)
_SHAPES = [(7,), (1024, 32), (257, 131), (128, 128)]


def _real(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Normal draws at several scales, a tenth of the entries special values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * rng.choice([1e-3, 1.0, 10.0, 1e3], size=shape)
    flat = x.reshape(-1)
    picks = rng.random(flat.size) < 0.1
    flat[picks] = rng.choice(_SPECIAL, size=int(picks.sum()))
    flat[: min(flat.size, _SPECIAL.size)] = _SPECIAL[: flat.size]
    return x


def _complex(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Independent real and imaginary parts as :func:`_real`'s, so that every pair of special values meets."""
    z = np.empty(shape, dtype=complex)
    z.real = _real(shape, seed)
    z.imag = _real(shape, seed + 1000)
    if z.size >= _SPECIAL.size ** 2:
        pairs = z.reshape(-1)[: _SPECIAL.size ** 2]
        pairs.real = np.repeat(_SPECIAL, _SPECIAL.size)
        pairs.imag = np.tile(_SPECIAL, _SPECIAL.size)
    return z


def _readonly(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


def _variants(seed: int) -> list[tuple[str, Any]]:
    """Every kind of argument the forms may meet: arrays of each size (read-only), other dtypes, 0-d
    arrays, scalars, broadcast and strided views, complex arrays (the complex step's argument)."""
    out: list[tuple[str, Any]] = []
    for shape in _SHAPES:
        out.append((f"float64 {shape}", _readonly(_real(shape, seed))))
        out.append((f"complex128 {shape}", _readonly(_complex(shape, seed))))
    base = _real((1024, 40), seed)
    with np.errstate(all="ignore"):
        out += [
            ("float32", _readonly(base.astype(np.float32))),
            ("float16", _readonly(base[:50].astype(np.float16))),
            ("complex64", _readonly(_complex((300, 70), seed).astype(np.complex64))),
            ("int64", _readonly(np.arange(-40000, 40000, 3, dtype=np.int64))),
            ("int32 small", np.array([-3, -1, 0, 1, 2], dtype=np.int32)),
            ("int8", np.array([-128, -1, 0, 1, 127], dtype=np.int8)),
            ("bool", _readonly(np.random.default_rng(seed).random(40000) < 0.5)),
            ("transposed", base.T),
            ("strided", base[::2, 1::3]),
            ("broadcast row", np.broadcast_to(base[0], (1024, 40))),
            ("broadcast column", np.broadcast_to(base[:, :1], (1024, 40))),
            ("0-d", np.array(-0.0)),
            ("0-d nan", np.array(-np.nan)),
            ("0-d complex", np.array(complex(np.nan, -0.0))),
            ("float64 scalar", np.float64(-710.0)),
            ("python float", -0.0),
            ("python int", 3),
            ("python complex", complex(1.0, -np.inf)),
            ("empty", np.empty((0, 3))),
        ]
    return out


# --- comparison -----------------------------------------------------------------------------------


def _assert_identical(new: Any, old: Any) -> None:
    """Equal values (NaN equal to NaN), the same signs (of NaNs and zeros too), type, dtype and shape."""
    assert type(new) is type(old)
    new_a, old_a = np.asarray(new), np.asarray(old)
    assert new_a.dtype == old_a.dtype and new_a.shape == old_a.shape
    np.testing.assert_array_equal(new_a, old_a)
    for part in (np.real, np.imag) if np.iscomplexobj(old_a) else (np.real,):
        np.testing.assert_array_equal(np.signbit(part(new_a)), np.signbit(part(old_a)))


def _call_unchanged(f: Callable[[Any], Any], x: Any) -> Any:
    """``f(x)`` under errstate(all='ignore'), and ``x`` is as it was (no write into an argument)."""
    before = np.array(x, copy=True)
    with np.errstate(all="ignore"):
        result = f(x)
    np.testing.assert_array_equal(np.asarray(x), before)
    np.testing.assert_array_equal(np.signbit(np.real(x)), np.signbit(np.real(before)))
    return result


# --- tests ------------------------------------------------------------------------------------------


def test_special_values_cover_nan_of_both_signs() -> None:
    """The reference inputs do hold a negative NaN (``-np.nan`` is one), which the sign checks rely on."""
    assert np.signbit(_SPECIAL[1]) and np.isnan(_SPECIAL[1]) and not np.signbit(_SPECIAL[0])


@pytest.mark.parametrize("name", sorted(OLD))
@pytest.mark.parametrize("seed", [0, 1])
def test_value_and_derivative_are_bit_identical(name: str, seed: int) -> None:
    fn = ELEMENTWISE[name]
    old_value, old_derivative = OLD[name]
    for label, x in _variants(seed):
        for new_f, old_f in ((fn.numeric, old_value), (fn.derivative, old_derivative)):
            try:
                expected = _call_unchanged(old_f, x)
            except TypeError:  # e.g. logaddexp of a complex: the new form must fail alike
                with pytest.raises(TypeError), np.errstate(all="ignore"):
                    new_f(x)
                continue
            got = _call_unchanged(new_f, x)
            try:
                _assert_identical(got, expected)
            except AssertionError as err:
                raise AssertionError(f"{name} {new_f.__name__} on {label}: {err}") from None


def test_sigmoid_and_generic_softplus_derivative_are_bit_identical() -> None:
    """``_sigmoid`` itself, and the generic stand-in whose derivative it is."""
    _, _, softplus_prime = next(s for s in GENERIC_STANDINS if s[0] == "softplus")
    for label, x in _variants(2):
        for new_f in (_sigmoid, softplus_prime):
            expected = _call_unchanged(_old_sigmoid, x)
            try:
                _assert_identical(_call_unchanged(new_f, x), expected)
            except AssertionError as err:
                raise AssertionError(f"{label}: {err}") from None


@pytest.mark.parametrize("name", sorted(OLD))
@pytest.mark.parametrize("shape", _SHAPES)
def test_vjp_is_bit_identical(name: str, shape: tuple[int, ...]) -> None:
    """``g * f'(a)``, with NaNs of both signs in ``g`` and in ``a`` (so both factors can be NaN)."""
    fn = ELEMENTWISE[name]
    a, g = _readonly(_real(shape, 3)), _readonly(_real(shape, 4))
    with np.errstate(all="ignore"):
        (got,) = _ew_vjp(g, fn.numeric(a), a, fn, False)
        expected = g * OLD[name][1](a)
    _assert_identical(got, expected)


@pytest.mark.parametrize("name", sorted(n for n in OLD if ELEMENTWISE[n].complex_safe))
@pytest.mark.parametrize("shape", _SHAPES)
def test_complex_step_tangent_is_bit_identical(name: str, shape: tuple[int, ...]) -> None:
    """The complex step through the value form, for dense and rank-one tangents."""
    fn = ELEMENTWISE[name]
    a = _readonly(_real(shape, 5))
    tangents: list[Any] = [_readonly(_real(shape, 6)), _readonly(np.sign(_real(shape, 7)))]
    if len(shape) == 2:
        rng = np.random.default_rng(8)
        tangents.append(Rank1(rng.choice([-1.0, 1.0], size=shape[0]), rng.choice([-1.0, 1.0], size=shape[1])))
    for t in tangents:
        with np.errstate(all="ignore"):
            out = fn.numeric(a)
        got = _ew_tangent((a,), out, {"fn": fn}, (t,))
        _assert_identical(got, _old_tangent(a, t, OLD[name][0]))


def _peak_arrays(f: Callable[[np.ndarray], Any], x: np.ndarray) -> float:
    """The peak of memory traced during ``f(x)``, in units of ``x``'s size."""
    with np.errstate(all="ignore"):
        f(x)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            f(x)
            return tracemalloc.get_traced_memory()[1] / x.nbytes
        finally:
            tracemalloc.stop()


def test_sigmoid_and_its_derivative_make_no_needless_array() -> None:
    """The point of the rewrite: σ needs one array of the argument's size (the formula as written made
    two at a time), σ' two (it made three, computing σ twice). Would fail if the tanh went back to a
    fresh array, or if NumPy stopped eliding the temporaries that follow it."""
    x = _real((1024, 64), 9)
    assert _peak_arrays(_old_sigmoid, x) > 1.9  # the measure sees the difference
    assert _peak_arrays(ELEMENTWISE["sigmoid"].numeric, x) < 1.1
    assert _peak_arrays(ELEMENTWISE["sigmoid"].derivative, x) < 2.1
    assert _peak_arrays(ELEMENTWISE["silu"].derivative, x) < 2.1
