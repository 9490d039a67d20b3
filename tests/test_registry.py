"""The registry: built-ins, plugin modules, entry points, canonical names."""

import importlib
import sys
import textwrap

import pytest

from gradsweep.impls import registry
from gradsweep.impls.base import baseline_for, parse_variant, variant_name


def test_builtins_have_canonical_names():
    reg = registry.load()
    rnn = reg.kernel("rnn")
    order = tuple(a.name for a in rnn.axes)
    for name in rnn.variants:
        kernel, axes = parse_variant(name)
        assert kernel == "rnn"
        if "peer" not in axes:
            assert tuple(axes) == order and variant_name("rnn", axes, order) == name
    assert rnn.baseline == "rnn/buffers=list,wgrad=step,clip=none"
    assert len([v for v in rnn.variants if "peer" not in v]) == 12


def test_unknown_kernel_names_the_known_ones():
    with pytest.raises(KeyError, match="known: .*rnn"):
        registry.load().kernel("nope")


def test_plugin_module_adds_variants_and_axis_values():
    reg = registry.load(("gs_extra",))
    rnn = reg.kernel("rnn")
    assert "rnn/buffers=plugin,wgrad=batched,clip=none" in rnn.variants
    assert "plugin" in rnn.axis("buffers").values
    # the built-in registry is not changed by loading a plugin
    assert "plugin" not in registry.load().kernel("rnn").axis("buffers").values


def test_plugin_that_does_not_import_is_a_plugin_error():
    with pytest.raises(registry.PluginError, match="no_such_plugin"):
        registry.load(("no_such_plugin",))


def test_baseline_keeps_the_variants_other_axes():
    rnn = registry.load().kernel("rnn")
    assert baseline_for(rnn, "rnn/buffers=prealloc,wgrad=batched,clip=norm") == \
        "rnn/buffers=list,wgrad=step,clip=norm"
    assert baseline_for(rnn, "rnn/peer=torch") == rnn.baseline


def test_entry_point_group_is_loaded(tmp_path, monkeypatch):
    pkg = tmp_path / "gs_ep_kernels.py"
    pkg.write_text(textwrap.dedent("""
        from dataclasses import replace
        from gradsweep.impls import rnn
        KERNELS = [replace(rnn.KERNEL, name="rnn_ep")]
    """))
    dist = tmp_path / "gs_ep-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gs-ep\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gradsweep.kernels]\nmine = gs_ep_kernels\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    registry._load.cache_clear()
    try:
        assert "rnn_ep" in registry.load().kernels
    finally:
        registry._load.cache_clear()
        sys.modules.pop("gs_ep_kernels", None)
