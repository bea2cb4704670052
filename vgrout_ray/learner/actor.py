"""LearnerActor: the training model, on the GPU when the cluster gives it one.

A thin Ray shell over ``LearnerCore`` (the math lives there and in ``algo/``). Calls from the
driver run in submission order (a plain, single-threaded actor), which is what makes the
streamed ``add_group`` calls of a step accumulate in prompt order and the run reproducible.
"""
from __future__ import annotations

import os
import time

import ray
import torch

from vgrout_ray.config import Config
from vgrout_ray.model.base_store import BaseBundle
from vgrout_ray.learner.core import GroupResult, LearnerCore, LearnerStepStats, RolloutGroup


class LearnerActorImpl:
    def __init__(self, cfg: Config, model_path: str, threads: int | None = None, base: BaseBundle | None = None):
        """``base``: a ``publish_base`` ref passed as an argument (Ray hands the actor the bundle,
        mapped from the node's object store), or None to read the checkpoint."""
        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.core = LearnerCore(cfg, model_path=model_path, device=device, base=base)

    @classmethod
    def around(cls, core: LearnerCore) -> "LearnerActorImpl":
        """The same calls over a core built elsewhere (a run hosted by ``LearnerHostActorImpl``)."""
        obj = cls.__new__(cls)
        obj.core = core
        return obj

    def info(self) -> dict:
        c = self.core
        return {"device": str(c.device), "version": c.version, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(), "modules": len(c.adapter.names),
                "trainable": sum(p.numel() for p in c.adapter.delta_params()),
                "pairs": len(c.direction.pairs()) if c.cfg.intervention != "none" else 0, "base": c.base_source}

    def begin_step(self, step: int) -> None:
        self.core.begin_step(step)

    def add_group(self, index: int, group: RolloutGroup) -> GroupResult:
        t0 = time.perf_counter()
        res = self.core.add_group(group)
        res.index, res.seconds = index, time.perf_counter() - t0
        return res

    def end_step(self) -> LearnerStepStats:
        return self.core.end_step()

    def deltas(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, δS/δS_hack on CPU): the weight-sync payload."""
        return self.core.version, self.core.deltas_state()

    def sync_payload(self, probe: bool = True, tol: float | None = None) -> tuple[int, dict[str, torch.Tensor]]:
        """``deltas()`` plus the on-policy probe (``model.onpolicy_probe``) the rollout actors check
        after loading it; the start-up probe δS and its log-probs are computed once and reused."""
        from vgrout_ray.model import onpolicy_probe as op

        version, payload = self.deltas()
        if not probe:
            return version, payload
        ad = self.core.adapter
        if getattr(self, "_probe_fixed", None) is None:
            ids = op.text_probe_ids(self.core.tok, self.core.model.get_input_embeddings().weight.shape[0])
            fixed = op.learner_probe(ad, ids, startup=True)
            self._probe_fixed = {k: v for k, v in fixed.items() if k != f"{op.PROBE_PREFIX}logp"}
        ids = self._probe_fixed[f"{op.PROBE_PREFIX}ids"].tolist()
        payload.update(self._probe_fixed)
        payload[f"{op.PROBE_PREFIX}logp"] = op.adapter_logprobs(ad, ids)
        payload[f"{op.PROBE_PREFIX}tol"] = torch.tensor(op.DEFAULT_TOL if tol is None else tol)
        return version, payload

    def factors_payload(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """HF name -> (U, Vh) as the adapter holds them (model dtype), on CPU: what rollout engines
        hook with, so they need no SVD of their own and use bit-identical bases."""
        ad = self.core.adapter
        return {n: (ad.U[n].detach().cpu(), ad.Vh[n].detach().cpu()) for n in ad.names}

    def factors_ref(self) -> list:
        """[ObjectRef of ``factors_payload()``] (a list, so the caller gets the ref, not the tensors):
        the single-run path ships the learner's SVD to every rollout actor through the object store."""
        return [ray.put(self.factors_payload())]

    def merged_views(self, both: bool) -> tuple[int, dict]:
        """(version, {ablate: merged W'}) for full-weight sync; the deploy view only when ``both``."""
        ad = self.core.adapter
        views = {False: {k: v.cpu() for k, v in ad.merged_weights(include_hack=True).items()}}
        if both:
            views[True] = {k: v.cpu() for k, v in ad.merged_weights(include_hack=False).items()}
        return self.core.version, views

    def delta_hack_norm(self) -> float:
        return self.core.delta_hack_norm()

    def state_dict(self) -> dict:
        return self.core.state_dict()

    def load_state_dict(self, state: dict) -> int:
        self.core.load_state_dict(state)
        return self.core.version


LearnerActor = ray.remote(max_restarts=0)(LearnerActorImpl)


class LearnerHostActorImpl:
    """A sweep's multi-run learner: ``LearnerHost`` (K runs' cores on one base model) behind one
    actor. ``call(run, name, *args)`` serves a ``LearnerActorImpl`` method for that run with its
    adapter live; the driver reaches it through ``run.learner.HostedLearnerClient``. A host that
    dies takes its runs down with ``LearnerLost`` (the sweep's ``--resume`` continues them)."""

    def __init__(self, base: BaseBundle, threads: int | None = None):
        from vgrout_ray.learner.host import LearnerHost

        if threads:
            torch.set_num_threads(threads)
        self.host = LearnerHost(base, "cuda" if torch.cuda.is_available() else "cpu")
        self.impls: dict[str, LearnerActorImpl] = {}

    def add_run(self, run: str, cfg: Config, model_path: str) -> None:
        self.impls[run] = LearnerActorImpl.around(self.host.add_run(run, cfg, model_path))

    def drop_run(self, run: str) -> None:
        self.host.drop_run(run)
        self.impls.pop(run, None)

    def runs(self) -> list[str]:
        return list(self.impls)

    def call(self, run: str, name: str, *args):
        self.host.use(run)
        return getattr(self.impls[run], name)(*args)


LearnerHostActor = ray.remote(max_restarts=0)(LearnerHostActorImpl)
