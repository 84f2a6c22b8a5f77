#!/usr/bin/env bash
# The demo: build a real image from examples/hello-app (a two-stage Dockerfile with RUN steps)
# with no daemon, no registry and no network. Its base image is made on the spot from Debian's
# busybox-static and loaded into the local store (default root, or --root/MYBUILD_ROOT). Then:
# images, a second build that is all CACHED, inspect, save, unpack and run the image's command.
# Re-runnable.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

MYBUILD_CLI="${MYBUILD_CLI:-packages/cli/dist/mybuild.cjs}"
if [ ! -f "$MYBUILD_CLI" ]; then
  echo "demo: error: $MYBUILD_CLI is missing (the build should have made it: make build)" >&2
  exit 1
fi
mybuild() { "$MYBUILD_CLI" "$@"; }
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
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: error: building runs RUN steps in a runc sandbox on overlay mounts, which needs root" >&2
  exit 1
fi

work=.cache/demo
mkdir -p "$work"
archive="$work/busybox-demo.oci.tar"
saved="$work/hello-app.docker.tar"
rootfs="$work/rootfs"
# plain BuildKit-style lines in the demo's output (a terminal would get the live view by default)
progress=(--progress plain)

say "a base image: an OCI archive of busybox, made from Debian's busybox-static (no network)"
node fixtures/make-image.mjs busybox --format oci-archive --tag busybox-demo:latest --force -o "$archive"
show load -i "$archive"

say "build examples/hello-app: two stages, RUN steps in a runc sandbox, layers into $store_root"
echo "\$ cat examples/hello-app/Dockerfile"
sed 's/^/    /' examples/hello-app/Dockerfile
show build "${progress[@]}" -t hello-app:1 examples/hello-app
show images

say "build it again: every step comes from the build cache"
show build "${progress[@]}" -t hello-app:1 examples/hello-app

say "what the store knows about it (config and history as docker writes them)"
printf '$ mybuild inspect hello-app:1 | (config and history)\n'
mybuild inspect hello-app:1 | node -e '
  const [img] = JSON.parse(require("fs").readFileSync(0, "utf8"));
  console.log(JSON.stringify({ Id: img.Id, config: img.Config.config, history: img.Config.history.map((h) => h.created_by + (h.empty_layer ? "  (no layer)" : "")) }, null, 2));'

say "save it as a docker-archive; a real peer reads it"
rm -f "$saved"
show save --format docker -o "$saved" hello-app:1
echo "\$ skopeo inspect docker-archive:$saved"
skopeo inspect --format 'digest {{.Digest}}, {{len .Layers}} layer(s), {{.Os}}/{{.Architecture}}' "docker-archive:$saved"
echo "\$ umoci ls --layout $store_root   # the store is itself an OCI image layout"
umoci ls --layout "$store_root"

say "unpack the image's root filesystem and run its command (CMD, as USER app, in WORKDIR)"
rm -rf "$rootfs"
show unpack hello-app:1 "$rootfs"
echo "\$ chroot --userspec=1000:1000 $rootfs sh -c 'cd /app && /app/run.sh'"
chroot --userspec=1000:1000 "$rootfs" /bin/busybox env -i PATH=/bin GREETING_FILE=/app/greeting.txt sh -c 'cd /app && /app/run.sh'

say "disk usage"
show du

say "done — hello-app:1 and busybox-demo:latest stay in $store_root (mybuild rmi hello-app:1 busybox-demo:latest; mybuild prune)"
