"""Argument checks: every path, address and number a command takes, checked before anything runs.

Each check raises :class:`~gradsweep.errors.BadInput` with one line: which option,
which value, what is wrong and what was expected, e.g. ``--output:
/etc/passwd exists and is not a directory (expected a directory for the
site)``. The CLI calls them before it reads a dataset or starts Ray, so a
typo costs a second, not a Ray start (or a hang on a dead address).
:class:`Range` and :func:`check_number` are also what the spec's numbers are
checked with (``gradsweep.spec.MEASURE_RANGES``, ``OPTION_RANGES``).

Writability is probed by creating and removing a hidden temporary entry
(``.gradsweep-probe-*``, which the store's readers ignore): permission bits
say nothing when running as root, and a read-only or virtual file system
(``/proc``) only answers an actual attempt.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gradsweep.errors import BadInput, Range, check_number
from gradsweep.spec import MEASURE_RANGES

#: Seconds to resolve and connect to a cluster address before calling it unreachable.
ADDRESS_TIMEOUT_S = 5.0
#: Prefix of the entries made (and removed at once) to test that a directory is writable.
PROBE_PREFIX = ".gradsweep-probe-"
#: Files of a dashboard site; a directory holding its index may be written over.
SITE_INDEX = "index.html"
#: Address schemes and their default ports: a GCS address (no scheme, as ``ray.init``
#: takes it: the port is required), the Ray Client (``ray://``, port 10001) and the
#: dashboard's HTTP API (``http://``/``https://``, as ``ray job submit`` takes it).
DEFAULT_PORTS = {"": None, "ray": 10001, "http": 80, "https": 443}
#: What each scheme's address is, for messages.
SCHEME_KINDS = {"": "a GCS address", "ray": "a Ray Client address", "http": "a dashboard URL",
                "https": "a dashboard URL"}
#: A host name: letters, digits, '-', '_' and '.' (an IP address is checked by ipaddress).
HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")
#: What ``run --address`` takes (``ray.init``): a GCS HOST:PORT or ray://HOST[:PORT].
RAY_INIT_SCHEMES = ("", "ray")
#: What ``submit --address`` and the job commands take: the dashboard URL (a bare
#: HOST:PORT means http, as for ``ray job submit``).
JOBS_SCHEMES = ("http", "https", "")
#: Addresses ``ray.init`` resolves itself (RAY_ADDRESS, the last started cluster, or a
#: new local one): nothing to probe.
RAY_KEYWORDS = ("auto", "local")



#: Numeric command-line options and their ranges (``gradsweep.checks.check_option``).
OPTION_RANGES: Mapping[str, Range] = {
    "--alpha": Range(0, 0.5, low_open=True),
    "--threshold": Range(0, 10),
    "--seconds": MEASURE_RANGES["profile_seconds"],
    "--threads": MEASURE_RANGES["threads"],
    "--workers": Range(1, 4096),
    "--top": Range(1, 10**6),
}


def check_option(value: float, key: str) -> float:
    """A numeric option's ``value`` inside its range in ``OPTION_RANGES[key]``.

    An ``int`` value is checked (and returned) as an integer, a ``float`` as a number.
    """
    integer = isinstance(value, int) and not isinstance(value, bool)
    return check_number(value, OPTION_RANGES[key], key=key, integer=integer)


@dataclass(frozen=True)
class Endpoint:
    """A parsed cluster address: ``scheme`` is "" for a bare GCS HOST:PORT."""

    address: str
    scheme: str
    host: str
    port: int | None


def _probe_dir(directory: Path, path: Path, what: str, key: str) -> None:
    """BadInput (naming ``path``) unless a file can be created and removed in ``directory``."""
    try:
        fd, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=directory)
    except OSError as exc:
        where = f"{path}: " if path != directory else ""
        raise BadInput(f"{where}cannot create files in {directory} ({exc.strerror or exc}; "
                       f"expected a writable directory for {what})", key=key) from None
    os.close(fd)
    os.unlink(name)


def _existing_ancestor(path: Path) -> Path:
    """The nearest of ``path``'s ancestors that exists (``path`` itself excluded)."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _creatable(path: Path, what: str, key: str) -> None:
    """BadInput unless ``path`` (missing) can be made: its nearest existing ancestor
    must be a writable directory."""
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise BadInput(f"{path}: {ancestor} is not a directory (expected a path for {what})",
                       key=key)
    _probe_dir(ancestor, path, what, key)


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False,
                      key: str = "--output") -> Path:
    """``path`` as a file to write: a new file in a writable directory.

    Parameters
    ----------
    path : str or path-like
        Where a command will write one file (e.g. ``results show --format parquet -o``).
    overwrite : bool
        Accept an existing regular file (it will be replaced).
    key : str
        The option named in the message.

    Raises
    ------
    BadInput
        Empty path; an existing directory or non-regular file; an existing file
        without ``overwrite``; a missing or unwritable parent directory.
    """
    p = Path(path)
    if not str(path):
        raise BadInput("empty path (expected a file to write)", key=key)
    if p.is_dir():
        raise BadInput(f"{p} is a directory (expected a file to write)", key=key)
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise BadInput(f"{p} already exists (expected a new file)", key=key)
        if not p.is_file():
            raise BadInput(f"{p} is not a regular file (expected a file to write)", key=key)
    parent = p.absolute().parent
    if not parent.is_dir():
        state = "is not a directory" if parent.exists() else "does not exist"
        raise BadInput(f"{p}: directory {parent} {state} (expected a file in an existing "
                       "directory)", key=key)
    _probe_dir(parent, p, "the file", key)
    return p


def check_output_dir(path: str | os.PathLike, *, key: str = "--output") -> Path:
    """``path`` as the directory of a dashboard site: missing, empty or an earlier site.

    A missing directory is created later (with its parents), so its nearest
    existing ancestor must be a writable directory. An existing directory must
    be empty or hold an earlier site (its ``index.html``): the site's files are
    written over, so a directory of other files (``-o ~``, ``-o /etc``) is refused.

    Raises
    ------
    BadInput
        An existing non-directory, a directory of other files, or no way to write.
    """
    p = Path(path)
    if not str(path):
        raise BadInput("empty path (expected a directory for the site)", key=key)
    if p.exists() and not p.is_dir():
        raise BadInput(f"{p} exists and is not a directory (expected a directory for the "
                       "site)", key=key)
    if not p.exists():
        _creatable(p, "the site", key)
        return p
    if any(p.iterdir()) and not (p / SITE_INDEX).is_file():
        raise BadInput(f"{p} holds other files (expected a new or empty directory, or an "
                       f"earlier dashboard with its {SITE_INDEX})", key=key)
    _probe_dir(p, p, "the site", key)
    return p


def _local_results(path: str) -> str | None:
    """The local path of a results location, or None for a remote URI (not checked here)."""
    if "://" not in path:
        return path
    parts = urlsplit(path)
    return unquote(parts.path) if parts.scheme == "file" else None


def check_results_dir(path: str | os.PathLike | None, must_exist: bool, *,
                      key: str = "--results") -> str:
    """The results location (``path``, else $GRADSWEEP_RESULTS, else ``results/``), checked.

    A local directory (or ``file://`` URI) must be a directory, empty or holding
    at least one of the dataset's tables (``sweeps/``, ``cells/``, ...). With
    ``must_exist`` (commands that read) it must exist; without it (commands
    that write) it may be missing, and must be creatable and writable. Remote
    URIs (``s3://``, ...) pass unchecked: their access shows at the first read.

    Returns
    -------
    str
        The location, as ``store.resolve`` takes it.
    """
    from gradsweep import store  # pyarrow: imported only by commands that use a dataset

    env = os.environ.get(store.RESULTS_ENV)
    where = str(path or env or store.DEFAULT_RESULTS)
    key = key if path or not env else store.RESULTS_ENV
    local = _local_results(where)
    if local is None:
        return where
    p = Path(local)
    if p.exists() and not p.is_dir():
        raise BadInput(f"{where} is not a directory (expected a results dataset directory)",
                       key=key)
    if not p.exists():
        if must_exist:
            raise BadInput(f"no results dataset at {where} (expected a directory written by "
                           "gradsweep run)", key=key)
        _creatable(p, "the results", key)
        return where
    entries = {e.name for e in p.iterdir() if not e.name.startswith((".", "_"))}
    if entries and not entries & set(store.SCHEMAS):
        raise BadInput(f"{where} holds no results tables (expected an empty directory or a "
                       f"dataset with {', '.join(f'{t}/' for t in store.SCHEMAS)})", key=key)
    if not must_exist:
        _probe_dir(p, p, "the results", key)
    return where


def parse_address(address: str, *, accept: tuple[str, ...] = tuple(DEFAULT_PORTS),
                  key: str = "--address") -> Endpoint:
    """``address`` split into scheme, host and port, without touching the network.

    Forms: ``HOST:PORT`` (a GCS address, as ``ray.init`` takes it), ``ray://HOST[:PORT]``
    (Ray Client, default port 10001), ``http(s)://HOST[:PORT]`` (the dashboard, as
    ``ray job submit`` takes it); IPv6 hosts in brackets. ``accept`` limits the schemes.
    """
    expected = " or ".join(f"{s}://HOST[:PORT]" if s else "HOST:PORT" for s in accept)
    bad = BadInput(f"{address!r} is not a cluster address (expected {expected})", key=key)
    scheme, sep, rest = address.partition("://")
    scheme, rest = (scheme, rest) if sep else ("", address)
    if scheme not in DEFAULT_PORTS or not rest:
        raise bad
    if scheme not in accept:
        raise BadInput(f"{address!r} is {SCHEME_KINDS[scheme]} (expected {expected})", key=key)
    try:
        parts = urlsplit(f"//{rest}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or outside 0..65535
        raise bad from None
    if (not host or not _is_host(host) or parts.path.strip("/") or parts.query
            or parts.fragment or parts.username or port == 0):
        raise bad
    port = port if port is not None else DEFAULT_PORTS[scheme]
    if port is None:
        raise BadInput(f"{address!r} has no port (expected HOST:PORT, e.g. {host}:6379)",
                       key=key)
    return Endpoint(address, scheme, host, port)


def _is_host(host: str) -> bool:
    """An IP address (v4, or v6 from inside brackets) or a host name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return HOST_NAME.fullmatch(host) is not None


def _resolve(host: str, port: int, timeout_s: float) -> list[tuple]:
    """getaddrinfo with a deadline (it has none of its own): run it in a daemon thread."""
    found: list = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not found:
        raise TimeoutError(f"resolving {host} took more than {timeout_s:g} s")
    if isinstance(found[0], OSError):
        raise found[0]
    return found[0]


def _connect(host: str, port: int, timeout_s: float) -> None:
    """Open and close one TCP connection to ``host:port`` within ``timeout_s`` in all."""
    deadline = time.monotonic() + timeout_s
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in _resolve(host, port, timeout_s):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(sockaddr)
            return
        except OSError as exc:
            error = exc
    raise error or TimeoutError(f"no answer within {timeout_s:g} s")


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S, *,
                  accept: tuple[str, ...] = tuple(DEFAULT_PORTS),
                  keywords: tuple[str, ...] = RAY_KEYWORDS,
                  key: str = "--address") -> Endpoint | None:
    """``address`` parsed (:func:`parse_address`) and reachable: a TCP connect succeeds.

    Returns None for ``keywords`` (``auto``, ``local``: ``ray.init`` resolves them
    itself; pass ``keywords=()`` where they mean nothing, as for ``submit``).
    One failed probe costs at most about ``timeout_s`` (name lookup included),
    instead of ``ray.init``'s minutes of retries on a dead address.

    Raises
    ------
    BadInput
        Malformed address, a scheme outside ``accept``, a host that does not
        resolve, nothing listening (refused), or no answer within ``timeout_s``.
    """
    if address in keywords:
        return None
    end = parse_address(address, accept=accept, key=key)
    target = f"{end.host}:{end.port}"
    try:
        _connect(end.host, end.port, timeout_s)
    except socket.gaierror as exc:
        raise BadInput(f"{address}: cannot resolve host {end.host!r} ({exc.strerror}; "
                       "expected a reachable Ray cluster)", key=key) from None
    except ConnectionRefusedError:
        raise BadInput(f"{address}: nothing listens at {target} (connection refused; expected "
                       "a running Ray cluster)", key=key) from None
    except TimeoutError:
        raise BadInput(f"{address}: no answer from {target} within {timeout_s:g} s (expected "
                       "a reachable Ray cluster)", key=key) from None
    except OSError as exc:
        raise BadInput(f"{address}: cannot connect to {target} ({exc.strerror or exc}; "
                       "expected a reachable Ray cluster)", key=key) from None
    return end
