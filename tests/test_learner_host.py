"""The sweep's multi-run learner (``LearnerHost``): K runs' learner states on one model, calls
interleaved as concurrent runs make them, give each run exactly the losses, gradient norms and
δS it gets from a learner of its own (route with its v_hack refresh, route2 with its gate)."""
from __future__ import annotations

import pytest
import torch

from vgrout_ray.algo.pairs import pairs_from_problems, save_pairs_json
from vgrout_ray.env.problems import load_problems
from vgrout_ray.learner.core import LearnerCore
from vgrout_ray.learner.host import LearnerHost
from vgrout_ray.model.base_store import bundle_base

from .test_learner_core import _cfg, _teacher_group

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARMS = {"a": ("route", 1), "b": ("route2", 2), "c": ("none", 3)}


def test_hosted_runs_train_exactly_like_learners_of_their_own(tiny, tok, tmp_path):
    probs = load_problems()[:6]
    save_pairs_json(pairs_from_problems(probs, tok), tmp_path / "pairs6.json")
    cfgs = {r: _cfg(tmp_path, tmp_path, arm, seed=seed, v_hack_refresh_every=1) for r, (arm, seed) in ARMS.items()}
    alone = {r: LearnerCore(cfgs[r], model_path=tiny, device="cpu") for r in ARMS}
    host = LearnerHost(bundle_base(tiny, tmp_path / "svd"), "cpu")
    for r in ARMS:
        host.add_run(r, cfgs[r], tiny)
    assert all(p.data_ptr() == q.data_ptr() for p, q in zip(host.cores["a"].model.parameters(),
                                                             host.cores["c"].model.parameters()))
    for step in range(2):
        for r in ARMS:
            alone[r].begin_step(step)
            host.use(r).begin_step(step)
        for p in probs[:2]:  # the runs' groups arrive interleaved, as from concurrent runs
            for r in ("c", "a", "b"):
                alone[r].add_group(_teacher_group(tok, p, step))
                host.use(r).add_group(_teacher_group(tok, p, step))
        for r in ARMS:
            want, got = alone[r].end_step(), host.use(r).end_step()
            assert (got["loss"], got["gn"]) == (want["loss"], want["gn"]), (r, step)
    for r in ARMS:
        want, got = alone[r].deltas_state(), host.use(r).deltas_state()
        assert all(torch.equal(want[k], got[k]) for k in want), r
    assert any(v.abs().sum() > 0 for v in host.use("a").deltas_state().values())
    host.drop_run("b")
    with pytest.raises(KeyError, match="not hosted"):
        host.use("b")
    with pytest.raises(ValueError, match="already hosted"):
        host.add_run("a", cfgs["a"], tiny)
