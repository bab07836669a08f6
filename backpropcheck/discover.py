"""Which files are derivations: shared by ``check --only-derivations`` (the pre-commit hook) and the pytest plugin.

Light on purpose: importing this module imports neither NumPy nor SymPy.
"""

from __future__ import annotations

import difflib
import stat
import tomllib
from pathlib import Path

from .limits import DEFAULT_LIMITS, Limits
from .notes import is_note, split_ref

# the tables of a derivation file (loader.TABLES, without importing the loader)
TABLES = ("derivation", "dims", "inputs", "functions", "forward", "loss", "backward", "claims", "expect", "check")


def looks_like_derivation(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Whether ``backpropcheck check`` should judge this file rather than leave it to another tool.

    A note's block (``notes.md:12``) is a derivation. A ``*.toml`` file is someone else's (a
    ``pyproject.toml``) only when it reads, parses and holds none of a derivation's tables nor a
    near-miss of one (``[derivaton]``, ``[claim]``). An empty file, a file that does not parse,
    cannot be read or is too large to read is a derivation that fails, saying why, so a broken
    derivation is never skipped. The size is checked before anything is read.
    """
    name = str(path)
    if split_ref(name) is not None:
        return True
    if is_note(name):
        return True  # refs() already left out a note without blocks
    try:
        info = Path(path).stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > limits.max_file_bytes:
            return True
        with Path(path).open("rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
        doc = tomllib.loads(data.decode("utf-8").removeprefix("\ufeff"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return True  # let the check report why it cannot be read
    if not doc:
        return True
    return any(table in TABLES or difflib.get_close_matches(table, TABLES, n=1, cutoff=0.75) for table in doc)
