"""The command line: parse arguments, check them, call one plain function, print.

Bad input exits 2 with one line on stderr (no traceback), whether typer finds
it (an unknown command or option, a value of the wrong type: see
:mod:`.usage`) or a check does (:mod:`gradsweep.checks`, before any dataset is
read or Ray starts); a command that finds what it exists to find (an incorrect
variant, a failed cell, a regression) exits 1. Results go to stdout, progress
and warnings to stderr.

Only typer is imported up front: rich, pandas, pyarrow, numpy and Ray load in
the commands that use them, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from gradsweep import __version__, defaults
from gradsweep.cli import usage
from gradsweep.errors import BadInput, StoreError, Unavailable, printable
from gradsweep.executors import auth

if TYPE_CHECKING:
    from rich.console import Console

#: Width of tables when stdout is not a terminal (CI logs, pipes) and $COLUMNS is unset.
PIPE_WIDTH = 160
#: The logger of Ray's "Token authentication is enabled for this Ray cluster" notice,
#: printed on every embedded start (Ray 2.60 turns token authentication on by default).
RAY_TOKEN_LOGGER = auth.TOKEN_NOTICE_LOGGER
#: Colour codes (SGR escape sequences) in job logs: dropped, not escaped.
SGR = re.compile(r"\x1b\[[0-9;]*m")
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(cls=usage.Group, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings=CONTEXT)
results_app = typer.Typer(cls=usage.Group, no_args_is_help=True, rich_markup_mode=None,
                          help="Inspect and manage the results dataset.")
app.add_typer(results_app, name="results")
command = functools.partial(app.command, cls=usage.Command)
results_command = functools.partial(results_app.command, cls=usage.Command)


def console_width(is_terminal: bool, environ: Mapping[str, str] = os.environ) -> int | None:
    """Table width: None on a terminal (rich measures it, or takes $COLUMNS), else
    $COLUMNS when set, else :data:`PIPE_WIDTH`."""
    if is_terminal:
        return None
    columns = environ.get("COLUMNS", "").strip()
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


def out() -> Console:
    """The console of results: stdout."""
    from rich.console import Console

    return Console(width=console_width(sys.stdout.isatty()))


def err() -> Console:
    """The console of progress and warnings: stderr."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, width=console_width(sys.stderr.isatty()))


def say(text: str) -> None:
    """One plain line of results on stdout, control characters escaped."""
    print(printable(text), flush=True)


def warn(text: str) -> None:
    """One plain line on stderr, control characters escaped."""
    print(printable(text), file=sys.stderr, flush=True)


def printable_log(text: str) -> str:
    """A job's log for the terminal: colours dropped, every other control character but
    line breaks escaped (:func:`~gradsweep.errors.printable`, line by line)."""
    lines = SGR.sub("", text).split("\n")
    return "\n".join(printable(line.removesuffix("\r")) for line in lines)


quiet_ray_token_notice = auth.quiet_token_notice


def _version(value: bool) -> None:
    if value:
        say(f"gradsweep {__version__}")
        raise typer.Exit(0)


@app.callback(epilog="Run 'gradsweep COMMAND --help' for a command's options and examples.")
def root(version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_version,
        is_eager=True)] = False) -> None:
    """Benchmark and profile numpy backward passes across shapes and dtypes."""


ResultsOpt = Annotated[str | None, typer.Option(
    "--results", metavar="PATH|URI",
    help="Dataset path or URI (default $GRADSWEEP_RESULTS, then results/).")]
PluginOpt = Annotated[list[str] | None, typer.Option(
    "--plugin", metavar="MODULE", help="Extra module with kernels or variants (repeatable).")]


def examples(*lines: str) -> str:
    """An epilog of example command lines, kept as written (click's ``\\b``)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def _results(results: str | None, key: str = "--results") -> str:
    """The dataset location a reading command uses, checked: it must exist (else exit 2
    naming the path and ``gradsweep run``, which makes one)."""
    from gradsweep import checks

    return checks.check_results_dir(results, must_exist=True, key=key)


def _dataset(results: str | None):
    from gradsweep import store

    return store.resolve(_results(results))


def _option(value: float | None, key: str) -> None:
    """A numeric option inside its range (``checks.OPTION_RANGES``); None passes."""
    if value is not None:
        from gradsweep import checks

        checks.check_option(value, key)


@command("list", epilog=examples("gradsweep list", "gradsweep list --plugin my_kernels"))
def list_cmd(plugin: PluginOpt = None) -> None:
    """List kernels, their dims, axes and variants."""
    from gradsweep.cli import views
    from gradsweep.impls.registry import PluginError, load

    try:
        registry = load(plugin or ())
    except PluginError as exc:
        raise BadInput(str(exc), key="--plugin") from None
    views.print_kernels(out(), registry)


@command(epilog=examples("gradsweep verify", "gradsweep verify lstm"))
def verify(kernel: Annotated[str | None, typer.Argument(
               metavar="KERNEL", help="Only this kernel.")] = None,
           plugin: PluginOpt = None) -> None:
    """Check every variant's gradients against the float64 reference."""
    from gradsweep import verify as verify_mod
    from gradsweep.cli import views

    report = verify_mod.verify(kernel, tuple(plugin or ()))
    views.print_verification(out(), report)
    if report.failed:
        warn("incorrect: " + ", ".join(report.failed))
        raise typer.Exit(1)


SpecArg = Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec (TOML).")]


@command(short_help="Run a sweep: verify, time and measure every cell; rank.", epilog=examples(
    "gradsweep run jobs/quick.toml --dry-run       # the cells and an estimate",
    "gradsweep run jobs/quick.toml --local          # in this process, no Ray",
    "gradsweep run jobs/bptt.toml --workers 2 --dashboard site/",
    "gradsweep run jobs/bptt.toml --resume latest   # rerun the cells not ok",
    "gradsweep run jobs/bptt.toml --address 127.0.0.1:6379"))
def run(spec: SpecArg,
        address: Annotated[str | None, typer.Option(
            metavar="HOST:PORT",
            help="Ray cluster to join (what ray.init takes); default embedded Ray.")] = None,
        local: Annotated[bool, typer.Option(
            "--local", help="Run in this process, without Ray.")] = False,
        workers: Annotated[int | None, typer.Option(
            metavar="N", help="Cells at once (default: physical cores).")] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="List the cells; run nothing.")] = False,
        resume: Annotated[str | None, typer.Option(
            metavar="SWEEP", help="Rerun the cells of SWEEP (or latest) that are not ok.")
        ] = None,
        results: ResultsOpt = None,
        dashboard: Annotated[str | None, typer.Option(
            metavar="DIR", help="Also write the sweep's dashboard to this directory.")] = None
        ) -> None:
    """Run a sweep: verify, time and measure every cell; print a ranking."""
    from gradsweep.cli import run as sweep

    _option(workers, "--workers")
    quiet_ray_token_notice()
    code = sweep.run_command(str(spec), address=address, local=local, workers=workers,
                             dry_run=dry_run, resume=resume, results=results,
                             dashboard=dashboard, console=out(), errors=err())
    raise typer.Exit(code)


AddressOpt = Annotated[str | None, typer.Option(
    "--address", metavar="URL", help="Ray dashboard URL, http://HOST:8265 (default $RAY_ADDRESS).")]
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="Job id (from submit or jobs).")]


def _job_address(address: str | None) -> str | None:
    """``--address`` (else $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS) checked: a dashboard
    URL that answers, before any upload or request."""
    from gradsweep import checks
    from gradsweep.executors.jobs import ADDRESS_ENVS

    env = next((e for e in ADDRESS_ENVS if os.environ.get(e)), None)
    found = address or (os.environ[env] if env else None)
    if found:
        checks.check_address(found, accept=checks.JOBS_SCHEMES, keywords=(),
                             key="--address" if address else env)
    return address


@command(epilog=examples(
    "gradsweep submit jobs/bptt.toml --address http://head:8265 --results s3://bucket/results",
    "gradsweep status JOB; gradsweep logs JOB --follow"))
def submit(spec: Annotated[Path, typer.Argument(
               metavar="SPEC", help="Sweep spec (TOML) inside this tree.")],
           address: AddressOpt = None, results: ResultsOpt = None,
           workers: Annotated[int | None, typer.Option(
               metavar="N", help="Cells at once (default: the cluster's CPUs).")] = None
           ) -> None:
    """Run a sweep as a Ray job: ship this tree, print the job id."""
    _option(workers, "--workers")
    address = _job_address(address)
    from gradsweep.executors import jobs

    plan = jobs.plan(str(spec), results, workers)
    if jobs.results_target(results)[1]:
        warn(f"results: {plan.results} (made absolute: the job runs in its own copy of the "
             "tree; the path must be storage the cluster shares with you)")
    say(jobs.submit(plan, address))


@command("jobs", epilog=examples("gradsweep jobs --address http://head:8265"))
def jobs_cmd(address: AddressOpt = None) -> None:
    """List the cluster's Ray jobs."""
    address = _job_address(address)
    from gradsweep.cli import views
    from gradsweep.executors import jobs

    out().print(views.jobs_table(jobs.list_jobs(address)))


@command(epilog=examples("gradsweep status gradsweep-20261130-120000-ab12"))
def status(job: JobArg, address: AddressOpt = None) -> None:
    """A job's status (exit 1 when it FAILED)."""
    address = _job_address(address)
    from gradsweep.cli import views
    from gradsweep.executors import jobs

    details = jobs.info(address, job)
    for line in views.status_lines(details):
        say(line)
    raise typer.Exit(1 if str(details.status) == "FAILED" else 0)


@command(epilog=examples("gradsweep logs JOB", "gradsweep logs JOB --follow"))
def logs(job: JobArg, address: AddressOpt = None,
         follow: Annotated[bool, typer.Option(
             "--follow", "-f", help="Keep printing until the job ends.")] = False) -> None:
    """A job's driver log."""
    address = _job_address(address)
    from gradsweep.executors import jobs

    if follow:
        jobs.follow(address, job, lambda text: print(printable_log(text), end="", flush=True))
    else:
        print(printable_log(jobs.logs(address, job)), end="")


@command(short_help="Stop a job; its finished cells stay stored.",
         epilog=examples("gradsweep cancel JOB", "gradsweep run SPEC --resume SWEEP"))
def cancel(job: JobArg, address: AddressOpt = None) -> None:
    """Stop a job; its finished cells stay stored (resume with run --resume)."""
    address = _job_address(address)
    from gradsweep.executors import jobs

    stopped = jobs.cancel(address, job)
    say(f"{job}: {'stopping' if stopped else 'already ended'}")


SweepArg = Annotated[str, typer.Argument(metavar="SWEEP", help="Sweep id, or latest.")]
KernelOpt = Annotated[str | None, typer.Option(metavar="KERNEL", help="Only this kernel.")]
DtypeOpt = Annotated[str | None, typer.Option(metavar="DTYPE", help="Only this dtype.")]
ShapeOpt = Annotated[str | None, typer.Option(
    metavar="SHAPE", help='Only this shape, e.g. "N=16,T=32,D=32,H=64".')]


@command(short_help="Rank a sweep's variants: speed-ups, memory, Pareto front.", epilog=examples(
    "gradsweep report                        # the latest sweep",
    "gradsweep report SWEEP --kernel lstm --dtype float32",
    'gradsweep report --shape "N=16,T=32,D=32,H=64" --format md > report.md',
    "gradsweep report --format csv | column -s, -t"))
def report(sweep: SweepArg = "latest",
           format: Annotated[Literal["rich", "md", "csv"], typer.Option(
               "--format", help="rich (tables), md (Markdown) or csv.")] = "rich",
           kernel: KernelOpt = None, shape: ShapeOpt = None, dtype: DtypeOpt = None,
           results: ResultsOpt = None) -> None:
    """Rank a sweep's variants per kernel, shape and dtype: speed-ups, memory, Pareto
    front, roofline fractions, an overall ranking; failed cells apart. Exits 0 even
    when cells failed (they are listed, never ranked); 2 for bad input."""
    from gradsweep import report as report_mod

    dataset = _dataset(results)
    filters = {k: v for k, v in (("kernel", kernel), ("shape", shape), ("dtype", dtype))
               if v is not None}
    rep = report_mod.load_report(dataset, sweep, **filters)
    if format == "md":
        sys.stdout.write(report_mod.to_markdown(rep))
    elif format == "csv":
        sys.stdout.write(report_mod.to_csv(rep))
    else:
        from gradsweep.cli import views

        views.print_report(out(), rep)


@command(short_help="Write the static HTML dashboard; print its path.", epilog=examples(
    "gradsweep dashboard                     # the latest sweep, to dashboards/site",
    "gradsweep dashboard SWEEP1 SWEEP2 -o site/   # with each cell's history",
    "xdg-open $(gradsweep dashboard)"))
def dashboard(sweeps: Annotated[list[str] | None, typer.Argument(
                  metavar="SWEEPS", help="Sweep ids (or latest); several show each cell's "
                                         "history. Default: latest.")] = None,
              output: Annotated[Path, typer.Option(
                  "-o", "--output", metavar="DIR", help="Directory of the site.")
              ] = Path("dashboards/site"),
              results: ResultsOpt = None) -> None:
    """Write the static HTML dashboard (opens from disk, no network); print its path."""
    from gradsweep import checks

    location = _results(results)
    checks.check_output_dir(output, key="--output")
    from gradsweep import store
    from gradsweep.dashboards import render

    dataset = store.resolve(location)
    ids = list(dict.fromkeys(store.resolve_sweep(dataset, s) for s in (sweeps or ["latest"])))
    say(str(render.write_site(dataset, ids, output)))


ListFormatOpt = Annotated[Literal["table", "csv", "json"], typer.Option(
    "--format", help="table, csv or json.")]


def _warn_corrupt(corrupt) -> None:
    for bad in corrupt:
        warn(f"gradsweep: warning: {bad}")


def _emit(frame, fmt: str, output: str | None = None) -> None:
    """Print a frame as CSV or JSON (or write Parquet to ``output``)."""
    from gradsweep import query

    text = query.export(frame, fmt, output)
    if text:
        sys.stdout.write(text)


@results_command("list", short_help="The sweeps: name, start, status, cell counts, git.",
                 epilog=examples("gradsweep results list",
                                 "gradsweep results list --format json | jq ."))
def results_list(fmt: ListFormatOpt = "table", results: ResultsOpt = None) -> None:
    """Sweeps: name, start, status (incomplete when never finished), cell counts, git."""
    from gradsweep import query

    listing = query.list_sweeps(_dataset(results))
    _warn_corrupt(listing.corrupt)
    if fmt == "table":
        from gradsweep.cli import views

        views.print_sweeps(out(), listing.frame)
    else:
        _emit(listing.frame.drop(columns=["last_activity"]), fmt)


def _check_output(fmt: str, output: str | None) -> None:
    """``-o FILE`` goes with ``--format parquet`` and nothing else; a new, writable file."""
    from gradsweep import checks

    if fmt == "parquet" and not output:
        raise BadInput("--format parquet needs -o FILE", key="--output")
    if output and fmt != "parquet":
        raise BadInput(f"-o {output} is for --format parquet (got --format {fmt})",
                       key="--output")
    if output:
        checks.check_output_file(output, key="--output")


@results_command("show", short_help="One sweep's cells: medians, CIs, memory, status.",
                 epilog=examples(
    "gradsweep results show                  # the latest sweep",
    'gradsweep results show SWEEP --kernel lstm --where "H >= 128 and N == 16"',
    "gradsweep results show --variant wgrad=batched --format csv",
    "gradsweep results show SWEEP --format parquet -o cells.parquet"))
def results_show(
        sweep: SweepArg = "latest", kernel: KernelOpt = None,
        variant: Annotated[str | None, typer.Option(
            metavar="VARIANT", help="Exact variant, else a substring of it.")] = None,
        dtype: DtypeOpt = None, shape: ShapeOpt = None,
        where: Annotated[str | None, typer.Option(
            metavar="CONDITIONS", help='Dim conditions, e.g. "H >= 128 and N == 16".')] = None,
        fmt: Annotated[Literal["table", "csv", "json", "parquet"], typer.Option(
            "--format", help="table, csv, json, or parquet (with -o FILE).")] = "table",
        output: Annotated[str | None, typer.Option(
            "-o", "--output", metavar="FILE", help="File for --format parquet.")] = None,
        results: ResultsOpt = None) -> None:
    """One sweep's cells: cell id, median, CI, peak memory, GFLOP/s, status, warnings."""
    from gradsweep import query, store

    location = _results(results)
    _check_output(fmt, output)
    conditions = query.parse_where(where) if where else ()
    dataset = store.resolve(location)
    sweep_id = store.resolve_sweep(dataset, sweep)
    filt = query.CellFilter(kernel, variant, dtype, shape, conditions)
    listing = query.select_cells(dataset, sweep_id, filt)
    if fmt == "table":
        from gradsweep.cli import views

        views.print_cells(out(), listing.frame, title=f"{sweep_id}: {len(listing.frame)} cells")
    else:
        _emit(listing.frame, fmt, output)
    if listing.corrupt:
        raise BadInput(f"{listing.corrupt[0]}; its rows are missing above")


@results_command("sql", short_help="DuckDB SQL over the tables.",
                 epilog=examples(
    'gradsweep results sql "select variant, median(median_ns) from cells group by 1"',
    "gradsweep results sql \"select * from sweeps where status = 'finished'\" --format csv"))
def results_sql(sql: Annotated[str, typer.Argument(
                    metavar="QUERY",
                    help="DuckDB SQL over the views sweeps, cells, nodes, profiles.")],
                fmt: ListFormatOpt = "table", results: ResultsOpt = None) -> None:
    """Run SQL over the tables (each a view by its name, sweep_id a column)."""
    from gradsweep import query

    listing = query.run_sql(_dataset(results), sql)
    _warn_corrupt(listing.corrupt)
    if fmt == "table":
        from gradsweep.cli import views

        views.print_frame(out(), listing.frame)
    else:
        _emit(listing.frame, fmt)


@results_command("compact", epilog=examples("gradsweep results compact",
                                            "gradsweep results compact latest"))
def results_compact(sweep: Annotated[str | None, typer.Argument(
                        metavar="SWEEP", help="Only this sweep (or latest); default every "
                                              "sweep.")] = None,
                    results: ResultsOpt = None) -> None:
    """Merge each table's small files into one file per sweep."""
    from gradsweep import query, store

    dataset = _dataset(results)
    sweep_id = query.resolve_any(dataset, sweep) if sweep else None
    summary = query.compaction_summary(store.compact(dataset, sweep_id))
    for line in summary.lines:
        say(line)
    _warn_corrupt(summary.set_aside)


@results_command("delete", short_help="Remove a sweep from every table.",
                 epilog=examples("gradsweep results delete SWEEP",
                                 "gradsweep results delete SWEEP --yes   # no question"))
def results_delete(sweep: Annotated[str, typer.Argument(
                       metavar="SWEEP", help="Sweep id, or latest (always named: nothing "
                                             "is deleted by default).")],
                   yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
                   results: ResultsOpt = None) -> None:
    """Remove a sweep from every table (asks first; without a terminal, pass --yes)."""
    from gradsweep import query, store

    dataset = _dataset(results)
    sweep_id = query.resolve_any(dataset, sweep)
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput(f"no terminal to confirm deleting sweep {sweep_id}: pass --yes",
                           key="--yes")
        typer.confirm(f"delete sweep {printable(sweep_id)} from {printable(dataset.uri)}?",
                      abort=True)
    removed = store.delete(dataset, sweep_id)
    say(f"deleted sweep {sweep_id}: {removed} files")


@results_command("history", short_help="One cell's median in every sweep, with its steps.",
                 epilog=examples("gradsweep results history 3f2a9c1e",
                                 "gradsweep results history 3f2a   # a unique prefix"))
def results_history(cell_id: Annotated[str, typer.Argument(
                        metavar="CELL", help="A cell id (16 hex digits, as results show "
                                             "prints 8), or a unique prefix of one.")],
                    results: ResultsOpt = None) -> None:
    """One cell's median in every sweep, oldest first, with the detected steps."""
    from gradsweep import history, query
    from gradsweep.cli import views

    dataset = _dataset(results)
    frame = history.cell_history(dataset, query.resolve_cell_id(dataset, cell_id))
    views.print_history(out(), frame, history.history_steps(frame))


@command(short_help="Scalene line profile of one cell: hot lines, CPU, memory.", epilog=examples(
    "gradsweep profile lstm/buffers=list,wgrad=step,clip=none --shape N=32,T=64",
    "gradsweep profile rnn/buffers=list,wgrad=batched,clip=none --dtype float32 --cpu-only",
    "gradsweep profile VARIANT --store       # keep the lines in the profiles table"))
def profile(variant: Annotated[str, typer.Argument(
                metavar="VARIANT",
                help="Canonical variant, e.g. lstm/buffers=list,wgrad=step,clip=none.")],
            shape: Annotated[str, typer.Option(
                metavar="SHAPE", help="Dims as N=32,T=64,D=64,H=128; missing dims take "
                                      "defaults.")] = "",
            dtype: Annotated[str, typer.Option(
                metavar="DTYPE", help="float64 or float32.")] = "float64",
            threads: Annotated[int, typer.Option(metavar="N", help="BLAS threads.")] = 1,
            seconds: Annotated[float, typer.Option(
                metavar="S", help="Seconds of profiled backward calls.")
            ] = defaults.PROFILE_SECONDS,
            top: Annotated[int, typer.Option(metavar="N", help="Lines shown.")
                           ] = defaults.PROFILE_TOP,
            memory: Annotated[bool, typer.Option(
                "--memory/--cpu-only", help="Also profile memory (slower).")] = True,
            store: Annotated[bool, typer.Option(
                "--store", help="Write the lines to the profiles table under a new sweep.")
            ] = False,
            results: ResultsOpt = None, plugin: PluginOpt = None) -> None:
    """Scalene line profile of one cell: the variant's hot lines, CPU and memory."""
    for value, key in ((seconds, "--seconds"), (threads, "--threads"), (top, "--top")):
        _option(value, key)
    from gradsweep.cli.profile import profile_command

    code = profile_command(
        variant, shape=shape, dtype=dtype, threads=threads, seconds=seconds, top=top,
        memory=memory, store_it=store, results=results, plugins=tuple(plugin or ()),
        console=out())
    raise typer.Exit(code)


AlphaOpt = Annotated[float, typer.Option(metavar="P", help="Significance level of a regression.")]
ThresholdOpt = Annotated[float, typer.Option(
    metavar="FRACTION",
    help="Minimum effect: flag only cells slower (or faster) by more than this fraction.")]
MarkdownOpt = Annotated[Path | None, typer.Option(
    metavar="FILE",
    help="Write a Markdown report here (also appended to $GITHUB_STEP_SUMMARY when set).")]
JunitOpt = Annotated[Path | None, typer.Option(
    metavar="FILE", help="Write JUnit XML here: a testcase per cell, a failure per regression.")]


@command(short_help="Regression alerts: a candidate sweep against a base sweep.", epilog=examples(
    "gradsweep compare BASE                  # against the latest sweep",
    "gradsweep compare BASE CANDIDATE --candidate-results ../other/results",
    "gradsweep compare BASE latest --threshold 0.1 --markdown cmp.md --junit cmp.xml"))
def compare(base: Annotated[str, typer.Argument(metavar="BASE",
                                                help="Base sweep id, or latest.")],
            candidate: Annotated[str, typer.Argument(
                metavar="CANDIDATE", help="Candidate sweep id, or latest.")] = "latest",
            candidate_results: Annotated[str | None, typer.Option(
                metavar="PATH|URI",
                help="Dataset of the candidate sweep (default: the same as --results).")
            ] = None,
            results: ResultsOpt = None, alpha: AlphaOpt = defaults.ALPHA,
            threshold: ThresholdOpt = defaults.MIN_EFFECT, markdown: MarkdownOpt = None,
            junit: JunitOpt = None,
            unpaired: Annotated[bool, typer.Option(
                "--unpaired", help="Gate on sweeps not measured side by side (no shared "
                                   "ci_run); otherwise their verdicts are advisory, exit 0.")
            ] = False) -> None:
    """Regression alerts: compare a candidate sweep with a base sweep, cell by cell."""
    _option(alpha, "--alpha")
    _option(threshold, "--threshold")
    location = _results(results)
    other = _results(candidate_results, "--candidate-results") if candidate_results else None
    from gradsweep.cli.gate import compare_command

    code = compare_command(
        base, candidate, results=location, candidate_results=other, alpha=alpha,
        threshold=threshold, markdown=markdown, junit=junit, unpaired=unpaired,
        console=out())
    raise typer.Exit(code)


@command(short_help="Paired A/B of a git revision against the working tree.",
         epilog=examples("gradsweep ci --base origin/main",
                         "gradsweep ci --base HEAD~1 --clock wall --junit ci.xml"))
def ci(base: Annotated[str, typer.Option(
           "--base", metavar="REV",
           help="Git revision to compare the working tree with, e.g. origin/main.")],
       spec: Annotated[Path, typer.Option(metavar="SPEC", help="Sweep spec of the gate.")
                       ] = Path(defaults.CI_SPEC),
       results: ResultsOpt = None, alpha: AlphaOpt = defaults.ALPHA,
       threshold: ThresholdOpt = defaults.CI_THRESHOLD, markdown: MarkdownOpt = None,
       junit: JunitOpt = None,
       clock: Annotated[str, typer.Option(
           metavar="cpu|wall|instructions",
           help="What samples measure: cpu (CPU time, robust on a shared machine), wall, "
                "or instructions (CPU time plus cachegrind counts of both sides, which then "
                "gate; needs valgrind).")] = "cpu",
       budget_s: Annotated[float, typer.Option(
           "--budget-s", metavar="S",
           help="Seconds of measurement after which no more process pairs start; "
                "undecided cells end inconclusive.")] = defaults.CI_BUDGET_S) -> None:
    """Paired A/B of a git revision against the working tree; exit 1 on a regression."""
    _option(alpha, "--alpha")
    _option(threshold, "--threshold")
    from gradsweep.cli.gate import ci_command

    code = ci_command(base, spec=str(spec), results=results, alpha=alpha,
                      threshold=threshold, markdown=markdown, junit=junit, clock=clock,
                      budget_s=budget_s, console=out())
    raise typer.Exit(code)


def _option_ranges() -> dict:
    from gradsweep import checks

    return dict(checks.OPTION_RANGES)


#: Arrow's allocator for the command line (``ARROW_DEFAULT_MEMORY_POOL``, read when pyarrow
#: is first imported; a value already set wins). The driver's Arrow work comes in bursts
#: (a flush, the compaction, the reads that rank) and mimalloc, Arrow's default here, keeps
#: what each burst freed: at 100k cells the end of a sweep peaked 70-150 MB higher with it,
#: for no measurable speed (tests/benchmarks/scale.py).
ARROW_POOL = "system"


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: the exit code; bad input is one line on stderr and 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ARROW_POOL)
    try:
        code = typer.main.get_command(app).main(args=args, prog_name="gradsweep",
                                                standalone_mode=False)
    except usage.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help())
        return 0
    except usage.UsageError as exc:
        ranges = _option_ranges() if isinstance(exc, usage.BadParameter) else None
        print(usage.error_line(exc, args, ranges), file=sys.stderr)
        return 2
    except BadInput as exc:
        warn(f"gradsweep: error: {exc}")
        return 2
    except (StoreError, Unavailable) as exc:  # a full disk, a cluster not ready: stop at once
        warn(f"gradsweep: error: {exc}")
        return 1
    except typer.Abort:
        warn("gradsweep: aborted")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
