"""Defaults that several stages and the command line share, defined once.

This module imports nothing, so the command line can read its option defaults
without loading numpy, pandas or Ray.
"""

#: Default two-sided confidence level of every interval.
CONFIDENCE = 0.95
#: Significance level for "two members differ" and for a regression or improvement.
ALPHA = 0.01
#: Minimum effect: a ratio within 5% of 1 is never called a difference, a regression
#: or an improvement (DESIGN.md, Statistics).
MIN_EFFECT = 0.05
#: Blocks per group (``[measure] repeats``), each in its own worker process: 8 blocks of 5
#: rounds (:data:`SAMPLES`). Each block is a draw of the between-process variance
#: (docs/noise.md, "Where a sweep's remaining spread comes from").
REPEATS = 8
#: Timed samples per member (``[measure] samples``), spread over the blocks as rounds: 5 per
#: block. Within a block the paired samples are heavy-tailed, and with 3 rounds a block's
#: median still moved with two disturbed samples; since blocks fork from a loaded server and
#: only a group's first block calibrates, 8 x 5 takes less time than 8 x 3 did, and spread
#: less across runs than 8 x 3, 10 x 4 or 12 x 4 (docs/noise.md, "Blocks in forked processes").
SAMPLES = 40
#: The CI gate's sweep spec.
CI_SPEC = "jobs/ci.toml"
#: The CI gate's threshold: below the 5% of rankings, because a cell is flagged only when
#: its estimate is beyond the threshold, so a true change of exactly the threshold is
#: caught half the time (docs/gate.md).
CI_THRESHOLD = 0.03
#: Seconds of measurement after which the gate starts no more process pairs.
CI_BUDGET_S = 120.0
#: Seconds of profiled backward calls (``gradsweep profile``, ``profile_seconds``).
PROFILE_SECONDS = 2.0
#: Lines ``gradsweep profile`` shows.
PROFILE_TOP = 15
