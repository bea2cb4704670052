"""SVD factors (U, S, Vh) of every adapted Linear, computed once and cached as safetensors.

Why: the learner and every rollout actor need the same frozen bases; a full SVD of a 4B
model's projections takes minutes, so it is done once per model and shared through the
cache. Each file records a hash of the weight it came from, so a cache built for other
weights fails loud instead of silently adapting the wrong basis.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from loguru import logger
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from vgrout_ray.util import atomic_path

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCHEMA = "svd_v1"
PROGRESS_EVERY_S = 5.0


class StaleSVDCacheError(RuntimeError):
    """A cached factor file was computed from different weights than the model now holds."""


@dataclass(frozen=True)
class Factors:
    """W ≈ U·diag(S)·Vh (float32, full SVD, r = min(d_out, d_in))."""

    U: torch.Tensor  # [d_out, r]
    S: torch.Tensor  # [r]
    Vh: torch.Tensor  # [r, d_in]

    @property
    def rank(self) -> int:
        return int(self.S.shape[0])


def shipped_factors(payload: dict) -> dict[str, "Factors"]:
    """Factors from a learner's ``{name: (U, Vh)}`` payload. S is not shipped (the adapter never
    reads it): NaN, so that anything that does read it fails loud."""
    out = {}
    for n, (U, Vh) in payload.items():
        out[n] = Factors(U, torch.full((U.shape[1],), float("nan"), dtype=torch.float32), Vh)
    return out


def target_linears(model: nn.Module, targets: tuple[str, ...] = TARGET_MODULES) -> dict[str, nn.Linear]:
    """HF module name -> Linear for every projection the adapter wraps (model order)."""
    out = {name: mod for name, mod in model.named_modules()
           if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets}
    if not out:
        raise ValueError(f"model has no Linear named any of {targets}")
    return out


def weight_hash(w: torch.Tensor) -> str:
    """blake2b of the raw weight bytes + dtype + shape (staleness key)."""
    t = w.detach().contiguous().cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_slug(model_id: str | os.PathLike) -> str:
    """Filesystem-safe cache key: hub ids keep their name; local paths add a path hash."""
    s = str(model_id).rstrip("/")
    p = Path(s)
    if p.exists():
        tag = hashlib.blake2b(str(p.resolve()).encode(), digest_size=4).hexdigest()
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', p.name)}-{tag}"
    return re.sub(r"[^A-Za-z0-9._-]+", "--", s)


def compute_factors(w: torch.Tensor) -> Factors:
    """Full (thin) SVD of ``w`` in float32 on its own device; factors returned on CPU."""
    U, S, Vh = torch.linalg.svd(w.detach().float(), full_matrices=False)
    return Factors(U.contiguous().cpu(), S.contiguous().cpu(), Vh.contiguous().cpu())


def _cache_file(cache_root: Path, model_id, name: str) -> Path:
    return Path(cache_root) / model_slug(model_id) / "svd" / f"{name}.safetensors"


def _save_atomic(path: Path, f: Factors, meta: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({"U": f.U, "S": f.S, "Vh": f.Vh}, str(tmp), metadata=meta)


def load_or_compute_factors(model: nn.Module, model_id: str | os.PathLike, cache_root: str | os.PathLike,
                            targets: tuple[str, ...] = TARGET_MODULES) -> dict[str, Factors]:
    """Factors for every target Linear of ``model``, read from ``cache_root`` or computed and saved.

    Raises StaleSVDCacheError when a cached file's weight hash differs from the live weight.
    """
    out: dict[str, Factors] = {}
    n_new = 0
    layers = target_linears(model, targets)
    t0 = last = time.perf_counter()
    for i, (name, lin) in enumerate(layers.items()):
        now = time.perf_counter()
        if i and now - last >= PROGRESS_EVERY_S:  # a 4B model's SVD takes minutes: say how far it is
            last = now
            done = i / len(layers)
            logger.info(f"SVD factors: {i}/{len(layers)} modules ({n_new} computed) in {now - t0:.0f}s, "
                        f"ETA {(now - t0) * (1 - done) / max(done, 1e-9):.0f}s")
        w = lin.weight
        h = weight_hash(w)
        path = _cache_file(Path(cache_root), model_id, name)
        if path.exists():
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("w_hash") != h:
                    raise StaleSVDCacheError(
                        f"{path}: cached for weight hash {meta.get('w_hash')}, but {name} now hashes to {h}. "
                        f"The model at {model_id} changed; delete {path.parent} to rebuild the SVD cache.")
                f = Factors(fh.get_tensor("U"), fh.get_tensor("S"), fh.get_tensor("Vh"))
        else:
            f = compute_factors(w)
            _save_atomic(path, f, {"w_hash": h, "module": name, "model_id": str(model_id),
                                   "shape": "x".join(map(str, w.shape)), "w_dtype": str(w.dtype),
                                   "schema": SCHEMA})
            n_new += 1
        if f.U.shape[0] != w.shape[0] or f.Vh.shape[1] != w.shape[1]:
            raise StaleSVDCacheError(f"{path}: factor shapes {tuple(f.U.shape)}, {tuple(f.Vh.shape)} "
                                     f"do not fit weight {tuple(w.shape)}")
        out[name] = f
    logger.info(f"SVD factors: {len(out)} modules ({n_new} computed, {len(out) - n_new} cached) "
                f"in {time.perf_counter() - t0:.1f}s under {Path(cache_root) / model_slug(model_id)}")
    return out
