# lightning-tl: `make quickstart` trains SimCLR on the embedded digits; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision are pinned at install time (the wheels this machine keeps on disk); pyproject keeps ranges.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup quickstart test lint typecheck bench clean

$(BIN)/lightning-tl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q $(TORCH_PINS) -e ".[dev]"
	touch $@

setup: $(BIN)/lightning-tl

quickstart: setup
	$(BIN)/lightning-tl fit --recipe simclr/digits

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache .ruff_cache .mypy_cache
