"""The run's handle on its learner actor: blocking calls, and the actor's death as ``LearnerLost``."""
from __future__ import annotations

import ray
from loguru import logger

from vgrout_ray.cluster.placement import actor_options
from vgrout_ray.learner.actor import LearnerActor
from vgrout_ray.learner.core import GroupResult, LearnerStepStats, RolloutGroup


class LearnerLost(RuntimeError):
    """The learner actor died: the run cannot continue, but it can be resumed."""


class LearnerClient:
    """Wraps a ``LearnerActor`` handle; every call waits for its answer except ``add_group``
    (streamed: ``collect`` waits for a step's groups)."""

    def __init__(self, handle):
        self.handle = handle

    @classmethod
    def start(cls, cfg, model_path: str, base=None) -> "LearnerClient":
        """``base``: an ObjectRef from ``model.base_store.publish_base`` (shared base weights), or None."""
        threads = cfg.cluster.threads_for(cfg.cluster.learner_cpus)
        return cls(LearnerActor.options(**actor_options(cfg, "learner")).remote(cfg, model_path, threads, base))

    @staticmethod
    def get(ref):
        """ray.get on a learner call; the learner's death becomes LearnerLost (resumable stop)."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as e:
            raise LearnerLost(str(e)) from None

    def info(self) -> dict:
        return self.get(self.handle.info.remote())

    def begin_step(self, step: int) -> None:
        self.get(self.handle.begin_step.remote(step))

    def add_group(self, index: int, group: RolloutGroup):
        return self.handle.add_group.remote(index, group)

    def collect(self, handles: list) -> list[GroupResult]:
        return self.get(handles)

    def end_step(self) -> LearnerStepStats:
        return self.get(self.handle.end_step.remote())

    def deltas(self) -> tuple[int, dict]:
        return self.get(self.handle.deltas.remote())

    def factors_later(self) -> list:
        """The learner's (U, Vh) per target Linear, for rollout actors created before it is ready:
        ``[ref]``, where ``ref`` resolves to the learner's ``factors_ref()``. In a list, so Ray hands
        it over as is: each rollout actor starts its process at once and waits for the factors in
        its own ``__init__`` (``rollout.actor.await_factors``) while the learner loads."""
        return [self.handle.factors_ref.remote()]

    def sync_payload(self, probe: bool = True, tol: float | None = None) -> tuple[int, dict]:
        return self.get(self.handle.sync_payload.remote(probe, tol))

    def merged_views(self, both: bool) -> tuple[int, dict]:
        return self.get(self.handle.merged_views.remote(both))

    def delta_hack_norm(self) -> float:
        return self.get(self.handle.delta_hack_norm.remote())

    def state_dict(self) -> dict:
        return self.get(self.handle.state_dict.remote())

    def load_state_dict(self, state: dict) -> int:
        return self.get(self.handle.load_state_dict.remote(state))

    def close(self) -> None:
        """Stop the learner actor (a run that is over; its state is in resume/state.pt)."""
        ray.kill(self.handle)


class _RunMethod:
    def __init__(self, host, run: str, name: str):
        self.host, self.run, self.name = host, run, name

    def remote(self, *args):
        return self.host.call.remote(self.run, self.name, *args)


class _RunCalls:
    """Looks like a LearnerActor handle (``handle.method.remote(...)``) for one hosted run."""

    def __init__(self, host, run: str):
        self.host, self.run = host, run

    def __getattr__(self, name: str) -> _RunMethod:
        return _RunMethod(self.host, self.run, name)


class HostedLearnerClient(LearnerClient):
    """One run's learner inside a sweep's ``LearnerHostActor``: the same calls as a learner of its
    own; ``close`` drops the run from the host instead of killing it (other runs live there)."""

    def __init__(self, host, run: str):
        super().__init__(_RunCalls(host, run))
        self.host, self.run = host, run

    @classmethod
    def add(cls, host, run: str, cfg, model_path: str) -> "HostedLearnerClient":
        client = cls(host, run)
        client.get(host.add_run.remote(run, cfg, model_path))
        return client

    def close(self) -> None:
        try:
            ray.get(self.host.drop_run.remote(self.run), timeout=60)
        except Exception as e:  # closing must not raise; the host may be gone
            logger.debug(f"learner host: dropping run {self.run} failed: {type(e).__name__}: {e}")
