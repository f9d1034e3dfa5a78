# Two commands on a fresh machine: `make run` (install + main job) and `make test` (install + tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/datasets/cifar10
OUT ?= runs/pipeline
# auto: fast, or timed (20 minutes by the clock) on a CPU without native bf16 (AMX / AVX512-BF16)
PRESET ?= auto
# The torch to install: here a CPU wheel on local disk; elsewhere PyPI's torch is a multi-GB CUDA
# build on Linux, so say which, e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0

.PHONY: install run test clean chromium

$(BIN)/reprlab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/reprlab

install: $(BIN)/reprlab

run: install
	$(BIN)/reprlab pipeline --data $(DATA)/cifar10_train.tar.xz \
		--test_data $(DATA)/cifar10_test_images.npz --preset $(PRESET) --out $(OUT)

# tests/test_report.py renders report.html in headless Chromium (Debian package `chromium`).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

test: install chromium
	$(BIN)/ruff check src tests benchmarks
	REPRLAB_TEST_DATA=$(DATA) $(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache
