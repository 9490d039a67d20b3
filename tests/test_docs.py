"""docs/ stays true to the code: the example plugin verifies, the example spec loads, every
spec key, Kernel field and table column is documented, quoted errors are the real ones, and
every relative link resolves."""

import importlib
import re
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from gradsweep import spec, store, verify
from gradsweep.errors import BadInput
from gradsweep.impls import base, registry
from gradsweep.impls.gradcheck import finite_differences, max_rel_err

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"
PLUGIN = "mykernels.dense"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.fixture
def example_plugin(monkeypatch):
    """docs/examples on the path (the worked plugin ``mykernels.dense``)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    registry._load.cache_clear()
    yield PLUGIN
    registry._load.cache_clear()
    for name in ("mykernels.dense", "mykernels"):
        sys.modules.pop(name, None)


def _text(page: str) -> str:
    return (DOCS / page).read_text()


@pytest.mark.parametrize("dtype", base.DTYPES)
def test_example_plugin_variants_verify(example_plugin, dtype):
    shapes = {"dense": {"N": 5, "D": 4, "H": 3}, "rnn": {"N": 2, "T": 4, "D": 3, "H": 5}}
    names = ["dense/product=einsum", "dense/product=matmul",
             "rnn/buffers=stacked,wgrad=batched,clip=none"]
    for name in names:
        check = verify.check_variant(name, shapes[name.split("/")[0]], dtype, (example_plugin,))
        assert check.status == "ok", check


def test_example_reference_matches_finite_differences(example_plugin):
    dense = importlib.import_module(example_plugin)
    case = dense.make_case({"N": 3, "D": 4, "H": 5}, "float64", 1)
    got = dense.reference(case, dense.forward(case)[1])
    assert max_rel_err(got, finite_differences(dense.forward, case)) < 1e-6


def test_example_spec_loads(example_plugin):
    loaded = spec.load_spec(EXAMPLES / "dense.toml")
    cells = spec.expand(loaded).cells
    assert loaded.plugins == (example_plugin,)
    assert sum(c.kernel == "dense" for c in cells) == 16  # 2 dtypes x 2 variants x 4 shapes
    assert {c.variant for c in cells if c.kernel == "rnn"} == {
        "rnn/buffers=list,wgrad=batched,clip=none", "rnn/buffers=stacked,wgrad=batched,clip=none"}


def test_every_spec_key_is_documented():
    text = _text("spec.md")
    keys = {f.name for f in fields(spec.MeasureSettings)} | spec.TOP_KEYS | spec.GRID_KEYS
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, missing


def test_every_kernel_and_case_field_is_documented():
    text = _text("kernels.md")
    names = {f.name for f in fields(base.Kernel)} | {f.name for f in fields(base.Case)}
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, missing


def test_every_column_is_documented():
    text = _text("tables.md")
    missing = sorted(f"{table}.{name}" for table, schema in store.SCHEMAS.items()
                     for name in schema.names if f"`{name}`" not in text)
    assert not missing, missing
    assert f"The current version is **{store.SCHEMA_VERSION}**" in text


BAD_SPECS = {
    'foo = 1\n[[grid]]\nkernel = "rnn"': "foo: unknown key",
    'name = "x"': "grid: missing key",
    '[grid]\nkernel = "rnn"': "grid: expected a list",
    '[measure]\nsamples = 0\n[[grid]]\nkernel = "rnn"':
        "measure.samples: got 0 (expected an integer in [1, 1000000])",
    '[measure]\nthreads = 1.5\n[[grid]]\nkernel = "rnn"': "measure.threads: expected an integer",
    '[measure]\nmemory = 1\n[[grid]]\nkernel = "rnn"': "measure.memory: expected a boolean",
    '[measure]\nmax_warmups = -1\n[[grid]]\nkernel = "rnn"':
        "measure.max_warmups: got -1 (expected an integer in [0, 10000])",
    '[[grid]]\nkernel = "lsmt"': "grid[0].kernel: unknown kernel 'lsmt'",
    '[[grid]]\nkernel = "rnn"\ndtype = ["float16"]': "grid[0].dtype: unknown dtype 'float16'",
    '[[grid]]\nkernel = "lstm"\nvariants = { buffers = ["lists"] }':
        "grid[0].variants.buffers: unknown value 'lists'",
    '[[grid]]\nkernel = "rnn"\nshape = { N = 0 }':
        "grid[0].shape.N: got 0 (expected an integer in [1, 2147483647])",
    '[[grid]]\nkernel = "rnn"\npeers = ["jax"]': "grid[0].peers: unknown peer 'jax'",
    '[[grid]]\nkernel = "rnn"\nexclude = [{ N = 16 }]': "grid[0]: the grid has no cell left",
}


@pytest.mark.parametrize("text", list(BAD_SPECS))
def test_quoted_spec_errors_are_the_real_ones(text):
    with pytest.raises(BadInput) as caught:
        spec.parse(text, "x.toml")
    message = str(caught.value).removeprefix("x.toml: ")
    assert message.startswith(BAD_SPECS[text])
    assert f"`{message}`" in _text("spec.md"), message


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", path.read_text(), re.M)}


def test_relative_links_resolve():
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        for target in LINK.findall(page.read_text()):
            if "://" in target:
                broken.append(f"{page.name}: external link {target}")
                continue
            name, _, anchor = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            if not path.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
