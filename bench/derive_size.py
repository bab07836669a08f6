"""Issue 15: are derived claims about as short as the hand-written ones?

    python bench/derive_size.py                 # every correct file of derivations/
    python bench/derive_size.py FILE_OR_DIR ... [--json OUT] [--no-check]

For each claim a file makes (and expects to hold) that ``derive`` also writes, the size of
both expressions is counted in IR nodes (the tree the loader parses each claim into: one node
per name, number, operator and call; with the [backward] helpers a claim reads). Reported: the median of derived/file, the share within
2×, the worst ten with both forms, every file claim derive did not write, and whether every
derived claim was proved. Targets: median ≤ 1.25, share within 2× ≥ 85 %.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backpropcheck.checker import Options  # noqa: E402
from backpropcheck.derive import _with_claims, derive, size  # noqa: E402
from backpropcheck.loader import load, loads  # noqa: E402
from backpropcheck.model import Claim, Derivation  # noqa: E402


def files_of(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.toml")) if p.is_dir() else [p])  # not recursive: mistakes/ are not correct files
    return out


def claim_size(d: Derivation | None, claim: Claim) -> int:
    """IR nodes of a claim (its body, in index form) and of the [backward] helpers it reads
    (``grad_x = "full"`` counts the helper ``full``)."""
    assert d is not None and claim.node is not None, claim.error
    helpers = sum(size(h.root) for h in d.backward if h.name in claim.uses)
    return size(claim.node) + helpers


def measure(path: Path, check: bool) -> dict:
    original = load(path)
    mine = {c.name: c for c in original.claims if c.expected == "holds" and c.error is None}
    result = derive(path, options=Options(trials=10), check=check)
    derived = {c.name: c for c in result.claims}
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    rewritten = loads(_with_claims(doc, {c.toml_key: c.expr for c in derived.values()}, result.helpers), str(path)) \
        if derived else None
    parsed = {c.name: c for c in rewritten.claims} if rewritten is not None else {}
    rows, missing = [], []
    for name, claim in mine.items():
        if name not in derived:
            missing.append({"file": str(path), "name": name, "expr": claim.text,
                            "reason": result.not_derived.get(name[5:], "not written")})
            continue
        ours, theirs = claim_size(rewritten, parsed[name]), claim_size(original, claim)
        rows.append({"file": path.name, "name": name, "file_expr": claim.text.strip(), "file_size": theirs,
                     "derived_expr": derived[name].expr, "derived_size": ours, "ratio": ours / theirs,
                     "verdict": derived[name].verdict})
    unproved = [{"file": path.name, "name": c.name, "expr": c.expr, "verdict": c.verdict}
                for c in result.claims if check and c.verdict != "proved"]
    return {"rows": rows, "missing": missing, "unproved": unproved, "error": result.error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "derivations")])
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--no-check", action="store_true", help="sizes only; do not prove the derived claims")
    args = parser.parse_args(argv)
    rows, missing, unproved, errors = [], [], [], []
    for path in files_of(args.paths):
        m = measure(path, not args.no_check)
        rows += m["rows"]
        missing += m["missing"]
        unproved += m["unproved"]
        if m["error"]:
            errors.append(f"{path}: {m['error']}")
    ratios = [r["ratio"] for r in rows]
    median = statistics.median(ratios) if ratios else float("nan")
    within = sum(r <= 2 for r in ratios) / len(ratios) if ratios else float("nan")
    worst = sorted(rows, key=lambda r: -r["ratio"])[:10]
    print(f"claims compared: {len(rows)} (file claims not derived: {len(missing)})")
    print(f"median size ratio derived/file: {median:.3f}   (target <= 1.25)")
    print(f"share within 2x:                {within:.1%}   (target >= 85%)")
    print(f"derived claims not proved:      {len(unproved)}" + ("" if not args.no_check else " (not checked)"))
    print("\nworst ten (ratio, derived nodes / file nodes):")
    for r in worst:
        print(f"  {r['ratio']:.2f}  {r['file']} {r['name']}: derived {r['derived_expr']!r} ({r['derived_size']}) "
              f"vs file {r['file_expr']!r} ({r['file_size']})")
    if missing:
        print("\nnot derived:")
        for m in missing:
            print(f"  {m['file']} {m['name']} = {m['expr']!r}: {m['reason']}")
    for u in unproved:
        print(f"NOT PROVED (a bug of derive): {u}")
    for e in errors:
        print(f"error: {e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"median_ratio": median, "share_within_2x": within, "rows": rows,
                                               "worst": worst, "missing": missing, "unproved": unproved},
                                              indent=2) + "\n")
    return 1 if unproved or errors else 0


if __name__ == "__main__":
    sys.exit(main())
