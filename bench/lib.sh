# Shared by the bench/ scripts (sourced, not run): flags, set-up checks, timing, medians, rows.
# The sourcing script sets `work` (its scratch dir) before calling bench_timed or start_registry.

# bench_args "$@": --big (sizes 1 and 4 GiB), --runs N, --help (prints the sourcing script's header).
bench_args() {
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
}

# bench_setup: install/build what is missing, check the CLI and /usr/bin/time, set MYBUILD_CLI.
bench_setup() {
  bash scripts/setup.sh
  MYBUILD_CLI="${MYBUILD_CLI:-$PWD/packages/cli/dist/mybuild.cjs}"
  if [ ! -f "$MYBUILD_CLI" ]; then
    echo "bench: error: $MYBUILD_CLI is missing (make build)" >&2
    exit 1
  fi
  [ -x /usr/bin/time ] || { echo "bench: error: /usr/bin/time missing (Debian package time; scripts/setup.sh installs it)" >&2; exit 1; }
}

dropped=unknown
drop_caches() {
  sync
  if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    dropped=yes
  else
    dropped=no
  fi
}

# bench_timed NAME SYNC CMD...: drops the page cache (unless BENCH_WARM=1: then only `sync`), runs
# CMD (then `sync` when SYNC is 1) under /usr/bin/time and appends "seconds kib" to $work/NAME.
bench_timed() {
  local name="$1" with_sync="$2"
  shift 2
  if [ "${BENCH_WARM:-0}" = 1 ]; then sync; else drop_caches; fi
  # shellcheck disable=SC2016 # expanded by the inner sh
  local script='"$@" >/dev/null 2>"$0"'
  if [ "$with_sync" = 1 ]; then script="$script && sync"; fi
  if ! /usr/bin/time -f '%e %M' -o "$work/time.out" sh -c "$script" "$work/step.err" "$@"; then
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

# bench_table_head WIDTH PEER RATIO_LABEL: the two header lines of a result table
bench_table_head() {
  printf "  %-$1s %23s   %23s   %9s\n" "" "mybuild" "$2" "time"
  printf "  %-$1s %10s %12s   %10s %12s   %9s\n" "step" "wall" "peak RSS" "wall" "peak RSS" "$3"
}

# fmt_row WIDTH STEP MB_FILE PEER_FILE: medians of both tools' "seconds kib" lines, and their time ratio
fmt_row() {
  awk -v w="$1" -v step="$2" -v ms="$(median 1 "$3")" -v mk="$(median 2 "$3")" -v ps="$(median 1 "$4")" -v pk="$(median 2 "$4")" 'BEGIN {
    ratio = (ps > 0) ? sprintf("%.2fx", ms / ps) : "-"
    printf "  %-" w "s %8.2f s %8.0f MiB   %8.2f s %8.0f MiB   %9s\n", step, ms, mk / 1024, ps, pk / 1024, ratio
  }'
}

# A Debian docker-registry on loopback (plain http), in $work/registry: start_registry starts a
# fresh one on a free port and sets $reg (host:port); stop_registry stops it (by PID) and removes
# its directory. The sourcing script calls stop_registry from its EXIT trap.
reg_pid=
reg=
reg_dir=
stop_registry() {
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
    reg_pid=
  fi
  if [ -n "$reg_dir" ]; then rm -rf "$reg_dir"; fi
  reg_dir=
}

start_registry() {
  local port
  port="$(node -e 'const s = require("node:net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
  reg_dir="$work/registry"
  rm -rf "$reg_dir"
  mkdir -p "$reg_dir"
  cat >"$reg_dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $(cd "$reg_dir" && pwd)/data
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: bench-$$
EOF
  /usr/bin/docker-registry serve "$reg_dir/config.yml" >"$reg_dir/log" 2>&1 &
  reg_pid=$!
  reg="127.0.0.1:$port"
  # shellcheck disable=SC2016 # JavaScript, not shell
  if ! node -e '
    const url = `http://${process.argv[1]}/v2/`;
    const deadline = Date.now() + 15000;
    const probe = () => fetch(url).then((r) => process.exit(r.status === 200 ? 0 : 1), () => (Date.now() > deadline ? process.exit(1) : setTimeout(probe, 50)));
    probe();
  ' "$reg"; then
    echo "bench: error: docker-registry did not start on $reg:" >&2
    sed 's/^/  /' "$reg_dir/log" >&2
    exit 1
  fi
}
