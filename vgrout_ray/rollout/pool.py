"""The driver's view of its rollout actors: one ``RolloutPool`` owns the handles, their
incarnations, replacement, δS sync, submit and poll.

A generation call that fails because its actor died is answered by replacing that actor once
(several calls failing on the same death replace it once: each call remembers the incarnation
it was sent to), syncing the successor to the current δS version, and replaying the call on it.
Requests carry their own sampling seeds, so a replay draws the same completions. After
``max_replacements`` deaths in one pool the run gives up (a crash loop is a bug, not bad luck).

The pool does not know about steps or learners: the caller syncs it (``sync``) with the payload
of a version, and every replacement is synced to the last payload before it takes work. Several
runs can share one pool as long as each syncs it before its step (``holds`` says whether the
last sync was this caller's version).
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray
from loguru import logger

from vgrout_ray.cluster.placement import actor_options
from vgrout_ray.rollout.base import GenRequest, GenResult


@dataclass
class GenDone:
    """One finished generation call: the caller's key, its results, and when it ran."""

    key: Any
    results: list[GenResult]
    started: float  # perf_counter when its (last) call was sent
    finished: float


@dataclass
class _Call:
    actor: int
    incarnation: int
    key: Any
    reqs: list[GenRequest]
    started: float


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class RolloutPool:
    """N rollout actors behind submit / poll / sync, with replace-and-replay on actor death."""

    def __init__(self, start_actor: Callable[[int], Any], num_actors: int, *, max_replacements: int = 8):
        if num_actors < 1:
            raise ValueError(f"rollout.num_actors must be >= 1, got {num_actors}")
        self._start_actor = start_actor
        self.handles = [start_actor(i) for i in range(num_actors)]
        self.incarnation = [0] * num_actors  # bumped per replacement of actor i
        self.replacements = 0
        self.max_replacements = max_replacements
        self._inflight: dict[Any, _Call] = {}
        self._rr = itertools.count()
        self._wake: threading.Event | None = None
        self._payload: tuple[int, Any, bool] | None = None  # (version, object ref, full) of the last sync
        self._owner: Any = None

    @classmethod
    def from_config(cls, cfg, model_path: str, factors=None) -> "RolloutPool":
        """Actors as ``cfg.rollout`` / ``cfg.cluster`` ask (backend, CPUs, GPUs, custom resource).
        ``factors``: the learner's (U, Vh) as ``LearnerClient.factors_later()`` gives them; every
        actor, replacements included, hooks with them instead of computing an SVD. None: each computes."""
        from vgrout_ray.rollout.actor import RolloutActor

        rc = cfg.rollout
        kw = {"threads": cfg.cluster.threads_for(rc.cpus_per_actor), "delta_apply": rc.delta_apply,
              "dtype": rc.dtype or None}
        if rc.backend == "vllm":
            kw.update(gpu_memory_utilization=rc.vllm_gpu_memory_utilization, max_model_len=rc.vllm_max_model_len)
        opts = actor_options(cfg, "rollout")
        if rc.backend == "vllm":  # threaded: a step's per-prompt calls coalesce into one llm.generate
            opts["max_concurrency"] = 64

        def start(i: int):
            return RolloutActor.options(**opts).remote(rc.backend, model_path, str(cfg.svd_cache), kw, factors=factors)
        return cls(start, rc.num_actors)

    @property
    def size(self) -> int:
        return len(self.handles)

    @property
    def version(self) -> int | None:
        return None if self._payload is None else self._payload[0]

    def holds(self, owner: Any, version: int) -> bool:
        """Whether the last sync was ``owner``'s, at ``version``."""
        return self._owner is owner and self.version == version

    # ── sync ─────────────────────────────────────────────────────────────────
    def sync(self, version: int, payload: dict, *, full: bool = False, owner: Any = None) -> dict:
        """Ship a version's payload (δS/δS_hack, or merged views when ``full``) to every actor and
        wait; an actor that dies meanwhile is replaced (and synced). Returns load seconds and bytes."""
        ref = ray.put(payload)
        self._payload, self._owner = (version, ref, full), owner
        calls = [(i, self.incarnation[i], self._sync_call(self.handles[i])) for i in range(self.size)]
        loads = []
        for i, inc, call in calls:
            try:
                loads.append(ray.get(call)["load_s"])
            except ray.exceptions.RayActorError as e:
                self._replace(i, _first_line(e), inc)
                loads.append(0.0)
        tensors = [t for w in payload.values() for t in w.values()] if full else list(payload.values())
        return {"version": version, "bytes": sum(t.numel() * t.element_size() for t in tensors),
                "actors": self.size, "load_s": max(loads)}

    def _sync_call(self, handle):
        version, ref, full = self._payload
        return (handle.sync_full if full else handle.sync).remote(version, ref, time.time())

    # ── replacement ──────────────────────────────────────────────────────────
    def _replace(self, i: int, why: str, incarnation: int) -> None:
        """Replace actor ``i`` once per death (a call sent to an older incarnation only replays)."""
        if incarnation != self.incarnation[i]:
            return
        self.replacements += 1
        if self.replacements > self.max_replacements:
            raise RuntimeError(f"rollout actors died {self.replacements} times this run; giving up ({why})")
        logger.warning(f"rollout actor {i} died ({why}); starting a replacement and replaying its requests")
        try:
            ray.kill(self.handles[i])
        except Exception:
            pass
        self.handles[i] = self._start_actor(i)
        self.incarnation[i] += 1
        if self._payload is not None:
            ray.get(self._sync_call(self.handles[i]))

    # ── generation ───────────────────────────────────────────────────────────
    def submit(self, key: Any, reqs: list[GenRequest], actor: int | None = None) -> None:
        """Start one generation call (``reqs`` in order) on ``actor`` (round robin when None)."""
        i = next(self._rr) % self.size if actor is None else actor % self.size
        ref = self._gen_call(self.handles[i], reqs)
        self._inflight[ref] = _Call(i, self.incarnation[i], key, reqs, time.perf_counter())
        if self._wake is not None:  # set when the call finishes (or its actor dies): poll has news
            wake = self._wake
            ref.future().add_done_callback(lambda _f: wake.set())

    def notify(self, event: threading.Event) -> None:
        """Set ``event`` whenever a generation call finishes, so a scheduler can sleep on it instead of
        polling (``run.stream.StepScheduler``)."""
        self._wake = event

    def _gen_call(self, handle, reqs: list[GenRequest]):
        return handle.generate_many.remote(reqs)

    @property
    def pending(self) -> int:
        return len(self._inflight)

    def poll(self, timeout: float = 0.0) -> list[GenDone]:
        """Calls finished within ``timeout`` s (at most one per poll, as they finish); a call whose
        actor died is replayed on the replacement and comes back from a later poll."""
        if not self._inflight:
            return []
        ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            call = self._inflight.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                self._replace(call.actor, _first_line(e), call.incarnation)
                self.submit(call.key, call.reqs, actor=call.actor)
                continue
            out.append(GenDone(call.key, results, call.started, time.perf_counter()))
        return out

    def generate(self, reqs: list[GenRequest]) -> list[GenResult]:
        """One call per request, spread over the actors; blocks; results in request order."""
        base = len(self._inflight)
        if base:
            raise RuntimeError("RolloutPool.generate: calls of a streamed step are still in flight")
        for n, r in enumerate(reqs):
            self.submit(("generate", n), [r], actor=n)
        got: dict[int, GenResult] = {}
        while self._inflight:
            for d in self.poll(timeout=1.0):
                got[d.key[1]] = d.results[0]
        return [got[n] for n in range(len(reqs))]

    def close(self) -> None:
        kill_actors(self.handles)


def kill_actors(handles) -> None:
    """Kill every actor in ``handles``; one already gone is no error (closing must not raise)."""
    for h in handles:
        try:
            ray.kill(h)
        except Exception:
            pass
