"""Model names the driver accepts besides hub ids and paths: ``tiny`` and the micro models, built
offline (or reused) under the run's cache root. Apart from ``tiny`` and ``micro.build`` because it
needs both, and ``micro.build`` itself builds on ``tiny``."""
from __future__ import annotations

from pathlib import Path

from vgrout_ray.micro.build import MICRO_SPECS, ensure_micro_model
from vgrout_ray.model.tiny import TINY_NAME, ensure_tiny_model


def resolve_model(model: str, cache_root: str | Path) -> str:
    """Where to load ``model`` from: ``tiny`` and the micro models are built (or reused) under ``cache_root``."""
    if model == TINY_NAME:
        return str(ensure_tiny_model(cache_root))
    if model in MICRO_SPECS:
        return str(ensure_micro_model(cache_root, model))
    return model
