# The verbs of the project. Every target forwards key=value arguments to Hydra:
#   make train model=scratch trainer.max_epochs=5
# The first call creates .venv and installs the package into it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The torch the first install puts into .venv. A CPU build installs in seconds here; for a CUDA
# build: make clean && PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/<cuda> \
#   make install TORCH=torch==2.13.0+<cuda>. Later calls keep whatever torch .venv holds.
TORCH ?= torch==2.13.0
# Where make report and make compare write their markdown and figures.
OUT ?= reports
# make compare runs conf/study/drift.yaml, make compare STUDY=open_loop conf/study/open_loop.yaml;
# DIR=... continues a runs directory.
STUDY ?=
DIR ?=
STAMP := $(VENV)/.installed
# Optional extras to add to .venv, e.g. make install EXTRAS=slurm (the submitit launcher).
EXTRAS ?=

# key=value words on the command line become Hydra overrides, except make's own variables and
# the environment's WANDB_MODE and SDL_VIDEODRIVER (make puts command-line words in the
# commands' environment). make writes a space inside a value as '\ ' (make evaluate
# CKPT="a b.ckpt"): such a value stays one quoted argument.
space := $(subst ,, )
OVERRIDE_WORDS = $(subst \$(space),@@,$(MAKEOVERRIDES))
HYDRA_ARGS = $(subst @@,$(space),$(foreach v,$(filter-out TORCH=% PYTHON=% TEST_WORKERS=% CKPT=% RUNS=% OUT=% EXTRAS=% STUDY=% DIR=% SDL_VIDEODRIVER=% WANDB_MODE=%,$(OVERRIDE_WORDS)),'$(v)'))

export SDL_VIDEODRIVER ?= dummy

.PHONY: install data train evaluate report compare sweep tune dream bench bench-gpu test test-all lint clean

install: $(STAMP)
ifneq ($(strip $(EXTRAS)),)
	$(PY) -m pip install -qq -e ".[dev,tune,$(EXTRAS)]"
endif

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq "$(TORCH)"
	$(PY) -m pip install -qq -e ".[dev,tune]"
	touch $@

data: $(STAMP)
	$(PY) -m world_models.collect $(HYDRA_ARGS)

train: $(STAMP)
	$(PY) train.py $(HYDRA_ARGS)

evaluate: $(STAMP)
	$(PY) evaluate.py 'ckpt=$(CKPT)' $(HYDRA_ARGS)

report: $(STAMP)
	$(PY) -m world_models.report --out '$(OUT)' $(if $(RUNS),--runs '$(RUNS)') $(HYDRA_ARGS)

compare: $(STAMP)
	$(PY) -m world_models.compare --out '$(OUT)' $(if $(STUDY),--study '$(STUDY)') $(if $(DIR),--dir '$(DIR)') $(HYDRA_ARGS)

# A grid from conf/sweep/ (default: cores.yaml, both LSTM cores over three seeds).
sweep: $(STAMP)
	$(PY) train.py -m $(if $(filter sweep=%,$(MAKEOVERRIDES)),,sweep=cores) $(HYDRA_ARGS)

# A search with Hydra's Optuna sweeper (conf/hparams_search/); rerun to continue a study.
tune: $(STAMP)
	$(PY) train.py $(if $(filter hparams_search=%,$(MAKEOVERRIDES)),,hparams_search=default) \
		$(HYDRA_ARGS)

# The model's dream beside the simulator: make dream CKPT=... [mode=interactive]. A window
# needs the real display: drop the dummy video driver exported above, unless it was yours.
dream: $(STAMP)
	$(if $(and $(filter mode=interactive,$(MAKEOVERRIDES)),$(filter file,$(origin SDL_VIDEODRIVER))),env -u SDL_VIDEODRIVER )$(PY) dream.py ckpt=$(CKPT) $(HYDRA_ARGS)

# Every benchmark in one run; the issue's ratios again at the end (docs/benchmarks.md).
bench: $(STAMP)
	$(PY) benchmarks/bench.py

# On a machine with a GPU: the default model's frames/s at batch 16 and 256, fp32 and bf16,
# eager and compiled, and its peak memory; elsewhere one "no GPU, skipped" line.
bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_gpu.py

# The suite runs in TEST_WORKERS processes (pytest-xdist), one test file per worker at a time
# (a module's shared runs are made once), the longest files first (tests/conftest.py).
# TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
TEST_ARGS = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: $(STAMP)
	$(PY) -m pytest -q $(TEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(TEST_ARGS) -m "slow or not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
