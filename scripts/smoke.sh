#!/usr/bin/env bash
# The main job on the embedded defaults: a smoke training run (tiny offline model, CPU, local Ray).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m vgrout_ray.driver smoke "$@"
