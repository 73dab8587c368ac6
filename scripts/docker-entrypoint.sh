#!/bin/sh
# The container's entrypoint: create the identity in $VIVIM_HOME on first start, then
# `vivim-node run` with the container's arguments (as PID 1, so SIGTERM reaches it).
set -e
vivim-node init --if-missing >&2
exec vivim-node run "$@"
