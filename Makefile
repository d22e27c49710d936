# tokenrefresher: the two commands a newcomer needs are `make demo` and `make test`.
# Everything the tests need is installed from the Go module proxy (and, for the
# Azure issues, from npm) by these targets; nothing else is assumed but Go and Node.

SHELL := bash
GO ?= go
BIN := bin
DIST := dist
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS := ./...

.PHONY: all build test vet lint unit demo package clean

all: build

## build: the handler for this machine, in bin/handler
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/handler ./handler

## test: what CI runs (.ci/run): vet, staticcheck, and every test with the race detector
test: vet lint unit

vet:
	@echo '== go vet'
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l handler)" || { echo 'gofmt would change:'; gofmt -l handler; exit 1; }

lint:
	@echo '== staticcheck'
	$(GO) tool staticcheck $(PKGS)

unit:
	@echo '== go test -race'
	$(GO) test -race -count=1 -timeout 10m $(PKGS)

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
	rm -rf $(BIN) $(DIST)
