"""Faults of the store: a crash at any step, writers and readers during compaction, full disks.

A plain reader is ``pandas.read_parquet(<root>/cells)``: it must never see the
old files and the merged one together, nor lose a row, whatever step a
compaction is at or was killed at.
"""

import contextlib
import errno
import gc
import itertools
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from gradsweep import store

REPO = Path(__file__).parent.parent
#: Filesystem calls the store makes (shutil.rmtree's included); a step is one call.
STEPS = ("open", "mkdir", "rename", "link", "unlink", "rmdir", "fsync")


class Crash(BaseException):
    """Stands for SIGKILL: no cleanup code of the store catches it."""


def cell(cell_id: str) -> dict:
    return {"cell_id": cell_id, "kernel": "rnn", "variant": "rnn/x", "status": "ok",
            "median_ns": 1.0, "samples_ns": [1.0, 2.0]}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Sweep s1 with four files (8 cells), s2 with one file."""
    root = tmp_path_factory.mktemp("template") / "r"
    ds = store.resolve(root)
    for i in range(4):
        store.write(ds, "cells", "s1", [cell(f"c{i}"), cell(f"c{i + 4}")])
    store.write(ds, "cells", "s2", [cell("x")])
    return root


EXPECTED = {("s1", f"c{i}") for i in range(8)} | {("s2", "x")}


def fresh(template: Path, tmp_path: Path, name: str = "r") -> store.Dataset:
    shutil.rmtree(tmp_path / name, ignore_errors=True)
    shutil.copytree(template, tmp_path / name)
    return store.resolve(tmp_path / name)


def plain_rows(ds: store.Dataset) -> set[tuple[str, str]]:
    """(sweep_id, cell_id) as plain pandas reads them; fails on a duplicate."""
    frame = pd.read_parquet(ds.table_path("cells"), columns=["sweep_id", "cell_id"])
    keys = list(zip(frame["sweep_id"].astype(str), frame["cell_id"]))
    dupes = pd.Series(keys).value_counts()
    assert not (dupes > 1).any(), f"plain reader sees duplicates {list(dupes[dupes > 1].index)}"
    return set(keys)


def assert_clean(ds: store.Dataset) -> None:
    """Compacted: one file per partition, no half-done compaction left."""
    for table in ("cells",):
        top = os.listdir(ds.table_path(table))
        assert not store._leftovers(top), top
        for sweep in store.partitions(ds, table):
            directory = store.partition_path(ds, table, sweep)
            assert store.MANIFEST not in os.listdir(directory)
            assert len(store.files(ds, table, [sweep])) == 1


@contextlib.contextmanager
def at_every_step(monkeypatch, hook, exchange: bool = True, sync: bool = False):
    """Call ``hook(step, name)`` before every filesystem call (not re-entered by the hook).

    Without ``sync``, fsync is a step that does nothing (a kill loses no page cache).
    """
    counter, busy = itertools.count(), [False]

    def hooked(name, real):
        def call(*args, **kwargs):
            if not busy[0]:
                busy[0] = True
                try:
                    hook(next(counter), name)
                finally:
                    busy[0] = False
            return real(*args, **kwargs)
        return call

    with monkeypatch.context() as patch:
        for name in STEPS:
            real = (lambda fd: None) if name == "fsync" and not sync else getattr(os, name)
            patch.setattr(os, name, hooked(name, real))
        real_exchange = store._exchange if exchange else (lambda a, b: False)
        patch.setattr(store, "_exchange", hooked("exchange", real_exchange))
        yield counter


def count_steps(monkeypatch, action, ds: store.Dataset, exchange: bool = True) -> int:
    """Filesystem calls ``action(ds)`` makes."""
    with at_every_step(monkeypatch, lambda step, name: None, exchange) as counter:
        action(ds)
    return next(counter)


def crash_at(k: int):
    def hook(step, name):
        if step == k:
            raise Crash(f"step {k} ({name})")
    return hook


# --- compaction: every instant, every crash point --------------------------------------------

@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_plain_reader_sees_old_files_or_the_merged_one_at_every_step(
        template, tmp_path, monkeypatch, exchange):
    ds = fresh(template, tmp_path)
    views = []

    def look(step, name):
        rows = plain_rows(ds)
        views.append(len(store.files(ds, "cells", ["s1"])))
        s1_missing = EXPECTED - {k for k in EXPECTED if k[0] == "s1"}
        # two renames leave the partition missing for an instant; never half of it
        assert rows == EXPECTED or (not exchange and rows == s1_missing)

    with at_every_step(monkeypatch, look, exchange):
        store.compact(ds)
    assert plain_rows(ds) == EXPECTED and set(views) >= {4, 1}
    assert_clean(ds)


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_crash_at_any_step_of_compaction_loses_nothing_and_the_next_one_recovers(
        template, tmp_path, monkeypatch, exchange):
    steps = count_steps(monkeypatch, store.compact, fresh(template, tmp_path), exchange)
    assert steps > 20
    s1_missing = EXPECTED - {k for k in EXPECTED if k[0] == "s1"}
    for k in range(steps):
        ds = fresh(template, tmp_path)
        with pytest.raises(Crash), at_every_step(monkeypatch, crash_at(k), exchange):
            store.compact(ds)
        rows = plain_rows(ds)
        assert rows == EXPECTED or (not exchange and rows == s1_missing), f"step {k}"
        assert set(zip(*[store.read(ds, "cells")[c] for c in ("sweep_id", "cell_id")])) \
            == EXPECTED, f"step {k}"
        store.compact(ds)
        assert plain_rows(ds) == EXPECTED, f"step {k}"
        assert_clean(ds)


def test_a_read_or_a_write_finishes_a_compaction_killed_after_the_swap(
        template, tmp_path, monkeypatch):
    swapped = []

    def crash_after_swap(step, name):
        if swapped:
            raise Crash(name)
        swapped.extend([name] if name == "exchange" else [])

    for finish in (lambda ds: store.read(ds, "cells"),
                   lambda ds: store.write(ds, "cells", "s1", [cell("late")])):
        ds, swapped[:] = fresh(template, tmp_path), []
        with pytest.raises(Crash), at_every_step(monkeypatch, crash_after_swap):
            store.compact(ds)
        assert store.MANIFEST in os.listdir(store.partition_path(ds, "cells", "s1"))
        finish(ds)
        assert not store._leftovers(os.listdir(ds.table_path("cells")))
        assert store.MANIFEST not in os.listdir(store.partition_path(ds, "cells", "s1"))
        assert plain_rows(ds) >= EXPECTED


def test_a_live_compaction_is_not_recovered_by_a_reader(template, tmp_path, monkeypatch):
    ds = fresh(template, tmp_path)
    seen = []

    def read_while_staged(step, name):
        staging = store._sibling_paths(ds.table_path("cells"), "s1")[1]
        if os.path.isdir(staging) and not seen:
            seen.append(len(store.read(ds, "cells")))
            assert os.path.isdir(staging)  # the reader left it to its compaction

    with at_every_step(monkeypatch, read_while_staged):
        store.compact(ds)
    assert seen == [len(EXPECTED)]
    assert_clean(ds)


# --- writers and readers during compaction ---------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_file_written_at_any_step_of_compaction_is_kept_once(
        template, tmp_path, monkeypatch, exchange):
    steps = count_steps(monkeypatch, store.compact, fresh(template, tmp_path), exchange)
    for k in range(steps):
        ds = fresh(template, tmp_path)

        def write_at_k(step, name, k=k, ds=ds):
            if step == k:
                store.write(ds, "cells", "s1", [cell("late")])

        with at_every_step(monkeypatch, write_at_k, exchange):
            store.compact(ds)
        assert plain_rows(ds) >= EXPECTED | {("s1", "late")}, f"step {k}"
        frame = store.read(ds, "cells")
        assert set(zip(frame["sweep_id"], frame["cell_id"])) == EXPECTED | {("s1", "late")}
        assert not store._leftovers(os.listdir(ds.table_path("cells")))


def test_a_compaction_at_any_step_of_a_write_keeps_the_file_once(
        template, tmp_path, monkeypatch):
    def write(ds):
        return store.write(ds, "cells", "s1", [cell("new")])

    steps = count_steps(monkeypatch, write, fresh(template, tmp_path))
    for k in range(steps):
        ds = fresh(template, tmp_path)

        def compact_at_k(step, name, k=k, ds=ds):
            if step == k:
                store.compact(ds)

        with at_every_step(monkeypatch, compact_at_k):
            write(ds)
        assert plain_rows(ds) == EXPECTED | {("s1", "new")}, f"step {k}"
        assert not store._leftovers(os.listdir(ds.table_path("cells")))


def test_a_reader_lists_again_when_a_compaction_swaps_files_away(template, tmp_path,
                                                                  monkeypatch):
    ds = fresh(template, tmp_path)
    real_files, calls = store.files, []

    def list_then_compact(*args, **kwargs):
        listed = real_files(*args, **kwargs)
        calls.append(len(listed))
        if len(calls) == 1:
            store.compact(ds)
        return listed

    monkeypatch.setattr(store, "files", list_then_compact)
    with warnings_as_errors():
        loaded = store.read_table(ds, "cells")
    assert loaded.corrupt == () and calls[0] == 5 and calls[-1] == 2
    assert set(zip(loaded.table["sweep_id"].to_pylist(),
                   loaded.table["cell_id"].to_pylist())) == EXPECTED


@contextlib.contextmanager
def warnings_as_errors():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


#: Reads ``<root>/cells`` with plain pandas until told to stop; counts what it saw.
READER = """
import sys, pandas as pd, pyarrow as pa
cells, stop = sys.argv[1], sys.argv[2]
import os
reads = duplicated = shrank = vanished = 0
most = 0
while not os.path.exists(stop):
    try:
        frame = pd.read_parquet(cells, columns=["sweep_id", "cell_id"])
    except FileNotFoundError:  # listed files a compaction swapped away: read again
        vanished += 1
        continue
    except pa.ArrowInvalid as exc:  # listed the old directory just as the swap emptied it
        if "No match for FieldRef" not in str(exc):
            raise
        vanished += 1
        continue
    reads += 1
    duplicated += int(frame.duplicated().any())
    shrank += int(len(frame) < most)
    most = max(most, len(frame))
print(reads, duplicated, shrank, vanished)
"""


@pytest.mark.slow
def test_a_plain_reader_process_never_sees_duplicates_during_compactions(tmp_path):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell("first")])
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, ds.table_path("cells"), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 4
        for i in itertools.count():
            for j in range(3):
                store.write(ds, "cells", "s1", [cell(f"c{i}-{j}")])
            store.compact(ds)
            if time.monotonic() > deadline:
                break
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    reads, duplicated, shrank, vanished = map(int, out.split())
    print(f"{reads} plain reads over {i + 1} compactions, {vanished} retried after a swap")
    assert reads > 20 and duplicated == 0 and shrank == 0
    assert plain_rows(ds) == {("s1", "first")} | {("s1", f"c{k}-{j}") for k in range(i + 1)
                                                   for j in range(3)}


# --- full disk ---------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the compaction lock, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != store.LOCK}


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def half_written_then_enospc(table, where, **kwargs):
    where.write(b"PAR1" + b"\0" * 1000)
    enospc()


class HalfWrittenThenEnospc:
    """A ``pq.ParquetWriter`` on a full disk (compaction streams through one)."""

    def __init__(self, where, schema, **kwargs):
        self.where = where

    def write_table(self, table, **kwargs):
        half_written_then_enospc(table, self.where)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("where", ["write_table", "fsync", "rename"])
def test_a_full_disk_is_one_store_error_and_damages_nothing(template, tmp_path,
                                                             monkeypatch, where):
    ds = fresh(template, tmp_path)
    before = snapshot(tmp_path / "r")
    with monkeypatch.context() as patch:
        if where == "write_table":
            patch.setattr(store.pq, "write_table", half_written_then_enospc)
            patch.setattr(store.pq, "ParquetWriter", HalfWrittenThenEnospc)
        else:
            patch.setattr(os, where, enospc)
        with pytest.raises(store.StoreError) as raised:
            store.write(ds, "cells", "s1", [cell("new")])
        if where != "rename":  # compaction swaps with renameat2, not os.rename
            with pytest.raises(store.StoreError, match="No space left on device"):
                store.compact(ds)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("cannot write ")
    assert "/cells/sweep_id=s1/" in message and "No space left on device (errno 28)" in message
    assert raised.value.cause.errno == errno.ENOSPC
    assert snapshot(tmp_path / "r") == before  # no temporary file, nothing changed
    assert plain_rows(ds) == EXPECTED


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        unmount(mount)


def unmount(mount: Path, tries: int = 10) -> None:
    """Unmount ``mount``; while it is busy (a reader's handle not yet closed
    by a background thread) retry, and at last detach it lazily."""
    for _ in range(tries):
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
            return
        gc.collect()
        time.sleep(0.2)
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_real_full_disk(small_tmpfs):
    ds = store.resolve(small_tmpfs / "r")
    noise = [float(x) for x in range(3000)]  # about 24 kB a row: the disk fills in ~80 rows
    stored = []
    with pytest.raises(store.StoreError, match="No space left on device") as raised:
        for i in range(1000):
            store.write(ds, "cells", "s1", [{**cell(f"c{i}"), "samples_ns": noise}])
            stored.append(("s1", f"c{i}"))
    assert raised.value.cause.errno == errno.ENOSPC and len(stored) > 10
    temporary = [p for p in small_tmpfs.rglob(".*") if p.is_file() and p.name != store.LOCK]
    assert temporary == []
    assert plain_rows(ds) == set(stored)
    before = snapshot(small_tmpfs / "r")
    with pytest.raises(store.StoreError):  # no room for the merged file either
        store.compact(ds)
    assert snapshot(small_tmpfs / "r") == before and plain_rows(ds) == set(stored)


# --- durability -----------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_write_is_fsynced_then_renamed_then_its_directory_fsynced(tmp_path, monkeypatch):
    ds = store.resolve(tmp_path / "r")
    store.write(ds, "cells", "s1", [cell("a")])
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst, **kwargs):
        events.append(("rename", str(src), str(dst)))
        real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    path = store.write(ds, "cells", "s1", [cell("b")])
    directory, name = os.path.split(path)
    temporary = f"{directory}/.{name}.tmp"
    assert events == [("fsync", temporary), ("rename", temporary, path), ("fsync", directory)]


# --- SIGKILL of a real process ------------------------------------------------------------------

#: Imports once, then forks a worker per line on stdin (so each kill costs no interpreter
#: start); a worker appends files and compacts in a loop, saying what it does.
DRIVER = """
import os, random, sys, time
from gradsweep import store

def say(*words):  # one write(2) per line: lines of the driver and its workers never mix
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())

ds = store.resolve(sys.argv[1])
say("ready")
for line in sys.stdin:
    tag = line.strip()
    pid = os.fork()
    if pid:
        say("pid", pid)
        os.waitpid(pid, 0)
        say("reaped")
        continue
    rng = random.Random(tag)
    for cycle in range(1000):
        for j in range(rng.randint(2, 4)):
            ids = [f"{tag}-{cycle}-{j}-{r}" for r in range(rng.randint(1, 3))]
            say("try", *ids)
            store.write(ds, "cells", "s1", [
                {"cell_id": i, "kernel": "rnn", "variant": "rnn/x", "status": "ok",
                 "samples_ns": [1.0] * 9, "median_ns": 1.0} for i in ids])
            say("ok", *ids)
        say("compact")
        start = time.perf_counter()
        store.compact(ds, "s1")
        say("done", time.perf_counter() - start)
    os._exit(0)
"""
KILLS = 24


class Worker:
    """The driver process; its stdout lines arrive on a queue."""

    def __init__(self, root: Path):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(root)], cwd=REPO,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.next() == ["ready"]

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.split())

    def next(self, timeout: float = 60) -> list[str]:
        return self.lines.get(timeout=timeout)

    def start(self, tag: str, record) -> int:
        """Fork a worker; its pid (its first lines may come before, to ``record``)."""
        self.proc.stdin.write(tag + "\n")
        self.proc.stdin.flush()
        while (words := self.next())[0] != "pid":
            record(words)
        return int(words[1])


def compaction_state(ds: store.Dataset) -> str:
    """Where a killed compaction stopped, read from the directory."""
    live, staging, old = store._sibling_paths(ds.table_path("cells"), "s1")
    if store._read_manifest(live) is not None:
        return "swapped, clearing the old files"
    if store._read_manifest(staging) is not None:
        return "staged, not swapped"
    return "building the merged file" if os.path.isdir(staging) else "between compactions"


@pytest.mark.slow
def test_sigkill_at_random_points_of_compaction_never_duplicates_or_loses(tmp_path):
    root = tmp_path / "r"
    ds = store.resolve(root)
    worker = Worker(root)
    rng = random.Random(16)
    acknowledged, tried, states, durations = set(), set(), {}, [0.02]

    def record(words):
        if words[0] in ("try", "ok"):
            (tried if words[0] == "try" else acknowledged).update(("s1", i) for i in words[1:])
        elif words[0] == "done":
            durations.append(float(words[1]))
    try:
        for kill in range(KILLS):
            pid = worker.start(f"w{kill}", record)
            compactions = rng.randint(1, 2)
            while (words := worker.next()) != ["compact"] or (compactions := compactions - 1):
                record(words)
            time.sleep(rng.uniform(0, 1.2 * sorted(durations)[len(durations) // 2]))
            os.kill(pid, signal.SIGKILL)
            while (words := worker.next()) != ["reaped"]:
                record(words)
            state = compaction_state(ds)
            states[state] = states.get(state, 0) + 1
            rows = plain_rows(ds)  # no duplicate
            assert acknowledged <= rows <= tried, f"kill {kill} ({state})"
            store.compact(ds)  # the next compaction recovers
            assert plain_rows(ds) == rows
            assert_clean(ds)
    finally:
        worker.proc.kill()
        worker.proc.wait()
    print("kill points:", states)
    # the kills must have landed inside compactions too (timing-based: a loaded machine
    # shifts them; every state is also crashed deterministically by the step tests above)
    assert sum(n for s, n in states.items() if s != "between compactions") >= KILLS // 8, states
