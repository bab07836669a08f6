"""Check the bundled library at many seeds: no seed-dependent false alarm or miss.

Usage: python bench/seeds.py [--first 1] [--last 20] [--jobs 2] [PATH ...]

For every seed it runs ``backpropcheck check --format json`` and lists each
claim whose outcome is not what the file promises: a correct claim that is
not ``proved``, or a mistake that is not refuted / shape-error as [expect]
says. Exit 0 only when every seed gives every claim its promised verdict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["derivations"])
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--last", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    bad = 0
    claims = 0
    started = time.perf_counter()
    for seed in range(args.first, args.last + 1):
        t0 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "backpropcheck", "check", *args.paths, "--seed", str(seed),
             "--format", "json", "--jobs", str(args.jobs)],
            capture_output=True, text=True,
        )
        report = json.loads(run.stdout)
        for f in report["files"]:
            if f["error"] and not f["claims"]:
                bad += 1
                print(f"seed {seed}: {f['path']}: {f['error']}")
            for c in f["claims"]:
                claims += 1
                promised = c["verdict"] == "proved" if c["expected"] == "holds" else c["ok"]
                if not promised:
                    bad += 1
                    print(f"seed {seed}: {f['path']} {c['name']}: {c['verdict']} — {c['message'][:160]}")
        print(f"seed {seed}: exit {run.returncode}, {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"{args.last - args.first + 1} seeds, {claims} claim checks, {bad} not as promised, "
          f"{time.perf_counter() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
