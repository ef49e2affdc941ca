# vislearn: two commands on a fresh machine (Python >= 3.11, pip; no GPU needed)
#   make demo   -- venv + install + MoCo v2 on the embedded data, kNN/linear table, t-SNE PNG
#   make test   -- venv + install + ruff + import layering (lint-imports) + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# CPU wheels of these exact versions come from the local index here; elsewhere pip picks the
# build for your platform. Change both together.
TORCH   = torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/vislearn demo --out runs/demo

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

bench: install
	$(BIN)/python benchmarks/fmnist_ssl.py

clean:
	rm -rf runs lightning_logs .pytest_cache
