"""``gradsweep verify``: every variant against the float64 reference."""

from __future__ import annotations

from dataclasses import dataclass

from gradsweep.errors import BadInput
from gradsweep.impls.base import DTYPES, SkipCell
from gradsweep.impls.registry import PluginError, load
from gradsweep.records import Cell
from gradsweep.worker import correctness_error, prepare

#: Seed of the verification cases (the default sweep seed).
VERIFY_SEED = 0


@dataclass(frozen=True)
class Check:
    """One variant at one dtype: its status and max_rel_err."""

    variant: str
    dtype: str
    shape: str
    status: str  # ok, incorrect, error, skipped
    max_rel_err: float | None
    detail: str = ""


@dataclass(frozen=True)
class Verification:
    """Every check made, and the variants that failed any."""

    checks: tuple[Check, ...]

    @property
    def failed(self) -> list[str]:
        """Variants with a check that is incorrect or raised, each once."""
        bad = [c.variant for c in self.checks if c.status in ("incorrect", "error")]
        return list(dict.fromkeys(bad))


def check_variant(variant: str, shape: dict[str, int], dtype: str,
                  plugins: tuple[str, ...] = ()) -> Check:
    """Run ``variant`` once on the default case and compare with the reference."""
    kernel = variant.split("/")[0]
    cell = Cell(kernel, variant, tuple(shape.items()), dtype, 1, VERIFY_SEED, 1.0, 5.0)
    text = cell.shape_text
    try:
        _, err = prepare(cell, plugins)
    except SkipCell as exc:
        return Check(variant, dtype, text, "skipped", None, str(exc))
    except Exception as exc:  # a raising variant is a failed check, reported by name
        return Check(variant, dtype, text, "error", None, f"{type(exc).__name__}: {exc}")
    wrong = correctness_error(err, dtype)
    return Check(variant, dtype, text, "incorrect" if wrong else "ok", err)


def verify(kernel: str | None = None, plugins: tuple[str, ...] = ()) -> Verification:
    """Check every variant of ``kernel`` (or of every kernel) in every dtype."""
    try:
        registry = load(plugins)
    except PluginError as exc:
        raise BadInput(str(exc), key="--plugin") from None
    if kernel is not None and kernel not in registry.kernels:
        raise BadInput(f"unknown kernel {kernel!r} (expected one of "
                       f"{', '.join(sorted(registry.kernels))})", key="KERNEL")
    names = [kernel] if kernel else list(registry.kernels)
    checks = []
    for name in names:
        k = registry.kernels[name]
        shape = k.full_shape({})
        for variant in k.variants:
            checks += [check_variant(variant, shape, dtype, plugins) for dtype in DTYPES]
    return Verification(tuple(checks))
