"""The command line: options → pipeline → reporter. Nothing else lives here.

The pipeline is imported inside each command, so ``--version`` and ``--help``
import neither NumPy nor SymPy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, replace

import click

from . import __version__
from .limits import DEFAULT_LIMITS, DESCRIPTIONS, LIMIT_FIELDS, Limits


def _parse_dims(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[tuple[str, int], ...]:
    if not value:
        return ()
    out = []
    for item in value.split(","):
        name, sep, size = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"expected NAME=SIZE pairs like n=4096,m=512, got {item!r}")
        try:
            n = int(size)
        except ValueError:
            raise click.BadParameter(f"{name}={size!r}: a size must be a positive integer") from None
        if n < 1:
            raise click.BadParameter(f"{name}={n}: a size must be a positive integer")
        out.append((name, n))
    return tuple(out)


def _limit_options(command: Callable[..., None]) -> Callable[..., None]:
    """One option per field of :class:`Limits` (see the README's "Bounds"): ``--max-expr-chars``, …"""
    for name in reversed(LIMIT_FIELDS):
        default = asdict(DEFAULT_LIMITS)[name]
        kind = click.IntRange(1, None) if isinstance(default, int) else click.FloatRange(0, None, min_open=True)
        command = click.option(Limits.flag(name), "bound_" + name, type=kind, default=None, metavar="N",
                               help=f"Bound: {DESCRIPTIONS[name]} (default {default:g}).")(command)
    return command


def _limits(bounds: dict[str, int | float | None]) -> Limits:
    return replace(DEFAULT_LIMITS, **{k[len("bound_"):]: v for k, v in bounds.items() if v is not None})


class _Group(click.Group):
    """Ctrl-C exits 130 and SIGTERM 143, with one line and no traceback (click's own handling exits 1,
    which means "a claim failed"); a reader that closes the pipe early (``| head``) is not an error."""

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

    console = PipeConsole(file=stream) if stream else PipeConsole()
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backpropcheck")
def main() -> None:
    """Prove or refute matrix-form backpropagation against the per-neuron chain rule."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--seed", type=click.IntRange(0, None), default=None, help="Seed for every random draw (default: the file's, else 0).")
@click.option("--trials", type=click.IntRange(1, None), default=None,
              help="Numeric trials per file (default 20; at most --max-trials).")
@click.option("--shapes", type=click.IntRange(0, None), default=None,
              help="Small dim assignments for the symbolic proof (default 3; at most --max-shapes).")
@click.option("--max-dim", type=click.IntRange(2, None), default=None, help="Largest random dim (default 64).")
@click.option("--rtol", type=click.FloatRange(0, 1), default=None, help="Relative tolerance (default 1e-7).")
@click.option("--atol", type=click.FloatRange(0, None), default=None, help="Absolute tolerance (default 1e-12).")
@click.option("--dims", callback=_parse_dims, default=None, metavar="n=4096,m=512",
              help="Numeric trials at exactly these dims (production shapes).")
@click.option("--no-symbolic", is_flag=True, help="Numeric trials only: verdicts are 'verified', not 'proved'.")
@click.option("--timeout", type=click.FloatRange(0, None), default=10.0, show_default=True,
              help="CPU seconds of symbolic work per claim before it falls back to 'verified'.")
@click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Files checked in parallel worker processes (every file runs in a worker: see --file-timeout).")
@click.option("--fail-fast", is_flag=True, help="Stop after the first file that does not pass.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit", "markdown"]), default="text",
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report to FILE instead of standard output.")
@click.option("-q", "--quiet", is_flag=True, help="Show only what did not pass.")
@click.option("-v", "--verbose", is_flag=True, help="Show every claim's evidence.")
@click.option("--examples", is_flag=True, help="Also check the bundled derivations shipped in the package.")
@_limit_options
def check(paths, seed, trials, shapes, max_dim, rtol, atol, dims, no_symbolic, timeout, jobs, fail_fast, fmt,
          output, quiet, verbose, examples=False, **bounds) -> None:
    """Check derivation files or folders (recursively *.toml); default ./derivations."""
    from pathlib import Path

    from .checker import FileResult, Options, walk_files
    from .report import exit_status

    if examples:
        from .templates import bundled_folder

        paths = tuple(paths) + (bundled_folder(),)
    if not paths:
        if not Path("derivations").is_dir():
            raise click.UsageError("no PATH given and no ./derivations folder here")
        paths = ("derivations",)
    files, unreadable = walk_files(list(paths))
    if not files and not unreadable:
        raise click.UsageError(f"no *.toml files under {', '.join(paths)}")
    if output and not Path(output).absolute().parent.is_dir():  # say so now, not after the whole run
        raise click.BadParameter(f"the folder of {output!r} does not exist", param_hint="'--output'")
    options = Options(seed=seed, trials=trials, shapes=shapes, max_dim=max_dim, rtol=rtol, atol=atol, dims=dims,
                      symbolic=not no_symbolic, timeout=timeout, limits=_limits(bounds))
    # a folder that cannot be read is an error of the run, reported first, like an invalid file
    results = [FileResult(f, "", "error", f"{f}: cannot read this folder ({why}); the files in it were not checked")
               for f, why in unreadable]
    if files and not (fail_fast and results):
        results += _run(files, options, jobs, fail_fast, progress=_want_progress(fmt, output, quiet, sys.stderr))
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
        self.bar = None
        self.task = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def start(self, path: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=_short(path))

    def done(self, path: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=_short(path))

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _run(files: list[str], options, jobs: int, fail_fast: bool, progress: bool = False):
    """Check ``files``, each in its own worker (see :mod:`.runner`); the results are in file order and
    identical for every ``jobs``. With ``fail_fast`` the run stops after the first file, in file order,
    that does not pass — in parallel too, so ``--jobs`` never changes which files are reported."""
    from .runner import run_files

    with _Progress(len(files), progress) as bar:
        return run_files(files, options, jobs, fail_fast, start=bar.start, done=bar.done)


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
    from .textsafe import visible

    if fmt == "json":  # JSON escapes control characters itself; file names that are not UTF-8 too
        from .report import json as json_report

        (stream or sys.stdout).write(visible(json_report.render(results, seed)))
    elif fmt == "junit":  # XML 1.0 may not hold control characters at all
        from .report import junit

        (stream or sys.stdout).write(visible(junit.render(results, seed)))
    elif fmt == "markdown":
        from .report import markdown

        (stream or sys.stdout).write(visible(markdown.render(results, seed, quiet=quiet)))
    else:
        from .report import text

        text.render(results, _console(stream), verbose=verbose, quiet=quiet)


# -- classroom: explain, demo, new, list ------------------------------------------------------

EXPLAIN_MAX_DIM = 6  # explain works symbolically, entry by entry: small dims only


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--claim", default=None, metavar="NAME", help="Explain only this claim (e.g. grad_W).")
@click.option("--dims", callback=_parse_dims, default=None, metavar="n=3,m=2",
              help=f"Small dims for the walk-through (each at most {EXPLAIN_MAX_DIM}; default 3, 2, then 2s).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "latex"]), default="text",
              show_default=True, help="markdown: GitHub math; latex: a standalone document.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of standard output.")
@click.option("--trials", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Numeric trials behind the verdict.")
@click.option("--no-symbolic", is_flag=True, help="Verdict from numeric trials only (faster; 'verified').")
@click.option("--timeout", type=click.FloatRange(0, None), default=10.0, show_default=True,
              help="CPU seconds of symbolic work per claim for the verdict.")
def explain(file, claim, dims, fmt, output, trials, no_symbolic, timeout) -> None:
    """Fill in the "???": the per-neuron chain rule, the Jacobian route and the matrix form of each claim."""
    from .checker import Options
    from .errors import DerivationError
    from .explain import explain_file, render_latex, render_markdown, render_text

    too_big = [f"{k}={v}" for k, v in dims if v > EXPLAIN_MAX_DIM]
    if too_big:
        raise click.BadParameter(f"{', '.join(too_big)}: explain works entry by entry, use dims up to "
                                 f"{EXPLAIN_MAX_DIM} (check --dims takes production sizes)", param_hint="--dims")
    options = Options(trials=trials, shapes=1, symbolic=not no_symbolic, timeout=timeout)
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


@main.command()
@click.option("--no-pause", is_flag=True, help="Run straight through (always so when not on a terminal).")
def demo(no_pause) -> None:
    """The classroom walk-through on the bundled seed example (dense_column.toml)."""

    from .explain import run_demo

    console = _console()
    pausing = not no_pause and _interactive()

    def pause() -> None:
        if pausing:
            click.pause("\n(press any key for the next step)")

    run_demo(console, pause)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def new(path, force) -> None:
    """Write a commented template derivation to PATH (it checks cleanly as written)."""
    from pathlib import Path

    from .templates import TEMPLATE

    target = Path(path)
    if target.exists() and not force:
        raise click.ClickException(f"{path} exists; use --force to overwrite it")
    try:
        target.write_text(TEMPLATE, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {path}; next: backpropcheck check {path}   or   backpropcheck explain {path}")


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
                  f"--examples; explain one: backpropcheck explain {escape(folder)}/dense_column.toml)",
                  style="dim", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
