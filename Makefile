# The two commands: `make demo` (the main job on the embedded default) and
# `make test`. Both create or refresh .venv from the pinned files first: the
# demo needs the runtime stack only, the tests add their references (torch,
# transformers, notebook tools).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEMO_ARGS ?=
PYTEST_ARGS ?=
# Test files run on this many processes (pytest-xdist, one file per process at a
# time, so a module's fixtures are built once).
TEST_WORKERS ?= 2

.PHONY: demo test venv bench clean browser full seeds

$(STAMP): requirements.txt setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-test.txt
	touch $(TEST_STAMP)

venv: $(TEST_STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash launch/local.sh $(DEMO_ARGS)

# The large CPU run (gin/experiments/full_cpu.gin, ~1-2 h each on 2 cores):
# the two-tool agent ranked label-free, then the same with the oracle ranker.
# Extra restreact flags: make full FULL_ARGS="--gin.WORLD_SEED=1".
full: $(STAMP)
	$(VENV)/bin/restreact rest --gin_file=gin/experiments/full_cpu.gin --gin.EXP_DIR="'runs/full'" $(FULL_ARGS)
	$(VENV)/bin/restreact rest --gin_file=gin/experiments/full_cpu.gin --gin.EXP_DIR="'runs/full_oracle'" --gin.rest.ranker="'oracle'" $(FULL_ARGS)

# `make demo` on several world seeds (~10-13 min each on 2 cores), one EXP_DIR
# each (runs/seed_<N>; a rerun resumes), then `restreact seeds` across them.
SEEDS ?= 0 7 1 2 3 4 5
seeds: $(STAMP)
	for s in $(SEEDS); do \
	  PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash launch/local.sh --gin.WORLD_SEED=$$s \
	    --exp_dir=runs/seed_$$s $(DEMO_ARGS) || exit 1; \
	done
	$(VENV)/bin/restreact seeds --exp_dirs="$$(printf 'runs/seed_%s,' $(SEEDS))" --out=runs/seeds.md

test: $(TEST_STAMP) browser
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests $(PYTEST_ARGS)

# Headless Chromium for tests/test_report_browser.py (it skips without one).
# Idempotent: installs Debian's chromium only when it is missing and we are root.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo 'installing chromium (apt-get) for the report browser test'; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends chromium >/dev/null || \
	    { apt-get update -q >/dev/null && \
	      apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	    echo 'chromium could not be installed; tests/test_report_browser.py will skip'; \
	fi

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/train_step.py --config s --json
	$(VENV)/bin/python benchmarks/sampling.py --json
	$(VENV)/bin/python benchmarks/search.py --json
	$(VENV)/bin/python benchmarks/compile_cache.py --json

clean:
	rm -rf $(VENV) runs
