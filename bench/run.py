"""Figures for issue 7, each beside its baseline, measured in one run on this machine.

    python bench/run.py            # symbolic (2,3) (8,9) (16,17); numeric widths 64…4096; wall times
    python bench/run.py --full     # adds the symbolic layer at (32, 33) (the naive route takes minutes)
    python bench/run.py --only symbolic --repeat 5

(a) symbolic: the naive SymPy route (per-entry ``sympy.diff`` of the scalar loss of one
    dense sigmoid layer, then ``simplify`` of each claim-minus-truth difference) against
    backpropcheck's symbolic check of the same layer (bench/dense_sigmoid_mse.toml) at the
    same dims: the truth built once, then every entry of every claim decided.
(b) numeric: ``check --dims n=W,m=W,B=… --no-symbolic`` (one trial, in-process) against one
    NumPy forward pass plus the claims' own evaluation, full finite differences (one forward
    pass per parameter, extrapolated from a timed sample of entries), and
    jax.test_util.check_grads / torch.autograd.gradcheck when they are importable.
(c) wall time of ``backpropcheck --version``, ``check derivations/dense_column.toml`` and
    ``check derivations/`` as subprocesses.
(d) scope: ``check derivations/`` in-process with and without the all-shapes certificate
    (SPEC §8), alternating in the same run, and the share of proved claims it proves for all shapes.

Times are the best of --repeat runs (wall clock, ``time.perf_counter``; other load on the machine
only ever adds time). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAYER = HERE / "dense_sigmoid_mse.toml"
BATCH_FILE = ROOT / "backpropcheck" / "derivations" / "dense_column_batch.toml"


def best_alternating(fns: list[Callable[[], object]], repeat: int) -> list[tuple[float, float]]:
    """(least wall, least process CPU) seconds of each of ``fns`` over ``repeat`` rounds, each round running
    them in turn, so that load on the machine hits all alike; after one untimed warm-up round (the first
    call's costs: lazy imports, the allocator learning the sizes)."""
    for fn in fns:
        fn()
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            started, cpu = time.perf_counter(), time.process_time()
            fn()
            cpus[k].append(time.process_time() - cpu)
            walls[k].append(time.perf_counter() - started)
    return [(min(w), min(c)) for w, c in zip(walls, cpus)]


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` runs: on a shared machine the least disturbed estimate of the cost."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


# ---------------------------------------------------------------------------
# (a) symbolic


def naive_sympy(n: int, m: int) -> int:
    """Per-entry diff of the scalar loss, then simplify(claim - truth); returns the entries not reduced to 0."""
    import sympy as sp

    W = [[sp.Symbol(f"W[{j},{i}]", real=True) for i in range(n)] for j in range(m)]
    a = [sp.Symbol(f"a[{i}]", real=True) for i in range(n)]
    b = [sp.Symbol(f"b[{j}]", real=True) for j in range(m)]
    y = [sp.Symbol(f"y[{j}]", real=True) for j in range(m)]
    z = [sp.Add(*[W[j][i] * a[i] for i in range(n)]) + b[j] for j in range(m)]
    h = [1 / (1 + sp.exp(-zj)) for zj in z]
    loss = sp.Add(*[(h[j] - y[j]) ** 2 for j in range(m)]) / 2
    grad_z = [(h[j] - y[j]) * sp.exp(-z[j]) / (1 + sp.exp(-z[j])) ** 2 for j in range(m)]
    pairs = [(grad_z[j] * a[i], W[j][i]) for j in range(m) for i in range(n)]
    pairs += [(grad_z[j], b[j]) for j in range(m)]
    pairs += [(sp.Add(*[W[j][i] * grad_z[j] for j in range(m)]), a[i]) for i in range(n)]
    return sum(1 for claim, x in pairs if sp.simplify(claim - sp.diff(loss, x)) != 0)


def backpropcheck_symbolic(n: int, m: int) -> int:
    """The symbolic check of bench/dense_sigmoid_mse.toml at (n, m); returns the entries not proved."""
    import random

    import numpy as np

    from backpropcheck.engines.symbolic import SymbolicTruth
    from backpropcheck.loader import load

    d = load(str(LAYER))
    truth = SymbolicTruth(d, {"n": n, "m": m})
    rng = random.Random(0)
    failed = 0
    for claim in d.claims:
        target = truth.grads[claim.target]
        claimed = np.broadcast_to(truth.claim_value(claim.node), target.shape)
        for idx in np.ndindex(*target.shape):
            failed += truth.decide(claimed[idx] - target[idx], rng).zero is not True
    return failed


def _fresh(check: Callable[[int, int], int], n: int, m: int) -> None:
    """One run with SymPy's cache cleared first, so neither side profits from the other."""
    from sympy.core.cache import clear_cache

    clear_cache()
    failed = check(n, m)
    assert failed == 0, f"{check.__name__}: {failed} entries not reduced to 0"


def symbolic_section(sizes: list[tuple[int, int]], repeat: int) -> None:
    print("(a) symbolic: one dense sigmoid layer, E = sum((sigmoid(W a + b) - y)^2) / 2, claims for z, W, b, a")
    print(f"    {'(n, m)':>9} {'entries':>8} {'naive SymPy':>12} {'backpropcheck':>14} {'ratio':>8}")
    _fresh(naive_sympy, 2, 3)  # warm-up: both routes' imports happen before any timing
    _fresh(backpropcheck_symbolic, 2, 3)
    for n, m in sizes:
        runs = repeat if n * m <= 100 else 1
        t_ours = best_time(lambda n=n, m=m: _fresh(backpropcheck_symbolic, n, m), repeat)
        t_naive = best_time(lambda n=n, m=m: _fresh(naive_sympy, n, m), runs)
        entries = m * n + m + m + n
        note = "" if runs == repeat else f"  (naive: {runs} run)"
        print(f"    {f'({n}, {m})':>9} {entries:>8} {t_naive:>11.2f}s {t_ours:>13.3f}s {t_naive / t_ours:>7.1f}x{note}")
    print("    target: >= 20x at (16, 17); both sides decide every entry exactly, SymPy's cache cleared before each run")


# ---------------------------------------------------------------------------
# (b) numeric


def numeric_section(widths: list[int], batches: list[int], repeat: int, fd_sample: int) -> None:
    from backpropcheck.loader import load

    d = load(str(BATCH_FILE))
    print(f"(b) numeric: {BATCH_FILE.relative_to(ROOT)} (Z = W @ X + b[:, None], H = sigmoid(Z); 4 claims), "
          "n = m = width, one trial")
    jax = _jax_available()
    print(f"    {'width':>5} {'batch':>5} {'fwd+claims':>11} {'check':>10} {'ratio':>6} {'cpu':>5} {'draw':>7} "
          f"{'full FD (extrap.)':>18} {'FD ratio':>10}" + (f" {'jax.grad+cmp':>13} {'check/jax':>9}" if jax else ""))
    for batch in batches:
        for width in widths:
            jax_row = _jax_grad_row(width, batch) if jax else None
            t_base, t_check, t_fd, cpu, t_draw, t_jax = _numeric_row(d, {"n": width, "m": width, "B": batch}, repeat,
                                                                     fd_sample, jax_row)
            row = (f"    {width:>5} {batch:>5} {t_base * 1e3:>8.2f} ms {t_check * 1e3:>7.2f} ms {t_check / t_base:>6.2f} "
                   f"{cpu:>5.2f} {t_draw / t_base:>6.2f}x {_human(t_fd):>18} {t_fd / t_check:>9.0f}x")
            if t_jax is not None:
                row += f" {t_jax * 1e3:>10.2f} ms {t_check / t_jax:>9.2f}"
            print(row)
    print(f"    ratio = check / (forward + claims) in wall time, cpu = the same in process CPU time: target <= 3 "
          f"at width >= 1024; the two run in turn, {repeat} times each after a warm-up, the least time of each "
          f"shown. draw = drawing the check's inputs alone (in the check, not in the baseline), in units of "
          f"forward + claims. Full FD is extrapolated from "
          f"{fd_sample} timed one-entry passes per row (one-sided, one pass per parameter).")
    if jax:
        print("    jax.grad+cmp = jax.grad of the same layer's <G, H> (float64, eager, warm) plus the four claims in "
              "NumPy and their comparison, run in turn with the other three (the least time shown); "
              "target check/jax <= 0.5")
    else:
        print("    jax.grad comparison: skipped — jax is not importable here")
    _third_party(widths, batches, repeat)


def _numeric_row(d, sizes: dict[str, int], repeat: int, fd_sample: int,
                 jax_row: Callable[[], object] | None) -> tuple[float, float, float, float, float, float | None]:
    """(forward + claims, backpropcheck's check, full finite differences extrapolated) in wall seconds,
    the check / (forward + claims) ratio in CPU time, the wall seconds of the check's input draw, and of
    ``jax_row`` (the jax.grad comparison) if given, each run in turn with the others."""
    import numpy as np

    from backpropcheck.checker import Options, check_derivation
    from backpropcheck.engines.evaluate import evaluate, evaluate_definition
    from backpropcheck.engines.numeric import concrete_shapes, numeric_backend, rng_for, run_trial, sample_input
    from backpropcheck.limits import DEFAULT_LIMITS

    limits = dataclasses.replace(DEFAULT_LIMITS, max_entries=10**9)
    options = Options(symbolic=False, trials=1, dims=tuple(sizes.items()), limits=limits)
    run = run_trial(d, sizes, rng_for(0, d.path, 0), 0)
    backend = numeric_backend(d, 0)
    inputs = {k: run.values[k] for k in d.inputs}
    grads = {f"grad_{k}": v for k, v in run.grads.items()}

    def forward(env: dict) -> dict:
        for f in d.forward:
            env[f.name] = evaluate_definition(f.root, f.index, env, sizes, backend)
        return env

    def forward_and_claims() -> None:
        env = forward(dict(inputs))
        env.update(grads)
        for claim in d.claims:
            evaluate(claim.node, env, sizes, backend)

    def check() -> None:
        result = check_derivation(d, options)
        assert all(c.ok for c in result.claims), result

    shapes = concrete_shapes(d, sizes)
    rng = rng_for(0, d.path, 0)

    def draw() -> None:  # what the check draws before its forward pass (not part of the baseline)
        for name, inp in d.inputs.items():
            sample_input(inp, shapes[name], rng, sizes)

    timed = best_alternating([forward_and_claims, check, draw] + ([jax_row] if jax_row else []), repeat)
    (t_base, cpu_base), (t_check, cpu_check), (t_draw, _) = timed[:3]
    t_jax = timed[3][0] if jax_row else None
    cpu_ratio = cpu_check / cpu_base
    # full finite differences: one forward pass (and E = <grad_H, H>) per parameter, timed on a sample
    names = [n for n, inp in d.inputs.items() if not inp.constant]
    count = sum(inputs[n].size for n in names)
    rng_fd = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(fd_sample):
        name = names[int(rng_fd.integers(len(names)))]
        env = dict(inputs)
        bumped = inputs[name].copy()
        bumped.flat[int(rng_fd.integers(bumped.size))] += 1e-6
        env[name] = bumped
        float(np.vdot(grads["grad_H"], forward(env)["H"]))
    t_fd = (time.perf_counter() - started) / fd_sample * count
    return t_base, t_check, t_fd, cpu_ratio, t_draw, t_jax


def _third_party(widths: list[int], batches: list[int], repeat: int) -> None:
    """jax.test_util.check_grads / torch.autograd.gradcheck(fast_mode=True) on the same layer, if importable."""
    import numpy as np

    for label, module, runner in (("jax.test_util.check_grads", "jax", _jax_check),
                                  ("torch.autograd.gradcheck(fast_mode=True)", "torch", _torch_check)):
        try:
            __import__(module)
        except ImportError:
            print(f"    {label}: skipped — {module} is not importable here")
            continue
        for batch in batches:
            for width in widths:
                rng = np.random.default_rng(0)
                arrays = (rng.normal(size=(width, width)) / np.sqrt(width), rng.normal(size=(width, batch)),
                          rng.normal(size=width), rng.normal(size=(width, batch)))
                try:
                    seconds = best_time(lambda arrays=arrays, runner=runner: runner(*arrays), repeat)
                    print(f"    {label}: width {width}, batch {batch}: {seconds:.3f} s (in-process)")
                except Exception as exc:  # noqa: BLE001 - a third-party baseline must not stop the bench
                    print(f"    {label}: width {width}, batch {batch}: failed ({type(exc).__name__}: {exc})")


def _jax_available() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _jax_grad_row(width: int, batch: int) -> Callable[[], None]:
    """The jax.grad comparison of the four claims of dense_column_batch at this size, ready to time."""
    import numpy as np

    rng = np.random.default_rng(0)
    W, X = rng.normal(size=(width, width)) / np.sqrt(width), rng.normal(size=(width, batch))
    b, G = rng.normal(size=width), rng.normal(size=(width, batch))
    return lambda: _jax_grad_compare(W, X, b, G)


def _jax_grad_compare(W, X, b, G) -> None:
    """``jax.grad`` of <G, sigmoid(W X + b)> against the claims grad_W, grad_b, grad_X (and grad_Z
    through the loss in Z), each claim evaluated in NumPy: what a user would write instead."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def loss(W, X, b):
        return jnp.vdot(G, jax.nn.sigmoid(W @ X + b[:, None]))

    def loss_z(Z):
        return jnp.vdot(G, jax.nn.sigmoid(Z))

    Z = W @ X + b[:, None]
    gW, gX, gb = jax.grad(loss, argnums=(0, 1, 2))(W, X, b)
    gZ = jax.grad(loss_z)(Z)
    s = 1 / (1 + np.exp(-Z))
    claim_Z = G * s * (1 - s)
    for claimed, true in ((claim_Z, gZ), (claim_Z @ X.T, gW), (claim_Z.sum(axis=1), gb), (W.T @ claim_Z, gX)):
        assert np.allclose(claimed, np.asarray(true), rtol=1e-7, atol=1e-9)


def _jax_check(W, X, b, G) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads

    def loss(W, X, b):
        return jnp.vdot(G, jax.nn.sigmoid(W @ X + b[:, None]))

    check_grads(loss, (jnp.asarray(W), jnp.asarray(X), jnp.asarray(b)), order=1, modes=["rev"])


def _torch_check(W, X, b, G) -> None:
    import torch

    args = tuple(torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (W, X, b))
    upstream = torch.tensor(G, dtype=torch.float64)

    def loss(W, X, b):
        return (upstream * torch.sigmoid(W @ X + b[:, None])).sum()

    assert torch.autograd.gradcheck(loss, args, fast_mode=True)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.2f} s"


# ---------------------------------------------------------------------------
# (c) wall time of the command line


FLOOR = [sys.executable, "-c", "import sympy, numpy"]  # the import floor the command line is measured against


def against_floor(args: list[str], repeat: int) -> tuple[float, float]:
    """(least wall seconds of the command ``args``, least of the import floor), the two run in turn
    ``repeat`` times after a warm-up round (:func:`best_alternating`), so that load on the machine hits
    both alike: measured one after the other, a busy spell during either would move their ratio."""
    def run(command: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run(command, cwd=ROOT, capture_output=True, check=False)

    (seconds, _), (floor, _) = best_alternating([run(args), run(FLOOR)], repeat)
    return seconds, floor


def wall_section(repeat: int) -> None:
    exe = [sys.executable, "-m", "backpropcheck"]
    print("(c) wall time of the command line (subprocess, including interpreter start and imports), and as a "
          f"multiple of the import floor (python -c 'import sympy, numpy'), each run in turn with the floor, "
          f"best of {repeat}")
    for label, args in (
        ("backpropcheck --version", ["--version"]),
        ("backpropcheck check derivations/dense_column.toml", ["check", "derivations/dense_column.toml"]),
        ("backpropcheck check derivations/dense_column.toml --no-symbolic",
         ["check", "derivations/dense_column.toml", "--no-symbolic"]),
        ("backpropcheck check derivations/ -q", ["check", "derivations", "-q"]),
        ("backpropcheck check derivations/ -q --jobs 1", ["check", "derivations", "-q", "--jobs", "1"]),
    ):
        seconds, floor = against_floor(exe + args, repeat)
        print(f"    {label:<66} {seconds:7.2f} s {seconds / floor:5.1f}x floor (floor {floor:.2f} s)")
    print("    targets: --version imports neither NumPy nor SymPy; the seed check <= 1.5x the floor; "
          "check derivations/ <= 6x the floor (with --jobs the machine's cores, load average above)")


# ---------------------------------------------------------------------------
# (d) the cost of the proof-scope certificate


def scope_section(repeat: int) -> None:
    from backpropcheck.checker import Options, check_path, find_files

    files = find_files([str(ROOT / "derivations")])
    print(f"(d) scope: check derivations/ ({len(files)} files) in-process, with and without the all-shapes "
          "certificate")
    results: dict[bool, list] = {}

    def run(scope: bool) -> None:
        results[scope] = [check_path(f, Options(scope=scope)) for f in files]

    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(repeat):  # alternating, so that load on the machine hits both alike
        for scope in (False, True):
            started, cpu = time.perf_counter(), time.process_time()
            run(scope)
            times[scope].append((time.perf_counter() - started, time.process_time() - cpu))
    for scope, label in ((False, "without the certificate"), (True, "with the certificate")):
        wall, cpu = min(times[scope])
        print(f"    {label:<28} {wall:7.2f} s wall {cpu:7.2f} s CPU  (best of {repeat})")
    proved = [c for r in results[True] for c in r.claims if c.verdict == "proved"]
    scoped = [c for c in proved if (c.symbolic or {}).get("scope") == "all-shapes"]
    print(f"    proved claims: {len(proved)}, proved for all shapes: {len(scoped)} "
          f"({100 * len(scoped) / max(len(proved), 1):.1f} %); target >= 80 %")


# ---------------------------------------------------------------------------
# (e) real blocks, and the wall time against the import floor


def blocks_section(repeat: int) -> None:
    """Per-claim symbolic seconds of the published blocks in bench/blocks (and which are only verified),
    and the command line's wall time as a multiple of ``python -c "import sympy, numpy"``."""
    exe = [sys.executable, "-m", "backpropcheck"]
    print("(e) blocks, and wall time over the import floor (python -c 'import sympy, numpy'), each command run "
          f"in turn with the floor, best of {repeat}")
    for path in sorted((ROOT / "bench" / "blocks").glob("*.toml")):
        seconds, floor = against_floor(exe + ["check", str(path.relative_to(ROOT)), "-q"], repeat)
        run = subprocess.run(exe + ["check", str(path.relative_to(ROOT)), "--format", "json"], cwd=ROOT,
                             capture_output=True, text=True, check=False)
        claims = [c for f in json.loads(run.stdout)["files"] for c in f["claims"]]
        verified = [c["name"] for c in claims if c["verdict"] == "verified"]
        print(f"    {path.name:<36} {seconds:6.2f} s wall ({seconds / floor:4.1f}x floor); "
              f"{sum(c['verdict'] == 'proved' for c in claims)}/{len(claims)} proved; "
              f"only verified: {', '.join(verified) or 'none'}")
        per_claim = [f"{c['name']} {(c.get('symbolic') or {}).get('seconds', 0.0):.2f}"
                     + ("" if c["verdict"] == "proved" else f" ({c['verdict']})") for c in claims]
        for k in range(0, len(per_claim), 6):
            print("        symbolic s: " + ", ".join(per_claim[k:k + 6]))
    for label, args in (("check derivations/dense_column.toml", ["check", "derivations/dense_column.toml"]),
                        ("check derivations -q", ["check", "derivations", "-q"])):
        seconds, floor = against_floor(exe + args, repeat)
        print(f"    {label:<36} {seconds:6.2f} s wall ({seconds / floor:4.1f}x floor of {floor:.2f} s)")
    print("    targets: the GPT-2 block <= 3 s; check derivations <= 6x the floor; dense_column <= 1.5x; "
          "no true claim only verified. Per-claim symbolic seconds include a share of the truth built for them")


def _keep_heap() -> None:
    """Let glibc keep freed memory for the next allocation (trim threshold 1 GiB, arrays up to 32 MiB from the
    heap). By default it returns a freed block to the system once 2x the largest block freed so far is free at
    the top of the heap: the baseline's one 8 MB result is then reused run after run, while the check's three
    (the input W, the true gradient, the claim) are faulted in again each time (a third of its time at width 1024,
    batch 1, here) -- unless the process once freed a block of 24 MB or more. This puts both sides in the
    reusing state; without it, each row depends on what the rows before it allocated."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        print("    --keep-heap: not glibc here, ignored")
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 32 << 20)


def _compile_package() -> None:
    """Byte-compile the package, as ``pip install`` does: an editable install under
    PYTHONDONTWRITEBYTECODE (set on some machines) recompiles every module of ours in every command
    line timed, 0.2 s here, while NumPy and SymPy (the floor) load from their installed bytecode."""
    import compileall

    compileall.compile_dir(str(ROOT / "backpropcheck"), quiet=1)
    print("(the package's modules byte-compiled first, as pip install does)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also the symbolic layer at (32, 33)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is shown)")
    parser.add_argument("--only", choices=["symbolic", "numeric", "wall", "scope", "blocks"], action="append")
    parser.add_argument("--widths", default="64,256,1024,4096")
    parser.add_argument("--batches", default="32,256")
    parser.add_argument("--fd-sample", type=int, default=10, help="timed finite-difference passes per row")
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc keeps freed memory for reuse (numeric rows: no page faults in repeated runs)")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="threads for NumPy's BLAS (set before NumPy loads); 1 is steadier on a shared machine")
    args = parser.parse_args()
    if args.keep_heap:
        _keep_heap()
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    sections = args.only or ["symbolic", "numeric", "wall", "scope", "blocks"]
    sys.path.insert(0, str(ROOT))
    if {"wall", "blocks"} & set(sections):
        _compile_package()
    import numpy
    import sympy

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, BLAS threads {threads}, "
          f"load average {load[0]:.2f} at start; "
          f"Python {platform.python_version()}, NumPy {numpy.__version__}, SymPy {sympy.__version__}")
    if "symbolic" in sections:
        sizes = [(2, 3), (8, 9), (16, 17)] + ([(32, 33)] if args.full else [])
        symbolic_section(sizes, args.repeat)
    if "numeric" in sections:
        numeric_section([int(w) for w in args.widths.split(",")], [int(b) for b in args.batches.split(",")],
                        args.repeat, args.fd_sample)
    if "wall" in sections:
        wall_section(args.repeat)
    if "scope" in sections:
        scope_section(args.repeat)
    if "blocks" in sections:
        blocks_section(args.repeat)


if __name__ == "__main__":
    main()
