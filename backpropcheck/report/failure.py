"""One failure, one list of fragments: what every format shows of a claim that is not ok.

The fragments come in reading order — what was claimed, the message, the diagnosis, the
counterexample — and the counterexample ends with the command that reproduces it (as
Hypothesis's failure reports do). Text, JUnit, Markdown and the pytest plugin each render the
same list; only the styling (indent, escaping, code spans) is theirs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..results import ClaimResult, Counterexample, true_and_claimed


@dataclass(frozen=True)
class Fragment:
    """One line of a failure: ``label: text`` (no label: the text alone); ``code`` marks a command
    or an expression, which a format may put in a code span."""

    kind: str  # claim | message | diagnosis | where | values | expression | reproduce | uses
    text: str
    label: str = ""
    code: bool = False

    def line(self) -> str:
        return f"{self.label}: {self.text}" if self.label else self.text


def counterexample_fragments(cex: Counterexample | None, values_sep: str = ", ") -> list[Fragment]:
    """Where (trial, dims, seed, entry), the values, the true entry per neuron, and — last — the
    reproduce command. ``values_sep`` separates the true and the claimed value."""
    if cex is None:
        return []
    dims = ", ".join(f"{k}={v}" for k, v in cex.dims.items())
    where = f"trial {cex.trial}, " if isinstance(cex.trial, int) else ""
    out = [Fragment("where", f"{where}dims {dims}, seed {cex.seed}, entry {cex.index}", "counterexample")]
    if cex.true == cex.true:  # not NaN: the symbolic engine gives no numbers
        out.append(Fragment("values", true_and_claimed(cex.true, cex.claimed, values_sep)))
    if cex.expression:
        out.append(Fragment("expression", cex.expression, "true entry, per neuron", code=True))
    out.append(Fragment("reproduce", cex.command, "reproduce", code=True))
    return out


def depends_fragment(c: ClaimResult) -> list[Fragment]:
    if not c.depends_on_refuted:
        return []
    return [Fragment("uses", f"uses {', '.join(c.depends_on_refuted)}, whose own claim is refuted")]


def failure_fragments(c: ClaimResult, path: str) -> list[Fragment]:
    """Everything a reader needs to act on a claim that is not ok, one fact per fragment; a claim
    without a counterexample is reproduced by checking its file verbosely."""
    out = [Fragment("claim", f"{c.name} = {c.expr} (expected {c.expected})", str(c.verdict)),
           Fragment("message", c.message)]
    if c.diagnosis:
        out.append(Fragment("diagnosis", c.diagnosis, "diagnosis"))
    out += counterexample_fragments(c.counterexample)
    if c.counterexample is None:
        out.append(Fragment("reproduce", shlex.join(["backpropcheck", "check", path, "-v"]), "reproduce", code=True))
    return out + depends_fragment(c)


def failure_text(c: ClaimResult, path: str) -> str:
    """:func:`failure_fragments` as plain lines (JUnit's failure body, the pytest plugin's report)."""
    return "\n".join(f.line() for f in failure_fragments(c, path))
