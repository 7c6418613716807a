# CPS: proto generation, lint, tests, benchmarks, running a node.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTO_DIR := protos
PY_OUT := client_py
# The node-to-node contract is the server's alone.
PEER_OUT := server
# etcd's API subset (wire compatible): the .proto files sit beside their
# generated Python, outside protos/ (docs/etcd-client.md).
ETCD_SRC := server
ETCD_PKG := $(ETCD_SRC)/cps/server/cluster/etcdpb
PROTOC_MYPY := --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc
LISTEN ?= 127.0.0.1:50051
STAMP := $(VENV)/.installed

.PHONY: toolchains install proto proto-check lint lint-deploy test test-faults run cluster bench bench-quick clean stubs breaking

# Editable install with the dev tools, redone when pyproject.toml changes.
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Regenerate the Python stubs and their typed .pyi: cps.v1 from protos/, the
# node-to-node contract cps.peer.v1 into server/ (the server's alone), and
# cps.server.cluster.etcdpb from the etcd subset beside it (services only in
# rpc.proto, so kv.proto gets no empty _grpc module).
PROTOC := $(BIN)/python -m grpc_tools.protoc $(PROTOC_MYPY)
proto: $(STAMP)
	rm -f $(PY_OUT)/cps/v1/*_pb2*.py $(PY_OUT)/cps/v1/*_pb2*.pyi
	$(PROTOC) -I $(PROTO_DIR) --python_out=$(PY_OUT) --grpc_python_out=$(PY_OUT) \
		--mypy_out=$(PY_OUT) --mypy_grpc_out=$(PY_OUT) $(PROTO_DIR)/cps/v1/*.proto
	rm -f $(PEER_OUT)/cps/peer/v1/*_pb2*.py $(PEER_OUT)/cps/peer/v1/*_pb2*.pyi
	$(PROTOC) -I $(PROTO_DIR) --python_out=$(PEER_OUT) --grpc_python_out=$(PEER_OUT) \
		--mypy_out=$(PEER_OUT) --mypy_grpc_out=$(PEER_OUT) $(PROTO_DIR)/cps/peer/v1/*.proto
	rm -f $(ETCD_PKG)/*_pb2*.py $(ETCD_PKG)/*_pb2*.pyi
	$(PROTOC) -I $(ETCD_SRC) --python_out=$(ETCD_SRC) --mypy_out=$(ETCD_SRC) \
		$(ETCD_PKG)/kv.proto $(ETCD_PKG)/rpc.proto
	$(PROTOC) -I $(ETCD_SRC) --grpc_python_out=$(ETCD_SRC) --mypy_grpc_out=$(ETCD_SRC) \
		$(ETCD_PKG)/rpc.proto

# Fails when the committed stubs differ from a fresh generation.
GENERATED := $(PY_OUT)/cps/v1 $(PEER_OUT)/cps/peer/v1 $(ETCD_PKG)
proto-check: proto
	git diff --exit-code -- $(GENERATED)
	@test -z "$$(git status --porcelain -- $(GENERATED))" || \
		{ echo "untracked generated files:"; git status --porcelain -- $(GENERATED); exit 1; }

lint: $(STAMP) breaking lint-deploy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server client_py tests bench
	cd $(PROTO_DIR) && ../$(BIN)/buf lint

# The deployment files of docker/, offline (docs/deployment.md): Kubernetes
# manifests and compose files against the JSON schemas bundled in the dev
# extra's packages, cps-server flags, every node's settings through the
# server's own validation (a node that would refuse to start fails here),
# hadolint, shellcheck; and mypy on the scripts outside the folders that
# `lint` hands to mypy.
lint-deploy: $(STAMP)
	$(BIN)/python scripts/validate_deploy.py
	$(BIN)/mypy scripts/validate_deploy.py docker/healthcheck.py

# Fails when protos/ breaks the committed baseline of the last release (a
# change that would break existing stubs): docs/clients/compatibility.md.
breaking: $(STAMP)
	cd $(PROTO_DIR) && ../$(BIN)/buf breaking --against baseline/cps-v1.binpb

# C++, Go and Node.js client stubs from protos/ only, into build/stubs/
# (toolchains: scripts/install-toolchains.sh; docs/clients/).
stubs: toolchains
	$(MAKE) -C clients/cpp stubs
	$(MAKE) -C clients/go stubs
	test -d clients/node/node_modules || (cd clients/node && npm ci --no-audit --no-fund)
	rm -rf build/stubs/node
	cd clients/node && node_modules/.bin/proto-loader-gen-types \
		$(patsubst $(PROTO_DIR)/%,%,$(wildcard $(PROTO_DIR)/cps/v1/*.proto)) \
		google/rpc/status.proto google/rpc/error_details.proto \
		--outDir=../../build/stubs/node --grpcLib=@grpc/grpc-js \
		--longs=String --enums=String --defaults --oneofs \
		--includeDirs=../../$(PROTO_DIR) --includeDirs=../third_party/googleapis

# The interop tests build C++, Go and Node clients: their toolchains first
# (idempotent, about a second when already there).
toolchains:
	bash scripts/install-toolchains.sh

test: $(STAMP) toolchains
	$(BIN)/pytest -q

# The cluster fault tests (kill -9, pause, partition, restart, etcd loss)
# FAULT_ROUNDS times in a row (make test runs them once).
FAULT_ROUNDS ?= 5
test-faults: $(STAMP) toolchains
	for round in $$(seq $(FAULT_ROUNDS)); do \
		echo "fault round $$round of $(FAULT_ROUNDS)"; \
		$(BIN)/pytest -q tests/cluster/test_faults.py || exit 1; \
	done

run: $(STAMP)
	$(BIN)/cps-server --listen $(LISTEN)

# Three nodes and a 3-member etcd on this machine (Ctrl-C stops them all).
cluster: $(STAMP) toolchains
	bash scripts/local-cluster.sh

bench: $(STAMP)
	$(BIN)/python -m bench.run --repeat 3 --out bench/RESULTS.md

# A short run (1 s per scenario, in-flight 1 and 16), printed only.
bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
