#!/usr/bin/env bash
# Benchmark: push an image to a registry, push it again, pull it back.
#   mybuild: push REF R/bench/mb:1 (from its store)     skopeo: copy oci:LAYOUT:REF docker://R/bench/sk:1
#            the same push again (every blob present)           the same copy again
#            pull R/bench/mb:1 into a fresh store               copy docker://R/bench/sk:1 oci:DIR:bench
# A fresh Debian docker-registry on loopback (plain http) for every run of every tool; runs
# interleaved; page cache dropped before every push and pull (when allowed); a re-push follows its
# push at once, warm, as in CI. Pulls are timed until
# `sync` returns (mybuild fsyncs its blobs, skopeo does not: this keeps the comparison fair);
# pushes are not (the registry's own disk writes are the same for both and fall outside).
# Wall time and peak RSS via /usr/bin/time; median of N runs.
#
# Usage: bench/push-pull.sh [--big] [--runs N]
#   --big     also the 4 GiB image (needs ~25 GiB free disk), to show that RSS stays flat
#   --runs N  runs per tool and image (default 3)
# Images (5 layers of deterministic pseudo-random data, gzip, OCI layout) are generated once and
# kept in .cache/bench/. MYBUILD_REGISTRY_CONCURRENCY is passed through. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_args "$@"
bench_setup
[ -x /usr/bin/docker-registry ] || { echo "bench: error: /usr/bin/docker-registry missing (Debian package docker-registry)" >&2; exit 1; }

cache=.cache/bench
work="$cache/work-push-pull"
mkdir -p "$cache"
rm -rf "$work"
mkdir -p "$work"

trap 'stop_registry; rm -rf "$work"' EXIT

mb() { "$MYBUILD_CLI" --progress quiet "$@"; }

for gib in "${sizes[@]}"; do
  layout="$cache/random-${gib}g.oci"
  ref="bench/random:${gib}g"
  node fixtures/make-image.mjs random --format oci-layout --size "${gib}GiB" --layers 5 --seed "$gib" --tag "$ref" -o "$layout"
  rm -f "$work"/{mb-push,mb-repush,mb-pull,sk-push,sk-repush,sk-pull}

  # mybuild pushes from its store: load the same layout (as an OCI archive) once, untimed.
  rm -rf "$work/store-src"
  tar -C "$layout" -cf "$work/layout.tar" oci-layout index.json blobs
  mb --root "$work/store-src" load -i "$work/layout.tar" >/dev/null
  rm -f "$work/layout.tar"

  for ((i = 1; i <= runs; i++)); do
    printf 'bench: %s GiB, run %d/%d\n' "$gib" "$i" "$runs"
    start_registry
    bench_timed mb-push 0 "$MYBUILD_CLI" --root "$work/store-src" --progress quiet push "$ref" "$reg/bench/mb:1"
    BENCH_WARM=1 bench_timed mb-repush 0 "$MYBUILD_CLI" --root "$work/store-src" --progress quiet push "$ref" "$reg/bench/mb:1"
    rm -rf "$work/store-pull"
    bench_timed mb-pull 1 "$MYBUILD_CLI" --root "$work/store-pull" --progress quiet pull "$reg/bench/mb:1"
    rm -rf "$work/store-pull"
    stop_registry

    start_registry
    bench_timed sk-push 0 skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$layout:$ref" "docker://$reg/bench/sk:1"
    BENCH_WARM=1 bench_timed sk-repush 0 skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$layout:$ref" "docker://$reg/bench/sk:1"
    rm -rf "$work/oci-pull"
    bench_timed sk-pull 1 skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$reg/bench/sk:1" "oci:$work/oci-pull:bench"
    rm -rf "$work/oci-pull"
    stop_registry
  done
  rm -rf "$work/store-src"

  size_mib=$(( $(du -sbL "$layout/blobs" | cut -f1) / 1024 / 1024 ))
  echo
  echo "push / pull: ${gib} GiB image (${size_mib} MiB of blobs, 5 gzip layers), fresh registry per run, median of ${runs}, page cache dropped: ${dropped}"
  bench_table_head 10 "skopeo" "mb/skopeo"
  fmt_row 10 "push" "$work/mb-push" "$work/sk-push"
  fmt_row 10 "re-push" "$work/mb-repush" "$work/sk-repush"
  fmt_row 10 "pull" "$work/mb-pull" "$work/sk-pull"
  echo
done
