"""Modules imported on first use, so the kernel modules load without numpy.

The kernel modules define their metadata (dims, axes, variants) and their
compute functions side by side. ``gradsweep list`` needs only the metadata, and
importing numpy is a third of its time; so each kernel module binds ``np`` with
:func:`lazy_import`::

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = lazy_import("numpy")

This is the standard library's lazy loader (:class:`importlib.util.LazyLoader`,
the recipe of the ``importlib`` documentation, "Implementing lazy imports"): the
module object is created at once and executed when an attribute of it is first
read (``np.zeros``, when a kernel first computes); from then on it is the real
module object, so nothing stands between a timed backward and numpy.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """Module ``name``, loaded when one of its attributes is first read.

    An already imported module is returned as it is. Otherwise a lazily loading
    module is put in ``sys.modules`` (so every later ``import name`` gets the same
    object) and returned.

    Raises
    ------
    ModuleNotFoundError
        ``name`` cannot be found.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

