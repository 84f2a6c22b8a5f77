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

runs=3
sizes=(1)
while [ $# -gt 0 ]; do
  case "$1" in
    --big) sizes=(1 4) ;;
    --runs) runs="${2:?--runs needs a number}"; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench: --runs needs a positive number" >&2; exit 2 ;; esac

bash scripts/setup.sh

MYBUILD_CLI="${MYBUILD_CLI:-$PWD/packages/cli/dist/mybuild.mjs}"
if [ ! -f "$MYBUILD_CLI" ]; then
  echo "bench: error: $MYBUILD_CLI is missing (make build)" >&2
  exit 1
fi
[ -x /usr/bin/time ] || { echo "bench: error: /usr/bin/time missing (Debian package time; scripts/setup.sh installs it)" >&2; exit 1; }

cache=.cache/bench
work="$cache/work"
mkdir -p "$cache"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

umoci_flags=()
if [ "$(id -u)" -ne 0 ]; then umoci_flags=(--rootless); fi

dropped=unknown
drop_caches() {
  sync
  if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    dropped=yes
  else
    dropped=no
  fi
}

# timed NAME CMD...: runs CMD (then sync) under /usr/bin/time; appends "seconds kib" to $work/NAME.
timed() {
  local name="$1"
  shift
  drop_caches
  # shellcheck disable=SC2016 # expanded by the inner sh
  if ! /usr/bin/time -f '%e %M' -o "$work/time.out" sh -c '"$@" >/dev/null 2>"$0" && sync' "$work/step.err" "$@"; then
    echo "bench: error: $* failed:" >&2
    sed 's/^/  /' "$work/step.err" >&2
    exit 1
  fi
  tail -n 1 "$work/time.out" >>"$work/$name"
}

# median COLUMN FILE: median of column 1 (seconds) or 2 (KiB)
median() {
  sort -n -k"$1","$1" "$2" | awk -v c="$1" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}

fmt_row() {
  # step, mybuild s, mybuild KiB, peer s, peer KiB
  awk -v step="$1" -v ms="$2" -v mk="$3" -v ps="$4" -v pk="$5" 'BEGIN {
    ratio = (ps > 0) ? sprintf("%.2fx", ms / ps) : "-"
    printf "  %-16s %8.2f s %8.0f MiB   %8.2f s %8.0f MiB   %9s\n", step, ms, mk / 1024, ps, pk / 1024, ratio
  }'
}

for gib in "${sizes[@]}"; do
  archive="$cache/random-${gib}g.docker.tar"
  ref="bench/random:${gib}g"
  node fixtures/make-image.mjs random --format docker-archive --size "${gib}GiB" --layers 5 --seed "$gib" --tag "$ref" -o "$archive"
  rm -f "$work"/{mb-load,mb-unpack,peer-copy,peer-unpack}

  for ((i = 1; i <= runs; i++)); do
    printf 'bench: %s GiB, run %d/%d\n' "$gib" "$i" "$runs"
    rm -rf "$work/store" "$work/rootfs-mb" "$work/oci" "$work/rootfs-peer"
    timed mb-load node "$MYBUILD_CLI" --root "$work/store" --progress quiet load -i "$archive"
    timed mb-unpack node "$MYBUILD_CLI" --root "$work/store" --progress quiet unpack "$ref" "$work/rootfs-mb"
    rm -rf "$work/store" "$work/rootfs-mb"
    timed peer-copy skopeo copy -q "docker-archive:$archive" "oci:$work/oci:bench"
    timed peer-unpack umoci raw unpack "${umoci_flags[@]}" --image "$work/oci:bench" "$work/rootfs-peer"
    rm -rf "$work/oci" "$work/rootfs-peer"
  done

  # totals per run (load + unpack time, max RSS), then medians
  paste -d' ' "$work/mb-load" "$work/mb-unpack" | awk '{ print $1 + $3, ($2 > $4 ? $2 : $4) }' >"$work/mb-total"
  paste -d' ' "$work/peer-copy" "$work/peer-unpack" | awk '{ print $1 + $3, ($2 > $4 ? $2 : $4) }' >"$work/peer-total"

  size_mib=$(( $(stat -c %s "$archive") / 1024 / 1024 ))
  echo
  echo "load + unpack: ${gib} GiB docker-archive (${size_mib} MiB, 5 uncompressed layers), median of ${runs}, page cache dropped: ${dropped}"
  printf '  %-16s %23s   %23s   %9s\n' "" "mybuild" "skopeo + umoci" "time"
  printf '  %-16s %10s %12s   %10s %12s   %9s\n' "step" "wall" "peak RSS" "wall" "peak RSS" "mb/peer"
  fmt_row "load / copy" "$(median 1 "$work/mb-load")" "$(median 2 "$work/mb-load")" "$(median 1 "$work/peer-copy")" "$(median 2 "$work/peer-copy")"
  fmt_row "unpack" "$(median 1 "$work/mb-unpack")" "$(median 2 "$work/mb-unpack")" "$(median 1 "$work/peer-unpack")" "$(median 2 "$work/peer-unpack")"
  fmt_row "total" "$(median 1 "$work/mb-total")" "$(median 2 "$work/mb-total")" "$(median 1 "$work/peer-total")" "$(median 2 "$work/peer-total")"
  echo
done
