"""Multi-tenant δS: rows of K runs in one forward give each run exactly what a separate
single-run adapter / engine gives (log-probs, gradients, sampled and greedy tokens).

Tolerance (float32, CPU, tiny Qwen3): per-token log-probs within 1e-5 absolute (measured
≤ 1e-6: batching changes only the matmul blocking), gradients within 1e-5 relative.
"""
from __future__ import annotations

import pytest
import torch

from vgrout_ray.rollout.actor import GenRequest, HFEngine
from vgrout_ray.rollout.multi_engine import MultiRunHFEngine
from vgrout_ray.algo.loss import per_token_logps
from vgrout_ray.learner.core import load_model
from vgrout_ray.model.adapter import attach_adapter
from vgrout_ray.model.multi_delta import DeltaBank
from vgrout_ray.model.svd_cache import load_or_compute_factors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUNS = ("none-41", "route-41", "route-42")  # K = 3
ATOL = 1e-5


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("svd"))


def _deltas(names_r: dict[str, int], seed: int, scale: float = 0.5, hack: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, r in names_r.items():
        out[f"{n}.delta_S"] = torch.randn(r, generator=g) * scale
        out[f"{n}.delta_S_hack"] = torch.randn(r, generator=g) * hack
    return out


def _run_deltas(names_r) -> dict:
    return {run: _deltas(names_r, seed) for seed, run in enumerate(RUNS)}


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def test_bank_forward_and_backward_equal_separate_adapters(tiny, cache):
    """Learner side: one forward/backward over rows of 3 runs (one run's rows in the deploy view)
    gives each run the log-probs and the δS / δS_hack gradients of its own separate adapter."""
    model = load_model(str(tiny), torch.device("cpu"))
    ad = attach_adapter(model, load_or_compute_factors(model, str(tiny), cache))
    names_r = {n: ad.delta[n].shape[0] for n in ad.names}
    D = _run_deltas(names_r)
    bank = DeltaBank(ad, trainable=True)
    for v, run in enumerate(RUNS):
        bank.load(run, D[run], version=v)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(10, 2000, (6, 24), generator=g)
    rows = [RUNS[i // 2] for i in range(6)]
    ablate = [r == "route-42" for r in rows]
    w = torch.randn(6, 8, generator=g)

    def loss_of(xb, wb):
        lp = per_token_logps(model(xb, use_cache=False, logits_to_keep=9).logits[:, :-1], xb[:, -8:])
        return lp, (lp * wb).sum()

    with bank.rows(rows, ablate):
        lp_multi, loss = loss_of(x, w)
    loss.backward()
    for k, run in enumerate(RUNS):
        sel = [i for i, r in enumerate(rows) if r == run]
        ad.load_deltas(D[run])
        ad.zero_grad()
        for p in ad.delta_params() + ad.hack_params():
            p.requires_grad_(True)
        view = ad.ablate_quarantine() if ablate[sel[0]] else torch.enable_grad()
        with view:
            lp_one, loss_one = loss_of(x[sel], w[sel])
        loss_one.backward()
        torch.testing.assert_close(lp_multi[sel].detach(), lp_one.detach(), atol=ATOL, rtol=0)
        got = bank.grads(run)
        for n in ad.names:
            torch.testing.assert_close(got[f"{n}.delta_S"], ad.delta[n].grad, rtol=1e-5, atol=1e-7)
            if ablate[sel[0]]:
                assert ad.hack[n].grad is None or not ad.hack[n].grad.any()
                assert not got[f"{n}.delta_S_hack"].any()  # deploy rows send no gradient to δS_hack
            else:
                torch.testing.assert_close(got[f"{n}.delta_S_hack"], ad.hack[n].grad, rtol=1e-5, atol=1e-7)
    # the adapter's own knobs are back after the block
    assert all(isinstance(ad.delta[n], torch.nn.Parameter) for n in ad.names)


def test_bank_bookkeeping_fails_loud(tiny, cache):
    model = load_model(str(tiny), torch.device("cpu"))
    ad = attach_adapter(model, load_or_compute_factors(model, str(tiny), cache))
    names_r = {n: ad.delta[n].shape[0] for n in ad.names}
    D = _run_deltas(names_r)
    bank = DeltaBank(ad)
    for run in RUNS:
        bank.load(run, D[run], version=3)
    with pytest.raises(KeyError, match="not in the bank"):
        with bank.rows(["nope"]):
            pass
    bad = dict(D[RUNS[0]])
    bad.pop(next(iter(bad)))
    with pytest.raises(KeyError, match="missing"):
        bank.load("x", bad)
    n0 = ad.names[0]
    with pytest.raises(ValueError, match=n0):
        bank.load("x", {**D[RUNS[0]], f"{n0}.delta_S": torch.zeros(3)})
    with pytest.raises(ValueError, match="ablate has"):
        with bank.rows(list(RUNS), [True]):
            pass
    bank.drop(RUNS[1])
    assert bank.runs == [RUNS[0], RUNS[2]]
    for run in (RUNS[0], RUNS[2]):
        for k, v in bank.state(run).items():
            assert torch.equal(v, D[run][k]), k


@pytest.fixture(scope="module")
def engines(tiny, cache):
    single = HFEngine(str(tiny), cache)
    multi = MultiRunHFEngine(str(tiny), cache)
    names_r = {n: single.U[n].shape[1] for n in single.layers}
    D = _run_deltas(names_r)
    for v, run in enumerate(RUNS, 1):
        multi.load_run(run, v, D[run])
    return single, multi, D


def _items(single) -> list[tuple[str, GenRequest]]:
    texts = ["PROBLEM:\nReturn the sum of a list of numbers.", "def f(x):\n    return", "Write a function"]
    out = []
    for i, (run, text) in enumerate(zip(RUNS, texts)):
        ids = single.tok(text, add_special_tokens=False).input_ids
        out.append((run, GenRequest((run, i), ids, 3, 20, seed=100 + i, ablate=(i == 2))))
    out.append((RUNS[0], GenRequest((RUNS[0], 9), out[1][1].prompt_ids, 2, 12, seed=7)))  # a run twice
    return out


def test_multi_engine_sampling_equals_separate_engines(engines):
    """K=3 runs (different prompts, lengths, one deploy-view request) in one generate: each request
    draws the same tokens as a separate engine holding its run's δS, with the same log-probs."""
    single, multi, D = engines
    items = _items(single)
    res = multi.generate_many(items)
    assert res[0].meta["batch_rows"] == 11
    for (run, req), got in zip(items, res):
        single.load_deltas(RUNS.index(run) + 1, D[run])
        want = single.generate(req)
        assert got.key == req.key and got.version == want.version == RUNS.index(run) + 1
        assert got.completions == want.completions, run
        assert got.finished == want.finished
        assert _max_diff(got.logprobs, want.logprobs) < ATOL
    # the runs really differ: the same request under another run's δS draws other tokens
    run, req = items[0]
    single.load_deltas(9, D[RUNS[1]])
    assert single.generate(req).completions != res[0].completions
    by_run = multi.generate_runs(items)
    assert [r.key for r in by_run[RUNS[0]]] == [items[0][1].key, items[3][1].key]


def test_multi_engine_sequence_logprobs_and_greedy_equal_separate_engines(engines):
    single, multi, D = engines
    items = _items(single)
    greedy = multi.generate_many(items, greedy=True)
    seqs, views = [], []
    for (run, req), got in zip(items, greedy):
        single.load_deltas(1, D[run])
        ids = torch.tensor([req.prompt_ids])
        with torch.no_grad(), single.view(req.ablate):
            out = single.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=req.max_new, pad_token_id=single.tok.pad_token_id,
                                        temperature=None, top_p=None, top_k=None, min_p=None)
        want, _ = _trim(single, out[0, ids.shape[1]:].tolist())
        assert got.completions == [want] * req.n, run
        seqs.append((run, req.prompt_ids + want))
        views.append(req.ablate)
    lps = multi.sequence_logprobs(seqs, views)
    worst = 0.0
    for (run, ids), ab, lp in zip(seqs, views, lps):
        single.load_deltas(1, D[run])
        worst = max(worst, _max_diff([lp], [single.prompt_logprobs(ids, ab)]))
    assert worst < ATOL
    # and a row scored under the wrong run is far off (the check can fail)
    wrong = multi.sequence_logprobs([(RUNS[1], seqs[0][1])])[0]
    single.load_deltas(1, D[RUNS[0]])
    assert _max_diff([wrong], [single.prompt_logprobs(seqs[0][1])]) > 1e-2
    with pytest.raises(TypeError, match="load_run"):
        multi.load_deltas(1, D[RUNS[0]])
    with pytest.raises(TypeError, match="generate_many"):
        multi.generate(items[0][1])
    assert _max_diff([multi.prompt_logprobs(seqs[0][1], views[0], run=seqs[0][0])], [lps[0]]) < ATOL


def _trim(engine, row):
    from vgrout_ray.rollout.actor import trim_completion

    return trim_completion(row, engine.eos_ids)


def test_multi_rollout_actor_serves_runs_like_the_engine(ray_cluster, tiny, cache, engines):
    """The Ray actor: per-run sync (versions kept per run), one mixed-run call, the same draws
    as the in-process engine; a dropped run is refused. The actor maps its base weights from the
    object store (``base=``) while the in-process engine read the checkpoint: same draws."""
    import ray

    from vgrout_ray.rollout.multi_engine import multi_rollout_actor
    from vgrout_ray.model.base_store import publish_base

    single, multi, D = engines
    actor = multi_rollout_actor(num_cpus=1).remote(str(tiny), cache, {"threads": 1}, base=publish_base(tiny, cache))
    assert ray.get(actor.ready.remote())["shared_base"] is True
    infos = ray.get([actor.sync.remote(run, v, D[run]) for v, run in enumerate(RUNS, 1)])
    assert [i["version"] for i in infos] == [1, 2, 3] and all(i["bytes"] > 0 for i in infos)
    assert ray.get(actor.versions.remote()) == dict(zip(RUNS, (1, 2, 3)))
    items = _items(single)
    got = ray.get(actor.generate_many.remote(items))
    want = multi.generate_many(items)
    assert [g.completions for g in got] == [w.completions for w in want]
    assert [g.version for g in got] == [1, 2, 3, 1]
    ray.get(actor.drop_run.remote(RUNS[1]))
    with pytest.raises(ray.exceptions.RayTaskError, match="not in the bank"):
        ray.get(actor.generate_many.remote(items))
    ray.kill(actor)


def test_a_dropped_runs_queued_request_fails_alone(tiny, cache, engines):
    """The race that failed a CI sweep: a run that has failed drops its δS while a request it sent
    earlier is still queued, and that request lands in one coalesced batch with a healthy run's.
    Only the dropped run's call fails; the healthy run gets the draws it gets alone."""
    import threading
    import time

    from vgrout_ray.rollout.multi_engine import MultiRolloutActorImpl

    single, multi, D = engines
    impl = MultiRolloutActorImpl(str(tiny), cache, {"threads": 1}, window_s=0.5)
    for v, run in enumerate(RUNS[:2], 1):
        impl.sync(run, v, D[run])
    impl.drop_run(RUNS[1])
    items = _items(single)
    healthy = [req for run, req in items if run == RUNS[0]]
    got: dict = {}

    def call(run):
        try:
            got[run] = impl.generate_run(run, healthy)
        except Exception as e:
            got[run] = e

    threads = [threading.Thread(target=call, args=(run,)) for run in RUNS[:2]]
    threads[0].start()
    time.sleep(0.1)  # the second call joins the first one's batch (window 0.5 s)
    threads[1].start()
    for t in threads:
        t.join(60)
    assert not isinstance(got[RUNS[0]], Exception), got[RUNS[0]]
    assert isinstance(got[RUNS[1]], KeyError) and "not in the bank" in str(got[RUNS[1]])
    assert impl._coalesce.batches == [2 * len(healthy)] and impl._coalesce.isolated == 1  # one mixed batch
    want = multi.generate_many([(RUNS[0], r) for r in healthy])
    assert [g.completions for g in got[RUNS[0]]] == [w.completions for w in want]
