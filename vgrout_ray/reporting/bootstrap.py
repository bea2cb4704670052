"""Bootstrap CIs over seeds × prompts from per-prompt counts (pure).

A run's eval gives, per prompt, (k, n): k successes (hacks, solves) of n samples. The
two-stage bootstrap resamples seeds with replacement, then prompts with replacement within each
drawn seed, and takes the pooled rate Σk / Σn of the resample; the CI is the percentile
interval of those rates. The point estimate is the pooled rate of the data. ``paired`` does the
same for arm − baseline with one set of indices for both (same seeds, same eval prompts: the
eval draws the same prompts and sampling seeds in every arm).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Counts = Sequence[Sequence[tuple[int, int]]]  # per seed, per prompt: (k, n)


def _check(runs: Counts, what: str) -> list[np.ndarray]:
    if not runs:
        raise ValueError(f"{what}: no seeds")
    out = []
    for s, prompts in enumerate(runs):
        if not prompts:
            raise ValueError(f"{what}: seed #{s} has no prompts")
        a = np.asarray(prompts, dtype=np.int64).reshape(-1, 2)
        if (a[:, 1] <= 0).any() or (a[:, 0] < 0).any() or (a[:, 0] > a[:, 1]).any():
            raise ValueError(f"{what}: seed #{s} has a prompt with counts outside 0 <= k <= n, n >= 1")
        out.append(a)
    return out


def _pooled(arrs: list[np.ndarray]) -> float:
    return float(sum(a[:, 0].sum() for a in arrs) / sum(a[:, 1].sum() for a in arrs))


def _draws(arrs: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> list[tuple[np.ndarray, list]]:
    """n_boot × (seed indices, per drawn seed its prompt indices)."""
    out = []
    for _ in range(n_boot):
        seeds = rng.integers(0, len(arrs), len(arrs))
        out.append((seeds, [rng.integers(0, len(arrs[s]), len(arrs[s])) for s in seeds]))
    return out


def _rate(arrs: list[np.ndarray], draw) -> float:
    seeds, prompts = draw
    k = sum(int(arrs[s][p, 0].sum()) for s, p in zip(seeds, prompts))
    n = sum(int(arrs[s][p, 1].sum()) for s, p in zip(seeds, prompts))
    return k / n


def _interval(vals: list[float], alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(vals), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_rate(runs: Counts, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """{"mean": pooled rate, "lo", "hi": percentile CI, "n_seeds", "n_prompts", "n_samples"}."""
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"bootstrap_rate: n_boot >= 1 and alpha in (0, 1), got {n_boot}, {alpha}")
    arrs = _check(runs, "bootstrap_rate")
    rng = np.random.default_rng(seed)
    vals = [_rate(arrs, d) for d in _draws(arrs, n_boot, rng)]
    lo, hi = _interval(vals, alpha)
    return {"mean": _pooled(arrs), "lo": lo, "hi": hi, "n_seeds": len(arrs),
            "n_prompts": sum(len(a) for a in arrs), "n_samples": int(sum(a[:, 1].sum() for a in arrs))}


def bootstrap_paired(runs: Counts, base: Counts, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Rate(runs) − rate(base) with the same seed and prompt indices for both (paired by seed and
    prompt: ``runs[s][p]`` and ``base[s][p]`` must be the same seed and eval prompt)."""
    a, b = _check(runs, "bootstrap_paired"), _check(base, "bootstrap_paired base")
    if [len(x) for x in a] != [len(x) for x in b]:
        raise ValueError("bootstrap_paired: runs and base differ in seeds or prompts per seed")
    rng = np.random.default_rng(seed)
    vals = [_rate(a, d) - _rate(b, d) for d in _draws(a, n_boot, rng)]
    lo, hi = _interval(vals, alpha)
    return {"mean": _pooled(a) - _pooled(b), "lo": lo, "hi": hi, "n_seeds": len(a),
            "n_prompts": sum(len(x) for x in a)}


def fmt_ci(ci: dict | None, digits: int = 3) -> str:
    """'m [lo, hi]' or '—'."""
    if not ci or ci.get("mean") is None or math.isnan(ci["mean"]):
        return "—"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
