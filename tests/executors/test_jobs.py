"""Ray jobs and a two-node cluster: run --address, submit, status, logs, cancel.

The cluster tests start a head and a second node on this host (token
authentication on, as Ray 2.60 defaults), each with one CPU and its own ports,
in a private --temp-dir; teardown kills exactly those nodes' processes (never
``ray stop``, which would stop every Ray on the machine) and removes the dir.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from conftest import PLUGINS

from gradsweep import store
from gradsweep.cli.app import main
from gradsweep.errors import BadInput, Unavailable
from gradsweep.executors import auth, jobs

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CLUSTER_SPEC = "tests/plugins/cluster.toml"
SCALING_SPEC = "jobs/scaling.toml"
#: Seconds a submitted job may take (runtime env upload, Ray connect, 8 cells).
JOB_TIMEOUT_S = 120
#: Per-node ports, in the order of NODE_PORT_FLAGS, then a worker-port range.
NODE_PORT_FLAGS = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                   "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
                   "--object-manager-port")
WORKER_PORTS = 40
STOP_WAIT_S = 15
#: Tries at starting the cluster, and the lines of a failed start shown.
START_ATTEMPTS = 2
START_LOG_LINES = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_flags() -> list[str]:
    """Own ports for one node: agents, metrics, managers and a worker-port range."""
    flags = [f"{flag}={free_port()}" for flag in NODE_PORT_FLAGS]
    base = free_port()
    while base + WORKER_PORTS > 65535:
        base = free_port()
    return [*flags, f"--min-worker-port={base}", f"--max-worker-port={base + WORKER_PORTS}"]


def cluster_env() -> dict[str, str]:
    """The nodes' environment: this venv's python first on PATH (jobs run ``python``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")
    return env


@dataclass(frozen=True)
class Cluster:
    gcs: str
    dashboard: str
    temp_dir: str


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    """``ray start ARGS``; a failure raises with the command's last output lines."""
    done = subprocess.run([str(VENV_BIN / "ray"), "start", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-START_LOG_LINES:]
        raise RuntimeError(f"ray start {args[0]} exited {done.returncode}:\n" + "\n".join(tail))


def ensure_token(env: dict[str, str]) -> None:
    """The token the nodes and this client share, created as a first ``ray.init`` would.

    ``ray start --head`` with ``RAY_AUTH_MODE=token`` refuses to start without one
    (it never creates it), and a fresh machine has none until something starts Ray:
    ``ray get-auth-token --generate`` writes ``~/.ray/auth_token`` only if missing.
    """
    done = subprocess.run([str(VENV_BIN / "ray"), "get-auth-token", "--generate"], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or auth.auth_token() is None:
        raise RuntimeError(f"ray get-auth-token --generate exited {done.returncode}: "
                           f"{done.stderr.strip()[-500:]}")


def start_cluster(temp_dir: str) -> Cluster:
    """A head and one joining node, one CPU each, on this host."""
    port, dash = free_port(), free_port()
    env = cluster_env()
    ensure_token(env)
    _ray_start(["--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                "--num-cpus=1", f"--port={port}", f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}",
                "--disable-usage-stats", *node_flags()], env)
    gcs = (Path(temp_dir) / "ray_current_cluster").read_text().strip()
    _ray_start([f"--address={gcs}", "--num-cpus=1", f"--temp-dir={temp_dir}", *node_flags()], env)
    return Cluster(gcs, f"http://127.0.0.1:{dash}", temp_dir)


def cluster_processes(cluster: Cluster) -> list[psutil.Process]:
    """This cluster's processes: those naming its temp dir or GCS, and their descendants.

    Only markers that are set count (``"" in line`` holds for every process: a
    cluster whose start failed before its GCS address was known once matched
    the whole machine), and this process and its ancestors are never included.
    """
    marks = [m for m in (cluster.temp_dir, cluster.gcs) if m]
    roots = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or ())
        if any(m in line for m in marks):
            roots.append(p)
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    return [p for pid, p in found.items() if pid not in spared]


def stop_cluster(cluster: Cluster) -> None:
    """Kill this cluster's processes by pid (as ``ray stop --force`` would, but only these)."""
    procs = cluster_processes(cluster)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=STOP_WAIT_S)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)  # with ray_current_cluster in it


@pytest.fixture(scope="module")
def cluster():
    """A started two-node cluster; a start that fails (a port taken between
    choosing and binding it) is cleaned up and tried again with fresh ports."""
    for attempt in range(START_ATTEMPTS):
        temp_dir = tempfile.mkdtemp(prefix="gsr", dir="/tmp")  # short: socket paths
        try:
            info = start_cluster(temp_dir)
        except (RuntimeError, subprocess.SubprocessError, OSError):
            stop_cluster(Cluster("", "", temp_dir))
            if attempt == START_ATTEMPTS - 1:
                raise
            continue
        try:
            yield info
        finally:
            stop_cluster(info)
        return


def test_a_cluster_without_its_gcs_address_matches_only_its_own_processes(tmp_path):
    marker = str(tmp_path / "gsr-own")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        found = {p.pid for p in cluster_processes(Cluster("", "", marker))}
        assert found == {sleeper.pid}
        assert not {p.pid for p in cluster_processes(Cluster("", "", str(tmp_path / "none")))}
    finally:
        sleeper.kill()
        sleeper.wait()


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """``python -m gradsweep ...`` as a user would run it: no RAY_AUTH_MODE, plugins on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(PLUGINS), PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run([sys.executable, "-m", "gradsweep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=JOB_TIMEOUT_S, **kw)


@pytest.mark.ray
def test_run_address_ships_plugins_and_uses_both_nodes(cluster, tmp_path):
    results = tmp_path / "r"
    done = cli("run", CLUSTER_SPEC, "--address", cluster.gcs, "--results", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_id = done.stdout.splitlines()[0].strip()
    cells = store.read(store.resolve(results), "cells", [sweep_id])
    assert len(cells) == 8 and set(cells["status"]) == {"ok"}
    assert cells["node"].nunique() == 2  # cells ran on the head and on the second node
    assert len(store.read(store.resolve(results), "nodes", [sweep_id])) == 2
    assert "harness" in done.stderr  # the harness line goes with the progress, to stderr


@pytest.mark.ray
def test_submit_runs_the_sweep_as_a_job_with_auth(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", cluster.dashboard)  # the default --address
    monkeypatch.chdir(tmp_path)
    assert main(["submit", str(ROOT / CLUSTER_SPEC), "--results", "rel/results"]) == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip().splitlines()[-1]
    assert "made absolute" in captured.err
    assert jobs.wait(None, job_id, JOB_TIMEOUT_S) == "SUCCEEDED", jobs.logs(None, job_id)
    results = tmp_path / "rel" / "results"
    sweeps = store.sweeps(store.resolve(results))
    assert list(sweeps["status"]) == ["finished"]
    cells = store.read(store.resolve(results), "cells")
    assert len(cells) == 8 and cells["node"].nunique() == 2
    assert main(["status", job_id]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    assert main(["logs", job_id]) == 0
    assert sweeps["sweep_id"].iloc[0] in capsys.readouterr().out
    assert main(["jobs"]) == 0
    assert job_id in capsys.readouterr().out


def _first_batch(results: Path, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not list(results.glob("cells/*/*.parquet")):
        assert time.monotonic() < end, "the job stored no cells"
        time.sleep(0.5)


@pytest.mark.ray
def test_cancel_stops_the_job_and_keeps_its_cells(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.dashboard)
    results = tmp_path / "r"
    assert main(["submit", str(ROOT / SCALING_SPEC), "--results", str(results)]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    _first_batch(results, JOB_TIMEOUT_S)
    assert main(["cancel", job_id]) == 0
    assert jobs.wait(None, job_id, JOB_TIMEOUT_S) == "STOPPED"
    sweeps = store.sweeps(store.resolve(results))
    assert list(sweeps["status"]) == ["cancelled"]  # SIGTERM reached the driver: batch stored
    assert 0 < len(store.read(store.resolve(results), "cells")) < 200


@pytest.mark.ray
def test_unknown_jobs_are_bad_input(cluster, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.dashboard)
    assert main(["status", "no-such-job"]) == 2
    assert "no-such-job" in capsys.readouterr().err
    assert main(["cancel", "no-such-job"]) == 2


def test_plan_ships_the_tree_and_absolute_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = jobs.plan(str(ROOT / CLUSTER_SPEC), "out", workers=3)
    assert plan.results == str(tmp_path / "out")
    assert plan.entrypoint == (f"python -m gradsweep run {CLUSTER_SPEC} --results "
                               f"{tmp_path / 'out'} --workers 3")
    env = plan.runtime_env
    assert env["working_dir"] == str(ROOT)
    assert {".venv", ".git", "results", "dashboards/site", "__pycache__"} <= set(env["excludes"])
    # the gradsweep package (a folder named gradsweep) and a single-file plugin
    assert Path(env["py_modules"][0]).name == "gradsweep"
    assert (Path(env["py_modules"][0]) / "impls" / "base.py").is_file()
    assert env["py_modules"][1:] == [str(PLUGINS / "gs_extra.py")]
    assert jobs.results_target("s3://bucket/r") == ("s3://bucket/r", False)


def test_spec_outside_the_tree_is_bad_input(tmp_path, write_spec):
    path = write_spec((ROOT / CLUSTER_SPEC).read_text())
    with pytest.raises(BadInput, match="inside the project tree"):
        jobs.plan(str(path), None)


def test_address_and_token_resolution(monkeypatch, tmp_path):
    for name in (*jobs.ADDRESS_ENVS, auth.TOKEN_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BadInput, match="--address"):
        jobs.dashboard_url(None)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:8265")
    assert jobs.dashboard_url(None) == "http://127.0.0.1:8265"
    assert jobs.dashboard_url("https://h:1") == "https://h:1"
    token = tmp_path / "token"
    token.write_text("abc\n")
    monkeypatch.setenv(auth.TOKEN_PATH_ENV, str(token))
    assert jobs.auth_headers() == {"Authorization": "Bearer abc"}
    monkeypatch.setenv(auth.TOKEN_ENV, "xyz")
    assert jobs.auth_headers() == {"Authorization": "Bearer xyz"}


NO_AGENT = "No available agent to submit job, please try again later."


class FlakyJobsAPI(BaseHTTPRequestHandler):
    """A Ray Jobs API on loopback whose first ``failures`` job calls answer 500."""

    failures = 0
    calls: list[str] = []
    submitted_anyway = False  # the failed submits reached the cluster after all

    def _answer(self, status: int, body: dict | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict)
                         else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _job_call(self, ok: dict) -> None:
        type(self).calls.append(f"{self.command} {self.path}")
        if len(type(self).calls) <= type(self).failures:
            self._answer(500, NO_AGENT)
        else:
            self._answer(200, ok)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/api/version":
            self._answer(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})
        elif self.path.endswith("/logs"):
            self._job_call({"logs": "cells 3/3\n"})
        else:
            self._answer(404, "not found")

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).submitted_anyway and len(type(self).calls) >= type(self).failures:
            type(self).calls.append(f"{self.command} {self.path}")
            return self._answer(400, f"Job with submission_id {body['submission_id']} "
                                     "already exists. Please use a different submission_id.")
        self._job_call({"submission_id": body["submission_id"], "job_id": None})

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def flaky_api(monkeypatch):
    """``(url, handler)``: a flaky Jobs API on 127.0.0.1, with short retry pauses."""
    handler = type("Flaky", (FlakyJobsAPI,), {"failures": 0, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(jobs, "RETRY_FIRST_PAUSE_S", 0.01)
    monkeypatch.setattr(jobs, "RETRY_MAX_PAUSE_S", 0.05)
    for name in (*jobs.ADDRESS_ENVS, auth.TOKEN_ENV):
        monkeypatch.delenv(name, raising=False)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_submit_and_logs_retry_a_cluster_that_is_not_ready(flaky_api):
    url, handler = flaky_api
    handler.failures = 3
    plan = jobs.JobPlan("gradsweep-x", "python -m gradsweep run s.toml", {}, "/r", {})
    assert jobs.submit(plan, url) == "gradsweep-x"
    assert handler.calls == ["POST /api/jobs/"] * 4
    handler.failures, handler.calls = 2, []
    assert jobs.logs(url, "gradsweep-x") == "cells 3/3\n"
    assert len(handler.calls) == 3
    handler.failures, handler.calls, handler.submitted_anyway = 1, [], True
    assert jobs.submit(plan, url) == "gradsweep-x"  # its own id taken: the retry succeeded
    assert len(handler.calls) == 2


def test_a_cluster_that_stays_unavailable_is_one_line_and_exit_1(flaky_api, capsys,
                                                                  monkeypatch):
    url, handler = flaky_api
    handler.failures = 10**6
    monkeypatch.setattr(jobs, "RETRY_WINDOW_S", 0.3)
    start = time.monotonic()
    assert main(["logs", "gradsweep-x", "--address", url]) == 1
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"the Ray Jobs API at {url} kept failing" in err and NO_AGENT in err
    assert len(handler.calls) >= 3  # retried, with pauses


def test_retrying_backs_off_and_raises_other_errors_at_once():
    pauses: list[float] = []
    now = [0.0]

    def sleep(s: float) -> None:
        pauses.append(s)
        now[0] += s

    def always_500():
        raise RuntimeError("Request failed with status code 503: busy.")

    with pytest.raises(Unavailable, match=r"svc kept failing for \d+ s: .*503"):
        jobs.retrying(always_500, service="svc", window_s=30, sleep=sleep, clock=lambda: now[0])
    assert pauses[:5] == [0.5, 1.0, 2.0, 4.0, 8.0] and max(pauses) == jobs.RETRY_MAX_PAUSE_S
    assert sum(pauses) <= 30
    for error in (RuntimeError("Request failed with status code 404: no such job."),
                  ValueError("bad")):
        def fails(error=error):
            raise error
        pauses.clear()
        with pytest.raises(type(error)):
            jobs.retrying(fails, service="svc", sleep=sleep, clock=lambda: now[0])
        assert pauses == []
