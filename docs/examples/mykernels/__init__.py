"""An example plugin package for gradsweep (see docs/kernels.md)."""
