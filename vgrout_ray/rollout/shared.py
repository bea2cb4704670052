"""Rollouts for a sweep: N multi-run actors (``MultiRolloutActorImpl``) serving K runs at once.

Why: runs of a sweep differ only in δS, so one engine per actor can hold the base model and the
SVD factors once and serve every run's rows in one forward pass. ``SharedRollouts`` owns the
actors; ``SharedRollouts.view(run)`` gives one run a ``RolloutPool`` (the interface ``Run`` and
``StepScheduler`` already use: sync / holds / submit / poll / generate) whose calls carry the
run's name. Each actor keeps every run's δS, so one run's sync never displaces another's and
``holds`` stays true between that run's own syncs; concurrent calls of different runs are
coalesced inside the actor into one ``generate``.

A shared actor that dies is not replaced by a view (the other runs hold it too): the runs on it
stop with an error, and ``python -m vgrout_ray sweep --resume`` picks them up again.
"""
from __future__ import annotations

import time
from typing import Any

import ray
from loguru import logger

from vgrout_ray.cluster.placement import actor_options
from vgrout_ray.rollout.base import GenRequest
from vgrout_ray.rollout.pool import RolloutPool, kill_actors


class SharedRollouts:
    """The sweep's multi-run rollout actors (HF backend, δS sync; one engine per actor)."""

    def __init__(self, handles: list):
        if not handles:
            raise ValueError("SharedRollouts needs at least one actor")
        self.handles = list(handles)
        self.views: dict[str, RunRollouts] = {}

    @classmethod
    def from_config(cls, cfg, model_path: str, base=None) -> "SharedRollouts":
        """``cfg.rollout.num_actors`` multi-run actors with the run's rollout options; ``base``: a
        ``publish_base`` ref they map the frozen weights from (None: each reads the checkpoint)."""
        from vgrout_ray.rollout.multi_engine import multi_rollout_actor

        rc = cfg.rollout
        if rc.backend != "hf" or rc.sync != "delta":
            raise ValueError(f"shared multi-run rollouts need rollout.backend=hf and rollout.sync=delta, got "
                             f"{rc.backend} / {rc.sync} (use --engines separate)")
        if rc.delta_apply != "hook":
            raise ValueError("shared multi-run rollouts apply δS per row through the hooks: rollout.delta_apply "
                             f"must be hook, got {rc.delta_apply} (use --engines separate)")
        actor = multi_rollout_actor(**actor_options(cfg, "rollout"))
        kw = {"threads": cfg.cluster.threads_for(rc.cpus_per_actor), "dtype": rc.dtype or None}
        handles = [actor.remote(model_path, str(cfg.svd_cache), kw, base=base) for _ in range(rc.num_actors)]
        ray.get([h.ready.remote() for h in handles])
        return cls(handles)

    def view(self, run: str) -> "RunRollouts":
        if run in self.views:
            raise ValueError(f"run {run!r} already has a view on the shared rollouts")
        self.views[run] = RunRollouts(self, run)
        return self.views[run]

    def batch_sizes(self) -> list[list[int]]:
        """Per actor, the requests of each coalesced generate so far."""
        return ray.get([h.batch_sizes.remote() for h in self.handles])

    def close(self) -> None:
        kill_actors(self.handles)


class RunRollouts(RolloutPool):
    """One run's view of ``SharedRollouts``: a RolloutPool whose calls name the run."""

    def __init__(self, shared: SharedRollouts, run: str):
        self.shared, self.run = shared, run
        super().__init__(lambda i: shared.handles[i], len(shared.handles), max_replacements=0)

    def holds(self, owner: Any, version: int) -> bool:
        # every actor keeps this run's δS between its syncs: no other run can displace it
        return self.version == version

    def sync(self, version: int, payload: dict, *, full: bool = False, owner: Any = None) -> dict:
        if full:
            raise ValueError("shared multi-run rollouts take δS only (rollout.sync=delta)")
        return super().sync(version, payload, full=False, owner=owner)

    def _sync_call(self, handle):
        version, ref, _ = self._payload
        return handle.sync.remote(self.run, version, ref, time.time())

    def _gen_call(self, handle, reqs: list[GenRequest]):
        return handle.generate_run.remote(self.run, reqs)

    def _replace(self, i: int, why: str, incarnation: int) -> None:
        raise RuntimeError(f"shared multi-run rollout actor {i} died ({why}); run {self.run} stops "
                           "(resume the sweep to continue it)")

    def close(self) -> None:
        """Drop this run's δS from the actors; the actors stay up for the other runs."""
        self.shared.views.pop(self.run, None)
        try:
            ray.get([h.drop_run.remote(self.run) for h in self.handles], timeout=30)
        except Exception as e:  # closing must not raise; the actors may already be gone
            logger.debug(f"shared rollouts: dropping run {self.run}'s δS failed: {type(e).__name__}: {e}")
