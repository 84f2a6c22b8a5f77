#!/usr/bin/env bash
# Installs everything mybuild's demo, tests and benchmarks need, idempotently:
#   1. Debian packages (apt-get, only when one is missing; needs root then)
#   2. pnpm (npm i -g pnpm@10, only when missing)
#   3. node_modules (pnpm install --frozen-lockfile, only when the lockfile or a package.json changed)
#   4. the build (pnpm -r run build: tsc -b is incremental, the native addon is rebuilt only when changed)
# Usage: scripts/setup.sh [--no-build]    (also fine to `source` from another script)
# Takes well under 5 s when everything is already in place.

_setup_main() {
  set -euo pipefail
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  cd "$root"

  local build=1
  local arg
  for arg in "$@"; do
    case "$arg" in
      --no-build) build=0 ;;
      *) echo "setup: unknown option $arg (usage: scripts/setup.sh [--no-build])" >&2; return 2 ;;
    esac
  done

  _setup_apt
  _setup_pnpm
  _setup_node_modules
  if [ "$build" = 1 ]; then _setup_build; fi
}

_setup_log() { printf 'setup: %s\n' "$*"; }
_setup_die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Debian packages the demo, the tests (real peers and servers) and the benchmarks use.
SETUP_APT_PACKAGES=(
  runc docker-registry busybox-static skopeo umoci zstd debootstrap buildah attr
  apache2-utils openssl iproute2 ca-certificates time
  # toolchain for the layer-store N-API addon and zstd-napi (present on the usual machine)
  make gcc g++ libc6-dev python3
)

_setup_apt() {
  local missing=() pkg status
  # One dpkg-query for all: prints "name status" for installed ones, complains about unknown ones.
  local installed
  installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${SETUP_APT_PACKAGES[@]}" 2>/dev/null || true)"
  for pkg in "${SETUP_APT_PACKAGES[@]}"; do
    status="$(awk -v p="$pkg" '$1 == p { print $2 }' <<<"$installed")"
    # python3 may come from elsewhere (pyenv); a working one on PATH is enough
    if [ "$pkg" = python3 ] && command -v python3 >/dev/null 2>&1; then continue; fi
    if [ "$status" != "ii" ]; then missing+=("$pkg"); fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    _setup_log "Debian packages present (${#SETUP_APT_PACKAGES[@]})"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _setup_die "missing Debian packages: ${missing[*]} — run as root, or: sudo apt-get install -y ${missing[*]}"
  fi
  _setup_log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local log
  log="$(mktemp)"
  if ! apt-get update -q >"$log" 2>&1; then
    tail -n 20 "$log" >&2; rm -f "$log"
    _setup_die "apt-get update failed"
  fi
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1 </dev/null; then
    tail -n 20 "$log" >&2; rm -f "$log"
    _setup_die "apt-get install ${missing[*]} failed"
  fi
  rm -f "$log"
  _setup_log "Debian packages installed"
}

_setup_pnpm() {
  local found
  found="$(command -v pnpm 2>/dev/null || true)"
  # corepack's shim cannot fetch pnpm here: only a real pnpm counts (no `pnpm --version`: 0.5 s).
  if [ -n "$found" ] && ! readlink -f "$found" | grep -q corepack; then
    return 0
  fi
  _setup_log "installing pnpm 10 (npm i -g pnpm@10)"
  if [ "$(id -u)" -ne 0 ] && [ ! -w "$(npm prefix -g)/lib" ]; then
    _setup_die "pnpm is missing and the global npm prefix is not writable — run as root, or: npm i -g pnpm@10"
  fi
  npm i -g --force --no-fund --no-audit pnpm@10 >/dev/null </dev/null || _setup_die "npm i -g pnpm@10 failed"
  hash -r
  command -v pnpm >/dev/null 2>&1 || _setup_die "pnpm still not on PATH after npm i -g pnpm@10 (PATH=$PATH)"
  _setup_log "pnpm $(pnpm --version) installed"
}

# Stamp: what `pnpm install` depends on. Unchanged stamp + present node_modules = nothing to do.
_setup_install_stamp() {
  {
    node --version
    cat pnpm-lock.yaml pnpm-workspace.yaml package.json packages/*/package.json 2>/dev/null
  } | sha256sum | cut -d' ' -f1
}

_setup_node_modules() {
  local stamp_file=node_modules/.mybuild-install-stamp want
  want="$(_setup_install_stamp)"
  if [ -f node_modules/.modules.yaml ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ]; then
    _setup_log "node_modules up to date"
    return 0
  fi
  _setup_log "pnpm install --frozen-lockfile"
  # No prompts (CI has no stdin): never ask before purging an incompatible node_modules.
  pnpm install --frozen-lockfile --config.confirmModulesPurge=false --reporter=append-only </dev/null \
    || _setup_die "pnpm install --frozen-lockfile failed (is pnpm-lock.yaml up to date with package.json? run: pnpm install)"
  # Written after the install, from the files as they are now (pnpm leaves them alone when frozen).
  _setup_install_stamp >"$stamp_file"
}

_setup_build() {
  local t0 t1 out
  t0="$(date +%s%N)"
  if ! out="$(pnpm -r --workspace-concurrency=1 --reporter=append-only run build 2>&1 </dev/null)"; then
    printf '%s\n' "$out" | grep -Ev '^(> |$|Scope: )' >&2 || true
    _setup_die "build failed (pnpm -r run build)"
  fi
  t1="$(date +%s%N)"
  _setup_log "build ok ($(( (t1 - t0) / 1000000 )) ms)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  _setup_main "$@"
else
  # Sourced: run in a subshell so `set -e`, `cd` and exits stay out of the caller; fail the caller on error.
  ( _setup_main "$@" ) || return $?
fi
