"""``--output FILE``: the report appears whole or not at all, and a link planted at FILE is never followed.

The report is written to a temporary file in FILE's folder and renamed over FILE, so a full
disk, a file-size limit (``ulimit -f``) or a crash leaves the previous FILE (or none) and no
truncated report. ``rename`` replaces a symbolic link at FILE itself: its target is never
written. A FILE that exists and is not a regular file or a link (``/dev/stdout``,
``/dev/null``, a FIFO) cannot be renamed over; it is written directly.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import TextIO


class OutputError(Exception):
    """The report could not be written; the message says where and why (no traceback, exit 2)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _special(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode))


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """A UTF-8 text stream whose content replaces ``path`` once the block has finished without error."""
    display = os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")
    if _special(path):
        try:
            with open(path, "w", encoding="utf-8", errors="backslashreplace") as fh:
                yield fh
        except OSError as exc:
            raise OutputError(f"cannot write the report to {display}: {exc.strerror or exc}") from None
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".backpropcheck-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write the report to {display}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would differ from what open() makes
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise OutputError(f"cannot write the report to {display}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
