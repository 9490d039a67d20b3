"""Ray jobs and a two-node cluster: run --address, submit, status, logs, cancel.

The cluster tests start a head and a second node on this host (token
authentication on, as Ray 2.60 defaults), each with one CPU and its own ports,
in a private --temp-dir; teardown kills exactly those nodes' processes (never
``ray stop``, which would stop every Ray on the machine) and removes the dir.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import PLUGINS

from gradsweep import store
from gradsweep.cli.app import main
from gradsweep.errors import BadInput
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


def start_cluster(temp_dir: str) -> Cluster:
    """A head and one joining node, one CPU each, on this host."""
    ray = str(VENV_BIN / "ray")
    port, dash = free_port(), free_port()
    env = cluster_env()
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1", "--num-cpus=1", f"--port={port}",
                    f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
                    f"--temp-dir={temp_dir}", "--disable-usage-stats", *node_flags()],
                   env=env, check=True, capture_output=True, timeout=120)
    gcs = (Path(temp_dir) / "ray_current_cluster").read_text().strip()
    subprocess.run([ray, "start", f"--address={gcs}", "--num-cpus=1",
                    f"--temp-dir={temp_dir}", *node_flags()],
                   env=env, check=True, capture_output=True, timeout=120)
    return Cluster(gcs, f"http://127.0.0.1:{dash}", temp_dir)


def cluster_processes(cluster: Cluster) -> list[psutil.Process]:
    """This cluster's processes: those naming its temp dir or GCS, and their descendants."""
    roots = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or ())
        if cluster.temp_dir in line or cluster.gcs in line:
            roots.append(p)
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return [p for pid, p in found.items() if pid != os.getpid()]


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
    temp_dir = tempfile.mkdtemp(prefix="gsr", dir="/tmp")  # short: socket paths
    info = Cluster("", "", temp_dir)
    try:
        info = start_cluster(temp_dir)
        yield info
    finally:
        stop_cluster(info)


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
