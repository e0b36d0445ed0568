# The two commands: `make demo` (the project's main job) and `make test` (tests + ruff).
# Both bootstrap .venv on a fresh machine; re-running is fast once it is set up.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch/torchvision builds this project is developed and tested with (pip picks them from local disk here).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
OUT ?= runs/demo

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check .

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(VENV)/bin/pdeconv demo translation --out $(OUT)

clean:
	rm -rf $(VENV) runs .pytest_cache build src/*.egg-info
