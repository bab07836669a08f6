"""What derive returns: steps, derived claims, the result and its TOML/JSON forms."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------
# results


@dataclass
class Step:
    """One consumer's contribution to a gradient."""

    through: str  # the consumer's name, or "E"
    definition: str  # its definition's text
    op: str  # the op at the root of the definition
    note: str  # the local Jacobian's structure, in words
    raw: str  # the adjoint templates' output, before rewriting
    simplified: str
    entry: str = ""  # for an index-form definition: the per-entry sum, in the file's indices
    jacobian: str = ""  # ∂through/∂v with its shape, e.g. "∂z/∂a, (m,) × (n,)"
    helper: str = ""  # a [backward] helper the step introduces: "gpad_y = pad(grad_y, ((K - 1, K - 1),))"

    def details(self) -> list[tuple[str, str]]:
        """The lines under the step's note, as (label, expression), for every format: the helper it
        introduces, the per-entry sum, and the unsimplified chain where it differs."""
        out = [("helper in [backward]", self.helper), ("per entry", self.entry)]
        if self.raw != self.simplified:
            out.append(("chain", self.raw))
        return [(label, text) for label, text in out if text]


@dataclass
class DerivedClaim:
    name: str
    target: str
    expr: str
    verdict: str = "error"
    message: str = ""
    steps: list[Step] = field(default_factory=list)
    shape: str = ""
    file_claim: str | None = None  # the file's own claim, if it makes one
    key: str = ""  # the [claims] key when it is not the name: "grad_w[f, c, p, q]" (index form)
    helpers: list[tuple[str, str]] = field(default_factory=list)  # the [backward] helpers it reads

    @property
    def toml_key(self) -> str:
        return self.key or self.name

    @property
    def ok(self) -> bool:
        return self.verdict == "proved"


@dataclass
class DeriveResult:
    path: str
    title: str
    claims: list[DerivedClaim] = field(default_factory=list)
    not_derived: dict[str, str] = field(default_factory=dict)  # target -> why not
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.not_derived and all(c.ok for c in self.claims)

    @property
    def helpers(self) -> dict[str, str]:
        """The [backward] helpers the derived claims read, in order."""
        return {name: text for c in self.claims for name, text in c.helpers}

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "backward": [{"name": n, "expr": e} for n, e in self.helpers.items()],
            "claims": [{"name": c.name, "expr": c.expr, "verdict": c.verdict, **({"key": c.key} if c.key else {})}
                       for c in self.claims],  # key: an index-form claim's [claims] key, "grad_w[k]"
            "not_derived": [{"name": f"grad_{t}", "reason": r} for t, r in self.not_derived.items()],
            "error": self.error,
        }

    def to_toml(self) -> str:
        lines = [f"# derived by `backpropcheck derive {self.path}`; each claim on its own step"]
        if self.helpers:  # before the claims, so the two tables paste into the file as they are
            lines.append("[backward]")
            lines += [f"{_toml_key(n)} = {json.dumps(e)}" for n, e in self.helpers.items()]
            lines.append("")
        lines.append("[claims]")
        width = max((len(_toml_key(c.toml_key)) for c in self.claims), default=0)
        for c in self.claims:
            lines.append(f"{_toml_key(c.toml_key).ljust(width)} = {json.dumps(c.expr)}  # {c.verdict}")
        for t, r in self.not_derived.items():
            lines.append(f"# grad_{t}: not derived ({r})")
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        from .render import render_markdown  # render imports this module

        return render_markdown(self)

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(f"<tr><td><code>{escape(c.name)}</code></td><td><code>{escape(c.expr)}</code></td>"
                       f"<td>{escape(c.verdict)}</td></tr>" for c in self.claims)
        rows += "".join(f"<tr><td><code>grad_{escape(t)}</code></td><td>not derived</td><td>{escape(r)}</td></tr>"
                        for t, r in self.not_derived.items())
        error = f"<p><b>error:</b> {escape(self.error)}</p>" if self.error else ""
        return (f"<p><b>{escape(self.title or self.path)}</b></p>{error}<table><tr><th>claim</th><th>expression</th>"
                f"<th>verdict</th></tr>{rows}</table>")


# ---------------------------------------------------------------------------
# the driver


def claim_name(key: str) -> str:
    """A [claims] key's gradient name: ``"grad_w[f, c, p, q]"`` → ``grad_w``."""
    return key.split("[", 1)[0].strip()


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _toml_key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def dump_toml(doc: dict[str, dict[str, Any]]) -> str:
    """A derivation document (tables of scalars, lists and inline tables) as TOML text."""
    out = []
    for table, items in doc.items():
        out.append(f"[{table}]")
        out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in items.items())
        out.append("")
    return "\n".join(out)


def _with_claims(doc: dict[str, Any], claims: dict[str, str], helpers: dict[str, str] | None = None) -> str:
    new = {k: v for k, v in doc.items() if k not in ("claims", "expect", "backward")}
    if helpers:
        new["backward"] = helpers
    new["claims"] = claims
    return dump_toml(new)


