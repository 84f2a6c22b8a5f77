#!/bin/sh
# Runs at build time, inside the RUN sandbox.
set -e
echo "Hello from hello-app!"
echo "built by mybuild on $(uname -m), busybox $(busybox | head -1 | cut -d' ' -f2)"
