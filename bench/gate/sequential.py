"""The gate's sequential rule: which cells get another process pair, and when to stop.

Every cell starts with ``min_pairs`` process pairs (blocks). After each pair the
cells' candidate/base estimates (random effects over pairs,
``stats.paired_estimate``) are judged together by ``stats.gate_verdicts``:
significance on Benjamini-Hochberg adjusted p-values across all cells (a false
discovery rate at ``alpha``; when every cell is unchanged, as in an A/A run,
that is the chance of any false alarm in the run), and equivalence (``unchanged``)
on each cell's own ``1 - alpha`` interval. Cells still ``undecided`` get one
more pair, while the next pair is expected to fit in the time budget and fewer
than ``max_pairs`` have run; then every cell still undecided is
``inconclusive``. Looking after every pair is what makes a sequential test
liberal; the modified Hartung-Knapp interval of ``stats.combine_blocks`` keeps
the rate of false alarms within alpha at these numbers of looks
(``tests/gate/test_sequential.py`` simulates it).

The rule is pure: :func:`run_sequential` calls back to measure a pair of some
cells and to estimate them, so the simulation and the real gate share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gradsweep import stats
from gradsweep.defaults import ALPHA, CI_BUDGET_S, CI_THRESHOLD, MIN_EFFECT
from gradsweep.stats import INCONCLUSIVE, UNDECIDED, RatioEstimate

#: The gate's default threshold (``gradsweep ci``, defined in ``defaults``): a true change
#: of the threshold is flagged about half the time (``stats.gate_verdict``), so a gate that
#: should catch +5% changes needs a threshold below 5%. At 3% a +5% change is flagged once
#: its interval excludes 1, and A/A false alarms do not depend on it (they need the
#: interval to exclude 1); the price is more pairs before a cell is "unchanged".
THRESHOLD = CI_THRESHOLD
#: Process pairs every cell gets before the first look.
MIN_PAIRS = 3
#: Most process pairs a cell gets (the looks the false-alarm rate was simulated at).
MAX_PAIRS = 20
#: Default seconds of measurement after which no pair is started (the minimum pairs
#: always run): ``gradsweep ci`` on jobs/ci.toml then ends within 3 minutes on a
#: 2-core machine (worktrees, compilation and storing take the rest).
BUDGET_S = CI_BUDGET_S


@dataclass(frozen=True)
class Rule:
    """The sequential rule's settings.

    Attributes
    ----------
    threshold : float
        Smallest change that matters (fraction of the base time).
    alpha : float
        False discovery rate across cells; the equivalence interval is ``1 - alpha``.
    min_pairs, max_pairs : int
        Pairs before the first look; most pairs a cell gets.
    budget_s : float
        Seconds of measurement; a pair that would end past it is not started.
    """

    threshold: float = MIN_EFFECT
    alpha: float = ALPHA
    min_pairs: int = MIN_PAIRS
    max_pairs: int = MAX_PAIRS
    budget_s: float = BUDGET_S

    def __post_init__(self) -> None:
        if not 2 <= self.min_pairs <= self.max_pairs:
            raise ValueError(f"need 2 <= min_pairs <= max_pairs, got {self.min_pairs}, "
                             f"{self.max_pairs}")
        if not self.budget_s > 0:
            raise ValueError(f"budget_s must be positive, got {self.budget_s}")


def verdicts(estimates: Sequence[RatioEstimate | None], rule: Rule,
             final: bool) -> list[str]:
    """Each cell's verdict, BH-adjusted across the cells that have an estimate.

    A cell without an estimate (fewer than ``stats.MIN_ROUNDS`` paired rounds)
    is ``undecided``, or ``inconclusive`` when ``final``.

    Parameters
    ----------
    estimates : sequence of RatioEstimate or None, length m
        Candidate over base per cell.
    rule : Rule
    final : bool
        Whether no more pairs will be added.

    Returns
    -------
    list of str, length m
    """
    known = [e for e in estimates if e is not None]
    judged = iter(stats.gate_verdicts(known, rule.threshold, final, alpha=rule.alpha))
    missing = INCONCLUSIVE if final else UNDECIDED
    return [next(judged) if e is not None else missing for e in estimates]


@dataclass
class Clock:
    """Seconds spent per cell per pair, to predict whether the next pair fits the budget."""

    started: float
    now: Callable[[], float] = time.monotonic
    per_cell: float = 0.0
    pairs: int = 0

    def record(self, seconds: float, cells: int) -> None:
        """A pair of ``cells`` cells took ``seconds`` (the running mean per cell)."""
        self.pairs += 1
        self.per_cell += (seconds / max(cells, 1) - self.per_cell) / self.pairs

    def fits(self, cells: int, budget_s: float) -> bool:
        """Whether a pair of ``cells`` cells is expected to end within the budget."""
        return self.now() - self.started + self.per_cell * cells <= budget_s


def run_sequential(n_cells: int, measure: Callable[[int, list[int]], None],
                   estimate: Callable[[int], RatioEstimate | None], rule: Rule, *,
                   failed: Callable[[int], bool] = lambda i: False,
                   now: Callable[[], float] = time.monotonic) -> list[str]:
    """Run process pairs until every cell is decided, the budget or ``max_pairs`` is spent.

    Parameters
    ----------
    n_cells : int
        Cells, numbered ``0 .. n_cells - 1``.
    measure : callable ``(pair, cells) -> None``
        Runs process pair ``pair`` (0, 1, ...) over the listed cells.
    estimate : callable ``(cell) -> RatioEstimate or None``
        The cell's candidate/base estimate from the pairs measured so far.
    rule : Rule
    failed : callable ``(cell) -> bool``
        Cells that failed on a side: measured no more, judged on nothing.
    now : callable
        Seconds (monotonic); the simulation passes its own.

    Returns
    -------
    list of str, length n_cells
        Final verdicts (regression, improvement, unchanged, inconclusive); a
        failed cell's is ``inconclusive`` (the caller reports its status).
    """
    clock = Clock(started=now(), now=now)
    known: dict[int, RatioEstimate | None] = {}

    def looked(final: bool) -> list[str]:
        found = [None if failed(i) else known.setdefault(i, estimate(i)) for i in range(n_cells)]
        judged = verdicts(found, rule, final)
        return [INCONCLUSIVE if failed(i) else v for i, v in enumerate(judged)]

    todo = list(range(n_cells))
    pair = 0
    while todo:
        started = now()
        measure(pair, todo)
        clock.record(now() - started, len(todo))
        for i in todo:
            known.pop(i, None)
        pair += 1
        if pair < rule.min_pairs:
            todo = [i for i in todo if not failed(i)]
            continue
        todo = [i for i, v in enumerate(looked(final=False)) if v == UNDECIDED]
        if pair >= rule.max_pairs or (todo and not clock.fits(len(todo), rule.budget_s)):
            break
    return looked(final=True)
