# reelbot: the two commands of the Quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch is enough for the tiny models; on a GPU machine install the CUDA build
# first (pip install torch) and this step keeps it.
TORCH_SPEC ?= torch==2.13.0
OUT ?= out

.PHONY: venv demo demo-files test lint unit integration e2e bench soak clean

$(BIN)/reelbot: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("reelbot needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	# spandrel without its dependencies (it wants torchvision, which has no build for the
	# torch above): tests/unit/test_upscale.py checks our upscaler loader against it.
	$(BIN)/python -m pip install -q --no-deps spandrel==0.4.2 einops==0.8.2
	touch $(BIN)/reelbot

venv: $(BIN)/reelbot

# The whole service on this machine: the private embedded Valkey (no Redis needed), a worker
# (tiny models on the CPU unless REELBOT_MODELS says otherwise) and the web chat. Ctrl-C stops it.
demo: venv
	@echo "reelbot demo: open http://$${REELBOT_WEB_HOST:-127.0.0.1}:$${REELBOT_WEB_PORT:-8080}/ once it says 'chat at' (Ctrl-C stops it)"
	REELBOT_MODELS=$${REELBOT_MODELS:-tiny} $(BIN)/reelbot up

demo-files: venv
	mkdir -p $(OUT)
	REELBOT_MODELS=$${REELBOT_MODELS:-tiny} $(BIN)/reelbot generate imagine "a red fox in the snow --ar 3:2 --seed 7" --out $(OUT)/fox.png
	REELBOT_MODELS=$${REELBOT_MODELS:-tiny} $(BIN)/reelbot generate video "waves at sunset --seed 7 --duration 2" --out $(OUT)/waves.mp4
	@echo "demo outputs in $(OUT)/"

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=20 tests

unit: venv
	$(BIN)/python -m pytest -q tests/unit

integration: venv
	$(BIN)/python -m pytest -q tests/integration

# The reliability suite's long run: every fault injected 20 times, Redis away for 30 s; writes
# bench/results/reliability.json and prints the figures table.
soak: venv
	REELBOT_SOAK_REPEATS=$${REELBOT_SOAK_REPEATS:-20} REELBOT_LOAD_USERS=$${REELBOT_LOAD_USERS:-1000} REELBOT_LOAD_SPREAD_S=$${REELBOT_LOAD_SPREAD_S:-300} $(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability

bench: venv
	$(BIN)/python bench/encode.py --quick
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/queue_dispatch.py --jobs 50 --stock-jobs 20

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
