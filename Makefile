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

.PHONY: all build test vet lint unit chromium fuzz bench demo package clean

all: build

## build: the handler for this machine, in bin/handler
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/handler ./handler

## test: what CI runs (.ci/run): vet, staticcheck, every test with the race detector, a short fuzz run
test: vet lint unit fuzz

vet:
	@echo '== go vet'
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l handler infra adf)" || { echo 'gofmt would change:'; gofmt -l handler infra adf; exit 1; }

lint:
	@echo '== staticcheck'
	$(GO) tool staticcheck $(PKGS)
	@echo '== gosec $(GOSEC_VERSION)'
	$(GO) run github.com/securego/gosec/v2/cmd/gosec@$(GOSEC_VERSION) -quiet -exclude-generated -nosec-require-rules -nosec-require-justification -exclude-rules='$(GOSEC_EXCLUDE_RULES)' $(PKGS)

# gosec runs at a pinned version through `go run pkg@version`, not as a tool
# in go.mod: its AI-autofix clients bring some 50 modules that neither the
# handler nor its tests use, and go.mod lists what those need.
GOSEC_VERSION := v2.30.0

# gosec findings are fixed, or suppressed with their reason: in the code as
# `// #nosec G### -- reason` (the flags above refuse one without both), or
# here, path regexp:rules, for whole files: only the developer tools and
# the test tooling below. Test files are not scanned (gosec's default).
# Developer tools (demo, bench, pack) and the Azurite launcher of the tests:
# not in the deployed app; they run the programs and read the files their
# user names, and call the handler they started, on loopback.
GOSEC_EXCLUDE += handler/cmd/.*:G104,G107,G122,G204,G304
GOSEC_EXCLUDE += handler/internal/azurite/.*:G104,G204,G704
# Everything else is suppressed where it is found, with its reason, so that
# a new finding in the same file is reported.
empty :=
GOSEC_EXCLUDE_RULES := $(subst $(empty) $(empty),;,$(strip $(GOSEC_EXCLUDE)))

# AZURITE_BIN and BICEP_TOOLS_DIR tell the tests where their tools are; with
# them set, a test that cannot use its tool fails instead of skipping.
unit: $(AZURITE_BIN) $(BICEP_GRAMMAR) chromium
	@echo '== go test -race'
	AZURITE_BIN=$(AZURITE_BIN) BICEP_TOOLS_DIR=$(BICEP_TOOLS) CHROMIUM_BIN=$(CHROMIUM_BIN) $(GO) test -race -count=1 -timeout 10m $(PKGS)

# The browser test of `handler connect` drives Debian's Chromium headless.
# Installed here when missing, if this runs as root with apt-get (CI and the
# project's machines); elsewhere install a Chromium and point CHROMIUM_BIN at
# it. Without one the test skips, except under CI=true, where it fails.
CHROMIUM_BIN ?= /usr/bin/chromium
chromium:
	@if [ ! -x '$(CHROMIUM_BIN)' ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo '== installing chromium (Debian) for the browser test'; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo '== $(CHROMIUM_BIN) is missing and cannot be installed here: the browser test skips (fails under CI=true)'; \
		fi; \
	fi

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
	./handler/internal/oauth:FuzzProviderEcho \
	./handler/internal/functions:FuzzTokenRequest \
	./handler/internal/functions:FuzzTimerEnvelope \
	./handler/internal/functions:FuzzPlainPath

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

## bench: every performance figure, each with the command behind it (the README's Performance section)
bench: build $(AZURITE_BIN)
	@echo '== go test -run "^$$" -bench BenchmarkTokenCacheHit -benchmem ./handler/internal/broker'
	@$(GO) test -run '^$$' -bench BenchmarkTokenCacheHit -benchmem ./handler/internal/broker | grep -E '^Benchmark'
	@echo '== go test -run "^$$" -bench "CostPerThousand|SweepThousand" -benchtime 1x ./handler'
	@AZURITE_BIN=$(AZURITE_BIN) $(GO) test -run '^$$' -bench 'CostPerThousand|SweepThousand' -benchtime 1x -timeout 15m ./handler | grep -E '^Benchmark|bench_test.go'
	@echo '== go test -run "^$$" -bench LossWindow -benchtime 3000x ./handler'
	@AZURITE_BIN=$(AZURITE_BIN) $(GO) test -run '^$$' -bench LossWindow -benchtime 3000x -timeout 15m ./handler | grep -E '^Benchmark'
	@echo '== CAPACITY=1 go test -v -run TestCapacity ./handler/internal/keyvault -args -capacity.conns 45000 -capacity.accesstokens blob -capacity.budget 170   (45,000 rotating connections in one vault; three simulated hours on a fake clock; minutes of real time)'
	@CAPACITY=1 $(GO) test -v -count=1 -run TestCapacity -timeout 60m ./handler/internal/keyvault -args -capacity.conns 45000 -capacity.accesstokens blob -capacity.budget 170 | grep -vE '^(=== |--- |PASS|ok )'
	@echo '== go run ./handler/cmd/bench -handler $(BIN)/handler'
	@$(GO) run ./handler/cmd/bench -handler $(BIN)/handler

## demo: run the handler on the embedded defaults against the strict test provider
demo: build
	$(GO) run ./handler/cmd/demo -handler $(BIN)/handler

# The release holds what deploying needs without Go or make: the package,
# the templates, azure.yaml for azd, the ADF kit and the guides
# (infra/README.md, "Deploy from the release").
RELEASE_FILES := README.md SECURITY.md CONTRIBUTING.md azure.yaml schema examples docs \
	infra/README.md infra/main.bicep infra/main.parameters.json infra/modules \
	adf/README.md adf/MIGRATION.md adf/SNIPPETS.md adf/factory.bicep adf/pipeline adf/dataset adf/linkedService

## package: dist/ with host.json, the linux/amd64 handler (0755), the function folders, dist/tokenrefresher.zip, and the release dist/tokenrefresher-release.zip
package:
	rm -rf $(DIST)
	mkdir -p $(DIST)/app
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/app/handler ./handler
	chmod 0755 $(DIST)/app/handler
	cp host.json $(DIST)/app/
	cp -R functions/. $(DIST)/app/
	$(GO) run ./handler/cmd/pack -dir $(DIST)/app -out $(DIST)/tokenrefresher.zip
	mkdir -p $(DIST)/release/dist
	tar -cf - $(RELEASE_FILES) | tar -xf - -C $(DIST)/release
	cp $(DIST)/tokenrefresher.zip $(DIST)/release/dist/
	$(GO) run ./handler/cmd/pack -dir $(DIST)/release -out $(DIST)/tokenrefresher-release.zip
	@echo "dist/app is the function app; dist/tokenrefresher.zip is what you deploy; dist/tokenrefresher-release.zip deploys without Go (infra/README.md)"

clean:
	rm -rf $(BIN) $(DIST) $(TOOLS)
