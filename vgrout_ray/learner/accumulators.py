"""What a learner step gathers group by group before ``end_step`` turns it into one row of stats.

One small type instead of a score of ``self._x`` fields: it is created empty at ``begin_step``,
every group adds to it, and ``end_step`` reads each derived number (KL, clip fractions, sampler
mismatch, TIS weights) from here, computed once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Grads = dict[str, torch.Tensor]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def accumulate(store: Grads, name: str, g: torch.Tensor) -> None:
    """Add ``g`` into ``store[name]`` (a detached copy the first time)."""
    store[name] = store[name] + g.detach() if name in store else g.detach().clone()


@dataclass
class StepAccumulators:
    # δS gradients of student rows, of teacher rows, and what route2 parks in δS_hack
    g_s: Grads = field(default_factory=dict)
    g_t: Grads = field(default_factory=dict)
    g_hack: Grads = field(default_factory=dict)
    # route2 on a split step: student / teacher δS grads before its gate (measured, never applied)
    m_s: Grads = field(default_factory=dict)
    m_t: Grads = field(default_factory=dict)
    loss: float = 0.0
    fb_seconds: float = 0.0
    n_groups: int = 0
    n_zerovar: int = 0
    # route2 gate, per module and group
    tau: list[float] = field(default_factory=list)
    hkgap: list[float] = field(default_factory=list)
    resid: list[float] = field(default_factory=list)
    flagged: list[float] = field(default_factory=list)
    gate_cos: list[float] = field(default_factory=list)
    # token statistics over completion tokens
    tokens: float = 0.0
    clip_low: float = 0.0
    clip_high: float = 0.0
    kl_sum: float = 0.0
    # sampler vs learner log-probs, and the optional TIS correction
    mismatch_kl_sum: float = 0.0
    mismatch_max: float = 0.0
    mismatch_n: int = 0
    tis_sum: float = 0.0
    tis_capped: int = 0
    tis_n: int = 0

    def per_token(self, x: float) -> float:
        return x / self.tokens if self.tokens else math.nan

    def stats_fields(self, beta: float) -> dict:
        """The ``LearnerStepStats`` fields that come from this step's groups."""
        return dict(
            loss=self.loss, tau=_mean(self.tau), hkgap=_mean(self.hkgap), resid=_mean(self.resid),
            fb=self.fb_seconds, flagged=_mean(self.flagged), gate_cos=list(self.gate_cos),
            n_groups=self.n_groups, n_zerovar=self.n_zerovar,
            kl=self.per_token(self.kl_sum) if beta > 0 else math.nan,
            clip_low=self.per_token(self.clip_low), clip_high=self.per_token(self.clip_high),
            clip_region=self.per_token(self.clip_low + self.clip_high),
            mismatch_kl=self.mismatch_kl_sum / self.mismatch_n if self.mismatch_n else math.nan,
            mismatch_max_abs_dlogp=self.mismatch_max if self.mismatch_n else math.nan,
            mismatch_tokens=self.mismatch_n,
            tis_mean_w=self.tis_sum / self.tis_n if self.tis_n else math.nan,
            tis_capped_frac=self.tis_capped / self.tis_n if self.tis_n else math.nan,
        )
