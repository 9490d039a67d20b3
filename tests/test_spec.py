"""Spec loading, validation (one-line errors, exit 2), expansion and cell identity."""

import json
import subprocess
import sys

import pytest

from bench.cli import main
from bench.errors import BadInput
from bench.spec import Cell, cell_id_of, expand, load_spec, parse

GOOD = """
name = "t"
[[grid]]
kernel = "rnn"
dtype = ["float64", "float32"]
variants = { buffers = ["list", "prealloc"], wgrad = "*", clip = ["none"] }
shape = { N = [2, 3], T = [4], H = [5] }
exclude = [{ N = 3, dtype = "float32" }]
"""

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
    "below_minimum": ("[[grid]]\nkernel = 'rnn'\nshape = { N = 0 }", "got 0 (expected an integer in [1, "),
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
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--dry-run"],
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
    code = ("import sys; from bench.spec import load_spec, expand; "
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
