"""Argument checks (bench.checks) and the terminal escaping of user text (bench.errors)."""

import math
import os
import socket
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from gradsweep import checks
from gradsweep.checks import (
    JOBS_SCHEMES,
    PROBE_PREFIX,
    RAY_INIT_SCHEMES,
    Range,
    check_address,
    check_number,
    check_option,
    check_output_dir,
    check_output_file,
    check_results_dir,
    parse_address,
)
from gradsweep.errors import BadInput, printable
from gradsweep.store import RESULTS_ENV


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "\x1b" not in text
    return text


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --- printable and BadInput --------------------------------------------------------------------

def test_printable_escapes_every_control_and_format_character():
    escaped = [chr(c) for c in range(sys.maxunicode + 1)
               if unicodedata.category(chr(c)) in {"Cc", "Cf", "Cs", "Zl", "Zp"}]
    # C0, DEL, C1 (65), bidi overrides, zero-width and tag marks, surrogates, separators
    assert len(escaped) > 2048 + 65 + 100
    for ch in escaped:
        out = printable(f"a{ch}b")
        assert out.startswith("a\\") and out.endswith("b") and out.isascii(), repr(ch)
        assert printable(out) == out  # escaping is idempotent


def test_printable_keeps_text_and_names_the_escapes():
    assert printable("café 漢字 ok") == "café 漢字 ok"
    assert printable("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert printable("a\u202eb\nc\td") == "a\\u202eb\\nc\\td"
    assert printable("\U000e0001") == "\\U000e0001"


def test_bad_input_is_one_escaped_line():
    exc = BadInput("bad\nvalue \x1b[2J", where="/tmp/a\x1bb.toml", key="k")
    assert str(exc) == "/tmp/a\\x1bb.toml: k: bad value \\x1b[2J"


# --- numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, inside", [
    (0, False), (0.0, False), (1e-300, True), (60, True), (60.0000001, False),
    (math.nan, False), (math.inf, False), (-math.inf, False), (10**400, False)])
def test_open_low_range(value, inside):
    assert (value in Range(0, 60, low_open=True)) is inside


def test_closed_and_unbounded_ranges():
    r = Range(1, 1024)
    assert 1 in r and 1024 in r and 0 not in r and 1025 not in r and -(10**400) not in r
    assert Range(0, math.inf, low_open=True).describe(False) == "a finite number > 0"
    assert r.describe(True) == "an integer in [1, 1024]"
    assert 1e308 in Range(0, math.inf, low_open=True)
    assert math.inf not in Range(0, math.inf, low_open=True)


def test_check_number_and_check_option():
    assert check_number(3, Range(1, 5), key="--x") == 3.0
    assert check_number(3, Range(1, 5), key="--x", integer=True) == 3
    with pytest.raises(BadInput, match=r"^--alpha: got nan \(expected a number in \(0, 0.5\]\)$"):
        check_option(math.nan, "--alpha")
    with pytest.raises(BadInput, match=r"--threads: got 0 \(expected an integer in \[1, 1024\]"):
        check_option(0, "--threads")
    assert check_option(2.0, "--seconds") == 2.0


# --- output file -------------------------------------------------------------------------------

def test_output_file_new_in_writable_dir_leaves_nothing(tmp_path):
    assert check_output_file(tmp_path / "x.parquet") == tmp_path / "x.parquet"
    assert listing(tmp_path) == []


def test_output_file_existing(tmp_path):
    f = tmp_path / "x.parquet"
    f.write_text("old")
    with pytest.raises(BadInput) as exc:
        check_output_file(f)
    assert f"--output: {f} already exists (expected a new file)" == one_line(exc)
    assert check_output_file(f, overwrite=True) == f
    with pytest.raises(BadInput, match="is a directory"):
        check_output_file(tmp_path, overwrite=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BadInput, match="not a regular file"):
        check_output_file(tmp_path / "dangling", overwrite=True)


def test_output_file_parent(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(BadInput, match="directory .*/no does not exist"):
        check_output_file(tmp_path / "no" / "x")
    with pytest.raises(BadInput, match="/f is not a directory"):
        check_output_file(tmp_path / "f" / "x")
    with pytest.raises(BadInput, match=r"^-o: /proc/x: cannot create files in /proc"):
        check_output_file("/proc/x", key="-o")
    with pytest.raises(BadInput, match="empty path"):
        check_output_file("")


# --- output directory --------------------------------------------------------------------------

def test_output_dir_accepts_new_empty_and_earlier_site(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert listing(tmp_path) == []  # nothing created by the check
    (tmp_path / "site").mkdir()
    assert check_output_dir(tmp_path / "site")
    (tmp_path / "site" / "index.html").write_text("")
    (tmp_path / "site" / "style.css").write_text("")
    assert check_output_dir(tmp_path / "site")
    assert listing(tmp_path) == ["site", "site/index.html", "site/style.css"]


def test_output_dir_refuses_files_and_foreign_directories(tmp_path):
    (tmp_path / "f").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("")
    for path, needle in [(tmp_path / "f", "exists and is not a directory"),
                         (tmp_path / "f" / "site", "is not a directory"),
                         (tmp_path / "docs", "holds other files"),
                         (Path("/proc/gradsweep-site"), "cannot create files in /proc")]:
        with pytest.raises(BadInput) as exc:
            check_output_dir(path)
        assert str(path) in one_line(exc) and needle in str(exc.value)


# --- results directory -------------------------------------------------------------------------

V1 = Path(__file__).parent / "fixtures" / "v1"


def test_results_dir_reading(tmp_path):
    assert check_results_dir(str(V1), True) == str(V1)
    assert check_results_dir(f"file://{V1}", True) == f"file://{V1}"
    assert check_results_dir("s3://bucket/prefix", True) == "s3://bucket/prefix"  # not probed
    (tmp_path / "empty").mkdir()
    assert check_results_dir(tmp_path / "empty", True)
    with pytest.raises(BadInput, match="no results dataset at"):
        check_results_dir(tmp_path / "missing", True)


def test_results_dir_writing_creates_nothing(tmp_path):
    assert check_results_dir(tmp_path / "new" / "results", False)
    (tmp_path / "ds" / "cells").mkdir(parents=True)
    (tmp_path / "ds" / "README").write_text("")
    assert check_results_dir(tmp_path / "ds", False)
    assert listing(tmp_path) == ["ds", "ds/README", "ds/cells"]


def test_results_dir_refusals(tmp_path):
    (tmp_path / "f").write_text("")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("")
    for path, must, needle in [(tmp_path / "f", True, "is not a directory"),
                               (tmp_path / "f", False, "is not a directory"),
                               (tmp_path / "home", False, "holds no results tables"),
                               (tmp_path / "f" / "r", False, "is not a directory"),
                               ("/proc/r", False, "cannot create files in /proc")]:
        with pytest.raises(BadInput) as exc:
            check_results_dir(path, must)
        assert one_line(exc).startswith(f"--results: {path}") and needle in str(exc.value)


def test_results_dir_from_the_environment_names_it(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "f"))
    with pytest.raises(BadInput, match=f"^{RESULTS_ENV}: "):
        check_results_dir(None, True)
    monkeypatch.delenv(RESULTS_ENV)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="^--results: no results dataset at results "):
        check_results_dir(None, True)


# --- addresses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("address, scheme, host, port", [
    ("127.0.0.1:6379", "", "127.0.0.1", 6379),
    ("[::1]:6379", "", "::1", 6379),
    ("head-node.example.com:6379", "", "head-node.example.com", 6379),
    ("ray://10.0.0.5", "ray", "10.0.0.5", 10001),
    ("ray://10.0.0.5:20001", "ray", "10.0.0.5", 20001)])
def test_parse_ray_init_addresses(address, scheme, host, port):
    end = parse_address(address, accept=RAY_INIT_SCHEMES)
    assert (end.scheme, end.host, end.port) == (scheme, host, port)


@pytest.mark.parametrize("address, needle", [
    ("nonsense:::", "is not a cluster address"), ("::1:6379", "is not a cluster address"),
    ("host:abc", "is not a cluster address"), ("host:70000", "is not a cluster address"),
    ("host:0", "is not a cluster address"), (" 127.0.0.1:6379", "is not a cluster address"),
    ("a b:1", "is not a cluster address"), ("h:6379/x", "is not a cluster address"),
    ("user@h:6379", "is not a cluster address"), ("foo://h:1", "is not a cluster address"),
    ("ray://", "is not a cluster address"), ("host", "has no port"), ("host:", "has no port"),
    ("http://h:8265", "is a dashboard URL"), ("https://h", "is a dashboard URL")])
def test_parse_refuses_for_ray_init(address, needle):
    with pytest.raises(BadInput) as exc:
        parse_address(address, accept=RAY_INIT_SCHEMES)
    assert one_line(exc).startswith(f"--address: {address!r}") and needle in str(exc.value)


def test_parse_job_addresses():
    assert parse_address("http://h:8265", accept=JOBS_SCHEMES).port == 8265
    assert parse_address("https://h", accept=JOBS_SCHEMES).port == 443
    assert parse_address("h:8265", accept=JOBS_SCHEMES).scheme == ""
    with pytest.raises(BadInput, match="is a Ray Client address"):
        parse_address("ray://h:10001", accept=JOBS_SCHEMES)


@pytest.fixture
def server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    yield sock
    sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_address_reaches_a_listener(server):
    port = server.getsockname()[1]
    end = check_address(f"127.0.0.1:{port}", 2.0)
    assert (end.host, end.port) == ("127.0.0.1", port)
    assert check_address("auto") is None and check_address("local") is None
    with pytest.raises(BadInput, match="has no port"):
        check_address("auto", keywords=())


def test_check_address_refused_in_well_under_a_second():
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(BadInput) as exc:
        check_address(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 1.0
    assert one_line(exc) == (f"--address: 127.0.0.1:{port}: nothing listens at 127.0.0.1:{port} "
                             "(connection refused; expected a running Ray cluster)")


def test_check_address_unresolvable_host():
    with pytest.raises(BadInput, match="cannot resolve host 'no-such-host.invalid'"):
        check_address("no-such-host.invalid:6379", 5.0)


def test_check_address_times_out_on_a_silent_listener(server):
    """A listener whose backlog is full drops new SYNs: connect waits, the check gives up."""
    port = server.getsockname()[1]
    held = []
    for _ in range(8):  # fill the backlog (Linux: one pending connection with listen(0))
        s = socket.socket()
        s.settimeout(0.2)
        held.append(s)
        try:
            s.connect(("127.0.0.1", port))
        except TimeoutError:
            break
    start = time.monotonic()
    with pytest.raises(BadInput, match=f"no answer from 127.0.0.1:{port} within 0.5 s"):
        check_address(f"127.0.0.1:{port}", 0.5)
    assert time.monotonic() - start < 2.0
    for s in held:
        s.close()


def test_check_address_name_lookup_has_a_deadline(monkeypatch):
    monkeypatch.setattr(checks.socket, "getaddrinfo", lambda *a, **k: time.sleep(3))
    start = time.monotonic()
    with pytest.raises(BadInput, match="no answer from slow.example:6379 within 0.3 s"):
        check_address("slow.example:6379", 0.3)
    assert time.monotonic() - start < 1.5


def test_probe_files_never_linger(tmp_path):
    for _ in range(3):
        check_output_file(tmp_path / "x")
        check_output_dir(tmp_path)
        check_results_dir(tmp_path, False)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(PROBE_PREFIX)]
