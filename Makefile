# mybuild — every target installs what it needs first (scripts/setup.sh, idempotent, fast when done).
SHELL := /bin/bash

.PHONY: help demo test build setup bench

help:
	@echo 'make demo    load, list, inspect, tag, save and unpack a busybox image in the local store'
	@echo 'make test    typecheck, lint and run every test (prints: tests: N passed, M failed)'
	@echo 'make build   install what is missing, then build all packages'
	@echo 'make setup   install Debian packages, pnpm and node_modules (no build)'
	@echo 'make bench   load+unpack benchmark against skopeo+umoci (BENCH_ARGS="--big" adds 4 GiB)'

demo:
	@bash scripts/demo.sh

test:
	@bash scripts/test.sh

build:
	@bash scripts/setup.sh

setup:
	@bash scripts/setup.sh --no-build

bench:
	@bash bench/load-unpack.sh $(BENCH_ARGS)
