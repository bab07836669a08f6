"""Time and memory: the CPU-time budget of symbolic work, and the messages of a file past its
wall-clock or memory bound (here, or from the runner that ended its worker)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from .errors import DerivationError
from .limits import Limits, exceeded


class SymbolicTimeout(Exception):
    pass


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise :class:`SymbolicTimeout` inside the block after ``seconds`` of this process's CPU time.

    SymPy is pure Python, so the signal lands between bytecodes. CPU time, not wall time
    (ITIMER_PROF): a loaded machine or ``--jobs`` must not turn ``proved`` into ``verified``.
    Without setitimer, or off the main thread, there is no budget."""
    usable = (
        seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    # The alarm repeats every 10 ms of CPU after the budget: a raise that lands inside a __del__, a
    # weakref or gc callback is swallowed by Python ("Exception ignored in ..."), and must not end the
    # budget (with a 0.1 s repeat a small proof could finish in the gap, past its budget).
    armed = [True]

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if armed[0]:
            raise SymbolicTimeout()

    previous = signal.signal(signal.SIGPROF, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.01)
    try:
        yield
    finally:
        while armed[0]:
            try:
                armed[0] = False  # from here on a late tick is ignored
            except SymbolicTimeout:  # a tick that landed just before: disarm again
                continue
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


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
