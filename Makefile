# The two commands: `make demo` (the project's main job) and `make test` (tests + ruff + the numerics tests
# once more as an older CPU runs them).
# Both bootstrap .venv on a fresh machine; re-running is fast once it is set up.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch/torchvision builds this project is developed and tested with (pip picks them from local disk here).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
OUT ?= runs/compare-quick

.PHONY: demo test test-slow test-older-cpu lint venv clean fashion-mnist timm-conformance

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# Tests whose numbers depend on the CPU's kernels; `make test` runs them a second time as an older CPU would
# (AVX2 kernels in ATen and oneDNN), so an order-of-summation assumption fails here, not on a user's machine.
NUMERICS_TESTS := $(addprefix tests/test_,portability.py autotune.py stencil.py boundary.py models.py varcoef.py differential.py steppers.py \
	hyperbolic.py regularize.py convert.py quasilinear.py)
OLDER_CPU := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2

# `make test`: everything but the tests marked slow (torchrun launches, benchmark smoke runs, the discovery
# guide's snippets), then ruff, then the numerics tests as an older CPU runs them. `make test-slow` runs the slow
# ones; CI (.ci/run) runs both. Tests run in TEST_WORKERS processes (pytest-xdist), one torch thread each:
# measured on a 2-core machine, that beats one process with two threads (BENCHMARKS.md, "The test suite").
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS)
test: $(STAMP)
	$(PYTEST) -m "not slow"
	$(VENV)/bin/ruff check .
	@echo "The numerics tests again, as a CPU with AVX2 only would run them:"
	$(OLDER_CPU) $(PYTEST) -m "not slow" $(NUMERICS_TESTS)

test-slow: $(STAMP)
	$(PYTEST) -m slow

test-older-cpu: $(STAMP)
	$(OLDER_CPU) $(PYTEST) $(NUMERICS_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# timm's own model tests (tests/test_models.py of a checkout of timm's repository, at TIMM_REF or the installed
# timm's tag) on every pde_* model. Not part of `make test`: it needs that checkout.
#   make timm-conformance TIMM_SRC=../pytorch-image-models [TIMM_REF=v1.0.28]
timm-conformance: $(STAMP)
	@test -n "$(TIMM_SRC)" || { echo "give TIMM_SRC=path/to/pytorch-image-models (a checkout of timm's repository)"; exit 2; }
	PYTHON=$(PY) benchmarks/timm_conformance.sh "$(TIMM_SRC)" $(TIMM_REF)

# The main job: the quick ablation of the essay's ideas on Fashion-MNIST (8 minutes on machine epyc of
# BENCHMARKS.md, 2 idle cores with native bf16; compare prints the estimate for this machine after the first epoch).
# Rerunning skips finished runs. Fashion-MNIST comes from Debian's dataset-fashion-mnist when missing.
demo: $(STAMP) fashion-mnist
	$(VENV)/bin/pdeconv compare --out $(OUT)

fashion-mnist: $(STAMP)
	@$(PY) -c "from pdeconv.data import find_data; find_data('fashion-mnist', download=False)" 2>/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  if command -v apt-get >/dev/null; then \
	    echo "Fashion-MNIST not found: installing Debian's dataset-fashion-mnist"; \
	    $$SUDO apt-get install -y -q dataset-fashion-mnist || \
	      { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist; } || \
	      echo "could not install it; pdeconv will try to download Fashion-MNIST instead"; \
	  fi; }

clean:
	rm -rf $(VENV) runs .pytest_cache build src/*.egg-info
