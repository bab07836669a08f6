"""Trials, verdicts, counterexamples: the judgement of every claim of a file.

Numeric trials first (fast, at random distinct dims); claims that survive them
go to the symbolic engine at a few small dim assignments. ``proved`` needs
both; ``verified`` means the symbolic check was skipped or gave up, and says why.
"""

from __future__ import annotations

import contextlib
import math
import random
import shlex
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DerivationError, ShapeError
from .limits import DEFAULT_LIMITS, Limits, exceeded
from .loader import load
from .model import Claim, Derivation

VERDICTS = ("proved", "verified", "refuted", "shape-error", "error")


@dataclass(frozen=True)
class Options:
    """Settings for one run; ``None`` means "the file's [check] value, else the default"."""

    seed: int | None = None
    trials: int | None = None
    shapes: int | None = None
    max_dim: int | None = None
    rtol: float | None = None
    atol: float | None = None
    dims: tuple[tuple[str, int], ...] = ()
    symbolic: bool = True
    timeout: float = 10.0
    limits: Limits = DEFAULT_LIMITS


DEFAULTS = {"seed": 0, "trials": 20, "shapes": 3, "max_dim": 64, "rtol": 1e-7, "atol": 1e-12}


@dataclass
class Counterexample:
    dims: dict[str, int]
    seed: int
    trial: int | str
    index: list[int]
    true: float
    claimed: float
    expression: str | None
    command: str


@dataclass
class ClaimResult:
    name: str
    expr: str
    verdict: str
    expected: str
    ok: bool
    message: str
    symbolic: dict[str, Any] | None = None
    numeric: dict[str, Any] | None = None
    counterexample: Counterexample | None = None
    diagnosis: str | None = None
    depends_on_refuted: list[str] = field(default_factory=list)


@dataclass
class FileResult:
    path: str
    title: str
    status: str  # passed | failed | error
    error: str | None
    claims: list[ClaimResult] = field(default_factory=list)
    seconds: float = 0.0


class SymbolicTimeout(Exception):
    pass


# what SymPy may raise on a hostile expression: the claim keeps its numeric verdict
_SYMBOLIC_FAILURES = (RecursionError, MemoryError, ValueError, TypeError, ArithmeticError, DerivationError)


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

    # The alarm repeats every 0.1 s after the budget: a raise that lands inside a __del__, a weakref
    # or gc callback is swallowed by Python ("Exception ignored in ..."), and must not end the budget.
    armed = [True]

    def on_alarm(signum, frame):
        if armed[0]:
            raise SymbolicTimeout()

    previous = signal.signal(signal.SIGPROF, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.1)
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


def _remaining(budget: float, spent: float) -> float:
    """What is left of a budget (0 means no budget at all); an exhausted one expires at once."""
    return max(budget - spent, 1e-6) if budget > 0 else 0.0


def settings(d: Derivation, options: Options) -> dict[str, Any]:
    out = {}
    for key, default in DEFAULTS.items():
        given = vars(options)[key]
        from_file = vars(d.check)[key]
        out[key] = given if given is not None else (from_file if from_file is not None else default)
    return out


def draw_dims(d: Derivation, rng: np.random.Generator, low: int, high: int,
              fixed: dict[str, int]) -> dict[str, int]:
    """Distinct sizes in [low, high] for every dim not fixed, so a square coincidence cannot pass."""
    free = [n for n in d.dims if n not in fixed]
    for _ in range(50):
        pool = np.arange(low, high + 1)
        values = rng.choice(pool, size=len(free), replace=len(free) > len(pool))
        sizes = dict(fixed)
        sizes.update({n: int(v) for n, v in zip(free, values)})
        if all(dim.value(sizes) >= 1 for name in _all_shaped(d) for dim in d.shape_of(name)):
            return sizes
    raise DerivationError("no dim sizes make every shape positive; check the affine dims")


def _all_shaped(d: Derivation) -> list[str]:
    return list(d.inputs) + [f.name for f in d.forward + d.backward]


def _entries(d: Derivation, sizes: dict[str, int]) -> int:
    return sum(math.prod(dim.value(sizes) for dim in d.shape_of(n)) for n in _all_shaped(d))


def _spaces(d: Derivation, claims: list[Claim], limits: Limits) -> list[tuple[str, tuple]]:
    """Every array the engines build beyond the named tensors, as a tuple of dims, with its key.

    That is each intermediate value of a matrix-form expression (its rank must be at most
    ``max_rank``; the numeric tape keeps them all), each index-form definition's index space
    (one axis per free index and per sum) and each einsum's iteration space. With the named
    tensors, their entries at the drawn dims are bounded by ``max_entries`` before anything
    is allocated: a bound on memory, and on the work of a loop in C that no alarm interrupts.
    """
    from .errors import LimitError
    from .lang.ir import Call, Var
    from .lang.ops import parse_einsum
    from .lang.shapes import infer

    out: list[tuple[str, tuple]] = []
    roots = [(f.key, f.node) for f in d.forward + d.backward if f.node is not None]
    if d.loss.expression is not None:
        roots.append(("loss.E", d.loss.expression))
    roots += [(f"claims.{c.name}", c.node) for c in claims if c.node is not None]
    indexed = [(f.key, f.index) for f in d.forward + d.backward]
    indexed += [(f"claims.{c.name}", c.index) for c in claims]  # an index-form claim has its space too
    for key, index in indexed:
        if index is not None:
            if index.rank > limits.max_rank:
                raise LimitError(exceeded("the rank of the index space (free indices plus sums)", index.rank,
                                          "max_rank", limits), key=key)
            out.append((key, tuple(index.ranges.values())))
    for key, root in roots:
        shapes: dict[int, tuple] = {}
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            kids = node.children()
            if kids and not ready:
                stack.append((node, True))
                stack.extend((k, False) for k in kids)
                continue
            if isinstance(node, Var):
                shape = d.shape_of(node.name)
            elif isinstance(node, Call):
                env = {f"#{k}": shapes[id(kid)] for k, kid in enumerate(kids)}
                shape = infer(replace(node, args=tuple(Var(kid.col, f"#{k}") for k, kid in enumerate(kids))), env)
                if node.op == "einsum":
                    subs, _ = parse_einsum(node.params["spec"], [len(env[f"#{k}"]) for k in range(len(kids))])
                    letters = {c: dim for sub, k in zip(subs, range(len(kids))) for c, dim in zip(sub, env[f"#{k}"])}
                    out.append((key, tuple(letters.values())))
            else:
                shape = ()
            if len(shape) > limits.max_rank:
                raise LimitError(exceeded(f"the rank of `{node.src}`", len(shape), "max_rank", limits),
                                 key=key, column=node.col)
            shapes[id(node)] = shape
            if isinstance(node, Call):
                out.append((key, shape))
    return out


def _work(d: Derivation, spaces: list[tuple[str, tuple]], sizes: dict[str, int]) -> tuple[int, str | None]:
    """Entries of every tensor and every space at these dims (Python ints: no overflow), and the
    key of the largest space."""
    total = _entries(d, sizes)
    best: tuple[int, str | None] = (0, None)
    for key, dims in spaces:
        n = math.prod(dim.value(sizes) for dim in dims)
        total += n
        best = max(best, (n, key), key=lambda b: b[0])
    return total, best[1]


def reproduce_command(path: str, seed: int, options: Options, cfg: dict[str, Any]) -> str:
    parts = ["backpropcheck", "check", path, "--seed", str(seed)]
    for key in ("trials", "shapes", "max_dim", "rtol", "atol"):
        if vars(options)[key] is not None:
            parts += [f"--{key.replace('_', '-')}", str(cfg[key])]
    if options.dims:
        parts += ["--dims", ",".join(f"{k}={v}" for k, v in options.dims)]
    if not options.symbolic:
        parts.append("--no-symbolic")
    return shlex.join(parts)


def check_path(path: str, options: Options = Options()) -> FileResult:
    """Load, check and judge one file; an invalid file is a result too, never an exception."""
    started = time.perf_counter()
    try:
        d = load(path, options.limits)
    except DerivationError as exc:
        return FileResult(path, "", "error", str(exc), seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - last resort, as below
        message = f"{path}: internal error ({type(exc).__name__}: {exc}); please report this file"
        return FileResult(path, "", "error", message, seconds=time.perf_counter() - started)
    try:
        with np.errstate(all="ignore"):  # NaN/Inf are reported as values (NumericProblem), never as warnings
            result = check_derivation(d, options)
    except Exception as exc:  # noqa: BLE001 - last resort: one file's bug must not stop the run
        message = f"{path}: internal error ({type(exc).__name__}: {exc}); please report this file"
        return FileResult(path, d.title, "error", message, seconds=time.perf_counter() - started)
    result.seconds = time.perf_counter() - started
    return result


def check_derivation(d: Derivation, options: Options = Options()) -> FileResult:
    return _FileCheck(d, options).run()


class _FileCheck:
    def __init__(self, d: Derivation, options: Options):
        self.d = d
        self.options = options
        self.cfg = settings(d, options)
        self.fixed = dict(options.dims)
        unknown = set(self.fixed) - set(d.dims)
        if unknown:
            raise_later = ", ".join(sorted(unknown))
            self.fixed = {k: v for k, v in self.fixed.items() if k in d.dims}
            self.note = f"--dims names {raise_later}, which this file does not declare"
        else:
            self.note = None

    def run(self) -> FileResult:
        d = self.d
        results: dict[str, ClaimResult] = {}
        for claim in d.claims:
            if claim.error is not None:
                verdict = "shape-error" if isinstance(claim.error, ShapeError) else "error"
                message = claim.error.message + (f" (hint: {claim.error.hint})" if claim.error.hint else "")
                if verdict == "error":  # name the file, key and column, as for a file error
                    message = f"{claim.error.where()}: {message}"
                results[claim.name] = self._result(claim, verdict, message)
        live = [c for c in d.claims if c.name not in results]
        try:
            self.spaces = _spaces(d, live, self.options.limits)
            numeric = self._numeric(live)
        except DerivationError as exc:
            return FileResult(d.path, d.title, "error", str(exc.located(file=d.path)))
        except _NumericTrouble as exc:
            return FileResult(d.path, d.title, "error", f"{d.path}: {exc}")
        symbolic = self._symbolic([c for c in live if numeric[c.name]["failure"] is None])
        for claim in live:
            results[claim.name] = self._judge(claim, numeric[claim.name], symbolic.get(claim.name))
        refuted = {n for n, r in results.items() if r.verdict == "refuted"}
        for claim in d.claims:
            results[claim.name].depends_on_refuted = sorted(u for u in claim.uses if u in refuted)
        claims = [results[c.name] for c in d.claims]
        status = "passed" if all(c.ok for c in claims) else "failed"
        if any(c.verdict == "error" for c in claims):
            status = "error"
        return FileResult(d.path, d.title, status, self.note, claims)

    # -- numeric ---------------------------------------------------------------

    def _numeric(self, claims: list[Claim]) -> dict[str, dict[str, Any]]:
        from .engines.numeric import NumericProblem, compare, rng_for, run_trial

        cfg = self.cfg
        limits = self.options.limits
        if cfg["max_dim"] > limits.max_dim:
            raise DerivationError(exceeded("the largest random dim (--max-dim or [check] max_dim)", cfg["max_dim"],
                                           "max_dim", limits))
        for key in ("trials", "shapes"):
            if cfg[key] > vars(limits)[f"max_{key}"]:
                raise DerivationError(exceeded(f"the number of {key}", cfg[key], f"max_{key}", limits))
        for name, value in self.fixed.items():
            if not 1 <= value <= limits.max_dim:
                raise DerivationError(exceeded(f"--dims {name}", value, "max_dim", limits))
        stats = {c.name: {"trials": 0, "max_abs_err": 0.0, "max_rel_err": 0.0, "failure": None, "error": None}
                 for c in claims}
        total = 0
        for trial in range(cfg["trials"]):
            rng = rng_for(cfg["seed"], self.d.path, trial)
            sizes = draw_dims(self.d, rng, 2, max(2, cfg["max_dim"]), self.fixed)
            entries, key = _work(self.d, self.spaces, sizes)
            if entries > limits.max_entries:
                raise DerivationError(exceeded(f"the entries of all arrays at dims {_fmt_dims(sizes)}", entries,
                                               "max_entries", limits), key=key)
            total += entries  # checked before the trial runs: the numeric work of a file is bounded too
            if total > limits.max_total_entries:
                raise DerivationError(exceeded(f"the entries of all arrays summed over trials 0..{trial}", total,
                                               "max_total_entries", limits))
            try:
                run = run_trial(self.d, sizes, rng, trial)
            except NumericProblem as exc:
                raise _NumericTrouble(f"trial {trial} at dims {_fmt_dims(sizes)}: {exc}") from None
            for claim in claims:
                s = stats[claim.name]
                if s["failure"] is not None or s["error"] is not None:
                    continue
                if claim.name in run.claim_errors:
                    s["error"] = run.claim_errors[claim.name]
                    continue
                ok, abs_err, rel_err, index = compare(
                    run.claims[claim.name], run.grads[claim.target], cfg["rtol"], cfg["atol"]
                )
                s["trials"] += 1
                s["max_abs_err"] = max(s["max_abs_err"], abs_err)
                s["max_rel_err"] = max(s["max_rel_err"], rel_err)
                if not ok:
                    s["failure"] = (trial, sizes, index, run)
            del run  # at production dims, one trial's arrays at a time
        return stats

    # -- symbolic ---------------------------------------------------------------

    def _small_shapes(self) -> list[dict[str, int]]:
        from .engines.numeric import rng_for

        n = len(self.d.dims)
        out = []
        for k in range(self.cfg["shapes"]):
            rng = rng_for(self.cfg["seed"], self.d.path, 100_000 + k)
            sizes = draw_dims(self.d, rng, 2, 1 + n + (0 if k == 0 else 1), {})
            if sizes not in out:
                out.append(sizes)
        return out

    def _symbolic(self, claims: list[Claim]) -> dict[str, dict[str, Any]]:
        if not claims:
            return {}
        if not self.options.symbolic:
            return {c.name: {"status": "skipped", "reason": "the symbolic check was skipped (--no-symbolic)"}
                    for c in claims}
        from .engines.symbolic import SymbolicTruth

        budget = self.options.timeout
        out: dict[str, dict[str, Any]] = {c.name: {"status": "proved", "shapes": [], "seconds": 0.0}
                                          for c in claims}
        pending = list(claims)
        # the budget is per claim over all the small dims (and as much again for the shared truth),
        # so a file's symbolic time is at most (claims + 1) x --timeout, whatever [check] shapes says
        spent = {c.name: 0.0 for c in claims}  # CPU seconds, like the budget's timer
        truth_spent = 0.0
        try:
            small = self._small_shapes()
        except DerivationError as exc:
            return {c.name: {"status": "gave-up", "reason": f"no small dims for the symbolic check: {exc.message}"}
                    for c in claims}
        for sizes in small:
            if not pending:
                break
            entries, _ = _work(self.d, self.spaces, sizes)
            if entries > self.options.limits.max_symbolic_entries:  # one SymPy expression per entry
                reason = exceeded(f"the entries of all arrays at the symbolic dims {_fmt_dims(sizes)}", entries,
                                  "max_symbolic_entries", self.options.limits)
                for c in pending:
                    out[c.name].update(status="gave-up", reason=reason)
                return out
            started = time.perf_counter()
            cpu = time.process_time()
            try:
                with time_budget(_remaining(budget, truth_spent)):
                    truth = SymbolicTruth(self.d, sizes)
            except SymbolicTimeout:
                for c in pending:
                    out[c.name].update(status="timeout", reason=(
                        f"building the per-neuron truth at dims {_fmt_dims(sizes)} ran past the "
                        f"{budget:g} s budget (--timeout)"))
                return out
            except _SYMBOLIC_FAILURES as exc:
                for c in pending:
                    out[c.name].update(status="gave-up", reason=f"the symbolic engine failed: {exc}")
                return out
            shared = time.perf_counter() - started
            truth_spent += time.process_time() - cpu
            rng = random.Random(zlib.crc32(f"{self.cfg['seed']}:{self.d.path}".encode()))
            for claim in list(pending):
                record = out[claim.name]
                started = time.perf_counter()
                cpu = time.process_time()
                try:
                    with time_budget(_remaining(budget, spent[claim.name])):
                        decision = self._decide(truth, claim, rng)
                except SymbolicTimeout:
                    record.update(status="timeout", reason=(
                        f"the symbolic check at dims {_fmt_dims(sizes)} ran past the {budget:g} s budget "
                        f"(--timeout)"))
                    pending.remove(claim)
                    continue
                except _SYMBOLIC_FAILURES as exc:
                    record.update(status="gave-up", reason=f"the symbolic engine failed: {exc}")
                    pending.remove(claim)
                    continue
                spent[claim.name] += time.process_time() - cpu
                record["seconds"] += time.perf_counter() - started + shared / max(len(pending), 1)
                if decision is None:
                    record["shapes"].append(sizes)
                    continue
                pending.remove(claim)
                if decision[0] == "undecided":
                    record.update(status="undecided", reason=f"at dims {_fmt_dims(sizes)}: {decision[1]}")
                else:
                    record.update(status="counterexample", sizes=sizes, detail=decision[1])
        return out

    def _decide(self, truth, claim: Claim, rng: random.Random):
        """None if every entry is proved equal; else ("undecided", why) or ("refuted", detail)."""
        if truth.step_zero(claim.node, claim.target, claim.index):
            return None
        claimed = truth.claim_value(claim.node, claim.index)
        target = truth.grads[claim.target]
        claimed = np.broadcast_to(claimed, target.shape)
        for idx in np.ndindex(*target.shape):
            decision = truth.decide(claimed[idx] - target[idx], rng)
            if decision.zero is None:
                return ("undecided", f"entry {list(idx)}: {decision.how}")
            if decision.zero is False:
                return ("refuted", {"index": list(idx), "difference": decision.value,
                                    "expression": str(target[idx])})
        return None

    # -- verdicts ------------------------------------------------------------------

    def _result(self, claim: Claim, verdict: str, message: str, **extra) -> ClaimResult:
        expected = claim.expected
        if verdict in ("proved", "verified"):
            ok = expected == "holds"
            if not ok:
                message = f"expected {expected}, but the claim holds ({verdict}). " + message
        elif verdict == "error":
            ok = False
        else:
            ok = expected == verdict
            if ok:
                message = f"{verdict} as expected: " + message
        return ClaimResult(claim.name, claim.text, verdict, expected, ok, message, **extra)

    def _judge(self, claim: Claim, num: dict[str, Any], sym: dict[str, Any] | None) -> ClaimResult:
        numeric = {k: num[k] for k in ("trials", "max_abs_err", "max_rel_err")}
        if num["error"] is not None:
            return self._result(claim, "error", num["error"], numeric=numeric)
        if num["failure"] is not None:
            trial, sizes, index, run = num["failure"]
            cex, diagnosis = self._localize(claim, trial, sizes, index, run)
            message = (f"the claim differs from the true gradient at entry {cex.index} "
                       f"(dims {_fmt_dims(cex.dims)}): true {cex.true:.6g}, claimed {cex.claimed:.6g}")
            if diagnosis:
                message += f"; likely {diagnosis}"
            return self._result(claim, "refuted", message, numeric=numeric, counterexample=cex,
                                diagnosis=diagnosis)
        assert sym is not None
        status = sym["status"]
        symbolic = {"shapes": sym.get("shapes", []), "seconds": round(sym.get("seconds", 0.0), 4)}
        if status == "proved":
            shapes = "; ".join(_fmt_dims(s) for s in sym["shapes"])
            message = (f"symbolically equal to the per-neuron chain rule at dims {shapes}, and numerically "
                       f"in {num['trials']} trials (max rel. error {num['max_rel_err']:.1e})")
            return self._result(claim, "proved", message, symbolic=symbolic, numeric=numeric)
        if status == "counterexample":
            detail = sym["detail"]
            cex = Counterexample(sym["sizes"], self.cfg["seed"], "symbolic", detail["index"], float("nan"),
                                 float("nan"), detail["expression"],
                                 reproduce_command(self.d.path, self.cfg["seed"], self.options, self.cfg))
            message = (f"the numeric trials agreed, but the exact difference at entry {detail['index']} "
                       f"(dims {_fmt_dims(sym['sizes'])}) is {detail['difference']:.6g}, not 0")
            return self._result(claim, "refuted", message, symbolic=symbolic, numeric=numeric, counterexample=cex)
        symbolic["reason"] = sym["reason"]
        message = (f"numerically equal in {num['trials']} trials (max rel. error {num['max_rel_err']:.1e}); "
                   f"not proved: {sym['reason']}")
        return self._result(claim, "verified", message, symbolic=symbolic, numeric=numeric)

    def _localize(self, claim: Claim, trial: int, sizes: dict[str, int], index: tuple, run):
        """Report the failure at a small shape where possible, with the entry's per-neuron expression."""
        from .diagnose import diagnose
        from .engines.evaluate import evaluate_definition
        from .engines.numeric import compare, numeric_backend, rng_for, run_trial

        seed = self.cfg["seed"]
        small = None
        if not self.fixed:
            for k, shape in enumerate(self._small_shapes()):
                rng = rng_for(seed, self.d.path, 200_000 + k)
                try:
                    candidate = run_trial(self.d, shape, rng, trial)
                except Exception:  # noqa: BLE001 - localisation is best effort; the big trial stands
                    continue
                if claim.name in candidate.claims:
                    ok, _, _, idx = compare(candidate.claims[claim.name], candidate.grads[claim.target],
                                            self.cfg["rtol"], self.cfg["atol"])
                    if not ok:
                        small = (shape, idx, candidate)
                        break
        where = "small" if small else trial
        shape, idx, chosen = small if small else (sizes, index, run)
        claimed = chosen.claims[claim.name]
        truth = chosen.grads[claim.target]
        expression = self._entry_expression(claim, shape, idx) if small else None
        cex = Counterexample(
            dims=dict(shape), seed=seed, trial=where if small else trial, index=list(idx),
            true=float(truth[idx]) if truth.ndim else float(truth), claimed=float(np.broadcast_to(claimed, truth.shape)[idx]),
            expression=expression, command=reproduce_command(self.d.path, seed, self.options, self.cfg),
        )
        backend = numeric_backend(self.d, trial)
        env = dict(chosen.values)
        env.update({f"grad_{n}": g for n, g in chosen.grads.items()})

        def evaluate_with(changes: dict[str, np.ndarray]) -> np.ndarray:
            local = dict(env)
            local.update(changes)
            for helper in self.d.backward:
                local[helper.name] = evaluate_definition(helper.root, helper.index, local, shape, backend)
            return evaluate_definition(claim.node, claim.index, local, shape, backend)

        diagnosis = diagnose(self.d, claim.name, np.broadcast_to(claimed, truth.shape), truth, env, shape,
                             backend.functions, evaluate_with)
        return cex, diagnosis

    def _entry_expression(self, claim: Claim, sizes: dict[str, int], idx: tuple) -> str | None:
        """The per-neuron scalar expression of the true entry, e.g. ``a[0]*grad_h[1]*f_prime(z[1])``."""
        if not self.options.symbolic:
            return None
        try:
            from .engines.symbolic import SymbolicTruth

            with time_budget(self.options.timeout):
                truth = SymbolicTruth(self.d, sizes)
                return str(truth.grads[claim.target][idx])
        except Exception:  # noqa: BLE001 - the counterexample stands without its expression
            return None


class _NumericTrouble(Exception):
    pass


def _fmt_dims(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def find_files(paths: list[str]) -> list[str]:
    """Files and folders (recursively ``*.toml``), in a stable order."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(str(f) for f in sorted(path.rglob("*.toml")))
        else:
            out.append(str(path))
    return out
