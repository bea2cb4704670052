#!/usr/bin/env bash
# Docker engine + sandbox image on a Debian host: install docker.io and debootstrap when missing,
# start dockerd when nothing answers, then build the sandbox image offline (no registry needed).
# Without root nothing is installed: an engine you run yourself is used if it answers.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null \
    || { echo "provision_docker: cannot install docker.io/debootstrap (not root?); Docker tests will not run" >&2; exit 0; }
fi
if ! docker info >/dev/null 2>&1; then
  as_root sh -c 'nohup dockerd >/var/log/vgrout-dockerd.log 2>&1 &' \
    || { echo "provision_docker: cannot start dockerd" >&2; exit 0; }
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || { echo "provision_docker: Docker engine did not come up (see /var/log/vgrout-dockerd.log)" >&2; exit 1; }
as_root bash sandbox/build_image.sh
