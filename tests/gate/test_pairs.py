"""The gate's process pairs: turn order, pinning, paths, trees, two workers, `gradsweep ci`."""

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import PLUGINS

from gradsweep import regress, store, worker
from gradsweep.cli.app import main
from gradsweep.gate import pairs as ab
from gradsweep.gate import trees
from gradsweep.gate.sequential import Rule
from gradsweep.spec import parse

ROOT = Path(__file__).resolve().parents[2]

TINY = """
name = "ab-tiny"
plugins = ["gs_extra"]
[measure]
samples = 6
min_time_s = 0.001
max_warmups = 2
memory = false
[[grid]]
kernel = "rnn"
variants = { buffers = ["plugin", "wrong"], wgrad = ["batched"], clip = ["none"] }
shape = { N = [4], T = [4], D = [8], H = [8] }
"""


def test_rounds_alternate_which_side_goes_first():
    turns = [side for r in range(4) for side in ab.round_order(r, 0)]
    assert turns == [0, 1, 1, 0, 0, 1, 1, 0]  # A B B A
    assert [ab.round_order(r, 1) for r in range(2)] == [(1, 0), (0, 1)]


def test_pin_cores_takes_the_last_allowed():
    assert ab.pin_cores(1, {0, 1, 2, 3}) == (3,)
    assert ab.pin_cores(2, {0, 1}) == (0, 1)
    assert ab.pin_cores(8, {5}) == (5,)


def test_map_pythonpath_moves_entries_inside_the_repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tests" / "plugins").mkdir(parents=True)
    entries = [str(repo / "tests" / "plugins"), str(repo), "/usr/lib/other"]
    assert trees.map_pythonpath(entries, str(repo), "/tmp/base") == [
        "/tmp/base/tests/plugins", "/tmp/base/.", "/usr/lib/other"]


def test_run_ab_stores_pairs_as_blocks_of_both_roles(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(PLUGINS))
    spec = parse(TINY, "tiny.toml")
    ds = store.resolve(tmp_path / "r")
    looks = []
    out = ab.run_ab(spec, ds, trees.Trees({"base": str(ROOT), "candidate": str(ROOT)}),
                    str(ROOT), rule=Rule(min_pairs=2, max_pairs=2), on_pair=looks.append)
    sweeps = store.sweeps(ds).set_index("sweep_id")
    assert sweeps.loc[out.base_sweep, "role"] == "base"
    assert sweeps.loc[out.candidate_sweep, "role"] == "candidate"
    assert set(sweeps["ci_run"]) == {out.ci_run} and set(sweeps["status"]) == {"finished"}
    assert [look.pair for look in looks] == [0, 1] and out.pairs == 2
    rounds = worker.rounds_per_block(spec.measure)
    for sweep in (out.base_sweep, out.candidate_sweep):
        cells = store.read(ds, "cells", [sweep]).set_index("buffers")
        ok = cells.loc["plugin"]
        assert list(ok["sample_block"]) == [0] * rounds + [1] * rounds
        assert list(ok["sample_round"]) == [*range(rounds)] * 2
        assert len(ok["cpu_ns"]) == len(ok["wall_ns"]) == 2 * rounds == len(ok["samples_ns"])
        assert ok["clock"] == "cpu" and ok["blocks"] == 2 and len(set(ok["pids"])) == 2
        assert ok["loops"] >= 1 and ok["host"]
        assert cells.loc["wrong", "status"] == "incorrect"
    comp = regress.compare_sweeps(ds, out.base_sweep, ds, out.candidate_sweep)
    (cell,) = comp.cells
    assert cell.variant == "rnn/buffers=plugin,wgrad=batched,clip=none"
    assert cell.method == regress.RANDOM_EFFECTS and cell.blocks == 2
    assert cell.verdict == out.verdicts[cell.cell_id]
    assert comp.uncompared[0].candidate_status == "incorrect"


def test_worker_imports_impls_from_its_tree_and_harness_from_ours(tmp_path):
    w = ab.Worker("base", str(ROOT), str(ROOT / "bench"), ab.pin_cores(1), [])
    w.start()
    try:
        assert w.info["impls"].startswith(str(ROOT))
        assert w.info["cores"] == list(ab.pin_cores(1))
    finally:
        w.close()
    assert w.proc is None


def test_ci_outside_git_and_bad_revision_are_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["ci", "--base", "HEAD"]) == 2
    subprocess.run(["git", "init", "-q"], check=True)
    assert main(["ci", "--base", "no-such-rev"]) == 2
    assert "not a commit" in capsys.readouterr().err
    assert main(["ci", "--base", "HEAD", "--clock", "sundial"]) == 2
    assert "unknown clock" in capsys.readouterr().err


def test_gate_trees_are_worktrees_of_equal_length_with_the_working_changes(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    for name in ("kept.py", "changed.py", "gone.py"):
        (repo / "pkg" / name).write_text("X = 1\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "base"], cwd=repo, check=True)
    (repo / "pkg" / "changed.py").write_text("X = 2\n")
    (repo / "pkg" / "new.py").write_text("X = 3\n")
    (repo / "pkg" / "gone.py").unlink()
    commit = trees.resolve_revision(str(repo), "HEAD")
    with trees.gate_trees(str(repo), commit, str(repo / "pkg")) as made:
        base, cand = made.paths["base"], made.paths["candidate"]
        assert len(base) == len(cand) and os.path.dirname(base) == os.path.dirname(cand)
        assert (Path(base) / "pkg" / "changed.py").read_text() == "X = 1\n"
        assert (Path(cand) / "pkg" / "changed.py").read_text() == "X = 2\n"
        assert (Path(cand) / "pkg" / "new.py").exists()
        assert not (Path(cand) / "pkg" / "gone.py").exists()
        assert (Path(base) / "pkg" / "gone.py").exists()
        assert any(Path(made.pycache).rglob("*.pyc"))
    assert not Path(base).exists() and not Path(cand).exists()
    listed = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True,
                            text=True).stdout
    assert len(listed.strip().splitlines()) == 1


# --------------------------------------------------------------------------- end to end

E2E_SPEC = """
name = "e2e"
plugins = ["gs_slow"]
[measure]
samples = 60
min_time_s = 0.002
max_warmups = 3
memory = false
[[grid]]
kernel = "rnn"
variants = { buffers = ["slowed", "prealloc"], wgrad = ["batched"], clip = ["none"] }
shape = { N = [16], T = [16], D = [32], H = [64] }
"""

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def copy_project(dest: Path) -> None:
    """The project's working tree (tracked and untracked, not ignored) into ``dest``."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git repository copy of the project, committed once as the base."""
    repo = tmp_path_factory.mktemp("project")
    copy_project(repo)
    (repo / "e2e.toml").write_text(E2E_SPEC)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "base"], cwd=repo, check=True)
    return repo


def set_constant(path: Path, name: str, value: str) -> None:
    text = re.sub(rf"^{name} = .*$", f"{name} = {value}", path.read_text(), flags=re.M)
    path.write_text(text)


def link_tree(repo: Path) -> Path:
    """``repo/build/lib-own/gradsweep``: the copy's package as the ``gradsweep`` import name
    (symlinks to its bench/*, impls and dashboards)."""
    out = repo / "build" / "lib-own" / "gradsweep"
    if not out.exists():
        out.mkdir(parents=True)
        for entry in (repo / "bench").iterdir():
            (out / entry.name).symlink_to(entry)
        for name in ("impls", "dashboards"):
            (out / name).symlink_to(repo / name)
    return out.parent


def run_ci(repo: Path, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(link_tree(repo)), str(repo / "tests" / "plugins")])
    environ = {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}
    environ.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.run([sys.executable, "-m", "gradsweep", "ci", *args], cwd=repo, env=environ,
                          capture_output=True, text=True, timeout=300)


SMALL_SPEC = """
name = "small"
plugins = ["gs_slow"]
[measure]
repeats = 2
samples = 6
min_time_s = 0.001
max_warmups = 2
memory = false
[[grid]]
kernel = "rnn"
variants = { buffers = ["slowed"], wgrad = ["batched"], clip = ["none"] }
shape = { N = [4], T = [4], D = [8], H = [8] }
"""


def test_a_small_ci_run_end_to_end_in_process(project, tmp_path, monkeypatch):
    from io import StringIO

    from rich.console import Console

    from gradsweep.cli.gate import ci_command

    (tmp_path / "small.toml").write_text(SMALL_SPEC)
    monkeypatch.chdir(project)
    monkeypatch.setenv("PYTHONPATH", str(project / "tests" / "plugins"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    md, printed = tmp_path / "small.md", StringIO()
    code = ci_command("HEAD", spec=str(tmp_path / "small.toml"), results=str(tmp_path / "r"),
                      markdown=str(md), budget_s=4.0, console=Console(file=printed, width=200))
    out = printed.getvalue()
    assert code == 0, out
    assert "pair 1: 1 of 1 cell(s)" in out and "pair 2:" in out
    assert "process pairs (random effects)" in out and "threshold 3%" in out
    line = next(x for x in md.read_text().splitlines() if "buffers=slowed" in x)
    verdict, pairs = line.split("|")[1].strip(), int(line.split("|")[8])
    assert verdict in ("unchanged", ":white_circle: inconclusive") and pairs >= 2
    assert len(subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True,
                              text=True).stdout.strip().splitlines()) == 1


@pytest.mark.slow
def test_ci_flags_a_two_fold_slowdown_in_the_working_tree(project):
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True,
                          text=True, check=True).stdout.strip()
    set_constant(project / "tests" / "plugins" / "gs_slow.py", "REPEATS", "1")
    md, xml = project / "ci.md", project / "ci.xml"
    try:
        done = run_ci(project, "--base", base, "--spec", "e2e.toml", "--results",
                      str(project / "results"), "--markdown", str(md), "--junit", str(xml))
    finally:
        subprocess.run(["git", "checkout", "--", "tests/plugins/gs_slow.py"], cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "regression" in done.stdout
    text = md.read_text()
    slowed = next(line for line in text.splitlines() if "buffers=slowed" in line)
    assert "regression" in slowed and "paired" in text
    ratio = float(re.search(r"\| ([0-9.]+)x \[", slowed).group(1))
    assert 1.4 < ratio < 3.0
    failures = ET.parse(xml).getroot().findall(".//failure")
    assert len(failures) >= 1
    assert any("buffers=slowed" in f.text for f in failures)
    ds = store.resolve(project / "results")
    sweeps = store.sweeps(ds).set_index("role")
    assert sweeps.loc["base", "git_commit"] == base
    assert sweeps.loc["base", "ci_run"] == sweeps.loc["candidate", "ci_run"]
    cells = store.read(ds, "cells")
    assert set(cells["git_commit"]) == {base}  # the candidate is the (dirty) working tree
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True,
                               text=True).stdout
    assert len(worktrees.strip().splitlines()) == 1  # the temporary worktree is gone


def _pre_gradsweep_revision() -> str | None:
    """The last commit whose kernels import ``impls.base`` (before the ``gradsweep`` name)."""
    done = subprocess.run(["git", "-C", str(ROOT), "rev-list", "-1", "HEAD", "--",
                           "bench/abworker.py"], capture_output=True, text=True)
    rev = done.stdout.strip()
    if done.returncode or not rev:
        return None
    parent = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", rev + "^"],
                            capture_output=True, text=True)
    return parent.stdout.strip() or None


@pytest.mark.slow
def test_a_base_revision_from_before_the_gradsweep_name_is_measured(tmp_path):
    """``ci --base REV`` with REV's kernels importing ``impls.base``: both sides time a cell."""
    rev = _pre_gradsweep_revision()
    if rev is None:
        pytest.skip("the repository's history does not reach the old layout")
    old = tmp_path / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), rev],
                   check=True)
    try:
        assert "from impls.base import" in (old / "impls" / "rnn.py").read_text()
        harness = str(Path(ab.__file__).resolve().parents[1])
        cores = ab.pin_cores(1)
        workers = (ab.Worker("base", str(old), harness, cores, []),
                   ab.Worker("candidate", str(ROOT), harness, cores, []))
        for w in workers:
            w.start()
        try:
            assert workers[0].info["impls"].startswith(str(old))
            cell = parse(TINY.replace('"plugin", "wrong"', '"prealloc"').replace(
                'plugins = ["gs_extra"]', ""), "t.toml")
            from gradsweep.spec import expand

            (only,) = expand(cell).cells
            base, cand = ab.measure_cell(only, workers, cell.measure, ())
        finally:
            for w in workers:
                w.close()
        rounds = worker.rounds_per_block(cell.measure)
        assert base.status == cand.status == "ok" and len(base.samples_ns) == rounds
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)])
