"""Where each actor of a run goes: the one place that turns the config into Ray resources.

The actors' ``.options(...)``, the driver's fit check, the plan and the sweep all ask
``actor_options``; nothing else writes a role's CPUs, GPUs or custom resources.
"""
from __future__ import annotations

from typing import Literal

Role = Literal["learner", "rollout", "grader"]
ROLES: tuple[Role, ...] = ("learner", "rollout", "grader")


def actor_options(cfg, role: Role, *, grader_resource: bool = False) -> dict:
    """``.options`` for one actor of ``role``: num_cpus, num_gpus and custom resources.

    ``grader_resource``: grader actors also take one ``grader`` when the cluster offers it."""
    if role == "grader":  # the same for every run (the pool is built before a config is at hand)
        return {"num_cpus": 1, "resources": {"grader": 1}} if grader_resource else {"num_cpus": 1}
    c = cfg.cluster
    if role == "learner":
        opts = {"num_cpus": c.learner_cpus, "num_gpus": c.learner_gpus}
        custom = {c.learner_resource: 1} if c.learner_resource else {}
    elif role == "rollout":
        opts = {"num_cpus": cfg.rollout.cpus_per_actor, "num_gpus": cfg.rollout.gpus_per_actor}
        custom = {c.rollout_resource: 1} if c.rollout_resource else {}
    else:
        raise ValueError(f"unknown actor role {role!r}; one of {ROLES}")
    if custom:
        opts["resources"] = custom
    return opts


def as_bundle(opts: dict) -> dict[str, float]:
    """Ray's resource names for ``.options``: what the scheduler must find on one node."""
    out = {"CPU": float(opts.get("num_cpus", 0) or 0), "GPU": float(opts.get("num_gpus", 0) or 0)}
    out.update({k: float(v) for k, v in (opts.get("resources") or {}).items()})
    return {k: v for k, v in out.items() if v}
