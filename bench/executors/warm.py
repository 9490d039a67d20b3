"""Imported by a worker's fork server, and nowhere else: imports the plugins and peer
libraries named in ``$GRADSWEEP_FORK_PRELOAD`` (one failing to import is left to each
block to report: the server must live) and fills the per-process caches that every
block's process would otherwise fill again (the environment record with its git state,
the registry of the built-in kernels and entry points), about 40 ms of each fork's start
(docs/noise.md, "Blocks in forked processes"). Importing is the only thing a fork server
does before it forks."""

import importlib
import os

from gradsweep import env
from gradsweep.executors.node import PRELOAD_ENV
from gradsweep.impls.registry import load

NAMES = tuple(n for n in os.environ.get(PRELOAD_ENV, "").split(",") if n)
for name in NAMES:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001, S112 - the blocks report it, one row per member
        continue
env.collect()
try:
    load()
except Exception:  # noqa: BLE001, S110 - a broken entry point: each block reports it
    pass
