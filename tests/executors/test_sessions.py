"""Embedded Ray sessions: loopback only, and nothing left behind by a killed driver.

The unit tests fake sessions (a directory named like Ray's, a process holding a
file of it open) and need no Ray. The ``ray`` tests start the embedded Ray
exactly as the executor does, in a subprocess driver, under a private
``RAY_TMPDIR``; they end only that driver's processes.
"""

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from http import HTTPStatus
from pathlib import Path

import psutil
import pytest
from ray.autoscaler._private.constants import AUTOSCALER_METRIC_PORT
from ray.dashboard.consts import DASHBOARD_METRIC_PORT

from gradsweep.executors import sessions

#: A process that holds ``argv[1]`` open for appending and sleeps; with ``argv[2]`` "stubborn"
#: it ignores SIGTERM, as Ray's agents did; with "reader" it only reads (``tail -f``).
HOLDER = ("import signal, sys, time\n"
          "f = open(sys.argv[1], 'r' if sys.argv[2] == 'reader' else 'a')\n"
          "if sys.argv[2] == 'stubborn':\n"
          "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "print('ready', flush=True)\n"
          "time.sleep(120)\n")
#: The driver of the ``ray`` tests: starts the embedded Ray as RayExecutor does (Ray
#: imported first, as the CLI may), runs a task, prints its session directory, then
#: waits for a line on stdin before shutting down.
DRIVER = ("import sys, ray\n"
          "from gradsweep.executors import onray, sessions\n"
          "with sessions.embedded(watch=sys.argv[1] == 'watch', env=onray.embedded_env(())):\n"
          "    ray.init(**onray.ray_init_kwargs(None, (), 1))\n"
          "assert ray.get(ray.remote(num_cpus=1)(lambda: 41 + 1).remote()) == 42\n"
          "print(ray._private.worker._global_node.get_session_dir_path(), flush=True)\n"
          "sys.stdin.readline()\n"
          "ray.shutdown()\n")
#: The processes of every embedded Ray session, each with a listening socket.
RAY_CORE = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}
#: Seconds the driver may take to start Ray and run one task.
DRIVER_START_S = 45
#: Seconds within which every process of a killed driver's session must be gone.
GONE_WITHIN_S = 10


def _dead_pid() -> int:
    """The pid of a process that has exited (reuse within the test is unlikely)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _session_dir(root: Path, pid: int, started: float | None = None) -> Path:
    stamp = datetime.fromtimestamp(time.time() if started is None else started)
    path = root / f"session_{stamp.strftime(sessions.SESSION_TIME)}_{pid}"
    (path / "logs").mkdir(parents=True)
    return path


def _hold(path: Path, mode: str = "plain") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def holders():
    """Processes started by a test; any left are killed at teardown (by their pid)."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_parse_session_reads_driver_pid_and_time(tmp_path):
    path = _session_dir(tmp_path, 4242, started=1_700_000_000.25)
    assert sessions.parse_session(path) == sessions.Session(path, 4242, 1_700_000_000.25)
    (tmp_path / "session_latest").symlink_to(path)
    (tmp_path / "session_garbled_x").mkdir()
    assert sessions.list_sessions(tmp_path) == [sessions.parse_session(path)]


def test_driver_alive_sees_exit_and_pid_reuse(tmp_path, holders):
    dead = sessions.parse_session(_session_dir(tmp_path, _dead_pid()))
    assert not sessions.driver_alive(dead)
    holders.append(_hold(tmp_path / "x.log"))
    live_pid = holders[-1].pid
    alive = sessions.parse_session(_session_dir(tmp_path, live_pid))
    assert sessions.driver_alive(alive)
    reused = sessions.Session(tmp_path / "old", live_pid, time.time() - 3600)
    assert not sessions.driver_alive(reused)  # that pid's process started after the session
    mine = sessions.parse_session(_session_dir(tmp_path, os.getpid()))
    assert not sessions.driver_alive(mine)  # this process runs no Ray


def test_reap_ends_only_ended_sessions(tmp_path, holders):
    ended = _session_dir(tmp_path, _dead_pid(), started=time.time() - 10)
    orphan, stubborn = (_hold(ended / "logs" / n, m) for n, m in
                        (("agent.log", "plain"), ("env_agent.log", "stubborn")))
    holders += [orphan, stubborn]
    reader = _hold(ended / "logs" / "agent.log", "reader")
    holders.append(reader)
    holders.append(_hold(tmp_path / "driver.log"))
    live = _session_dir(tmp_path, holders[-1].pid)
    bystander = _hold(live / "logs" / "raylet.out")
    holders.append(bystander)
    t0 = time.monotonic()
    assert sessions.reap_orphans(tmp_path) == sorted([orphan.pid, stubborn.pid])
    took_s = time.monotonic() - t0  # the stubborn one outlived SIGTERM, not SIGKILL
    assert sessions.TERM_GRACE_S <= took_s < sessions.TERM_GRACE_S + sessions.KILL_WAIT_S
    assert orphan.poll() is not None and stubborn.poll() is not None
    assert bystander.poll() is None and live.is_dir() and reader.poll() is None
    assert (ended / sessions.ENDED_MARKER).exists()  # the newest ended one is kept
    assert sessions.reap_orphans(tmp_path) == []


def test_reap_removes_older_ended_sessions(tmp_path):
    paths = [_session_dir(tmp_path, _dead_pid(), started=time.time() - 60 + i) for i in range(3)]
    assert sessions.reap_orphans(tmp_path) == []
    assert [p.is_dir() for p in paths] == [False] * (3 - sessions.KEEP_ENDED) + [True]


def test_temp_dir_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))
    root = sessions.temp_dir()
    private = tmp_path / "tmp" / f"gradsweep-ray-{os.getuid()}"
    assert root == private / sessions.RAY_DIR and root.is_dir()
    private.chmod(0o777)  # what Ray does to its temp dir, were it given this one
    assert sessions.temp_dir() == root and private.stat().st_mode & 0o777 == 0o700
    root.rmdir()
    private.rmdir()
    private.symlink_to(tmp_path)
    with pytest.raises(PermissionError, match="gradsweep-ray"):
        sessions.temp_dir()


def test_embedded_sets_loopback_only_for_its_block(tmp_path, monkeypatch):
    from ray._private import ray_constants

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with sessions.embedded(watch=False) as root:
        assert root == sessions.temp_dir()
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    assert ray_constants.ENABLE_RAY_CLUSTER is before
    monkeypatch.setenv("GS_KEPT", "before")
    with sessions.embedded(watch=False, env={"GS_KEPT": "during", "GS_NEW": "1"}):
        assert os.environ["GS_KEPT"] == "during" and os.environ["GS_NEW"] == "1"
    assert os.environ["GS_KEPT"] == "before" and "GS_NEW" not in os.environ
    with sessions.embedded(enabled=False) as root:  # joining a cluster: nothing changes
        assert root is None and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
        assert ray_constants.ENABLE_RAY_CLUSTER is before


# --- the real embedded Ray ---------------------------------------------------------------


@pytest.fixture
def driver(tmp_path):
    """Start DRIVER (``watch`` or ``nowatch``) under a private short RAY_TMPDIR.

    Yields a function returning ``(process, session directory)``. Teardown ends
    the driver and any process of its session that is still there.
    """
    tmp = Path(tempfile.mkdtemp(prefix="gs-ray-", dir="/tmp"))  # Ray's socket paths stay short
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(mode: str) -> tuple[subprocess.Popen, Path]:
        env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, mode], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = _read_line(proc, DRIVER_START_S)
        started.append((proc, Path(line)))
        return started[-1]

    yield start
    for proc, session in started:
        if proc.poll() is None:
            proc.communicate("\n", timeout=30)
        sessions.end_processes(sessions.session_processes([session])[session])
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            proc.kill()
            pytest.fail(f"the driver printed nothing within {timeout_s} s")
    line = proc.stdout.readline().strip()
    assert line, f"the driver exited with {proc.wait()}"
    return line


def _processes(proc: subprocess.Popen, session: Path) -> list[psutil.Process]:
    """The driver, its descendants, and whatever holds a file of its session open."""
    found = {p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)}
    found.update({p.pid: p for p in sessions.session_processes([session])[session]})
    return [psutil.Process(proc.pid), *found.values()]


def _listening(proc: psutil.Process) -> list[tuple[str, str, int]]:
    """``proc``'s listening sockets as (name, ip, port); none for a process that has
    ended since it was listed (Ray's idle workers come and go)."""
    try:
        return [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _external_addresses() -> list[str]:
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not _loopback(a.address)]


def _answers(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


def _http_status(port: int) -> int | None:
    """The status of ``GET /`` on loopback without the token; None if it is not HTTP."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@pytest.mark.ray
def test_embedded_ray_listens_on_loopback_only(driver):
    """Every socket of the session is on loopback, none answers on another address,
    and without the token only the two Prometheus endpoints answer over HTTP."""
    proc, session = driver("nowatch")
    assert session.parent.parent.stat().st_mode & 0o777 == sessions.PRIVATE_MODE
    listening = [s for p in _processes(proc, session) for s in _listening(p)]
    assert RAY_CORE <= {name for name, _, _ in listening}
    assert [s for s in listening if not _loopback(s[1])] == []
    reachable = [(ip, port) for _, _, port in listening for ip in _external_addresses()
                 if _answers(ip, port)]
    assert reachable == [], f"answering beyond loopback: {reachable}"
    assert all(_answers("127.0.0.1", port) for _, _, port in listening)  # the probe works
    assert {port for _, _, port in listening if _http_status(port) == HTTPStatus.OK} <= {
        AUTOSCALER_METRIC_PORT, DASHBOARD_METRIC_PORT}  # docs/security.md names these


@pytest.mark.ray
def test_reap_ends_a_killed_drivers_session(driver):
    proc, session = driver("nowatch")
    ours = _processes(proc, session)
    assert sessions.reap_orphans(session.parent) == []  # a live session is not touched
    assert RAY_CORE <= {_name(p) for p in ours}  # (idle workers may come and go)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reaped = sessions.reap_orphans(session.parent)
    assert set(reaped) <= {p.pid for p in ours}
    _assert_gone(ours[1:], within_s=1)


def _name(proc: psutil.Process) -> str:
    """``proc``'s name; empty for a process that has ended (or turned zombie)."""
    try:
        return proc.name() if _running(proc) else ""
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def _command(proc: psutil.Process) -> str:
    """``proc``'s command line; empty for a process that has just ended (a zombie)."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


@pytest.mark.ray
def test_watchdog_ends_a_killed_drivers_session(driver):
    proc, session = driver("watch")
    ours = _processes(proc, session)
    watchdogs = [p for p in ours if "watch_main" in _command(p)]
    assert len(watchdogs) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _assert_gone(ours[1:], within_s=GONE_WITHIN_S)
    assert (session / sessions.ENDED_MARKER).exists()


def _assert_gone(procs: list[psutil.Process], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        left = [p for p in procs if _running(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == [], f"still running: {[(p.pid, _name(p)) for p in left]}"


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
