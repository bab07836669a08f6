"""Reporters: the same results as rich text, JSON, JUnit XML or Markdown. Nothing below the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass

from ..results import ClaimResult, FileResult


@dataclass
class Summary:
    files: int
    claims: int
    ok: int
    failed: int
    errors: int

    @staticmethod
    def of(results: list[FileResult]) -> Summary:
        claims = [c for r in results for c in r.claims]
        file_errors = sum(1 for r in results if r.status == "error" and not r.claims)
        return Summary(
            files=len(results),
            claims=len(claims),
            ok=sum(1 for c in claims if c.ok),
            failed=sum(1 for c in claims if not c.ok and c.verdict != "error"),
            errors=file_errors + sum(1 for c in claims if c.verdict == "error"),
        )


def verdict_label(c: ClaimResult) -> str:
    """``proved (all shapes)`` or ``proved (at n=2,m=3; n=3,m=2)`` (SPEC §8); other verdicts as they are."""
    if c.verdict != "proved" or not c.symbolic or "scope" not in c.symbolic:
        return c.verdict
    if c.symbolic["scope"] == "all-shapes":
        return "proved (all shapes)"
    shapes = "; ".join(",".join(f"{k}={v}" for k, v in s.items()) for s in c.symbolic.get("shapes", []))
    return f"proved (at {shapes})" if shapes else "proved (sampled shapes)"


def exit_status(results: list[FileResult]) -> int:
    """0 every claim holds or matches [expect]; 1 some claim does not; 2 an invalid file or claim."""
    if any(r.status == "error" for r in results):
        return 2
    if any(not c.ok for r in results for c in r.claims):
        return 1
    return 0
