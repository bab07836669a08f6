"""Time and memory: the CPU-time budget of symbolic work, and the messages of a file past its
wall-clock or memory bound (here, or from the runner that ended its worker)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import Any

from .errors import DerivationError
from .limits import Limits, exceeded


class SymbolicTimeout(Exception):
    pass


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise :class:`SymbolicTimeout` inside the block after ``seconds`` of this process's CPU time.

    SymPy is pure Python, so the signal lands between bytecodes. CPU time, not wall time
    (ITIMER_PROF): a loaded machine or ``--jobs`` must not turn ``proved`` into ``verified``.
    The timer ticks with the scheduler (a few ms), so a block that finishes past its budget before
    the first tick raises at its end: a budget below a tick holds too. Without setitimer, or off the
    main thread, there is no budget."""
    usable = (
        seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return
    started, thread_started = time.process_time(), time.thread_time()
    with repeating_alarm(signal.ITIMER_PROF, signal.SIGPROF, seconds, SymbolicTimeout):
        yield
    # both clocks count CPU this block used; a sandbox may update the process clock only at its ticks
    if max(time.process_time() - started, time.thread_time() - thread_started) > seconds:
        raise SymbolicTimeout()


@contextlib.contextmanager
def repeating_alarm(timer: int, signum: int, seconds: float, exception: type[BaseException]) -> Iterator[None]:
    """Raise ``exception()`` in the block once ``timer`` has run ``seconds``, and again every 10 ms after.

    A raise that lands inside a ``__del__``, a weakref or a gc callback cannot propagate: Python hands it
    to ``sys.unraisablehook`` ("Exception ignored in ...") and the block goes on, so the alarm repeats
    until one lands in the block itself. Those swallowed raises are this alarm's own business: while the
    block runs, the hook drops them (a user would see "Exception ignored" on stderr, pytest a failed
    test) and passes every other unraisable exception on; no alarm raises inside the hook."""
    armed = [True]
    previous_hook = sys.unraisablehook

    def drop_own_alarms(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, exception):
            previous_hook(unraisable)

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if armed[0] and not _inside(frame, drop_own_alarms.__code__):
            raise exception()

    previous = signal.signal(signum, on_alarm)
    sys.unraisablehook = drop_own_alarms
    signal.setitimer(timer, seconds, 0.01)
    try:
        yield
    finally:
        while armed[0]:
            try:
                armed[0] = False  # from here on a late tick is ignored
            except exception:  # a tick that landed just before: disarm again
                continue
        signal.setitimer(timer, 0)
        signal.signal(signum, previous)
        sys.unraisablehook = previous_hook


def _inside(frame: FrameType | None, code: CodeType) -> bool:
    """Whether a frame of ``code`` is on the stack that ``frame`` tops."""
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def remaining(budget: float, spent: float) -> float:
    """What is left of a budget (0 means no budget at all); an exhausted one expires at once."""
    return max(budget - spent, 1e-6) if budget > 0 else 0.0


def out_of_memory(path: str, limits: Limits) -> str:
    what = "the memory this file's check needs, in MB"
    return f"{path}: ran out of memory: " + exceeded(what, f"over {limits.max_memory}", "max_memory", limits)


def timed_out(path: str, seconds: float, limits: Limits, stage: str = "", predicted: bool = False) -> str:
    """The message for a file past ``--file-timeout`` (here, or from the runner that killed its worker)."""
    what = f"the wall-clock time of this file{stage}"
    value = f"{seconds:.1f} s" + (", predicted from the trials so far" if predicted else "")
    return f"{path}: " + exceeded(what, value, "file_timeout", limits)


class FileTimeout(DerivationError):
    pass
