#!/bin/sh
# pack-context.sh DIR OUT.tar.gz
#
# Packs a build context folder, plus the host's static busybox as `busybox` at the
# context's root (the Containerfiles COPY it; it is not committed), into a
# reproducible .tar.gz: sorted names, fixed mtime, owner 0, normalised modes and
# `gzip -n`, so the same folder always gives the same bytes and the same digest.
# BUSYBOX names another busybox binary (default /bin/busybox). Needs GNU tar.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: pack-context.sh DIR OUT.tar.gz" >&2
  exit 2
fi
dir=$1
out=$2
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -f "$dir/Containerfile" ]; then
  echo "pack-context.sh: $dir has no Containerfile" >&2
  exit 1
fi
if [ ! -f "$busybox" ]; then
  echo "pack-context.sh: no busybox at $busybox (install busybox-static, or set BUSYBOX)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
mkdir "$tmp/context"
cp -R "$dir/." "$tmp/context/"
cp "$busybox" "$tmp/context/busybox"
# The checkout's umask and the copy's times must not change the archive.
chmod -R u+rwX,go+rX,go-w "$tmp/context"
chmod 0755 "$tmp/context/busybox"

LC_ALL=C tar -C "$tmp/context" --sort=name --format=gnu --mtime=@0 \
  --owner=0 --group=0 --numeric-owner -cf "$tmp/context.tar" .
gzip -n -9 <"$tmp/context.tar" >"$tmp/context.tar.gz"
mv -f "$tmp/context.tar.gz" "$out"
