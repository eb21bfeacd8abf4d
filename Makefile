# Deckhand build. `make demo` runs the main job locally, `make test` runs the tests.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/deckhand-dev/deckhand/pkg/version.Version=$(VERSION)

.PHONY: all build test test-short demo proto vet fmt bench clean package

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./controlplane/cmd/... ./agent/cmd/... ./e2e/aemsim

# test is the README's test command; .ci/run calls exactly this.
test:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -timeout 20m ./...

test-short:
	$(GO) test -short ./...

# demo runs the main job locally (README): a control plane, agents, Apache,
# HAProxy and a full production pipeline execution, until Ctrl-C
# (DEMO_EXIT=1: check the outcome and exit). Built, not `go run`, so Ctrl-C
# and the exit status reach the demo itself.
demo: build
	$(GO) build -o $(BIN)/deckhand-demo ./e2e/demo
	$(BIN)/deckhand-demo --bin $(BIN)

bench: build
	$(GO) run ./e2e/bench/fleet --bin $(BIN)

# package builds dist/deckhand-{agent,server}_<version>_amd64.{deb,rpm} from
# bin/ (packaging/README.md). The tag brings in nfpm's deb and rpm packagers
# (packaging/nfpm/packagers.go).
package: build
	$(GO) run -tags nfpm_packagers ./packaging/nfpm --bin $(BIN) --dist $(CURDIR)/dist --version $(VERSION)

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

# proto regenerates the committed Go code from proto/deckhand/v1/*.proto with
# Debian's protobuf-compiler and the pinned plugins.
proto: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	PATH=$(BIN):$$PATH protoc -I proto -I /usr/include \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  proto/deckhand/v1/*.proto

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

clean:
	rm -rf $(BIN) dist
