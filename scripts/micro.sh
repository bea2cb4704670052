#!/usr/bin/env bash
# The main job on the embedded defaults: the micro model organism (CPU, local Ray). The first run
# builds and caches the small code model (about 15 min on 2 cores, with progress); the GRPO run
# itself takes about 10 min and ends with its deploy hack / solve before RL and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m vgrout_ray.driver micro "$@"
