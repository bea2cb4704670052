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


LOGP_CHUNK_ROWS = 1024  # rows of [*, V] logits turned into float32 at a time


class _Fp32TokenLogp(torch.autograd.Function):
    """log softmax(logits)[id] computed in float32 from logits of any dtype, in row chunks.

    Saves only the logits (their own dtype) and the float32 log-sum-exp; backward rebuilds the
    float32 softmax chunk by chunk. In bf16 this keeps the learner's log-probs exact to fp32
    (F.cross_entropy on bf16 logits returns bf16, i.e. log-probs rounded to ~0.03 at -5) without
    holding a float32 copy of [B, L, V]."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        out = torch.empty(ids.shape, dtype=torch.float32, device=logits.device)
        lse = torch.empty(ids.shape, dtype=torch.float32, device=logits.device)
        for a in range(0, logits.shape[0], LOGP_CHUNK_ROWS):
            sl = slice(a, a + LOGP_CHUNK_ROWS)
            x = logits[sl].float()
            lse[sl] = torch.logsumexp(x, -1)
            out[sl] = x.gather(1, ids[sl, None]).squeeze(1) - lse[sl]
        ctx.save_for_backward(logits, ids, lse)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        logits, ids, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for a in range(0, logits.shape[0], LOGP_CHUNK_ROWS):
            sl = slice(a, a + LOGP_CHUNK_ROWS)
            p = torch.exp(logits[sl].float() - lse[sl, None])
            gi = -p * g[sl, None]
            gi.scatter_add_(1, ids[sl, None], g[sl, None].float())
            grad[sl] = gi.to(logits.dtype)
        return grad, None


def per_token_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log π(ids | prefix) per position, [B, L] float32, computed in float32 whatever the logits'
    dtype (no float32 copy of the logits is kept for backward).

    ``logits`` [B, L, V] already aligned with ``ids`` [B, L] (pass ``logits_to_keep=L+1`` and
    drop the last position).
    """
    B, L, V = logits.shape
    return _Fp32TokenLogp.apply(logits.reshape(B * L, V), ids.reshape(B * L)).view(B, L)


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
                    beta: float = 0.0, logp_ref: torch.Tensor | None = None,
                    is_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token loss [B, L]: −w·min(ρA, clip(ρ, 1±ε)A) + β·K3(π_ref‖π), ρ = exp(logπ − logπ_old).

    ``is_weight`` w [B, L] (no grad): the truncated importance weight that corrects for a sampler
    that is not exactly π_old (``tis_weights``); None = 1 (the seed)."""
    rho = torch.exp(logp - logp_old)
    A_tok = A.unsqueeze(1)
    Lp = -torch.min(rho * A_tok, torch.clamp(rho, 1 - clip, 1 + clip) * A_tok)
    if is_weight is not None:
        Lp = Lp * is_weight.detach()
    if logp_ref is not None and beta > 0:
        Lp = Lp + beta * k3_kl(logp, logp_ref)
    return Lp


def ppo_clip_masks(logp: torch.Tensor, logp_old: torch.Tensor, A: torch.Tensor,
                   clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the PPO clip is active, per token [B, L]: (ρ < 1−ε and A < 0, ρ > 1+ε and A > 0).

    Those are the tokens whose gradient ``grpo_token_loss`` cuts; their shares are the row's
    clip_low / clip_high (clip_region is either)."""
    rho = torch.exp(logp - logp_old)
    a = A.unsqueeze(1).expand_as(rho)
    return (rho < 1 - clip) & (a < 0), (rho > 1 + clip) & (a > 0)


def tis_weights(logp_old: torch.Tensor, logp_sampler: torch.Tensor, has_sampler: torch.Tensor,
                cap: float) -> torch.Tensor:
    """Truncated importance sampling: w = min(π_old(t) / μ(t), cap) per token, μ the sampler's
    probability of the token it drew; rows without sampler log-probs (teacher rows) get w = 1.
    [B, L], no grad."""
    w = torch.exp(logp_old.detach() - logp_sampler).clamp(max=cap)
    return torch.where(has_sampler.unsqueeze(1), w, torch.ones_like(w))


def sampler_mismatch(logp_old: torch.Tensor, logp_sampler: torch.Tensor, mask: torch.Tensor) -> dict:
    """Sampler-vs-learner mismatch over the masked tokens: the K3 estimate of KL(μ‖π_old) from
    tokens drawn from μ (sum), max |Δ log p|, token count. Sums, so groups add up."""
    d = (logp_old.detach() - logp_sampler).float()
    m = mask.bool()
    k3 = torch.exp(d) - d - 1.0
    return {"kl_sum": float(k3[m].sum()), "max_abs": float(d[m].abs().max()) if bool(m.any()) else 0.0,
            "n": int(m.sum())}


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
