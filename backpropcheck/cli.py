"""The command line: options → pipeline → reporter. Nothing else lives here.

The pipeline is imported inside each command, so ``--version`` and ``--help``
import neither NumPy nor SymPy.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .limits import DEFAULT_LIMITS, DESCRIPTIONS, LIMIT_FIELDS, Limits, bound_range
from .options import EXPLAIN_MAX_DIM, EXPLAIN_MAX_TRIALS, by_name, parse_dims
from .report.formats import FORMATS

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def _parse_dims(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[tuple[str, int], ...]:
    try:
        return parse_dims(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class _FloatRange(click.FloatRange):
    """click's FloatRange without NaN, which is within no range (click's own lets it through: ``--rtol nan``,
    ``--max-literal nan``), as the plugin's types, the API and ``[check]`` refuse it."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number in the range {self._describe_range()}.", param, ctx)
        return number


def _limit_options(command: Callable[..., None]) -> Callable[..., None]:
    """One option per field of :class:`Limits` (see the README's "Bounds"): ``--max-expr-chars``, …"""
    for name in reversed(LIMIT_FIELDS):
        default = asdict(DEFAULT_LIMITS)[name]
        number, low = bound_range(name)  # the values Limits itself accepts
        kind = click.IntRange(low, None) if number is int else _FloatRange(low, None, min_open=True)
        command = click.option(Limits.flag(name), "bound_" + name, type=kind, default=None, metavar="N",
                               help=f"Bound: {DESCRIPTIONS[name]} (default {default:g}).")(command)
    return command


def _run_options(*names: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The options ``names`` of the table the pytest plugin reads too (:mod:`.options`), as click options:
    a range from the one table the loader checks ``[check]`` against, a flag, or a number with a default."""

    def add(command: Callable[..., None]) -> Callable[..., None]:
        table = by_name()
        for name in reversed(names):
            option = table[name]
            if option.kind is bool:
                command = click.option(option.flag, is_flag=True, help=option.help_text(bound_flag=True))(command)
                continue
            low, high = option.bounds
            kind: click.ParamType
            if option.kind is int:
                kind = click.IntRange(int(low), None if high is None else int(high))
            else:
                kind = _FloatRange(low, high)
            command = click.option(option.flag, type=kind, default=option.default,
                                   show_default=option.default is not None,
                                   help=option.help_text(bound_flag=True))(command)
        return command

    return add


class _BoundsCommand(click.Command):
    """``--help`` lists the ``--max-*`` bounds under their own heading, after the everyday options."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        everyday: list[tuple[str, str]] = []
        bounds: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                (bounds if param.name and param.name.startswith("bound_") else everyday).append(record)
        if everyday:
            with formatter.section("Options"):
                formatter.write_dl(everyday)
        if bounds:
            with formatter.section("Bounds (a file that crosses one is an error, exit 2; see docs/cli.md)"):
                formatter.write_dl(bounds)


def _limits(bounds: dict[str, int | float | None]) -> Limits:
    given: dict[str, Any] = {k[len("bound_"):]: v for k, v in bounds.items() if v is not None}
    return replace(DEFAULT_LIMITS, **given)


class _Group(click.Group):
    """Ctrl-C exits 130 and SIGTERM 143, with one line and no traceback (click's own handling exits 1,
    which means "a claim failed"); a reader that closes the pipe early (``| head``) is not an error; any
    other OSError that reaches here (stdout on a full disk) exits 2 with one line."""

    def invoke(self, ctx: click.Context):
        from .runner import Terminated

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _leave("backpropcheck: interrupted", 130)
        except Terminated:
            _leave("backpropcheck: terminated", 143)
        except BrokenPipeError:
            _stdout_gone()
            sys.exit(0)
        except OSError as exc:  # the output cannot be written (a full disk): an error of the run, not a failure
            _leave(f"error: {exc}", 2)


def _leave(message: str, status: int) -> None:
    """One line on stderr (text from a file shown, not obeyed) and the exit status; no traceback."""
    from .textsafe import visible

    try:
        click.echo(visible(message), err=True)
    except Exception:  # noqa: BLE001 - stderr may be gone too
        pass
    sys.exit(status)


def _console(stream=None):
    """A rich Console on ``stream`` (default stdout) that shows the text of a file as text (escape sequences,
    control characters and undecodable bytes of file names escaped: see :mod:`.textsafe`), and whose broken
    pipe is a BrokenPipeError for the command to handle (rich's own exits 1, which means "a claim failed")."""
    from rich.console import Console
    from rich.segment import Segment

    from .textsafe import visible

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError()

        def _render_buffer(self, buffer):  # rich's own control segments (colours, cursor) pass as they are
            return super()._render_buffer([s if s.control else Segment(visible(s.text), s.style, s.control)
                                           for s in buffer])

    # no automatic highlighting: it bolded scattered numbers and brackets of file text and of the summary
    console = PipeConsole(file=stream, emoji=False, highlight=False) if stream else PipeConsole(emoji=False,
                                                                                                highlight=False)
    console.soft_wrap = not console.is_terminal
    return console


def _stdout_gone() -> None:
    """The reader of stdout has gone: point stdout at /dev/null, so the flush at exit cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except Exception:  # noqa: BLE001 - not a real file (tests), nothing to flush
        pass


SYMPY_CACHE_SIZE = 50_000


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backpropcheck")
def main() -> None:
    """Prove or refute matrix-form backpropagation against the per-neuron chain rule."""
    import os

    # SymPy memoises its constructors in one LRU cache per function, sized from this variable when SymPy is
    # first imported (here, after this line). At its default of 1000 entries a truth's construction evicts the
    # entries the next dims and the next file would reuse: 50,000 took a tenth off the instructions of a check
    # of derivations/, for some 20 MB. A value the user set stands.
    os.environ.setdefault("SYMPY_CACHE_SIZE", str(SYMPY_CACHE_SIZE))


def run() -> None:
    """The console script and ``python -m backpropcheck``: :func:`main`, then an exit without the
    interpreter's teardown. With SymPy and NumPy loaded, freeing every module's objects takes ~80 ms
    here, for a process that ends anyway. As at a normal exit, the atexit handlers run and stdout and
    stderr are flushed first; a report that cannot be flushed exits 2 (a closed pipe keeps the status)."""
    try:
        try:
            main(prog_name="backpropcheck")
        except OSError as exc:  # outside a command: --help on a full disk (see _Group.invoke)
            _leave(f"error: {exc}", 2)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed (>&-): Python gives None
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            _stdout_gone()
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk; ValueError: closed by the program
            if stream is sys.stdout:
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"error: writing the report failed: {exc}\n")
                    sys.stderr.flush()
                status = 2
    os._exit(status)


def _exit_status(code: object) -> int:
    """What ``sys.exit(code)`` makes of ``code``: None is 0, an int itself, anything else printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{code}\n")
    return 1


@main.command(cls=_BoundsCommand, short_help="Prove or refute the claims of derivation files, folders and notes.")
@click.argument("paths", nargs=-1, type=click.Path())
@_run_options("seed", "trials", "shapes", "max_dim", "rtol", "atol")
@click.option("--dims", callback=_parse_dims, default=None, metavar="n=4096,m=512",
              help="Numeric trials at exactly these dims (production shapes).")
@_run_options("no_symbolic", "timeout")
@click.option("--jobs", type=click.IntRange(1, 256), default=None, show_default="the available cores",
              help="Files checked in parallel worker processes (every file runs in a worker: see --file-timeout).")
@click.option("--fail-fast", is_flag=True, help="Stop after the first file that does not pass.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="text", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report to FILE instead of standard output.")
@click.option("-q", "--quiet", is_flag=True, help="Show only what did not pass.")
@click.option("-v", "--verbose", is_flag=True, help="Show every claim's evidence.")
@click.option("--examples", is_flag=True, help="Also check the bundled derivations shipped in the package.")
@click.option("--only-derivations", is_flag=True,
              help="Skip valid TOML files without any derivation table (a pyproject.toml) and notes without "
                   "blocks, as the pre-commit hook does; empty, broken or misspelt files are still checked.")
@_limit_options
def check(paths, seed, trials, shapes, max_dim, rtol, atol, dims, no_symbolic, timeout, jobs, fail_fast, fmt,
          output, quiet, verbose, examples=False, only_derivations=False, **bounds) -> None:
    """Check derivation files or folders (recursively *.toml, and *.md notes holding "toml backpropcheck"
    blocks); default ./derivations. A note's block is named NOTE.md:LINE, and that name is a PATH too."""
    from pathlib import Path

    from .checker import FileResult, Options
    from .files import nothing_under, walk_errors, walk_paths
    from .report import exit_status

    if quiet and verbose:  # one would silently win over the other
        raise click.UsageError("-q/--quiet and -v/--verbose ask for opposite reports: give one of them")
    if examples:
        from .templates import bundled_folder

        paths = tuple(paths) + (bundled_folder(),)
    if not paths:
        if not Path("derivations").is_dir():
            raise click.UsageError("no PATH given and no ./derivations folder here")
        paths = ("derivations",)
    files, unreadable, empty = walk_paths(list(paths), _limits(bounds))
    if only_derivations:  # as alone (below), a folder without derivations is nothing to check
        from .discover import looks_like_derivation

        files, empty = [f for f in files if looks_like_derivation(f, _limits(bounds))], []
    if not files and not unreadable:
        from .notes import is_note

        if only_derivations and paths:  # pre-commit passing a pyproject.toml: nothing to check
            click.echo(f"no derivations in {', '.join(paths)}: nothing to check", err=True)
            sys.exit(0)
        if all(is_note(p) and Path(p).is_file() for p in paths):  # pre-commit passing a README: nothing to check
            click.echo(f"no ```toml backpropcheck blocks in {', '.join(paths)}: nothing to check", err=True)
            sys.exit(0)
        raise click.UsageError(nothing_under(list(paths)))
    if output and not Path(output).absolute().parent.is_dir():  # say so now, not after the whole run
        raise click.BadParameter(f"the folder of {output!r} does not exist", param_hint="'--output'")
    largest = _limits(bounds).max_dim  # a size past the dim limit is one usage error, not one error per file
    for flag, size in [("--max-dim", max_dim)] + [(f"--dims {name}", value) for name, value in dims or ()]:
        if size is not None and size > largest:
            raise click.UsageError(f"{flag} ({size}) exceeds the limit of {largest}; raise it with --dim-limit")
    options = Options(seed=seed, trials=trials, shapes=shapes, max_dim=max_dim, rtol=rtol, atol=atol, dims=dims,
                      symbolic=not no_symbolic, timeout=timeout, limits=_limits(bounds))
    # a folder that cannot be read, or a folder given with nothing under it, is an error of the run, reported
    # first, like an invalid file
    results = [FileResult(f, "", "error", why) for f, why in walk_errors(unreadable, empty)]
    if jobs is None:  # the report is the same for every --jobs, so use what the machine has
        jobs = _available_cores(len(files))
    if files and not (fail_fast and results):
        results += _run(files, options, jobs, fail_fast, progress=_want_progress(fmt, output, quiet, sys.stderr),
                        meanwhile=FORMATS[fmt].preload)
    try:
        _report(results, fmt, output, seed if seed is not None else 0, quiet, verbose)
    except BrokenPipeError:  # `| head`: the reader has what it wanted; the status stays the check's
        _stdout_gone()
    sys.exit(exit_status(results))


def _want_progress(fmt: str, output: str | None, quiet: bool, stream) -> bool:
    """A progress bar only for the text report to stdout, without --quiet, when ``stream`` is a terminal."""
    isatty = getattr(stream, "isatty", None)
    return fmt == "text" and output is None and not quiet and bool(isatty and isatty())


def _short(path: str) -> str:
    """The file's name and its folder's: enough to follow, short enough to leave room for the bar."""
    from pathlib import Path

    from rich.markup import escape

    return escape("/".join(Path(path).parts[-2:]))


class _Progress:
    """A transient rich bar on stderr (``enabled``), else nothing: ``start(path)`` and ``done(path)``."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), console=Console(stderr=True, emoji=False),
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def start(self, path: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=_short(path))

    def done(self, path: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1, description=_short(path))

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _available_cores(files: int) -> int:
    """The cores this process may run on (at most one worker per file, at most 256)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, files, 256))


def _run(files: list[str], options, jobs: int, fail_fast: bool, progress: bool = False,
         meanwhile: Callable[[], None] = lambda: None):
    """Check ``files``, each in its own worker (see :mod:`.runner`); the results are in file order and
    identical for every ``jobs``. With ``fail_fast`` the run stops after the first file, in file order,
    that does not pass — in parallel too, so ``--jobs`` never changes which files are reported."""
    from .runner import run_files

    with _Progress(len(files), progress) as bar:
        return run_files(files, options, jobs, fail_fast, start=bar.start, done=bar.done, meanwhile=meanwhile)


def _report(results, fmt: str, output: str | None, seed: int, quiet: bool, verbose: bool) -> None:
    """The report to stdout, or to ``output`` atomically (see :mod:`.outfile`; a write error exits 2)."""
    import contextlib

    from .outfile import OutputError, atomic_output

    try:
        with atomic_output(output) if output else contextlib.nullcontext() as stream:
            _write_report(stream, results, fmt, seed, quiet, verbose)
    except OutputError as exc:
        _leave(f"error: {exc}", 2)


def _write_report(stream, results, fmt: str, seed: int, quiet: bool, verbose: bool) -> None:
    """The format's reporter (:data:`.report.formats.FORMATS`): on a rich console, or as text made visible
    (JSON escapes control characters itself, XML 1.0 may not hold them at all; this catches the rest)."""
    from .textsafe import visible

    reporter = FORMATS[fmt]
    if reporter.draw is not None:
        reporter.draw(results, _console(stream), verbose=verbose, quiet=quiet)
    else:
        (stream or sys.stdout).write(visible(reporter.render(results, seed, quiet=quiet, verbose=verbose)))


# -- classroom: explain, demo, new, list ------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _derivation_file(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A file, a note's block ``notes.md:LINE``, or the name of a bundled derivation as ``list`` prints it."""
    from pathlib import Path

    from .notes import split_ref

    if Path(value).is_file() or split_ref(value) is not None:
        return value
    if Path(value).is_dir():
        raise click.BadParameter(f"{value!r} is a folder; explain takes one file")
    from .templates import bundled_files, bundled_folder

    for relative, _ in bundled_files():
        if value in (relative, relative.removesuffix(".toml")):
            return str(Path(bundled_folder()) / relative)
    raise click.BadParameter(f"no file {value!r}, and no bundled derivation of that name (see: backpropcheck list)")


@main.command(cls=_BoundsCommand, short_help="Fill in every step from the chain rule to a claim's matrix form.")
@click.argument("file", callback=_derivation_file, metavar="FILE")
@click.option("--claim", default=None, metavar="NAME", help="Explain only this claim (e.g. grad_W).")
@click.option("--dims", callback=_parse_dims, default=None, metavar="n=3,m=2",
              help=f"Small dims for the walk-through (each at most {EXPLAIN_MAX_DIM}; default 3, 2, 4, 5, 6: "
                   "distinct, used throughout the explanation).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "latex"]), default="text",
              show_default=True, help="markdown: GitHub math; latex: a standalone document.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of standard output.")
@click.option("--trials", type=click.IntRange(int(by_name()["trials"].bounds[0]), EXPLAIN_MAX_TRIALS), default=5,
              show_default=True, help="Numeric trials behind the verdict.")
@click.option("--no-symbolic", is_flag=True, help="Verdict from numeric trials only (faster; 'verified').")
@click.option("--timeout", type=_FloatRange(0, None), default=10.0, show_default=True,
              help="CPU seconds of symbolic work per claim for the verdict.")
@_limit_options
def explain(file, claim, dims, fmt, output, trials, no_symbolic, timeout, **bounds) -> None:
    """Fill in the "???": the per-neuron chain rule, the Jacobian route and the matrix form of each claim.

    FILE is a derivation file, a block of a note (notes.md:LINE) or a bundled derivation's name as
    `backpropcheck list` prints it. Exit status as for check: 0 every explained claim holds (or matches
    [expect]), 1 one does not, 2 an invalid file or claim.
    """
    from .checker import Options
    from .errors import DerivationError
    from .explain import explain_file, render_latex, render_markdown, render_text

    too_big = [f"{k}={v}" for k, v in dims if v > EXPLAIN_MAX_DIM]
    if too_big:
        raise click.BadParameter(f"{', '.join(too_big)}: explain works entry by entry, use dims up to "
                                 f"{EXPLAIN_MAX_DIM} (check --dims takes production sizes)", param_hint="--dims")
    options = Options(trials=trials, shapes=1, symbolic=not no_symbolic, timeout=timeout, limits=_limits(bounds))
    from .runner import memory_bounded

    try:
        with memory_bounded(options.limits.max_memory):  # as a check's worker is (see the README's "Bounds")
            explanation = explain_file(file, claim, dict(dims), options)
    except MemoryError:
        from .checker import out_of_memory

        _leave(f"error: {out_of_memory(file, options.limits)}", 2)
    except DerivationError as exc:
        _leave(f"error: {exc}", 2)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--claim") from None
    import contextlib

    from .outfile import OutputError, atomic_output

    try:
        with atomic_output(output) if output else contextlib.nullcontext() as stream:
            if fmt == "text":
                render_text(explanation, _console(stream))
            else:
                from .textsafe import visible

                text = visible(render_markdown(explanation) if fmt == "markdown" else render_latex(explanation))
                if stream:
                    stream.write(text)
                else:
                    click.echo(text, nl=False)
    except OutputError as exc:
        _leave(f"error: {exc}", 2)
    sys.exit(_explain_status(explanation))


def _explain_status(explanation) -> int:
    """As check's: 2 the file or a claim is invalid, 1 an explained claim does not hold (nor match [expect])."""
    if explanation.error is not None or any(r.verdict == "error" for r in explanation.results):
        return 2
    return 1 if any(not r.ok for r in explanation.results) else 0


@main.command(cls=_BoundsCommand, short_help="Write the matrix-form gradients of a forward pass, and prove them.")
@click.argument("file", callback=_derivation_file, metavar="FILE")
@click.option("--for", "targets", default=None, metavar="NAME,...",
              help="Derive only these gradients (grad_W or W; comma-separated).")
@click.option("--format", "fmt", type=click.Choice(["toml", "text", "markdown", "latex", "json"]), default="toml",
              show_default=True, help="toml: the [claims] table (and any [backward] helpers it reads) to paste into the file; text/markdown/latex: the steps.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of standard output.")
@click.option("--no-symbolic", is_flag=True, help="Check the derived claims numerically only ('verified').")
@click.option("--timeout", type=_FloatRange(0, None), default=10.0, show_default=True,
              help="CPU seconds of symbolic work per claim.")
@_limit_options
def derive(file, targets, fmt, output, no_symbolic, timeout, **bounds) -> None:
    """Write the matrix-form gradients of FILE's forward pass (its claims are ignored), and prove them.

    FILE is a derivation file, a block of a note (notes.md:LINE) or a bundled derivation's name as
    list prints it.

    Exit status 0 when every derived claim is proved, 1 when one is not (a bug of derive) or a
    gradient could not be derived, 2 for an invalid file."""
    import json

    from .checker import Options
    from .derive import derive as derive_file
    from .derive import render_latex, render_markdown, render_text
    from .errors import DerivationError

    wanted = [t.strip() for t in targets.split(",") if t.strip()] if targets else None
    options = Options(symbolic=not no_symbolic, timeout=timeout, limits=_limits(bounds))
    from .runner import memory_bounded

    try:
        with memory_bounded(options.limits.max_memory):  # as explain and a check's worker are
            result = derive_file(file, wanted, options)
    except MemoryError:
        from .checker import out_of_memory

        _leave(f"error: {out_of_memory(file, options.limits)}", 2)
    except DerivationError as exc:  # a file that cannot be read, a note's block that is not there
        _leave(f"error: {exc}", 2)
    if result.error and not result.claims:
        click.echo(f"error: {result.error}", err=True)
        sys.exit(2)
    if fmt == "text":
        from rich.console import Console

        stream = open(output, "w", encoding="utf-8") if output else None  # noqa: SIM115 - closed below
        try:
            console = Console(file=stream, emoji=False, highlight=False) if stream else Console(emoji=False, highlight=False)
            console.soft_wrap = not console.is_terminal
            render_text(result, console)
        finally:
            if stream:
                stream.close()
    else:
        text = {"toml": result.to_toml, "markdown": lambda: render_markdown(result),
                "latex": lambda: render_latex(result),
                "json": lambda: json.dumps(result.to_json(), indent=2) + "\n"}[fmt]()
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            click.echo(text, nl=False)
    bad = [c for c in result.claims if not c.ok]
    for c in bad:
        if c.verdict == "not checked":  # the file's check stopped before any verdict: result.error says why
            continue
        click.echo(f"derive: {c.name} = {c.expr} is {c.verdict}, not proved: a bug of derive, please report it"
                   f" ({c.message})", err=True)
    for target, why in result.not_derived.items():
        click.echo(f"derive: grad_{target} not derived: {why}", err=True)
    if result.error:
        click.echo(f"derive: {result.error}", err=True)
    if bad or result.not_derived or result.error:
        sys.exit(1)


@main.command(short_help="The classroom walk-through on the bundled seed example.")
@click.option("--no-pause", is_flag=True, help="Run straight through (always so when not on a terminal).")
def demo(no_pause) -> None:
    """The classroom walk-through on the bundled seed example (dense_column.toml)."""

    from .demo import run_demo

    console = _console()
    pausing = not no_pause and _interactive()

    def pause() -> None:
        if not pausing:
            return
        click.echo("\n(press any key for the next step, q to quit)", nl=False)
        try:  # not click.pause, which swallows Ctrl-C: read raw, Ctrl-C raises KeyboardInterrupt (exit 130)
            key = click.getchar()
        except EOFError:  # Ctrl-D
            key = "q"
        finally:
            click.echo()
        if key.lower() == "q":
            sys.exit(0)

    run_demo(console, pause)


@main.command(short_help="Write a commented template derivation (or a note holding one).")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def new(path, force) -> None:
    """Write a commented template derivation to PATH (it checks cleanly as written); a PATH ending in .md
    gets a short note holding the template in a ```toml backpropcheck block."""
    import os
    import tempfile
    from pathlib import Path

    from .templates import template_for

    target = Path(path)
    text = template_for(target)
    try:
        if force:  # a temporary file renamed over PATH (through a link): PATH is never left half written
            real = Path(os.path.realpath(target))
            mode = real.stat().st_mode & 0o777 if real.exists() else 0o666 & ~_umask()
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=real.parent, prefix=f".{real.name}.",
                                             delete=False) as fh:
                try:
                    fh.write(text)
                    os.chmod(fh.name, mode)
                except BaseException:
                    os.unlink(fh.name)
                    raise
            os.replace(fh.name, real)
        else:  # created exclusively: a file that appears after a check for it is not overwritten
            with open(target, "x", encoding="utf-8") as created:
                created.write(text)
    except FileExistsError:
        _leave(f"Error: {path} exists; use --force to overwrite it", 2)  # a usage error: 2, as check's
    except OSError as exc:
        _leave(f"Error: cannot write {path}: {exc.strerror or exc}", 2)
    click.echo(f"wrote {path}; next: backpropcheck check {path}   or   backpropcheck explain {path}")


def _umask() -> int:
    import os

    current = os.umask(0)
    os.umask(current)
    return current


@main.command("list")
def list_() -> None:
    """The bundled example derivations, with their titles."""
    import tomllib

    from rich.markup import escape

    from .templates import bundled_files, bundled_folder

    console = _console()
    rows = []
    for relative, node in bundled_files():
        try:
            title = tomllib.loads(node.read_text(encoding="utf-8"))["derivation"]["title"]
        except (tomllib.TOMLDecodeError, KeyError, TypeError, UnicodeDecodeError):
            title = "(unreadable)"
        rows.append((relative, str(title)))
    width = max((len(r) for r, _ in rows), default=0)
    for relative, title in rows:
        console.print(f"[cyan]{escape(relative.ljust(width))}[/]  {escape(title)}", highlight=False)
    folder = bundled_folder()
    console.print(f"{len(rows)} bundled derivations in {escape(folder)} (check them: backpropcheck check "
                  f"--examples; explain one by the name above: backpropcheck explain dense_column.toml)",
                  style="dim", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
