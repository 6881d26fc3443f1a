#!/usr/bin/env bash
# Prepares this machine for the engine conformance tests: rootful podman, rootless podman
# (user cwrootless), the worker's build user (cwbuild) and Debian's docker.io daemon. Run as root; safe to run again (quick
# when everything is in place). Works on a fresh Debian 12 machine, with or without systemd.
set -euo pipefail

ROOTLESS_USER="${CW_ROOTLESS_USER:-cwrootless}"
# The worker's build user (--build-user auto takes it): rootless podman builds submissions.
BUILD_USER="${CW_BUILD_USER:-cwbuild}"
DOCKER_ROOT="${CW_DOCKER_DATA_ROOT:-/var/lib/compute-worker-test-docker}"
DOCKER_SOCK=/run/docker.sock
DOCKER_PID=/run/compute-worker-test-dockerd.pid
DOCKER_LOG=/var/log/compute-worker-test-dockerd.log

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-test-engines: run as root" >&2
  exit 1
fi

log() { echo "setup-test-engines: $*" >&2; }

# 1. Packages. crun is not needed: podman is always given --runtime runc in the tests.
PACKAGES=(podman runc uidmap slirp4netns fuse-overlayfs busybox-static docker.io catatonit tini)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The rootless user, its subordinate ids, runtime dir and storage.
if ! id "$ROOTLESS_USER" >/dev/null 2>&1; then
  log "creating user $ROOTLESS_USER"
  useradd -m -s /bin/bash "$ROOTLESS_USER"
fi
uid="$(id -u "$ROOTLESS_USER")"
home="$(getent passwd "$ROOTLESS_USER" | cut -d: -f6)"
if ! grep -q "^${ROOTLESS_USER}:" /etc/subuid 2>/dev/null; then
  usermod --add-subuids 400000-465535 "$ROOTLESS_USER"
fi
if ! grep -q "^${ROOTLESS_USER}:" /etc/subgid 2>/dev/null; then
  usermod --add-subgids 400000-465535 "$ROOTLESS_USER"
fi
# Without logind nothing creates /run/user/<uid>; with it, linger keeps it across logouts.
if command -v loginctl >/dev/null 2>&1 && loginctl enable-linger "$ROOTLESS_USER" 2>/dev/null; then :; fi
runtime_dir="/run/user/$uid"
if [ ! -d "$runtime_dir" ]; then
  mkdir -p "$runtime_dir"
  chown "$ROOTLESS_USER:$ROOTLESS_USER" "$runtime_dir"
  chmod 0700 "$runtime_dir"
fi
conf_dir="$home/.config/containers"
if [ ! -f "$conf_dir/containers.conf" ]; then
  install -d -o "$ROOTLESS_USER" -g "$ROOTLESS_USER" "$home/.config" "$conf_dir"
  # No systemd user session here: cgroupfs and a file event log work everywhere.
  cat >"$conf_dir/containers.conf" <<'CONF'
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
  cat >"$conf_dir/storage.conf" <<'CONF'
[storage]
driver = "vfs"
CONF
  chown "$ROOTLESS_USER:$ROOTLESS_USER" "$conf_dir/containers.conf" "$conf_dir/storage.conf"
fi

# 3. The build user: an unprivileged user with subordinate ids of its own, not shared with
#    the rootless test user. Native overlay needs Linux 5.13; a file event log and cgroupfs
#    work without a systemd user session.
if ! id "$BUILD_USER" >/dev/null 2>&1; then
  log "creating build user $BUILD_USER"
  useradd -m -s /usr/sbin/nologin "$BUILD_USER"
fi
build_home="$(getent passwd "$BUILD_USER" | cut -d: -f6)"
# A range past every range already handed out, when useradd gave none.
next_range() { awk -F: '{ e = $2 + $3; if (e > m && e < 1000000000) m = e } END { s = (m > 100000 ? m : 100000); print s "-" s + 65535 }' "$1"; }
if ! grep -q "^${BUILD_USER}:" /etc/subuid 2>/dev/null; then
  usermod --add-subuids "$(next_range /etc/subuid)" "$BUILD_USER"
fi
if ! grep -q "^${BUILD_USER}:" /etc/subgid 2>/dev/null; then
  usermod --add-subgids "$(next_range /etc/subgid)" "$BUILD_USER"
fi
build_conf="$build_home/.config/containers"
if [ ! -f "$build_conf/containers.conf" ]; then
  install -d -o "$BUILD_USER" -g "$BUILD_USER" "$build_home/.config" "$build_conf"
  cat >"$build_conf/containers.conf" <<'CONF'
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
  driver=vfs
  if [ "$(printf '%s\n' "5.13" "$(uname -r | cut -d- -f1)" | sort -V | head -n1)" = "5.13" ]; then
    driver=overlay
  fi
  printf '[storage]\ndriver = "%s"\n' "$driver" >"$build_conf/storage.conf"
  chown "$BUILD_USER:$BUILD_USER" "$build_conf/containers.conf" "$build_conf/storage.conf"
fi

# 4. The range each rootful task container's own user namespace is drawn from (65536 ids
#    a container, see src/engine/userns-pool.ts): the top half of the id space, above every
#    range useradd hands out (SUB_UID_MAX 600100000), so it overlaps no user's.
for f in /etc/subuid /etc/subgid; do
  if ! grep -q '^containers:' "$f" 2>/dev/null; then
    [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ] && echo >>"$f"
    echo 'containers:2147483647:2147483648' >>"$f"
  fi
done

# 5. dockerd in the background, its own data root, no iptables and no bridge (only
#    --network=none is used).
if ! /usr/bin/docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; then
  log "starting dockerd (log: $DOCKER_LOG)"
  mkdir -p "$DOCKER_ROOT"
  if [ -f "$DOCKER_PID" ] && ! kill -0 "$(cat "$DOCKER_PID")" 2>/dev/null; then rm -f "$DOCKER_PID"; fi
  nohup dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$DOCKER_ROOT" \
    --pidfile "$DOCKER_PID" --exec-root /run/compute-worker-test-docker \
    -H "unix://$DOCKER_SOCK" >>"$DOCKER_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    /usr/bin/docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! /usr/bin/docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; then
    log "dockerd did not come up; last lines of $DOCKER_LOG:"
    tail -n 20 "$DOCKER_LOG" >&2
    exit 1
  fi
fi
log "ready: podman (rootful), podman as $ROOTLESS_USER, build user $BUILD_USER, docker at $DOCKER_SOCK"
