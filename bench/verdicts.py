"""Fuzz the verdicts themselves: claims whose truth is known by construction.

    .venv/bin/python bench/verdicts.py --cases 10000 --workers 2 --seed 0

Each case takes a correct claim ``C`` of a small derivation and rewrites it either into
an equal claim that is hard to see as equal (a huge term that cancels in float64, a
branch whose two sides agree, a dim-dependent factor that is 1 at every size) or into a
wrong claim that is hard to catch (off by ``1e-12 * X``; a branch only inputs past 5 or
50 reach; a factor that changes only at dims past the drawn range). A false verdict is
a wrong claim reported ``proved`` or ``verified`` (even after a timeout: the families
are chosen so that the symbolic check can decide), or an equal one reported
``refuted`` or ``shape-error``. Exit status 1 when any case gives a false verdict.

With ``--scope`` each case is checked at the default three small dims with the all-shapes certificate
(which runs after the first of them), and the families add claims wrong only past the first small dims
(``1e-12 * (n - 2) * (n - 3)``) and true ones with dims that cancel.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, TOML with a {claim} slot for the claim under test, the claim's name, its correct form,
#  an input of the claim's shape drawn from the reals, a dim used as a number)
BASES = [
    ("dense_generic", """
[derivation]
title = "dense, generic f"
[dims]
n = "in"
m = "out"
[inputs]
a = ["n"]
W = ["m", "n"]
b = ["m"]
[functions]
f = "elementwise"
[forward]
z = "W @ a + b"
h = "f(z)"
[loss]
upstream = "h"
[claims]
grad_z = "grad_h * f_prime(z)"
grad_a = "{claim}"
""", "grad_a", "W.T @ grad_z", "a", "n"),
    ("dense_tanh_loss", """
[derivation]
title = "dense tanh with a loss"
[dims]
n = "in"
m = "out"
[inputs]
x = ["n"]
W = ["m", "n"]
[forward]
z = "W @ x"
h = "tanh(z)"
[loss]
E = "0.5 * sum(h * h)"
[claims]
grad_x = "{claim}"
""", "grad_x", "W.T @ (h * (1 - h ** 2))", "x", "m"),
    ("rows_batch", """
[derivation]
title = "rows batch"
[dims]
B = "batch"
n = "in"
k = "out"
[inputs]
X = ["B", "n"]
W = ["n", "k"]
[forward]
Z = "X @ W"
H = "sigmoid(Z)"
[loss]
upstream = "H"
[claims]
grad_X = "{claim}"
""", "grad_X", "(grad_H * H * (1 - H)) @ W.T", "X", "B"),
    ("onehot_xent", """
[derivation]
title = "softmax cross-entropy over one-hot targets"
[dims]
B = "batch"
V = "classes"
[inputs]
L = ["B", "V"]
Y = { shape = ["B", "V"], domain = "onehot", axis = 1, constant = true }
[forward]
P = "softmax(L, axis=1)"
[loss]
E = "-sum(log(sum(P * Y, axis=1))) / B"
[claims]
grad_L = "{claim}"
""", "grad_L", "(P - Y) / B", "L", "V"),
]

TRUE_FAMILIES = {
    "cancellation": lambda r, c, x, n: (lambda big: f"(({c}) + {big}) - {big}")(
        r.choice(["1e6*1e6*1e6", "1e6*1e6*3e5", "1e5*1e5*1e5"])),
    "same_branches": lambda r, c, x, n: f"where({x} > {r.choice([2, 5, 50])}, {c}, {c})",
    "dim_factor_one": lambda r, c, x, n: f"({c}) * (1 + 0 * relu({n} - {r.choice([64, 100, 1000])}))",
    "dim_relu_below": lambda r, c, x, n: f"({c}) * (1 + relu(1 - {n}))",
    "smooth_dim": lambda r, c, x, n: f"({c}) * sqrt({n}) / sqrt({n})",
}

WRONG_FAMILIES = {
    "tiny_term": lambda r, c, x, n: f"{c} + {r.choice(['1e-9', '1e-12', '1e-15'])} * {x}",
    "far_branch": lambda r, c, x, n: f"where({x} > {r.choice([3, 5, 50])}, {r.choice(['2', '1.000001', '-1'])} * ({c}), {c})",
    "far_kink": lambda r, c, x, n: f"{c} + {r.choice(['1000', '1e-9'])} * relu({x} - {r.choice([4, 7, 40])})",
    "negative_kink": lambda r, c, x, n: f"{c} + 1e-12 * relu(-{x} - {r.choice([4, 7, 40])})",
    "large_dim": lambda r, c, x, n: f"({c}) * (1 + relu({n} - {r.choice([64, 65, 100, 1000])}))",
    "large_dim_tiny": lambda r, c, x, n: f"({c}) * (1 + 1e-12 * relu({n} - {r.choice([64, 70])}))",
    "large_dim_branch": lambda r, c, x, n: f"where({n} > {r.choice([64, 80, 500])}, -({c}), {c})",
}


# wrong only at sizes past the first small dims: with --scope, the all-shapes certificate tried after those dims
# must not certify them, and the other small dims (each dim at three distinct sizes) must refute them
SCOPE_WRONG_FAMILIES = {
    "small_dims_poly": lambda r, c, x, n: f"({c}) * (1 + {r.choice(['1e-12', '1e-3'])} * ({n} - 2) * ({n} - 3))",
    "small_dims_linear": lambda r, c, x, n: f"({c}) * (1 + {r.choice(['1e-12', '0.5'])} * ({n} - {r.choice([2, 3])}))",
    "small_dims_ratio": lambda r, c, x, n: f"({c}) * {r.choice(['2', '3'])} / {n}",
    "small_dims_term": lambda r, c, x, n: f"{c} + 1e-12 * ({n} - 2) * ({n} - 3) * {x}",
}

SCOPE_TRUE_FAMILIES = {
    "dims_cancel": lambda r, c, x, n: f"({c}) * ({n} - 1) / ({n} - 1 + 0 * {n})",
    "dims_split": lambda r, c, x, n: f"({c}) * ({n} - 2) / {n} + ({c}) * 2 / {n}",
}


def make_case(seed: int, index: int, scope: bool = False) -> tuple[str, str, str, str, int]:
    """(family, expected 'holds'|'wrong', TOML text, claim name, check seed), deterministic."""
    r = random.Random(f"verdicts:{seed}:{index}")
    name, text, claim, correct, x, n = r.choice(BASES)
    wrong = r.random() < 0.5
    families = WRONG_FAMILIES if wrong else TRUE_FAMILIES
    if scope:
        families = {**families, **(SCOPE_WRONG_FAMILIES if wrong else SCOPE_TRUE_FAMILIES)}
    family = r.choice(sorted(families))
    expr = families[family](r, correct, x, n)
    return f"{name}/{family}", "wrong" if wrong else "holds", text.replace("{claim}", expr), claim, r.randrange(100)


def judge(index: int, seed: int, scope: bool = False) -> tuple[int, str, str, str, float, str]:
    """Run one case; (index, family, expected, verdict, seconds, message). ``scope``: at the default three small
    dims with the all-shapes certificate, else at one small dims without it (faster)."""
    from backpropcheck.checker import Options, check_path

    family, expected, text, claim, check_seed = make_case(seed, index, scope)
    options = Options(seed=check_seed, trials=3) if scope else Options(seed=check_seed, trials=3, shapes=1,
                                                                        scope=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.toml"
        path.write_text(text)
        started = time.perf_counter()
        result = check_path(str(path), options)
        seconds = time.perf_counter() - started
    verdict = "error"
    message = result.error or ""
    for c in result.claims:
        if c.name == claim:
            verdict, message = c.verdict, c.message
    return index, family, expected, verdict, seconds, message


def false_verdict(expected: str, verdict: str) -> bool:
    if expected == "holds":
        return verdict not in ("proved", "verified")
    return verdict != "refuted"


def _run(args: tuple[int, int, bool]) -> tuple[int, str, str, str, float, str]:
    return judge(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scope", action="store_true",
                        help="three small dims and the all-shapes certificate, with families wrong past the first")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    outcomes: Counter = Counter()
    false: list[tuple] = []
    slowest = (0.0, None)
    merely_verified: Counter = Counter()
    verified_examples: dict[str, str] = {}
    with mp.get_context("fork").Pool(args.workers) as pool:
        for done, (index, family, expected, verdict, seconds, message) in enumerate(
                pool.imap_unordered(_run, [(i, args.seed, args.scope) for i in range(args.cases)], chunksize=4), 1):
            outcomes[(expected, verdict)] += 1
            slowest = max(slowest, (seconds, index), key=lambda s: s[0])
            if false_verdict(expected, verdict):
                false.append((index, family, expected, verdict, message))
            if expected == "holds" and verdict == "verified":  # true but not proved: not false, still a gap
                merely_verified[family] += 1
                verified_examples.setdefault(family, f"case {index}: {message[:200]}")
            if done % 500 == 0:
                print(f"  {done} cases, {time.perf_counter() - started:.0f} s, {len(false)} false", flush=True)
    for index, family, expected, verdict, message in false[:30]:
        print(f"FALSE case {index} ({family}): {expected}, got {verdict}: {message[:300]}")
    print(f"cases: {args.cases} in {time.perf_counter() - started:.0f} s with {args.workers} workers (seed {args.seed}"
          f"{', --scope' if args.scope else ''})")
    print("outcomes: " + ", ".join(f"{e}->{v}: {k}" for (e, v), k in sorted(outcomes.items())))
    print(f"max per-case time: {slowest[0]:.2f} s (case {slowest[1]})")
    for family, count in merely_verified.most_common():
        print(f"true but only verified: {family}: {count} ({verified_examples[family]})")
    print(f"false verdicts: {len(false)}")
    return 1 if false else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
