"""Ray grader pool: N ``GraderActor``s (one warm sandbox each) that grade untrusted completions.

Why a pool and not a task per completion: a sandbox is warm state (a container or a namespaced
runner, plus the per-problem expected-value cache), so each actor owns one for its lifetime and
the pool streams small batches to the least-busy actor. Results come back as they complete
(no batch barrier), each with the caller's key. An actor that dies (killed, node lost, hung) is
replaced and its in-flight requests retried; a sandbox that dies under a completion is replaced
inside its actor and that batch retried one completion at a time, so a completion that kills
its sandbox cannot sink its batch-mates. After ``retries`` retries a completion comes back with
``result.error`` set: counted, logged, never silently dropped. The pool is the only place on Ray
that retries: actors make one attempt and say how it failed; the rules are ``RetryPolicy``
(``sandbox/retry.py``), which the Ray-free paths apply too.

Usage::

    with GraderPool(4, sandbox="docker") as pool:
        pool.submit(requests, keys=ids)
        for g in pool.as_completed():
            use(g.key, g.result)
        results = pool.grade(more_requests)   # blocking, input order
"""
from __future__ import annotations

import itertools
import math
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

import ray
from loguru import logger

from vgrout_ray.cluster.placement import actor_options
from vgrout_ray.env.grading import GradeRequest, RewardResult
from vgrout_ray.env.modes import CHECK_MEMORY_MB, CHECK_TIMEOUT_S
from vgrout_ray.sandbox.client import SandboxError
from vgrout_ray.grading.local import LocalGrader
from vgrout_ray.grading.retry import Failure, RetryPolicy, take_batch
from vgrout_ray.util import warn_once

# Upper bound on sandbox programs one completion can cost (the run, C, D, E, the main program), plus
# one for the host computing a new problem's expected values.
_CHECKS_PER_COMPLETION = 6


class SandboxDied(RuntimeError):
    """The actor's sandbox failed during a batch (runner died, hung or broke protocol).

    The actor has already discarded that sandbox; its next call starts a fresh one. The batch's
    verdicts are unknown, so the pool retries its completions one by one.
    """


class GradingError(RuntimeError):
    """Grading raised on a request (not the sandbox): deterministic, the request's own."""


class SandboxUnavailable(RuntimeError):
    """The actor cannot start a sandbox at all (no engine, no image): the actor is replaced."""


# ── the actor ────────────────────────────────────────────────────────────────


class GraderActorImpl:
    """Owns one ``LocalGrader`` (one warm sandbox) for its lifetime; grades batches on request.

    (A plain class, wrapped by ``ray.remote`` below, so workers import it by reference instead
    of unpickling a copy that drags along the driver's logger sinks.)
    """

    def __init__(self, sandbox: str = "process", timeout: float = CHECK_TIMEOUT_S,
                 memory_mb: int = CHECK_MEMORY_MB, sandbox_opts: dict | None = None):
        self.grader = LocalGrader(sandbox, timeout=timeout, memory_mb=memory_mb, **(sandbox_opts or {}))
        self.batches = 0
        self.sandbox_restarts = 0
        self._start_sandbox()  # now: a broken engine fails the actor at creation, the first batch is warm

    def _start_sandbox(self):
        try:
            return self.grader.sandbox
        except SandboxError as e:
            raise SandboxUnavailable(str(e)) from None

    def grade(self, batch_id: int, requests: list[GradeRequest]) -> list[dict]:
        """Verdicts (``RewardResult.to_dict()``) in request order, one attempt: raises SandboxDied
        if the sandbox failed, GradingError if grading raised (the pool owns the retry policy)."""
        self._start_sandbox()
        self.batches += 1
        try:
            results = self.grader.grade(list(requests))
        except SandboxError as e:  # the grader has dropped that sandbox already
            self.sandbox_restarts += 1
            raise SandboxDied(f"batch {batch_id} ({len(requests)} completions): {e}") from None
        except Exception as e:  # a malformed request (unknown mode, ...) or a bug
            logger.warning(f"batch {batch_id}: grading error {type(e).__name__}: {e}")
            raise GradingError(f"{type(e).__name__}: {e}") from None
        return [r.to_dict() for r in results]

    def health(self) -> bool:
        """Whether the sandbox answers a ping; one discarded after a failure is started first."""
        try:
            self._start_sandbox()
        except SandboxUnavailable:
            return False
        return self.grader.healthy()

    def describe(self) -> dict:
        """Where this actor runs and what sandbox it holds (node id/ip, kind, container name)."""
        ctx = ray.get_runtime_context()
        sb = self.grader.started
        info = sb.describe() if sb is not None else {}
        runner = getattr(sb, "runner", None)
        return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "actor_id": ctx.get_actor_id(), "pid": os.getpid(), "sandbox": info.get("kind", self.grader.kind),
                "container": info.get("container"), "runner_pid": runner.proc.pid if runner is not None else None,
                "job_uid": info.get("job_uid"), "batches": self.batches, "sandbox_restarts": self.sandbox_restarts}

    def close(self) -> bool:
        """Close the sandbox (stop the runner, remove the container) before the actor is killed."""
        self.grader.close()
        return True


# The Ray actor: 1 CPU; the pool adds the custom resource ``grader`` when the cluster has it.
GraderActor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(GraderActorImpl)


def probe_docker(image: str = "") -> tuple[bool, str]:
    """Whether Docker sandboxes can start here (run as a task where graders are placed)."""
    from vgrout_ray.sandbox.docker_backend import image_ready

    return image_ready(image) if image else image_ready()


_probe_docker = ray.remote(num_cpus=0)(probe_docker)


# ── the pool ─────────────────────────────────────────────────────────────────


@dataclass
class Graded:
    """One finished completion: the caller's key, its verdict, how many attempts it took, where."""

    key: Any
    result: RewardResult
    attempts: int = 1
    actor: str | None = None


@dataclass
class PoolStats:
    """Counters of a pool's life (``completed`` excludes results that carry an error)."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    replaced_actors: int = 0
    sandbox_failures: int = 0
    calls: int = 0
    pending: int = 0
    in_flight: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Item:
    key: Any
    request: GradeRequest
    sink: "_Sink"
    attempts: int = 0  # failed attempts so far (charged by the retry policy)
    solo: bool = False  # retry alone (the policy said so, e.g. its last batch lost its sandbox)
    errors: list[str] = field(default_factory=list)


class FairQueue:
    """The pool's pending completions, one FIFO per submitter (sink), served round robin.

    Why: several runs of a sweep share one pool; with one FIFO a run that submits a whole step
    at once would make every other run's completions wait behind it. Round robin over the
    submitters keeps each run's share equal while they all have work, and is a plain FIFO when
    only one submits. Offers the deque methods the pool uses (append, appendleft, popleft, [0],
    len); ``appendleft`` (a retry) puts the item at the head of its own submitter's queue."""

    def __init__(self) -> None:
        self._queues: dict[Any, deque] = {}  # insertion order = round-robin order
        self._n = 0

    def append(self, item) -> None:
        self._queues.setdefault(item.sink, deque()).append(item)
        self._n += 1

    def appendleft(self, item) -> None:
        self._queues.setdefault(item.sink, deque()).appendleft(item)
        self._n += 1

    def popleft(self):
        if not self._n:
            raise IndexError("pop from an empty FairQueue")
        sink = next(iter(self._queues))
        q = self._queues.pop(sink)
        item = q.popleft()
        if q:
            self._queues[sink] = q  # to the back of the rotation
        self._n -= 1
        return item

    def __getitem__(self, i: int):
        if i != 0 or not self._n:
            raise IndexError("FairQueue only peeks at its head ([0]) and must not be empty")
        return self._queues[next(iter(self._queues))][0]

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0


@dataclass
class _Slot:
    index: int
    handle: Any = None
    incarnation: int = 0
    ready_ref: Any = None
    ready: bool = False
    dead: bool = False
    created: float = 0.0
    info: dict = field(default_factory=dict)
    inflight: set = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"grader-{self.index}.{self.incarnation}"


@dataclass
class _Call:
    slot: _Slot
    incarnation: int
    batch_id: int
    items: list[_Item]
    deadline: float


class _Sink:
    """Where finished items of one submitter go (the pool's stream, or one blocking ``grade``)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Graded] = queue.Queue()
        self.outstanding = 0
        self.wake: threading.Event | None = None  # set on every delivery (``notify``)

    def put(self, item: Graded) -> None:
        self.queue.put(item)
        if self.wake is not None:
            self.wake.set()


class GraderPool:
    """N grader actors; streaming submit / as_completed, least-outstanding balancing, replacement.

    ``max_inflight_per_actor`` defaults to 1: a call queued behind a completion that runs into
    its timeout would wait seconds, while the idle gap it saves is one Ray round trip (~ms).
    ``batch_size`` caps completions per call; fewer are sent when few are pending, so work
    spreads over all actors.
    """

    def __init__(self, num_actors: int | None = None, *, sandbox: str = "auto",
                 timeout: float = CHECK_TIMEOUT_S, memory_mb: int = CHECK_MEMORY_MB, retries: int = 2,
                 batch_size: int = 4, max_inflight_per_actor: int = 1, max_replacements: int | None = None,
                 start_timeout: float = 300.0, **sandbox_opts):
        if sandbox not in ("auto", "process", "docker"):
            raise ValueError(f"grader.sandbox must be auto, process or docker, got {sandbox!r}")
        if not ray.is_initialized():
            raise RuntimeError("GraderPool needs a connected Ray (ray.init) first")
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.retries = retries
        self.policy = RetryPolicy(retries)
        self.batch_size = max(1, batch_size)
        self.max_inflight = max(1, max_inflight_per_actor)
        self.start_timeout = start_timeout
        self.sandbox_opts = sandbox_opts
        res = ray.cluster_resources()
        self.use_grader_resource = res.get("grader", 0) > 0
        if num_actors is None:
            num_actors = int(res.get("grader", 0)) or max(1, int(res.get("CPU", 1)))
        self.num_actors = max(1, int(num_actors))
        self.max_replacements = max_replacements if max_replacements is not None else 4 * self.num_actors + 8
        self.kind = self._resolve_sandbox(sandbox)

        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._pending = FairQueue()  # round robin over submitters (runs sharing the pool)
        self._calls: dict[Any, _Call] = {}
        self._stats = PoolStats()
        self._keys = itertools.count()
        self._batch_ids = itertools.count(1)
        self._stream = _Sink()
        self._closed = False
        self._broken: str | None = None
        self._no_actor_since: float | None = None
        self._slots = [_Slot(i) for i in range(self.num_actors)]
        for s in self._slots:
            self._start_actor(s)
        logger.info(f"grader pool: {self.num_actors} × GraderActor (sandbox={self.kind}, "
                    f"resources={self._actor_options()}, batch<={self.batch_size}, "
                    f"in-flight<={self.max_inflight}/actor, retries={self.retries})")
        self._thread = threading.Thread(target=self._loop, name="grader-pool", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, cfg) -> "GraderPool":
        """A pool from ``config.GraderConfig``."""
        opts = {k: getattr(cfg, k) for k in ("docker_cpus", "docker_memory_mb", "docker_pids")}
        if cfg.docker_image:
            opts["docker_image"] = cfg.docker_image
        return cls(cfg.num_actors, sandbox=cfg.sandbox, timeout=cfg.timeout_s, memory_mb=cfg.memory_mb,
                   retries=cfg.retries, **opts)

    # ── set-up ───────────────────────────────────────────────────────────────
    def _actor_options(self) -> dict:
        return actor_options(None, "grader", grader_resource=self.use_grader_resource)

    def _resolve_sandbox(self, kind: str) -> str:
        """auto → docker if graders can use it, else process (said once); docker without an engine
        → SandboxError now, before any actor starts."""
        if kind == "process":
            return kind
        probe_opts: dict = {"resources": {"grader": 0.001}} if self.use_grader_resource else {}
        try:
            ok, why = ray.get(_probe_docker.options(**probe_opts).remote(self.sandbox_opts.get("docker_image", "")),
                              timeout=120)
        except ray.exceptions.GetTimeoutError:
            ok, why = False, "could not check: no grader node had room for the probe task in 120 s"
        if ok:
            return "docker"
        if kind == "docker":
            raise SandboxError(f"grader.sandbox=docker but Docker cannot be used on the grader nodes: {why}")
        warn_once("pool-auto-process", f"grader.sandbox=auto: Docker not usable ({why}); "
                  "grading in the process sandbox (weaker isolation)")
        return "process"

    def _start_actor(self, slot: _Slot) -> None:
        slot.incarnation += 1
        slot.handle = GraderActor.options(**self._actor_options()).remote(
            self.kind, self.timeout, self.memory_mb, self.sandbox_opts)
        slot.ready_ref = slot.handle.describe.remote()
        slot.ready = False
        slot.info = {}
        slot.inflight = set()
        slot.created = time.monotonic()

    # ── public API ───────────────────────────────────────────────────────────
    def submit(self, requests: Iterable[GradeRequest], keys: Iterable[Any] | None = None) -> list[Any]:
        """Queue completions for grading; returns their keys (auto-numbered when not given).

        Results arrive on ``as_completed()`` / ``poll()`` in completion order, keyed."""
        return self._submit(list(requests), keys, self._stream)

    def _submit(self, requests: list[GradeRequest], keys, sink: _Sink) -> list[Any]:
        keys = list(keys) if keys is not None else [next(self._keys) for _ in requests]
        if len(keys) != len(requests):
            raise ValueError(f"{len(requests)} requests but {len(keys)} keys")
        with self._lock:
            if self._closed:
                raise RuntimeError("grader pool is closed")
            for k, r in zip(keys, requests):
                self._pending.append(_Item(k, r, sink))
            sink.outstanding += len(requests)
            self._stats.submitted += len(requests)
            if self._all_dead():
                self._fail_pending(self._broken or "no grader actors left")
            self._dispatch()
        self._wake.set()
        return keys

    def as_completed(self, timeout: float | None = None) -> Iterator[Graded]:
        """Yield results of ``submit``ted work as they finish, until none is outstanding.

        ``timeout``: most seconds to wait for the next result (TimeoutError after)."""
        while True:
            with self._lock:
                if self._stream.outstanding == 0 and self._stream.queue.empty():
                    return
            yield self._next(self._stream, timeout)

    def poll(self, timeout: float = 0.0) -> list[Graded]:
        """Results finished so far (waits up to ``timeout`` s for the first one)."""
        return self._poll(self._stream, timeout)

    def notify(self, event: threading.Event) -> None:
        """Set ``event`` whenever a result of the pool's own stream arrives (see ``RolloutPool.notify``)."""
        self._stream.wake = event

    def stream(self) -> "GradeStream":
        """A private submit / poll channel on this pool: results of its submissions come back
        through it only, so several runs (or a run and its evals) can share one pool."""
        return GradeStream(self)

    def _poll(self, sink: _Sink, timeout: float) -> list[Graded]:
        out: list[Graded] = []
        try:
            out.append(sink.queue.get(timeout=timeout) if timeout > 0 else sink.queue.get_nowait())
        except queue.Empty:
            return out
        with self._lock:
            sink.outstanding -= 1
        while True:
            try:
                out.append(sink.queue.get_nowait())
            except queue.Empty:
                return out
            with self._lock:
                sink.outstanding -= 1

    def _next(self, sink: _Sink, timeout: float | None) -> Graded:
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.5 if give_up is None else max(0.0, min(0.5, give_up - time.monotonic()))
            try:
                g = sink.queue.get(timeout=wait)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("grader pool's dispatcher thread is not running") from None
                if give_up is not None and time.monotonic() >= give_up:
                    raise TimeoutError(f"no grading result within {timeout} s") from None
                continue
            with self._lock:
                sink.outstanding -= 1
            return g

    def grade(self, requests: Iterable[GradeRequest], *, progress: bool = False,
              desc: str = "grading") -> list[RewardResult]:
        """Grade and wait: verdicts in input order (errors in ``result.error``, never dropped)."""
        requests = list(requests)
        sink = _Sink()
        self._submit(requests, range(len(requests)), sink)
        out: list[RewardResult | None] = [None] * len(requests)
        from tqdm import tqdm

        with tqdm(total=len(requests), desc=desc, unit="completion", file=sys.stderr,
                  disable=not progress) as bar:
            for _ in range(len(requests)):
                g = self._next(sink, None)
                out[g.key] = g.result
                bar.update(1)
        return [r if r is not None else RewardResult.failed("not graded") for r in out]

    def stats(self) -> dict:
        """Counters: submitted, completed, failed, retried, replaced_actors, sandbox_failures, ..."""
        with self._lock:
            self._stats.pending = len(self._pending)
            self._stats.in_flight = sum(len(c.items) for c in self._calls.values())
            return self._stats.as_dict()

    def actor_states(self) -> list[dict]:
        """Per slot: name, handle, ready, completions in flight, node id (from describe)."""
        with self._lock:
            return [{"name": s.name, "handle": s.handle, "ready": s.ready, "dead": s.dead,
                     "in_flight": sum(len(self._calls[r].items) for r in s.inflight if r in self._calls),
                     "node_id": s.info.get("node_id"), "info": dict(s.info)} for s in self._slots]

    @property
    def actors(self) -> list:
        """Current actor handles (one per slot; a replaced actor's slot holds its successor)."""
        with self._lock:
            return [s.handle for s in self._slots if not s.dead]

    def wait_ready(self, timeout: float = 300.0) -> "GraderPool":
        """Block until every actor has its sandbox up (work submitted earlier waits anyway)."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                if all(s.ready or s.dead for s in self._slots):
                    return self
            if time.monotonic() > end:
                raise TimeoutError(f"grader actors not ready after {timeout} s: "
                                   f"{[s.name for s in self._slots if not s.ready]}")
            time.sleep(0.02)

    def describe(self, timeout: float = 60.0) -> list[dict]:
        """``describe()`` of every live actor (waits for actors still starting)."""
        return ray.get([h.describe.remote() for h in self.actors], timeout=timeout)

    def health(self, timeout: float = 30.0) -> list[bool]:
        """Whether each actor's sandbox answers a ping."""
        out = []
        for h in self.actors:
            try:
                out.append(bool(ray.get(h.health.remote(), timeout=timeout)))
            except Exception:
                out.append(False)
        return out

    def close(self, timeout: float = 30.0) -> None:
        """Close every sandbox, kill every actor; anything not graded comes back with an error."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._calls.values())
            self._calls.clear()
            for c in calls:
                for it in c.items:
                    self._deliver(it, RewardResult.failed("grader pool closed before this completion was graded"),
                                  attempts=it.attempts)
            self._fail_pending("grader pool closed before this completion was graded")
            handles = [s.handle for s in self._slots if s.handle is not None and not s.dead]
        self._wake.set()
        self._thread.join(timeout=5)
        refs = [h.close.remote() for h in handles]
        try:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        except Exception:
            pass
        for h in handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:
                pass
        s = self.stats()
        logger.info(f"grader pool closed: {s['completed']} graded, {s['failed']} failed, {s['retried']} retries, "
                    f"{s['replaced_actors']} actors replaced, {s['sandbox_failures']} sandbox failures")

    def __enter__(self) -> "GraderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ── dispatcher (background thread) ───────────────────────────────────────
    def _loop(self) -> None:
        while True:
            try:
                with self._lock:
                    if self._closed:
                        return
                    self._dispatch()
                    refs = list(self._calls) + [s.ready_ref for s in self._slots
                                                if not s.ready and not s.dead and s.ready_ref is not None]
                if not refs:
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                done, _ = ray.wait(refs, num_returns=1, timeout=0.2)
                with self._lock:
                    if self._closed:
                        return
                    for ref in done:
                        self._on_ready(ref)
                    self._check_deadlines()
            except Exception as e:  # keep the pool alive; a bug here must be loud, not a hang
                logger.exception(f"grader pool dispatcher: {type(e).__name__}: {e}")
                time.sleep(0.2)

    def _dispatch(self) -> None:
        """Send pending items to ready actors, least outstanding first, small batches."""
        if not self._pending:
            return
        while self._pending:
            free = [s for s in self._slots if s.ready and not s.dead and len(s.inflight) < self.max_inflight]
            if not free:
                break
            slots_free = sum(self.max_inflight - len(s.inflight) for s in free)
            n = min(self.batch_size, max(1, math.ceil(len(self._pending) / slots_free)))
            slot = min(free, key=lambda s: (len(s.inflight), sum(len(self._calls[r].items) for r in s.inflight
                                                                  if r in self._calls), s.index))
            items = take_batch(self._pending, n)
            bid = next(self._batch_ids)
            ref = slot.handle.grade.remote(bid, [it.request for it in items])
            budget = len(items) * _CHECKS_PER_COMPLETION * (self.timeout + 2.0) + 30.0
            self._calls[ref] = _Call(slot, slot.incarnation, bid, items,
                                     time.monotonic() + budget * (len(slot.inflight) + 1) + 30.0)
            slot.inflight.add(ref)
            self._stats.calls += 1

    def _on_ready(self, ref) -> None:
        for slot in self._slots:
            if slot.ready_ref is not None and slot.ready_ref == ref and not slot.ready:
                try:
                    slot.info = ray.get(ref)
                    slot.ready = True
                    self._no_actor_since = None
                    logger.debug(f"{slot.name} ready on node {slot.info.get('node_id', '?')[:12]} "
                                 f"({slot.info.get('sandbox')}{', ' + slot.info['container'] if slot.info.get('container') else ''})")
                except Exception as e:
                    self._replace(slot, slot.incarnation, f"actor failed to start: {_why(e)}")
                return
        call = self._calls.pop(ref, None)
        if call is None:
            return
        call.slot.inflight.discard(ref)
        try:
            out = ray.get(ref)
            if not isinstance(out, list) or len(out) != len(call.items):
                raise RuntimeError(f"actor answered {len(out) if isinstance(out, list) else type(out).__name__} "
                                   f"results for {len(call.items)} completions")
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, SandboxDied) or isinstance(e, SandboxDied):
                self._stats.sandbox_failures += 1
                logger.warning(f"{call.slot.name}: sandbox died in batch {call.batch_id}; "
                               f"retrying its {len(call.items)} completion(s) one by one")
                self._retry(call.items, Failure.SANDBOX_DIED, _why(cause or e))
            elif isinstance(cause, GradingError):  # the request's own error: the actor is fine
                self._retry(call.items, Failure.GRADING_ERROR, str(cause))
            else:  # the actor cannot grade (no sandbox could start, or a bug): replace it
                self._replace(call.slot, call.incarnation, f"batch {call.batch_id} failed: {_why(cause or e)}")
                self._retry(call.items, Failure.ACTOR_FAILED, _why(cause or e))
            return
        except Exception as e:  # actor died / unavailable, node died, object lost
            self._replace(call.slot, call.incarnation, f"batch {call.batch_id}: {_why(e)}")
            self._retry(call.items, Failure.ACTOR_LOST, _why(e))
            return
        for it, d in zip(call.items, out):
            self._deliver(it, RewardResult(**d), actor=call.slot.name)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for ref, call in list(self._calls.items()):
            if now > call.deadline and ref in self._calls:
                self._calls.pop(ref)
                call.slot.inflight.discard(ref)
                self._replace(call.slot, call.incarnation, f"batch {call.batch_id} ran past its deadline")
                self._retry(call.items, Failure.ACTOR_HUNG, "batch past its deadline")
        if self._pending and self._all_dead():
            self._fail_pending(self._broken or "no grader actors left")
        elif self._pending and not any(s.ready for s in self._slots if not s.dead):
            if self._no_actor_since is None:
                self._no_actor_since = now
            elif now - self._no_actor_since > self.start_timeout:
                self._fail_pending(f"no grader actor became ready in {self.start_timeout:.0f} s")
                self._no_actor_since = now

    def _all_dead(self) -> bool:
        return all(s.dead for s in self._slots)

    def _replace(self, slot: _Slot, incarnation: int, why: str) -> None:
        """Kill the slot's actor (if it is still the one that failed) and start a successor."""
        if slot.dead or slot.incarnation != incarnation:
            return  # already replaced (several in-flight calls report the same death)
        logger.warning(f"{slot.name} lost: {why}; replacing it")
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:
            pass
        # The successor's calls are new; calls still out to the dead actor fail on their own.
        if self._stats.replaced_actors >= self.max_replacements:
            slot.dead = True
            self._broken = f"gave up after {self._stats.replaced_actors} actor replacements (last: {why})"
            logger.error(f"grader pool: {self._broken}; {slot.name} is not replaced")
            if self._all_dead():
                self._fail_pending(self._broken)
            return
        self._stats.replaced_actors += 1
        for ref in list(slot.inflight):
            call = self._calls.pop(ref, None)
            if call is not None:
                self._retry(call.items, Failure.ACTOR_LOST, why)
        self._start_actor(slot)

    def _retry(self, items: list[_Item], kind: Failure, why: str) -> None:
        """Apply the retry policy to the completions of a failed call (retries go to the front)."""
        for it in reversed(items):
            d = self.policy.decide(it.attempts, kind, len(items), why)
            it.attempts += d.charged
            it.errors.append(f"{kind.value}: {why}")
            if not d.retry:
                logger.error(f"completion {it.key!r}: {d.message}")
                self._deliver(it, RewardResult.failed(d.message), attempts=it.attempts + (not d.charged))
                continue
            it.solo = it.solo or d.solo
            self._stats.retried += 1
            self._pending.appendleft(it)
        logger.debug(f"retrying {len(items)} completion(s): {kind.value}: {why}")

    def _fail_pending(self, why: str) -> None:
        while self._pending:
            it = self._pending.popleft()
            logger.error(f"completion {it.key!r}: {why}")
            self._deliver(it, RewardResult.failed(why), attempts=it.attempts)

    def _deliver(self, it: _Item, result: RewardResult, actor: str | None = None,
                 attempts: int | None = None) -> None:
        if result.error is None:
            self._stats.completed += 1
        else:
            self._stats.failed += 1
        it.sink.put(Graded(it.key, result, it.attempts + 1 if attempts is None else attempts, actor))


class GradeStream:
    """``submit`` / ``poll`` like the pool's own stream, on a sink of its own (``GraderPool.stream``)."""

    def __init__(self, pool: GraderPool):
        self.pool = pool
        self._sink = _Sink()

    def submit(self, requests: Iterable[GradeRequest], keys: Iterable[Any] | None = None) -> list[Any]:
        return self.pool._submit(list(requests), keys, self._sink)

    def poll(self, timeout: float = 0.0) -> list[Graded]:
        return self.pool._poll(self._sink, timeout)

    def notify(self, event: threading.Event) -> None:
        """Set ``event`` whenever a result of this stream arrives."""
        self._sink.wake = event

    @property
    def outstanding(self) -> int:
        return self._sink.outstanding


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"[:300]


# ── CLI entry ────────────────────────────────────────────────────────────────


def grade_with_pool(requests: list[GradeRequest], sandbox: str = "auto", workers: int = 1,
                    timeout: float = CHECK_TIMEOUT_S, memory_mb: int = CHECK_MEMORY_MB,
                    progress: bool = True, **sandbox_opts) -> list[RewardResult]:
    """Grade on a GraderPool of ``workers`` actors, in input order (for ``python -m vgrout_ray grade``).

    Connects to RAY_ADDRESS when set (or to an already initialised Ray), else starts a local Ray
    and shuts down what it started."""
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            if sandbox == "docker":  # fail before starting anything
                from vgrout_ray.sandbox.docker_backend import image_ready

                ok, why = image_ready(sandbox_opts.get("docker_image") or None) if sandbox_opts.get(
                    "docker_image") else image_ready()
                if not ok:
                    raise SandboxError(f"--sandbox docker but Docker cannot be used: {why}")
            from vgrout_ray.cluster.ray_cluster import start_local_ray

            start_local_ray(max(workers, os.cpu_count() or 1), log_to_driver=False, configure_logging=False)
        started = True
    try:
        with GraderPool(workers, sandbox=sandbox, timeout=timeout, memory_mb=memory_mb, **sandbox_opts) as pool:
            results = pool.grade(requests, progress=progress)
            s = pool.stats()
        logger.info(f"graded {len(results)} on {workers} actor(s): {s['failed']} failed, {s['retried']} retries, "
                    f"{s['replaced_actors']} actors replaced")
        return results
    finally:
        if started:
            ray.shutdown()


__all__ = ["FairQueue", "GraderActor", "GraderPool", "GradeStream", "Graded", "GradingError", "PoolStats", "SandboxDied", "SandboxUnavailable",
           "grade_with_pool"]
