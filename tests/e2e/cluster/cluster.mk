# Local Kubernetes control plane and the e2e suites (included by the main Makefile).
#
#   make e2e     tests/e2e on $KUBECONFIG if set, else on the local control plane
#   make e2e-local     tests/e2e on the local control plane, whatever KUBECONFIG says
#   make cluster-up    local control plane: etcd, apiserver, controllers, KWOK nodes
#   make cluster-down  stop it and delete its etcd data
#   make kind-e2e  kind + images + tests/e2e (needs Docker with privileged containers; not CI)
#
# The binaries are built once and cached in $VOICETYPED_CACHE/cluster (see docs/testing.md).
# Standalone use (without the main Makefile): make -f tests/e2e/cluster/cluster.mk e2e
# (needs an installed .venv for e2e).

ifndef UV
# Not included from the main Makefile: the few variables it would have given us.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
VENV ?= .venv
E2E_PREREQS ?=
else
E2E_PREREQS ?= install
# The local cluster's real node runs the images (make images: cached by content).
LOCAL_E2E_PREREQS ?= images
endif

# Standard library only: any python3 runs it (the cluster targets need no .venv).
CLUSTER := python3 tests/e2e/cluster/cluster.py

.PHONY: cluster-build cluster-up cluster-down cluster-status cluster-env e2e e2e-local \
	kind-e2e kind-down

cluster-build:
	$(CLUSTER) build

cluster-up:
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

cluster-status:
	$(CLUSTER) status

# eval "$(make -s cluster-env)" points kubectl at the local cluster.
cluster-env:
	@$(CLUSTER) env

# With no KUBECONFIG the local cluster is started for the run and stopped afterwards
# (unless it was already up; VOICETYPED_KEEP_CLUSTER=1 keeps it). Extra pytest
# arguments: make e2e E2E_ARGS="-k crd".
e2e: $(E2E_PREREQS)
	$(CLUSTER) exec -- $(VENV)/bin/pytest -m e2e tests/e2e $(E2E_ARGS)

# The same on the local control plane whatever KUBECONFIG says (what `make test` runs), with
# its real node required (VOICETYPED_REAL_NODE=1: no live test may skip; 0 for KWOK only).
e2e-local: $(E2E_PREREQS) $(LOCAL_E2E_PREREQS)
	env -u KUBECONFIG VOICETYPED_REAL_NODE=$${VOICETYPED_REAL_NODE:-1} \
		$(CLUSTER) exec -- $(VENV)/bin/pytest -m e2e tests/e2e $(E2E_ARGS)

# Needs a Docker engine (not available on CI). The kind cluster is kept for reruns:
# make kind-down deletes it.
kind-e2e: $(E2E_PREREQS)
	$(CLUSTER) kind-e2e -- $(E2E_ARGS)

kind-down:
	$(CLUSTER) kind-down
