"""README.md stays true: its links resolve inside the repository, and the commands of its
tour that need no cluster and no long sweep run as shown (exit 0) on a small dataset."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
#: Subcommands the test runs as written (the rest need a cluster, git revisions, scalene,
#: or a long sweep; their own tests cover them).
RUNNABLE = {"list", "verify", "results", "report", "dashboard", "--help", "-h", "--version"}
#: A sweep small enough for the commands to have something to show.
SPEC = """
name = "readme"
[measure]
samples = 3
min_time_s = 0.0005
max_warmups = 1
repeats = 2
[[grid]]
kernel = "rnn"
variants = { buffers = "*", wgrad = "*", clip = ["none"] }
shape = { N = [4], T = [4], D = [4], H = [8] }
"""


def test_links_stay_inside_the_repository():
    for target in LINK.findall(README):
        assert "://" not in target and not target.startswith(".."), target
        assert (ROOT / target).exists(), f"README links to missing {target}"


def readme_commands() -> list[list[str]]:
    found = []
    for line in README.splitlines():
        if not line.startswith("$ gradsweep "):
            continue
        argv = shlex.split(line[2:].split(" #")[0])[1:]
        if argv and argv[0] in RUNNABLE and not {"delete", "history"} & set(argv):
            found.append(argv)
    return found


@pytest.mark.slow
def test_the_tours_commands_run_as_shown(tmp_path):
    commands = readme_commands()
    assert len(commands) >= 5, "the README's tour lost its examples"
    spec = tmp_path / "readme.toml"
    spec.write_text(SPEC)
    env = {"GRADSWEEP_RESULTS": str(tmp_path / "results"), "PATH": "/usr/bin:/bin"}

    def gradsweep(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gradsweep", *argv], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    made = gradsweep("run", str(spec), "--local")
    assert made.returncode == 0, made.stderr
    for argv in commands:
        argv = [a.replace("dashboards/site", str(tmp_path / "site")) for a in argv]
        done = gradsweep(*argv)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
