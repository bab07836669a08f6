"""The catalogue of named mistakes: what a refuted claim most likely got wrong.

Each test compares the claimed array C with the true gradient T at one small
trial; a diagnosis is offered only when C matches a mistaken form to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .engines.numeric import is_close
from .lang.ops import Elementwise, function_of
from .model import Derivation


def diagnose(
    d: Derivation,
    claim_name: str,
    claimed: np.ndarray,
    truth: np.ndarray,
    values: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    functions: Callable[[str], Elementwise],
    evaluate_with: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
) -> str | None:
    """A sentence naming the mistake, or None when no catalogued mistake fits."""
    if not np.any(truth):
        return None
    if is_close(claimed, -truth):
        return "wrong sign: the claim is the negative of the gradient"
    if truth.ndim == 2 and truth.shape[0] == truth.shape[1] and is_close(claimed, truth.T):
        return "transposed: the claim is the transpose of the gradient (grad_X must have X's layout)"
    if evaluate_with is not None:
        for name, value in values.items():
            if np.ndim(value) == 2 and value.shape[0] == value.shape[1] and value.shape[0] > 1:
                try:
                    mutated = evaluate_with({name: value.T})
                except Exception:  # noqa: BLE001 - a mutation that does not evaluate explains nothing
                    continue
                if is_close(np.broadcast_to(mutated, truth.shape), truth):
                    return (
                        f"{name} is used in the wrong orientation: the claim holds with {name} and "
                        f"{name}.T swapped (the gradient flows back through the transpose of the forward map)"
                    )
    k = float(np.vdot(claimed, truth) / np.vdot(truth, truth))
    if abs(k - 1.0) > 1e-6 and abs(k) > 1e-12 and is_close(claimed, k * truth):
        for dim, n in sizes.items():
            if abs(k - n) < 1e-9 * n:
                return f"a constant factor of {dim} too many (a missing 1/{dim}?)"
            if abs(k * n - 1.0) < 1e-9:
                return f"a constant factor of 1/{dim} too many (a 1/{dim} that the loss does not have?)"
        return f"off by a constant factor: the claim is {k:.6g} times the gradient"
    for f in d.forward:
        applied = function_of(f.root)
        if applied is None:
            continue
        name, z = applied
        if z not in values or np.shape(values[z]) != truth.shape:
            continue
        fn = functions(name)
        with np.errstate(all="ignore"):
            fz = fn.derivative(values[z])
            fh = fn.derivative(values[f.name])
            if np.all(fz != 0) and is_close(claimed, truth / fz):
                return f"a missing factor {name}_prime({z}): the chain rule through {f.name} = {name}({z})"
            if is_close(claimed, truth * fz):
                return f"an extra factor {name}_prime({z})"
            if np.all(fz != 0) and is_close(claimed, truth / fz * fh):
                return (
                    f"{name}_prime({f.name}) used for {name}_prime({z}): the derivative must be taken "
                    f"at the pre-activation {z}, not at the activation {f.name}"
                )
    if evaluate_with is not None:
        return _swapped_gradient(d, claim_name, truth, values, evaluate_with)
    return None


def _swapped_gradient(d, claim_name, truth, values, evaluate_with) -> str | None:
    """The claim holds with one ``grad_u`` it reads replaced by another ``grad_v`` of the same shape:
    typically ``grad_h`` where ``grad_z = grad_h ⊙ f'(z)`` belongs, a step of the chain rule skipped."""
    claim = next((c for c in d.claims if c.name == claim_name), None)
    if claim is None:
        return None
    used = sorted(u for u in claim.uses if u.startswith("grad_") and u in values)
    for u in used:
        for v, value in values.items():
            if v == u or not v.startswith("grad_") or np.shape(value) != np.shape(values[u]):
                continue
            try:
                mutated = evaluate_with({u: value})
            except Exception:  # noqa: BLE001 - a mutation that does not evaluate explains nothing
                continue
            if is_close(np.broadcast_to(mutated, truth.shape), truth):
                step = _step_between(d, u[5:], v[5:])
                return f"{u} used where {v} belongs" + (f": {step}" if step else "")
    return None


def _step_between(d: Derivation, later: str, earlier: str) -> str | None:
    """``a missing factor f_prime(z)`` when ``later = f(earlier)`` is an element-wise step."""
    for f in d.forward:
        applied = function_of(f.root) if f.name == later else None
        if applied is not None and applied[1] == earlier:
            fn = applied[0]
            return (f"a missing factor {fn}_prime({earlier}), since grad_{earlier} = "
                    f"grad_{later} * {fn}_prime({earlier})")
    return None
