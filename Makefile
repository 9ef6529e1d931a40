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

.PHONY: run test setup data lint clean bench-perf

run: setup
	$(BIN)/oodbench run --benchmark $(BENCH) --seeds $(SEEDS) $(ARGS)

# the suite over every core (pytest-xdist), one test file per worker: a file's tests share
# its module fixtures (test_executors.py's Ray cluster)
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile

lint: setup
	$(BIN)/ruff check .

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
