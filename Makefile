# janitor — make targets. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
export JANITOR_TEST_REDIS_URL ?= redis://127.0.0.1:6379
export JANITOR_TEST_PG_URL ?= postgres://postgres@127.0.0.1:5432/test

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: services
services: ## Start (or install) the Redis and PostgreSQL the tests use
	@bash .ci/services.sh

.PHONY: browser
browser: ## Install Debian's Chromium and chromedriver for the browser test (if missing)
	@bash .ci/browser.sh

.PHONY: build
build: ## Build the janitor binary (debug)
	$(CARGO) build --workspace --bins

.PHONY: release
release: ## Build the janitor binary (release)
	$(CARGO) build --release -p janitor

.PHONY: validate-deploy
validate-deploy: ## Check the Dockerfile, compose file and Kubernetes manifests (offline schemas)
	@mkdir -p target; bash scripts/validate-deploy.sh > target/validate-deploy.log 2>&1 || { cat target/validate-deploy.log; exit 1; }
	@tail -1 target/validate-deploy.log

.PHONY: test
test: services browser build validate-deploy ## Run every test against real Redis, SQLite and PostgreSQL
	@mkdir -p target
	@set -o pipefail; $(CARGO) test --workspace --all-targets 2>&1 | tee target/test-output.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.log

.PHONY: openapi
openapi: build ## Write the admin API's OpenAPI document to docs/openapi.json (a test keeps it current)
	target/debug/janitor openapi > docs/openapi.json

.PHONY: lint
lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: fuzz
fuzz: ## Property-fuzz the parsers, the payload decoder and the verdict: 1,000,000 cases per target (release)
	@time JANITOR_FUZZ_CASES=$${JANITOR_FUZZ_CASES:-1000000} $(CARGO) test --release -p janitor-core --test fuzz

.PHONY: demo
demo: ## The incident on a platform-shaped SQLite file: before, one janitor cycle, after
	@bash scripts/demo.sh

.PHONY: bench
bench: services ## Catch-up, sweep (100k, 1M), steady-state (due pass vs 10 s sweeps) and skip-intake benchmarks (release build)
	$(CARGO) build --release -p janitor -p janitor-bench
	before=$$(bash scripts/before-issue-14.sh) && \
	  target/release/janitor-bench $${before:+--before-janitor "$$before"} $(BENCH_ARGS)

.PHONY: soak
soak: services ## Chaos soak: 10,000 runs per database under kills, a Redis kill -9 and outages; the oracle's table (release build)
	$(CARGO) build --release -p janitor -p janitor-soak
	target/release/janitor-soak --db both $(SOAK_ARGS)

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean
