#!/bin/sh
# The image's command: print what the build generated.
cat "$GREETING_FILE"
echo "running as $(id -un) in $(pwd)"
