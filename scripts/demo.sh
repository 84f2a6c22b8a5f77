#!/usr/bin/env bash
# The demo: a busybox image, made from Debian's busybox-static with no network, goes through
# the local store (default root, or --root/MYBUILD_ROOT): load, images, inspect, tag, save,
# unpack — then runs from the unpacked root filesystem. No registry, no daemon. Re-runnable.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

MYBUILD_CLI="${MYBUILD_CLI:-packages/cli/dist/mybuild.mjs}"
if [ ! -f "$MYBUILD_CLI" ]; then
  echo "demo: error: $MYBUILD_CLI is missing (the build should have made it: make build)" >&2
  exit 1
fi
mybuild() { node "$MYBUILD_CLI" "$@"; }
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$plain"; }
show() {
  printf '$ mybuild %s\n' "$*"
  mybuild "$@"
}

# The store root the CLI will use (same rule as mybuild: MYBUILD_ROOT, else by user).
if [ -n "${MYBUILD_ROOT:-}" ]; then
  store_root="$MYBUILD_ROOT"
elif [ "$(id -u)" -eq 0 ]; then
  store_root=/var/lib/mybuild
else
  store_root="${XDG_DATA_HOME:-$HOME/.local/share}/mybuild"
fi

work=.cache/demo
mkdir -p "$work"
archive="$work/busybox-demo.oci.tar"
saved="$work/busybox-demo.docker.tar"
rootfs="$work/rootfs"

say "an OCI archive of a busybox image, made from Debian's busybox-static (no network)"
node fixtures/make-image.mjs busybox --format oci-archive --tag busybox-demo:latest --force -o "$archive"

say "load it into the local store ($store_root)"
show load -i "$archive"
show images

say "what the store knows about it"
show inspect busybox-demo:latest

say "a second tag, then save it as a docker-archive"
show tag busybox-demo:latest busybox-demo:v1
show images
rm -f "$saved"
show save --format docker -o "$saved" busybox-demo:v1
echo "\$ skopeo inspect docker-archive:$saved   # a real peer reads what mybuild wrote"
skopeo inspect --format 'digest {{.Digest}}, {{len .Layers}} layer(s), {{.Os}}/{{.Architecture}}' "docker-archive:$saved"

say "the store is itself an OCI image layout: other tools read it directly"
echo "\$ umoci ls --layout $store_root"
umoci ls --layout "$store_root"

say "unpack the image's root filesystem and run its shell"
rm -rf "$rootfs"
show unpack busybox-demo:latest "$rootfs"
echo "\$ ls $rootfs"
ls -C "$rootfs"
if [ "$(id -u)" -eq 0 ]; then
  echo "\$ chroot $rootfs sh -c 'echo hello from busybox-demo; id app'"
  chroot "$rootfs" /bin/busybox env -i PATH=/bin sh -c 'echo hello from busybox-demo; id app'
else
  echo "(not root: skipping the chroot run)"
fi

say "disk usage, untag, prune"
show du
show rmi busybox-demo:v1
show prune
show images

say "done — the image busybox-demo:latest stays in $store_root (mybuild rmi busybox-demo:latest; mybuild prune)"
