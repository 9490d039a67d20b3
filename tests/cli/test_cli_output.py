"""What the command line prints: user text escaped, results on stdout, the rest on stderr."""

import logging

import pandas as pd
import pytest

from gradsweep import store
from gradsweep.cli import app as cli
from gradsweep.cli import views
from gradsweep.cli.app import main

T0 = pd.Timestamp("2026-01-01T00:00:00", tz="UTC")
#: A name that would clear the screen, recolour the terminal and reorder the line.
EVIL = "\x1b[2J[red]x\u202e\n"
RNN = "rnn/buffers=list,wgrad=step,clip=none"
TINY_SPEC = """
name = "tiny"
[measure]
samples = 3
min_time_s = 0.0005
max_warmups = 2
[[grid]]
kernel = "rnn"
shape = { N = 2, T = 2, D = 2, H = 2 }
variants = { buffers = ["list"], wgrad = ["step"], clip = ["none"] }
"""
#: A deconv grid with one shape the kernel refuses (output_padding must be < stride).
DROPPING_SPEC = """
[[grid]]
kernel = "deconv2d"
shape = { N = 1, Hin = 2, Win = 2, Cin = 1, Cout = 1, k = 1, stride = [1, 2], output_padding = 1 }
"""


def evil_dataset(results) -> store.Dataset:
    """One sweep whose name, variant, error and warning hold escapes and markup."""
    ds = store.resolve(results)
    store.write(ds, "sweeps", "s1", [{"name": EVIL, "event": "finished", "status": "finished",
                                      "at": T0, "git_commit": "\x1b[31mabc"}])
    dims = {"N": 16, "T": 32, "D": 32, "H": 64}
    store.write(ds, "cells", "s1", [{
        "cell_id": "0123456789abcdef", "kernel": "rnn", "variant": f"rnn/{EVIL}",
        "dtype": "float64", "status": "error", "error": EVIL, "warnings": [f"noisy{EVIL}: x"],
        "dims": list(dims.items()), "shape": ",".join(f"{k}={v}" for k, v in dims.items()),
        "recorded_at": T0, **dims}])
    return ds


@pytest.mark.parametrize("argv", [["results", "list"], ["results", "show"],
                                  ["results", "sql", "select name, 1 from sweeps"]])
def test_tables_escape_control_characters_and_markup(argv, results, capsys, monkeypatch):
    evil_dataset(results)
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: each value on one line
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2J[red]x\\u202e\\n" in out  # escaped, and markup shown as text


def test_results_show_prints_the_short_cell_id(results, capsys):
    evil_dataset(results)
    assert main(["results", "show", "latest"]) == 0
    out = capsys.readouterr().out
    assert "01234567" in out and "0123456789abcdef" not in out


def test_text_helper():
    assert views.text(None) == "" and views.text(float("nan")) == "" and views.text(pd.NaT) == ""
    assert views.text(pd.NA) == ""
    assert views.text("[b]\x07") == "\\[b]\\x07"
    assert views.plain(3) == "3"


def test_console_width_honours_columns_when_piped():
    assert cli.console_width(True, {"COLUMNS": "50"}) is None  # rich reads the terminal
    assert cli.console_width(False, {"COLUMNS": "100"}) == 100
    assert cli.console_width(False, {}) == cli.PIPE_WIDTH
    assert cli.console_width(False, {"COLUMNS": "wide"}) == cli.PIPE_WIDTH


@pytest.mark.parametrize("columns", [60, 200])
def test_piped_tables_fit_columns(columns, results, capsys, monkeypatch):
    evil_dataset(results)
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["results", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= columns
    assert columns == 60 or max(map(len, lines)) > cli.PIPE_WIDTH // 2


def test_job_logs_keep_lines_and_drop_colours():
    log = "\x1b[36m(pid=1)\x1b[0m ok\r\nsweep \x1b]0;title\x07\tdone\n"
    assert cli.printable_log(log) == "(pid=1) ok\nsweep \\x1b]0;title\\x07\\tdone\n"


def test_dry_run_table_on_stdout_dropped_shapes_on_stderr(write_spec, results, capsys):
    assert main(["run", str(write_spec(DROPPING_SPEC)), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "dropped: grid[0] deconv2d" in captured.err and "stride=1" in captured.err
    assert "dropped:" not in captured.out and "deconv2d/method=" in captured.out
    assert "1 dropped" in captured.out  # the summary is the dry run's result


def test_local_run_progress_on_stderr_results_on_stdout(write_spec, results, capsys):
    assert main(["run", str(write_spec(TINY_SPEC)), "--local"]) == 0
    captured = capsys.readouterr()
    sweep_id = captured.out.splitlines()[0]  # the first line of results, for scripts
    assert captured.out.splitlines()[-1].startswith(f"sweep {sweep_id}: 1 ok")
    assert "[1/1] ok" in captured.err and "cells/s" in captured.err
    assert "[1/1]" not in captured.out and "buffers=list" in captured.out  # the ranking


def test_ray_token_notice_is_silenced_and_errors_still_show(monkeypatch):
    setup = pytest.importorskip("ray._private.authentication.authentication_token_setup")
    assert setup.logger.name == cli.RAY_TOKEN_LOGGER
    monkeypatch.setattr(setup.logger, "level", setup.logger.level)  # restored afterwards
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    setup.logger.addHandler(handler)
    monkeypatch.setattr(setup.logger, "propagate", False)
    try:
        cli.quiet_ray_token_notice()
        setup._warn_token_auth_enabled()
        assert seen == []
        setup.logger.error("a real error")
        assert [r.getMessage() for r in seen] == ["a real error"]
    finally:
        setup.logger.removeHandler(handler)
