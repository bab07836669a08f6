"""The run options that ``backpropcheck check`` and the pytest plugin share: one table, two spellings.

``check --trials 3`` is ``pytest --backpropcheck-trials 3``; the name, the type, the range (from
:data:`~backpropcheck.model.SETTING_RANGES`, the table the loader checks ``[check]`` against), the
default and the help are written once, here. Importing this module imports neither NumPy nor SymPy.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import SETTING_RANGES, range_text


@dataclass(frozen=True)
class RunOption:
    """One option: ``name`` is the keyword of :class:`~backpropcheck.checker.Options` (a flag's is
    negated: ``no_symbolic`` sets ``symbolic=False``)."""

    name: str
    kind: type  # int, float, or bool for a flag
    help: str
    default: Any = None
    metavar: str = ""
    bound: str | None = None  # the field of Limits that caps it ("max_trials")

    def help_text(self, bound_flag: bool) -> str:
        """The help; a capped option names its bound: the CLI's flag (``--max-trials``, ``bound_flag``),
        else the bound's default value (the plugin has no flags for bounds)."""
        if self.bound is None:
            return self.help
        from .limits import DEFAULT_LIMITS, Limits

        cap = Limits.flag(self.bound) if bound_flag else f"{vars(DEFAULT_LIMITS)[self.bound]:g}"
        return self.help.replace("{cap}", cap)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def bounds(self) -> tuple[float, float | None]:
        """The allowed range: the [check] table's for a setting; otherwise non-negative."""
        return SETTING_RANGES.get(self.name, (0, None))


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("seed", int, "Seed for every random draw (default: the file's, else 0).", metavar="INT"),
    RunOption("trials", int, "Numeric trials per file (default 20; at most {cap}).", metavar="INT", bound="max_trials"),
    RunOption("shapes", int, "Small dim assignments for the symbolic proof (default 3; at most {cap}).",
              metavar="INT", bound="max_shapes"),
    RunOption("max_dim", int, "Largest random dim (default 64).", metavar="INT"),
    RunOption("rtol", float, "Relative tolerance (default 1e-7, at most 1e-3).", metavar="FLOAT"),
    RunOption("atol", float, "Absolute tolerance (default 1e-12, at most 1e-6).", metavar="FLOAT"),
    RunOption("no_symbolic", bool, "Numeric trials only: verdicts are 'verified', not 'proved'.", False),
    RunOption("timeout", float, "CPU seconds of symbolic work per claim before it falls back to 'verified'.", 10.0,
              metavar="SECONDS"),
)

# explain's own ranges (its command and bpc.explain): it works symbolically, entry by entry, at small dims
EXPLAIN_MAX_DIM = 6
EXPLAIN_MAX_TRIALS = 1000


def option_values(get: Callable[[str], Any]) -> dict[str, Any]:
    """The keywords of :class:`~backpropcheck.checker.Options` from each option's value (``get(name)``)."""
    out: dict[str, Any] = {}
    for option in RUN_OPTIONS:
        value = get(option.name)
        if option.name == "no_symbolic":
            out["symbolic"] = not value
        else:
            out[option.name] = value
    return out


def checked(option: RunOption, text: str) -> int | float:
    """``text`` as the option's number, or ValueError saying why not (the plugin's argparse type)."""
    try:
        value = option.kind(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {option.kind.__name__}") from None
    low, high = option.bounds
    if not value >= low:  # NaN too
        raise ValueError(f"{text} is smaller than {low}")
    if high is not None and value > high:
        raise ValueError(f"{text} is larger than {high}")
    return value


def in_range(name: str, value: Any, high: float | None = None) -> Any:
    """``value`` for the keyword ``name`` of :class:`~backpropcheck.checker.Options` (an option's name, or
    ``symbolic`` for the flag) if it is the option's kind of value within the option's range (and at most
    ``high``, when given), as the option's number (an ``int`` for a NumPy integer); else ValueError naming
    the option and its range: the range the CLI's and the plugin's types enforce too."""
    if name == "symbolic":
        if not isinstance(value, bool):
            raise ValueError(f"symbolic must be True or False, not {value!r}")
        return value
    option = by_name()[name]
    low, top = option.bounds
    top = high if top is None else top if high is None else min(top, high)
    kind = numbers.Integral if option.kind is int else numbers.Real
    number = not isinstance(value, bool) and isinstance(value, kind)
    if not (number and value >= low and (top is None or value <= top)):  # NaN too
        what = "an integer" if option.kind is int else "a number"
        raise ValueError(f"{name} must be {what} {range_text(low, top)} (as {option.flag}), not {value!r}")
    return option.kind(value)


def parse_dims(dims: str | Mapping[str, Any] | None) -> tuple[tuple[str, int], ...]:
    """``--dims``'s value (``"n=4096,m=512"``), or the API's mapping (``{"n": 4096}``), as (name, size)
    pairs: each name an identifier, each size a positive integer; else ValueError saying which pair is not."""
    if not dims:
        return ()
    if isinstance(dims, str):
        pairs: list[tuple[str, Any]] = []
        for item in dims.split(","):
            name, sep, size = item.partition("=")
            if not sep or not name.strip().isidentifier():
                raise ValueError(f"expected NAME=SIZE pairs like n=4096,m=512, got {item!r}")
            try:
                pairs.append((name.strip(), int(size)))
            except ValueError:
                raise ValueError(f"{name.strip()}={size!r}: a size must be a positive integer") from None
    else:
        pairs = list(dims.items())
    for name, size in pairs:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{name!r}: a dim's name must be an identifier, as in n=4096")
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"{name}={size!r}: a size must be a positive integer")
    return tuple((name, int(size)) for name, size in pairs)


def by_name() -> Mapping[str, RunOption]:
    return {o.name: o for o in RUN_OPTIONS}
