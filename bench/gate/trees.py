"""The two source trees the gate measures, made alike: git worktrees side by side.

Both sides run from a temporary directory: ``<tmp>/base`` is a detached git
worktree of the base revision, ``<tmp>/cand`` one of ``HEAD`` with the working
tree's uncommitted changes copied over (modified and untracked files, deletions),
so its git state records the candidate as HEAD plus a dirty flag. The two sides
then differ in nothing a process sees before it runs the kernels: the trees'
paths have equal length (a path's length moves everything after it in
``sys.path``, the environment and argv, hence the initial stack and heap), and
every module of both trees and of the harness is compiled into one private
bytecode cache before any side starts (``PYTHONPYCACHEPREFIX``), so no side
compiles at import, which leaves a different heap behind. (An earlier gate ran
the candidate from the working tree and found it faster in 33 of 45 A/A cells;
measured since, neither the path, the bytecode nor which side starts moved the
ratio by more than ~1%: docs/gate.md, "Are the two sides alike?".)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gradsweep.errors import BadInput

GIT_TIMEOUT_S = 120.0
#: Directory names of the two trees: equal length, so every path a side sees
#: (``sys.path``, ``__file__``, argv, the environment) has the same length.
TREE_NAMES = {"base": "base", "candidate": "cand"}
#: Seconds ``compileall`` may take over the trees and the harness.
COMPILE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Trees:
    """Where each side's code lives and where its bytecode is cached.

    Attributes
    ----------
    paths : dict[str, str]
        ``{"base": path, "candidate": path}``.
    pycache : str or None
        The shared ``PYTHONPYCACHEPREFIX`` (None: each tree's own ``__pycache__``).
    """

    paths: dict[str, str]
    pycache: str | None = None


def git(repo: str, *args: str) -> str:
    """stdout of ``git -C repo args``; BadInput naming the command when it fails."""
    try:
        done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadInput(f"git {' '.join(args)} failed: {exc}") from None
    if done.returncode:
        raise BadInput(f"git {' '.join(args)}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip()


def resolve_revision(repo: str, rev: str) -> str:
    """The commit ``rev`` names in ``repo``; BadInput when it names none."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except BadInput:
        raise BadInput(f"not a commit in {repo}: {rev!r}", key="--base") from None


def repository_root(where: str = ".") -> str:
    """The top of the git working tree containing ``where``; BadInput outside git."""
    try:
        return git(where, "rev-parse", "--show-toplevel")
    except BadInput:
        raise BadInput(f"{os.path.abspath(where)} is not inside a git repository; "
                       "gradsweep ci compares two revisions of one") from None


def map_pythonpath(entries: list[str], repo: str, tree: str) -> list[str]:
    """PYTHONPATH entries with those inside ``repo`` moved to the same place in ``tree``."""
    root = os.path.realpath(repo)
    mapped = []
    for entry in entries:
        real = os.path.realpath(entry) if entry else entry
        if real == root or real.startswith(root + os.sep):
            mapped.append(os.path.join(tree, os.path.relpath(real, root)))
        else:
            mapped.append(entry)
    return mapped


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\0") if line]


def overlay_working_tree(repo: str, tree: str) -> int:
    """Copy ``repo``'s uncommitted state onto ``tree`` (a checkout of its HEAD).

    Modified and untracked (not ignored) files are copied, deleted ones removed.

    Returns
    -------
    int
        Files copied or removed.
    """
    changed = _lines(git(repo, "ls-files", "-z", "--modified", "--others",
                         "--exclude-standard"))
    deleted = set(_lines(git(repo, "ls-files", "-z", "--deleted")))
    for name in changed:
        src, dest = os.path.join(repo, name), os.path.join(tree, name)
        if name in deleted or not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(src, dest)
    for name in deleted:
        if os.path.lexists(os.path.join(tree, name)):
            os.remove(os.path.join(tree, name))
    return len(changed) + len(deleted)


def compile_trees(dirs: list[str], pycache: str) -> None:
    """Byte-compile every module under ``dirs`` into the cache ``pycache``.

    Both sides then read their bytecode from the same kind of cache: no side
    compiles at import (which leaves a different heap behind).
    """
    env = {**os.environ, "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", r"/\.git/",
                    *dirs], env=env, capture_output=True, timeout=COMPILE_TIMEOUT_S)


def _remove_worktree(repo: str, path: str) -> None:
    subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", path],
                   capture_output=True, timeout=GIT_TIMEOUT_S)


@contextmanager
def gate_trees(repo: str, commit: str, harness: str) -> Iterator[Trees]:
    """Worktrees of ``commit`` (base) and of the working tree (candidate), compiled.

    Parameters
    ----------
    repo : str
        The repository (its working tree is the candidate).
    commit : str
        The base revision.
    harness : str
        The ``gradsweep`` package both sides load (compiled into the cache too).

    Yields
    ------
    Trees
        Removed (with their git worktree records) on exit.
    """
    parent = tempfile.mkdtemp(prefix="gradsweep-ci-")
    paths = {role: os.path.join(parent, name) for role, name in TREE_NAMES.items()}
    made: list[str] = []
    try:
        for role, rev in (("base", commit), ("candidate", "HEAD")):
            git(repo, "worktree", "add", "--detach", paths[role], rev)
            made.append(paths[role])
        overlay_working_tree(repo, paths["candidate"])
        pycache = os.path.join(parent, "pycache")
        compile_trees([harness, *paths.values()], pycache)
        yield Trees(paths, pycache)
    finally:
        for path in made:
            _remove_worktree(repo, path)
        shutil.rmtree(parent, ignore_errors=True)
        subprocess.run(["git", "-C", repo, "worktree", "prune"], capture_output=True,
                       timeout=GIT_TIMEOUT_S)
