"""Base weights read back from the checkpoint on demand instead of held in memory.

A hook-mode rollout engine never needs the unmerged target weights except to undo a full-weight
sync (a benchmark baseline). Keeping a copy for that doubled the target Linears' memory; this
mapping has the same keys and reads a weight from the model's safetensors only when asked.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open


class DiskWeights(Mapping):
    """HF module name -> its ``.weight`` from ``model_dir``'s safetensors, cast to ``dtype`` on ``device``."""

    def __init__(self, model_dir: str, names, dtype: torch.dtype, device: torch.device):
        self.dir = Path(model_dir)
        if not self.dir.is_dir():  # a hub id: the snapshot from_pretrained already downloaded
            from huggingface_hub import snapshot_download

            self.dir = Path(snapshot_download(str(model_dir), local_files_only=True,
                                              allow_patterns=["*.safetensors", "*.json"]))
        self.names = list(names)
        self.dtype, self.device = dtype, device
        index = self.dir / "model.safetensors.index.json"
        if index.exists():
            self.file_of = {k: self.dir / f for k, f in json.loads(index.read_text())["weight_map"].items()}
        else:
            single = self.dir / "model.safetensors"
            if not single.exists():
                raise FileNotFoundError(f"{model_dir}: no model.safetensors(.index.json) to read base weights from")
            with safe_open(str(single), framework="pt") as fh:
                self.file_of = {k: single for k in fh.keys()}
        missing = [n for n in self.names if f"{n}.weight" not in self.file_of]
        if missing:
            raise KeyError(f"{model_dir}: checkpoint lacks {missing[:3]}")

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(name)
        key = f"{name}.weight"
        with safe_open(str(self.file_of[key]), framework="pt") as fh:
            return fh.get_tensor(key).to(self.device, self.dtype)

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)
