"""The static dashboard: files, escaping, history, and a real headless Chromium load."""

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks import synthetic
from gradsweep import store
from gradsweep.cli.app import main
from gradsweep.dashboards import render

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
HOSTILE_VARIANT = "rnn/buffers=<script>alert(1)</script>,wgrad=batched,clip=none"
SWEEPS = ("20260101T000000Z-a", "20260102T000000Z-b")
#: Plots per kernel: time vs FLOPs, time vs memory, roofline, history.
PLOTS_PER_KERNEL = 4
LOAD_TIMEOUT_S = 60


def hostile_row(rows: list[dict]) -> dict:
    first = next(r for r in rows if r["kernel"] == "rnn" and r["status"] == "ok")
    return {**first, "variant": HOSTILE_VARIANT, "cell_id": "hostile000000000"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two synthetic sweeps (with profiles, failures and markup) and their site."""
    root = tmp_path_factory.mktemp("dash")
    ds = store.resolve(root / "results")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i, sweep_id in enumerate(SWEEPS):
        rows = synthetic.write_sweep(ds, sweep_id, 400, seed=i, slowdown=1 + 0.1 * i,
                                     at=start + timedelta(days=i))
        store.write(ds, "cells", sweep_id, [hostile_row(rows)])
    index = render.write_site(ds, list(SWEEPS), root / "site")
    return ds, index


def figures_of(html: str) -> list[dict]:
    blob = re.search(r'<script id="gs-figures" type="application/json">(.*?)</script>', html,
                     re.S).group(1)
    return json.loads(blob)


def test_site_files_work_from_disk(site):
    _, index = site
    assert {p.name for p in index.parent.iterdir()} >= {"index.html", "plotly.min.js",
                                                        "style.css"}
    html = index.read_text()
    assert "http://" not in html.split("<main>")[0] and "https://" not in html.split("<main>")[0]
    kernels = len({f["id"].split("-", 1)[1] for f in figures_of(html)})
    assert len(figures_of(html)) == kernels * PLOTS_PER_KERNEL  # history with two sweeps


def test_every_name_and_message_is_escaped(site):
    html = site[1].read_text()
    assert "<script>alert" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # tables show it as text
    assert html.count("<script") == 3  # plotly.min.js, the JSON data, the loader
    names = [t["name"] for f in figures_of(html) for t in f["data"]]
    assert any("&lt;script&gt;" in n for n in names)  # plotly shows entities as text


def test_profiles_and_failures_are_shown(site):
    html = site[1].read_text()
    assert "line-profile hot spots" in html and "impls/rnn.py" in html
    assert "cells not ranked" in html and "timeout" in html


def test_cli_dashboard_defaults_to_latest_and_prints_the_path(site, tmp_path, capsys):
    ds, _ = site
    assert main(["dashboard", "-o", str(tmp_path / "one"), "--results", ds.root]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == (tmp_path / "one" / "index.html").resolve() and path.exists()
    assert "history-" not in path.read_text()  # one sweep: no history plots
    assert main(["dashboard", "nope", "--results", ds.root]) == 2


def _driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1400,2600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.browser
def test_the_page_renders_in_headless_chromium(site, tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) \
            or shutil.which(CHROMIUM) is None:
        pytest.skip("headless Chromium or chromedriver is not installed (make browser)")
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    index = site[1]
    expected = len(figures_of(index.read_text()))
    driver = _driver(tmp_path)
    try:
        driver.get(index.as_uri())
        WebDriverWait(driver, LOAD_TIMEOUT_S).until(
            lambda d: d.execute_script("return document.body.getAttribute('data-plots')"))
        plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
        rendered = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot svg.main-svg")
        assert len(plots) == expected and len({p.id for p in rendered}) >= expected
        for plot in plots:
            assert plot.find_elements(By.CSS_SELECTOR, "svg.main-svg")
        # markup in a variant name shows as text: no element was injected
        assert driver.execute_script("return document.scripts.length") == 3
        legend = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".legendtext"))
        assert "<script>alert(1)</script>" in legend
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    finally:
        driver.quit()


def test_history_steps_are_listed_and_escaped():
    import numpy as np
    import pandas as pd

    from gradsweep.dashboards.render import step_rows, steps_table

    rng = np.random.default_rng(0)
    medians = np.r_[np.full(8, 1e6), np.full(8, 2e6)] * (1 + 0.01 * rng.standard_normal(16))
    sweeps = [f"s{i:02d}" for i in range(16)]
    history = pd.DataFrame({"sweep_id": sweeps, "cell_id": "c1", "kernel": "rnn",
                            "variant": "rnn/<b>x</b>", "shape": "N=1", "dtype": "float64",
                            "status": "ok", "median_ns": medians})
    started = {s: f"2026-01-{i + 1:02d}T00:00:00" for i, s in enumerate(sweeps)}
    rows = step_rows(history, started)
    assert len(rows) == 1 and rows[0]["sweep"] == "s08" and 1.9 < rows[0]["ratio"] < 2.1
    html_text = steps_table(rows)
    assert "&lt;b&gt;x&lt;/b&gt;" in html_text and "<b>x</b>" not in html_text
    assert step_rows(history.iloc[:1], started) == []
