"""Time and memory: the CPU-time budget of symbolic work, and the messages of a file past its
wall-clock or memory bound (here, or from the runner that ended its worker)."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any, TypeVar

from .errors import DerivationError
from .limits import Limits, exceeded

T = TypeVar("T")


class SymbolicTimeout(Exception):
    pass


MAX_SECONDS = 1e7  # setitimer's own bound is the platform's time_t: a longer budget is no budget


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise :class:`SymbolicTimeout` inside the block after ``seconds`` of this process's CPU time.

    SymPy is pure Python, so the signal lands between bytecodes. CPU time, not wall time
    (ITIMER_PROF): a loaded machine or ``--jobs`` must not turn ``proved`` into ``verified``.
    The timer ticks with the scheduler (a few ms), so a block that finishes past its budget before
    the first tick raises at its end: a budget below a tick holds too. Without setitimer, off the main
    thread, or past ``MAX_SECONDS`` (``--timeout inf``), there is no budget."""
    usable = (
        0 < seconds < MAX_SECONDS and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
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


_SHIELDED: set[CodeType] = set()


def shielded(function: Callable[..., T]) -> Callable[..., T]:
    """Mark ``function`` as a stretch no alarm of :func:`repeating_alarm` may cut short: a tick that lands
    while it runs is ignored, and the next one (10 ms on) raises. For short steps that must finish once
    begun: an alarm's own set-up and clean-up, starting and joining threads."""
    _SHIELDED.add(function.__code__)
    return function


@contextlib.contextmanager
def repeating_alarm(timer: int, signum: int, seconds: float, exception: type[BaseException]) -> Iterator[None]:
    """Raise ``exception()`` in the block once ``timer`` has run ``seconds``, and again every 10 ms after.

    A raise that lands inside a ``__del__``, a weakref or a gc callback cannot propagate: Python hands it
    to ``sys.unraisablehook`` ("Exception ignored in ...") and the block goes on, so the alarm repeats
    until one lands in the block itself. Those swallowed raises are this alarm's own business: while the
    block runs, the hook drops them (a user would see "Exception ignored" on stderr, pytest a failed
    test) and passes every other unraisable exception on. No alarm raises inside the hook, the set-up,
    the clean-up or any :func:`shielded` function. Not nested on one timer (the inner would stop the outer)."""
    armed = [False]
    previous_hook = sys.unraisablehook

    def drop_own_alarms(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, exception):
            previous_hook(unraisable)

    _SHIELDED.add(drop_own_alarms.__code__)  # one code object for every alarm's hook

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if armed[0] and not _shielded(frame):
            raise exception()

    previous = _arm(timer, signum, min(seconds, MAX_SECONDS), on_alarm, drop_own_alarms, armed)
    try:
        yield
    finally:
        _disarm(timer, signum, previous, previous_hook, armed)


@shielded
def _arm(timer: int, signum: int, seconds: float, on_alarm: Callable, hook: Callable, armed: list[bool]) -> Any:
    previous, previous_hook = signal.signal(signum, on_alarm), sys.unraisablehook
    sys.unraisablehook = hook
    try:
        signal.setitimer(timer, seconds, 0.01)
    except BaseException:
        sys.unraisablehook = previous_hook
        signal.signal(signum, previous)
        raise
    armed[0] = True
    return previous


@shielded
def _disarm(timer: int, signum: int, previous: Any, previous_hook: Callable, armed: list[bool]) -> None:
    armed[0] = False  # from here on a late tick is ignored
    signal.setitimer(timer, 0)
    signal.signal(signum, previous)
    sys.unraisablehook = previous_hook


def _shielded(frame: FrameType | None) -> bool:
    """Whether a frame of a shielded function is on the stack that ``frame`` tops."""
    while frame is not None:
        if frame.f_code in _SHIELDED:
            return True
        frame = frame.f_back
    return False


def remaining(budget: float, spent: float) -> float:
    """What is left of a budget (0 means no budget at all); an exhausted one expires at once."""
    return max(budget - spent, 1e-6) if budget > 0 else 0.0


def out_of_memory(path: str, limits: Limits) -> str:
    what = "the memory this file's check needs, in MB"
    return f"{path}: ran out of memory: " + exceeded(what, f"over {limits.max_memory}", "max_memory", limits)


class Pace:
    """How long a numeric trial of some work (entries plus multiply-adds) will take, from the trials timed so far.

    A trial costs a fixed part (the interpreter's steps, a first call's warm-up) plus a part that grows with its
    work, so seconds per unit of work are highest on the smallest trials, and a pace measured on a trial far
    smaller than the next one charges it that overhead many times over: the pace of all the work done together
    refused a 6 s file as over the 120 s limit. So a trial's time is predicted only from trials of at least a
    sixteenth of its work (by powers of two), at the lowest pace among them; with none, it is not predicted (the
    deadline's alarm still ends a trial that runs past it)."""

    REACH = 4  # powers of two of work a prediction extrapolates over, at most

    def __init__(self) -> None:
        self.best: dict[int, float] = {}  # ⌊log2 work⌋ -> the lowest seconds per unit of work timed there

    def timed(self, seconds: float, work: int) -> None:
        if work > 0:
            scale = work.bit_length()
            self.best[scale] = min(self.best.get(scale, math.inf), seconds / work)

    def predict(self, work: int) -> float:
        """Seconds for a trial of ``work``; 0 when no trial timed so far is comparable."""
        if work <= 0:
            return 0.0
        paces = [pace for scale, pace in self.best.items() if scale >= work.bit_length() - self.REACH]
        return work * min(paces) if paces else 0.0


# a trial is refused ahead only when its predicted time is this many times what is left before the deadline: a
# pace measured on a loaded machine may be inflated, and the deadline's alarm stops a trial that runs past it
REFUSAL_MARGIN = 2.0


def timed_out(path: str, seconds: float, limits: Limits, stage: str = "", predicted: bool = False) -> str:
    """The message for a file past ``--file-timeout`` (here, or from the runner that killed its worker)."""
    what = f"the wall-clock time of this file{stage}"
    value = f"{seconds:.1f} s" + (", predicted from the trials so far" if predicted else "")
    return f"{path}: " + exceeded(what, value, "file_timeout", limits)


class FileTimeout(DerivationError):
    pass
