"""Where cells run: in this process (:mod:`.local`) or on Ray (:mod:`.onray`), under the
guards of :mod:`.guards`; Ray token auth (:mod:`.auth`) and the Ray Jobs client (:mod:`.jobs`)."""
