# mybuild — every target installs what it needs first (scripts/setup.sh, idempotent, fast when done).
SHELL := /bin/bash

.PHONY: help demo test build setup bench bench-registry bench-build

help:
	@echo 'make demo    build examples/hello-app into the default store, rebuild it cached, run it'
	@echo 'make test    typecheck, lint and run every test (prints: tests: N passed, M failed)'
	@echo 'make build   install what is missing, then build all packages'
	@echo 'make setup   install Debian packages, pnpm and node_modules (no build)'
	@echo 'make bench   load+unpack benchmark against skopeo+umoci (BENCH_ARGS="--big" adds 4 GiB)'
	@echo 'make bench-registry  push/re-push/pull of a 1 GiB image against skopeo'
	@echo 'make bench-build     three Dockerfiles against buildah and BuildKit (BENCH_ARGS="--only a")'

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

bench-registry:
	@bash bench/push-pull.sh $(BENCH_ARGS)

bench-build:
	@bash bench/build.sh $(BENCH_ARGS)
