"""The two passes of a numeric trial that read or write a whole large array and are not a BLAS call:
drawing a uniform input, and the first pass of a comparison. Each works block by block (a block is
made and reduced while it is in cache) and, for a large array, on as many threads as NumPy's BLAS
may use, so that the check gets the cores its baseline (a forward pass in BLAS) gets.

Neither depends on the threads: a large draw takes each block from its own stream, seeded in advance
(:func:`uniform`); maxima do not depend on the order they are taken in.
"""

from __future__ import annotations

import _thread
import os
import threading
from collections.abc import Callable

import numpy as np

from ..budget import shielded
from ..lang.ops import LowRank, dense

BLOCK = 1 << 17  # entries per block: made, shifted and reduced while in cache
PARALLEL_MIN = 1 << 20  # entries below which one thread does all (a thread costs ~0.1 ms to start)
MAX_THREADS = 8
PIECES = 4  # pieces each thread's run is cut into, taken in turn by whichever thread is free
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_MAX, _MIN = np.maximum.reduce, np.minimum.reduce
_ANY_SEED = np.random.SeedSequence(0)  # a block generator's seed: its state is set before it draws


def threads() -> int:
    """As many threads as NumPy's BLAS may use: its environment variable if set, else the CPUs this
    process may run on (at most ``MAX_THREADS``)."""
    for var in _BLAS_THREADS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), MAX_THREADS)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def spans(blocks: int, entries: int) -> list[tuple[int, int]]:
    """``blocks`` split into contiguous runs, one per thread (one run for fewer than ``PARALLEL_MIN`` entries)."""
    parts = min(threads(), blocks) if entries >= PARALLEL_MIN else 1
    cuts = [blocks * k // parts for k in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo] or [(0, blocks)]


def in_threads(work: Callable[[int, int], None], runs: list[tuple[int, int]]) -> None:
    """``work(lo, hi)`` for every run, one helper thread per run after the first: the runs are cut into
    ``PIECES`` pieces each, this thread does the first, then it and the helpers each take the next piece
    none has begun, until none is left. A helper is started without waiting for it to be
    scheduled (``threading.Thread.start`` waits, several ms on a busy machine): when the cores are taken,
    this thread does every run itself and waits only for runs a helper has begun; a helper scheduled after
    that finds nothing left and ends without touching the arrays. A helper that cannot start (a memory
    limit) leaves its runs to this thread. This thread's exception (a deadline's alarm lands here) goes
    first, then any other's; after this thread's exception the helpers do the runs that are left, as
    before, and this returns when they have. The helpers work under this thread's ``np.errstate`` (NumPy
    keeps it per context, and a new thread does not inherit it)."""
    errors: list[BaseException] = []
    state = np.geterr()
    helpers = len(runs) - 1
    if helpers:  # pieces of the runs, so that a helper that starts late, or is paused, holds up little
        runs = [(lo + (hi - lo) * j // PIECES, lo + (hi - lo) * (j + 1) // PIECES)
                for lo, hi in runs for j in range(PIECES) if (hi - lo) * (j + 1) // PIECES > (hi - lo) * j // PIECES]
    queue = _Queue(len(runs))

    def helper() -> None:
        with np.errstate(**state):
            while (k := queue.take(helper=True)) is not None:
                try:
                    work(*runs[k])
                except BaseException as exc:  # noqa: BLE001 - handed to the calling thread below
                    errors.append(exc)
                finally:
                    queue.ended()

    started = _start(helper, helpers)
    try:
        work(*runs[0])
        while (k := queue.take(helper=False)) is not None:
            work(*runs[k])
    except BaseException:
        if started:
            queue.wait(drained=True)  # none keeps writing into the arrays after this raises
        raise
    queue.wait(drained=False)  # the runs a helper has begun
    if errors:
        raise errors[0]


class _Queue:
    """Runs 1 … count-1 taken in turn (run 0 is the calling thread's), and the runs helpers have begun."""

    def __init__(self, count: int) -> None:
        self.count, self.next, self.busy = count, 1, 0
        self.changed = threading.Condition(threading.Lock())

    @shielded  # an alarm inside ``with`` could leave the lock taken, and the wait below would never get it
    def take(self, helper: bool) -> int | None:
        with self.changed:
            if self.next >= self.count:
                return None
            self.next += 1
            self.busy += helper
            return self.next - 1

    @shielded
    def ended(self) -> None:
        with self.changed:
            self.busy -= 1
            self.changed.notify_all()

    @shielded  # an alarm inside the wait would leave helpers writing into the arrays after the call
    def wait(self, drained: bool) -> None:
        with self.changed:
            while self.busy or (drained and self.next < self.count):
                self.changed.wait()


@shielded  # an alarm between starting a helper and counting it would leave it uncounted
def _start(helper: Callable[[], None], count: int) -> int:
    """Start up to ``count`` helpers without waiting for them to run; how many started."""
    started = 0
    for _ in range(count):
        try:
            _thread.start_new_thread(helper, ())
        except (RuntimeError, MemoryError):  # no more threads (a memory limit): the runs stay for the others
            break
        started += 1
    return started


def uniform(shape: tuple[int, ...], width: float, rng: np.random.Generator) -> np.ndarray:
    """``(u - 1/2)·width`` for u uniform on [0, 1), shifted and scaled block by block while in cache.

    An input of one block (most inputs) is exactly ``(rng.random(shape) - 0.5) * width``. A larger one
    takes block k from its own SFC64 stream, seeded as SFC64 seeds itself (three 64-bit words, a counter
    of 1, twelve steps discarded) from words ``3k … 3k+2`` of ``rng``, all drawn first: the values do not
    depend on which thread fills which block. SFC64 makes a double in three quarters of PCG64's time, and
    at production widths drawing W is the largest part of the check."""
    out = np.empty(shape)
    flat = out.reshape(-1)
    if flat.size <= BLOCK:  # one block (most inputs): the loop below without its closure and threads
        rng.random(out=flat)
        flat -= 0.5
        flat *= width
        return out
    count = -(-flat.size // BLOCK)
    seeds = rng.bit_generator.random_raw(3 * count).reshape(count, 3)
    by_thread: dict[int, np.random.Generator] = {}

    def fill(lo: int, hi: int) -> None:
        gen = by_thread.get(_thread.get_ident())
        if gen is None:  # one per thread and call; its state is set before each block
            gen = by_thread[_thread.get_ident()] = np.random.Generator(np.random.SFC64(_ANY_SEED))
        bits = gen.bit_generator
        for k in range(lo, hi):
            seed_sfc64(bits, seeds[k])
            part = flat[k * BLOCK:(k + 1) * BLOCK]
            gen.random(out=part)
            part -= 0.5
            part *= width

    in_threads(fill, spans(count, flat.size))
    return out


def seed_sfc64(bits: np.random.BitGenerator, seed: np.ndarray) -> None:
    """Put ``bits`` where ``np.random.SFC64`` seeded with these three words starts: the words, a counter of
    1, then twelve steps on (SFC64's own seeding, from the words its seed sequence makes)."""
    words = np.empty(4, dtype=np.uint64)
    words[:3], words[3] = seed, 1
    bits.state = {"bit_generator": "SFC64", "state": {"state": words}, "has_uint32": 0, "uinteger": 0}
    bits.random_raw(12)


def largest(claimed: np.ndarray | LowRank, truth: np.ndarray | LowRank) -> tuple[float, float]:
    """``(max |claimed - truth|, max |truth|)`` in one pass over both arrays, block by block: each block
    of the difference is made and reduced while in cache. NaN anywhere gives NaN. A factored outer product
    (a :class:`LowRank` of one term per entry), claimed or true, is made block by block too, never as a
    whole."""
    if type(claimed) is np.ndarray and type(truth) is np.ndarray:  # the common case: nothing factored
        return _largest_dense(claimed, truth)
    truth, claimed = _outer_or_dense(truth), _outer_or_dense(claimed)
    if isinstance(truth, LowRank) or isinstance(claimed, LowRank):
        if truth.size > BLOCK and _float64(claimed) and _float64(truth) and claimed.shape == truth.shape:
            return _largest_outer(claimed, truth)
        return _largest_dense(dense(claimed), dense(truth))
    return _largest_dense(claimed, truth)


def _largest_dense(claimed: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """:func:`largest` of two arrays."""
    if truth.size <= BLOCK or not claimed.dtype == truth.dtype == np.float64:  # np.max's own reduce, called directly
        return float(_MAX(np.abs(claimed - truth), axis=None)), float(_MAX(np.abs(truth), axis=None))
    if claimed.flags.c_contiguous and truth.flags.c_contiguous:
        c, t, step = claimed.reshape(-1), truth.reshape(-1), BLOCK
    else:  # e.g. a claim broadcast to the truth's shape: blocks of whole rows
        c, t, step = claimed, truth, max(1, BLOCK // (truth.size // truth.shape[0]))
    count = -(-len(t) // step)
    errs, tops, bottoms = np.empty(count), np.empty(count), np.empty(count)

    def reduce(lo: int, hi: int) -> None:
        buf = np.empty(step * (truth.size // len(t)))
        for k in range(lo, hi):
            tb = t[k * step:(k + 1) * step]
            d = np.subtract(c[k * step:(k + 1) * step], tb, out=buf[:tb.size].reshape(tb.shape))
            errs[k] = _MAX(np.absolute(d, out=d), axis=None)  # the ufuncs' own reduce: NaN stays NaN
            tops[k], bottoms[k] = _MAX(tb, axis=None), _MIN(tb, axis=None)

    in_threads(reduce, spans(count, truth.size))
    return float(errs.max()), float(np.maximum(tops.max(), -bottoms.min()))


def _outer_or_dense(x: np.ndarray | LowRank) -> np.ndarray | LowRank:
    """An outer product (one term per entry) as it is; a product of more terms made dense: one BLAS product
    for the whole, as the sweep made it before (a product per block meets BLAS's threads at every call,
    which costs seconds on a busy machine, 4096 x 32 here, and may order a block's sums its own way)."""
    return x.dense() if isinstance(x, LowRank) and x.p.shape[1] != 1 else x


def _float64(x: np.ndarray | LowRank) -> bool:
    return isinstance(x, LowRank) or x.dtype == np.float64  # LowRank.of factors float64 arrays only


def same_product(claimed: np.ndarray | LowRank, truth: np.ndarray | LowRank) -> bool:
    """Whether a factored claim and a factored truth have every entry the same finite number, by their
    factors alone: the same values, in the same memory layout (``LowRank.dense`` is then the same call
    of the same product, bit for bit), and no entry's terms near overflow (an inf entry would differ from
    itself by NaN). A NaN in a factor is unequal to itself: never the same product."""
    if not (isinstance(claimed, LowRank) and isinstance(truth, LowRank)):
        return False
    pairs = ((claimed.p, truth.p), (claimed.q, truth.q))
    if any(a.shape != b.shape or a.strides != b.strides or a.dtype != b.dtype for a, b in pairs):
        return False
    if not all(a is b or np.array_equal(a, b) for a, b in pairs):
        return False
    return truth.bounded()  # False for an inf (or a NaN the 'is' let through)


def _largest_outer(claimed: np.ndarray | LowRank, truth: np.ndarray | LowRank) -> tuple[float, float]:
    """:func:`largest` where either side is an outer product ``p qᵀ`` (one term per entry), made a block of
    rows at a time into a buffer in cache (:meth:`LowRank.rows`: the numbers of the whole product). The
    max|p qᵀ| of a factored truth is max|p|·max|q|: rounding is monotone, so the largest rounded product is
    the rounded product of the largest."""
    m, n = truth.shape
    step = max(1, BLOCK // n)
    count = -(-m // step)
    errs = np.empty(count)
    tops, bottoms = np.empty(count), np.empty(count)
    factored = isinstance(truth, LowRank)

    def reduce(lo: int, hi: int) -> None:
        buf = np.empty((step, n))
        other = np.empty((step, n)) if factored and isinstance(claimed, LowRank) else None
        for k in range(lo, hi):
            r0, r1 = k * step, min((k + 1) * step, m)
            if isinstance(truth, LowRank):
                t = truth.rows(r0, r1, out=buf[:r1 - r0])
            else:
                t = truth[r0:r1]
                tops[k], bottoms[k] = _MAX(t, axis=None), _MIN(t, axis=None)
            if isinstance(claimed, LowRank):
                c = claimed.rows(r0, r1, out=other[:r1 - r0] if other is not None else buf[:r1 - r0])
            else:
                c = claimed[r0:r1]
            d = np.subtract(c, t, out=buf[:r1 - r0])
            errs[k] = _MAX(np.absolute(d, out=d), axis=None)  # the ufuncs' own reduce: NaN stays NaN

    in_threads(reduce, spans(count, truth.size))
    if isinstance(truth, LowRank):
        scale = float(_MAX(np.absolute(truth.p), axis=None)) * float(_MAX(np.absolute(truth.q), axis=None))
    else:
        scale = float(np.maximum(tops.max(), -bottoms.min()))
    return float(errs.max()), scale
