"""GRPO / Dr.GRPO loss pieces (seed 003 train.py), as small pure functions.

Dr.GRPO (Liu et al. 2025): A = r − mean_group(r) with no /σ and no 1/|oᵢ|; the summed token
loss is normalised by the constant G·max_new·P, so every token weighs the same across
prompts and steps. ``unbiased=False`` restores the std-normalised advantage and per-rollout
length-mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ADV_STD_EPS = 1e-4


def per_token_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log π(ids | prefix) per position, [B, L] float32.

    ``logits`` [B, L, V] already aligned with ``ids`` [B, L] (pass ``logits_to_keep=L+1`` and
    drop the last position). Fused cross-entropy: no full fp32 softmax is materialised.
    """
    B, L, V = logits.shape
    nll = F.cross_entropy(logits.reshape(B * L, V), ids.reshape(B * L), reduction="none")
    return (-nll).view(B, L).float()


def completion_logps(model, merged: torch.Tensor, n_completion: int,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token log-probs of the last ``n_completion`` tokens of ``merged`` (lm_head on those only)."""
    logits = model(merged, attention_mask=attention_mask, logits_to_keep=n_completion + 1,
                   use_cache=False).logits[:, :-1]
    return per_token_logps(logits, merged[:, -n_completion:])


def group_advantages(rewards: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """A = r − mean(r); without ``unbiased`` also ÷ (std + 1e-4) (torch.std, Bessel-corrected)."""
    A = rewards - rewards.mean()
    if not unbiased:
        A = A / (rewards.std() + ADV_STD_EPS)
    return A


def grpo_token_loss(logp: torch.Tensor, logp_old: torch.Tensor, A: torch.Tensor, clip: float,
                    beta: float = 0.0, logp_ref: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token loss [B, L]: −min(ρA, clip(ρ, 1±ε)A) + β·K3(π_ref‖π), ρ = exp(logπ − logπ_old)."""
    rho = torch.exp(logp - logp_old)
    A_tok = A.unsqueeze(1)
    Lp = -torch.min(rho * A_tok, torch.clamp(rho, 1 - clip, 1 + clip) * A_tok)
    if logp_ref is not None and beta > 0:
        Lp = Lp + beta * k3_kl(logp, logp_ref)
    return Lp


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Schulman's K3 estimator exp(Δ) − Δ − 1 with Δ = logπ_ref − logπ (≥ 0, 0 iff equal)."""
    d = logp_ref - logp
    return torch.exp(d) - d - 1.0


def normalise_loss(Lp: torch.Tensor, mask: torch.Tensor, *, unbiased: bool, group: int, max_new: int,
                   prompts_per_step: int, row_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar loss for one group as the seed normalises it.

    unbiased: Σ(Lp·mask·w) / (G·max_new·P). Otherwise each rollout's masked token mean, then
    Σ(mean·w) / (G·P). ``row_weight`` [B] selects rows (the student/teacher split); None = all.
    """
    w = torch.ones(Lp.shape[0], dtype=Lp.dtype, device=Lp.device) if row_weight is None \
        else row_weight.to(Lp.dtype)
    if unbiased:
        return (Lp * mask * w.unsqueeze(1)).sum() / (group * max_new * prompts_per_step)
    ptl = (Lp * mask).sum(1) / mask.sum(1).clamp_min(1)
    return (ptl * w).sum() / (group * prompts_per_step)


def split_losses(Lp: torch.Tensor, mask: torch.Tensor, is_student: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_s, loss_t) with loss_s + loss_t == normalise_loss(Lp, mask) (rows partition)."""
    s = is_student.to(Lp.dtype)
    return normalise_loss(Lp, mask, row_weight=s, **kw), normalise_loss(Lp, mask, row_weight=1.0 - s, **kw)
