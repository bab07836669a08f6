"""Bounds on everything a derivation file controls, so hostile input stays cheap.

Each bound has a default and a ``check`` flag that raises it; the error that
reports a bound names both (see :func:`exceeded`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 256 * 1024
    max_dims: int = 16
    max_inputs: int = 64
    max_definitions: int = 128
    max_claims: int = 64
    max_rank: int = 4
    max_expr_chars: int = 2000
    max_depth: int = 64
    max_literal: float = 1e6
    max_exponent: float = 16.0
    max_dim: int = 8192
    max_entries: int = 50_000_000

    @staticmethod
    def flag(field_name: str) -> str:
        return "--" + field_name.replace("_", "-")


DEFAULT_LIMITS = Limits()

LIMIT_FIELDS = tuple(f.name for f in fields(Limits))


def exceeded(what: str, value: object, field_name: str, limits: Limits) -> str:
    """The message for a crossed bound: what, the limit, and the flag that raises it."""
    limit = getattr(limits, field_name)
    return f"{what} ({value}) exceeds the limit of {limit}; raise it with {Limits.flag(field_name)}"
