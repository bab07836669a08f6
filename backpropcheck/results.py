"""What a check produces: verdicts, counterexamples, per-claim and per-file results, and the
typed evidence the engines hand the checker's judgement.

``ClaimResult`` and ``FileResult`` are the public objects (the JSON report is their fields);
``NumericEvidence`` and ``SymbolicEvidence`` are the checker's working records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engines.numeric import NumericRun


class Verdict(StrEnum):
    """A claim's verdict; a ``str``, so ``verdict == "proved"`` and the JSON report read as before."""

    PROVED = "proved"
    VERIFIED = "verified"
    REFUTED = "refuted"
    SHAPE_ERROR = "shape-error"
    ERROR = "error"

    @property
    def holds(self) -> bool:
        """``proved`` or ``verified``: the claim agrees with the true gradient."""
        return self in (Verdict.PROVED, Verdict.VERIFIED)


@dataclass
class Counterexample:
    """Where a claim differs from the true gradient, and the command that shows it again."""

    dims: dict[str, int]
    seed: int
    trial: int | str  # a numeric trial, "small" (re-found at small dims) or "symbolic"
    index: list[int]
    true: float  # NaN when the symbolic engine gives no numbers
    claimed: float
    expression: str | None  # the true entry, per neuron
    command: str  # the reproduce command


@dataclass
class ClaimResult:
    name: str
    expr: str
    verdict: Verdict
    expected: str
    ok: bool
    message: str
    symbolic: dict[str, Any] | None = None
    numeric: dict[str, Any] | None = None
    counterexample: Counterexample | None = None
    diagnosis: str | None = None
    depends_on_refuted: list[str] = field(default_factory=list)


@dataclass
class FileResult:
    path: str
    title: str
    status: str  # passed | failed | error
    error: str | None
    claims: list[ClaimResult] = field(default_factory=list)
    seconds: float = 0.0


# -- evidence: what the engines found, before the judgement -------------------------------------------


@dataclass
class NumericFailure:
    """The first trial where a claim differed beyond tolerance and beyond rounding."""

    trial: int
    sizes: dict[str, int]
    index: tuple[int, ...]
    run: NumericRun


@dataclass
class Rounding:
    """Trials where the claim's float64 value was off by no more than its evaluation's rounding."""

    count: int = 0
    worst: float = 0.0
    bound: float = 0.0
    ties: int = 0  # trials where a comparison met operands within rounding of each other (Checker._near_tie)
    overflows: int = 0  # trials where the claim's float64 value was NaN or ±inf and the true gradient finite


@dataclass
class NumericEvidence:
    """One claim's numeric trials: how many agreed, the largest errors, and a failure or an error."""

    trials: int = 0
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    failure: NumericFailure | None = None
    error: str | None = None
    rounding: Rounding | None = None
    tie_failure: NumericFailure | None = None  # the first disagreement at a comparison within rounding of a tie
    overflow_failure: NumericFailure | None = None  # the first trial where float64 overflowed in the claim alone

    def summary(self) -> dict[str, Any]:
        """The report's ``numeric`` object."""
        return {"trials": self.trials, "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err}


@dataclass
class SymbolicRefutation:
    """A nonzero exact difference at one entry, with the point that shows it (when one was found)."""

    index: list[int]
    difference: float | None  # the exact difference (a nonzero number)
    expression: str
    point: str | None = None
    true: float = float("nan")
    claimed: float = float("nan")
    domains: str | None = None


@dataclass
class Undecided:
    """The symbolic engine could not tell whether an entry's difference is zero."""

    why: str


Decision = SymbolicRefutation | Undecided | None  # None: every entry proved equal


@dataclass
class SymbolicEvidence:
    """One claim's symbolic check over the small dim assignments (and the proof scope, SPEC §8).

    ``status``: proved | skipped | gave-up | timeout | undecided | counterexample."""

    status: str = "proved"
    shapes: list[dict[str, int]] = field(default_factory=list)
    seconds: float = 0.0
    reason: str | None = None
    sizes: dict[str, int] | None = None  # of the counterexample
    refutation: SymbolicRefutation | None = None
    scope: str | None = None
    argument: str | None = None

    def stop(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def summary(self) -> dict[str, Any]:
        """The report's ``symbolic`` object (without ``reason``, which only ``verified`` adds)."""
        out: dict[str, Any] = {"shapes": self.shapes, "seconds": round(self.seconds, 4)}
        if self.scope is not None:
            out["scope"] = self.scope
        if self.argument is not None:
            out["argument"] = self.argument
        return out


def true_and_claimed(true: float, claimed: float, sep: str = ", ") -> str:
    """``true 0.58951400012, claimed 0.58951400000``: as many digits as it takes for two different
    values to print differently (6 at least, 17 at most)."""
    digits = 6
    while digits < 17 and true != claimed and f"{true:.{digits}g}" == f"{claimed:.{digits}g}":
        digits += 1
    return f"true {true:.{digits}g}{sep}claimed {claimed:.{digits}g}"
