"""One HF rollout engine serving K runs of a sweep: rows of different runs share a forward pass.

Why: runs of a sweep differ only in their δS (a few MB); the base model, the SVD factors and
the batched matmuls can be shared. ``MultiRunHFEngine`` is an ``HFEngine`` (same model load,
same adapter hooks, same trimming and log-prob code) whose δS comes per row from a
``DeltaBank``: ``generate_many`` takes requests of several runs, generates them in one
``generate`` call, and returns each request's completions, its run's δS version and the
per-token sampling log-probs, as separate single-run engines would.

Sampling draws are per request, not per batch: each request samples its rows with its own
``torch.Generator`` seeded by ``GenRequest.seed``, through the same warpers (temperature,
top-k, top-p, min-p) as HF's sampler, and the ``multinomial`` call on that request's
[n, V] probabilities that a single-run engine makes after ``torch.manual_seed(seed)``. So a
request draws the same completions whichever runs share its batch (replay and resume stay
deterministic) and the same as a separate engine, up to float rounding of the batched logits.
"""
from __future__ import annotations

import threading
import time
from typing import Hashable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from vgrout_ray.model.multi_delta import DeltaBank
from vgrout_ray.rollout.base import SAMPLING, GenRequest, GenResult, trim_completion
from vgrout_ray.rollout.coalescer import Coalescer
from vgrout_ray.rollout.hf_engine import HFEngine, sampled_logprobs


def sampling_warpers(sampling: dict = SAMPLING) -> list:
    """HF's sampling warpers for ``sampling``, in HF's order (the ones HF adds with do_sample)."""
    out = []
    if sampling.get("temperature") not in (None, 1.0):
        out.append(TemperatureLogitsWarper(sampling["temperature"]))
    if sampling.get("top_k") not in (None, 0):
        out.append(TopKLogitsWarper(top_k=sampling["top_k"]))
    if sampling.get("top_p") is not None and sampling["top_p"] < 1.0:
        out.append(TopPLogitsWarper(top_p=sampling["top_p"]))
    if sampling.get("min_p") is not None:
        out.append(MinPLogitsWarper(min_p=sampling["min_p"]))
    if sampling.get("repetition_penalty", 1.0) != 1.0:
        raise ValueError("per-request sampling does not implement repetition_penalty != 1")
    return out


class PerRequestSampler(LogitsProcessor):
    """Draws each request's next tokens with that request's own generator; returns scores that
    are 0 at the drawn token and -inf elsewhere, so greedy selection in ``generate`` picks it."""

    def __init__(self, groups: list[slice], generators: list[torch.Generator], sampling: dict = SAMPLING):
        self.groups, self.generators = groups, generators
        self.warpers = sampling_warpers(sampling)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for w in self.warpers:
            scores = w(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        picked = torch.full_like(scores, float("-inf"))
        for sl, g in zip(self.groups, self.generators):
            tok = torch.multinomial(probs[sl], num_samples=1, generator=g)
            picked[sl].scatter_(1, tok, 0.0)
        return picked


class MultiRunHFEngine(HFEngine):
    """An HF engine holding K runs' δS; each row of a batch uses its own run's δS (hook mode)."""

    backend = "hf-multi"

    def __init__(self, model_path: str, svd_cache: str, device: str | None = None, threads: int | None = None,
                 dtype=None, base=None):
        super().__init__(model_path, svd_cache, device=device, threads=threads, dtype=dtype, delta_apply="hook",
                         base=base)
        self.bank = DeltaBank(self.adapter)

    # ── runs ──
    def load_run(self, run: Hashable, version: int, deltas: dict[str, torch.Tensor]) -> None:
        """Sync one run's δS / δS_hack (adds the run on first sight)."""
        self.bank.load(run, deltas, version)

    def drop_run(self, run: Hashable) -> None:
        self.bank.drop(run)

    @property
    def runs(self) -> list[Hashable]:
        return list(self.bank.runs)

    # ── generation ──
    def _batch(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and attention mask (generation continues every row from its last column)."""
        width = max(len(p) for p in prompts)
        pad = self.tok.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty")
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def generate_many(self, items: Sequence[tuple[Hashable, GenRequest]], greedy: bool = False) -> list[GenResult]:
        """One ``generate`` over all (run, request) items; a GenResult per item, in order.
        ``greedy`` takes the argmax instead of sampling (for checks)."""
        if not items:
            return []
        t0 = time.perf_counter()
        prompts, runs, ablate, groups, gens = [], [], [], [], []
        for run, req in items:
            self.bank.index(run)  # fail loud on an unknown run before any work
            if req.n < 1 or req.max_new < 1:
                raise ValueError(f"request {req.key!r}: n and max_new must be >= 1, got {req.n}, {req.max_new}")
            groups.append(slice(len(prompts), len(prompts) + req.n))
            gens.append(torch.Generator(self.device).manual_seed(req.seed))
            prompts += [list(req.prompt_ids)] * req.n
            runs += [run] * req.n
            ablate += [req.ablate] * req.n
        ids, mask = self._batch(prompts)
        kw = dict(do_sample=False, temperature=None, top_p=None, top_k=None, min_p=None)
        if not greedy:
            kw["logits_processor"] = LogitsProcessorList([PerRequestSampler(groups, gens)])
        with self.bank.rows(runs, ablate):
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max(r.max_new for _, r in items),
                pad_token_id=self.tok.pad_token_id, use_cache=True, return_dict_in_generate=True,
                output_logits=True, **kw)
        seq = out.sequences[:, ids.shape[1]:]
        lps = sampled_logprobs(out.logits, seq).tolist()
        rows = seq.tolist()
        secs = time.perf_counter() - t0
        results = []
        for (run, req), sl in zip(items, groups):
            comps, fin, lp = [], [], []
            for row, row_lp in zip(rows[sl], lps[sl]):
                c, f = trim_completion(row[:req.max_new], self.eos_ids)
                comps.append(c)
                fin.append(f)
                lp.append(row_lp[:len(c)])
            results.append(GenResult(req.key, self.bank.versions[run], comps, fin, secs,
                                     n_tokens=sum(len(c) for c in comps), logprobs=lp,
                                     meta={"run": run, "batch_rows": len(prompts)}))
        return results

    def generate_runs(self, items: Sequence[tuple[Hashable, GenRequest]]) -> dict[Hashable, list[GenResult]]:
        """``generate_many`` grouped by run (each run's results in request order)."""
        out: dict[Hashable, list[GenResult]] = {}
        for (run, _), res in zip(items, self.generate_many(items)):
            out.setdefault(run, []).append(res)
        return out

    @torch.no_grad()
    def sequence_logprobs(self, items: Sequence[tuple[Hashable, list[int]]],
                          ablate: Sequence[bool] | bool = False) -> list[list[float]]:
        """log p(ids[t] | ids[:t]) for t >= 1 of each (run, ids), all rows in one right-padded
        forward (padding after a row cannot change its causal log-probs)."""
        if not items:
            return []
        width = max(len(ids) for _, ids in items)
        x = torch.full((len(items), width), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, (_, ids) in enumerate(items):
            if len(ids) < 2:
                raise ValueError(f"sequence {i} needs at least 2 tokens, got {len(ids)}")
            x[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        x, mask = x.to(self.device), mask.to(self.device)
        with self.bank.rows([r for r, _ in items], ablate):
            logits = self.model(x, attention_mask=mask, use_cache=False).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), -1).gather(2, x[:, 1:].unsqueeze(2)).squeeze(2)
        return [lp[i, :len(ids) - 1].tolist() for i, (_, ids) in enumerate(items)]

    # the single-run entry points would silently use zero δS here: refuse them
    def load_deltas(self, version: int, deltas: dict[str, torch.Tensor]) -> None:
        raise TypeError("MultiRunHFEngine holds several runs: use load_run(run, version, deltas)")

    def generate(self, req: GenRequest) -> GenResult:
        raise TypeError("MultiRunHFEngine holds several runs: use generate_many([(run, request), ...])")

    def prompt_logprobs(self, ids: list[int], ablate: bool = False, run: Hashable | None = None) -> list[float]:
        """log p(ids[t] | ids[:t]) for t >= 1 under ``run``'s δS (the run is required)."""
        if run is None:
            raise TypeError("MultiRunHFEngine.prompt_logprobs needs run=")
        return self.sequence_logprobs([(run, ids)], ablate)[0]


class MultiRolloutActorImpl:
    """One multi-run engine behind a Ray actor: per-run δS sync, mixed-run generation.
    The sweep's rollout pool holds these in place of one RolloutActor per run.

    Run as a threaded actor (``max_concurrency`` > 1, see ``multi_rollout_actor``): concurrent
    ``generate_run`` calls of different runs are coalesced into one ``generate`` (``Coalescer``);
    a lock keeps ``sync`` from changing a run's δS while a batch is running."""

    def __init__(self, model_path: str, svd_cache: str, engine_kw: dict | None = None, window_s: float = 0.002,
                 base=None):
        """``base``: a ``publish_base`` ref (Ray hands over the bundle, mapped from the node's store)."""
        self.engine = MultiRunHFEngine(model_path, svd_cache, base=base, **(engine_kw or {}))
        self._lock = threading.Lock()
        self._coalesce = Coalescer(self._generate_locked, window_s)

    def ready(self) -> dict:
        import os

        import ray

        return {"backend": self.engine.backend, "runs": self.engine.runs, "pid": os.getpid(),
                "shared_base": self.engine.shared_base,
                "node_id": ray.get_runtime_context().get_node_id()}

    def sync(self, run: Hashable, version: int, deltas: dict[str, torch.Tensor], sent_at: float | None = None) -> dict:
        """Load one run's δS version; bytes received and seconds the load took (as RolloutActor.sync)."""
        from vgrout_ray.model.onpolicy_probe import check_engine, split_probe

        t0 = time.perf_counter()
        deltas, probe = split_probe(deltas)
        with self._lock:
            self.engine.load_run(run, version, deltas)
            if probe is not None:  # this run's view of the shared engine must follow its δS
                check_engine(_RunView(self.engine, run), version, deltas, probe, float(probe["tol"]))
        return {"run": run, "version": version, "bytes": sum(t.numel() * t.element_size() for t in deltas.values()),
                "load_s": time.perf_counter() - t0, "latency_s": (time.time() - sent_at) if sent_at else None}

    def drop_run(self, run: Hashable) -> None:
        with self._lock:
            if run in self.engine.bank.versions:
                self.engine.drop_run(run)

    def versions(self) -> dict:
        return dict(self.engine.bank.versions)

    def batch_sizes(self) -> list[int]:
        """Items (requests) per coalesced generate so far."""
        return list(self._coalesce.batches)

    def _generate_locked(self, items: list[tuple[Hashable, GenRequest]]) -> list[GenResult]:
        with self._lock:
            return self.engine.generate_many(items)

    def generate_many(self, items: list[tuple[Hashable, GenRequest]]) -> list[GenResult]:
        """(run, request) items, generated together with whatever other calls are waiting."""
        return self._coalesce(items)

    def generate_run(self, run: Hashable, reqs: list[GenRequest]) -> list[GenResult]:
        """One run's requests (a RolloutPool call), coalesced with other runs' concurrent calls."""
        return self._coalesce([(run, r) for r in reqs])


class _RunView:
    """One run of a multi-run engine seen as a single-run engine (what the on-policy probe drives)."""

    def __init__(self, engine, run):
        self.engine, self.run = engine, run

    def load_deltas(self, version: int, deltas: dict) -> None:
        self.engine.load_run(self.run, version, deltas)

    def prompt_logprobs(self, ids: list[int], ablate: bool = False) -> list[float]:
        return self.engine.prompt_logprobs(ids, ablate, run=self.run)


def multi_rollout_actor(**options):
    """The Ray actor class of MultiRolloutActorImpl with ``options`` (num_cpus, resources, ...);
    threaded (max_concurrency 64 unless given) so that concurrent runs' calls can coalesce."""
    import ray

    options.setdefault("max_concurrency", 64)
    return ray.remote(max_restarts=0)(MultiRolloutActorImpl).options(**options)
