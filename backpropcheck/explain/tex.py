"""The one LaTeX escaper: prose and expression-language source into pdflatex-safe text."""

from __future__ import annotations

# Unicode math signs spelled out, LaTeX specials escaped; any other non-ASCII character becomes "?"
_SPELLED = {"∂": r"$\partial$", "∇": r"$\nabla$", "ᵀ": r"$^\top$", "⊙": r"$\odot$", "Σ": r"$\Sigma$",
            "·": r"$\cdot$", "×": r"$\times$", "→": r"$\to$", "—": "---", "–": "--", "∈": r"$\in$",
            "•": r"$\bullet$", "✓": "ok", "✗": "x", "≤": r"$\le$", "≥": r"$\ge$", "’": "'", "‘": "`",
            "“": "``", "”": "''", "…": "...", "ε": r"$\varepsilon$", "σ": r"$\sigma$", "μ": r"$\mu$",
            "\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            **{ch: "\\" + ch for ch in "&%$#_{}"}}


def tex_text(text: str) -> str:
    """Plain prose into LaTeX: specials escaped, Unicode math signs spelled out (pdflatex-safe)."""
    return "".join(_SPELLED.get(ch, ch if ord(ch) < 128 else "?") for ch in text)


def ascii_tex(tex: str) -> str:
    """LaTeX source with any non-ASCII character left by a printer replaced (pdflatex-safe)."""
    return "".join(ch if ord(ch) < 128 else "?" for ch in tex)
