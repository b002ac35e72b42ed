#!/bin/sh
# Builds (once per machine) a local Debian bookworm base image for the bottleneck images,
# for machines where no image registry is reachable: debootstrap (minbase plus the few
# packages the images and tests need) from deb.debian.org into a temporary directory,
# then `ENGINE import`. Cached twice: the root filesystem tarball in $CACHE (default
# /var/cache/bottleneck) and the image by its tag, so later runs take a second.
#
#   images/base-image.sh docker|podman [TAG]     (root; prints the tag)
#
# Packages: curl and ca-certificates (agent-side probes), nftables and iproute2 (the
# gateway), passwd (useradd for the node user).
set -eu
engine=${1:?usage: base-image.sh docker|podman [TAG]}
tag=${2:-bottleneck-base:bookworm}
cache=${CACHE:-/var/cache/bottleneck}
tarball=$cache/bookworm-minbase.tar
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=curl,ca-certificates,nftables,iproute2,passwd

mkdir -p "$cache"
# One builder at a time (tests for several engines may start together).
exec 9>"$cache/.lock"
flock -w 900 9 || { echo "base-image.sh: $cache/.lock is held for too long" >&2; exit 1; }

if "$engine" image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag: cached in $engine" >&2
  echo "$tag"
  exit 0
fi
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 3; }
  echo "base image: debootstrap bookworm ($packages) from $mirror, once per machine (about a minute)..." >&2
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"
  trap - EXIT
else
  echo "base image: root filesystem cached in $tarball" >&2
fi
"$engine" import "$tarball" "$tag" >/dev/null
echo "base image $tag: imported into $engine from $tarball" >&2
echo "$tag"
