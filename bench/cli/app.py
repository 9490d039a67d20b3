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

from gradsweep import defaults
from gradsweep.cli import views
from gradsweep.errors import BadInput, StoreError

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
    from gradsweep.impls.registry import PluginError, load

    try:
        registry = load(plugin or ())
    except PluginError as exc:
        raise BadInput(str(exc), key="--plugin") from None
    views.print_kernels(out, registry)


@app.command()
def verify(kernel: Annotated[str | None, typer.Argument(help="Only this kernel.")] = None,
           plugin: PluginOpt = None) -> None:
    """Check every variant's gradients against the float64 reference."""
    from gradsweep import verify as verify_mod

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
        results: ResultsOpt = None,
        dashboard: Annotated[str | None, typer.Option(
            help="Also write the sweep's dashboard to this directory.")] = None) -> None:
    """Run a sweep: verify, time and measure every cell; print a ranking."""
    from gradsweep.cli import run as sweep

    code = sweep.run_command(str(spec), address=address, local=local, workers=workers,
                             dry_run=dry_run, resume=resume, results=results,
                             dashboard=dashboard, console=out)
    raise typer.Exit(code)


AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="Ray dashboard URL, http://HOST:8265 (default $RAY_ADDRESS).")]
JobArg = Annotated[str, typer.Argument(help="Job id (from submit or jobs).")]


@app.command()
def submit(spec: Annotated[Path, typer.Argument(help="Sweep spec (TOML) inside this tree.")],
           address: AddressOpt = None, results: ResultsOpt = None,
           workers: Annotated[int | None, typer.Option(
               min=1, help="Cells at once (default: the cluster's CPUs).")] = None) -> None:
    """Run a sweep as a Ray job: ship this tree, print the job id."""
    from gradsweep.executors import jobs

    plan = jobs.plan(str(spec), results, workers)
    if jobs.results_target(results)[1]:
        err.print(f"results: {plan.results} (made absolute: the job runs in its own copy of "
                  "the tree; the path must be storage the cluster shares with you)",
                  markup=False, highlight=False)
    out.print(jobs.submit(plan, address), markup=False, highlight=False)


@app.command("jobs")
def jobs_cmd(address: AddressOpt = None) -> None:
    """List the cluster's Ray jobs."""
    from gradsweep.executors import jobs

    out.print(views.jobs_table(jobs.list_jobs(address)))


@app.command()
def status(job: JobArg, address: AddressOpt = None) -> None:
    """A job's status (exit 1 when it FAILED)."""
    from gradsweep.executors import jobs

    details = jobs.info(address, job)
    for line in views.status_lines(details):
        out.print(line, markup=False, highlight=False)
    raise typer.Exit(1 if str(details.status) == "FAILED" else 0)


@app.command()
def logs(job: JobArg, address: AddressOpt = None,
         follow: Annotated[bool, typer.Option(
             "--follow", "-f", help="Keep printing until the job ends.")] = False) -> None:
    """A job's driver log."""
    from gradsweep.executors import jobs

    if follow:
        jobs.follow(address, job, lambda text: print(text, end="", flush=True))
    else:
        print(jobs.logs(address, job), end="")


@app.command()
def cancel(job: JobArg, address: AddressOpt = None) -> None:
    """Stop a job; its finished cells stay stored (resume with run --resume)."""
    from gradsweep.executors import jobs

    stopped = jobs.cancel(address, job)
    out.print(f"{job}: {'stopping' if stopped else 'already ended'}", markup=False,
              highlight=False)


@app.command()
def report(sweep: Annotated[str, typer.Argument(help="Sweep id, or latest.")] = "latest",
           format: Annotated[str, typer.Option(
               "--format", help="rich (tables), md (Markdown) or csv.")] = "rich",
           results: ResultsOpt = None) -> None:
    """Rank a sweep's variants per kernel, shape and dtype: speed-ups, memory, Pareto
    front, roofline fractions, an overall ranking; failed cells apart. Exits 0 even
    when cells failed (they are listed, never ranked); 2 for bad input."""
    from gradsweep import report as report_mod
    from gradsweep import store

    fmt = report_mod.check_format(format)
    rep = report_mod.load_report(store.resolve(results), sweep)
    if fmt == "md":
        sys.stdout.write(report_mod.to_markdown(rep))
    elif fmt == "csv":
        sys.stdout.write(report_mod.to_csv(rep))
    else:
        views.print_report(out, rep)


@app.command()
def dashboard(sweeps: Annotated[list[str] | None, typer.Argument(
                  help="Sweep ids (or latest); several show each cell's history. "
                       "Default: latest.")] = None,
              output: Annotated[Path, typer.Option(
                  "-o", "--output", help="Directory of the site.")] = Path("dashboards/site"),
              results: ResultsOpt = None) -> None:
    """Write the static HTML dashboard (opens from disk, no network); print its path."""
    from gradsweep import store
    from gradsweep.dashboards import render

    dataset = store.resolve(results)
    ids = list(dict.fromkeys(store.resolve_sweep(dataset, s) for s in (sweeps or ["latest"])))
    index = render.write_site(dataset, ids, output)
    out.print(str(index), markup=False, highlight=False, soft_wrap=True)


SweepArg = Annotated[str, typer.Argument(help="Sweep id, or latest.")]
FormatOpt = Annotated[str, typer.Option(
    "--format", help="table, csv, json (or parquet with -o FILE, for show).")]


def _warn_corrupt(corrupt) -> None:
    for bad in corrupt:
        err.print(f"gradsweep: warning: {bad}", markup=False, highlight=False)


def _emit(frame, fmt: str, output: str | None = None) -> None:
    """Print a frame as CSV or JSON (or write Parquet to ``output``)."""
    from gradsweep import query

    text = query.export(frame, fmt, output)
    if text:
        sys.stdout.write(text)


@results_app.command("list")
def results_list(fmt: FormatOpt = "table", results: ResultsOpt = None) -> None:
    """Sweeps: name, start, status (incomplete when never finished), cell counts, git."""
    from gradsweep import query, store

    listing = query.list_sweeps(store.resolve(results))
    _warn_corrupt(listing.corrupt)
    if fmt == "table":
        views.print_sweeps(out, listing.frame)
    else:
        _emit(listing.frame.drop(columns=["last_activity"]), fmt)


@results_app.command("show")
def results_show(
        sweep: SweepArg,
        kernel: Annotated[str | None, typer.Option(help="Only this kernel.")] = None,
        variant: Annotated[str | None, typer.Option(
            help="Exact variant, else a substring of it.")] = None,
        dtype: Annotated[str | None, typer.Option(help="Only this dtype.")] = None,
        shape: Annotated[str | None, typer.Option(help='Exact shape, e.g. "N=16,T=32".')] = None,
        where: Annotated[str | None, typer.Option(
            help='Dim conditions, e.g. "H >= 128 and N == 16".')] = None,
        fmt: FormatOpt = "table",
        output: Annotated[str | None, typer.Option("-o", "--output",
                                                   help="File for --format parquet.")] = None,
        results: ResultsOpt = None) -> None:
    """One sweep's cells: median, CI, peak memory, GFLOP/s, status, warnings."""
    from gradsweep import query, store

    dataset = store.resolve(results)
    sweep_id = store.resolve_sweep(dataset, sweep)
    conditions = query.parse_where(where) if where else ()
    filt = query.CellFilter(kernel, variant, dtype, shape, conditions)
    listing = query.select_cells(dataset, sweep_id, filt)
    if fmt == "table":
        views.print_cells(out, listing.frame, title=f"{sweep_id}: {len(listing.frame)} cells")
    else:
        _emit(listing.frame, fmt, output)
    if listing.corrupt:
        raise BadInput(f"{listing.corrupt[0]}; its rows are missing above")


@results_app.command("sql")
def results_sql(sql: Annotated[str, typer.Argument(
                    help="DuckDB SQL over the views sweeps, cells, nodes, profiles.")],
                fmt: FormatOpt = "table", results: ResultsOpt = None) -> None:
    """Run SQL over the tables (each a view by its name, sweep_id a column)."""
    from gradsweep import query, store

    listing = query.run_sql(store.resolve(results), sql)
    _warn_corrupt(listing.corrupt)
    if fmt == "table":
        views.print_frame(out, listing.frame)
    elif fmt in ("csv", "json"):
        _emit(listing.frame, fmt)
    else:
        raise BadInput(f"unknown format {fmt!r}; expected table, csv or json", key="--format")


@results_app.command("compact")
def results_compact(sweep: Annotated[str | None, typer.Argument(
                        help="Only this sweep (or latest); default every sweep.")] = None,
                    results: ResultsOpt = None) -> None:
    """Merge each table's small files into one file per sweep."""
    from gradsweep import query, store

    dataset = store.resolve(results)
    sweep_id = query.resolve_any(dataset, sweep) if sweep else None
    summary = query.compaction_summary(store.compact(dataset, sweep_id))
    for line in summary.lines:
        out.print(line, markup=False, highlight=False)
    _warn_corrupt(summary.set_aside)


@results_app.command("delete")
def results_delete(sweep: SweepArg,
                   yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
                   results: ResultsOpt = None) -> None:
    """Remove a sweep from every table."""
    from gradsweep import query, store

    dataset = store.resolve(results)
    sweep_id = query.resolve_any(dataset, sweep)
    if not yes:
        typer.confirm(f"delete sweep {sweep_id} from {dataset.uri}?", abort=True)
    removed = store.delete(dataset, sweep_id)
    out.print(f"deleted sweep {sweep_id}: {removed} files", markup=False, highlight=False)


@app.command()
def profile(variant: Annotated[str, typer.Argument(
                help="Canonical variant, e.g. lstm/buffers=list,wgrad=step,clip=none.")],
            shape: Annotated[str, typer.Option(
                help="Dims as N=32,T=64,D=64,H=128; missing dims take defaults.")] = "",
            dtype: Annotated[str, typer.Option(help="float64 or float32.")] = "float64",
            threads: Annotated[int, typer.Option(help="BLAS threads.")] = 1,
            seconds: Annotated[float, typer.Option(
                help="Seconds of profiled backward calls.")] = defaults.PROFILE_SECONDS,
            top: Annotated[int, typer.Option(min=1, help="Lines shown.")] = defaults.PROFILE_TOP,
            memory: Annotated[bool, typer.Option(
                "--memory/--cpu-only", help="Also profile memory (slower).")] = True,
            store: Annotated[bool, typer.Option(
                "--store", help="Write the lines to the profiles table under a new sweep.")
            ] = False,
            results: ResultsOpt = None, plugin: PluginOpt = None) -> None:
    """Scalene line profile of one cell: the variant's hot lines, CPU and memory."""
    from gradsweep.cli.profile import profile_command

    code = profile_command(
        variant, shape=shape, dtype=dtype, threads=threads, seconds=seconds, top=top,
        memory=memory, store_it=store, results=results, plugins=tuple(plugin or ()),
        console=out)
    raise typer.Exit(code)


AlphaOpt = Annotated[float, typer.Option(help="Significance level of a regression.")]
ThresholdOpt = Annotated[float, typer.Option(
    help="Minimum effect: flag only cells slower (or faster) by more than this fraction.")]
MarkdownOpt = Annotated[Path | None, typer.Option(
    help="Write a Markdown report here (also appended to $GITHUB_STEP_SUMMARY when set).")]
JunitOpt = Annotated[Path | None, typer.Option(
    help="Write JUnit XML here: a testcase per cell, a failure per regression.")]


@app.command()
def compare(base: Annotated[str, typer.Argument(help="Base sweep id, or latest.")],
            candidate: Annotated[str, typer.Argument(help="Candidate sweep id, or latest.")],
            candidate_results: Annotated[str | None, typer.Option(
                help="Dataset of the candidate sweep (default: the same as --results).")
            ] = None,
            results: ResultsOpt = None, alpha: AlphaOpt = defaults.ALPHA,
            threshold: ThresholdOpt = defaults.MIN_EFFECT, markdown: MarkdownOpt = None,
            junit: JunitOpt = None) -> None:
    """Regression alerts: compare a candidate sweep with a base sweep, cell by cell."""
    from gradsweep.cli.gate import compare_command

    code = compare_command(
        base, candidate, results=results, candidate_results=candidate_results, alpha=alpha,
        threshold=threshold, markdown=markdown, junit=junit, console=out)
    raise typer.Exit(code)


@app.command()
def ci(base: Annotated[str, typer.Option(
           "--base", help="Git revision to compare the working tree with, e.g. origin/main.")],
       spec: Annotated[Path, typer.Option(help="Sweep spec of the gate.")] = Path(
           defaults.CI_SPEC),
       results: ResultsOpt = None, alpha: AlphaOpt = defaults.ALPHA,
       threshold: ThresholdOpt = defaults.MIN_EFFECT, markdown: MarkdownOpt = None,
       junit: JunitOpt = None,
       clock: Annotated[str, typer.Option(
           help="What samples measure: cpu (process CPU time, robust on a shared machine) "
                "or wall (perf_counter, as sweeps).")] = "cpu") -> None:
    """Paired A/B of a git revision against the working tree; exit 1 on a regression."""
    from gradsweep.cli.gate import ci_command

    code = ci_command(base, spec=str(spec), results=results, alpha=alpha,
                         threshold=threshold, markdown=markdown, junit=junit, clock=clock,
                         console=out)
    raise typer.Exit(code)


@results_app.command("history")
def results_history(cell_id: Annotated[str, typer.Argument(help="A cell_id (16 hex digits).")],
                    results: ResultsOpt = None) -> None:
    """One cell's median in every sweep, oldest first, with the detected steps."""
    from gradsweep import history, store

    frame = history.cell_history(store.resolve(results), cell_id)
    views.print_history(out, frame, history.history_steps(frame))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 2 with one line for bad input."""
    try:
        app(args=argv, prog_name="gradsweep")
    except BadInput as exc:
        err.print(f"gradsweep: error: {exc}", markup=False, highlight=False)
        return 2
    except StoreError as exc:  # the dataset cannot be written (a full disk): stop at once
        err.print(f"gradsweep: error: {exc}", markup=False, highlight=False)
        return 1
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
