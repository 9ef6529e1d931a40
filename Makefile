# Two entry points for a fresh machine; each does its own setup.
#   make run    set up, then train + score the default benchmark (fmnist) and print the table
#   make test   set up, then run the test suite
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
BENCH   ?= fmnist
SEEDS   ?= 1
ARGS    ?=
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-avx2 setup data lint clean bench-perf

run: setup
	$(BIN)/oodbench run --benchmark $(BENCH) --seeds $(SEEDS) $(ARGS)

# pytest-xdist over every core, one test file per worker: a file's tests share its module
# fixtures (test_executors.py's Ray cluster). Files start in collection order, where
# tests/conftest.py puts the longest first (xdist's own order, most tests first, ran the long
# one-test files last while the other worker sat idle). A worker that crashes (abort,
# segfault, or pytest-timeout ending a hung test) ends the run at once, naming its test:
# xdist 3.8 would start a new worker, which under --dist loadfile runs the crashed test
# again, can lose the file's other tests and can leave the run waiting forever on idle workers
XDIST := -n auto --dist loadfile --no-loadscope-reorder --max-worker-restart=0

# the suite
test: setup
	$(BIN)/python -m pytest $(XDIST)

# the training and extraction tests (marker kernels) again on oneDNN's AVX2 kernels, which
# any x86 CPU runs (CI does, after make test)
test-avx2: setup
	ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -m kernels $(XDIST)

# ruff, the import contracts of pyproject.toml's [tool.importlinter] (the layers, no cycles)
# and mypy's type check of the package and the built-in scorers ([tool.mypy])
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/mypy

# speed figures of the evaluation path: results/perf.md and results/perf.json (benchmarks/perf.py).
# Installs what the figures compare against: pytorch-ood (without its dependencies, so torch
# stays as it is) and the optional faiss-cpu backend of knn.
bench-perf: setup
	$(BIN)/python -c "import pytorch_ood" 2>/dev/null || $(BIN)/pip install -q --no-deps "pytorch-ood==0.4.0"
	$(BIN)/pip install -q -e ".[faiss,bench]"
	$(BIN)/python -m benchmarks.perf $(ARGS)

setup: data $(BIN)/.installed

# Fashion-MNIST from Debian's package (the default benchmark's ID set)
data:
	@[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[dev,models,ray]"
	touch $@

clean:
	rm -rf $(VENV) runs
