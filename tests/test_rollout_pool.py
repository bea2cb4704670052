"""``RolloutPool`` on real Ray actors: replace-and-replay when an actor dies mid-call, one
replacement per death, the successor synced before it works, and the crash-loop limit.

The actors are small stand-ins with the rollout actor's methods (``sync``, ``generate_many``)
that sleep instead of generating, so a kill lands inside a call; the pool under test is real.
"""
from __future__ import annotations

import time

import pytest
import ray
import torch

from vgrout_ray.rollout.base import GenRequest, GenResult
from vgrout_ray.rollout.pool import RolloutPool


@ray.remote(max_restarts=0, num_cpus=0)
class SleepyEngine:
    """Answers each request with one completion ``[seed]`` after ``delay`` s, at its synced version."""

    def __init__(self, delay: float):
        self.delay, self.version = delay, -1

    def sync(self, version, payload, sent_at=None):
        self.version = version
        return {"load_s": 0.0}

    def generate_many(self, reqs):
        time.sleep(self.delay)
        return [GenResult(r.key, self.version, [[r.seed]] * r.n, [True] * r.n, self.delay) for r in reqs]


def _reqs(k: int) -> list[GenRequest]:
    return [GenRequest((k, 0), [1, 2], 1, 4, seed=100 + k)]


def _drain(pool: RolloutPool, timeout: float = 120.0) -> dict:
    got, end = {}, time.time() + timeout
    while pool.pending and time.time() < end:
        for d in pool.poll(timeout=0.5):
            got[d.key] = d.results
    assert not pool.pending, "calls still in flight"
    return got


def test_a_killed_actor_is_replaced_once_synced_and_its_calls_replayed(ray_cluster):
    pool = RolloutPool(lambda i: SleepyEngine.remote(3.0 if i == 0 else 0.1), 2)
    try:
        pool.sync(5, {"m.delta_S": torch.zeros(4)})
        for k in range(4):
            pool.submit(k, _reqs(k), actor=k % 2)  # keys 0 and 2 on actor 0
        time.sleep(1.0)
        ray.kill(pool.handles[0])
        got = _drain(pool)
        assert sorted(got) == [0, 1, 2, 3]
        assert all(got[k][0].completions == [[100 + k]] and got[k][0].version == 5 for k in got)
        assert pool.replacements == 1 and pool.incarnation == [1, 0]  # two failed calls, one replacement
    finally:
        pool.close()


def test_sync_replaces_a_dead_actor_and_the_successor_has_the_new_version(ray_cluster):
    pool = RolloutPool(lambda i: SleepyEngine.remote(0.05), 2)
    try:
        pool.sync(1, {"m.delta_S": torch.zeros(4)})
        ray.kill(pool.handles[1])
        time.sleep(0.5)
        rec = pool.sync(2, {"m.delta_S": torch.zeros(4)}, owner="run-a")
        assert rec["version"] == 2 and rec["bytes"] == 16 and pool.incarnation == [0, 1]
        assert pool.holds("run-a", 2) and not pool.holds("run-b", 2)
        assert [r.version for r in pool.generate([_reqs(0)[0], _reqs(1)[0]])] == [2, 2]
    finally:
        pool.close()


def test_a_crash_loop_gives_up(ray_cluster):
    pool = RolloutPool(lambda i: SleepyEngine.remote(2.0), 1, max_replacements=1)
    try:
        pool.sync(0, {"m.delta_S": torch.zeros(1)})
        with pytest.raises(RuntimeError, match="died 2 times"):
            for _ in range(3):
                pool.submit(0, _reqs(0), actor=0)
                time.sleep(0.3)
                ray.kill(pool.handles[0])
                _drain(pool, timeout=60)
    finally:
        pool.close()
