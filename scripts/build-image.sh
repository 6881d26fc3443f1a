#!/usr/bin/env bash
# Builds the worker's image, localhost/compute-worker:<version>, with the root Containerfile.
#
#   scripts/build-image.sh                 # base made here from the host's Node, no registry
#   scripts/build-image.sh --base docker.io/library/node:22-bookworm-slim
#   scripts/build-image.sh --no-build      # dist/ as it is (the tests: npm test built it)
#
# Without --base, a base image is made from this host's files (`podman import` of a root
# filesystem): its node (20.18+), the podman client, a static busybox, the libraries `ldd`
# lists, the CA certificates and a passwd with the non-root user node (1000). It is named
# by the hash of those files, so it is made once per host. Either way the context holds
# the built worker (dist/, made here) and its production dependencies only, copied from
# node_modules as package-lock.json lists them: the build needs no network.
#
# Environment: ENGINE (default podman), TAG (default localhost/compute-worker:<version>),
# PODMAN_ARGS (global flags for the engine, e.g. "--runtime runc").
# Prints the image's name on stdout; progress goes to stderr.
set -euo pipefail

ENGINE="${ENGINE:-podman}"
read -r -a ENGINE_ARGS <<<"${PODMAN_ARGS:-}"
BASE=""
BUILD=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --base) BASE="${2:?--base needs an image}"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "usage: $0 [--base IMAGE] [--no-build]" >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
version="$(node -p "require('$repo/package.json').version")"
TAG="${TAG:-localhost/compute-worker:$version}"
log() { echo "build-image: $*" >&2; }
engine() { "$ENGINE" "${ENGINE_ARGS[@]}" "$@"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A host program at DEST of the root filesystem, and every library it loads at its own path.
add_binary() {
  local file="$1" root="$2" dest="$3"
  install -D -m 0755 "$(readlink -f "$file")" "$root$dest"
  ldd "$file" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}

make_base() {
  local node podman busybox certs root hash name
  node="$(command -v node)"
  podman="$(command -v podman)"
  busybox=/bin/busybox
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)' ||
    { log "node $(node --version) is older than 20.18"; exit 1; }
  if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    log "$busybox is not a static busybox (apt-get install busybox-static)"
    exit 1
  fi
  certs=/etc/ssl/certs/ca-certificates.crt
  [ -f "$certs" ] || { log "$certs is missing (apt-get install ca-certificates)"; exit 1; }
  hash="$(cat "$node" "$podman" "$busybox" "$certs" "$0" | sha256sum | cut -c1-16)"
  name="localhost/compute-worker-base:$hash"
  if engine image exists "$name" 2>/dev/null; then
    echo "$name"
    return
  fi
  log "making the base image $name from this host's node, podman and busybox"
  root="$work/rootfs"
  mkdir -p "$root"/{bin,etc,home/node,tmp,var/tmp,run,usr/local/bin}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  # On PATH wherever the host keeps them (nvm, /usr/local, ...).
  add_binary "$node" "$root" /usr/local/bin/node
  add_binary "$podman" "$root" /usr/bin/podman
  install -m 0755 "$busybox" "$root/bin/busybox"
  for tool in sh ls cat env id mkdir rm; do ln -s busybox "$root/bin/$tool"; done
  install -D -m 0644 "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnode:x:1000:\n' >"$root/etc/group"
  chown 1000:1000 "$root/home/node"
  tar -C "$root" --numeric-owner -cf - . | engine import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - "$name" >/dev/null
  echo "$name"
}

# The context: package files, bin/, dist/ (built now), examples/, and the packages of
# package-lock.json that are not dev-only.
if [ "$BUILD" = 1 ]; then
  log "building dist/"
  (cd "$repo" && npm run --silent build >&2)
elif [ ! -f "$repo/dist/commands/run.js" ] || [ ! -f "$repo/oclif.manifest.json" ]; then
  log "--no-build, but dist/ is not built: run npm run build"
  exit 1
fi
ctx="$work/context"
mkdir -p "$ctx/app" "$ctx/state"
cp "$repo/Containerfile" "$ctx/"
# The manifest (made by npm run build): the CLI starts without importing every command.
cp -a "$repo/package.json" "$repo/package-lock.json" "$repo/oclif.manifest.json" \
  "$repo/bin" "$repo/dist" "$repo/examples" "$ctx/app/"
modules="$(readlink -f "$repo/node_modules")"
# tar with recursion, one folder per package; a nested package comes with its parent too.
node -e '
  const lock = require(process.argv[1]);
  for (const [path, entry] of Object.entries(lock.packages ?? {})) {
    if (path.startsWith("node_modules/") && !entry.dev && !entry.devOptional && !path.slice(13).includes("/node_modules/"))
      console.log(path.slice(13));
  }' "$repo/package-lock.json" >"$work/packages"
mkdir -p "$ctx/app/node_modules"
(cd "$modules" && tar -cf - $(while read -r dir; do [ -d "$dir" ] && echo "$dir"; done <"$work/packages")) |
  tar -C "$ctx/app/node_modules" -xf -

base="${BASE:-$(make_base)}"
log "building $TAG from $base"
# A local base needs nothing from outside; a public one gets podman and busybox with apt.
offline=()
[ -n "$BASE" ] || offline=(--network=none --pull=never)
# podman drops HEALTHCHECK from OCI images: the docker format keeps it.
format=()
[ "$(basename "$ENGINE")" = docker ] || format=(--format docker)
engine build "${offline[@]}" "${format[@]}" --build-arg "BASE=$base" -t "$TAG" -f "$ctx/Containerfile" "$ctx" >&2
echo "$TAG"
