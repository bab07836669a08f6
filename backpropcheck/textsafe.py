"""Text from a file (titles, expressions, messages, file names) shown as text, never as terminal commands.

A title may hold ``\\x1b]0;…`` or ``\\x1b[2J`` (escape sequences a terminal obeys), a carriage
return that overwrites the line before it, bidirectional overrides that reorder what is read,
and a file name that is not UTF-8 arrives as lone surrogates (``os.fsdecode``) that no
UTF-8 stream can encode. :func:`visible` writes each of them as a backslash escape.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates, lone surrogates
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every character that a terminal would act on (or that UTF-8 cannot carry) escaped."""
    return _HIDDEN.sub(_escape, text)
