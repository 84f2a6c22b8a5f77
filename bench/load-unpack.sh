#!/usr/bin/env bash
# Benchmark: load a docker-archive into a store and unpack the image's root filesystem.
#   mybuild:        mybuild load -i X              then  mybuild unpack REF DIR
#   skopeo + umoci: skopeo copy docker-archive:X oci:DIR:tag  then  umoci raw unpack --image DIR:tag OUT
# Same machine, same run, interleaved; a fresh store/layout and output dir for every run; page
# cache dropped before every timed step (when allowed); every step is timed until `sync`
# returns (mybuild fsyncs its blobs, the peers do not: this keeps the comparison fair).
# Wall time and peak RSS via /usr/bin/time; median of N runs.
#
# Usage: bench/load-unpack.sh [--big] [--runs N]
#   --big     also the 4 GiB image (needs ~25 GiB free disk)
#   --runs N  runs per tool and image (default 3)
# Images are generated once (deterministic pseudo-random data, 5 uncompressed layers as
# `docker save` writes them) and kept in .cache/bench/. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_args "$@"
bench_setup

cache=.cache/bench
work="$cache/work"
mkdir -p "$cache"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

umoci_flags=()
if [ "$(id -u)" -ne 0 ]; then umoci_flags=(--rootless); fi

for gib in "${sizes[@]}"; do
  archive="$cache/random-${gib}g.docker.tar"
  ref="bench/random:${gib}g"
  node fixtures/make-image.mjs random --format docker-archive --size "${gib}GiB" --layers 5 --seed "$gib" --tag "$ref" -o "$archive"
  rm -f "$work"/{mb-load,mb-unpack,peer-copy,peer-unpack}

  for ((i = 1; i <= runs; i++)); do
    printf 'bench: %s GiB, run %d/%d\n' "$gib" "$i" "$runs"
    rm -rf "$work/store" "$work/rootfs-mb" "$work/oci" "$work/rootfs-peer"
    bench_timed mb-load 1 "$MYBUILD_CLI" --root "$work/store" --progress quiet load -i "$archive"
    bench_timed mb-unpack 1 "$MYBUILD_CLI" --root "$work/store" --progress quiet unpack "$ref" "$work/rootfs-mb"
    rm -rf "$work/store" "$work/rootfs-mb"
    bench_timed peer-copy 1 skopeo copy -q "docker-archive:$archive" "oci:$work/oci:bench"
    bench_timed peer-unpack 1 umoci raw unpack "${umoci_flags[@]}" --image "$work/oci:bench" "$work/rootfs-peer"
    rm -rf "$work/oci" "$work/rootfs-peer"
  done

  # totals per run (load + unpack time, max RSS), then medians
  paste -d' ' "$work/mb-load" "$work/mb-unpack" | awk '{ print $1 + $3, ($2 > $4 ? $2 : $4) }' >"$work/mb-total"
  paste -d' ' "$work/peer-copy" "$work/peer-unpack" | awk '{ print $1 + $3, ($2 > $4 ? $2 : $4) }' >"$work/peer-total"

  size_mib=$(( $(stat -c %s "$archive") / 1024 / 1024 ))
  echo
  echo "load + unpack: ${gib} GiB docker-archive (${size_mib} MiB, 5 uncompressed layers), median of ${runs}, page cache dropped: ${dropped}"
  bench_table_head 16 "skopeo + umoci" "mb/peer"
  fmt_row 16 "load / copy" "$work/mb-load" "$work/peer-copy"
  fmt_row 16 "unpack" "$work/mb-unpack" "$work/peer-unpack"
  fmt_row 16 "total" "$work/mb-total" "$work/peer-total"
  echo
done
