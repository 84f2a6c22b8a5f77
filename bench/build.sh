#!/usr/bin/env bash
# Benchmark: `mybuild build` against buildah and BuildKit, three Dockerfiles.
#   mybuild:  mybuild --root R build -t bench/x:1 -f DOCKERFILE CONTEXT (the command as npm
#             installs it: packages/cli/dist/mybuild.cjs run as a program)
#   buildah:  buildah --root R --runroot RR --storage-driver overlay bud --layers --isolation oci
#             --runtime /usr/sbin/runc --tls-verify=false --network host -t bench/x:1 -f ...
#   BuildKit: DOCKER_BUILDKIT=1 /usr/bin/docker build --network host -t bench/x:1 -f ... against a
#             dockerd 20.10 (Debian's docker.io) and a containerd this script starts with its own
#             root, state, sockets and config under its scratch dirs (no other daemon is used)
# Scenarios (FROM a busybox image in a Debian docker-registry on loopback, plain http):
#   a  COPY . /ctx of a 20,000-file, 312 MiB context (16 KiB files, a quarter of each random), one
#      RUN: cold build, fully cached rebuild, rebuild after changing one byte of one file
#   b  RUN writing 300 MiB of random data, RUN writing 300 MiB of text, RUN rm of the random file:
#      cold build, cached rebuild
#   c  three stages (two make small files with COPY and RUN, the last COPY --from both): cold
#      build, cached rebuild, rebuild after a one-file change in the context
# Cold means: mybuild and buildah get a fresh, empty store; BuildKit's daemon keeps running, and
# before every cold build `docker image prune -af` and `docker builder prune -af` empty its image
# store and build cache (the base image included: BuildKit pulls it into its cache, not into the
# image store); the script checks that no overlay2 layer and no BuildKit content blob is left
# (only dockerd's digest/diff-ID notes remain, a few bytes), and that no cold step reports a
# cache hit, no cached step runs a step, and the change step runs one. Runs interleaved (each
# tool in turn, every run); the page cache dropped before every cold build (when allowed), not
# before the cached and change rebuilds (they follow the build at once, as a developer's do);
# every step timed until `sync` returns (mybuild fsyncs what it writes, the others do not or
# not all of it: this keeps the comparison fair).
# Wall time and peak RSS via /usr/bin/time; for BuildKit the client's RSS says nothing, so its
# RSS column is dockerd's peak RSS during the step (VmHWM, reset before each step through
# /proc/PID/clear_refs; dockerd's baseline memory included). Median of N runs.
#
# Usage: bench/build.sh [--runs N] [--only a|b|c]
#   --runs N  runs per tool and scenario (default 3)
#   --only X  only these scenarios (a, b, c or several: ab, a,c)
# BENCH_LOGS=DIR keeps every build's output (its progress) in DIR.
# Needs root (dockerd, runc). Installs Debian's docker.io when missing (without starting its
# service). The context of (a) is generated once and kept in .cache/bench/; the rest lives in
# .cache/bench/work-build and /tmp/mybuild-bench.*, removed on exit, with every process the
# script started (stopped by PID) and every mount under those dirs. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/lib.sh
source bench/lib.sh

only=abc
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="${2:?--only needs a, b or c}"; shift ;;
    --big) echo "bench: --big does not apply to bench/build.sh" >&2; exit 2 ;;
    *) args+=("$1") ;;
  esac
  shift
done
bench_args "${args[@]}"
only="${only//,/}"
case "$only" in '' | *[!abc]*) echo "bench: --only takes a, b, c or several of them (ab, a,c)" >&2; exit 2 ;; esac

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: error: run as root (dockerd, and RUN steps in runc)" >&2
  exit 1
fi
bench_setup
for bin in /usr/bin/docker-registry /usr/bin/buildah /usr/sbin/runc /usr/bin/skopeo /bin/busybox; do
  [ -x "$bin" ] || { echo "bench: error: $bin missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

cache=.cache/bench
work="$PWD/$cache/work-build"
mkdir -p "$cache"

# --- clean-up: every process started here, by PID; every mount under the scratch dirs --------
ctd_pid=
dd_pid=
tmp=
made_policy=0
had_run_docker=0
if [ -e /run/docker ]; then had_run_docker=1; fi

stop_pid() { # PID SECONDS: SIGTERM, then SIGKILL after SECONDS
  local pid="$1" i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

unmount_under() { # DIR: unmount everything mounted at or below DIR, deepest first
  local dir="$1" m
  [ -n "$dir" ] || return 0
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

cleanup() {
  set +e
  if [ -n "$dd_pid" ]; then stop_pid "$dd_pid" 30; dd_pid=; fi
  if [ -n "$ctd_pid" ]; then stop_pid "$ctd_pid" 10; ctd_pid=; fi
  # containerd shims (none expected: builds start no containers) would name our socket dir
  if [ -n "$tmp" ]; then
    local f pid
    for f in /proc/[0-9]*/cmdline; do
      if tr '\0' ' ' 2>/dev/null <"$f" | grep -qF -- "$tmp/"; then
        pid="${f#/proc/}"
        pid="${pid%/cmdline}"
        [ "$pid" != $$ ] && kill -KILL "$pid" 2>/dev/null
      fi
    done
  fi
  stop_registry
  unmount_under "$work"
  unmount_under "$tmp"
  rm -rf "$work"
  if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
  # dockerd creates /run/docker/plugins whatever its --exec-root
  if [ "$had_run_docker" = 0 ]; then rmdir /run/docker/plugins /run/docker 2>/dev/null; fi
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unmount_under "$work"
rm -rf "$work"
mkdir -p "$work"
tmp="$(mktemp -d /tmp/mybuild-bench.XXXXXX)" # short paths for sockets

# --- docker.io: Debian's dockerd 20.10 and its client (/usr/bin/docker), containerd ----------
if ! dpkg-query -W -f='${db:Status-Abbrev}' docker.io 2>/dev/null | grep -q '^ii'; then
  echo "bench: installing Debian's docker.io (its service is not started)"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >"$work/apt.log" 2>&1; then
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io; } >>"$work/apt.log" 2>&1; then
      echo "bench: error: apt-get install docker.io failed:" >&2
      tail -n 20 "$work/apt.log" | sed 's/^/  /' >&2
      exit 1
    fi
  fi
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; made_policy=0; fi
fi
for bin in /usr/sbin/dockerd /usr/bin/docker /usr/bin/containerd; do
  [ -x "$bin" ] || { echo "bench: error: $bin missing (Debian package docker.io / containerd)" >&2; exit 1; }
done

# --- the context of (a): 20,000 files of 16 KiB in 20 x 20 dirs, generated once ---------------
ctx_a="$cache/build-context-20k"
if [[ "$only" == *a* && ! -d "$ctx_a" ]]; then
  echo "bench: generating the context of (a) in $ctx_a"
  rm -rf "$ctx_a.tmp"
  node - "$ctx_a.tmp" <<'EOF'
// 20,000 files of 16 KiB: 4 KiB of an AES-256-CTR keystream (incompressible), then a text line
// naming the file, repeated. Deterministic: same bytes on every machine.
const { mkdirSync, writeFileSync } = require('node:fs');
const { createCipheriv, createHash } = require('node:crypto');
const out = process.argv[2];
const key = createHash('sha256').update('mybuild-bench-build-context').digest();
const ks = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
const size = 16384;
const random = size / 4;
for (let i = 0; i < 20000; i++) {
  const dir = `${out}/d${String(Math.floor(i / 1000)).padStart(2, '0')}/s${String(Math.floor(i / 50) % 20).padStart(2, '0')}`;
  if (i % 50 === 0) mkdirSync(dir, { recursive: true });
  const line = Buffer.from(`file ${String(i).padStart(5, '0')}: a line of text, the same again and again, to compress well\n`);
  const text = Buffer.alloc(size - random);
  for (let o = 0; o < text.length; o += line.length) line.copy(text, o);
  writeFileSync(`${dir}/f${String(i).padStart(5, '0')}.bin`, Buffer.concat([ks.update(Buffer.alloc(random)), text]));
}
EOF
  mv "$ctx_a.tmp" "$ctx_a"
fi
ctx_a="$PWD/$ctx_a"
changed_a="$ctx_a/d00/s00/f00000.bin" # its first byte: A for cold and cached, B for the change

set_byte() { printf '%s' "$2" | dd of="$1" bs=1 count=1 conv=notrunc status=none; }

# (c)'s context: small text files, rewritten before every tool's cold build
make_ctx_c() {
  local d="$work/ctx-c" i
  rm -rf "$d"
  mkdir -p "$d/one" "$d/two"
  for i in $(seq 1 20); do
    printf 'stage one, file %d\n' "$i" >"$d/one/f$i.txt"
    printf 'stage two, file %d\n' "$i" >"$d/two/f$i.txt"
  done
  echo "final" >"$d/final.txt"
}
mkdir -p "$work/ctx-b"

# --- the base image: busybox (Debian's busybox-static) in a loopback registry ----------------
node fixtures/make-image.mjs busybox --format oci-layout --tag bench/busybox:1 -o "$cache/busybox.oci" >/dev/null
start_registry
base="$reg/bench/busybox:1"
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$cache/busybox.oci:bench/busybox:1" "docker://$base"

dockerfiles="$work/dockerfiles"
mkdir -p "$dockerfiles"
cat >"$dockerfiles/a" <<EOF
FROM $base
COPY . /ctx
RUN find /ctx -type f | wc -l > /count
EOF
cat >"$dockerfiles/b" <<EOF
FROM $base
RUN head -c 314572800 /dev/urandom > /big
RUN yes 'some text, the same line again and again, 300 MiB of it, it compresses well' | head -c 314572800 > /text
RUN rm /big
EOF
cat >"$dockerfiles/c" <<EOF
FROM $base AS one
COPY one/ /src/
RUN mkdir /out && for i in \$(seq 1 50); do cat /src/* > /out/one-\$i.txt; done

FROM $base AS two
COPY two/ /src/
RUN mkdir /out && for i in \$(seq 1 50); do sed "s/two/two \$i/" /src/f1.txt > /out/two-\$i.txt; done

FROM $base
COPY --from=one /out/ /one/
COPY --from=two /out/ /two/
COPY final.txt /final.txt
RUN ls /one /two | wc -l > /count
EOF

# --- containerd and dockerd, on our own paths -------------------------------------------------
dd_data="$work/dockerd"
dd_sock="$tmp/docker.sock"
ctd_sock="$tmp/containerd.sock"
mkdir -p "$tmp/docker-config" "$dd_data"
cat >"$tmp/containerd.toml" <<EOF
version = 2
root = "$work/containerd"
state = "$tmp/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctd_sock"
[ttrpc]
  address = "$ctd_sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/containerd-opt"
EOF
# deprecated-key-path: otherwise dockerd writes /etc/docker/key.json
printf '{ "deprecated-key-path": "%s" }\n' "$tmp/key.json" >"$tmp/daemon.json"

/usr/bin/containerd --config "$tmp/containerd.toml" >"$work/containerd.log" 2>&1 &
ctd_pid=$!
for ((i = 0; i < 200; i++)); do
  [ -S "$ctd_sock" ] && break
  kill -0 "$ctd_pid" 2>/dev/null || break
  sleep 0.1
done
if [ ! -S "$ctd_sock" ]; then
  echo "bench: error: containerd did not start:" >&2
  tail -n 20 "$work/containerd.log" | sed 's/^/  /' >&2
  exit 1
fi

/usr/sbin/dockerd --config-file "$tmp/daemon.json" --containerd "$ctd_sock" \
  --data-root "$dd_data" --exec-root "$tmp/dockerd-exec" --pidfile "$tmp/dockerd.pid" \
  --host "unix://$dd_sock" --iptables=false --ip6tables=false --bridge=none \
  --storage-driver overlay2 >"$work/dockerd.log" 2>&1 &
dd_pid=$!
dk_env=(env "DOCKER_HOST=unix://$dd_sock" "DOCKER_CONFIG=$tmp/docker-config" DOCKER_BUILDKIT=1 /usr/bin/docker)
for ((i = 0; i < 600; i++)); do
  if "${dk_env[@]}" version >/dev/null 2>&1; then break; fi
  kill -0 "$dd_pid" 2>/dev/null || break
  sleep 0.1
done
if ! "${dk_env[@]}" version >/dev/null 2>&1; then
  echo "bench: error: dockerd did not start:" >&2
  tail -n 20 "$work/dockerd.log" | sed 's/^/  /' >&2
  exit 1
fi
dk() { "${dk_env[@]}" "$@"; }

# --- per tool: reset to cold, one timed build, sanity check of its log ------------------------
mb_root="$work/mybuild"
bh_root="$work/buildah"
bh_runroot="$tmp/buildah-run"
bh_global=(--root "$bh_root" --runroot "$bh_runroot" --storage-driver overlay)

reset_mb() {
  unmount_under "$mb_root"
  rm -rf "$mb_root"
}

reset_bh() {
  if [ -d "$bh_root" ]; then
    buildah "${bh_global[@]}" rm -a >/dev/null 2>&1 || true
    buildah "${bh_global[@]}" rmi -af >/dev/null 2>&1 || true
  fi
  unmount_under "$bh_root"
  unmount_under "$bh_runroot"
  rm -rf "$bh_root" "$bh_runroot" "$work/buildah-tmp"
  mkdir -p "$work/buildah-tmp"
}

reset_bk() {
  dk image prune -af >/dev/null
  dk builder prune -af >/dev/null
  local left
  left="$({ find "$dd_data/overlay2" -mindepth 1 -maxdepth 1 ! -name l || true; find "$dd_data/buildkit/content/blobs" -type f || true; } 2>/dev/null | wc -l)"
  if [ "$left" -ne 0 ]; then
    echo "bench: warning: BuildKit: $left layers or blobs left after pruning; its cold build may not be cold" >&2
  fi
}

# bk_timed NAME CMD...: bench_timed, with dockerd's peak RSS during the step in place of the client's
bk_timed() {
  local name="$1" hwm
  shift
  echo 5 >"/proc/$dd_pid/clear_refs"
  bench_timed "$name.client" 1 "$@"
  hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$dd_pid/status")"
  tail -n 1 "$work/$name.client" | awk -v k="$hwm" '{ print $1, k }' >>"$work/$name"
}

# check_log TOOL SCENARIO STEP: the build's log ($work/step.err) shows the expected cache use
check_log() {
  local tool="$1" sc="$2" step="$3" hits ran problem=
  if [ "$tool" = bh ]; then
    hits="$(grep -c 'Using cache' "$work/step.err" || true)"
    ran=$(($(grep -cE '^(\[[0-9]+/[0-9]+\] )?STEP [0-9]+/[0-9]+: (RUN|COPY|ADD) ' "$work/step.err" || true) - hits))
  else # BuildKit's plain progress, and mybuild's: "#N [stage k/n] RUN ..." then "#N CACHED" or "#N DONE"
    hits="$(grep -cE '^#[0-9]+ CACHED' "$work/step.err" || true)"
    ran="$(awk '
      /^#[0-9]+ \[[^]]*\] (RUN|COPY|ADD) / { step[$1] = 1 }
      /^#[0-9]+ DONE/ && ($1 in step) { n++ }
      END { print n + 0 }' "$work/step.err")"
  fi
  case "$step" in
    cold) if [ "$hits" -ne 0 ]; then problem="$hits cache hit(s) in a cold build"; fi ;;
    cached) if [ "$ran" -ne 0 ]; then problem="$ran step(s) ran in a cached rebuild"; fi ;;
    change) if [ "$ran" -eq 0 ]; then problem="no step ran after the change"; fi ;;
  esac
  if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS" && cp "$work/step.err" "$BENCH_LOGS/$tool-$sc-$step.log"; fi
  if [ -n "$problem" ]; then
    cp "$work/step.err" "$cache/build-$tool-$sc-$step.log"
    echo "bench: warning: $tool ($sc, $step): $problem; its log: $cache/build-$tool-$sc-$step.log" >&2
  fi
}

# build TOOL SCENARIO STEP: one timed build
build() {
  local tool="$1" sc="$2" step="$3" ctx
  case "$sc" in a) ctx="$ctx_a" ;; *) ctx="$work/ctx-$sc" ;; esac
  case "$tool" in
    mb)
      bench_timed "mb-$sc-$step" 1 "$MYBUILD_CLI" --root "$mb_root" --progress plain \
        build -t bench/x:1 -f "$dockerfiles/$sc" "$ctx"
      ;;
    bh) # buildah prints its steps on stdout: send them to the log
      # shellcheck disable=SC2016 # expanded by the inner sh
      bench_timed "bh-$sc-$step" 1 env TMPDIR="$work/buildah-tmp" sh -c 'exec "$@" 1>&2' sh \
        buildah "${bh_global[@]}" bud --layers --isolation oci --runtime /usr/sbin/runc \
        --tls-verify=false --network host -t bench/x:1 -f "$dockerfiles/$sc" "$ctx"
      ;;
    bk)
      bk_timed "bk-$sc-$step" "${dk_env[@]}" build --network host --progress plain \
        -t bench/x:1 -f "$dockerfiles/$sc" "$ctx"
      ;;
  esac
  check_log "$tool" "$sc" "$step"
}

# run_tool TOOL SCENARIO STEPS...: cold build from an empty store, then the other steps
run_tool() {
  local tool="$1" sc="$2" step
  shift 2
  "reset_$tool"
  case "$sc" in a) set_byte "$changed_a" A ;; c) make_ctx_c ;; esac
  for step in "$@"; do
    if [ "$step" = change ]; then
      case "$sc" in a) set_byte "$changed_a" B ;; c) echo "stage one, file 7, changed" >"$work/ctx-c/one/f7.txt" ;; esac
    fi
    # A rebuild follows the build (or the edit) at once: its caches are warm, as a developer's are.
    if [ "$step" = cold ]; then BENCH_WARM=0 build "$tool" "$sc" "$step"; else BENCH_WARM=1 build "$tool" "$sc" "$step"; fi
  done
  "reset_$tool"
}

# --- tables -----------------------------------------------------------------------------------
table_head() {
  printf "  %-8s %23s   %23s   %23s   %9s\n" "" "mybuild" "buildah" "BuildKit" "time"
  printf "  %-8s %10s %12s   %10s %12s   %10s %12s   %9s\n" "step" "wall" "peak RSS" "wall" "peak RSS" "wall" "dockerd RSS" "mb/BK"
}

table_row() { # SCENARIO STEP
  local f="$work/%s-$1-$2"
  # shellcheck disable=SC2059 # the format is ours
  awk -v step="$2" \
    -v ms="$(median 1 "$(printf "$f" mb)")" -v mk="$(median 2 "$(printf "$f" mb)")" \
    -v hs="$(median 1 "$(printf "$f" bh)")" -v hk="$(median 2 "$(printf "$f" bh)")" \
    -v ks="$(median 1 "$(printf "$f" bk)")" -v kk="$(median 2 "$(printf "$f" bk)")" 'BEGIN {
    ratio = (ks > 0) ? sprintf("%.2fx", ms / ks) : "-"
    printf "  %-8s %8.2f s %8.0f MiB   %8.2f s %8.0f MiB   %8.2f s %8.0f MiB   %9s\n", step, ms, mk / 1024, hs, hk / 1024, ks, kk / 1024, ratio
  }'
}

# target LABEL VALUE LIMIT UNIT: one line "target ... now ... met|missed" (VALUE <= LIMIT is met)
target() {
  awk -v label="$1" -v v="$2" -v lim="$3" -v unit="$4" 'BEGIN {
    fmt = (unit == "x") ? "%.2fx" : (unit == "s") ? "%.2f s" : "%.0f MiB"
    printf "  target: %-34s now %-10s %s\n", label, sprintf(fmt, v), (v <= lim) ? "met" : "MISSED"
  }'
}

ratio() { awk -v a="$(median 1 "$work/mb-$1-$2")" -v b="$(median 1 "$work/bk-$1-$2")" 'BEGIN { print (b > 0) ? a / b : 0 }'; }

rss_target() { # SCENARIO STEPS...: the largest mybuild peak RSS (median per step) against 150 MiB
  local sc="$1" step max=0 k
  shift
  for step in "$@"; do
    k="$(median 2 "$work/mb-$sc-$step")"
    if [ "$k" -gt "$max" ]; then max="$k"; fi
  done
  target "mybuild peak RSS < 150 MiB" "$(awk -v k="$max" 'BEGIN { print k / 1024 }')" 149.99 MiB
}

# --- the scenarios ----------------------------------------------------------------------------
scenario() { # SCENARIO STEPS...
  local sc="$1" i tool
  shift
  for ((i = 1; i <= runs; i++)); do
    for tool in mb bh bk; do
      printf 'bench: (%s) run %d/%d: %s\n' "$sc" "$i" "$runs" "$(case $tool in mb) echo mybuild ;; bh) echo buildah ;; bk) echo BuildKit ;; esac)"
      run_tool "$tool" "$sc" "$@"
    done
  done
}

results=()
if [[ "$only" == *a* ]]; then
  scenario a cold cached change
  results+=(a)
fi
if [[ "$only" == *b* ]]; then
  scenario b cold cached
  results+=(b)
fi
if [[ "$only" == *c* ]]; then
  scenario c cold cached change
  # The floor under every mybuild run: a Node process that does nothing (BuildKit's daemon is
  # already running; only its small Go client starts per build).
  for ((i = 1; i <= runs; i++)); do
    BENCH_WARM=0 bench_timed floor-node-cold 0 node -e 0
    BENCH_WARM=1 bench_timed floor-node-warm 0 node -e 0
    BENCH_WARM=1 bench_timed floor-mb-version 0 "$MYBUILD_CLI" version
    # Node 20 builds its CA store at start when NODE_EXTRA_CA_CERTS is set (the mybuild command
    # defers that: packages/cli/loader.cjs); the floor without it, when it is set here
    if [ -n "${NODE_EXTRA_CA_CERTS:-}" ]; then BENCH_WARM=1 bench_timed floor-node-noca 0 env -u NODE_EXTRA_CA_CERTS node -e 0; fi
  done
  results+=(c)
fi

echo
for sc in "${results[@]}"; do
  case "$sc" in
    a)
      echo "build (a): FROM busybox, COPY . of 20,000 files (312 MiB), one RUN; median of ${runs}, page cache dropped: ${dropped}"
      table_head
      for step in cold cached change; do table_row a "$step"; done
      target "cold <= 0.40x BuildKit" "$(ratio a cold)" 0.40 x
      target "cached <= 0.30 s" "$(median 1 "$work/mb-a-cached")" 0.30 s
      target "change <= 0.40x BuildKit" "$(ratio a change)" 0.40 x
      rss_target a cold cached change
      ;;
    b)
      echo "build (b): RUN 300 MiB random, RUN 300 MiB text, RUN rm the random file; median of ${runs}, page cache dropped: ${dropped}"
      table_head
      for step in cold cached; do table_row b "$step"; done
      target "cold <= BuildKit" "$(ratio b cold)" 1 x
      rss_target b cold cached
      ;;
    c)
      echo "build (c): 3 stages, COPY --from both build stages; median of ${runs}, page cache dropped: ${dropped}"
      table_head
      for step in cold cached change; do table_row c "$step"; done
      for step in cold cached change; do target "$step <= BuildKit" "$(ratio c "$step")" 1 x; done
      rss_target c cold cached change
      printf '  floor (same runs): node -e 0 %.2f s after a page-cache drop, %.2f s warm; mybuild version %.2f s warm\n' \
        "$(median 1 "$work/floor-node-cold")" "$(median 1 "$work/floor-node-warm")" "$(median 1 "$work/floor-mb-version")"
      if [ -f "$work/floor-node-noca" ]; then
        printf '  (NODE_EXTRA_CA_CERTS is set here: node -e 0 without it %.2f s warm)\n' "$(median 1 "$work/floor-node-noca")"
      fi
      ;;
  esac
  echo
done
echo "  BuildKit: dockerd $(/usr/sbin/dockerd --version | sed 's/^Docker version //'); buildah $(buildah --version | awk '{ print $3 }'); RSS of BuildKit = dockerd's peak during the step"
