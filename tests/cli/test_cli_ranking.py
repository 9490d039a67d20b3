"""run's final ranking and report in a terminal: at 80, 120 and 200 columns no variant axis
and no number is split across lines; every ratio carries its interval."""

import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from gradsweep import rank, report
from gradsweep.cli import views
from gradsweep.impls.registry import load

VARIANTS = [f"lstm/buffers={b},wgrad={w},clip=none" for b in ("list", "prealloc")
            for w in ("step", "batched")] + ["lstm/peer=torch"]
BLOCKS, ROUNDS = 3, 5
NUMBER = re.compile(r"\d+\.\d+")


def blocked_cells(seed: int = 0) -> pd.DataFrame:
    """One lstm group measured in blocks and rounds, members 1.0 .. 1.6 ms apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, variant in enumerate(VARIANTS):
        t = 1e6 * (1 + 0.15 * i) * np.exp(rng.normal(0, 0.02, (BLOCKS, ROUNDS)))
        axes = dict(p.split("=") for p in variant.split("/")[1].split(","))
        rows.append({"cell_id": f"{i:016x}", "kernel": "lstm", "variant": variant,
                     "shape": "N=16,T=32,D=32,H=64", "dtype": "float64", "status": "ok",
                     "samples_ns": list(t.ravel()), "median_ns": float(np.median(t)),
                     "ci_low_ns": float(t.min()), "ci_high_ns": float(t.max()),
                     "sample_block": [b for b in range(BLOCKS) for _ in range(ROUNDS)],
                     "sample_round": list(range(ROUNDS)) * BLOCKS, "peak_bytes": 1e6 + i,
                     "flops": 10**7, "gflops": 1.0, "peak_fraction": 0.5, "warnings": [],
                     **axes})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def ranked() -> pd.DataFrame:
    return rank.rank(blocked_cells(), load(()))


def rendered(draw, width: int) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    draw(console)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_run_ranking_never_splits_a_name_or_a_number(ranked, width):
    out = rendered(lambda c: views.print_ranking(c, ranked, "quick (s1)"), width)
    assert all(len(line) <= width for line in out.splitlines())
    tokens = {t for v in VARIANTS for t in v.split("/")[1].split(",") if "none" not in t}
    lines = out.splitlines()
    for token in tokens:
        assert any(token in line for line in lines), (token, out)
    shown = {m.group() for line in lines for m in NUMBER.finditer(line)}
    for r in ranked.itertuples():
        if r.ratio_fastest != 1.0:
            assert f"{r.ratio_fastest:.2f}" in shown and f"{r.ratio_low:.2f}" in shown


def test_every_ratio_has_its_interval_and_the_answer_comes_first(ranked):
    out = rendered(lambda c: views.print_ranking(c, ranked, "quick (s1)"), 200)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[1].startswith("lstm N=16,T=32,D=32,H=64 float64: fastest:")
    slower = [line for line in lines if "slower [" in line]
    assert len(slower) >= len(VARIANTS) - 1  # each non-fastest member vs the fastest
    rows = [line for line in lines if re.match(r"\s+\d+\s", line)]
    assert len(rows) == len(VARIANTS) and not any("clip=none" in r for r in rows)  # axes
    # that vary only


def test_relative_uses_one_convention():
    assert report.relative(1 / 1.37, 1 / 1.44, 1 / 1.31) == "1.37x faster [1.31, 1.44]"
    assert report.relative(1.05, 1.01, 1.09) == "1.05x slower [1.01, 1.09]"
    assert report.relative(1.0) == "same" and report.relative(None) == ""
    assert report.relative(2.0) == "2.00x slower"  # no interval known (unpaired)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_report_never_splits_a_name_or_a_number(ranked, width):
    rep = report.build(blocked_cells(), load(()), sweep_id="s1", name="quick",
                       status="finished")
    out = rendered(lambda c: views.print_report(c, rep), width)
    lines = out.splitlines()
    tokens = {t for v in VARIANTS for t in v.split("/")[1].split(",") if "none" not in t}
    for token in tokens:
        assert any(token in line for line in lines), (token, out)
    shown = {m.group() for line in lines for m in NUMBER.finditer(line)}
    for r in ranked.itertuples():
        if r.ratio_fastest != 1.0:
            assert f"{r.ratio_fastest:.2f}" in shown


@pytest.mark.parametrize("width", [80, 120, 200])
def test_results_show_never_splits_a_name_or_a_number(width):
    cells = blocked_cells().assign(ci_low_ns=1.23e6, ci_high_ns=2.34e6, gflops=1.5,
                                   cell_id=lambda f: f["cell_id"], error=None,
                                   warnings=[["high-load: 3 > 2 cores"]] * len(VARIANTS))
    out = rendered(lambda c: views.print_cells(c, cells, "s1: 5 cells"), width)
    lines = out.splitlines()
    for token in {t for v in VARIANTS for t in v.split("/")[1].split(",")}:
        assert any(token in line for line in lines), (token, out)
    for number in ("1.23–2.34", "1.5"):
        assert any(number in line for line in lines), (number, out)
    assert sum("high-load" in line for line in lines) == 0  # said once, in words
    assert "machine was loaded" in out.replace("\n", " ")
