"""Dr.GRPO loss pieces against explicit formulas (seed 003's normalisation)."""
from __future__ import annotations

import pytest
import torch

from vgrout_ray.algo import loss as L
from vgrout_ray.model.adapter import attach_adapter
from vgrout_ray.model.svd_cache import load_or_compute_factors


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_per_token_logps_is_log_softmax_gather():
    logits = _rand(3, 7, 11)
    ids = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(1))
    want = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    got = L.per_token_logps(logits, ids)
    assert got.dtype == torch.float32 and got.shape == (3, 7)
    assert torch.allclose(got.double(), want, atol=1e-6)


def test_completion_logps_uses_logits_to_keep_alignment(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float64)
    ids = torch.randint(5, 1000, (2, 30), generator=torch.Generator().manual_seed(0))
    n_c = 9
    with torch.no_grad():
        full = torch.log_softmax(model(ids).logits, -1)
        want = full[:, -n_c - 1:-1].gather(-1, ids[:, -n_c:, None]).squeeze(-1)
        got = L.completion_logps(model, ids, n_c)
    assert got.shape == (2, n_c)
    assert torch.allclose(got.double(), want, atol=1e-6)


def test_group_advantages():
    r = torch.tensor([0.5, 3.5, 3.5, 0.0])
    assert torch.allclose(L.group_advantages(r, unbiased=True), r - r.mean())
    std = ((r - r.mean()) ** 2).sum().div(len(r) - 1).sqrt()  # Bessel, torch.std's default
    assert torch.allclose(L.group_advantages(r, unbiased=False), (r - r.mean()) / (std + 1e-4))
    assert torch.equal(L.group_advantages(torch.full((4,), 2.0), unbiased=True), torch.zeros(4))


def test_grpo_token_loss_clip_form():
    lp, lp_old = _rand(4, 6, seed=1) * 0.3, _rand(4, 6, seed=2) * 0.3
    A = torch.tensor([1.0, -1.0, 0.5, -2.0], dtype=torch.float64)
    clip = 0.2
    got = L.grpo_token_loss(lp, lp_old, A, clip)
    rho = torch.exp(lp - lp_old)
    want = -torch.minimum(rho * A[:, None], rho.clamp(1 - clip, 1 + clip) * A[:, None])
    assert torch.allclose(got, want, atol=1e-14)
    # on-policy (ρ ≡ 1): −A per token, and the gradient is −A·∇logπ
    lp1 = lp.clone().requires_grad_(True)
    out = L.grpo_token_loss(lp1, lp1.detach(), A, clip)
    assert torch.allclose(out, -A[:, None].expand(4, 6))
    out.sum().backward()
    assert torch.allclose(lp1.grad, -A[:, None].expand(4, 6))
    # clipped side: A > 0 and ρ > 1+ε -> constant (no gradient)
    lp2 = (lp_old + 1.0).requires_grad_(True)
    L.grpo_token_loss(lp2, lp_old, torch.ones(4, dtype=torch.float64), clip).sum().backward()
    assert torch.equal(lp2.grad, torch.zeros_like(lp2))


def test_ppo_clip_masks_mark_the_tokens_whose_gradient_the_clip_cuts():
    ratio = torch.tensor([[1.0, 0.7, 0.7, 1.3], [1.3, 1.1, 0.79, 1.0]])
    A = torch.tensor([1.0, -1.0])  # one advantage per rollout, broadcast over its tokens
    low, high = L.ppo_clip_masks(ratio.log(), torch.zeros_like(ratio), A, clip=0.2)
    assert low.tolist() == [[False] * 4, [False, False, True, False]]  # 0.79 < 0.8 with A < 0
    assert high.tolist() == [[False, False, False, True], [False] * 4]  # 1.3 > 1.2 with A > 0
    # exactly where the clipped surrogate's gradient is zero (and nowhere else, A != 0)
    logp = ratio.log().clone().requires_grad_(True)
    L.grpo_token_loss(logp, torch.zeros_like(ratio), A, clip=0.2).sum().backward()
    assert ((logp.grad == 0) == (low | high)).all()
    # one inner step: ratio == 1 everywhere, nothing clipped
    lo, hi = L.ppo_clip_masks(torch.zeros(3, 5), torch.zeros(3, 5), torch.tensor([-1.0, 0.0, 1.0]), 0.2)
    assert not (lo | hi).any()


def test_k3_kl_nonnegative_and_zero_at_equal():
    lp, ref = _rand(5, 9, seed=3), _rand(5, 9, seed=4)
    k = L.k3_kl(lp, ref)
    assert (k >= 0).all() and (k > 0).any()
    assert torch.equal(L.k3_kl(lp, lp), torch.zeros_like(lp))
    d = ref - lp
    assert torch.allclose(k, torch.exp(d) - d - 1)
    A = torch.ones(5, dtype=torch.float64)
    with_kl = L.grpo_token_loss(lp, lp, A, 0.2, beta=0.1, logp_ref=ref)
    assert torch.allclose(with_kl, L.grpo_token_loss(lp, lp, A, 0.2) + 0.1 * k)


def test_k3_is_zero_at_zero_delta_on_the_model(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny)
    model.config.use_cache = False
    ad = attach_adapter(model, load_or_compute_factors(model, tiny, tmp_path))
    ids = torch.randint(5, 1000, (3, 25), generator=torch.Generator().manual_seed(0))
    lp = L.completion_logps(model, ids, 10)
    ref = ad.ref_logprobs(ids, 10)
    assert torch.equal(L.k3_kl(lp.detach(), ref), torch.zeros_like(ref))
    with torch.no_grad():
        for p in ad.delta_params():
            p.add_(0.05)
    lp = L.completion_logps(model, ids, 10).detach()
    k = L.k3_kl(lp, ad.ref_logprobs(ids, 10))
    assert (k >= 0).all() and k.sum() > 0


@pytest.mark.parametrize("unbiased", [True, False])
def test_normalisation_matches_seed_formula(unbiased):
    G, max_new, P = 4, 8, 3
    Lp = _rand(G, 6, seed=5)
    mask = (torch.arange(6)[None] < torch.tensor([6, 3, 1, 0])[:, None]).double()
    got = L.normalise_loss(Lp, mask, unbiased=unbiased, group=G, max_new=max_new, prompts_per_step=P)
    if unbiased:
        want = sum(Lp[b, t] for b in range(G) for t in range(6) if mask[b, t]) / (G * max_new * P)
    else:
        means = [sum(Lp[b, t] for t in range(6) if mask[b, t]) / max(1, int(mask[b].sum())) for b in range(G)]
        want = sum(means) / (G * P)
    assert torch.allclose(got, torch.as_tensor(want, dtype=torch.float64), atol=1e-14)
    is_s = torch.tensor([True, True, False, False])
    ls, lt = L.split_losses(Lp, mask, is_s, unbiased=unbiased, group=G, max_new=max_new, prompts_per_step=P)
    assert torch.allclose(ls + lt, got, atol=1e-14)
    only_s = L.normalise_loss(Lp[:2], mask[:2], unbiased=unbiased, group=G, max_new=max_new, prompts_per_step=P)
    assert torch.allclose(ls, only_s, atol=1e-14)
