#!/usr/bin/env bash
# Installs what the worker needs on a Debian-like host: podman with runc (crun cannot
# run on hybrid cgroup hosts), busybox-static for the self-contained example images,
# and the node packages, then builds the worker. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

packages=(podman runc uidmap slirp4netns fuse-overlayfs busybox-static)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The host ids each rootful container's own user namespace takes 65536 of
# (--container-userns auto): the top half of the id space, above every range useradd
# hands out, so no user has them. Only added where there is no such entry.
for f in /etc/subuid /etc/subgid; do
  if ! grep -q '^containers:' "$f" 2>/dev/null; then
    echo "adding containers:2147483647:2147483648 to $f"
    if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo | "${sudo_cmd[@]}" tee -a "$f" >/dev/null; fi
    echo 'containers:2147483647:2147483648' | "${sudo_cmd[@]}" tee -a "$f" >/dev/null
  fi
done

# npm ci installs exactly the locked versions; it runs again only when the lock file
# is newer than what was installed.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
