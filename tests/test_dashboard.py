"""The static dashboard: figures, files, escaping, history, and a real headless Chromium load."""

import json
import math
import re
import shutil
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import synthetic
from gradsweep import report as rp
from gradsweep import store
from gradsweep.cli.app import main
from gradsweep.dashboards import figures as fg
from gradsweep.dashboards import render
from gradsweep.impls.registry import load

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
HOSTILE_VARIANT = "rnn/buffers=<script>alert(1)</script>,wgrad=batched,clip=none"
SWEEPS = ("20260101T000000Z-a", "20260102T000000Z-b")
#: Plots per kernel with several shapes: time / fastest and time vs FLOPs, time vs memory,
#: roofline, history.
PLOTS_PER_KERNEL = 5
#: Plots per kernel with one shape and one sweep: ranked bars, time vs memory, roofline bars.
PLOTS_SINGLE_SHAPE = 3
SINGLE = "20260101T000000Z-one"
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


@pytest.fixture(scope="module")
def single_site(tmp_path_factory):
    """One synthetic sweep with one shape per kernel (both dtypes, markup too) and its site."""
    root = tmp_path_factory.mktemp("dash-one")
    ds = store.resolve(root / "results")
    per_shape = 2 * sum(len(k.variants) for k in load().kernels.values())
    rows = synthetic.write_sweep(ds, SINGLE, per_shape, profiles=False)
    store.write(ds, "cells", SINGLE, [hostile_row(rows)])
    return ds, render.write_site(ds, [SINGLE], root / "site")


@pytest.fixture(scope="module")
def rnn_report():
    """The report of the rnn cells of a synthetic sweep: 13 variants, 3 shapes, 2 dtypes."""
    rows = [r for r in synthetic.cells(400) if r["kernel"] == "rnn"]
    return rp.build(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def rnn_ranked(rnn_report):
    return render.ranked_frame(rnn_report)


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
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network
    kernels = len({f["id"].split("-", 1)[1] for f in figures_of(html)})
    assert len(figures_of(html)) == kernels * PLOTS_PER_KERNEL  # history with two sweeps
    assert "<details" not in html  # the rankings are open


def test_a_site_of_single_shapes_shows_bars(single_site):
    figs = figures_of(single_site[1].read_text())
    kernels = len({f["id"].split("-", 1)[1] for f in figs})
    assert len(figs) == kernels * PLOTS_SINGLE_SHAPE
    assert all(t["type"] == "bar" for f in figs if not f["id"].startswith("memory-")
               for t in f["data"])


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


#: Per plot, read in the page: each trace's decoded name, legend group, resolved colour
#: (``gd._fullData``, as rgb) and count of error bar values; each legend entry's text and the
#: colours its symbol is drawn in; and the error bar paths drawn.
PLOT_PROBE = """
const probe = document.createElement('span');
document.body.appendChild(probe);
const rgb = c => { probe.style.color = ''; probe.style.color = c;
                   return getComputedStyle(probe).color; };
const decode = s => { const t = document.createElement('textarea'); t.innerHTML = s;
                      return t.value; };
const painted = p => { const st = getComputedStyle(p);
                       return st.fill !== 'none' ? st.fill : st.stroke; };
return [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
  id: gd.id,
  traces: gd._fullData.map(t => {
    const err = [t.error_x, t.error_y].find(e => e && e.visible) || {array: []};
    return {name: decode(t.name), group: t.legendgroup, show: t.showlegend,
            color: rgb(t.marker.color), errors: err.array.filter(v => v != null).length};
  }),
  legend: [...gd.querySelectorAll('.legend .traces')].map(item => ({
    text: item.querySelector('.legendtext').textContent,
    colors: [...new Set([...item.querySelectorAll('.legendpoints path, .legendlines path')]
                        .map(painted))]})),
  errorbars: gd.querySelectorAll('g.errorbar path').length,
}));
"""


def check_legends_and_error_bars(plots: list[dict]) -> None:
    """One legend entry per variant, drawn in its traces' one colour; error bars drawn."""
    for plot in plots:
        names = [entry["text"] for entry in plot["legend"]]
        assert len(names) == len(set(names)), plot["id"]
        assert set(names) == {t["name"] for t in plot["traces"] if t["show"]}, plot["id"]
        colours = defaultdict(set)
        for t in plot["traces"]:
            colours[t["name"]].add(t["color"])
        for entry in plot["legend"]:
            assert colours[entry["text"]] == set(entry["colors"]), (plot["id"], entry)
        variants = [c for name, cs in colours.items() if name != "Pareto front" for c in cs]
        assert len(variants) == len(set(variants)), plot["id"]  # one distinct colour each
        assert plot["errorbars"] > 0, plot["id"]
        assert all(t["errors"] > 0 for t in plot["traces"] if t["name"] != "Pareto front")


@pytest.mark.browser
@pytest.mark.parametrize("which, screenshot", [("site", "dashboard.png"),
                                               ("single_site", "dashboard-single-shape.png")])
def test_the_page_renders_in_headless_chromium(which, screenshot, request, tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) \
            or shutil.which(CHROMIUM) is None:
        pytest.skip("headless Chromium or chromedriver is not installed (make browser)")
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    index = request.getfixturevalue(which)[1]
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
        check_legends_and_error_bars(driver.execute_script(PLOT_PROBE))
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
        ARTIFACTS.mkdir(exist_ok=True)
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView()",
                              fg.slug("rnn"))
        driver.save_screenshot(str(ARTIFACTS / screenshot))
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


# ---- figure construction ------------------------------------------------------------------

def tiny() -> pd.DataFrame:
    """Two variants (b twice a's time), two dtypes, two shapes; intervals -10% / +20%."""
    rows = []
    for shape, flops in (("N=1", 1e6), ("N=2", 2e6)):
        for dtype in ("float32", "float64"):
            for variant, factor in (("k/a", 1.0), ("k/b", 2.0)):
                m = factor * flops
                rows.append({"kernel": "k", "shape": shape, "dtype": dtype, "variant": variant,
                             "median_ns": m, "ci_low_ns": 0.9 * m, "ci_high_ns": 1.2 * m,
                             "flops": flops, "peak_bytes": 100 * factor,
                             "pareto": factor == 1.0, "peak_fraction": 0.1 / factor})
    return pd.DataFrame(rows)


def variant_traces(fig: dict) -> dict[str, list[dict]]:
    """A figure's traces by legend group, without the Pareto-front markers."""
    groups = defaultdict(list)
    for t in fig["data"]:
        if t.get("legendgroup") != fg.PARETO_GROUP:
            groups[t["legendgroup"]].append(t)
    return groups


def error_of(trace: dict) -> tuple[dict, list]:
    """A trace's error bar and the values it brackets (x for horizontal bars)."""
    return (trace["error_x"], trace["x"]) if trace["type"] == "bar" \
        else (trace["error_y"], trace["y"])


def test_ratios_fall_back_to_the_median_interval_over_the_fastest():
    frame = tiny()
    r = fg.ratios(frame)
    b = frame["variant"] == "k/b"
    assert np.allclose(r.loc[b, ["ratio", "low", "high"]], [2.0, 1.8, 2.4])
    assert np.allclose(r.loc[~b, ["ratio", "low", "high"]], [1.0, 0.9, 1.2])
    assert not r["paired"].any()


def test_ratios_and_error_bars_use_the_rankings_interval_when_given():
    frame = tiny().assign(ratio_fastest=np.nan, ratio_low=np.nan, ratio_high=np.nan)
    b = frame["variant"] == "k/b"
    given = b & (frame["dtype"] == "float64")
    frame.loc[given, list(fg.RATIO_COLUMNS)] = [1.9, 1.7, 2.2]
    r = fg.ratios(frame)
    assert np.allclose(r.loc[given, ["ratio", "low", "high"]], [1.9, 1.7, 2.2])
    assert np.allclose(r.loc[b & ~given, ["ratio", "low", "high"]], [2.0, 1.8, 2.4])
    assert r["paired"].equals(given)
    traces = variant_traces(fg.ratio_vs_size("k", frame))[fg.esc("k/b")]
    by_axis = {t["xaxis"]: t for t in traces}  # float32 left (x), float64 right (x2)
    assert by_axis["x2"]["y"] == [1.9, 1.9]
    assert by_axis["x2"]["error_y"]["array"] == pytest.approx([0.3, 0.3])
    assert by_axis["x2"]["error_y"]["arrayminus"] == pytest.approx([0.2, 0.2])
    assert by_axis["x"]["error_y"]["array"] == pytest.approx([0.4, 0.4])


def test_time_error_bars_are_the_medians_interval():
    for t in fg.time_vs_size("k", tiny())["data"]:
        y = np.array(t["y"])
        assert np.allclose(t["error_y"]["array"], 0.2 * y, rtol=1e-3)
        assert np.allclose(t["error_y"]["arrayminus"], 0.1 * y, rtol=1e-3)


def test_each_variant_has_one_colour_and_one_legend_entry_across_dtypes(rnn_ranked):
    variants = rnn_ranked["variant"].nunique()
    assert variants > len(fg.plotly_colors.qualitative.Plotly)  # more than plotly's cycle
    colours = None
    for fig in fg.kernel_figures("rnn", rnn_ranked, None, {}):
        groups = variant_traces(fig)
        assert len(groups) == variants, fig["id"]
        for traces in groups.values():
            assert len(traces) == 2 and len({t["xaxis"] for t in traces}) == 2  # dtype panels
            colour = {t["marker"]["color"] for t in traces}
            assert len(colour) == 1
            assert colour == {t["line"]["color"] for t in traces} \
                == {t["error_y"]["color"] for t in traces}
            assert [t["showlegend"] for t in traces].count(True) == 1
        per_variant = {g: ts[0]["marker"]["color"] for g, ts in groups.items()}
        assert len(set(per_variant.values())) == variants  # distinct
        assert colours in (None, per_variant)  # and the same in every plot
        colours = per_variant


def test_every_plotted_point_has_an_error_bar(rnn_ranked):
    one = rnn_ranked[rnn_ranked["shape"] == rnn_ranked["shape"].iloc[0]]
    for ranked in (rnn_ranked, one):
        for fig in fg.kernel_figures("rnn", ranked, None, {}):
            for traces in variant_traces(fig).values():
                for t in traces:
                    err, values = error_of(t)
                    assert err["visible"] and err["type"] == "data"
                    assert len(err["array"]) == len(err["arrayminus"]) == len(values)
                    assert all(v is not None and v >= 0 for v in err["array"] + err["arrayminus"])
            bars = [v for ts in variant_traces(fig).values() for t in ts
                    for v in error_of(t)[0]["array"]]
            assert max(bars) > 0, fig["id"]


def test_a_single_shape_gets_ranked_bars_not_a_column_of_dots(rnn_ranked):
    one = rnn_ranked[rnn_ranked["shape"] == rnn_ranked["shape"].iloc[0]]
    figs = fg.kernel_figures("rnn", one, None, {})
    assert [f["id"].split("-")[0] for f in figs] == ["ratio", "memory", "roofline"]
    bars = figs[0]
    assert {(t["type"], t["orientation"]) for t in bars["data"]} == {("bar", "h")}
    ranked = one.assign(_r=fg.ratios(one)["ratio"])
    for facet, dtype in enumerate(("float32", "float64")):
        axis = bars["layout"][f"yaxis{fg.axis_suffix(facet)}"]
        fastest_first = ranked[ranked["dtype"] == dtype].sort_values("_r", kind="stable")
        assert axis["categoryarray"] == [fg.esc(fg.short(v)) for v in fastest_first["variant"]]
        assert axis["autorange"] == "reversed"  # the fastest on top
    several = fg.kernel_figures("rnn", rnn_ranked, None, {})
    assert several[0]["data"][0]["type"] == "scatter"
    assert several[0]["layout"]["xaxis"]["type"] == "log"


def test_history_has_one_line_per_variant_and_dtype():
    sweeps = ["s0", "s1", "s2"]
    started = {s: f"2026-01-0{i + 1}T00:00:00" for i, s in enumerate(sweeps)}
    change = {"N=1": 0.1, "N=2": 0.2}  # per sweep, so the geomean is sqrt(1.1 * 1.2) at s1
    rows = [{"sweep_id": s, "cell_id": f"{v}{d}{shape}", "variant": v, "dtype": d,
             "shape": shape, "median_ns": 1e6 * (1 + change[shape] * i),
             "ci_low_ns": 0.9e6 * (1 + change[shape] * i),
             "ci_high_ns": 1.2e6 * (1 + change[shape] * i)}
            for i, s in enumerate(sweeps) for v in ("k/a", "k/<b>")
            for d in ("float32", "float64") for shape in change]
    fig = fg.history("k", pd.DataFrame(rows), started)
    groups = variant_traces(fig)
    assert len(fig["data"]) == 4 and set(groups) == {"k/a", "k/&lt;b&gt;"}
    expected = [math.sqrt((1 + 0.1 * i) * (1 + 0.2 * i)) for i in range(3)]
    for traces in groups.values():
        assert len({t["xaxis"] for t in traces}) == 2
        assert len({t["marker"]["color"] for t in traces}) == 1
        for t in traces:
            assert t["x"] == [started[s] for s in sweeps]
            assert t["y"] == pytest.approx(expected, rel=1e-3)
            assert max(t["error_y"]["array"]) > 0


def test_history_of_one_shape_uses_that_cells_interval():
    cells = pd.DataFrame({"sweep_id": ["s0", "s1"], "cell_id": "c", "variant": "k/a",
                          "dtype": "float64", "median_ns": [1e6, 2e6],
                          "ci_low_ns": [0.9e6, 1.8e6], "ci_high_ns": [1.1e6, 2.4e6]})
    summary = fg.history_summary(cells, {"s0": "2026-01-01", "s1": "2026-01-02"})
    assert np.allclose(summary[["ratio", "low", "high"]], [[1.0, 0.9, 1.1], [2.0, 1.8, 2.4]])


def test_history_interval_covers_the_geometric_mean_at_its_level():
    rng = np.random.default_rng(7)
    cases, shapes, mu, sigma = 2000, 4, 0.1, 0.05
    z = rng.standard_normal(cases * shapes)
    base = pd.DataFrame({"cell_id": np.arange(cases * shapes),
                         "variant": np.repeat([f"v{i}" for i in range(cases)], shapes),
                         "dtype": "float64", "median_ns": 1e6})
    later = base.assign(median_ns=1e6 * np.exp(mu + sigma * z))
    cells = pd.concat([base.assign(sweep_id="s0"), later.assign(sweep_id="s1")])
    summary = fg.history_summary(cells, {"s0": "2026-01-01", "s1": "2026-01-02"})
    s1 = summary[summary["sweep_id"] == "s1"]
    covered = ((s1["low"] <= math.exp(mu)) & (math.exp(mu) <= s1["high"])).mean()
    assert len(s1) == cases and abs(covered - fg.CONFIDENCE) < 0.015  # 3 standard errors


def test_the_rankings_answers_head_each_kernel_section(rnn_report, rnn_ranked):
    unanswered = rnn_ranked.drop(columns="answer")
    assert render.answers_list(render.group_answers(unanswered)) == ""  # none given, none shown
    assert "fastest" in render.answers_list(render.group_answers(rnn_ranked))  # the ranking's
    answered = rnn_ranked.assign(answer="fastest: <b>" + rnn_ranked["dtype"] + "</b>")
    answers = render.group_answers(answered)
    assert len(answers) == rnn_ranked.groupby(["shape", "dtype"]).ngroups == 6
    assert [a[0] for a in answers] == sorted(a[0] for a in answers)
    data = render.SiteData(report=rnn_report, sweeps=pd.DataFrame(), history=None,
                           nodes=pd.DataFrame(), profiles=pd.DataFrame())
    section = render.kernel_section("rnn", answered, data, [])
    assert section.index('class="answers"') < section.index('class="plots"') \
        < section.index("each shape's ranking")
    assert "<b>float32</b>" not in section and "fastest: &lt;b&gt;float32&lt;/b&gt;" in section
    assert "<details" not in section


@pytest.mark.parametrize("shapes", [1, 2])
def test_a_sweep_without_memory_or_roofline_figures_still_draws_the_rest(shapes):
    """memory = false leaves peak_bytes empty; a kernel without FLOPs has no peak fraction:
    their figures are left out, the others drawn (one shape: bars; several: sizes)."""
    ranked = tiny()
    ranked = ranked[ranked["shape"].isin(["N=1", "N=2"][:shapes])]
    ranked = ranked.assign(peak_bytes=np.nan, pareto=False, peak_fraction=np.nan)
    figs = fg.kernel_figures("k", ranked, None, {})
    ids = [f["id"] for f in figs]
    assert ids and not any(i.startswith(("memory-", "roofline-")) for i in ids), ids
    assert all(f["data"] for f in figs)
    assert fg._domains(0) == [] and fg._domains(1) == [(0.0, 1.0)]


def test_a_kernel_section_details_the_smallest_shapes_and_counts_the_rest(
        rnn_report, rnn_ranked, monkeypatch):
    """Past SHOWN_SHAPES shapes per dtype the answers and tables stop, smallest problems
    first, and a line says how many are left and which command ranks them all."""
    monkeypatch.setattr(render, "SHOWN_SHAPES", 2)
    data = render.SiteData(report=rnn_report, sweeps=pd.DataFrame(), history=None,
                           nodes=pd.DataFrame(), profiles=pd.DataFrame())
    section = render.kernel_section("rnn", rnn_ranked, data, [])
    sizes = rnn_ranked.drop_duplicates(["dtype", "shape"]).sort_values("flops")
    for dtype in ("float32", "float64"):
        shapes = list(sizes.loc[sizes["dtype"] == dtype, "shape"])
        assert len(shapes) == 3
        tables = section.split(f"rnn · {dtype}: each shape's ranking")[1].split("<h3")[0]
        headers = re.findall(r'<tr class="shape"><td colspan="\d+">(.*?)</td>', tables)
        assert headers == shapes[:2]
        assert (f"1 more shape of rnn · {dtype} not shown here" in tables
                and f"gradsweep report {rnn_report.sweep_id} --kernel rnn --dtype {dtype}"
                in tables)
    answers = render.group_answers(rnn_ranked, render.shown_shapes(rnn_ranked, 2))
    assert len(answers) == 4 and section.count('<span class="group">') == 4
    monkeypatch.setattr(render, "SHOWN_SHAPES", 3)
    assert 'class="more"' not in render.kernel_section("rnn", rnn_ranked, data, [])


def test_the_failed_table_stops_at_its_limit_and_says_how_many_more():
    failed = tuple(rp.FailedCell(kernel="k", variant=f"k/v{i}", shape="N=1", dtype="float64",
                                 status="error", error="boom", cell_id=str(i))
                   for i in range(5))
    report = rp.Report(sweep_id="s", name="n", status="done", cells=(), overall=(),
                       failed=failed)
    html = render.failed_table(report, limit=3)
    assert html.count("<tr class=") == 3 and "2 more not shown here" in html
    assert "more not shown" not in render.failed_table(report)
