"""Long start-up steps say how far they are: the SVD logs modules done, elapsed and ETA."""
from __future__ import annotations

import torch
from loguru import logger

from vgrout_ray.model import svd_cache


def test_svd_logs_progress_with_eta(tiny, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(svd_cache, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO")
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
        svd_cache.load_or_compute_factors(model, tiny, tmp_path)
    finally:
        logger.remove(sink)
    progress = [ln for ln in lines if "ETA" in ln]
    n = len(svd_cache.target_linears(model))
    assert len(progress) == n - 1 and f"1/{n} modules" in progress[0]
    assert any(f"{n} modules ({n} computed, 0 cached) in" in ln for ln in lines)
