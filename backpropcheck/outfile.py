"""``--output FILE``: the report appears whole or not at all, and a link planted at FILE is never followed.

The report is written to a temporary file in FILE's folder and renamed over FILE, so a full
disk, a file-size limit (``ulimit -f``) or a crash leaves the previous FILE (or none) and no
truncated report. ``rename`` replaces a symbolic link at FILE itself: its target is never
written. FILE is written in place when renaming over it would be wrong: a device or
FIFO (``/dev/null``, ``/dev/full``), a link to this process's own stream
(``/dev/stdout`` → ``/proc/self/fd/1``), anything in /dev or /proc.
"""

from __future__ import annotations

import contextlib
import os
import re
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


def _mode(path: str) -> int:
    """An existing report's permissions (not a link's target's), else what ``open(path, "w")`` would give."""
    try:
        info = os.lstat(path)
    except OSError:
        return 0o666 & ~_umask()
    return stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else 0o666 & ~_umask()


_OWN_STREAM = re.compile(r"/(proc/self|proc/thread-self|dev)/fd/[0-9]+")


def _direct(path: str) -> bool:
    """Whether ``path`` is written in place: a device, FIFO or socket named as such (``/dev/null``,
    ``/dev/full``), a link to one of this process's own open streams (``/dev/stdout`` is a link to
    ``/proc/self/fd/1``: replacing it would break every program), or anything in /dev or /proc.
    Any other link is replaced by the report, never followed."""
    absolute = os.path.abspath(path)
    if absolute.startswith(("/dev/", "/proc/")):
        return True
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode):
        target = os.path.normpath(os.path.join(os.path.dirname(absolute), os.readlink(path)))
        return bool(_OWN_STREAM.fullmatch(target))
    return not stat.S_ISREG(info.st_mode)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """A UTF-8 text stream whose content replaces ``path`` once the block has finished without error."""
    display = os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")
    if _direct(path):
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
        os.chmod(temporary, _mode(path))  # mkstemp's 0600 would differ from what open() makes
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise OutputError(f"cannot write the report to {display}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
