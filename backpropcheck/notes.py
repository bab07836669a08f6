"""Derivations inside lecture notes: fenced Markdown blocks whose info string is ``toml backpropcheck``.

A block is checked exactly like a derivation file. It is named ``NOTES.md:LINE``,
LINE being the note's line of the block's first TOML line, and that name is
accepted wherever a file is (``backpropcheck check notes.md:12`` checks one
block): the reproduce command of a counterexample found in a note works as is.
Errors are located at the note's own line numbers.

Light on purpose: importing this module imports neither NumPy nor SymPy.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import DerivationError, LimitError
from .limits import DEFAULT_LIMITS, Limits, exceeded

INFO = ("toml", "backpropcheck")
SUFFIXES = (".md", ".markdown")
NOTE_FACTOR = 4  # a note is read up to NOTE_FACTOR × --max-file-bytes; each block is bounded by --max-file-bytes

_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_REF = re.compile(r"^(?P<path>.+\.(?:md|markdown)):(?P<line>[1-9][0-9]*)$", re.IGNORECASE)
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER = re.compile(r"^\s*\[\s*(?P<name>[^\]]+?)\s*\]")
_KEY = re.compile(r"""^\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[A-Za-z0-9_\-]+))\s*=""")


@dataclass(frozen=True)
class Block:
    """One ``toml backpropcheck`` block: ``line`` is the note's line (1-based) of its first TOML line."""

    line: int
    text: str
    closed: bool = True


def is_note(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` whose info string is ``toml backpropcheck`` (CommonMark fences)."""
    lines = text.splitlines()
    out: list[Block] = []
    k = 0
    while k < len(lines):
        match = _OPEN.match(lines[k])
        if not match or (match["fence"][0] == "`" and "`" in match["info"]):
            k += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        wanted = tuple(match["info"].split()[:2]) == INFO
        body: list[str] = []
        closed = False
        j = k + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if (len(lines[j]) - len(lines[j].lstrip(" ")) <= 3 and stripped.startswith(fence)
                    and set(stripped) == {fence[0]}):
                closed = True
                break
            body.append(_dedent(lines[j], indent))
            j += 1
        if wanted:
            out.append(Block(k + 2, "\n".join(body) + "\n", closed))
        k = j + 1
    return out


def _dedent(line: str, indent: int) -> str:
    removable = len(line) - len(line.lstrip(" "))
    return line[min(indent, removable):]


def read_note(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> str:
    """The note's text, read with a bound; :class:`DerivationError` if it cannot be read."""
    name = str(path)
    bound = NOTE_FACTOR * limits.max_file_bytes
    try:
        info = Path(path).stat()
        if not stat.S_ISREG(info.st_mode):
            raise DerivationError("not a regular file (a device, FIFO or socket?)", file=name)
        if info.st_size > bound:
            raise LimitError(exceeded("the note's size in bytes", info.st_size, "max_file_bytes", limits, NOTE_FACTOR),
                             file=name)
        with Path(path).open("rb") as handle:
            data = handle.read(bound + 1)
    except OSError as exc:
        raise DerivationError(f"cannot read the file: {exc.strerror or exc}", file=name) from None
    if len(data) > bound:
        raise LimitError(exceeded("the note's size in bytes", len(data), "max_file_bytes", limits, NOTE_FACTOR),
                         file=name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        from .loader import not_utf8

        raise not_utf8(data, exc, name) from None
    return text.removeprefix("\ufeff")


def refs(path: str | Path, explicit: bool = True, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """The names ``NOTE:LINE`` of a note's blocks, in order.

    A note that cannot be read is returned as itself (checking it reports why) when it
    was named (``explicit``) or when it may hold a block; a note without blocks gives
    nothing: a README is not a derivation.
    """
    try:
        text = read_note(path, limits)
    except DerivationError:
        if explicit or _may_hold_a_block(path, limits):
            return [str(path)]
        return []
    return [f"{path}:{b.line}" for b in blocks(text)]


def _may_hold_a_block(path: str | Path, limits: Limits) -> bool:
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(NOTE_FACTOR * limits.max_file_bytes)
    except OSError:
        return True  # unreadable: say so rather than skip it
    return b"backpropcheck" in head


def split_ref(name: str) -> tuple[str, int] | None:
    """``notes.md:12`` → (``notes.md``, 12); None for anything else (or for a file really named so)."""
    match = _REF.match(name)
    if match is None or Path(name).exists():
        return None
    return match["path"], int(match["line"])


def load_ref(name: str, limits: Limits = DEFAULT_LIMITS, display: str | None = None):
    """Load the block ``NOTE:LINE`` (or a note named without a line, when it holds exactly one block).

    ``display`` names the note in reports (default: as given)."""
    return load_block(*find_block(name, limits, display), limits)


def load_block(path: str, block: Block, limits: Limits = DEFAULT_LIMITS):
    """Load one block of the note ``path``, every error located at the note's own lines; an unclosed block
    is an error of its own."""
    from .loader import loads

    _closed(path, block)
    try:
        d = loads(block.text, f"{path}:{block.line}", limits)
    except DerivationError as exc:
        raise relocate(exc, path, block) from None
    for claim in d.claims:
        if claim.error is not None:
            relocate(claim.error, path, block)
    return d


def find_block(name: str, limits: Limits = DEFAULT_LIMITS, display: str | None = None) -> tuple[str, Block]:
    """The note's name in reports and the closed block that ``NOTE:LINE`` (or a note holding one block)
    names; :class:`DerivationError` when there is no such block. Errors met reading the block's text
    are located at the note's lines by :func:`relocate`."""
    ref = split_ref(name)
    source, line = ref if ref is not None else (name, None)
    if display is not None:
        display_ref = split_ref(display)
        path = display_ref[0] if display_ref is not None else display
    else:
        path = source
    try:
        found = blocks(read_note(source, limits))
    except DerivationError as exc:
        exc.file = path
        raise
    if line is None:
        if len(found) != 1:
            lines = ", ".join(str(b.line) for b in found)
            raise DerivationError(f"the note has {len(found)} ```toml backpropcheck blocks"
                                  + (f" (at lines {lines}): name one as {path}:LINE" if found else ""), file=path)
        line = found[0].line
    block = next((b for b in found if b.line == line), None)
    if block is None:
        starts = ", ".join(str(b.line) for b in found) or "none"
        raise DerivationError(f"no ```toml backpropcheck block starts at line {line} (blocks start at lines "
                              f"{starts})", file=path)
    _closed(path, block)
    return path, block


def _closed(path: str, block: Block) -> None:
    """:class:`DerivationError` for a block whose fence is never closed (its text runs to the note's end)."""
    if not block.closed:
        raise DerivationError(f"the ```toml backpropcheck block opened at line {block.line - 1} is never closed",
                              file=f"{path}:{block.line - 1}")


def relocate(exc: DerivationError, path: str, block: Block) -> DerivationError:
    """Name the note's own line: ``notes.md:23`` for the key's line, and TOML's "at line N" shifted."""
    exc.message = _TOML_AT.sub(lambda m: f"(at line {block.line + int(m[1]) - 1}, column {m[2]})", exc.message)
    shifted = _TOML_AT.search(exc.message)
    if shifted:
        line = int(shifted[1])
    else:
        line = block.line + (key_line(block.text, exc.key) if exc.key else 0)
    exc.file = f"{path}:{line}"
    return exc


def key_line(text: str, key: str) -> int:
    """The 0-based line of ``table.key`` (or of ``[table]``) in a TOML text; 0 when it cannot be found."""
    table, _, rest = key.partition(".")
    wanted = _key_name(rest)
    current = None
    header = None
    for k, line in enumerate(text.splitlines()):
        match = _HEADER.match(line)
        if match and not line.lstrip().startswith("[["):
            current = match["name"].strip()
            if current == table:
                header = k
                if not wanted:
                    return k
            continue
        if current == table and wanted:
            m = _KEY.match(line)
            if m and (m["dq"] if m["dq"] is not None else m["sq"] if m["sq"] is not None else m["bare"]) == wanted:
                return k
    return header if header is not None else 0


def _key_name(rest: str) -> str:
    """The first key after the table: ``z[j]`` from ``z[j]``, ``Y`` from ``Y.domain``."""
    if not rest:
        return ""
    if "[" in rest.split(".")[0]:
        return rest if "." not in rest.split("]")[-1] else rest[:rest.rindex("]") + 1]
    return rest.split(".")[0]
