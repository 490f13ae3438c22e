# oci2layers: make help lists the targets.
GO      ?= go
BIN     := bin/oci2layers
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Debian packages the targets need, as command:package.
RUNTIME_DEPS := mksquashfs:squashfs-tools unsquashfs:squashfs-tools python3:python3
TEST_DEPS    := $(RUNTIME_DEPS) docker-registry:docker-registry
BENCH_DEPS   := $(TEST_DEPS) skopeo:skopeo umoci:umoci debootstrap:debootstrap

.PHONY: help build test unit e2e demo bench lint clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build bin/oci2layers
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/oci2layers

demo: build ## convert the built-in demo image and a variant (offline)
	@scripts/deps.sh $(RUNTIME_DEPS)
	scripts/demo.sh

test: ## run every test: unit and end-to-end (installs Debian packages as root)
	@scripts/deps.sh $(TEST_DEPS)
	$(GO) test -count=1 -timeout 20m ./...

unit: ## run the unit tests only
	$(GO) test -count=1 $(shell $(GO) list ./... | grep -v /e2e)

e2e: ## run the end-to-end tests only
	@scripts/deps.sh $(TEST_DEPS)
	$(GO) test -count=1 -timeout 20m -v ./e2e/

bench: build ## compare with skopeo+umoci+mksquashfs on a realistic image
	@scripts/deps.sh $(BENCH_DEPS)
	bash bench/run.sh

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove build outputs and the demo
	rm -rf bin demo
