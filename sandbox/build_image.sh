#!/usr/bin/env bash
# Build the grading sandbox image with no image registry: debootstrap a minimal Debian with
# python3 into a folder, `docker import` it as the base, then apply sandbox/Dockerfile on top.
# Idempotent: does nothing when the image for the current runner version exists (FORCE=1 rebuilds).
# SANDBOX_ONLINE=1 builds on python:3.11-slim from a registry instead (clusters with a registry).
# Needs root (debootstrap), a running Docker engine, and Debian's package mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^RUNNER_VERSION = "\(.*\)"$/\1/p' vgrout_ray/sandbox/runner.py)
[ -n "$version" ] || { echo "build_image: cannot read RUNNER_VERSION from runner.py" >&2; exit 1; }
image="vgrout-sandbox:runner-v${version}"
base="${SANDBOX_BASE:-vgrout-sandbox-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ -z "${FORCE:-}" ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "build_image: $image already present"; exit 0
fi
if [ -n "${SANDBOX_ONLINE:-}" ]; then
  # a registry is reachable (clusters): build on the official slim image instead of debootstrap
  base="${SANDBOX_BASE:-python:3.11-slim}"
  docker image inspect "$base" >/dev/null 2>&1 || docker pull -q "$base" >/dev/null
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "build_image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  rootfs=$(mktemp -d /var/tmp/vgrout-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build_image: debootstrap bookworm (minbase + python3) from $mirror"
  debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" >/tmp/vgrout-debootstrap.log 2>&1 \
    || { tail -20 /tmp/vgrout-debootstrap.log >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  echo "build_image: imported base $base"
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/vgrout_ray/sandbox" "$ctx/sandbox"
cp vgrout_ray/sandbox/runner.py "$ctx/vgrout_ray/sandbox/"
cp sandbox/Dockerfile "$ctx/sandbox/"
DOCKER_BUILDKIT=0 docker build -q -f "$ctx/sandbox/Dockerfile" --build-arg BASE="$base" \
  --build-arg RUNNER_VERSION="$version" -t "$image" "$ctx" >/dev/null
echo "build_image: built $image"
