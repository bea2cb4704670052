"""Learner gradient checkpointing is exact: for every arm the step's gradients, route2's gate
cosines and the δS update equal those without it (and a naive checkpoint breaks route2's gate)."""
from __future__ import annotations

import pytest
import torch

from vgrout_ray.algo.pairs import pairs_from_problems, render_prompt, save_pairs_json
from vgrout_ray.config import FastConfig, FullConfig, MicroConfig, SmokeConfig
from vgrout_ray.env.exploits import clean_completion, exploit_completion, wrong_completion
from vgrout_ray.env.modes import LOOPHOLE_MODES
from vgrout_ray.env.problems import load_problems
from vgrout_ray.learner.core import LearnerCore, RolloutGroup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problems(tok):
    ps = load_problems()
    cost = {p["problem_id"]: len(tok(render_prompt(tok, p["messages"]) + p["canonical"]).input_ids) for p in ps}
    return sorted(ps, key=lambda p: cost[p["problem_id"]])[:6]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, problems, tok):
    root = tmp_path_factory.mktemp("gc")
    save_pairs_json(pairs_from_problems(problems[:6], tok), root / "pairs6.json")
    return root


def _group(tok, prob, step):
    pids = tok(render_prompt(tok, prob["messages"]), add_special_tokens=False).input_ids
    enc = (lambda s: tok(s, add_special_tokens=False).input_ids + [tok.eos_token_id])
    students = [enc(wrong_completion(prob, str(i)))[: 10 + 3 * i] for i in range(2)]
    teachers = [enc(exploit_completion(prob, LOOPHOLE_MODES[step % 6]))[:40], enc(clean_completion(prob))[:40]]
    return RolloutGroup(pids, students + teachers, [0.0, 0.5, 3.5, 3.5], [True, True, False, False],
                        [False, True])


def _run(tiny, tok, problems, workdir, tmp_path, arm, gc, patch=None):
    cfg = SmokeConfig(intervention=arm, steps=30, max_new=24, out_dir=tmp_path / "out", svd_cache=workdir / "svd",
                      v_hack_pairs_path=workdir / "pairs6.json", v_hack_refresh_every=10, v_hack_extract_top_k=3,
                      v_hack_k=2, lr=1.0, cos_pre_split_every=2, grad_checkpointing=gc)
    core = LearnerCore(cfg, model_path=tiny, device="cpu")
    assert core.model.is_gradient_checkpointing == gc
    if patch:
        patch(core)
    trace = []
    for step in range(3):  # step 0: split backward (retain_graph); step 1: combined; route2 gates once δS moved
        core.begin_step(step)
        grads = {}
        info = core.add_group(_group(tok, problems[step], step))
        grads = {k: v.clone() for k, v in {**core.acc.g_s, **{f"t.{n}": g for n, g in core.acc.g_t.items()},
                                              **{f"h.{n}": g for n, g in core.acc.g_hack.items()}}.items()}
        st = core.end_step()
        trace.append((grads, info.gate_cos, st["gn"], core.deltas_state()))
    return trace


def _assert_same(a, b):
    for (ga, ca, gna, da), (gb, cb, gnb, db) in zip(a, b):
        assert set(ga) == set(gb) and ga
        for k in ga:
            torch.testing.assert_close(ga[k], gb[k], rtol=1e-5, atol=1e-8, msg=k)
        assert ca == pytest.approx(cb, rel=1e-4, abs=1e-6, nan_ok=True)
        assert gna == pytest.approx(gnb, rel=1e-5)
        for k in da:
            torch.testing.assert_close(da[k], db[k], rtol=1e-5, atol=1e-8, msg=k)


@pytest.mark.parametrize("arm", ["none", "erase", "route", "route2"])
def test_checkpointing_leaves_gradients_and_updates_unchanged(tiny, tok, problems, workdir, tmp_path, arm):
    off = _run(tiny, tok, problems, workdir, tmp_path, arm, False)
    on = _run(tiny, tok, problems, workdir, tmp_path, arm, True)
    _assert_same(off, on)
    if arm == "route2":  # the gate really ran: finite cosines and a nonzero routed gradient
        assert any(all(c == c for c in t[1]) for t in off)
        assert any(k.startswith("h.") and float(v.abs().sum()) > 0 for t in off for k, v in t[0].items())


def test_naive_checkpointing_breaks_the_route2_gate(tiny, tok, problems, workdir, tmp_path):
    """Without the adapter's recompute context the recomputed layer lacks the gates: torch's
    checkpoint sees a different graph (or, if it did not, the gate grads would differ)."""
    def naive(core):
        core.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    off = _run(tiny, tok, problems, workdir, tmp_path, "route2", False)
    with pytest.raises((AssertionError, torch.utils.checkpoint.CheckpointError)):
        _assert_same(off, _run(tiny, tok, problems, workdir, tmp_path, "route2", True, patch=naive))


def test_presets():
    assert FastConfig().grad_checkpointing and FullConfig().grad_checkpointing
    assert not SmokeConfig().grad_checkpointing and not MicroConfig().grad_checkpointing
