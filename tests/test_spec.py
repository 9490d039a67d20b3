"""Spec loading, validation (one-line errors, exit 2), expansion and cell identity."""

import json
import math
import subprocess
import sys
from dataclasses import fields

import pytest

from gradsweep.cli.app import main
from gradsweep.defaults import REPEATS
from gradsweep.errors import BadInput, printable
from gradsweep.records import Cell, MeasureSettings, cell_id_of
from gradsweep.spec import (
    CLOCKS,
    DIM_MAX,
    MAX_CELLS,
    MAX_NESTING,
    MAX_SPEC_BYTES,
    MEASURE_RANGES,
    combinations,
    expand,
    load_spec,
    nesting,
    parse,
)

GOOD = """
name = "t"
[[grid]]
kernel = "rnn"
dtype = ["float64", "float32"]
variants = { buffers = ["list", "prealloc"], wgrad = "*", clip = ["none"] }
shape = { N = [2, 3], T = [4], H = [5] }
exclude = [{ N = 3, dtype = "float32" }]
"""

TINY_GRID = '[[grid]]\nkernel = "rnn"\nshape = { N = 2, T = 2, D = 2, H = 2 }\n'

BAD = {
    "malformed": ("[[grid]\nkernel = 'rnn'", "malformed TOML"),
    "missing_kernel": ("[[grid]]\ndtype = 'float64'", "grid[0].kernel"),
    "missing_grid": ("name = 'x'", ": grid:"),
    "wrong_type": ("[measure]\nsamples = 'ten'\n[[grid]]\nkernel = 'rnn'", "measure.samples"),
    "unknown_top": ("nmae = 'x'\n[[grid]]\nkernel = 'rnn'", "nmae"),
    "unknown_measure": ("[measure]\nsampels = 3\n[[grid]]\nkernel = 'rnn'", "measure.sampels"),
    "unknown_grid_key": ("[[grid]]\nkernel = 'rnn'\nshapes = {}", "grid[0].shapes"),
    "unknown_kernel": ("[[grid]]\nkernel = 'lstn'", "unknown kernel 'lstn'"),
    "unknown_axis": ("[[grid]]\nkernel = 'rnn'\nvariants = { bufers = 'list' }",
                     "grid[0].variants.bufers"),
    "unknown_value": ("[[grid]]\nkernel = 'rnn'\nvariants = { buffers = 'lists' }",
                      "grid[0].variants.buffers"),
    "unknown_dim": ("[[grid]]\nkernel = 'rnn'\nshape = { Q = 3 }", "grid[0].shape.Q"),
    "below_minimum": ("[[grid]]\nkernel = 'rnn'\nshape = { N = 0 }",
                      "got 0 (expected an integer in [1, "),
    "unknown_dtype": ("[[grid]]\nkernel = 'rnn'\ndtype = 'float16'", "unknown dtype 'float16'"),
    "empty_grid": ("[[grid]]\nkernel = 'rnn'\nshape = { N = 2 }\nexclude = [{ N = 2 }]",
                   "no cell left"),
    "empty_list": ("[[grid]]\nkernel = 'rnn'\ndtype = []", "grid[0].dtype"),
    "unknown_peer": ("[[grid]]\nkernel = 'rnn'\npeers = ['jax']", "grid[0].peers"),
    "bad_plugin": ("plugins = ['no_such_module_xyz']\n[[grid]]\nkernel = 'rnn'", "plugins"),
    "negative": ("[measure]\nthreads = 0\n[[grid]]\nkernel = 'rnn'", "measure.threads"),
}


def test_good_spec_expands_with_defaults_and_excludes(write_spec):
    spec = load_spec(write_spec(GOOD))
    cells = expand(spec).cells
    # 2 N x 2 dtypes x 4 variants, minus N=3 float32 (4 cells)
    assert len(cells) == 12
    assert all(dict(c.shape)["D"] == 32 for c in cells)  # default filled in
    assert not [c for c in cells if c.dims["N"] == 3 and c.dtype == "float32"]
    assert cells[0].shape_text == "N=2,T=4,D=32,H=5"
    assert {c.variant for c in cells} >= {"rnn/buffers=list,wgrad=step,clip=none",
                                          "rnn/buffers=prealloc,wgrad=batched,clip=none"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_spec_error_is_one_line_exit_2(case, write_spec, capsys):
    text, needle = BAD[case]
    path = write_spec(text)
    code = main(["run", str(path), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert str(path) in lines[0] and needle in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_missing_file_is_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml"), "--dry-run"]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_bad_input_through_the_console_script(write_spec):
    path = write_spec("[[grid]]\nkernel = 'nope'")
    proc = subprocess.run([sys.executable, "-m", "gradsweep", "run", str(path), "--dry-run"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_cell_id_is_sha256_of_canonical_json():
    cell = Cell("rnn", "rnn/buffers=list,wgrad=step,clip=none",
                (("N", 2), ("T", 3), ("D", 4), ("H", 5)), "float64", 1, 0, 1.0, 5.0)
    import hashlib
    record = {"kernel": "rnn", "variant": cell.variant, "shape": {"N": 2, "T": 3, "D": 4, "H": 5},
              "dtype": "float64", "threads": 1, "seed": 0, "clip_value": 1.0, "clip_norm": 5.0}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    assert cell.cell_id == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_cell_id_changes_with_every_field():
    base = Cell("rnn", "rnn/buffers=list,wgrad=step,clip=none",
                (("N", 2), ("T", 3), ("D", 4), ("H", 5)), "float64", 1, 0, 1.0, 5.0)
    from dataclasses import replace
    changed = [replace(base, kernel="x"), replace(base, variant="rnn/x"),
               replace(base, shape=(("N", 3), ("T", 3), ("D", 4), ("H", 5))),
               replace(base, dtype="float32"), replace(base, threads=2), replace(base, seed=1),
               replace(base, clip_value=2.0), replace(base, clip_norm=1.0)]
    ids = {cell_id_of(c) for c in changed}
    assert len(ids) == len(changed) and base.cell_id not in ids


def test_cell_id_is_stable_across_processes(write_spec):
    path = write_spec(GOOD)
    here = [c.cell_id for c in expand(load_spec(path)).cells]
    code = ("import sys; from gradsweep.spec import load_spec, expand; "
            "print(' '.join(c.cell_id for c in expand(load_spec(sys.argv[1])).cells))")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, check=True, env={"PYTHONHASHSEED": "123",
                                                       **__import__("os").environ})
    assert proc.stdout.split() == here


def test_samples_and_timeout_do_not_enter_cell_id(write_spec):
    a = expand(load_spec(write_spec(GOOD, "a.toml"))).cells
    b = expand(load_spec(write_spec(GOOD + "[measure]\nsamples = 3\ntimeout_s = 9\n",
                                    "b.toml"))).cells
    assert [c.cell_id for c in a] == [c.cell_id for c in b]


def test_spec_hash_ignores_comments_but_not_content():
    a = parse(GOOD, "a.toml")
    assert parse("# a comment\n" + GOOD, "a.toml").spec_hash == a.spec_hash
    assert parse(GOOD.replace("[2, 3]", "[2]"), "a.toml").spec_hash != a.spec_hash


def test_dry_run_lists_cells_and_count(write_spec, capsys):
    assert main(["run", str(write_spec(GOOD)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 cells" in out and "rnn/buffers=list,wgrad=step,clip=none" in out


def test_bad_input_never_raises_past_parse():
    with pytest.raises(BadInput):
        parse("[[grid]]\nkernel = 3", "x.toml")


# --- ranges of every number (bench.spec.MEASURE_RANGES, DIM_MAX) -------------------------------

def _edges(name: str) -> tuple[list, list]:
    """Values of ``measure.<name>`` just inside and just outside its range."""
    allowed, integer = MEASURE_RANGES[name], isinstance(getattr(MeasureSettings(), name), int)
    step = 1 if integer else max(abs(allowed.low) * 1e-9, 1e-12)
    low = allowed.low + step if allowed.low_open else allowed.low
    inside = [low] + ([allowed.high] if math.isfinite(allowed.high) else [1e300])
    outside = [allowed.low if allowed.low_open else allowed.low - step]
    if math.isfinite(allowed.high):
        outside.append(allowed.high + step if integer else allowed.high * (1 + 1e-9))
        outside.append(10**30)  # beyond every bounded range, and beyond int64
    if not integer:
        outside += [math.nan, math.inf, -math.inf]
    return inside, outside


def _toml_number(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


@pytest.mark.parametrize("name", sorted(MEASURE_RANGES))
def test_every_measure_number_is_checked_at_its_edges(name):
    inside, outside = _edges(name)
    for value in inside:
        spec = parse(f"[measure]\n{name} = {_toml_number(value)}\n{TINY_GRID}", "x.toml")
        assert getattr(spec.measure, name) == value
    for value in outside:
        with pytest.raises(BadInput, match=rf"^x\.toml: measure\.{name}: got .* \(expected "):
            parse(f"[measure]\n{name} = {_toml_number(value)}\n{TINY_GRID}", "x.toml")


def test_every_numeric_setting_has_a_range():
    numeric = {f.name for f in fields(MeasureSettings)
               if type(getattr(MeasureSettings(), f.name)) in (int, float)}
    assert numeric == set(MEASURE_RANGES)


def test_dims_from_minimum_to_dim_max():
    spec = parse(f'[[grid]]\nkernel = "rnn"\nshape = {{ N = [1, {DIM_MAX}], T = 1, D = 1, '
                 "H = 1 }\n", "x.toml")
    assert max(c.dims["N"] for c in expand(spec).cells) == DIM_MAX
    spec = parse('[[grid]]\nkernel = "deconv2d"\nshape = { padding = 0 }\n', "x.toml")
    assert {c.dims["padding"] for c in expand(spec).cells} == {0}  # this dim's minimum is 0
    with pytest.raises(BadInput, match=r"shape\.padding: got -1 \(expected an integer in \[0, "):
        parse('[[grid]]\nkernel = "deconv2d"\nshape = { padding = -1 }\n', "x.toml")


def test_repeats_and_clock():
    assert (MeasureSettings().repeats, MeasureSettings().clock) == (REPEATS, "cpu") == (8, "cpu")
    spec = parse(f'[measure]\nrepeats = 5\nclock = "wall"\n{TINY_GRID}', "x.toml")
    assert (spec.measure.repeats, spec.measure.clock) == (5, "wall")
    assert CLOCKS == ("cpu", "wall")


def test_limits_on_size_nesting_and_combinations(write_spec):
    assert nesting({"a": [[1]], "b": {"c": {}}}) == 3 and nesting(7) == 0
    def doc(depth):  # a document (level 1) whose key x holds depth - 1 nested arrays
        return "x = " + "[" * (depth - 1) + "]" * (depth - 1) + "\n" + TINY_GRID
    with pytest.raises(BadInput, match="x: unknown key"):  # past the nesting check
        parse(doc(MAX_NESTING), "x.toml")
    with pytest.raises(BadInput, match="nested too deeply"):
        parse(doc(MAX_NESTING + 1), "x.toml")
    with pytest.raises(BadInput, match=f"bytes or more .*at most {MAX_SPEC_BYTES} bytes"):
        load_spec(write_spec("#" * MAX_SPEC_BYTES + "\n" + TINY_GRID))
    values = ", ".join(str(i) for i in range(1, 51))
    fine = f'[[grid]]\nkernel = "rnn"\nshape = {{ N = [{values}], T = [{values}] }}\n'
    variants = 2 * 2 * 3  # rnn: buffers x wgrad x clip
    assert combinations(parse(fine, "x.toml").grids[0]) == variants * 50 * 50 <= MAX_CELLS


def test_a_leading_byte_order_mark_is_fine(write_spec):
    path = write_spec("")
    path.write_bytes(b"\xef\xbb\xbf" + TINY_GRID.encode())
    assert load_spec(path).grids[0].kernel == "rnn"


def test_a_name_with_a_terminal_escape_is_kept_as_written():
    spec = parse('name = "\\u001b[31mred"\n' + TINY_GRID, "x.toml")
    assert spec.name == "\x1b[31mred"
    assert printable(spec.name) == "\\x1b[31mred"
