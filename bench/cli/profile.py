"""``gradsweep profile``: profile one cell with scalene and print its hottest lines."""

from __future__ import annotations

from collections.abc import Sequence

from gradsweep import profile as P
from gradsweep.errors import BadInput, printable
from gradsweep.worker import correctness_error


def profile_command(variant: str, *, shape: str = "", dtype: str = "float64", threads: int = 1,
                    seconds: float = P.DEFAULT_SECONDS, top: int = P.DEFAULT_TOP,
                    memory: bool = True, store_it: bool = False, results: str | None = None,
                    plugins: Sequence[str] = (), console) -> int:
    """Everything ``gradsweep profile`` does; the exit code (0, or 1 for a failed or
    incorrect cell).

    Raises
    ------
    BadInput
        For an unknown variant, dim, dtype or plugin, and (as ProfileError)
        when scalene is missing or fails.
    """
    from gradsweep import store
    from gradsweep.cli import views

    if seconds <= 0:
        raise BadInput("must be positive", key="--seconds")
    cell = P.make_cell(variant, shape, dtype, threads, plugins)
    dataset = store.resolve(results) if store_it else None
    try:
        profile = P.run_profile(cell, None, plugins, seconds=seconds, memory=memory)
    except P.CellFailed as exc:
        console.print(printable(f"error: {exc}"), markup=False, highlight=False, soft_wrap=True)
        return 1
    views.print_profile(console, profile, top)
    if dataset is not None:
        command = (f"gradsweep profile {cell.variant} --shape {cell.shape_text} "
                   f"--dtype {dtype} --threads {threads}")
        sweep_id = P.store_profile(dataset, profile, command)
        console.print(f"stored {len(profile.lines)} lines in {dataset.uri} (sweep {sweep_id})",
                      markup=False, highlight=False)
    err = profile.max_rel_err
    wrong = "no max_rel_err" if err is None else correctness_error(err, dtype)
    if wrong:
        console.print(f"incorrect: {wrong}", markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0
