# The two commands a user needs: `make run` and `make test`. Both install
# what they need first (scripts/deps.sh), so a fresh Debian 12 machine works.

GO       ?= go
BIN      ?= bin/hypercore
DATA_DIR ?= /var/lib/hypercore
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# Where downloaded guest kernels are kept, outside the repo and any data dir,
# so reruns and CI reuse them (hypercore vm prepare --cache-dir).
CACHE_DIR ?= /var/cache/hypercore

.PHONY: all deps bench-deps build vm-prepare run test test-short proto bench clean

all: build

deps:
	@scripts/deps.sh

bench-deps:
	@scripts/deps.sh --bench

# Static (CGO_ENABLED=0): the binary is also the microVM guest's /init, and a
# static one goes into the initramfs alone, with no host libraries beside it.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/hypercore

# The guest kernel for microVMs: Debian's cloud kernel, fetched once per
# version into CACHE_DIR and installed into DATA_DIR. Does nothing if done.
vm-prepare: build
	$(BIN) vm prepare --data-dir $(DATA_DIR) --cache-dir $(CACHE_DIR)

# A node on embedded defaults: API on 127.0.0.1:8000, proxy on :80, <id>.localhost.
run: deps build vm-prepare
	$(BIN) cluster --data-dir $(DATA_DIR)

# Every test, with real runc, network namespaces and an in-process registry.
test: deps vm-prepare
	$(GO) vet ./...
	HYPERCORE_CACHE=$(CACHE_DIR) $(GO) test -count=1 -timeout 25m ./...

proto:
	buf generate

bench: bench-deps build
	bench/spawn/run.sh
	bench/proxy/run.sh
	bench/cluster/run.sh

clean:
	rm -rf bin
