"""A module imported on first use, so the kernel modules load without numpy.

The kernel modules define their metadata (dims, axes, variants) and their
compute functions side by side. ``gradsweep list`` needs only the metadata, and
importing numpy is a third of its time; so each kernel module binds ``np`` to a
:class:`Deferred` stand-in::

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = Deferred("numpy", globals(), "np")

The first attribute read (``np.zeros``, when a kernel first computes) imports
numpy and rebinds the module's global ``np`` to it, so from then on the
functions use numpy itself: nothing stands between a timed backward and numpy.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class Deferred:
    """Stands for module ``module`` in a namespace until an attribute of it is read.

    Reading one imports the module (the import statement's locking makes this
    safe from any thread), rebinds ``namespace[name]`` to it and returns the
    attribute.
    """

    __slots__ = ("_module", "_name", "_namespace")

    def __init__(self, module: str, namespace: dict[str, Any], name: str) -> None:
        self._module = module
        self._namespace = namespace
        self._name = name

    def load(self) -> ModuleType:
        """Import the module and put it in the namespace in place of this stand-in."""
        module = importlib.import_module(self._module)
        self._namespace[self._name] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.load(), attr)

    def __repr__(self) -> str:
        return f"<deferred import of {self._module!r}>"

