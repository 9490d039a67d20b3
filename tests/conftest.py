"""Shared fixtures: plugin path, small specs, a temporary results dataset."""

import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

SMALL_MEASURE = """
[measure]
samples = 5
repeats = 3
min_time_s = 0.001
max_warmups = 2
"""


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec text to a file and return its path."""
    def write(text: str, name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """An empty results directory, also the default via GRADSWEEP_RESULTS."""
    path = tmp_path / "results"
    monkeypatch.setenv("GRADSWEEP_RESULTS", str(path))
    return path


def assert_same(a, b):
    """Recursively equal: dicts by key, arrays elementwise, the rest with ==."""
    import numpy as np

    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b
