"""One source of actor resources: the fit check's demands are exactly the actors' .options."""
import dataclasses

import pytest

from vgrout_ray.cluster.placement import actor_options, as_bundle
from vgrout_ray.cluster.ray_cluster import run_demands
from vgrout_ray.config import PRESETS


def _cfg(**cluster):
    cfg = PRESETS["smoke"]()
    return dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, **cluster),
                               rollout=dataclasses.replace(cfg.rollout, num_actors=3, gpus_per_actor=1.0))


@pytest.mark.parametrize("grader_resource", [False, True])
def test_demands_are_the_actors_options(grader_resource):
    cfg = _cfg(learner_gpus=1.0, learner_resource="learner", rollout_resource="rollout_node")
    by_role = {d.role: d for d in run_demands(cfg, grader_resource)}
    for role in ("learner", "rollout", "grader"):
        assert by_role[role].resources == as_bundle(actor_options(cfg, role, grader_resource=grader_resource))
    assert by_role["rollout"].count == 3 and by_role["learner"].count == 1
    assert actor_options(cfg, "learner") == {"num_cpus": cfg.cluster.learner_cpus, "num_gpus": 1.0,
                                             "resources": {"learner": 1}}
    assert ("grader" in by_role["grader"].resources) is grader_resource


def test_unknown_role_is_named():
    with pytest.raises(ValueError, match="'critic'"):
        actor_options(_cfg(), "critic")
