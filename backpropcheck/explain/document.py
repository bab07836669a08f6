"""The document ``explain`` builds: headings, paragraphs, formulas and grids that every renderer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checker import ClaimResult
from .tex import tex_text


@dataclass
class Math:
    """One formula, in Unicode for terminals and in LaTeX for notes."""

    text: str
    tex: str
    code: bool = False  # expression-language source: `code` in markdown, \texttt in LaTeX


def code(text: str) -> Math:
    """A piece of the expression language, shown verbatim."""
    return Math(text, r"\texttt{" + tex_text(text) + "}", code=True)


Segment = str | Math


@dataclass
class Grid:
    """Entries of the true gradient next to the claim's, mismatches flagged."""

    caption: str
    true: list[list[str]]
    claimed: list[list[str]]
    bad: list[list[bool]]
    ratio: list[list[str]] = field(default_factory=list)  # claimed ÷ true: a constant or a pattern shows a factor


@dataclass
class Block:
    """One heading, paragraph, display formula or grid."""

    kind: str  # heading | para | math | grid
    parts: list[Segment] = field(default_factory=list)
    level: int = 2
    grid: Grid | None = None


@dataclass
class Explanation:
    """The generated walk-through of a file: blocks that every renderer reads."""

    title: str
    path: str
    sizes: dict[str, int]
    blocks: list[Block] = field(default_factory=list)
    results: list[ClaimResult] = field(default_factory=list)  # the verdicts of the explained claims
    error: str | None = None  # why the file could not be checked, if it could not

    def heading(self, text: str, level: int = 2, *more: Segment) -> None:
        self.blocks.append(Block("heading", [text, *more], level))

    def para(self, *parts: Segment) -> None:
        self.blocks.append(Block("para", list(parts)))

    def math(self, m: Math) -> None:
        self.blocks.append(Block("math", [m]))

    def add_grid(self, grid: Grid) -> None:
        self.blocks.append(Block("grid", grid=grid))


def select(e: Explanation, sections: str, claims: set[str] | None = None) -> Explanation:
    """Keep only the numbered parts ``sections`` (e.g. ``"12"``) of the chosen claims."""
    out = Explanation(e.title, e.path, e.sizes)
    keep_claim, keep_part = True, "2" in sections  # the preamble states the layout: keep it with the route
    for b in e.blocks:
        if b.kind == "heading" and b.level == 2:
            name = str(b.parts[0]).split(" = ")[0]
            keep_claim = claims is None or name in claims
            keep_part = True
            if keep_claim:
                out.blocks.append(b)
            continue
        if b.kind == "heading" and b.level == 3:
            keep_part = str(b.parts[0])[:1] in sections
        if keep_claim and keep_part:
            out.blocks.append(b)
    return out

