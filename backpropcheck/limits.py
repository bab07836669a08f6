"""Bounds on everything a derivation file controls, so hostile input stays cheap.

Each bound has a default and a ``check`` flag that raises it; the error that
reports a bound names both (see :func:`exceeded`).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 256 * 1024
    max_dims: int = 16
    max_inputs: int = 64
    max_definitions: int = 128
    max_claims: int = 64
    max_functions: int = 64
    max_rank: int = 8  # a 2x2 max-pool reshapes to rank 5; a conv2d's index space has 7-8 axes (SPEC §6.2)
    max_expr_chars: int = 2000
    max_depth: int = 64
    max_literal: float = 1e10  # -1e9, the usual masking value before a softmax, fits
    max_exponent: float = 16.0
    max_dim: int = 8192
    max_entries: int = 200_000_000  # about 1.6 GB of float64; --dims n=4096,m=4096 needs 5e7
    max_total_entries: int = 2_000_000_000  # about a minute of NumPy work
    max_flops: int = 2_000_000_000_000  # multiply-adds of products over a file's trials: ~1 min of BLAS
    max_symbolic_entries: int = 100_000
    max_trials: int = 10_000
    max_shapes: int = 20
    file_timeout: float = 120.0  # wall-clock seconds per file, all stages (the worker is killed past it)
    max_memory: int = 4096  # MB of address space per file's worker (RLIMIT_AS above its start)

    def __post_init__(self) -> None:
        """A bound is what its flag accepts (:func:`bound_range`), so no ``Limits`` the API is given
        holds a value the command line refuses."""
        for name in LIMIT_FIELDS:
            value: Any = vars(self)[name]
            kind, low = bound_range(name)
            if kind is int:
                valid = isinstance(value, numbers.Integral) and int(value) >= low
            else:
                valid = isinstance(value, numbers.Real) and float(value) > low  # not NaN
            if isinstance(value, bool) or not valid:
                what = f"an integer, at least {low}" if kind is int else f"a number greater than {low}"
                raise ValueError(f"the bound {name} ({Limits.flag(name)}) must be {what}, not {value!r}")

    @staticmethod
    def flag(field_name: str) -> str:
        """The ``check`` option that raises a bound (``--max-dim`` is taken by the random-dim range)."""
        return FLAGS.get(field_name, "--" + field_name.replace("_", "-"))


# --max-dim already means "largest random dim"; its hard cap (also on --dims values) is --dim-limit.
FLAGS = {"max_dim": "--dim-limit"}

# One line per bound: the --help text of its flag and the README's "Bounds" section.
DESCRIPTIONS = {
    "max_file_bytes": "size of a derivation file, in bytes",
    "max_dims": "number of names in [dims]",
    "max_inputs": "number of names in [inputs]",
    "max_definitions": "number of [forward] plus [backward] definitions",
    "max_claims": "number of claims in [claims]",
    "max_functions": "number of generic functions in [functions]",
    "max_rank": "rank of an input, of ones/zeros/eye, and of every intermediate value",
    "max_expr_chars": "characters in one expression",
    "max_depth": "nesting depth of an expression (brackets and syntax tree)",
    "max_literal": "absolute value of a numeric literal",
    "max_exponent": "absolute value of an exponent in x ** k",
    "max_dim": "largest dim size: --max-dim, --dims, [check] max_dim and literal dims/offsets",
    "max_entries": "entries of all tensors, intermediate values and index/einsum spaces at the drawn dims",
    "max_total_entries": "entries of all arrays summed over a file's numeric trials (its numeric work)",
    "max_symbolic_entries": "entries of all arrays at the small symbolic dims (one SymPy expression each)",
    "max_trials": "numeric trials per file (--trials or [check] trials)",
    "max_shapes": "symbolic dim assignments per file (--shapes or [check] shapes)",
    "max_flops": "multiply-adds of every matrix product and einsum summed over a file's numeric trials",
    "file_timeout": "wall-clock seconds for one file, all stages (load, numeric, symbolic, localisation)",
    "max_memory": "megabytes of memory one file's check may allocate (an OS limit on its worker process)",
}

LIMIT_FIELDS = tuple(f.name for f in fields(Limits))


def bound_range(name: str) -> tuple[type, int]:
    """The values the bound ``name`` takes, as its flag and :class:`Limits` check them: a count (an int
    default) is an integer ≥ 1 (``(int, 1)``), any other bound a number > 0 (``(float, 0)``)."""
    return (int, 1) if isinstance(vars(Limits)[name], int) else (float, 0)


DEFAULT_LIMITS = Limits()


def exceeded(what: str, value: object, field_name: str, limits: Limits, times: int = 1) -> str:
    """The message for a crossed bound: what, the limit (``times`` the bound, as for a note: 4 × the file
    bound), and the flag that raises it."""
    limit, flag = asdict(limits)[field_name], Limits.flag(field_name)
    shown = f"{times * limit} ({times} × {flag} {limit})" if times != 1 else f"{limit}"
    return f"{what} ({value}) exceeds the limit of {shown}; raise it with {flag}"
