"""Trials, verdicts, counterexamples: the judgement of every claim of a file.

Numeric trials first (fast, at random distinct dims); claims that survive them
go to the symbolic engine at a few small dim assignments. ``proved`` needs
both; ``verified`` means the symbolic check was skipped or gave up, and says why.
"""

from __future__ import annotations

import itertools
import math
import random
import shlex
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .budget import REFUSAL_MARGIN, FileTimeout, Pace, SymbolicTimeout, out_of_memory, time_budget, timed_out
from .budget import remaining as _remaining
from .errors import DerivationError, ShapeError
from .files import find_files, walk_files  # noqa: F401 - re-exported: callers import them from here
from .limits import DEFAULT_LIMITS, Limits, exceeded
from .loader import load
from .model import DEFAULT_CHECK, CheckSettings, Claim, Derivation, Resolved
from .options import in_range
from .results import (
    ClaimResult,
    Counterexample,
    Decision,
    FileResult,
    NumericEvidence,
    NumericFailure,
    Rounding,
    SymbolicEvidence,
    SymbolicRefutation,
    Undecided,
    Verdict,
    true_and_claimed,
)
from .workload import dims_positive as _dims_positive
from .workload import distinct_dims, work_of_each
from .workload import layout as _layout
from .workload import spaces as _spaces  # noqa: F401 - re-exported: tests count a file's products through it
from .workload import work as _work

if TYPE_CHECKING:
    from .engines.symbolic import SymbolicTruth


@dataclass(frozen=True)
class Options(CheckSettings):
    """Settings for one run: the [check] settings (``None``: the file's value, else the default)
    and those only a run has."""

    dims: tuple[tuple[str, int], ...] = ()
    symbolic: bool = True
    scope: bool = True  # certify proved claims for all shapes (SPEC §8); off only to measure its cost
    timeout: float = 10.0
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        """Every option within the range its flag takes (:func:`~backpropcheck.options.in_range`), whoever
        builds it — the command line, the plugin, the API, ``bpc.Options`` — so no setting turns the evidence
        off; else ValueError naming the option and its range."""
        for name in (*self.given(), "symbolic", "timeout"):  # frozen: the normalised value set in vars
            vars(self)[name] = in_range(name, vars(self)[name])
        if not isinstance(self.limits, Limits):
            raise ValueError(f"limits must be a backpropcheck.Limits, not {self.limits!r}")


DEFAULTS = DEFAULT_CHECK
KEEP_DRAWN = 2000  # trials whose generator the preflight keeps for the trial itself (about 1 kB each)
# the symbolic dim assignments: each drawn in up to ROW_DRAWS tries, DESIGNS designs tried from one range (the
# cheapest kept), the range widened up to WIDENINGS times
ROW_DRAWS, DESIGNS, WIDENINGS = 30, 8, 8
DESIGN_CANDIDATES = 20_000  # assignments of the dims a symbolic design is searched among, at most (else drawn)
EMPTY_RANGES = 64  # ranges passed over that hold no sizes at all (x of n - 10 entries: 2 … 10), at most


# what SymPy may raise on a hostile expression: the claim keeps its numeric verdict
_SYMBOLIC_FAILURES = (RecursionError, MemoryError, ValueError, TypeError, ArithmeticError, DerivationError)


def settings(d: Derivation, options: Options) -> Resolved:
    """The settings a file is checked with: the run's, else the file's [check], else the defaults."""
    return options.resolve(d.check)


def draw_dims(d: Derivation, rng: np.random.Generator, low: int, high: int,
              fixed: dict[str, int]) -> dict[str, int]:
    """Distinct sizes in [low, high] for every dim not fixed, so a square coincidence cannot pass."""
    free = [n for n in d.dims if n not in fixed]
    if not free:  # every dim given (--dims): a choice of none draws nothing from the generator
        if _dims_positive(d, fixed):
            return dict(fixed)
        raise DerivationError("no dim sizes make every shape positive; check the affine dims")
    # draws from low … high until every shape is positive; past 200, from ranges halved towards low (x of
    # n - k entries under --dims n=5 leaves 3 of 63 sizes of k), so a file that has sizes gets them
    halved = [top for top in (low + (high - low) // 2 ** j for j in range(1, 8)) if top < high]
    for top, count in [(high, 200)] + [(top, 100) for top in dict.fromkeys(halved)]:
        pool = top - low + 1
        for _ in range(count):
            # positions in low … top: the draws (and the generator's state) of a choice from that range itself
            values = rng.choice(pool, size=len(free), replace=len(free) > pool)
            sizes = dict(fixed)
            sizes.update({n: low + int(v) for n, v in zip(free, values)})
            if _dims_positive(d, sizes):  # every dim of every shape at least 1
                return sizes
    raise DerivationError("no dim sizes make every shape positive; check the affine dims")


TEXT_NAME = "<string>"  # how a derivation given as text (the API) is named in reports


def reproduce_command(path: str, seed: int, options: Options, cfg: Resolved) -> str:
    """The command line that checks ``path`` again as this run did; for text given to the API (no file to
    name), the API call."""
    if path == TEXT_NAME:
        given = {key: cfg[key] for key in options.given() if key != "seed"}
        given.update({"dims": dict(options.dims)} if options.dims else {})
        given.update({} if options.symbolic else {"symbolic": False})
        return "bpc.check(text, " + ", ".join([f"seed={seed}"] + [f"{k}={v!r}" for k, v in given.items()]) + ")"
    parts = ["backpropcheck", "check", path, "--seed", str(seed)]
    for key in options.given():
        if key != "seed":
            parts += [f"--{key.replace('_', '-')}", str(cfg[key])]
    if options.dims:
        parts += ["--dims", ",".join(f"{k}={v}" for k, v in options.dims)]
    if not options.symbolic:
        parts.append("--no-symbolic")
    return shlex.join(parts)


def check_path(path: str, options: Options = Options()) -> FileResult:
    """Load, check and judge one file; an invalid file is a result too, never an exception."""
    started = time.perf_counter()
    deadline = time.monotonic() + options.limits.file_timeout
    try:
        d = load(path, options.limits)
    except MemoryError:
        return FileResult(path, "", "error", out_of_memory(path, options.limits),
                          seconds=time.perf_counter() - started)
    except DerivationError as exc:
        return FileResult(path, "", "error", str(exc), seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - last resort, as below
        message = f"{path}: internal error ({type(exc).__name__}: {exc}); please report this file"
        return FileResult(path, "", "error", message, seconds=time.perf_counter() - started)
    try:
        with np.errstate(all="ignore"):  # NaN/Inf are reported as values (NumericProblem), never as warnings
            result = check_derivation(d, options, deadline)
    except MemoryError:
        return FileResult(path, d.title, "error", out_of_memory(path, options.limits),
                          seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - last resort: one file's bug must not stop the run
        message = f"{path}: internal error ({type(exc).__name__}: {exc}); please report this file"
        return FileResult(path, d.title, "error", message, seconds=time.perf_counter() - started)
    result.seconds = time.perf_counter() - started
    return result


def check_derivation(d: Derivation, options: Options = Options(), deadline: float | None = None) -> FileResult:
    """``deadline`` is a ``time.monotonic()`` value (default: ``--file-timeout`` from now)."""
    with d.shape_rules():
        return _FileCheck(d, options, deadline).run()


class _FileCheck:
    def __init__(self, d: Derivation, options: Options, deadline: float | None = None):
        self.d = d
        self.options = options
        self.started = time.monotonic()
        self.deadline = deadline if deadline is not None else self.started + options.limits.file_timeout
        self.cfg = settings(d, options)
        self.fixed = dict(options.dims)
        unknown = set(self.fixed) - set(d.dims)
        if unknown:
            raise_later = ", ".join(sorted(unknown))
            self.fixed = {k: v for k, v in self.fixed.items() if k in d.dims}
            self.note: str | None = f"--dims names {raise_later}, which this file does not declare"
        else:
            self.note = None
        self.truths: dict[tuple, SymbolicTruth] = {}  # per-neuron truths by their dims, shared within the file
        self._recertify: set[str] = set()  # claims whose first certificate ran past its share of the budget

    def run(self) -> FileResult:
        d = self.d
        results: dict[str, ClaimResult] = {}
        for claim in d.claims:
            if claim.error is not None:
                verdict = Verdict.SHAPE_ERROR if isinstance(claim.error, ShapeError) else Verdict.ERROR
                message = claim.error.message + (f" (hint: {claim.error.hint})" if claim.error.hint else "")
                if verdict is Verdict.ERROR:  # name the file, key and column, as for a file error
                    message = f"{claim.error.where()}: {message}"
                results[claim.name] = self._result(claim, verdict, message)
        live = [c for c in d.claims if c.name not in results]
        try:
            self.layout = _layout(d, live, self.options.limits)
            self.spaces = self.layout.spaces
            self._preflight()
            numeric = self._numeric(live)
        except FileTimeout as exc:
            return FileResult(d.path, d.title, "error", exc.message)
        except DerivationError as exc:
            return FileResult(d.path, d.title, "error", str(exc.located(file=d.path)))
        except _NumericTrouble as exc:
            return FileResult(d.path, d.title, "error", f"{d.path}: {exc}")
        symbolic = self._symbolic([c for c in live if numeric[c.name].failure is None])
        if getattr(self, "_unchecked", None) and any(
                numeric[c.name].failure is None and numeric[c.name].error is None
                and symbolic[c.name].status not in ("proved", "counterexample") for c in live):
            try:  # a claim left only verified rests on every trial's true gradient: each one checked
                self._self_check_rest()
            except FileTimeout as exc:
                return FileResult(d.path, d.title, "error", exc.message)
            except _NumericTrouble as exc:
                return FileResult(d.path, d.title, "error", f"{d.path}: {exc}")
        for claim in live:
            results[claim.name] = self._judge(claim, numeric[claim.name], symbolic.get(claim.name))
        refuted = {n for n, r in results.items() if r.verdict == "refuted"}
        for claim in d.claims:
            results[claim.name].depends_on_refuted = sorted(u for u in claim.uses if u in refuted) if refuted else []
        claims = [results[c.name] for c in d.claims]
        status = "passed" if all(c.ok for c in claims) else "failed"
        if any(c.verdict == "error" for c in claims):
            status = "error"
        return FileResult(d.path, d.title, status, self.note, claims)

    # -- numeric ---------------------------------------------------------------

    def _numeric(self, claims: list[Claim]) -> dict[str, NumericEvidence]:
        from .engines.numeric import NumericProblem, compare, rng_for, run_trial

        cfg = self.cfg
        limits = self.options.limits
        if cfg.max_dim > limits.max_dim:
            raise DerivationError(exceeded("the largest random dim (--max-dim or [check] max_dim)", cfg.max_dim,
                                           "max_dim", limits))
        for what in ("trials", "shapes"):
            if cfg[what] > vars(limits)[f"max_{what}"]:
                raise DerivationError(exceeded(f"the number of {what}", cfg[what], f"max_{what}", limits))
        for name, value in self.fixed.items():
            if not 1 <= value <= limits.max_dim:
                raise DerivationError(exceeded(f"--dims {name}", value, "max_dim", limits))
        stats = {c.name: NumericEvidence() for c in claims}
        self._unchecked: list[tuple[int, dict[str, int], dict]] = []  # trials whose sweep _self_check has not read
        self._overflowed: dict[str, list[dict[str, int]]] = {}  # claim -> dims where float64 overflowed in it alone
        total = 0
        # the drawn trials, then one at each size where a dim used as a number may change the claim
        extra = [({dim: size, **dict(pins)}) for dim, size, _, pins in self._critical() if dim not in self.fixed]
        for trial in range(cfg.trials + len(extra)):
            self._on_time(f" (before numeric trial {trial})", self._trial_work[trial] if trial < cfg.trials else 0)
            if trial < len(self._drawn):  # the preflight's draw, and its generator just past it
                (sizes, rng), self._drawn[trial] = self._drawn[trial], None
            else:
                rng = rng_for(cfg.seed, self.d.path, trial)
                fixed = self.fixed
                if trial >= cfg.trials:  # the critical size, the dims its kink was solved at, then --dims
                    fixed = {**extra[trial - cfg.trials], **self.fixed}
                try:
                    sizes = draw_dims(self.d, rng, 2, max(2, cfg.max_dim), fixed)
                except DerivationError:
                    if trial < cfg.trials:
                        raise
                    continue  # a critical size no shape allows
            # the preflight counted a drawn trial's entries (the same sum as _work's); the key only for a refusal
            entries = self._entries[trial] if trial < cfg.trials else _work(self.d, self.spaces, sizes)[0]
            if entries > limits.max_entries and trial >= cfg.trials:
                continue  # past the bounds numerically: the symbolic check examines it, or says it cannot
            if entries > limits.max_entries:
                raise DerivationError(exceeded(f"the entries of all arrays at dims {_fmt_dims(sizes)}", entries,
                                               "max_entries", limits), key=_work(self.d, self.spaces, sizes)[1])
            total += entries  # checked before the trial runs: the numeric work of a file is bounded too
            if total > limits.max_total_entries:
                raise DerivationError(exceeded(f"the entries of all arrays summed over trials 0..{trial}", total,
                                               "max_total_entries", limits))
            began = time.monotonic()
            # the reverse sweep is checked against forward mode in the first trial, and in any other whose values
            # a verdict rests on (a counterexample here; every trial of a claim left only verified): see _self_check
            state = rng.bit_generator.state
            checked = trial == 0 or not self.options.symbolic
            try:
                run = run_trial(self.d, sizes, rng, trial, self_check=checked)
            except NumericProblem as exc:
                raise _NumericTrouble(f"trial {trial} at dims {_fmt_dims(sizes)}: {exc}") from None
            for claim in claims:
                if time.monotonic() > self.deadline:  # the stage's name only when it is reported
                    self._on_time(f" (numeric trial {trial}, claim {claim.name})")
                s = stats[claim.name]
                if s.failure is not None or s.error is not None:
                    continue
                if claim.name in run.claim_errors:
                    s.error = run.claim_errors[claim.name]
                    continue
                ok, abs_err, rel_err, index = compare(
                    run.claims.factored(claim.name), run.grads.factored(claim.target), cfg.rtol, cfg.atol
                )
                s.trials += 1
                if not ok and not math.isfinite(abs_err):
                    rest = _finite_rest(run.claims.factored(claim.name), run.grads.factored(claim.target), cfg)
                    if rest is not None and self._overflows_first(claim, run, sizes, trial):
                        # float64 overflowed in the claim alone (exp(Z) / sum(exp(Z)) at Z = 400 is inf / inf),
                        # where the true gradient is finite: its other entries decide this trial, the exact
                        # check the claim
                        ok, abs_err, rel_err, index = rest
                        if ok:
                            r = s.rounding = s.rounding or Rounding()
                            r.overflows += 1
                            checked = checked or self._self_check(trial, sizes, state)
                            s.overflow_failure = s.overflow_failure or NumericFailure(trial, sizes, index, run)
                            self._overflowed.setdefault(claim.name, [])
                            if sizes not in self._overflowed[claim.name]:  # the exact check must hold there too
                                self._overflowed[claim.name].append(dict(sizes))
                if not ok:
                    bound = max(self._rounding_bound(claim, run, sizes, trial), _truth_rounding(run, sizes))
                    if abs_err <= bound:
                        # the claim's own evaluation, or the true gradient's, rounds more than they disagree
                        # (a large term that cancels): not a counterexample; the exact check decides (see _judge)
                        r = s.rounding = s.rounding or Rounding()
                        r.count, r.worst, r.bound = r.count + 1, max(r.worst, abs_err), max(r.bound, bound)
                        continue
                    if self._near_tie(claim, run, sizes, trial):
                        # a mask decided by rounding (an exact tie computed two ways: sum(x - mean(x)) >= 0):
                        # float64 cannot say which side it is on; the exact check decides
                        r = s.rounding = s.rounding or Rounding()
                        r.ties += 1
                        checked = checked or self._self_check(trial, sizes, state)
                        s.tie_failure = s.tie_failure or NumericFailure(trial, sizes, index, run)
                        continue
                    checked = checked or self._self_check(trial, sizes, state)
                    s.failure = NumericFailure(trial, sizes, index, run)
                s.max_abs_err = max(s.max_abs_err, abs_err)
                s.max_rel_err = max(s.max_rel_err, rel_err)
            del run  # at production dims, one trial's arrays at a time
            if not checked:
                self._unchecked.append((trial, sizes, state))
            if trial < cfg.trials:
                self._pace.timed(time.monotonic() - began, self._trial_work[trial])
        return stats

    def _self_check(self, trial: int, sizes: dict[str, int], state: dict) -> bool:
        """The trial run again, from its generator's ``state``, with its reverse sweep checked against forward mode
        (:func:`.engines.numeric.directional_check`): :class:`_NumericTrouble` if they disagree (a bug of the op
        table, never a verdict), else True. A trial's values count as evidence only so checked: a counterexample's
        at once; every trial's where a claim ends only verified (:meth:`_self_check_rest`). A proof does not
        rest on them (the truth it reads is SymPy's; a numeric truth that differed would be a counterexample)."""
        from .engines.numeric import NumericProblem, run_trial

        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state
        try:
            run_trial(self.d, sizes, rng, trial, self_check=True)
        except NumericProblem as exc:
            raise _NumericTrouble(f"trial {trial} at dims {_fmt_dims(sizes)}: {exc}") from None
        return True

    def _self_check_rest(self) -> None:
        """:meth:`_self_check` every trial not yet checked (a claim ends only verified: its evidence is them all)."""
        for trial, sizes, state in self._unchecked:
            self._on_time(f" (checking trial {trial} again)")
            self._self_check(trial, sizes, state)
        self._unchecked = []

    def _preflight(self) -> None:
        """Every trial's dims are drawn up front (the draws are cheap and repeat exactly in the trial), so a
        file whose products would take too long is refused before any work, not after minutes of it.

        A trial's work is its entries plus the multiply-adds of its products; the forward pass's count
        thrice (the product, and one for each operand's vector-Jacobian product)."""
        from .engines.numeric import rng_for

        cfg, limits = self.cfg, self.options.limits
        self._trial_work: list[int] = []
        self._entries: list[int] = []  # each trial's entries: named tensors and spaces (:func:`workload.work`)
        self._drawn: list[Any] = []  # (dims, generator) of the first trials, for _numeric to go on with
        self._pace = Pace()
        if not isinstance(cfg.trials, int) or not 0 <= cfg.trials <= limits.max_trials:
            return  # _numeric reports it
        # each distinct space once, with its multiplicity (workload.layout, worked out once per file): 10,000
        # trials of a file with 800 spaces stay cheap
        count = self.layout.count
        flops = 0
        for trial in range(cfg.trials):
            if trial % 100 == 0:
                self._on_time(" (drawing the dims of the trials)")
            rng = rng_for(cfg.seed, self.d.path, trial)
            sizes = draw_dims(self.d, rng, 2, max(2, cfg.max_dim), self.fixed)
            if trial < KEEP_DRAWN:
                self._drawn.append((sizes, rng))
            entries, work = count(sizes)
            flops += work
            if flops > limits.max_flops:
                raise DerivationError(exceeded(f"the multiply-adds of the products summed over trials 0..{trial} "
                                               f"(at dims {_fmt_dims(sizes)} in trial {trial})", flops,
                                               "max_flops", limits))
            self._trial_work.append(entries + work)
            self._entries.append(entries)

    def _on_time(self, stage: str, next_work: int = 0) -> None:
        """Raise :class:`FileTimeout` past the deadline, or when the trials timed so far say that a trial of
        ``next_work`` would take ``REFUSAL_MARGIN`` times what is left of it (refused before working, not killed in
        the middle; see :class:`Pace`)."""
        now = time.monotonic()
        predicted = self._pace.predict(next_work)
        if now > self.deadline or now + predicted / REFUSAL_MARGIN > self.deadline:
            limits = self.options.limits
            seconds = now + predicted - (self.deadline - limits.file_timeout)
            raise FileTimeout(timed_out(self.d.path, seconds, limits, stage, predicted=bool(predicted)))

    def _rounding_bound(self, claim: Claim, run, sizes: dict[str, int], trial: int) -> float:
        """How far rounding alone can move the claim's value in float64: 16·eps per operation of its
        evaluation (and of the [backward] helpers it reads), times the largest magnitude any
        intermediate reaches. ``(x + 1e18) - 1e18`` loses x entirely; ``W.T @ g`` keeps ~1e-16 of it."""
        return _rounding_of(self._tape(claim, run, sizes, trial))

    def _near_tie(self, claim: Claim, run, sizes: dict[str, int], trial: int) -> bool:
        """Does a comparison of the trial (``a >= b``, ``maximum``, ``where``'s condition) meet operands that
        differ, but by no more than rounding can move them (:func:`_rounding_of` of the forward pass, the loss
        and the claim)? An exact tie computed two ways lands on either side by rounding, and the mask with it."""
        from .lang.ir import Call

        tape = self._tape(claim, run, sizes, trial, forward=True)
        bound = _rounding_of(tape)
        for node, args, _, _ in tape.entries:
            if not isinstance(node, Call):
                continue
            if node.op in _COMPARING and len(args) == 2:
                gap = np.abs(np.real(np.asarray(args[0], dtype=complex) - np.asarray(args[1], dtype=complex)))
            elif node.op == "where":
                gap = np.abs(np.real(np.asarray(args[0], dtype=complex)))
            else:
                continue
            if np.any((gap > 0) & (gap <= bound)):
                return True
        return False

    def _overflows_first(self, claim: Claim, run, sizes: dict[str, int], trial: int) -> bool:
        """Is an overflow the first floating-point trouble in the claim's evaluation at the trial's values
        (``exp(Z)`` at Z = 400, then inf / inf), rather than a value outside a function's domain (``log`` or
        ``sqrt`` of a negative number, 0 / 0)? Only an overflow leaves the exact value to the exact check."""
        from .engines.evaluate import evaluate_definition
        from .engines.numeric import numeric_backend

        backend = numeric_backend(self.d, trial)
        env = _trial_env(run)
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
                for helper in self.d.backward:
                    env[helper.name] = evaluate_definition(helper.root, helper.index, env, sizes, backend)
                evaluate_definition(claim.root, claim.index, env, sizes, backend)
        except FloatingPointError as exc:
            return "overflow" in str(exc)
        except Exception:  # noqa: BLE001 - anything else is no overflow to excuse
            return False
        return False

    def _tape(self, claim: Claim, run, sizes: dict[str, int], trial: int, forward: bool = False):
        """The claim's evaluation at the trial's values (with the [backward] helpers, and with ``forward`` the
        forward pass and the loss before them), every operation recorded."""
        from .engines.evaluate import Tape, evaluate, evaluate_definition
        from .engines.numeric import numeric_backend

        backend = numeric_backend(self.d, trial)
        env = _trial_env(run)
        tape = Tape()
        with np.errstate(all="ignore"):
            if forward:
                for f in self.d.forward:
                    evaluate_definition(f.root, f.index, env, sizes, backend, tape)
                if self.d.loss.expression is not None:
                    evaluate(self.d.loss.expression, env, sizes, backend, tape)
            for helper in self.d.backward:
                env[helper.name] = evaluate_definition(helper.root, helper.index, env, sizes, backend, tape)
            evaluate_definition(claim.root, claim.index, env, sizes, backend, tape)
        return tape

    # -- symbolic ---------------------------------------------------------------

    def _critical(self) -> list[tuple[str, int, bool, tuple[tuple[str, int], ...]]]:
        """Sizes where a dim used as a number in a non-polynomial way may change a claim (see dimuse)."""
        if not hasattr(self, "_critical_cache"):
            from .dimuse import critical_sizes

            self._critical_cache = critical_sizes(self.d, max(2, self.cfg.max_dim), self.options.limits.max_dim)
        return self._critical_cache

    def _critical_shapes(self) -> list[dict[str, int]]:
        """A small symbolic dim assignment at each size next to a kink (the other dims at the sizes the kink was
        solved at, or small and distinct)."""
        from .engines.numeric import rng_for

        out = []
        for k, (dim, size, kink, pins) in enumerate(self._critical()):
            if not kink:
                continue
            rng = rng_for(self.cfg.seed, self.d.path, 300_000 + k)
            try:
                out.append(draw_dims(self.d, rng, 2, 2 + len(self.d.dims), {**dict(pins), dim: size}))
            except DerivationError:
                continue
        return out

    def _small_shapes(self) -> list[dict[str, int]]:
        """``shapes`` small dim assignments: the first a permutation of 2 … n + 1 (n dims), the others from
        2 … n + 2, each dim — and each axis of a shape (``n - k``, ``Ho + K - 3``) — at a size it has in no
        other one. So every dim and axis takes ``shapes`` distinct sizes, and a claim off by a polynomial
        of lower degree in one of them (``1e-13 * (m - 2) * (m - 3) * x``) is nonzero at one of them; where 2 … n + 2 holds no such design (one or two dims), the range grows by
        one until it does, and the design with the least work is kept (the symbolic cost grows with the sizes):
        found by search (:meth:`_searched_design`), or the cheapest of a few drawn ones. Drawn once per file check (the symbolic check and each refuted claim's localisation read
        them)."""
        if not hasattr(self, "_small_cache"):
            try:
                self._small_cache: list[dict[str, int]] | DerivationError = self._draw_small_shapes()
            except DerivationError as exc:
                self._small_cache = exc
        if isinstance(self._small_cache, DerivationError):
            raise self._small_cache
        return [dict(sizes) for sizes in self._small_cache]

    def _draw_small_shapes(self) -> list[dict[str, int]]:
        """:meth:`_small_shapes`: the design with the least work found by search (:meth:`_searched_design`); where
        the search does not apply, drawn: the first assignment, then the others as one design, from the smallest
        range where one exists (a row drawn alone can leave the next none: after n, m = 2, 3 and 3, 2 the range
        2 … 4 has no new size for both); of the ``DESIGNS`` designs found there, the cheapest to check."""
        from .engines.numeric import rng_for

        searched = self._searched_design(rng_for(self.cfg.seed, self.d.path, 100_002))
        if searched is not None:
            return searched
        n = len(self.d.dims)
        out: list[dict[str, int]] = []
        for k, count in ((0, 1), (1, self.cfg.shapes - 1)):
            if count <= 0:
                break
            rng = rng_for(self.cfg.seed, self.d.path, 100_000 + k)
            lowest = 1 + n + min(k, 1)
            # a range of 2 … top holds top - 1 sizes: each dim needs one for every assignment
            top, widened, empty = max(lowest, len(out) + count + 1), 0, 0
            while widened < WIDENINGS and empty < EMPTY_RANGES:
                try:
                    found = [rows for rows in (self._design(rng, top, count, out) for _ in range(DESIGNS)) if rows]
                except DerivationError:  # none in 2 … top (x of n - 10 entries needs n ≥ 11): a larger range
                    top, empty = top + 1, empty + 1
                    continue
                if found:
                    out += min(found, key=lambda rows: sum(_work(self.d, self.spaces, r)[0] for r in rows))
                    break
                top, widened = top + 1, widened + 1
        if not out:
            raise DerivationError("no small dim sizes make every shape positive")
        return out

    def _searched_design(self, rng: np.random.Generator) -> list[dict[str, int]] | None:
        """:meth:`_small_shapes` found by search rather than drawn: of every design — the first assignment a
        permutation of 2 … n + 1, the one or two others from 2 … n + 2 (widened as :meth:`_draw_small_shapes`
        does), each dim and axis at a size it has in no other assignment, every dim at a distinct size where the
        range allows — the one with the least work (the symbolic cost grows with the sizes: the cheapest of a
        few drawn designs put a 7-by-5 convolution where a 6-by-4 one did), ties broken by the seed. None where
        the search does not apply (other than 2 or 3 assignments, more than ``DESIGN_CANDIDATES`` assignments
        in a range, or no positive sizes there): the designs are drawn then."""
        count = self.cfg.shapes - 1
        n = len(self.d.dims)
        if count not in (1, 2) or n == 0 or self.cfg.seed != DEFAULTS.seed:
            return None  # another seed: drawn designs, another look at the claim
        first = self._candidates(n + 1, rng)
        if first is None or not len(first[0]):
            return None
        for top in range(n + 2, n + 2 + WIDENINGS):
            rows = self._candidates(top, rng)
            if rows is None:
                return None
            found = _cheapest_design(first, rows, count)
            if found is not None:
                names = list(self.d.dims)
                return [{name: int(first[0][found[0], k]) for k, name in enumerate(names)}] + [
                    {name: int(rows[0][j, k]) for k, name in enumerate(names)} for j in found[1:]]
        return None

    def _candidates(self, top: int, rng: np.random.Generator):
        """Every assignment of the dims from 2 … top (at distinct sizes where the range allows) that makes every
        shape positive, as ``(rows, axis values, work)`` sorted by work with ties in a seeded order; None past
        ``DESIGN_CANDIDATES``."""
        names = list(self.d.dims)
        sizes = range(2, top + 1)
        distinct = len(sizes) >= len(names)
        if (math.perm(len(sizes), len(names)) if distinct else len(sizes) ** len(names)) > DESIGN_CANDIDATES:
            return None
        chosen = itertools.permutations(sizes, len(names)) if distinct else itertools.product(sizes, repeat=len(names))
        rows = np.array(list(chosen), dtype=np.int64).reshape(-1, len(names))
        columns = {name: rows[:, k] for k, name in enumerate(names)}
        every = distinct_dims(self.d)
        positive = np.ones(len(rows), dtype=bool)
        for dim in every:  # every dim of every shape at least 1
            positive &= np.asarray(dim.value(columns)) >= 1
        axes = [dim for dim in every if dim.terms]  # n, and n - k, Ho + K - 3, 2*H: each at sizes of its own
        # every dim too, also one that is no axis alone (k of n - k, H of H*D, a dim used only as a number)
        values = np.concatenate([rows] + [np.broadcast_to(dim.value(columns), len(rows))[:, None] for dim in axes],
                                axis=1)
        work = np.broadcast_to(work_of_each(self.d, self.spaces, columns), len(rows))
        order = np.lexsort((rng.permutation(len(rows)), work))
        order = order[positive[order]]
        return rows[order], values[order], work[order]

    def _design(self, rng: np.random.Generator, top: int, count: int,
                before: list[dict[str, int]]) -> list[dict[str, int]] | None:
        """``count`` assignments from 2 … top, each dim — and each axis of a shape, ``n - k`` as well as ``n`` —
        at a size it has in none before; None when a row's ``ROW_DRAWS`` draws found none (raises
        DerivationError when the range holds no sizes at all)."""
        axes = [dim for dim in distinct_dims(self.d) if dim.terms]  # n, and n - k, Ho + K - 3, 2*H
        rows: list[dict[str, int]] = []
        for _ in range(count):
            for _ in range(ROW_DRAWS):
                row = draw_dims(self.d, rng, 2, top, {})
                if all(dim.value(row) != dim.value(seen) for seen in before + rows for dim in axes) and all(
                        row[name] != seen[name] for seen in before + rows for name in row):
                    rows.append(row)
                    break
            else:
                return None
        return rows

    def _symbolic(self, claims: list[Claim]) -> dict[str, SymbolicEvidence]:
        if not claims:
            return {}
        if not self.options.symbolic:
            return {c.name: SymbolicEvidence("skipped", reason="the symbolic check was skipped (--no-symbolic)")
                    for c in claims}
        out = {c.name: SymbolicEvidence() for c in claims}
        self._prove(claims, out)
        for record in out.values():
            if record.status != "proved":  # refuted or left undecided after the certificate looked at it: no scope
                record.scope = record.argument = None
        return out

    def _prove(self, claims: list[Claim], out: dict[str, SymbolicEvidence]) -> None:
        """The symbolic check of ``claims`` at the small dims, and their proof scope, into ``out``."""
        from .engines.symbolic import SymbolicTruth

        budget = self.options.timeout
        pending = list(claims)
        # the budget is per claim over all the small dims (and as much again for the shared truth),
        # so a file's symbolic time is at most (claims + 1) x --timeout, whatever [check] shapes says
        spent = {c.name: 0.0 for c in claims}  # CPU seconds, like the budget's timer
        truth_spent = 0.0
        try:
            small = self._small_shapes()
            regular = len(small)
            small += [c for c in self._critical_shapes() if c not in small]
        except DerivationError as exc:
            for c in claims:
                out[c.name].stop("gave-up", f"no small dims for the symbolic check: {exc.message}")
            return
        largest = max((_work(self.d, self.spaces, s)[0] for s in small[:regular]), default=0)
        for k, sizes in enumerate(small):
            if not pending:
                break
            entries, _ = _work(self.d, self.spaces, sizes)
            if k >= regular and entries > max(50 * largest, 4000):
                # a size next to a kink of a dim used as a number (relu(n - 1000)) too large for a
                # symbolic truth: not a proof there, so not `proved` (its numeric trial still ran)
                for c in pending:
                    out[c.name].stop("gave-up", (
                        f"the symbolic check does not reach dims {_fmt_dims(sizes)}, where a dim used as a "
                        f"number changes branch ({entries} entries, more than 50 times the sampled dims')"))
                return
            if entries > self.options.limits.max_symbolic_entries:  # one SymPy expression per entry
                reason = exceeded(f"the entries of all arrays at the symbolic dims {_fmt_dims(sizes)}", entries,
                                  "max_symbolic_entries", self.options.limits)
                for c in pending:
                    out[c.name].stop("gave-up", reason)
                return
            started = time.perf_counter()
            cpu = time.process_time()
            try:
                with time_budget(_remaining(budget, truth_spent)):
                    truth = SymbolicTruth(self.d, sizes, self.cfg.seed)
                self.truths[_key(sizes)] = truth
            except SymbolicTimeout:
                for c in pending:
                    out[c.name].stop("timeout", (
                        f"building the per-neuron truth at dims {_fmt_dims(sizes)} ran past the "
                        f"{budget:g} s budget (--timeout)"))
                return
            except _SYMBOLIC_FAILURES as exc:
                for c in pending:
                    out[c.name].stop("gave-up", f"the symbolic engine failed: {_failure(exc)}")
                return
            shared = time.perf_counter() - started
            truth_spent += time.process_time() - cpu
            rng = self._decision_rng()
            for claim in list(pending):
                record = out[claim.name]
                started = time.perf_counter()
                cpu = time.process_time()
                try:
                    with time_budget(_remaining(budget, spent[claim.name])):
                        decision = self._decide(truth, claim, rng)
                except SymbolicTimeout:
                    record.stop("timeout", (
                        f"the symbolic check at dims {_fmt_dims(sizes)} ran past the {budget:g} s budget "
                        f"(--timeout)"))
                    pending.remove(claim)
                    continue
                except _SYMBOLIC_FAILURES as exc:
                    record.stop("gave-up", f"the symbolic engine failed: {_failure(exc)}")
                    pending.remove(claim)
                    continue
                spent[claim.name] += time.process_time() - cpu
                record.seconds += time.perf_counter() - started + shared / max(len(pending), 1)
                if decision is None:
                    record.shapes.append(sizes)
                    continue
                pending.remove(claim)
                if isinstance(decision, Undecided):
                    record.stop("undecided", f"at dims {_fmt_dims(sizes)}: {decision.why}")
                else:
                    record.status, record.sizes, record.refutation = "counterexample", sizes, decision
            if k == 0 and pending and self.options.scope:
                pending = self._certify(pending, out, budget, spent, first=True)
        self._at_overflows(claims, out, budget, spent)
        again = [c for c in claims if c.name in self._recertify and out[c.name].status == "proved"]
        if again:  # cut short by its share of the budget after the first small dims: what is left now
            self._certify(again, out, budget, spent, first=False)

    def _certify(self, proved: list[Claim], out: dict[str, SymbolicEvidence], budget: float,
                 spent: dict[str, float], first: bool) -> list[Claim]:
        """Proof scope (SPEC §8) of proved claims: all shapes by a finite certificate, or sampled; the claims it
        does not certify are returned.

        ``first``: right after the first small dims. A claim certified then is proved at every dims, the other
        small ones included, so it leaves the sampled check (its record lists the certificate's dims after the
        first). The others go on to the next small dims; the certificate gets half of what is left of each
        one's budget then, so the sampled check keeps the rest, and one it cut short is tried again at the end
        (``first`` False) with what is left after the sampled check."""
        from .engines.scope import ALL_SHAPES, Certifier, certify_records

        def entries(sizes: dict[str, int]) -> int:
            return _work(self.d, self.spaces, sizes)[0]

        if first:
            self._certifier = Certifier(self.d, entries, self.options.limits.max_symbolic_entries)
        scopes = certify_records(self.d, proved, out, budget, spent, entries,
                                 self.options.limits.max_symbolic_entries, time_budget, SymbolicTimeout,
                                 _SYMBOLIC_FAILURES, share=0.5 if first else 1.0, certifier=self._certifier)
        left = []
        for claim in proved:
            scope = scopes.get(claim.name)
            if scope is not None and scope.kind == ALL_SHAPES:
                record = out[claim.name]
                record.shapes += [dict(s) for s in scope.extra_sizes if s not in record.shapes]
            else:
                left.append(claim)
                if first and scope is not None and scope.timed_out:
                    self._recertify.add(claim.name)
        return left

    def _at_overflows(self, claims: list[Claim], out: dict[str, SymbolicEvidence], budget: float,
                      spent: dict[str, float]) -> None:
        """A claim proved at the small dims, whose float64 value overflowed in a trial, is decided exactly at that
        trial's dims too: the trial's evidence was left to the exact check there (``(n-2)(n-3)(n-4) exp(800 n)``
        vanishes at n = 2, 3, 4 and overflows at n = 5). Past the symbolic bounds it is not proved, and the
        overflow stands as the counterexample (:meth:`_judge`)."""
        from .engines.symbolic import SymbolicTruth

        for claim in claims:
            record = out[claim.name]
            for sizes in getattr(self, "_overflowed", {}).get(claim.name, [])[:2]:
                if record.status != "proved":
                    break
                entries, _ = _work(self.d, self.spaces, sizes)
                reach = max(4000, 50 * max((_work(self.d, self.spaces, s)[0] for s in record.shapes), default=0))
                if entries > min(reach, self.options.limits.max_symbolic_entries):
                    record.stop("gave-up", f"float64 overflowed evaluating the claim at dims {_fmt_dims(sizes)}, "
                                           f"where the symbolic check does not reach ({entries} entries)")
                    break
                cpu = time.process_time()
                try:
                    with time_budget(_remaining(budget, spent[claim.name])):
                        truth = self.truths.get(_key(sizes)) or SymbolicTruth(self.d, sizes, self.cfg.seed)
                        self.truths[_key(sizes)] = truth
                        rng = self._decision_rng()
                        decision = self._decide(truth, claim, rng)
                except SymbolicTimeout:
                    record.stop("timeout", f"the symbolic check at dims {_fmt_dims(sizes)}, where float64 overflowed "
                                           f"evaluating the claim, ran past the {budget:g} s budget (--timeout)")
                    break
                except _SYMBOLIC_FAILURES as exc:
                    record.stop("gave-up", f"the symbolic engine failed: {_failure(exc)}")
                    break
                spent[claim.name] += time.process_time() - cpu
                if decision is None:
                    record.shapes.append(dict(sizes))
                elif isinstance(decision, Undecided):
                    record.stop("undecided", f"at dims {_fmt_dims(sizes)}: {decision.why}")
                else:
                    record.status, record.sizes, record.refutation = "counterexample", dict(sizes), decision

    def _decision_rng(self) -> random.Random:
        """The witness search's generator for one dim assignment: from the seed and the file, never the run order."""
        return random.Random(zlib.crc32(f"{self.cfg.seed}:{self.d.path}".encode("utf-8", "surrogateescape")))

    def _decide(self, truth: SymbolicTruth, claim: Claim, rng: random.Random) -> Decision:
        """None if every entry is proved equal; else why it is undecided, or the refutation."""
        if truth.step_zero(claim.node, claim.target, claim.index) or truth.chain_zero(
                claim.node, claim.target, claim.index):
            return None
        claimed = truth.claim_value(claim.node, claim.index)
        target = truth.grads[claim.target]
        claimed = np.broadcast_to(claimed, target.shape)
        for idx in np.ndindex(*target.shape):
            decision = truth.decide(claimed[idx] - target[idx], rng)
            if decision.zero is None:
                return Undecided(f"entry {list(idx)}: {decision.how}")
            if decision.zero is False:
                detail = SymbolicRefutation(list(idx), decision.value, str(target[idx]),
                                            domains=truth.describe_domains())
                if decision.point:
                    shown = sorted(decision.point.items(), key=lambda kv: kv[0].name)
                    detail.point = ", ".join(f"{s} = {v}" for s, v in shown[:8]) + (", …" if len(shown) > 8 else "")
                    values = truth.values_at([target[idx], claimed[idx]], decision.point, rng)
                    detail.true, detail.claimed = (float("nan") if v is None else v for v in values)
                return detail
        return None

    # -- verdicts ------------------------------------------------------------------

    def _result(self, claim: Claim, verdict: Verdict, message: str, **extra: Any) -> ClaimResult:
        expected = claim.expected
        if verdict.holds:
            ok = expected == "holds"
            if not ok:
                message = f"expected {expected}, but the claim holds ({verdict}). " + message
        elif verdict is Verdict.ERROR:
            ok = False
        else:
            ok = expected == verdict
            if ok:
                message = f"{verdict} as expected: " + message
        return ClaimResult(claim.name, claim.text, verdict, expected, ok, message, **extra)

    def _judge(self, claim: Claim, num: NumericEvidence, sym: SymbolicEvidence | None) -> ClaimResult:
        numeric = num.summary()
        if num.error is not None:
            return self._result(claim, Verdict.ERROR, num.error, numeric=numeric)
        if num.failure is not None:
            cex, diagnosis = self._localize(claim, num.failure)
            message = (f"the claim differs from the true gradient at entry {cex.index} "
                       f"(dims {_fmt_dims(cex.dims)}): {true_and_claimed(cex.true, cex.claimed)}")
            if diagnosis:
                message += f"; likely {diagnosis}"
            return self._result(claim, Verdict.REFUTED, message, numeric=numeric, counterexample=cex,
                                diagnosis=diagnosis)
        assert sym is not None
        rounding = ""
        if num.rounding:
            r = num.rounding
            if r.count:
                rounding = (f"; in {r.count} of them its float64 value was off by up to {r.worst:.3g}, within the "
                            f"{r.bound:.3g} that rounding alone can cause in it or in the true gradient (a large "
                            f"term cancels)")
            if r.ties:
                rounding += (f"; in {r.ties} of them a comparison's operands were within rounding of a tie, so "
                             f"float64 could not say which branch holds (the exact check decides)")
            if r.overflows:
                rounding += (f"; in {r.overflows} of them float64 overflowed evaluating the claim (NaN or inf where "
                             f"the true gradient is finite; the exact check decides)")
        symbolic = sym.summary()
        if sym.status == "proved":
            shapes = "; ".join(_fmt_dims(s) for s in sym.shapes)
            if not sym.shapes or not num.trials:  # never a proof without evidence
                raise AssertionError(f"{claim.name}: proved with {len(sym.shapes)} shapes, {num.trials} trials")
            message = (f"symbolically equal to the per-neuron chain rule at dims {shapes}, and numerically "
                       f"in {num.trials} trials (max rel. error {num.max_rel_err:.1e}){rounding}")
            return self._result(claim, Verdict.PROVED, message, symbolic=symbolic, numeric=numeric)
        if sym.status == "counterexample":
            detail, sizes = sym.refutation, sym.sizes
            assert detail is not None and sizes is not None
            cex = Counterexample(sizes, self.cfg.seed, "symbolic", detail.index, detail.true, detail.claimed,
                                 detail.expression, reproduce_command(self.d.path, self.cfg.seed, self.options,
                                                                      self.cfg))
            # a nonzero difference below float64's range (exp(-36000)) reads 0 as a float
            shown = f"{detail.difference:.6g}" if detail.difference else "nonzero (below float64's range)"
            message = (f"the numeric trials agreed, but the exact difference at entry {detail.index} "
                       f"(dims {_fmt_dims(sizes)}) is {shown}, not 0")
            if detail.point:
                message += f", at {detail.point}"
                if detail.true == detail.true and detail.claimed == detail.claimed:
                    message += f" ({true_and_claimed(detail.true, detail.claimed)})"
            if detail.domains:
                message += f"; with the labels drawn as {detail.domains}"
            return self._result(claim, Verdict.REFUTED, message, symbolic=symbolic, numeric=numeric,
                                counterexample=cex)
        symbolic["reason"] = sym.reason
        undecided = num.tie_failure or num.overflow_failure
        if undecided is not None:  # float64 could not decide that trial, nor the exact check the claim
            cex, diagnosis = self._localize(claim, undecided)
            why = ("at a comparison within rounding of a tie" if undecided is num.tie_failure else
                   "where float64 overflows evaluating the claim (rewrite it to stay in range: subtract the max "
                   "before exp)")
            message = (f"the claim differs from the true gradient at entry {cex.index} "
                       f"(dims {_fmt_dims(cex.dims)}): {true_and_claimed(cex.true, cex.claimed)}, in float64, {why}; "
                       f"the exact check could not decide ({sym.reason})")
            return self._result(claim, Verdict.REFUTED, message, symbolic=symbolic, numeric=numeric,
                                counterexample=cex, diagnosis=diagnosis)
        message = (f"numerically equal in {num.trials} trials (max rel. error {num.max_rel_err:.1e}){rounding}; "
                   f"not proved: {sym.reason}")
        return self._result(claim, Verdict.VERIFIED, message, symbolic=symbolic, numeric=numeric)

    def _localize(self, claim: Claim, failure: NumericFailure) -> tuple[Counterexample, str | None]:
        """Report the failure at a small shape where possible, with the entry's per-neuron expression."""
        trial, sizes, index, run = failure.trial, failure.sizes, failure.index, failure.run
        from .diagnose import diagnose
        from .engines.evaluate import evaluate_definition
        from .engines.numeric import compare, numeric_backend, rng_for, run_trial

        seed = self.cfg.seed
        small = None
        if not self.fixed:
            try:
                candidates = self._small_shapes()
            except DerivationError:  # no small sizes at all: the failing trial's own dims are reported
                candidates = []
            for k, shape in enumerate(candidates):
                rng = rng_for(seed, self.d.path, 200_000 + k)
                try:
                    candidate = run_trial(self.d, shape, rng, trial)
                except Exception:  # noqa: BLE001 - localisation is best effort; the big trial stands
                    continue
                if claim.name in candidate.claims:
                    ok, _, _, idx = compare(candidate.claims[claim.name], candidate.grads[claim.target],
                                            self.cfg.rtol, self.cfg.atol)
                    if not ok:
                        small = (shape, idx, candidate)
                        break
        where = "small" if small else trial
        shape, idx, chosen = small if small else (sizes, index, run)
        claimed = chosen.claims[claim.name]
        truth = chosen.grads[claim.target]
        expression = self._entry_expression(claim, shape, idx, chosen.values) if small else None
        cex = Counterexample(
            dims=dict(shape), seed=seed, trial=where if small else trial, index=list(idx),
            true=float(truth[idx]) if truth.ndim else float(truth), claimed=float(np.broadcast_to(claimed, truth.shape)[idx]),
            expression=expression, command=reproduce_command(self.d.path, seed, self.options, self.cfg),
        )
        backend = numeric_backend(self.d, trial)
        env = _trial_env(chosen)

        def evaluate_with(changes: dict[str, np.ndarray]) -> np.ndarray:
            local = dict(env)
            local.update(changes)
            for helper in self.d.backward:
                local[helper.name] = evaluate_definition(helper.root, helper.index, local, shape, backend)
            return evaluate_definition(claim.root, claim.index, local, shape, backend)

        diagnosis = diagnose(self.d, claim.name, np.broadcast_to(claimed, truth.shape), truth, env, shape,
                             backend.functions, evaluate_with)
        if small and diagnosis and diagnosis.startswith("a constant factor of"):
            diagnosis = _factor_at_both(diagnosis, shape, run, claim, sizes)
        return cex, diagnosis

    def _entry_expression(self, claim: Claim, sizes: dict[str, int], idx: tuple,
                          values: dict[str, np.ndarray]) -> str | None:
        """The per-neuron scalar expression of the true entry, e.g. ``a[0]*grad_h[1]*f_prime(z[1])``.

        A courtesy of the report, not evidence: it gets at most ``ENTRY_EXPRESSION_SECONDS`` of the
        budget (a transformer block's fully expanded entry used to spend the whole 10 s and give up). The truth
        reads the counterexample's own concrete inputs (labels, indices: ``values``), not its own draws."""
        if not self.options.symbolic:
            return None
        budget = self.options.timeout
        if budget > 0:
            budget = min(budget, ENTRY_EXPRESSION_SECONDS)
        try:
            from .engines.symbolic import SymbolicTruth

            with time_budget(budget):
                truth = self.truths.get(_key(sizes))  # built by the symbolic check for other claims
                if truth is None:
                    truth = self.truths[_key(sizes)] = SymbolicTruth(self.d, sizes, self.cfg.seed)
                if any(not np.array_equal(drawn, values[name]) for name, drawn in truth.drawn.items()):
                    truth = SymbolicTruth(self.d, sizes, self.cfg.seed, given=values)  # this trial's labels
                return str(truth.grads.entry(claim.target, tuple(idx)))
        except Exception:  # noqa: BLE001 - the counterexample stands without its expression
            return None


#: CPU seconds a refuted claim's counterexample may spend writing out its true entry symbolically.
ENTRY_EXPRESSION_SECONDS = 1.0


def _cheapest_design(first, rows, count: int) -> tuple[int, ...] | None:
    """The indices of the least-work design: one of ``first``'s assignments, then ``count`` (1 or 2) of ``rows``'s,
    each axis at a different size in each (both sorted by work, so the first found of equal work is kept); among
    the 16 cheapest first assignments and, after each, the 32 cheapest rows that fit."""
    f_rows, f_values, f_work = first
    r_rows, r_values, r_work = rows
    if not len(r_rows):
        return None
    best: tuple[int, ...] | None = None
    total = math.inf
    for i in range(min(len(f_rows), 16)):  # the cheapest few: the search costs less than it saves
        if f_work[i] + count * r_work[0] >= total:
            break
        usable = np.flatnonzero(np.all(r_values != f_values[i], axis=1))
        for a in usable[:32]:
            if f_work[i] + count * r_work[a] >= total:
                break
            if count == 1:
                best, total = (i, int(a)), f_work[i] + r_work[a]
                break
            apart = usable[np.all(r_values[usable] != r_values[a], axis=1)]
            if len(apart) and f_work[i] + r_work[a] + r_work[apart[0]] < total:
                best, total = (i, int(a), int(apart[0])), f_work[i] + r_work[a] + r_work[apart[0]]
    return best


def _failure(exc: BaseException) -> str:
    """An exception as a report says it: its message, or its kind when it has none (a RecursionError)."""
    return str(exc) or type(exc).__name__


_COMPARING = frozenset({"gt", "ge", "lt", "le", "maximum", "minimum"})  # two operands, a branch where they tie


def _trial_env(run) -> dict[str, np.ndarray]:
    """A trial's values with every ``grad_v`` bound to its true gradient: what a claim and its helpers read."""
    env = dict(run.values)
    env.update({f"grad_{n}": g for n, g in run.grads.items()})
    return env


def _factor_at_both(diagnosis: str, small: dict[str, int], run, claim: Claim, sizes: dict[str, int]) -> str:
    """A factor named after a dim at the small dims where the claim was localised (E = 2) must be that dim's size
    in the failing trial too: else it is the constant itself (a claim doubled, with E = 2 there)."""
    from .lang.ops.core import dense

    dim = diagnosis.split()[4]  # "a constant factor of {dim} too many …" or "of 1/{dim} …"
    name = dim[2:] if dim.startswith("1/") else dim
    if name not in sizes or name not in small:
        return diagnosis
    claimed = np.broadcast_to(np.asarray(dense(run.claims.factored(claim.name))), run.grads[claim.target].shape)
    truth = np.asarray(run.grads[claim.target])
    if not np.vdot(truth, truth):
        return diagnosis
    k = float(np.vdot(claimed, truth) / np.vdot(truth, truth))
    expected = sizes[name] if dim == name else 1 / sizes[name]
    if abs(k - expected) <= 1e-9 * abs(expected):
        return diagnosis
    factor = small[name] if dim == name else 1 / small[name]
    return f"off by a constant factor: the claim is {factor:.6g} times the gradient"


def _finite_rest(claimed, truth, cfg: Resolved) -> tuple[bool, float, float, tuple] | None:
    """Where the claim's float64 value is NaN or ±inf and the true gradient finite (an overflow in the claim
    alone): :func:`.engines.numeric.compare` of its other entries, the worst index the first such entry when they
    agree; None when the truth is not finite there either."""
    from .engines.numeric import compare
    from .lang.ops.core import dense

    claimed, truth = np.asarray(dense(claimed)), np.asarray(dense(truth))
    claimed = np.broadcast_to(claimed, truth.shape)
    bad = ~np.isfinite(claimed)
    if not bad.any() or not np.all(np.isfinite(truth[bad])):
        return None
    ok, abs_err, rel_err, index = compare(np.where(bad, truth, claimed), truth, cfg.rtol, cfg.atol)
    if ok:
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), truth.shape))
    return ok, abs_err, rel_err, index


def _rounding_of(tape) -> float:
    """16·eps per recorded operation, times the largest magnitude any of them reached."""
    peak = 0.0
    for _, _, out, _ in tape.entries:
        values = np.abs(np.real(np.asarray(out)))
        if values.size and values.dtype.kind in "fiub":
            values = values.astype(float)
            peak = max(peak, float(np.max(values[np.isfinite(values)], initial=0.0)))
    return 16 * np.finfo(float).eps * len(tape.entries) * peak


def _truth_rounding(run, sizes: dict[str, int]) -> float:
    """How far rounding alone can move a true gradient in float64: an entry sums at most as many terms as the
    longest axis has entries (a BLAS dot, a reduction), each up to the largest true gradient of the trial, at
    16·eps each. A gradient that is exactly 0 because its terms cancel (a bias before a batch norm, a shift
    before a centring) comes out as that much noise: 1e-11 at a batch of 8192, past atol."""
    from .lang.ops import dense

    peak = 0.0
    for name in run.grads:
        values = np.abs(np.asarray(dense(run.grads.factored(name)), dtype=float))
        if values.size:
            peak = max(peak, float(np.max(values[np.isfinite(values)], initial=0.0)))
    return 16 * np.finfo(float).eps * max(sizes.values(), default=1) * peak


class _NumericTrouble(Exception):
    pass


def _key(sizes: dict[str, int]) -> tuple:
    return tuple(sorted(sizes.items()))


def _fmt_dims(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


