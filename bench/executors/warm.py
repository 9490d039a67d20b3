"""Imported by a worker's fork server, and nowhere else: fills the per-process caches that
every block's process would otherwise fill again (the environment record with its git
state, the kernel registry), about 40 ms of each fork's start (docs/noise.md, "Blocks in
forked processes"). Importing is the only thing a fork server does before it forks."""

from gradsweep import env
from gradsweep.impls.registry import load

env.collect()
load()
