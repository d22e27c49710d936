# tokenrefresher: the two commands a newcomer needs are `make demo` and `make test`.
# Everything the tests need is installed by these targets, from the Go module
# proxy and npm, into .tools/; nothing else is assumed but Go and Node.

SHELL := bash
GO ?= go
BIN := bin
DIST := dist
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS := ./...

# Test tools from npm, pinned, installed under .tools/ (git-ignored). No
# package-lock: it would pin registry hosts, and the version is pinned here.
TOOLS := $(CURDIR)/.tools
AZURITE_VERSION := 3.37.0
AZURITE_BIN := $(TOOLS)/azurite/node_modules/.bin/azurite-blob
# Bicep has no compiler on npm; the tree-sitter grammar checks the syntax.
BICEP_TOOLS := $(TOOLS)/bicep
BICEP_GRAMMAR := $(BICEP_TOOLS)/node_modules/tree-sitter-bicep/tree-sitter-bicep.wasm
NPM_INSTALL := npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error

.PHONY: all build test vet lint unit fuzz demo package clean

all: build

## build: the handler for this machine, in bin/handler
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/handler ./handler

## test: what CI runs (.ci/run): vet, staticcheck, every test with the race detector, a short fuzz run
test: vet lint unit fuzz

vet:
	@echo '== go vet'
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l handler infra)" || { echo 'gofmt would change:'; gofmt -l handler infra; exit 1; }

lint:
	@echo '== staticcheck'
	$(GO) tool staticcheck $(PKGS)

# AZURITE_BIN and BICEP_TOOLS_DIR tell the tests where their tools are; with
# them set, a test that cannot use its tool fails instead of skipping.
unit: $(AZURITE_BIN) $(BICEP_GRAMMAR)
	@echo '== go test -race'
	AZURITE_BIN=$(AZURITE_BIN) BICEP_TOOLS_DIR=$(BICEP_TOOLS) $(GO) test -race -count=1 -timeout 10m $(PKGS)

$(AZURITE_BIN):
	@echo '== installing azurite $(AZURITE_VERSION) into .tools/azurite'
	$(NPM_INSTALL) --prefix $(TOOLS)/azurite azurite@$(AZURITE_VERSION)

# Only the grammar's wasm is used, so no install scripts need to run.
$(BICEP_GRAMMAR):
	@echo '== installing the Bicep grammar into .tools/bicep'
	$(NPM_INSTALL) --ignore-scripts --prefix $(BICEP_TOOLS) tree-sitter-bicep@1.1.0 web-tree-sitter@0.24.7

## fuzz: each fuzz target for FUZZTIME (go test -fuzz takes one package and one target at a time)
FUZZTIME ?= 5s
FUZZ_TARGETS := \
	./handler/internal/config:FuzzParseConnections \
	./handler/internal/oauth:FuzzTokenResponse \
	./handler/internal/functions:FuzzTokenRequest \
	./handler/internal/functions:FuzzTimerEnvelope

# A run that ends in "context deadline exceeded" without writing a failing
# input is the fuzzing coordinator's own end-of-run race (golang/go#75804),
# not a finding; anything else fails the target. Seed corpora are in each
# package's testdata/fuzz and also run as plain tests in `unit`.
fuzz:
	@set -o pipefail; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== fuzz $$name in $$pkg for $(FUZZTIME)"; \
		if ! $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s -parallel 1 $$pkg 2>&1 | tee $$log; then \
			if grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
				echo "== $$name: coordinator deadline race (golang/go#75804), nothing found"; \
			else exit 1; fi; \
		fi; \
	done

## demo: run the handler on the embedded defaults against the strict test provider
demo: build
	$(GO) run ./handler/cmd/demo -handler $(BIN)/handler

## package: dist/ with host.json, the linux/amd64 handler (0755), the function folders, and dist/tokenrefresher.zip
package:
	rm -rf $(DIST)
	mkdir -p $(DIST)/app
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/app/handler ./handler
	chmod 0755 $(DIST)/app/handler
	cp host.json $(DIST)/app/
	cp -R functions/. $(DIST)/app/
	$(GO) run ./handler/cmd/pack -dir $(DIST)/app -out $(DIST)/tokenrefresher.zip
	@echo "dist/app is the function app; dist/tokenrefresher.zip is what you deploy"

clean:
	rm -rf $(BIN) $(DIST) $(TOOLS)
