"""The CI gate: two git revisions measured side by side in paired worker processes
(:mod:`.pairs` drives them; :mod:`.side` is one side's worker process)."""
