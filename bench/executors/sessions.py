"""gradsweep's own embedded Ray sessions: bound to loopback, and ended with their driver.

An embedded Ray (``gradsweep run`` without ``--address``) keeps its sessions
under a directory of its own, :func:`temp_dir` (``/tmp/gradsweep-ray-<uid>/ray``),
so that nothing else's Ray is ever mistaken for ours. Ray names each session
directory after the driver that started it, ``session_<date>_<time>_<usec>_<pid>``;
a session whose driver is gone is *ended*, and every process that still writes to
a file in it (Ray's processes keep their logs there) is an orphan.

* :func:`embedded` wraps the driver's ``ray.init``: it reaps orphans, makes Ray
  take the loopback address as its node IP (:data:`PRIVATE_ENV`, see
  docs/security.md), and starts a watchdog that reaps this driver's sessions
  as soon as the driver exits, even by SIGKILL.
* :func:`shutdown` ends this driver's embedded Ray without the second its
  autoscaler monitor spends on SIGTERM.
* :func:`reap_orphans` ends the processes of every ended session (SIGTERM, then
  SIGKILL after :data:`TERM_GRACE_S`) and removes its directory, keeping the
  newest for a post-mortem.

This module needs only the standard library and psutil (installed with Ray): the
watchdog loads it from its file, without the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

#: Set in the driver before ``ray.init``: Ray then takes the loopback address as the
#: node IP on Linux, as it does on macOS, and every server it starts binds to it
#: (measured: 11 listening sockets, all on loopback; without it 11 of 12 were not).
PRIVATE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: What ``ray._private.ray_constants`` computed from :data:`PRIVATE_ENV` at its import.
RAY_CLUSTER_FLAG = "ENABLE_RAY_CLUSTER"
#: Mode of this user's directory holding :data:`RAY_DIR`, Ray's temp directory.
PRIVATE_MODE = 0o700
RAY_DIR = "ray"
#: psutil's mode of a file open only for reading.
READ_ONLY = "r"
#: Ray's session directories: ``session_<SESSION_TIME>_<driver pid>``.
SESSION_PREFIX = "session_"
SESSION_TIME = "%Y-%m-%d_%H-%M-%S_%f"
#: Written into an ended session's directory once none of its processes is left.
ENDED_MARKER = ".gradsweep-ended"
#: Ended sessions whose directories (logs) are kept, newest first.
KEEP_ENDED = 1
#: Seconds an orphan has to exit on SIGTERM before SIGKILL (Ray's agents ignored
#: SIGTERM for 17 s), then seconds to wait for the kill.
TERM_GRACE_S = 1.0
KILL_WAIT_S = 3.0
#: Seconds between checks that signalled processes are gone.
POLL_S = 0.05
#: Slack between a process's recorded start time and the session's name time.
CLOCK_SLACK_S = 1.0
#: Seconds the watchdog waits for its driver to be gone after the pipe closes.
DRIVER_EXIT_WAIT_S = 10.0

#: The watchdog of each driver pid (a forked child that starts Ray needs its own).
_WATCHDOG: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class Session:
    """One Ray session directory under :func:`temp_dir`.

    Attributes
    ----------
    path : Path
        The session directory.
    driver_pid : int
        The pid of the process that started it (the last field of its name).
    started : float
        When it started, in seconds since the epoch (local time in its name).
    """

    path: Path
    driver_pid: int
    started: float


def system_temp_dir() -> Path:
    """Where Ray puts its temp directory: $RAY_TMPDIR, $TMPDIR (Linux), else /tmp.

    The rule of Ray's ``ray._common.utils.get_default_system_temp_dir``, so that
    ours sits beside Ray's own ``ray/`` (and its socket paths stay as short).
    """
    if "RAY_TMPDIR" in os.environ:
        return Path(os.environ["RAY_TMPDIR"])
    if sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        return Path(os.environ["TMPDIR"])
    return Path("/tmp")


def temp_dir() -> Path:
    """gradsweep's Ray temp directory, ``<system temp>/gradsweep-ray-<uid>/ray``.

    Ray makes its temp directory world-writable (``chmod 777``, for shared
    machines); its parent here is this user's alone (mode 0700), so no other
    user reaches the sessions' logs or Unix sockets. Both are created when
    missing.

    Raises
    ------
    PermissionError
        If the parent exists but is a symlink or belongs to another user (who
        could otherwise plant sessions or processes for us to trust).
    """
    private = system_temp_dir() / f"gradsweep-ray-{os.getuid()}"
    private.parent.mkdir(parents=True, exist_ok=True)
    private.mkdir(mode=PRIVATE_MODE, exist_ok=True)
    if private.is_symlink() or private.lstat().st_uid != os.getuid():
        raise PermissionError(f"{private}: not a directory of user {os.getuid()}; remove it")
    private.chmod(PRIVATE_MODE)
    root = private / RAY_DIR
    root.mkdir(exist_ok=True)
    return root


def parse_session(path: Path) -> Session | None:
    """The :class:`Session` named by ``path``, or None if it is not a session directory."""
    name = path.name
    if not name.startswith(SESSION_PREFIX) or path.is_symlink() or not path.is_dir():
        return None
    stamp, _, pid = name[len(SESSION_PREFIX):].rpartition("_")
    try:
        started = datetime.strptime(stamp, SESSION_TIME).timestamp()
        return Session(path, int(pid), started)
    except ValueError:
        return None


def list_sessions(root: Path) -> list[Session]:
    """Every session directory under ``root``, oldest first."""
    found = [parse_session(p) for p in root.iterdir()] if root.is_dir() else []
    return sorted((s for s in found if s is not None), key=lambda s: s.started)


def _live_session_here() -> Path | None:
    """The session directory of this process's running Ray, if it has one."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    node = ray._private.worker._global_node
    return Path(node.get_session_dir_path()) if node is not None else None


def driver_alive(session: Session) -> bool:
    """Whether the process that started ``session`` still runs it.

    The pid must exist, not be a zombie, and have started before the session
    (a later start means the pid was reused). For this very process, the
    session must be its running Ray's.
    """
    if session.driver_pid == os.getpid():
        return _live_session_here() == session.path
    try:
        driver = psutil.Process(session.driver_pid)
        return (driver.status() != psutil.STATUS_ZOMBIE
                and driver.create_time() <= session.started + CLOCK_SLACK_S)
    except psutil.Error:
        return False


def session_processes(paths: list[Path]) -> dict[Path, list[psutil.Process]]:
    """This user's processes (not this one) writing to a file of each session.

    Every Ray process of a session (GCS, raylet, monitors, agents, workers)
    keeps its logs in the session directory open for appending; that is how
    the agents and workers are found at all, since Ray rewrites their titles.
    A process that only reads them (``tail -f``, ``less``) is not counted.
    """
    found: dict[Path, list[psutil.Process]] = {p: [] for p in paths}
    prefixes = [(p, f"{p}{os.sep}") for p in paths]
    for proc in psutil.process_iter(["uids", "status"]):
        info = proc.info
        if (proc.pid == os.getpid() or info["uids"] is None or info["uids"].real != os.getuid()
                or info["status"] == psutil.STATUS_ZOMBIE):
            continue
        try:
            written = [f.path for f in proc.open_files() if f.mode != READ_ONLY]
        except psutil.Error:
            continue
        for path, prefix in prefixes:
            if any(f.startswith(prefix) for f in written):
                found[path].append(proc)
                break
    return found


def _running(proc: psutil.Process) -> bool:
    """Alive (the same process, not a reused pid) and not a zombie (an orphan's
    zombie waits for init, which may be slow)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to ``timeout_s`` for ``procs`` to end; those still running."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in procs if _running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(POLL_S)
        left = [p for p in left if _running(p)]
    return left


def end_processes(procs: list[psutil.Process]) -> list[int]:
    """SIGTERM ``procs``, SIGKILL what is left after :data:`TERM_GRACE_S`; the pids ended."""
    left = list(procs)
    for send, wait_s in ((psutil.Process.terminate, TERM_GRACE_S),
                         (psutil.Process.kill, KILL_WAIT_S)):
        for proc in left:
            try:
                send(proc)  # psutil checks the pid still names the same process
            except psutil.Error:
                pass
        left = _wait_gone(left, wait_s)
        if not left:
            break
    return sorted(p.pid for p in procs if p not in left)


def reap_orphans(root: Path | None = None) -> list[int]:
    """End what gradsweep's ended embedded Ray sessions left running.

    Only sessions under ``root`` (default :func:`temp_dir`) whose driver is gone
    are touched (:func:`driver_alive`); a running sweep's session never is.
    Their processes get SIGTERM, then SIGKILL; a session with none left is
    marked ended, and all but the newest :data:`KEEP_ENDED` such directories
    are removed.

    Returns
    -------
    list[int]
        The pids ended, ascending.
    """
    root = temp_dir() if root is None else root
    ended = [s for s in list_sessions(root) if not driver_alive(s)]
    unmarked = [s.path for s in ended if not (s.path / ENDED_MARKER).exists()]
    pids: list[int] = []
    cleared = set()
    for path, procs in session_processes(unmarked).items() if unmarked else ():
        gone = end_processes(procs)
        pids += gone
        if len(gone) == len(procs):
            cleared.add(path)
    for session in ended:
        if session.path in cleared:
            (session.path / ENDED_MARKER).touch()
    for session in ended[:-KEEP_ENDED] if KEEP_ENDED else ended:
        if session.path in cleared or (session.path / ENDED_MARKER).exists():
            shutil.rmtree(session.path, ignore_errors=True)
    return sorted(pids)


def shutdown() -> None:
    """``ray.shutdown()`` for the embedded Ray this process started.

    Ray ends its head processes with SIGTERM and waits up to a second for each; its
    autoscaler monitor always takes that second (its SIGTERM handler reports to a
    GCS that is already gone) and an embedded node has nothing to autoscale, so
    the monitor is killed first: the shutdown takes 0.3 s instead of 1.35 s here.
    """
    import ray

    node = ray._private.worker._global_node
    if node is not None and node.head:
        node.kill_monitor(check_alive=False)
    ray.shutdown()


@contextmanager
def embedded(enabled: bool = True, watch: bool = True,
             env: Mapping[str, str] | None = None) -> Iterator[Path | None]:
    """Around the embedded ``ray.init``: reap orphans, keep Ray on loopback, watch the driver.

    Sets :data:`PRIVATE_ENV` and ``env`` (and Ray's flag computed from the first at
    import, should Ray be imported already) for the duration of the block only: the
    processes Ray starts inherit them, while a later ``ray.init(address=...)`` in this
    process is not affected. Only for the embedded default, never for a cluster,
    whose nodes need an address the others can reach.

    Parameters
    ----------
    enabled : bool
        False: do nothing (joining a cluster or inside a Ray job), so that the
        caller wraps every ``ray.init`` alike.
    watch : bool
        Start :func:`watch_driver` (once per process).
    env : mapping, optional
        More variables for Ray's processes (and so its workers: the embedded Ray
        prestarts them with its own environment, while a ``runtime_env`` would
        make every worker wait for a fresh one; ``onray.embedded_env``).

    Yields
    ------
    Path or None
        The temp directory ``ray_init_kwargs`` gives ``ray.init`` as ``_temp_dir``
        (None when not ``enabled``).
    """
    if not enabled:
        yield None
        return
    root = temp_dir()
    reap_orphans(root)
    if watch:
        watch_driver(root)
    with loopback_only(env):
        yield root


@contextmanager
def loopback_only(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Ray's single-host mode for the ``ray.init`` inside: the node IP is loopback.

    Needed to start an embedded Ray on loopback (:func:`embedded`), and to join
    one at a loopback address from another driver (``run --address 127.0.0.1:...``):
    a driver in Ray's cluster mode looks for its raylet at the machine's own
    address and never connects. Sets :data:`PRIVATE_ENV` (with ``env``) and Ray's
    flag computed from it at import, for the block only.
    """
    variables = {**(env or {}), **PRIVATE_ENV}
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    from ray._private import ray_constants

    flag = getattr(ray_constants, RAY_CLUSTER_FLAG, None)  # read once, at Ray's import
    if flag is not None:
        setattr(ray_constants, RAY_CLUSTER_FLAG, False)
    try:
        yield
    finally:
        if flag is not None:
            setattr(ray_constants, RAY_CLUSTER_FLAG, flag)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Run by the watchdog: load this file as a module (no package needed) and watch.
_WATCH_CODE = ("import importlib.util as u, sys; s = u.spec_from_file_location("
               "'gradsweep_sessions', sys.argv[1]); m = u.module_from_spec(s); "
               "sys.modules[s.name] = m; s.loader.exec_module(m); m.watch_main(sys.argv[2:])")


def watch_driver(root: Path) -> subprocess.Popen:
    """Start a watchdog that reaps ``root``'s ended sessions when this process exits.

    The watchdog (its own process session, so a Ctrl-C does not reach it)
    blocks reading a pipe that only this process holds open; the pipe closes
    when this process exits, however it dies (SIGKILL included). It then waits
    for this process to be gone and calls :func:`reap_orphans`. One per process.
    """
    pid = os.getpid()
    if pid not in _WATCHDOG:
        _WATCHDOG[pid] = subprocess.Popen(
            [sys.executable, "-c", _WATCH_CODE, os.path.abspath(__file__), str(pid), str(root)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)
    return _WATCHDOG[pid]


def watch_main(argv: list[str]) -> None:
    """The watchdog: ``<driver pid> <root>``; wait for the driver to end, then reap."""
    driver_pid, root = int(argv[0]), Path(argv[1])
    sys.stdin.buffer.read()  # returns at EOF: the driver closed the pipe by exiting
    deadline = time.monotonic() + DRIVER_EXIT_WAIT_S
    while time.monotonic() < deadline:
        try:
            if psutil.Process(driver_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    reap_orphans(root)
