"""The CPU of the numeric trials at small dims: ``check_derivation(d, Options(symbolic=False))`` over a
library, in one process, where Python's overhead per node and per trial (not NumPy's work) is the cost.

Usage: python bench/numeric_trials.py [--runs 5] [--profile] [PATH ...]

Each run loads every file afresh (untimed: no cache keyed by a tree outlives the run it serves, as in a
real ``check``), then times the checks with ``time.process_time``; it prints every run's seconds, the
best, and the number of trials. ``--profile`` prints the cProfile of one more run instead. To compare two
trees, run it under each with ``PYTHONPATH`` pointing at the tree, alternately, on a quiet machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

from backpropcheck.checker import Options, check_derivation
from backpropcheck.engines import numeric
from backpropcheck.loader import load


def files(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        path = Path(p)
        out += sorted(str(f) for f in path.rglob("*.toml")) if path.is_dir() else [str(path)]
    return out


def run(paths: list[str]) -> tuple[float, int]:
    """Seconds of CPU for checking every file once, numerically, and the trials it ran."""
    derivations = [load(p) for p in paths]
    trials = 0
    counted = numeric.run_trial

    def counting(*args, **kwargs):
        nonlocal trials
        trials += 1
        return counted(*args, **kwargs)

    numeric.run_trial = counting
    try:
        started = time.process_time()
        with np.errstate(all="ignore"):
            for d in derivations:
                check_derivation(d, Options(symbolic=False))
        return time.process_time() - started, trials
    finally:
        numeric.run_trial = counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["derivations"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    paths = files(args.paths)
    run(paths)  # warm up: imports, NumPy's first calls
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, paths)
        pstats.Stats(profile).sort_stats("tottime").print_stats(40)
        return 0
    seconds = []
    trials = 0
    for _ in range(args.runs):
        took, trials = run(paths)
        seconds.append(took)
    print(f"{len(paths)} files, {trials} trials: " + ", ".join(f"{s:.3f}" for s in seconds)
          + f" s CPU; best {min(seconds):.3f} s ({1e3 * min(seconds) / max(trials, 1):.3f} ms per trial)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
