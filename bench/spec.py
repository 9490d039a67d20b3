"""Sweep specs: load and validate the TOML format of DESIGN.md, expand to cells.

Every error is a :class:`~bench.errors.BadInput` naming the file and the key,
e.g. ``jobs/x.toml: grid[0].variants.buffers: unknown value 'lists' (expected
one of list, prealloc)``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from gradsweep.errors import BadInput
from gradsweep.impls.base import DTYPES, PEER_AXIS, Kernel, variant_name
from gradsweep.impls.registry import PluginError, Registry, load
from gradsweep.records import Cell, Dropped, Expansion, Grid, MeasureSettings, SweepSpec

#: Value meaning "every value of this axis".
ALL = "*"
TOP_KEYS = {"name", "plugins", "measure", "grid"}
GRID_KEYS = {"kernel", "dtype", "variants", "peers", "shape", "exclude"}
KNOWN_PEERS = ("torch",)



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
        raise BadInput(f"expected {_type_name(t)}, got {type(value).__name__} {value!r}",
                       where=where, key=key)
    return value


def _unknown(keys: Sequence[str], allowed: set[str], where: str, prefix: str) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise BadInput(f"unknown key (expected one of {', '.join(sorted(allowed))})",
                       where=where, key=f"{prefix}{extra[0]}")


def _as_list(value: Any, item: type, where: str, key: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BadInput("empty list", where=where, key=key)
    return [_expect(v, item, where, key) for v in values]


def _measure(table: Any, where: str) -> MeasureSettings:
    table = _expect(table, dict, where, "measure")
    defaults = MeasureSettings()
    allowed = {f.name: type(getattr(defaults, f.name)) for f in fields(MeasureSettings)}
    _unknown(list(table), set(allowed), where, "measure.")
    values = {}
    for key, value in table.items():
        if key == "profile_variants":
            values[key] = tuple(_as_list(value, str, where, f"measure.{key}"))
            continue
        t = allowed[key]
        values[key] = t(_expect(value, (t,) if t is not float else (float, int),
                                where, f"measure.{key}"))
    settings = MeasureSettings(**values)
    positive = ("threads", "min_time_s", "samples", "timeout_s", "memory_budget_mb",
                "clip_value", "clip_norm", "profile_seconds")
    for key in positive:
        if getattr(settings, key) <= 0:
            raise BadInput("must be positive", where=where, key=f"measure.{key}")
    if settings.max_warmups < 0:
        raise BadInput("must be 0 or more", where=where, key="measure.max_warmups")
    return settings


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
                raise BadInput(f"unknown value {v!r} (expected one of "
                               f"{', '.join(axis.values)})", where=where,
                               key=f"{key}.{axis.name}")
        chosen.append((axis.name, tuple(dict.fromkeys(values))))
    return tuple(chosen)


def _shape(kernel: Kernel, table: Any, where: str, key: str):
    table = _expect(table, dict, where, key)
    _unknown(list(table), {d.name for d in kernel.dims}, where, f"{key}.")
    chosen = []
    for dim in kernel.dims:
        values = _as_list(table.get(dim.name, dim.default), int, where, f"{key}.{dim.name}")
        for v in values:
            if v < dim.minimum:
                raise BadInput(f"{v} is below the minimum {dim.minimum}", where=where,
                               key=f"{key}.{dim.name}")
        chosen.append((dim.name, tuple(dict.fromkeys(values))))
    return tuple(chosen)


def _exclude(kernel: Kernel, raw: Any, where: str, key: str):
    allowed = {d.name for d in kernel.dims} | {a.name for a in kernel.axes} | {"dtype"}
    out = []
    for i, item in enumerate(_expect(raw, list, where, key)):
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
        raise BadInput(f"unknown kernel {name!r} (expected one of "
                       f"{', '.join(sorted(registry.kernels))})", where=where, key=f"{key}.kernel")
    kernel = registry.kernels[name]
    dtypes = _as_list(table.get("dtype", "float64"), str, where, f"{key}.dtype")
    for d in dtypes:
        if d not in DTYPES:
            raise BadInput(f"unknown dtype {d!r} (expected one of {', '.join(DTYPES)})",
                           where=where, key=f"{key}.dtype")
    peers = _as_list(table["peers"], str, where, f"{key}.peers") if "peers" in table else []
    for p in peers:
        if f"{name}/{PEER_AXIS}={p}" not in kernel.variants:
            raise BadInput(f"unknown peer {p!r} for {name} (expected one of "
                           f"{', '.join(KNOWN_PEERS)})", where=where, key=f"{key}.peers")
    return Grid(kernel=name, dtypes=tuple(dict.fromkeys(dtypes)),
                variants=_variants(kernel, table.get("variants", {}), where, f"{key}.variants"),
                peers=tuple(dict.fromkeys(peers)),
                shape=_shape(kernel, table.get("shape", {}), where, f"{key}.shape"),
                exclude=_exclude(kernel, table.get("exclude", []), where, f"{key}.exclude"))


def spec_hash(data: Mapping[str, Any]) -> str:
    """sha256 of the parsed spec's canonical JSON: comments and layout don't count."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse(text: str, where: str = "<spec>") -> SweepSpec:
    """Validate spec ``text``; ``where`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"malformed TOML: {exc}", where=where) from None
    _unknown(list(data), TOP_KEYS, where, "")
    name = _expect(data.get("name", Path(where).stem), str, where, "name")
    plugins = tuple(_as_list(data["plugins"], str, where, "plugins")) if data.get(
        "plugins") else ()
    try:
        registry = load(plugins)
    except PluginError as exc:
        raise BadInput(str(exc), where=where, key="plugins") from None
    measure = _measure(data.get("measure", {}), where)
    if "grid" not in data:
        raise BadInput("missing key (expected one or more [[grid]] tables)", where=where,
                       key="grid")
    grids = tuple(_grid(registry, g, where, i)
                  for i, g in enumerate(_expect(data["grid"], list, where, "grid")))
    if not grids:
        raise BadInput("no [[grid]] table", where=where, key="grid")
    spec = SweepSpec(name=name, path=where, plugins=plugins, measure=measure, grids=grids,
                     text=text, spec_hash=spec_hash(data))
    expand(spec, registry)  # a grid left with no cell is an error now, not at run time
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate the spec file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read spec: {exc.strerror}", where=str(path)) from None
    except UnicodeDecodeError:
        raise BadInput("not a UTF-8 text file", where=str(path)) from None
    return parse(text, str(path))


def _excluded(grid: Grid, point: Mapping[str, Any]) -> bool:
    return any(all(point.get(k) == v for k, v in rule) for rule in grid.exclude)


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
        When a grid is left with no cell after ``check`` and ``exclude``.
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
