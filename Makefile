# Two commands set up everything: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install browser valgrind lint clean

# The package folders: adding or removing a module changes their mtime and reinstalls.
PACKAGE_DIRS := bench bench/cli bench/executors bench/gate impls dashboards dashboards/templates

# A strict editable install: `gradsweep` (bench/ with impls/ and dashboards/ nested under it)
# is a link tree in build/, the layout of the installed wheel, which import-linter can walk.
$(STAMP): pyproject.toml $(PACKAGE_DIRS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,torch]' --config-settings editable_mode=strict
	touch $(STAMP)

install: $(STAMP)

# The README demo: a sweep on an embedded local Ray, a ranking, the dashboard (path printed).
demo: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 $(VENV)/bin/gradsweep run jobs/quick.toml --dashboard dashboards/site

# Headless Chromium and its driver for the dashboard test (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || \
	    echo "note: could not install chromium; the browser test will skip"; }

# valgrind (Debian) for the CI gate's instruction-count clock and its test.
valgrind:
	@command -v valgrind >/dev/null || \
	  { (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null 2>&1 || \
	    echo "note: could not install valgrind; the instruction-count test will skip"; }

test: $(STAMP) browser valgrind
	$(VENV)/bin/lint-imports
	RAY_USAGE_STATS_ENABLED=0 $(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) results/sweeps results/cells results/nodes results/profiles dashboards/site
