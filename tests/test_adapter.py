"""δS adapter: exact identity at zero, equals the merged dense weight, exact ablation,
finite-difference gradients, weight-sync state, and the SVD cache."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from vgrout_ray.model.adapter import attach_adapter, merge_delta
from vgrout_ray.model.svd_cache import (StaleSVDCacheError, TARGET_MODULES, load_or_compute_factors,
                                        model_slug, target_linears)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def svd_root(tmp_path_factory):
    return tmp_path_factory.mktemp("svd")


def _model(tiny, dtype=torch.float32):
    m = AutoModelForCausalLM.from_pretrained(tiny, dtype=dtype, attn_implementation="sdpa")
    m.config.use_cache = False
    return m


def _ids(tiny, n=2, length=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = AutoTokenizer.from_pretrained(tiny).vocab_size
    return torch.randint(5, vocab, (n, length), generator=g)


def _randomise(ad, scale=0.05, seed=1, hack=True):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in ad.names:
            ad.delta[n].copy_(scale * torch.randn(ad.delta[n].shape, generator=g, dtype=torch.float64))
            if hack:
                ad.hack[n].copy_(scale * torch.randn(ad.hack[n].shape, generator=g, dtype=torch.float64))


def test_zero_delta_is_bit_identical(tiny, svd_root):
    model = _model(tiny)
    x = _ids(tiny)
    with torch.no_grad():
        base = model(x).logits.clone()
    ad = attach_adapter(model, load_or_compute_factors(model, tiny, svd_root))
    assert set(ad.names) == set(target_linears(model)) and len(ad.names) == 7 * model.config.num_hidden_layers
    for train in (False, True):
        model.train(train)
        with torch.no_grad():
            assert torch.equal(model(x).logits, base)
    logits = model(x).logits  # grad-enabled forward through the knobs
    assert torch.equal(logits.detach(), base)
    _randomise(ad)
    with torch.no_grad():
        assert not torch.equal(model(x).logits, base)
        with ad.zero_delta():
            assert torch.equal(model(x).logits, base)
        assert ad.ref_logprobs(x, 10).shape == (2, 10)
    ad.remove()
    with torch.no_grad():
        assert torch.equal(model(x).logits, base)


def test_merge_delta_formula():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 4, generator=g, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    d = torch.randn(4, generator=g, dtype=torch.float64)
    assert torch.allclose(merge_delta(W, U, Vh, d), W + U @ torch.diag(d) @ Vh, atol=1e-14)
    assert torch.allclose(merge_delta(W, U, Vh, -S), torch.zeros_like(W), atol=1e-12)
    assert merge_delta(W.float(), U.float(), Vh.float(), d.float()).dtype == torch.float32


def test_forward_equals_merged_dense_weights(tiny, svd_root):
    model = _model(tiny).double()
    ad = attach_adapter(model, load_or_compute_factors(_model(tiny), tiny, svd_root))
    _randomise(ad)
    x = _ids(tiny)
    # per module: hook output == dense Linear with W' (float64)
    name = ad.names[3]
    lin = ad.layers[name]
    h = torch.randn(3, 5, lin.in_features, dtype=torch.float64)
    with torch.no_grad():
        got = lin(h)
        want = F.linear(h, merge_delta(lin.weight, ad.U[name], ad.Vh[name], ad.delta[name] + ad.hack[name]))
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # whole model: a plain copy loaded with merged_weights reproduces the adapted logits
    for include_hack in (True, False):
        dense = copy.deepcopy(model)
        for m in dense.modules():
            m._forward_hooks.clear()
        dense.load_state_dict(ad.merged_weights(include_hack=include_hack), strict=False)
        with torch.no_grad():
            ref = dense(x).logits
            if include_hack:
                got = model(x).logits
            else:
                with ad.ablate_quarantine():
                    got = model(x).logits
        assert torch.allclose(got, ref, rtol=1e-9, atol=1e-9)
    assert set(ad.merged_weights(True)) == {f"{n}.weight" for n in ad.names}


def test_ablate_quarantine_restores_exactly(tiny, svd_root):
    model = _model(tiny)
    ad = attach_adapter(model, load_or_compute_factors(model, tiny, svd_root))
    _randomise(ad)
    x = _ids(tiny)
    before_state = ad.deltas_state()
    with torch.no_grad():
        full = model(x).logits.clone()
        with ad.ablate_quarantine():
            abl = model(x).logits.clone()
        after = model(x).logits
    assert torch.equal(after, full) and not torch.equal(abl, full)
    for k, v in ad.deltas_state().items():
        assert torch.equal(v, before_state[k])
    # ablated view == the same δS with δS_hack set to zero, bit for bit
    with torch.no_grad():
        for p in ad.hack_params():
            p.zero_()
        assert torch.equal(model(x).logits, abl)


def _rmsnorm_in_input_dtype(self, h):
    # Qwen3RMSNorm upcasts to float32 only; keep float64 end to end so finite differences resolve
    return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def test_delta_grads_match_finite_differences(tiny, svd_root, monkeypatch):
    from transformers.models.qwen3 import modeling_qwen3

    monkeypatch.setattr(modeling_qwen3.Qwen3RMSNorm, "forward", _rmsnorm_in_input_dtype)
    model = _model(tiny).double()
    ad = attach_adapter(model, load_or_compute_factors(_model(tiny), tiny, svd_root))
    _randomise(ad, scale=0.1)
    x = _ids(tiny, n=2, length=12)

    def f():
        return -torch.log_softmax(model(x).logits[:, :-1], -1).gather(-1, x[:, 1:, None]).mean()

    ad.zero_grad()
    f().backward()
    for name in (ad.names[0], ad.names[-1]):
        for which in (ad.delta, ad.hack):
            p = which[name]
            analytic = p.grad.clone()
            idx = torch.randperm(p.numel(), generator=torch.Generator().manual_seed(2))[:8]
            eps = 1e-5
            for i in idx.tolist():
                with torch.no_grad():
                    p[i] += eps
                    up = f().item()
                    p[i] -= 2 * eps
                    dn = f().item()
                    p[i] += eps
                fd = (up - dn) / (2 * eps)
                assert abs(fd - analytic[i].item()) <= 5e-9 + 1e-6 * abs(fd), (name, i, fd, analytic[i].item())
    assert all(torch.equal(ad.delta[n].grad, ad.hack[n].grad) for n in ad.names)  # same path at c=1


def test_deltas_state_round_trip(tiny, svd_root):
    model = _model(tiny)
    ad = attach_adapter(model, load_or_compute_factors(model, tiny, svd_root))
    _randomise(ad)
    st = ad.deltas_state()
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in st.values())
    assert len(st) == 2 * len(ad.names)
    model2 = _model(tiny)
    ad2 = attach_adapter(model2, load_or_compute_factors(model2, tiny, svd_root))
    ad2.load_deltas(st)
    x = _ids(tiny)
    with torch.no_grad():
        assert torch.equal(model(x).logits, model2(x).logits)
    st["model.layers.0.self_attn.q_proj.delta_S"] = torch.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        ad2.load_deltas(st)
    st.pop("model.layers.0.self_attn.q_proj.delta_S")
    with pytest.raises(KeyError, match="missing"):
        ad2.load_deltas(st)


def test_generate_with_adapter(tiny, svd_root):
    model = _model(tiny)
    ad = attach_adapter(model, load_or_compute_factors(model, tiny, svd_root))
    _randomise(ad)
    tok = AutoTokenizer.from_pretrained(tiny)
    enc = tok("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt", add_special_tokens=False)
    model.config.use_cache = True
    with torch.no_grad():
        greedy = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    # greedy decode with KV cache agrees with argmax of full forwards through the hooks
    seq = enc.input_ids
    with torch.no_grad():
        for _ in range(greedy.shape[1] - seq.shape[1]):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(seq, greedy)


def test_svd_cache_reuse_and_staleness(tiny, tmp_path):
    model = _model(tiny)
    f1 = load_or_compute_factors(model, tiny, tmp_path)
    files = sorted((tmp_path / model_slug(tiny) / "svd").glob("*.safetensors"))
    assert len(files) == len(f1)
    for name, lin in target_linears(model).items():
        f = f1[name]
        assert f.U.dtype == torch.float32 and f.rank == min(lin.weight.shape)
        assert torch.allclose(f.U @ torch.diag(f.S) @ f.Vh, lin.weight, atol=1e-5)
    f2 = load_or_compute_factors(model, tiny, tmp_path)
    assert all(torch.equal(f1[n].U, f2[n].U) and torch.equal(f1[n].Vh, f2[n].Vh) for n in f1)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    with pytest.raises(StaleSVDCacheError, match="up_proj"):
        load_or_compute_factors(model, tiny, tmp_path)
    assert set(TARGET_MODULES) == {n.rsplit(".", 1)[-1] for n in f1}
