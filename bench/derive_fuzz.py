"""Issue 15: ``derive`` on random forward passes; every derived claim should be proved.

    .venv/bin/python bench/derive_fuzz.py --cases 300 --seed 0

The files are bench/fuzz.py's "typed" cases (a dense layer whose z, h and loss are random
well-shaped expressions: element-wise functions, where/maximum/minimum, softmax and
log_softmax, einsum, diag/outer, reductions); their claims are ignored. A file the checker
cannot evaluate (a NaN forward pass outside the declared domain, an ill-shaped forward pass)
is counted apart: that is the file's problem, not derive's. Comparisons of a value with itself
(``u > u``, ``minimum(u, u)``) are ties, which the specification never samples; claims
through them are counted apart too.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from fuzz import typed_file  # noqa: E402

from backpropcheck.checker import Options  # noqa: E402
from backpropcheck.derive import derive  # noqa: E402

TIE = re.compile(r"\b(maximum|minimum)\((\w+), \2\)|\b(\w+) [<>]=? \3\b")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    options = Options(trials=3, shapes=1, timeout=3)
    tally: Counter[str] = Counter()
    bugs = []
    for case in range(args.seed, args.seed + args.cases):
        text = typed_file(random.Random(case), b"").decode()
        result = derive(text, options=options)
        if result.error:
            tally["files the checker cannot evaluate"] += 1
            continue
        tally["files"] += 1
        forward = text[text.index("[forward]"):text.index("[claims]")]
        for target, why in result.not_derived.items():
            tally["not derived"] += 1
            bugs.append((case, f"grad_{target}", "not derived", why))
        for c in result.claims:
            if c.verdict != "proved" and TIE.search(forward):
                tally["through a tie (never sampled)"] += 1
                continue
            tally[c.verdict] += 1
            if c.verdict != "proved":
                bugs.append((case, c.name, c.verdict, c.message[:160]))
    for key, count in sorted(tally.items()):
        print(f"{key:34s} {count}")
    for case, name, verdict, why in bugs:
        print(f"case {case} {name}: {verdict}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
