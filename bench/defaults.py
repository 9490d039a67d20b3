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
#: The CI gate's sweep spec.
CI_SPEC = "jobs/ci.toml"
#: Seconds of profiled backward calls (``gradsweep profile``, ``profile_seconds``).
PROFILE_SECONDS = 2.0
#: Lines ``gradsweep profile`` shows.
PROFILE_TOP = 15
