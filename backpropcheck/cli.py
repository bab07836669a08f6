"""The command line: options → pipeline → reporter. Nothing else lives here.

The pipeline is imported inside each command, so ``--version`` and ``--help``
import neither NumPy nor SymPy.
"""

from __future__ import annotations

import sys

import click

from . import __version__


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backpropcheck")
def main() -> None:
    """Prove or refute matrix-form backpropagation against the per-neuron chain rule."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--seed", type=int, default=None, help="Seed for every random draw (default: the file's, else 0).")
@click.option("--trials", type=click.IntRange(1, 10_000), default=None, help="Numeric trials per file (default 20).")
@click.option("--shapes", type=click.IntRange(0, 20), default=None,
              help="Small dim assignments for the symbolic proof (default 3).")
@click.option("--max-dim", type=click.IntRange(2, None), default=None, help="Largest random dim (default 64).")
@click.option("--rtol", type=click.FloatRange(0, 1), default=None, help="Relative tolerance (default 1e-7).")
@click.option("--atol", type=click.FloatRange(0, None), default=None, help="Absolute tolerance (default 1e-12).")
@click.option("--dims", callback=_parse_dims, default=None, metavar="n=4096,m=512",
              help="Numeric trials at exactly these dims (production shapes).")
@click.option("--no-symbolic", is_flag=True, help="Numeric trials only: verdicts are 'verified', not 'proved'.")
@click.option("--timeout", type=click.FloatRange(0, None), default=10.0, show_default=True,
              help="Seconds of symbolic work per claim before it falls back to 'verified'.")
@click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Files checked in parallel processes.")
@click.option("--fail-fast", is_flag=True, help="Stop after the first file that does not pass.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report to FILE instead of standard output.")
@click.option("-q", "--quiet", is_flag=True, help="Show only what did not pass.")
@click.option("-v", "--verbose", is_flag=True, help="Show every claim's evidence.")
def check(paths, seed, trials, shapes, max_dim, rtol, atol, dims, no_symbolic, timeout, jobs, fail_fast, fmt,
          output, quiet, verbose) -> None:
    """Check derivation files or folders (recursively *.toml); default ./derivations."""
    from pathlib import Path

    from .checker import Options, find_files
    from .report import exit_status

    if not paths:
        if not Path("derivations").is_dir():
            raise click.UsageError("no PATH given and no ./derivations folder here")
        paths = ("derivations",)
    files = find_files(list(paths))
    if not files:
        raise click.UsageError(f"no *.toml files under {', '.join(paths)}")
    options = Options(seed=seed, trials=trials, shapes=shapes, max_dim=max_dim, rtol=rtol, atol=atol, dims=dims,
                      symbolic=not no_symbolic, timeout=timeout)
    results = _run(files, options, jobs, fail_fast)
    _report(results, fmt, output, seed if seed is not None else 0, quiet, verbose)
    sys.exit(exit_status(results))


def _run(files: list[str], options, jobs: int, fail_fast: bool):
    from .checker import check_path

    results = []
    if jobs > 1 and len(files) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            for result in pool.map(check_path, files, [options] * len(files)):
                results.append(result)
                if fail_fast and result.status != "passed":
                    pool.shutdown(cancel_futures=True)
                    break
        return results
    for path in files:
        result = check_path(path, options)
        results.append(result)
        if fail_fast and result.status != "passed":
            break
    return results


def _report(results, fmt: str, output: str | None, seed: int, quiet: bool, verbose: bool) -> None:
    from rich.console import Console

    stream = open(output, "w", encoding="utf-8") if output else None  # noqa: SIM115 - closed below
    try:
        if fmt == "json":
            from .report import json as json_report

            (stream or sys.stdout).write(json_report.render(results, seed))
        else:
            from .report import text

            console = Console(file=stream) if stream else Console()
            console.soft_wrap = not console.is_terminal
            text.render(results, console, verbose=verbose, quiet=quiet)
    finally:
        if stream:
            stream.close()


if __name__ == "__main__":  # pragma: no cover
    main()
