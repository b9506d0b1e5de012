# voicetyped — build, test and run everything from a fresh machine.
#
#   make demo    the whole pipeline on this machine and a scripted call (no cluster)
#   make test    lint + every test suite, e2e on a local control plane (.ci/run)
#   make install the whole uv workspace into .venv for development
#   make proto   regenerate voicetyped.v1 Python code from proto/
#   make crds    regenerate crds/ (and the chart's copy) from the operator's models
#   make dockerfiles  regenerate the five Dockerfiles from their one template
#   make images  build the images into the local engine (cached by content) and containerd
#   make lint    ruff, mypy, import rules, hadolint, lock freshness
#   make bench   benchmarks; JSON results in bench/results/
#
# Tools and caches live outside the checkout so a fresh clone reuses them:
# $(VOICETYPED_CACHE) (default ~/.cache/voicetyped, or $XDG_CACHE_HOME/voicetyped).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

XDG_CACHE_HOME ?= $(HOME)/.cache
VOICETYPED_CACHE ?= $(XDG_CACHE_HOME)/voicetyped
export VOICETYPED_CACHE

UV_VERSION := 0.13.9
TOOLS := $(VOICETYPED_CACHE)/tools/uv-$(UV_VERSION)
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(TOOLS)/bin:$(PATH)

# Never let uv fetch a Python build: use the machine's 3.11.
export UV_PYTHON := 3.11
export UV_PYTHON_DOWNLOADS := never
export UV_CACHE_DIR ?= $(XDG_CACHE_HOME)/uv

# Debian packages the test suites need (real peers, not mocks).
APT_PACKAGES := redis-server sip-tester baresip libopus0 espeak-ng
# The console and WebRTC tests drive a real headless browser (Playwright with this executable).
APT_PACKAGES += chromium fonts-dejavu-core
# The project's own container engine and image base (tests/e2e/cluster/engine.py, images.py):
# Debian's docker.io, containerd and runc unless a dockerd is installed; debootstrap; gcc (pause).
APT_PACKAGES += $(if $(wildcard /usr/bin/dockerd /usr/sbin/dockerd /usr/local/bin/dockerd),,\
	docker.io containerd runc) debootstrap gcc libc6-dev
# The local cluster's real node (tests/e2e/cluster/node.py): CNI plugins, kube-proxy's tools.
APT_PACKAGES += containernetworking-plugins iptables conntrack

SRC_DIRS := common specs dev testkit images operator conftest.py proto/generate.py bench tests examples
DOCKERFILES := $(wildcard images/*/Dockerfile) operator/Dockerfile examples/backend/Dockerfile \
	tests/e2e/cluster/pause/Dockerfile tests/e2e/images/redis/Dockerfile

# cluster-up / cluster-down / e2e / e2e-local / kind-e2e (a local control plane from Go modules).
include tests/e2e/cluster/cluster.mk

.PHONY: help install system-deps proto crds dockerfiles images lint format test unit bench clean demo

help:
	@grep -hE '^#   make' $(MAKEFILE_LIST) | sed 's/^#   //'

$(UV):
	python3 -m venv "$(TOOLS)"
	"$(TOOLS)/bin/pip" install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The stamp makes repeated runs instant; uv.lock or any pyproject change re-syncs.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml $(wildcard */pyproject.toml images/*/pyproject.toml)
	"$(UV)" sync --locked --all-packages
	touch "$@"

install: $(VENV)/.synced

# Installs only what is missing; needs root (CI and dev machines run as root) or sudo.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing:$$missing"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

proto: install
	$(PY) proto/generate.py

# The CRDs are generated from the operator's pydantic models (a unit test fails when stale),
# and the Argo CD argocd-cm snippet from the chart's health.lua script.
# The five Dockerfiles come from one template (a unit test fails when they are stale).
dockerfiles: install
	$(PY) -m voicetyped_dev.dockerfiles

# Standard library only (the local node's code builds them with any python3): starts the
# project's engine when no Docker daemon answers, builds what changed, imports into containerd.
images: system-deps
	python3 tests/e2e/cluster/images.py $(IMAGES_ARGS)

crds: install
	$(PY) -m voicetyped_operator.crds --out crds --out charts/voicetyped-operator/crds
	$(PY) -m voicetyped_operator.argocd --root charts/voicetyped-operator/argocd

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lint: install
	"$(UV)" lock --check
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(SRC_DIRS)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint $(DOCKERFILES)

unit: install system-deps
	PYTHONFAULTHANDLER=1 $(VENV)/bin/pytest -m "not e2e"  # a crash at exit names its threads

test: lint unit e2e-local

# `voicetyped up` in the background, the scripted order-status call, then everything stopped.
demo: install system-deps
	$(PY) -m voicetyped_dev.caller.demo

bench: install system-deps
	mkdir -p bench/results
	$(PY) bench/session_codec.py --out bench/results/session_codec.json
	$(PY) bench/session_store.py --out bench/results/session_store.json
	$(PY) bench/integration_gateway.py --out bench/results/integration_gateway.json
	$(PY) bench/runtime_engine.py --out bench/results/runtime_engine.json
	$(PY) bench/speech.py --out bench/results/speech.json
	$(PY) bench/asr_capacity.py --out bench/results/asr_capacity.json  # and asr_capacity.png
	$(PY) bench/tts_first_audio.py --out bench/results/tts_first_audio.json  # and WAV pairs
	$(PY) bench/numbers_round_trip.py --out bench/results/numbers_round_trip.json
	$(PY) bench/biasing.py --out bench/results/biasing.json --models tiny.en,base
	$(PY) bench/media.py --out bench/results/media.json
	$(PY) bench/media_tls_srtp.py --out bench/results/media_tls_srtp.json
	$(PY) bench/turn_latency.py --out bench/results/turn_latency.json  # and turn_latency.png
	$(PY) bench/webrtc_turns.py --out bench/results/webrtc_turns.json
	$(PY) bench/sip_flood.py --out bench/results/sip_flood.json
	$(PY) bench/turn_stalls.py --out bench/results/turn_stalls.json
	$(PY) bench/barge_in.py --out bench/results/barge_in.json
	$(PY) bench/turn_taking.py --out bench/results/turn_taking.json  # and turn_taking.png
	$(PY) bench/recognition.py --out bench/results/recognition.json
	$(PY) bench/operator_apply.py --out bench/results/operator.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis bench/results
