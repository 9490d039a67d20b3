"""The command line's frame: usage errors are one line and exit 2, help is plain and readable."""

import re
import subprocess
import sys

import pytest

import gradsweep
from gradsweep.cli.app import app, main

#: Every command path, for the help checks.
COMMANDS = [["list"], ["verify"], ["run"], ["submit"], ["jobs"], ["status"], ["logs"],
            ["cancel"], ["report"], ["dashboard"], ["profile"], ["compare"], ["ci"],
            ["results", "list"], ["results", "show"], ["results", "sql"],
            ["results", "history"], ["results", "compact"], ["results", "delete"]]
#: typer's own type labels, which help must not show.
TYPE_LABEL = re.compile(r"<[a-z\[\]|, ]+>")


def run_main(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv, names", [
    (["runn", "x.toml"], ["'runn'", "did you mean run?", "commands: list, verify, run",
                          "see 'gradsweep --help'"]),
    (["results", "shwo"], ["'shwo'", "did you mean show?"]),
    (["run"], ["missing argument SPEC", "see 'gradsweep run --help'"]),
    (["ci"], ["missing option --base REV"]),
    (["run", "x.toml", "--workers", "0"], ["--workers", "got 0", "an integer in [1, 4096]"]),
    (["run", "x.toml", "--workers", "abc"], ["--workers", "got 'abc'", "an integer in [1, 4096]"]),
    (["run", "x.toml", "--workers=2.5"], ["--workers", "got '2.5'", "an integer"]),
    (["compare", "a", "b", "--alpha", "x"], ["--alpha", "got 'x'", "a number in (0, 0.5]"]),
    (["results", "list", "--format", "xml"], ["--format", "got 'xml'",
                                              "one of table, csv, json"]),
    (["report", "--format", "html"], ["--format", "got 'html'", "one of rich, md, csv"]),
    (["results", "list", "--bogus"], ["no option '--bogus'", "--format", "--results"]),
    (["run", "x.toml", "--worker", "2"], ["'--worker'", "did you mean --workers?"]),
    (["run", "x.toml", "--workers"], ["--workers", "requires an argument"]),
    (["run", "x.toml", "--local=yes"], ["--local", "does not take a value"]),
    (["results", "sql", "select 1", "extra"], ["unexpected extra argument", "extra"]),
])
def test_usage_errors_are_one_line_exit_2(argv, names, capsys):
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    line = err.strip()
    assert line.startswith("gradsweep: error: ")
    assert "╭" not in err and "Usage:" not in err and "Traceback" not in err
    for name in names:
        assert name in line, (name, line)


def test_usage_error_escapes_control_characters(capsys):
    code, _, err = run_main(["run", "x.toml", "--workers", "\x1b[31m"], capsys)
    assert code == 2 and "\x1b" not in err and "\\x1b[31m" in err


@pytest.mark.parametrize("argv", [["runn"], ["run", "spec.toml", "--workers", "0"]])
def test_real_command_prints_one_line(argv):
    """Through ``python -m gradsweep``, with rich installed: no box, one line, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "gradsweep", *argv], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_version_and_short_help(capsys):
    assert run_main(["--version"], capsys) == (0, f"gradsweep {gradsweep.__version__}\n", "")
    code, out, _ = run_main(["-h"], capsys)
    assert code == 0 and out.startswith("Usage: gradsweep [OPTIONS] COMMAND [ARGS]...")
    assert run_main(["--help"], capsys)[1] == out
    code, out, _ = run_main(["results", "show", "-h"], capsys)
    assert code == 0 and "Usage: gradsweep results show [OPTIONS] [SWEEP]" in out


def test_no_arguments_prints_help(capsys):
    code, out, err = run_main([], capsys)
    assert code == 0 and err == "" and "Commands:" in out and "results" in out


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_examples_and_readable_labels(path, capsys):
    code, out, _ = run_main([*path, "--help"], capsys)
    assert code == 0
    assert "Examples:" in out and f"gradsweep {' '.join(path)}" in out.split("Examples:")[1]
    assert not TYPE_LABEL.search(out), TYPE_LABEL.search(out)
    assert "{" not in out.splitlines()[0]  # usage line: SPEC, [SWEEP], not {spec}


@pytest.mark.parametrize("path", [["results", "list"], ["results", "sql"]])
def test_help_names_only_options_the_command_has(path, capsys):
    out = run_main([*path, "--help"], capsys)[1]
    assert "parquet" not in out and "-o" not in out and "--output" not in out


def test_every_option_label_is_a_word_or_choices(capsys):
    """``--workers N``, ``--format table|csv|json``: no ``<int>`` and no ``TEXT...``."""
    labels = set()
    for path in COMMANDS:
        out = run_main([*path, "--help"], capsys)[1]
        labels |= set(re.findall(r"^\s+(?:-\w, )?--[\w-]+ ([^\s/]\S*)", out, re.MULTILINE))
    assert labels and all(re.fullmatch(r"[A-Z:|]+|[a-z0-9|]+", label) for label in labels), \
        labels


def test_app_is_the_console_script_entry_point():
    assert app.info.no_args_is_help and main.__module__ == "gradsweep.cli.app"
