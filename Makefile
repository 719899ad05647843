# r1flow: `make run` sets up and runs the whole pipeline on the embedded default;
# `make test` sets up and runs the tests. Both work on a fresh machine (Python 3.10+).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# torch first, from the CPU build on this machine; a GPU box sets TORCH_SPEC to its CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test test-fast test-gpu lint bench-rewards bench-grpo bench-curation bench-eval bench-tracking-outage bench-ops mixture experiment-curriculum ui serve ui-mlflow ui-prefect clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	# The code reward's sandbox runs programs in bubblewrap (bwrap), and needs the system python3.
	command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap python3; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# DeepSpeed's setup imports torch: build it against the torch installed above.
	$(BIN)/pip install -q --no-build-isolation "deepspeed>=0.16"
	$(BIN)/pip install -q -e ".[dev]"
	# The browser e2e test drives Debian's chromium through playwright (no browser download).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || \
	  echo "warning: could not install chromium (needs root); the browser test will fail"
	touch $@

# The whole DAG through DVC, under one MLflow parent run (stages nest under it).
run: setup
	@test -d .dvc || dvc init -q $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	@parent=$$(python -m tasks.tracking open) && \
	  R1FLOW_PARENT_RUN_ID=$$parent dvc repro; rc=$$?; \
	  python -m tasks.tracking close $$parent $$rc; exit $$rc

# The README's test command: the lint/format/type gate, then the whole suite.
test: setup lint
	pytest -q -p no:cacheprovider --timeout 900

test-fast: setup
	pytest -q -m "not slow" --timeout 300

test-gpu: setup
	pytest -q -m gpu tests

# Lint, formatting and types; any finding fails (CI runs it through `make test`).
lint: setup
	ruff check tasks flows tests benchmarks
	ruff format --check tasks flows
	mypy tasks flows

bench-rewards: setup
	python benchmarks/bench_rewards.py

# Evaluation harness vs raw model.generate on the same batch (~1 min): benchmarks/results/eval.json.
bench-eval: setup
	python benchmarks/bench_eval.py

# Curation throughput and filter quality on 100k and 1M synthetic rows (~3 min; up to ~3 GB RAM).
bench-curation: setup
	python benchmarks/bench_curation.py

# The whole DAG on a mixture of the real GSM8K, MATH and MBPP sets in ../shared/data (tiny model:
# it runs end to end, it does not learn), in a scratch copy build/mixture so this tree is untouched.
MIXTURE := build/mixture
mixture: setup
	rm -rf $(MIXTURE) && mkdir -p $(MIXTURE)
	cp -r tasks flows dvc.yaml pyproject.toml .gitignore $(MIXTURE)/
	sed 's#\.\./shared/#$(abspath ..)/shared/#' examples/mixture.params.yaml > $(MIXTURE)/params.yaml
	cd $(MIXTURE) && git init -q && dvc init -q && time dvc repro

# r1flow's GRPO step vs TRL's GRPOTrainer on the same model and settings (~2 min).
bench-grpo: setup
	pip install -q -e ".[bench]"
	python benchmarks/bench_grpo.py

# uniform, dump, online, dump+online, prioritized, static x 8 seeds of 100 GRPO steps from the SFT
# model, paired CIs vs uniform (sized for ~40 min on 2 cores); the SFT model and data come from the
# DAG (reused from the DVC cache when already built).
experiment-curriculum: setup
	dvc repro sft
	python benchmarks/curriculum.py

# Prefect UI (http://127.0.0.1:4200) and MLflow UI (http://127.0.0.1:5000) until Ctrl-C.
ui: setup
	python -m flows.servers

# prefect.yaml's deployments (nightly, experiment, evaluate-only), served against the `make ui` server.
serve: setup
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} python -m flows.deploy

# SFT with MLflow stopped mid-run vs without: steps trained, metrics delivered, overhead (~3 min).
bench-tracking-outage: setup
	python benchmarks/bench_tracking_outage.py

# How long a person waits in Prefect (~15 min): a scheduled run on unchanged data (the e2e schedule
# test) and a UI Custom run of the embedded default with grpo.lr changed, in a scratch clone
# (build/ops-ui; its DVC outputs from a copy of .dvc/cache, so `make run` first):
# benchmarks/results/ops.json.
bench-ops: setup
	python benchmarks/bench_ops.py

ui-mlflow: setup
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

ui-prefect: setup
	prefect server start --host 127.0.0.1 --port 4200

clean:
	rm -rf data/curated models checkpoints mlflow.db mlartifacts metrics plots reports .r1flow
