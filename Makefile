# Two commands do everything on a fresh machine:  `make demo` (a short real run)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1
FMNIST_SYSTEM := /usr/share/datasets/fashion-mnist

.PHONY: setup venv data demo test test-flaky bench table clean

setup: venv data

# requirements.txt is the lock (exact versions); pyproject.toml only the ranges, so --no-deps keeps the lock's set.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Real Fashion-MNIST, offline: Debian's dataset-fashion-mnist when we are root with apt, else torchvision's download
# into datasets/FashionMNIST/raw (one of the folders data/fashion_mnist.py searches).
data: venv
	@if [ -f $(FMNIST_SYSTEM)/t10k-labels-idx1-ubyte.gz ] || [ -d datasets/FashionMNIST/raw ] || [ -d datasets/fashion-mnist ]; then \
		echo "Fashion-MNIST: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		$(BIN)/python -c "import torchvision; torchvision.datasets.FashionMNIST('datasets', download=True)"; \
	fi

demo: setup
	$(BIN)/python train.py experiment=demo

test: setup
	WANDB_MODE=disabled $(BIN)/python -m pytest

# The tests that touch timing, processes and W&B's service, repeated (pytest-repeat) and stopped at the first failure:
# `make test-flaky FLAKY_COUNT=50 FLAKY_TESTS=tests/runtime/test_run_logger.py` runs one file 50 times.
FLAKY_COUNT ?= 10
FLAKY_TESTS ?= tests/runtime/test_run_logger.py tests/runtime/test_preemption_guard.py tests/runtime/test_run_lock.py \
	tests/test_preemption.py tests/test_ddp.py tests/test_launchers.py tests/test_bad_inputs.py
test-flaky: setup
	WANDB_MODE=disabled $(BIN)/python -m pytest -x --count=$(FLAKY_COUNT) --repeat-scope=session $(FLAKY_TESTS)

bench: setup
	$(BIN)/python scripts/bench_step.py

clean:
	rm -rf $(VENV) .pytest_cache
