"""Sweep specs: load and validate the TOML format of DESIGN.md, expand to cells.

Every error is a :class:`~gradsweep.errors.BadInput` naming the file and the key,
e.g. ``jobs/x.toml: grid[0].variants.buffers: unknown value 'lists' (expected
one of list, prealloc)``, raised before anything runs.

Limits (each a named constant below): a spec file is a regular file of at most
:data:`MAX_SPEC_BYTES`, nested at most :data:`MAX_NESTING` deep; every number
of ``[measure]`` is finite and inside its range in :data:`MEASURE_RANGES`;
every dim is an integer from the kernel's minimum to :data:`DIM_MAX`; a spec
has at most :data:`MAX_CELLS` combinations and a grid at most
:data:`MAX_EXCLUDE` exclude rules; no cell may need more memory than the
largest ``memory_budget_mb`` allows (:data:`MAX_CELL_BYTES`).

The sweep's ``name`` is free text of 1 to :data:`MAX_NAME_CHARS` characters
and is kept exactly as written (it is data: a column of the results), even
when it holds control characters such as a terminal escape; whatever prints
it escapes it with :func:`gradsweep.errors.printable`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import reprlib
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from gradsweep.errors import BadInput, Range, check_number
from gradsweep.impls.base import DTYPES, PEER_AXIS, Kernel, variant_name
from gradsweep.impls.registry import PluginError, Registry, load
from gradsweep.records import Cell, Dropped, Expansion, Grid, MeasureSettings, SweepSpec

#: Value meaning "every value of this axis".
ALL = "*"
TOP_KEYS = {"name", "plugins", "measure", "grid"}
GRID_KEYS = {"kernel", "dtype", "variants", "peers", "shape", "exclude"}
KNOWN_PEERS = ("torch",)
#: What ``[measure] clock`` may name: CPU time of the timing thread, or wall time.
CLOCKS = ("cpu", "wall")
#: Every number of ``[measure]`` and its range: part of the spec format (DESIGN.md).
MEASURE_RANGES: Mapping[str, Range] = {
    "threads": Range(1, 1024),
    "min_time_s": Range(0, 60, low_open=True),
    "samples": Range(1, 10**6),
    "repeats": Range(1, 1000),
    "max_warmups": Range(0, 10**4),
    "clip_value": Range(0, math.inf, low_open=True),
    "clip_norm": Range(0, math.inf, low_open=True),
    "seed": Range(0, 2**32 - 1),
    "timeout_s": Range(0, 86400, low_open=True),
    "memory_budget_mb": Range(0, 2**40, low_open=True),
    "profile_seconds": Range(0, 3600, low_open=True),
}
#: Text keys of ``[measure]`` and the values each may take.
MEASURE_CHOICES: Mapping[str, tuple[str, ...]] = {"clock": CLOCKS}
#: Largest value of any dim (from the kernel's minimum, 0 or 1, up to this): dims are
#: stored as int64 and indexed by numpy, and no real shape comes near it.
DIM_MAX = 2**31 - 1
#: Largest spec file (bytes); a bigger one is refused before it is read.
MAX_SPEC_BYTES = 2**20
#: Deepest nesting of arrays and tables (the document is level 1; a valid spec uses 5).
MAX_NESTING = 8
#: Most combinations (dtype x member x shape, summed over grids, before check and exclude).
MAX_CELLS = 100_000
#: Most exclude rules in one grid (each cell is matched against every rule).
MAX_EXCLUDE = 1_000
#: Longest sweep name, in characters.
MAX_NAME_CHARS = 256
#: Largest memory estimate of one cell: what the largest memory_budget_mb allows. A bigger
#: cell could never run under any budget; it is a typo, refused rather than skipped.
MAX_CELL_BYTES = int(MEASURE_RANGES["memory_budget_mb"].high) * 2**20
#: How values are quoted in messages: long strings, lists and numbers are shortened.
_SHOW = reprlib.Repr()  # keyword arguments need Python 3.12
_SHOW.maxstring, _SHOW.maxlong, _SHOW.maxother = 60, 40, 60
_SHOW.maxlist, _SHOW.maxdict, _SHOW.maxlevel = 4, 4, 2



def registry_for(plugins: Sequence[str], *,
                 fallback: bool = False) -> tuple[Registry, tuple[str, ...]]:
    """The registry with ``plugins``, and notes.

    A plugin that fails to import is BadInput (``--plugin``), or with
    ``fallback`` the built-in registry and a note saying so (reports of stored
    sweeps whose plugin is gone).
    """
    try:
        return load(tuple(plugins)), ()
    except PluginError as exc:
        if not fallback:
            raise BadInput(str(exc), key="--plugin") from None
        return load(()), (f"{exc}; speed-ups of its variants use the built-in registry only",)


_DEFAULTS = MeasureSettings()


def _show(value: Any) -> str:
    """``value`` quoted for a message, shortened when long (see ``_SHOW``)."""
    return _SHOW.repr(value)


def _short(name: str) -> str:
    """A key as written, cut to a readable length for a message."""
    limit = _SHOW.maxstring
    return name if len(name) <= limit else f"{name[:limit - 3]}..."


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(names.get(x, x.__name__) for x in ts)


def _expect(value: Any, t: type | tuple[type, ...], where: str, key: str) -> Any:
    """``value`` if it has type ``t`` (bool is not an int here), else BadInput."""
    ts = t if isinstance(t, tuple) else (t,)
    ok = isinstance(value, ts) and not (isinstance(value, bool) and bool not in ts)
    if float in ts and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise BadInput(f"expected {_type_name(t)}, got {type(value).__name__} {_show(value)}",
                       where=where, key=key)
    return value


def _in_range(value: float, allowed: Range, integer: bool, where: str, key: str) -> float:
    """``value`` (an int, or a float when not ``integer``) if inside ``allowed``, else BadInput."""
    return check_number(value, allowed, integer=integer, key=key, where=where,
                        shown=_show(value))


def _unknown(keys: Sequence[str], allowed: set[str], where: str, prefix: str) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise BadInput(f"unknown key (expected one of {', '.join(sorted(allowed))})",
                       where=where, key=f"{prefix}{_short(extra[0])}")


def _as_list(value: Any, item: type, where: str, key: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BadInput("empty list", where=where, key=key)
    return [_expect(v, item, where, key) for v in values]


def _measure_value(key: str, value: Any, where: str) -> Any:
    """One ``[measure]`` value, typed and checked (numbers against MEASURE_RANGES)."""
    name = f"measure.{key}"
    if key == "profile_variants":
        return tuple(_as_list(value, str, where, name))
    if key in MEASURE_CHOICES:
        choices = MEASURE_CHOICES[key]
        if _expect(value, str, where, name) not in choices:
            raise BadInput(f"unknown value {_show(value)} (expected one of "
                           f"{', '.join(choices)})", where=where, key=name)
        return value
    default = getattr(_DEFAULTS, key)
    if isinstance(default, bool):
        return _expect(value, bool, where, name)
    integer = isinstance(default, int)
    number = _expect(value, int if integer else (float, int), where, name)
    return _in_range(number, MEASURE_RANGES[key], integer, where, name)


def _measure(table: Any, where: str) -> MeasureSettings:
    table = _expect(table, dict, where, "measure")
    _unknown(list(table), {f.name for f in fields(MeasureSettings)}, where, "measure.")
    return MeasureSettings(**{k: _measure_value(k, v, where) for k, v in table.items()})


def _variants(kernel: Kernel, table: Any, where: str, key: str):
    table = _expect(table, dict, where, key)
    names = [a.name for a in kernel.axes]
    _unknown(list(table), set(names), where, f"{key}.")
    chosen = []
    for axis in kernel.axes:
        raw = table.get(axis.name, ALL)
        values = list(axis.values) if raw == ALL else _as_list(raw, str, where,
                                                                  f"{key}.{axis.name}")
        for v in values:
            if v not in axis.values:
                raise BadInput(f"unknown value {_show(v)} (expected one of "
                               f"{', '.join(axis.values)})", where=where,
                               key=f"{key}.{axis.name}")
        chosen.append((axis.name, tuple(dict.fromkeys(values))))
    return tuple(chosen)


def _shape(kernel: Kernel, table: Any, where: str, key: str):
    table = _expect(table, dict, where, key)
    _unknown(list(table), {d.name for d in kernel.dims}, where, f"{key}.")
    chosen = []
    for dim in kernel.dims:
        allowed = Range(dim.minimum, DIM_MAX)
        values = [_in_range(v, allowed, True, where, f"{key}.{dim.name}")
                  for v in _as_list(table.get(dim.name, dim.default), int, where,
                                    f"{key}.{dim.name}")]
        chosen.append((dim.name, tuple(dict.fromkeys(values))))
    return tuple(chosen)


def _exclude(kernel: Kernel, raw: Any, where: str, key: str):
    allowed = {d.name for d in kernel.dims} | {a.name for a in kernel.axes} | {"dtype"}
    rules = _expect(raw, list, where, key)
    if len(rules) > MAX_EXCLUDE:
        raise BadInput(f"{len(rules)} rules (expected at most {MAX_EXCLUDE})", where=where,
                       key=key)
    out = []
    for i, item in enumerate(rules):
        item = _expect(item, dict, where, f"{key}[{i}]")
        _unknown(list(item), allowed, where, f"{key}[{i}].")
        for k, v in item.items():
            _expect(v, int if k in {d.name for d in kernel.dims} else str, where,
                    f"{key}[{i}].{k}")
        out.append(tuple(sorted(item.items())))
    return tuple(out)


def _grid(registry: Registry, table: Any, where: str, index: int) -> Grid:
    key = f"grid[{index}]"
    table = _expect(table, dict, where, key)
    _unknown(list(table), GRID_KEYS, where, f"{key}.")
    if "kernel" not in table:
        raise BadInput("missing key (expected a kernel name)", where=where, key=f"{key}.kernel")
    name = _expect(table["kernel"], str, where, f"{key}.kernel")
    if name not in registry.kernels:
        raise BadInput(f"unknown kernel {_show(name)} (expected one of "
                       f"{', '.join(sorted(registry.kernels))})", where=where, key=f"{key}.kernel")
    kernel = registry.kernels[name]
    dtypes = _as_list(table.get("dtype", "float64"), str, where, f"{key}.dtype")
    for d in dtypes:
        if d not in DTYPES:
            raise BadInput(f"unknown dtype {_show(d)} (expected one of {', '.join(DTYPES)})",
                           where=where, key=f"{key}.dtype")
    peers = _as_list(table["peers"], str, where, f"{key}.peers") if "peers" in table else []
    for p in peers:
        if f"{name}/{PEER_AXIS}={p}" not in kernel.variants:
            raise BadInput(f"unknown peer {_show(p)} for {name} (expected one of "
                           f"{', '.join(KNOWN_PEERS)})", where=where, key=f"{key}.peers")
    return Grid(kernel=name, dtypes=tuple(dict.fromkeys(dtypes)),
                variants=_variants(kernel, table.get("variants", {}), where, f"{key}.variants"),
                peers=tuple(dict.fromkeys(peers)),
                shape=_shape(kernel, table.get("shape", {}), where, f"{key}.shape"),
                exclude=_exclude(kernel, table.get("exclude", []), where, f"{key}.exclude"))


def combinations(grid: Grid) -> int:
    """Cells of ``grid`` before the kernel's check and exclude: dtypes x members x shapes."""
    members = math.prod(len(v) for _, v in grid.variants) + len(grid.peers)
    return len(grid.dtypes) * members * math.prod(len(v) for _, v in grid.shape)


def spec_hash(data: Mapping[str, Any]) -> str:
    """sha256 of the parsed spec's canonical JSON: comments and layout don't count."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def nesting(data: Any) -> int:
    """Deepest nesting of tables and arrays in parsed TOML (a scalar is 0, ``{}`` 1).

    Walks with an explicit stack, so any depth is measured without recursion.
    """
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        deepest = max(deepest, depth)
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _toml(text: str, where: str) -> dict[str, Any]:
    """Parsed TOML, or BadInput for malformed text or nesting beyond MAX_NESTING."""
    too_deep = BadInput(f"arrays or tables nested too deeply (expected at most {MAX_NESTING} "
                        "levels)", where=where)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"malformed TOML: {exc}", where=where) from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise too_deep from None
    except ValueError as exc:  # an integer beyond sys.get_int_max_str_digits() digits
        raise BadInput(f"malformed TOML: cannot read a value ({str(exc).split(';')[0]})",
                       where=where) from None
    if nesting(data) > MAX_NESTING:
        raise too_deep
    return data


def _name(data: Mapping[str, Any], where: str) -> str:
    name = _expect(data.get("name", Path(where).stem), str, where, "name")
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise BadInput(f"{len(name)} characters (expected 1 to {MAX_NAME_CHARS})", where=where,
                       key="name")
    return name


def _grids(registry: Registry, data: Mapping[str, Any], where: str) -> tuple[Grid, ...]:
    if "grid" not in data:
        raise BadInput("missing key (expected one or more [[grid]] tables)", where=where,
                       key="grid")
    grids = tuple(_grid(registry, g, where, i)
                  for i, g in enumerate(_expect(data["grid"], list, where, "grid")))
    if not grids:
        raise BadInput("no [[grid]] table", where=where, key="grid")
    total = sum(combinations(g) for g in grids)
    if total > MAX_CELLS:
        raise BadInput(f"{total} combinations of dtype, variant and shape (expected at most "
                       f"{MAX_CELLS}; split the sweep)", where=where, key="grid")
    return grids


def parse(text: str, where: str = "<spec>") -> SweepSpec:
    """Validate spec ``text``; ``where`` names it in errors."""
    data = _toml(text, where)
    _unknown(list(data), TOP_KEYS, where, "")
    name = _name(data, where)
    plugins = tuple(_as_list(data["plugins"], str, where, "plugins")) if data.get(
        "plugins") else ()
    try:
        registry = load(plugins)
    except PluginError as exc:
        raise BadInput(str(exc), where=where, key="plugins") from None
    measure = _measure(data.get("measure", {}), where)
    spec = SweepSpec(name=name, path=where, plugins=plugins, measure=measure,
                     grids=_grids(registry, data, where), text=text, spec_hash=spec_hash(data))
    expand(spec, registry)  # a grid left with no cell is an error now, not at run time
    return spec


def _read(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_SPEC_BYTES, else BadInput."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a directory, a FIFO (open would block), a device
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise BadInput(f"{kind} (expected a TOML file)", where=str(path))
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)  # the file may have grown since stat
    except OSError as exc:
        raise BadInput(f"cannot read spec: {exc.strerror or exc}", where=str(path)) from None
    size = max(info.st_size, len(raw))
    if size > MAX_SPEC_BYTES:
        raise BadInput(f"{size} bytes or more (expected a spec of at most "
                       f"{MAX_SPEC_BYTES} bytes)", where=str(path))
    return raw


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate the spec file at ``path`` (a regular UTF-8 file, see MAX_SPEC_BYTES)."""
    try:
        text = _read(Path(path)).decode("utf-8-sig")  # a leading BOM (Windows editors) is fine
    except UnicodeDecodeError:
        raise BadInput("not a UTF-8 text file", where=str(path)) from None
    return parse(text, str(path))


def _excluded(grid: Grid, point: Mapping[str, Any]) -> bool:
    return any(all(point.get(k) == v for k, v in rule) for rule in grid.exclude)


def _check_memory(kernel: Kernel, shape: Mapping[str, int], dtypes: Sequence[str], where: str,
                  key: str) -> None:
    """BadInput when a cell of ``shape`` needs more than MAX_CELL_BYTES in any of ``dtypes``."""
    need = max(int(kernel.memory_estimate(shape, d)) for d in dtypes)
    if need > MAX_CELL_BYTES:
        mib = f"{need >> 20:.3g}" if need.bit_length() < 1000 else "an astronomical number of"
        text = ",".join(f"{k}={v}" for k, v in shape.items())
        raise BadInput(f"{text} needs {mib} MiB per cell (expected at most "
                       f"{MAX_CELL_BYTES >> 20}, the largest memory_budget_mb)",
                       where=where, key=key)


def _grid_cells(spec: SweepSpec, grid: Grid, index: int, kernel: Kernel,
                dropped: list[Dropped]):
    m = spec.measure
    order = tuple(a.name for a in kernel.axes)
    axis_points = [dict(zip(order, combo))
                   for combo in itertools.product(*(v for _, v in grid.variants))]
    axis_points += [{PEER_AXIS: p} for p in grid.peers]
    dim_names = [d for d, _ in grid.shape]
    for values in itertools.product(*(v for _, v in grid.shape)):
        shape = dict(zip(dim_names, values))
        reason = kernel.check(shape)
        text = ",".join(f"{k}={v}" for k, v in shape.items())
        if reason:
            dropped.append(Dropped(index, kernel.name, text, reason))
            continue
        _check_memory(kernel, shape, grid.dtypes, spec.path, f"grid[{index}].shape")
        for dtype, axes in itertools.product(grid.dtypes, axis_points):
            if _excluded(grid, {**shape, **axes, "dtype": dtype}):
                continue
            name = (f"{kernel.name}/{PEER_AXIS}={axes[PEER_AXIS]}" if PEER_AXIS in axes
                    else variant_name(kernel.name, axes, order))
            yield Cell(kernel=kernel.name, variant=name, shape=tuple(shape.items()),
                       dtype=dtype, threads=m.threads, seed=m.seed,
                       clip_value=m.clip_value, clip_norm=m.clip_norm)


def expand(spec: SweepSpec, registry: Registry | None = None) -> Expansion:
    """The union of the grids' cells, in order, without duplicates.

    Raises
    ------
    BadInput
        When a grid is left with no cell after ``check`` and ``exclude``, or a
        cell would need more memory than any budget allows (MAX_CELL_BYTES).
    """
    registry = registry or load(spec.plugins)
    cells: dict[str, Cell] = {}
    dropped: list[Dropped] = []
    for index, grid in enumerate(spec.grids):
        kernel = registry.kernel(grid.kernel)
        found = list(_grid_cells(spec, grid, index, kernel, dropped))
        if not found:
            raise BadInput("the grid has no cell left after the kernel's check and exclude",
                           where=spec.path, key=f"grid[{index}]")
        for cell in found:
            cells.setdefault(cell.cell_id, cell)
    return Expansion(cells=tuple(cells.values()), dropped=tuple(dropped))
