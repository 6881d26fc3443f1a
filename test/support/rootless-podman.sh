#!/usr/bin/env bash
# Runs podman as the rootless test user, for use as an engine path by tests that run as root
# (scripts/setup-test-engines.sh prepares the user). stdin, stdout and stderr pass through.
set -euo pipefail
user="${CW_ROOTLESS_USER:-cwrootless}"
uid="$(id -u "$user")"
home="$(getent passwd "$user" | cut -d: -f6)"
as_user=(runuser -u "$user" -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME="$home" USER="$user" XDG_RUNTIME_DIR="/run/user/$uid")
# A TMPDIR the worker gives podman (a build's own temp folder) passes when the user may write there.
if [ -n "${TMPDIR:-}" ] && runuser -u "$user" -- test -w "$TMPDIR"; then
  as_user+=(TMPDIR="$TMPDIR")
fi
cd /
# The worker extracts a build context into a folder only its own user can read; when that
# user is root and podman runs as the test user, hand podman a copy it can read.
# The worker may put global options (a build's own store) before the command.
is_build=false
for arg in "$@"; do [ "$arg" = build ] && is_build=true && break; done
if $is_build && [ "$#" -ge 2 ] && [ -d "${!#}" ]; then
  context="${!#}"
  copy="$(runuser -u "$user" -- mktemp -d -p /tmp)"
  trap 'rm -rf "$copy"' EXIT
  cp -a "$context/." "$copy/"
  chown -R "$user:" "$copy"
  set -- "${@:1:$#-1}" "$copy"
  # A --file inside the context names the same file in the copy.
  args=()
  for arg in "$@"; do
    case "$arg" in
      "$context"/*) args+=("$copy/${arg#"$context"/}") ;;
      *) args+=("$arg") ;;
    esac
  done
  set -- "${args[@]}"
  # Pass a stop on to podman (runuser forwards it) instead of leaving the build running.
  trap 'kill -TERM "$child" 2>/dev/null' TERM INT
  "${as_user[@]}" podman "$@" &
  child=$!
  while :; do
    status=0
    wait "$child" || status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  exit "$status"
fi
exec "${as_user[@]}" podman "$@"
