"""Where kernels and variants come from: built-ins, plugin modules, entry points.

A contributing module exposes ``KERNELS`` (an iterable of :class:`Kernel`) and
or ``VARIANTS`` (an iterable of :class:`Variant` adding backwards to a kernel
that is already known). Modules are read in this order: the built-in modules of
the ``impls`` package, modules in the entry point group ``gradsweep.kernels``,
then the modules a spec names in ``plugins``. Workers call :func:`load` with
the same plugin list, so plugin kernels sweep like built-in ones.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import ModuleType

from gradsweep.impls.base import PEER_AXIS, Axis, Kernel, Variant, variant_name

#: Built-in kernel modules, in listing order; one that is absent is skipped.
BUILTIN_MODULES = (
    "gradsweep.impls.rnn", "gradsweep.impls.lstm", "gradsweep.impls.gru",
    "gradsweep.impls.bilstm", "gradsweep.impls.deconv2d",
    "gradsweep.impls.peer_torch",
)
ENTRY_POINT_GROUP = "gradsweep.kernels"


class PluginError(Exception):
    """A plugin module cannot be imported or contributes something invalid."""


@dataclass(frozen=True)
class Registry:
    """Every known kernel by name, with all contributed variants merged in."""

    kernels: Mapping[str, Kernel]
    plugins: tuple[str, ...] = ()

    def kernel(self, name: str) -> Kernel:
        """The kernel called ``name``; KeyError naming the known ones."""
        try:
            return self.kernels[name]
        except KeyError:
            known = ", ".join(sorted(self.kernels))
            raise KeyError(f"unknown kernel {name!r} (known: {known})") from None

    def backward(self, variant: str):
        """The backward function of a canonical variant name."""
        kernel = self.kernel(variant.partition("/")[0])
        try:
            return kernel.variants[variant]
        except KeyError:
            raise KeyError(f"unknown variant {variant!r}") from None


def _import_builtin(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def _import_plugin(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any failure of a user's module is a plugin error
        raise PluginError(f"cannot import plugin {name!r}: {exc}") from exc


def _entry_point_modules() -> list[ModuleType]:
    modules = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            modules.append(ep.load())
        except Exception as exc:
            raise PluginError(f"cannot load entry point {ep.name!r} "
                              f"({ep.value}): {exc}") from exc
    return modules


def add_variant(kernel: Kernel, variant: Variant) -> Kernel:
    """``kernel`` with ``variant`` added (new axis values appended in order)."""
    axes = dict(variant.axes)
    if set(axes) == {PEER_AXIS}:
        name = f"{kernel.name}/{PEER_AXIS}={axes[PEER_AXIS]}"
        return replace(kernel, variants={**kernel.variants, name: variant.backward})
    order = tuple(a.name for a in kernel.axes)
    if set(axes) != set(order):
        raise PluginError(f"variant of {kernel.name!r} names axes {sorted(axes)}; "
                          f"expected exactly {list(order)}")
    new_axes = tuple(a if axes[a.name] in a.values else Axis(a.name, (*a.values, axes[a.name]))
                     for a in kernel.axes)
    name = variant_name(kernel.name, axes, order)
    return replace(kernel, axes=new_axes, variants={**kernel.variants, name: variant.backward})


def _merge(kernels: dict[str, Kernel], module: ModuleType) -> None:
    for kernel in getattr(module, "KERNELS", ()):
        if not isinstance(kernel, Kernel):
            raise PluginError(f"{module.__name__}.KERNELS holds {kernel!r}, not a Kernel")
        kernels[kernel.name] = kernel
    for variant in getattr(module, "VARIANTS", ()):
        if variant.kernel not in kernels:
            raise PluginError(f"{module.__name__}: variant for unknown kernel "
                              f"{variant.kernel!r}")
        kernels[variant.kernel] = add_variant(kernels[variant.kernel], variant)


@functools.lru_cache(maxsize=16)
def _load(plugins: tuple[str, ...]) -> Registry:
    kernels: dict[str, Kernel] = {}
    modules: list[ModuleType] = [m for m in map(_import_builtin, BUILTIN_MODULES) if m]
    modules += _entry_point_modules()
    modules += [_import_plugin(p) for p in plugins]
    for module in modules:
        _merge(kernels, module)
    return Registry(kernels=kernels, plugins=plugins)


def load(plugins: Iterable[str] = ()) -> Registry:
    """The registry with the built-ins, entry points and ``plugins`` merged.

    Raises
    ------
    PluginError
        When a plugin or entry point cannot be imported or is malformed.
    """
    return _load(tuple(plugins))
