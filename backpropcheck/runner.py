"""Files are checked in worker processes: the per-file bounds made real, and signals that end the whole tree.

Why workers (also with ``--jobs 1``; a worker checks one file after another):

* ``--file-timeout`` is wall clock over every stage. The checker looks at the clock between
  trials and claims; a wall-clock alarm in the worker ends any stage that runs Python
  (SymPy, localisation); a call into C that does not return (NumPy, BLAS) is ended by the
  parent, which kills the worker one second past the deadline.
* ``--max-memory`` is an OS limit (``RLIMIT_AS``) set in the worker before each file, above
  what it has mapped then. Counting arrays ahead of time (``--max-entries``) misses NumPy's
  temporaries, the tape and the truth (``tanh`` on 7000 x 7000 peaks at ~10x its input); an
  address-space limit does not. Hitting it is a ``MemoryError`` in the worker, reported as a
  located file error naming the flag, and the worker is replaced.
* A worker that dies (the OOM killer's SIGKILL, a crash in C) costs only its file.

Signals: workers ignore SIGINT (Ctrl-C reaches the whole foreground group; the parent alone
handles it and kills them); SIGTERM to the parent kills every worker before it exits
(128 + 15); a worker also ends within half a second of its parent's death (a watchdog
thread), so even a SIGKILL of the parent leaves no orphan for long. Without ``fork``
(Windows) files are checked in this process, bounded by the checker's own clock checks only.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait
from typing import Any

from .budget import repeating_alarm

WORKER_GC_THRESHOLDS = (20_000, 20, 20)  # gc.set_threshold in a worker (the default is 700, 10, 10)
FILES_PER_WORKER = 64  # files a worker checks before it retires and a fresh fork of the parent takes its place
MAX_RLIMIT = 2**63 - 1  # the largest limit setrlimit takes from Python (rlim_t as a signed 64-bit value)
MAX_WAIT = 3600.0  # seconds of one wait for the workers (the loop waits again): a --file-timeout of 1e12 or inf
# is no timeout the selector can take
GRACE = 1.0  # seconds past --file-timeout before the parent kills a worker whose own deadline check did not land

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def isolated() -> bool:
    """Whether files can be checked in forked workers here."""
    return hasattr(os, "fork") and "fork" in multiprocessing.get_all_start_methods()


def _die_with_parent() -> None:
    """A watchdog thread ends this worker within half a second of its parent's death, however it dies
    (a SIGKILL leaves no chance to kill the workers). An idle worker also ends on its pipe's EOF."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(75)

    threading.Thread(target=watch, name="backpropcheck-watchdog", daemon=True).start()


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space at what it has mapped now plus ``megabytes``."""
    import resource

    with open("/proc/self/statm") as fh:  # first field: the address space size, in pages
        mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = mapped + megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    elif cap >= MAX_RLIMIT:  # --max-memory past what an rlimit holds (setrlimit would fail): no limit
        cap = resource.RLIM_INFINITY
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


@contextlib.contextmanager
def memory_bounded(megabytes: int) -> Iterator[None]:
    """``limit_memory`` for the block, in this process (``explain``, which has no worker); the previous limit
    is restored after it."""
    import resource

    if not os.path.exists("/proc/self/statm"):
        yield
        return
    previous = resource.getrlimit(resource.RLIMIT_AS)
    limit_memory(megabytes)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


class _Deadline(BaseException):
    """Raised by the wall-clock alarm in a worker: a BaseException, so no ``except Exception`` of the
    engines (SymPy's failures, the localisation's best effort) can take it for a failure and go on."""


def _within_deadline(path: str, options):
    """``check_path`` with a wall-clock alarm at ``--file-timeout``: the bound lands in every stage that
    runs Python (SymPy, localisation), not only where the checker looks at the clock. A call into C that
    does not return is the parent's to kill."""
    from . import checker

    started = time.monotonic()
    try:
        with repeating_alarm(signal.ITIMER_REAL, signal.SIGALRM, options.limits.file_timeout, _Deadline):
            return checker.check_path(path, options)
    except _Deadline:
        signal.setitimer(signal.ITIMER_PROF, 0)  # in case the alarm cut short time_budget's own clean-up
        message = checker.timed_out(path, time.monotonic() - started, options.limits)
        return checker.FileResult(path, "", "error", message, seconds=time.monotonic() - started)


def _worker(conn, options) -> None:
    """The body of a forked worker: check each path it is sent, each under a fresh memory limit, and send
    back ``(result, retiring)``; exit (without the parent's atexit) on ``None``, after running out of
    memory, when its heap may be in a poor state, or after ``FILES_PER_WORKER`` files."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        _die_with_parent()
        # SymPy allocates millions of short-lived, acyclic objects: with the default threshold (700) the
        # collector runs every few hundred and scans the young heap each time, ~10 % of a check's CPU
        gc.set_threshold(*WORKER_GC_THRESHOLDS)
        gc.freeze()  # what the parent imported and built stays: no collection here scans it again
        from . import checker

        limited = os.path.exists("/proc/self/statm")
        checked = 0
        while True:
            path = conn.recv()
            if path is None:
                break
            if limited:
                limit_memory(options.limits.max_memory)
            result = _within_deadline(path, options)
            checked += 1
            retiring = result.error == checker.out_of_memory(path, options.limits) or checked >= FILES_PER_WORKER
            try:
                conn.send((result, retiring))
            except MemoryError:
                retiring = True
                conn.send((checker.FileResult(path, result.title, "error",
                                              checker.out_of_memory(path, options.limits)), True))
            if retiring:
                break
            # What the file left behind (SymPy's caches, the engines' memos) is frozen, so no later collection
            # scans it again (~7 % of a run's time went to that). A reference cycle frozen before it became
            # garbage stays until the worker retires (~0.3 MB a file): FILES_PER_WORKER bounds it.
            gc.freeze()
    except BaseException:  # noqa: BLE001 - the parent reports the file of a worker that sends nothing
        code = 70
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        os._exit(code)


class _Worker:
    """One forked worker process, checking one file at a time (``path``; None when idle)."""

    def __init__(self, options, context) -> None:
        self.options = options
        self.path: str | None = None
        self.started = self.deadline = 0.0
        self.conn, child = context.Pipe()
        # Signals are blocked around the fork, so the worker cannot die of a Ctrl-C before it ignores SIGINT.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self.process = context.Process(target=_worker, args=(child, options), daemon=True)
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        self.alive = True

    def assign(self, path: str) -> None:
        self.conn.send(path)
        self.path = path
        self.started = time.monotonic()
        self.deadline = self.started + self.options.limits.file_timeout + GRACE

    def handles(self) -> list[Any]:
        return [self.conn, self.process.sentinel]

    def poll(self):
        """The current file's result once the worker is done with it (or dead, or past the deadline), else None.
        A worker that died, was killed or retired is no longer ``alive``."""
        from .checker import FileResult, timed_out

        message = None
        if self.conn.poll():
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = None
            if message is not None:
                result, retiring = message
                self.path = None
                if retiring:
                    self.stop()
                return result
        if not self.process.is_alive():
            self.process.join()
            self.alive = False
            self.conn.close()
            return FileResult(self.path or "", "", "error", self._death())
        if time.monotonic() > self.deadline:
            self.kill()
            seconds = time.monotonic() - self.started
            return FileResult(self.path or "", "", "error", timed_out(self.path or "", seconds, self.options.limits),
                              seconds=seconds)
        return None

    def _death(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
            if -code == signal.SIGKILL:
                how += (" (the system's out-of-memory killer does this; lower the file's dims or "
                        f"{_flag('max_memory')})")
        else:
            how = f"exited with status {code} without a result"
        return f"{self.path}: the worker process checking this file {how}; the other files are unaffected"

    def stop(self) -> None:
        """End an idle worker the polite way (it exits at once), or kill it if it does not."""
        with contextlib.suppress(Exception):
            self.conn.send(None)
        self.process.join(1)
        self.kill()

    def kill(self) -> None:
        self.alive = False
        with contextlib.suppress(Exception):
            if self.process.is_alive():
                self.process.kill()
        with contextlib.suppress(Exception):
            self.process.join(5)
        with contextlib.suppress(Exception):
            self.conn.close()


def _flag(field: str) -> str:
    from .limits import Limits

    return Limits.flag(field)


def _warm(options) -> None:
    """Import the engines once, here, so each forked worker starts with them instead of importing them again
    (SymPy alone takes about half a second), with the modules NumPy and SymPy import only on first use
    (NumPy's random generators; SymPy's tensor and combinatorics modules, reached from its expression
    construction), and those of the report's and certificate's paths."""
    import numpy.random  # noqa: F401

    from . import diagnose, dimuse, notes  # noqa: F401
    from .engines import evaluate, numeric  # noqa: F401

    if options.symbolic:
        from .engines import scope, symbolic  # noqa: F401

        with contextlib.suppress(ImportError):  # another SymPy version may lay them out differently
            import sympy.assumptions.wrapper  # noqa: F401
            import sympy.combinatorics  # noqa: F401
            import sympy.sets.setexpr  # noqa: F401
            import sympy.tensor.tensor  # noqa: F401


class Terminated(BaseException):
    """SIGTERM reached the parent: the workers are killed and the run ends (exit 128 + 15)."""


@contextlib.contextmanager
def _sigterm_ends_the_run() -> Iterator[None]:
    def on_term(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: no handler, the default (die) stays
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def longest_first(files: list[str]) -> list[int]:
    """The indices of ``files``, largest file first (ties in file order): the file's size predicts its check's
    time, and a long file started last would leave the other workers idle while it runs. A ``NOTE.md:LINE``
    block, or a file that cannot be read, counts as empty (it is reported in its place all the same)."""
    def size(path: str) -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    sizes = [size(path) for path in files]
    return sorted(range(len(files)), key=lambda i: -sizes[i])


def run_files(files: list[str], options, jobs: int, fail_fast: bool,
              start: Callable[[str], None] = lambda path: None,
              done: Callable[[str], None] = lambda path: None,
              meanwhile: Callable[[], None] = lambda: None) -> list:
    """Check ``files`` in at most ``jobs`` workers; results in file order, the same for every ``jobs``.
    ``meanwhile`` runs once, here, after the first workers have their files (e.g. the report's imports).

    With ``fail_fast`` the run stops after the first file, in file order, that does not pass. Workers
    start in file order, so every file before that one has been checked, as with ``--jobs 1``. Without
    it, with more than one job, the largest files start first (:func:`longest_first`)."""
    from . import checker

    if not isolated():
        serial: list[checker.FileResult] = []
        meanwhile()
        for path in files:
            start(path)
            serial.append(checker.check_path(path, options))
            done(path)
            if fail_fast and serial[-1].status != "passed":
                break
        return serial
    _warm(options)
    context = multiprocessing.get_context("fork")
    results: dict[int, Any] = {}
    workers: list[_Worker] = []
    busy: dict[int, _Worker] = {}  # file index -> the worker checking it
    order = longest_first(files) if jobs > 1 and not fail_fast else list(range(len(files)))
    following = 0  # the position in ``order`` of the next file to start
    stop = len(files)  # with fail_fast: one past the first failing file seen so far
    waited = False  # whether ``meanwhile`` has run
    with _sigterm_ends_the_run():
        try:
            while True:
                while following < stop and len(busy) < jobs:
                    workers = [w for w in workers if w.alive and w.process.is_alive()]
                    idle = next((w for w in workers if w.path is None), None)
                    if idle is None:
                        idle = _Worker(options, context)
                        workers.append(idle)
                    try:
                        idle.assign(files[order[following]])
                    except OSError:  # an idle worker that died since: the file goes to another one
                        idle.kill()
                        continue
                    start(files[order[following]])
                    busy[order[following]] = idle
                    following += 1
                if not waited:
                    meanwhile()
                    waited = True
                if following >= stop:  # nothing left to start: idle workers go now, not at the end
                    for worker in workers:
                        if worker.alive and worker.path is None:
                            worker.stop()
                if not busy:
                    break
                soonest = min(w.deadline for w in busy.values())
                wait([h for w in busy.values() for h in w.handles()],
                     timeout=min(max(0.0, soonest - time.monotonic()) + 0.01, MAX_WAIT))
                for i in sorted(busy):
                    if i not in busy:  # killed by --fail-fast just now
                        continue
                    result = busy[i].poll()
                    if result is None:
                        continue
                    del busy[i]
                    results[i] = result
                    done(files[i])
                    if fail_fast and i < stop and result.status != "passed":
                        stop = i + 1
                        for j in [j for j in busy if j >= stop]:
                            busy.pop(j).kill()
        finally:
            for worker in workers:
                if worker.alive and worker.path is None:
                    worker.stop()
                else:
                    worker.kill()
    return [results[i] for i in range(stop)]
