"""Sweeps as Ray jobs: submit, list, status, logs, cancel (the Ray Jobs API).

``submit`` ships this project tree as the job's ``working_dir`` (no venv,
results, generated sites or caches) and the spec's plugins as ``py_modules``;
the job runs ``python -m bench run SPEC --results R`` on the cluster, where
:class:`gradsweep.executors.onray.RayExecutor` joins the job's own cluster. Ray 2.60 has
token authentication on by default: every request carries
``Authorization: Bearer <token>`` with the token Ray itself would use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradsweep import store
from gradsweep.errors import BadInput, Unavailable
from gradsweep.executors.auth import auth_token
from gradsweep.executors.onray import shipped_modules
from gradsweep.spec import load_spec

#: Environment variables naming the dashboard, in Ray's own order (``ray job``).
ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
#: The tree's own top-level parts that a job needs.
PROJECT_MARKERS = ("pyproject.toml", "bench", "impls")
#: Never shipped: environments, generated data and caches (gitignore-style patterns).
WORKING_DIR_EXCLUDES = (
    ".venv", "venv", ".git", "results", "dashboards/site", "test-artifacts", "__pycache__",
    "*.pyc", ".pytest_cache", ".ruff_cache", "*.egg-info", "build", "dist", "node_modules",
    "*.parquet", ".ipynb_checkpoints", "*.prof", "*.json.gz",
)
#: Python on the cluster's PATH runs the entrypoint (as in Ray's own examples).
PYTHON = "python"
#: Seconds between status polls while waiting for a job.
POLL_S = 1.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: Transient Jobs API failures (HTTP 5xx, e.g. 500 "No available agent to submit job,
#: please try again later" while a new cluster's agents start) are retried this long.
RETRY_WINDOW_S = 60.0
#: The first pause between attempts; it doubles after each failure, up to the cap.
RETRY_FIRST_PAUSE_S = 0.5
RETRY_MAX_PAUSE_S = 8.0
#: How Ray's SDK words a server error (``Request failed with status code 500: ...``).
SERVER_ERROR = re.compile(r"status code 5\d\d\b")
SERVICE = "the Ray Jobs API at {url}"
QUIET_LOGGERS = ("ray", "ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging",
                 "ray._private.runtime_env.working_dir")


@dataclass(frozen=True)
class JobPlan:
    """What ``submit`` sends: entrypoint, runtime env, id and metadata."""

    job_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    results: str
    metadata: dict[str, str]


def dashboard_url(address: str | None) -> str:
    """``address``, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, as an http URL."""
    found = address or next((os.environ[e] for e in ADDRESS_ENVS if os.environ.get(e)), None)
    if not found:
        raise BadInput("no Ray dashboard address: pass --address http://HOST:8265 "
                       "or set RAY_ADDRESS", key="--address")
    return found if "://" in found else f"http://{found}"


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer <token>`` when Ray's token is found, else nothing."""
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(address: str | None):
    """A ``JobSubmissionClient`` for the dashboard at ``address``, authenticated.

    Its version check is retried like every call (:func:`retrying`); nothing
    listening at ``address`` is bad input at once.
    """
    from ray.job_submission import JobSubmissionClient

    url = dashboard_url(address)
    try:
        return retrying(lambda: JobSubmissionClient(url, headers=auth_headers()),
                        service=SERVICE.format(url=url))
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BadInput(f"cannot reach the Ray Jobs API at {url}: {_first_line(exc)}",
                       key="--address") from None


def transient(exc: BaseException) -> bool:
    """True for a server-side failure worth retrying: an HTTP 5xx answer."""
    response = getattr(exc, "response", None)  # requests.HTTPError from a version check
    if response is not None and getattr(response, "status_code", 0) >= 500:
        return True
    return isinstance(exc, RuntimeError) and bool(SERVER_ERROR.search(str(exc)))


def retrying(call: Callable[[], Any], *, service: str, window_s: float | None = None,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> Any:
    """``call()``, retried with capped exponential backoff while it fails transiently.

    Any other error is raised at once. After ``window_s`` (default
    :data:`RETRY_WINDOW_S`) of transient failures
    the last one is raised as :class:`~gradsweep.errors.Unavailable` (one line,
    exit 1): "Timeouts, retries and backoff with jitter" (Brooker, AWS Builders'
    Library, 2019) without the jitter, one client having no herd to spread.
    """
    window_s = RETRY_WINDOW_S if window_s is None else window_s
    start, pause = clock(), RETRY_FIRST_PAUSE_S
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - transient() decides, the rest re-raise
            if not transient(exc):
                raise
            waited = clock() - start
            if waited + pause > window_s:
                raise Unavailable(service, waited, exc) from None
        sleep(pause)
        pause = min(2 * pause, RETRY_MAX_PAUSE_S)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def project_root() -> Path:
    """The checkout this ``gradsweep`` was imported from; BadInput when it is not one."""
    import gradsweep

    root = Path(gradsweep.__file__).resolve().parent.parent
    if not all((root / m).exists() for m in PROJECT_MARKERS):
        raise BadInput(f"{root} is not a gradsweep project tree (pyproject.toml, bench/, "
                       "impls/); submit from a checkout")
    return root


def results_target(results: str | None) -> tuple[str, bool]:
    """Where the job writes: a URI as given, a path made absolute; and whether it changed.

    A job runs in a temporary copy of the tree, so a relative path would land
    there and vanish; the absolute path must be on storage the cluster's nodes
    and the user share (or use a URI such as ``s3://bucket/results``).
    """
    given = str(results or os.environ.get(store.RESULTS_ENV) or store.DEFAULT_RESULTS)
    if "://" in given:
        return given, False
    absolute = str(Path(given).expanduser().resolve())
    return absolute, absolute != given


def _spec_in_tree(spec_path: str, root: Path) -> str:
    path = Path(spec_path).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise BadInput(f"the spec must be inside the project tree {root} (the tree is the "
                       "job's working_dir); copy it under jobs/", where=spec_path) from None


def new_job_id(now: datetime | None = None) -> str:
    """``gradsweep-<UTC time>-<random>``, readable in ``gradsweep jobs``."""
    now = now or datetime.now(UTC)
    return f"gradsweep-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def plan(spec_path: str, results: str | None, workers: int | None = None) -> JobPlan:
    """The job for ``gradsweep submit``; bad specs and paths fail here, before any upload."""
    spec = load_spec(spec_path)
    root = project_root()
    rel = _spec_in_tree(spec_path, root)
    target, _ = results_target(results)
    args = ["-m", "gradsweep", "run", rel, "--results", target]
    args += ["--workers", str(workers)] if workers else []
    env_vars = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    runtime_env: dict[str, Any] = {"working_dir": str(root),
                                   "excludes": list(WORKING_DIR_EXCLUDES), "env_vars": env_vars}
    runtime_env["py_modules"] = [p for p in shipped_modules(spec.plugins)
                                 if not _inside(p, root)]
    return JobPlan(new_job_id(), " ".join([PYTHON, *map(shlex.quote, args)]), runtime_env,
                   target, {"gradsweep_spec": rel, "gradsweep_name": spec.name,
                            "gradsweep_results": target})


def _inside(path: str, root: Path) -> bool:
    """Whether ``path`` is importable from the shipped tree's top (the job's working_dir)."""
    return Path(path).resolve().parent == root


@contextmanager
def as_packages(paths: list[str]) -> Iterator[list[str]]:
    """``py_modules`` the Jobs API can upload: directories only.

    ``ray.init`` ships a single-file module as it is, but the Jobs client
    uploads directories only, so ``name.py`` is staged as a package
    ``name/__init__.py`` (same import name, same code) for the upload.
    """
    with tempfile.TemporaryDirectory(prefix="gradsweep-ship-") as stage:
        staged = []
        for path in map(Path, paths):
            if path.is_file() and path.suffix == ".py":
                package = Path(stage) / path.stem
                package.mkdir()
                shutil.copyfile(path, package / "__init__.py")
                path = package
            staged.append(str(path))
        yield staged


def submit(job: JobPlan, address: str | None) -> str:
    """Submit ``job`` (uploading the tree and plugins); returns its id.

    A submit retried after a server error may find its own id already taken
    (the first attempt reached the cluster after all): that is success.
    """
    jobs = client(address)
    runtime_env = dict(job.runtime_env)
    for name in QUIET_LOGGERS:  # per-file packaging chatter on every submit
        logging.getLogger(name).setLevel(logging.ERROR)
    failed: list[BaseException] = []

    def once() -> str:
        try:
            return jobs.submit_job(entrypoint=job.entrypoint, submission_id=job.job_id,
                                   runtime_env=runtime_env, metadata=job.metadata)
        except RuntimeError as exc:
            if failed and "already exists" in str(exc):
                return job.job_id
            failed.append(exc)
            raise

    with as_packages(runtime_env.pop("py_modules", [])) as modules:
        if modules:
            runtime_env["py_modules"] = modules
        return _call(address, once)


def _call(address: str | None, fn: Callable, *args) -> Any:
    """A call to the Jobs API at ``address``, retried while the server fails
    (:func:`retrying`); 'does not exist' and other client errors are bad input (exit 2)."""
    if not all(args):
        raise BadInput("a job id is required")
    service = SERVICE.format(url=dashboard_url(address))
    try:
        return retrying(lambda: fn(*args), service=service)
    except RuntimeError as exc:
        raise BadInput(_first_line(exc)) from None


def list_jobs(address: str | None) -> list:
    """Every job the cluster knows, oldest first."""
    listed = _call(address, client(address).list_jobs)
    jobs = [j for j in listed if j.submission_id]  # not plain drivers
    return sorted(jobs, key=lambda j: j.start_time or 0)


def info(address: str | None, job_id: str):
    """A job's details (status, message, entrypoint, metadata, times)."""
    return _call(address, client(address).get_job_info, job_id)


def logs(address: str | None, job_id: str) -> str:
    """The job's driver log so far."""
    return _call(address, client(address).get_job_logs, job_id)


def follow(address: str | None, job_id: str, write: Callable[[str], None]) -> None:
    """Write the job's log as it grows, until the job ends."""
    jobs = client(address)
    _call(address, jobs.get_job_status, job_id)

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def cancel(address: str | None, job_id: str) -> bool:
    """Stop a job (SIGTERM to its driver: finished cells stay stored); False if it had ended."""
    return bool(_call(address, client(address).stop_job, job_id))


def wait(address: str | None, job_id: str, timeout_s: float) -> str:
    """Poll until the job ends or ``timeout_s`` passes; returns the last status."""
    jobs = client(address)
    end = time.monotonic() + timeout_s
    while True:
        status = str(_call(address, jobs.get_job_status, job_id))
        if status in TERMINAL or time.monotonic() > end:
            return status
        time.sleep(POLL_S)


