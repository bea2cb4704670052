"""Rollout engines hold one copy of everything: SVD factors in the model dtype (not fp32), and no
second copy of the base weights (hf: the layers' own tensors; vllm: none, the engine has them)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from vgrout_ray.rollout.actor import GenRequest, HFEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_and_cache):
    return tiny_and_cache


def _storages(tensors) -> dict[int, int]:
    """storage data_ptr -> bytes, each storage once."""
    out = {}
    for t in tensors:
        s = t.untyped_storage()
        out[s.data_ptr()] = s.nbytes()
    return out


def _held(eng: HFEngine) -> dict[int, int]:
    ts = [p for p in eng.model.parameters()] + [b for b in eng.model.buffers()]
    ts += list(eng.base.values()) + list(eng.U.values()) + list(eng.Vh.values())
    ts += list(eng.adapter.U.values()) + list(eng.adapter.Vh.values())
    return _storages(ts)


@pytest.mark.parametrize("delta_apply", ["hook", "merge"])
def test_hf_engine_bf16_one_copy_of_factors_and_base(tiny, tmp_path, delta_apply):
    # own SVD cache: the factors cached for the fp32 weights are keyed by that dtype's hash
    eng = HFEngine(tiny[0], str(tmp_path), device="cpu", dtype="bf16", delta_apply=delta_apply)
    for n in eng.layers:
        assert eng.U[n].dtype == eng.Vh[n].dtype == torch.bfloat16
        assert eng.U[n] is eng.adapter.U[n] and eng.Vh[n] is eng.adapter.Vh[n]
    model_bytes = sum(_storages(list(eng.model.parameters()) + list(eng.model.buffers())).values())
    factor_bytes = sum(t.numel() * 2 for n in eng.layers for t in (eng.U[n], eng.Vh[n]))
    base_bytes = sum(w.numel() * 2 for w in eng.base.values())
    extra = base_bytes if delta_apply == "merge" else 0  # merge mode writes the layers: it needs the copy
    assert sum(_held(eng).values()) == model_bytes + factor_bytes + extra
    if delta_apply == "hook":
        assert all(eng.base[n].data_ptr() == l.weight.data_ptr() for n, l in eng.layers.items())


def test_hf_hook_engine_full_sync_still_restores_the_base(tiny):
    """Full-weight sync writes the layers: the hook engine saves the base first and restores it."""
    eng = HFEngine(*tiny, device="cpu")
    ids = eng.tok("def f(x):", add_special_tokens=False).input_ids
    req = GenRequest("k", ids, 2, 8, seed=3)
    base_out = eng.generate(req).completions
    w0 = {n: l.weight.detach().clone() for n, l in eng.layers.items()}
    views = {False: {f"{n}.weight": w * 1.5 for n, w in w0.items()}}
    eng.load_views(1, views)
    assert eng.generate(req).completions != base_out
    eng.load_deltas(2, {f"{n}.{k}": torch.zeros(eng.U[n].shape[1]) for n in eng.layers
                        for k in ("delta_S", "delta_S_hack")})
    assert eng.generate(req).completions == base_out
    assert all(torch.equal(l.weight, w0[n]) for n, l in eng.layers.items())


@pytest.mark.vllm
def test_vllm_hook_engine_keeps_no_base_copy_and_engine_dtype_factors(vllm_ready, tiny):
    from vgrout_ray.rollout.vllm_engine import VLLMEngine
    from vgrout_ray.model.disk_weights import DiskWeights

    path, cache = tiny
    eng = VLLMEngine(path, cache, gpu_memory_utilization=0.3, max_model_len=512)
    assert isinstance(eng.base, DiskWeights)  # no tensors held; read back only to undo a full sync
    assert all(eng.U[n].dtype == eng.dtype and eng.U[n].device.type == "cpu" for n in eng.base)

    def worker_factors(worker):
        return {hf: (str(U.dtype), U.data_ptr(), Vh.data_ptr()) for h in worker._vgrout_hooks.values()
                for hf, U, Vh in h.parts}

    got = eng.llm.collective_rpc(worker_factors)[0]
    assert set(got) == set(eng.base)
    # in-process CPU engine: the hooks use the engine's own factor tensors (no extra copy)
    assert all(got[n] == (str(eng.dtype), eng.U[n].data_ptr(), eng.Vh[n].data_ptr()) for n in got)
    first = next(iter(eng.base))
    w = eng.base[first]
    assert w.dtype == eng.dtype and tuple(w.shape) == (eng.U[first].shape[0], eng.Vh[first].shape[1])


def test_shipped_learner_factors_are_bitwise_the_learners(tiny, tmp_path):
    """Single-run path: the learner ships its (U, Vh); the engine needs no SVD (empty cache dir)
    and hooks with exactly the learner's bases."""
    from vgrout_ray.learner.actor import LearnerActorImpl
    from vgrout_ray.rollout.actor import RolloutActorImpl
    from vgrout_ray.learner.core import load_model
    from vgrout_ray.model.adapter import attach_adapter
    from vgrout_ray.model.svd_cache import load_or_compute_factors

    path, cache = tiny
    model = load_model(path, torch.device("cpu"))
    ad = attach_adapter(model, load_or_compute_factors(model, path, cache))

    class _Core:
        adapter = ad

    payload = LearnerActorImpl.around(_Core()).factors_payload()
    empty = tmp_path / "no_svd_here"
    actor = RolloutActorImpl("hf", path, str(empty), factors=payload)
    assert not empty.exists()  # nothing computed or cached on the rollout side
    eng = actor.engine
    assert set(eng.U) == set(ad.names)
    for n in ad.names:
        assert torch.equal(eng.U[n], ad.U[n]) and torch.equal(eng.Vh[n], ad.Vh[n])
        assert eng.U[n].dtype == ad.U[n].dtype
    if importlib.util.find_spec("vllm") is None:
        return
    from vgrout_ray.rollout.vllm_engine import VLLMEngine

    v = VLLMEngine(path, str(empty), gpu_memory_utilization=0.3, max_model_len=512, factors=payload)
    assert not empty.exists()

    def worker_factors(worker):
        return {hf: (U.clone(), Vh.clone()) for h in worker._vgrout_hooks.values() for hf, U, Vh in h.parts}

    got = v.llm.collective_rpc(worker_factors)[0]
    assert set(got) == set(ad.names)
    for n in ad.names:
        assert torch.equal(got[n][0], ad.U[n]) and torch.equal(got[n][1], ad.Vh[n])


def test_vllm_utilization_leaves_room_for_hook_factors():
    from vgrout_ray.rollout.vllm_engine import utilization_after_hooks

    gib = 2**30
    assert utilization_after_hooks(0.5, 9 * gib, 100 * gib) == pytest.approx(0.41)
    with pytest.raises(ValueError, match="raise it"):
        utilization_after_hooks(0.1, 9 * gib, 100 * gib)
