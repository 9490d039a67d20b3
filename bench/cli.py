"""The command line: parse arguments, call one plain function, print.

Bad input exits 2 with one line on stderr (no traceback); a command that finds
what it exists to find (an incorrect variant, a failed cell, a regression)
exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench import views
from bench.errors import BadInput

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark and profile numpy backward passes across shapes and dtypes.")
results_app = typer.Typer(no_args_is_help=True, help="Inspect and manage the results dataset.")
app.add_typer(results_app, name="results")

#: Width of tables when stdout is not a terminal (CI logs, pipes).
PIPE_WIDTH = 160
out = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, soft_wrap=True)

ResultsOpt = Annotated[str | None, typer.Option(
    "--results", help="Dataset path or URI (default $GRADSWEEP_RESULTS, then results/).")]
PluginOpt = Annotated[list[str] | None, typer.Option(
    "--plugin", help="Extra module with kernels or variants (repeatable).")]


@app.command("list")
def list_cmd(plugin: PluginOpt = None) -> None:
    """List kernels, their dims, axes and variants."""
    from impls.registry import PluginError, load

    try:
        registry = load(plugin or ())
    except PluginError as exc:
        raise BadInput(str(exc), key="--plugin") from None
    views.print_kernels(out, registry)


@app.command()
def verify(kernel: Annotated[str | None, typer.Argument(help="Only this kernel.")] = None,
           plugin: PluginOpt = None) -> None:
    """Check every variant's gradients against the float64 reference."""
    from bench import verify as verify_mod

    report = verify_mod.verify(kernel, tuple(plugin or ()))
    views.print_verification(out, report)
    if report.failed:
        err.print("incorrect: " + ", ".join(report.failed), markup=False)
        raise typer.Exit(1)


@app.command()
def run(spec: Annotated[Path, typer.Argument(help="Sweep spec (TOML).")],
        address: Annotated[str | None, typer.Option(
            help="Ray cluster to join (what ray.init takes); default embedded Ray.")] = None,
        local: Annotated[bool, typer.Option(help="Run in this process, without Ray.")] = False,
        workers: Annotated[int | None, typer.Option(
            min=1, help="Cells at once (default: physical cores).")] = None,
        dry_run: Annotated[bool, typer.Option(help="List the cells; run nothing.")] = False,
        resume: Annotated[str | None, typer.Option(
            help="Rerun the cells of SWEEP_ID (or latest) that are not ok.")] = None,
        results: ResultsOpt = None) -> None:
    """Run a sweep: verify, time and measure every cell; print a ranking."""
    from bench import sweep

    code = sweep.run_command(str(spec), address=address, local=local, workers=workers,
                             dry_run=dry_run, resume=resume, results=results, console=out)
    raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 2 with one line for bad input."""
    try:
        app(args=argv, prog_name="gradsweep")
    except BadInput as exc:
        err.print(f"gradsweep: error: {exc}", markup=False, highlight=False)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
