# The two commands a user needs: `make run` and `make test`. Both install
# what they need first (scripts/deps.sh), so a fresh Debian 12 machine works.

GO       ?= go
BIN      ?= bin/hypercore
DATA_DIR ?= /var/lib/hypercore
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: all deps bench-deps build run test test-short proto bench clean

all: build

deps:
	@scripts/deps.sh

bench-deps:
	@scripts/deps.sh --bench

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/hypercore

# A node on embedded defaults: API on 127.0.0.1:8000, proxy on :80, <id>.localhost.
run: deps build
	$(BIN) cluster --data-dir $(DATA_DIR)

# Every test, with real runc, network namespaces and an in-process registry.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...

proto:
	buf generate

bench: bench-deps build
	bench/spawn/run.sh
	bench/proxy/run.sh

clean:
	rm -rf bin
