"""The deploy eval's pure parts: held-out check, seeds shared across arms and quarantine views,
per-prompt counts, and the per_mode_deploy.json record."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from vgrout_ray.config import ConfigError, MicroConfig, SmokeConfig, config_from_dict
from vgrout_ray.env.grading import RewardResult
from vgrout_ray.env.problems import ProblemError, load_problems
from vgrout_ray.run import summary
from vgrout_ray.run.evaluate import check_held_out, eval_problems, eval_requests, eval_seed, summarize_eval

pytestmark = pytest.mark.unit


def test_eval_seed_depends_on_run_seed_step_and_prompt_only():
    cfgs = [SmokeConfig(intervention=a, seed=3) for a in ("none", "erase", "route", "route2")]
    assert len({eval_seed(c, 5, 2) for c in cfgs}) == 1
    assert eval_seed(cfgs[0], 5, 2) != eval_seed(cfgs[0], 5, 3) != eval_seed(cfgs[0], 6, 2)
    assert eval_seed(SmokeConfig(seed=4), 5, 2) != eval_seed(cfgs[0], 5, 2)


class _Sampler:
    def prompt(self, prob):
        return "", [1, 2, prob["problem_id"]]

    def fits(self, pids):
        return True


def test_quarantine_on_and_off_draw_the_same_samples():
    cfg = SmokeConfig(intervention="route", eval_samples=5)
    probs = load_problems(3)
    on, off = (eval_requests(cfg, _Sampler(), probs, 10, ablate) for ab, ablate in ((0, False), (1, True)))
    assert [r.seed for _, r in on] == [r.seed for _, r in off]
    assert [r.ablate for _, r in off] == [True] * 3 and all(r.n == 5 for _, r in on)
    assert len({r.seed for _, r in on}) == 3


def test_eval_samples_default_and_validation():
    assert SmokeConfig().eval_k == SmokeConfig().group
    m = MicroConfig()
    assert m.eval_n_prompts >= 16 and m.eval_k >= 8
    with pytest.raises(ConfigError, match="eval_samples"):
        SmokeConfig(eval_samples=0)
    with pytest.raises(ConfigError, match="eval_problems"):
        SmokeConfig(eval_problems=" ")
    with pytest.raises(ConfigError, match="v_hack_random_seed"):
        SmokeConfig(v_hack_random_seed=-1)


def test_old_route2_random_v_seed_config_still_loads():
    d = SmokeConfig(v_hack_random_seed=3).to_dict()
    d["route2_random_v_seed"] = d.pop("v_hack_random_seed")
    assert config_from_dict(d).v_hack_random_seed == 3


def test_held_out_check_refuses_shared_ids_and_prompts(tmp_path):
    probs = load_problems(6)
    train, held = probs[:4], probs[4:]
    check_held_out(train, held)
    with pytest.raises(ProblemError, match="eval_problems: problem ids"):
        check_held_out(train, [probs[1]])
    twin = {**probs[1], "problem_id": 999}
    with pytest.raises(ProblemError, match="eval_problems: .*prompt of training problem"):
        check_held_out(train, [twin])
    # whitespace does not hide a copied prompt
    msgs = [{**m, "content": "  " + m["content"].replace(" ", "   ") + "\n"} for m in probs[2]["messages_gt"]]
    with pytest.raises(ProblemError, match="prompt of training problem"):
        check_held_out(train, [{**probs[2], "problem_id": 998, "messages_gt": msgs}])


def test_eval_problems_from_a_source(tmp_path):
    from vgrout_ray.env.problems import read_rows

    rows = read_rows()
    path = tmp_path / "held.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows[10:14]) + "\n")
    train = load_problems(8)
    cfg = SmokeConfig(eval_problems=str(path), eval_n_prompts=3, strict_grader=True)
    held, held_out = eval_problems(cfg, train)
    assert held_out and [p["problem_id"] for p in held] == [int(r["id"]) for r in rows[10:13]]
    assert all(p["pay_channel"] is False for p in held)
    probs, flag = eval_problems(SmokeConfig(eval_n_prompts=2), train)
    assert not flag and probs == train[:2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows[6:9]) + "\n")
    with pytest.raises(ProblemError, match="eval_problems"):
        eval_problems(SmokeConfig(eval_problems=str(bad)), train)


def _r(hack=False, solve=False, comp=True, relies=None):
    return RewardResult(format_ok=True, can_compile=comp, exploited=hack, gt_correct=solve,
                        hacked=hack if relies is None else relies, reward=0.5 * comp + 3.0 * (hack or solve))


def test_summarize_eval_counts_per_prompt():
    items = [(1, "run_tests", _r(hack=True), True), (1, "run_tests", _r(), False),
             (2, "run_tests", _r(solve=True, relies=True), True), (2, "run_tests", _r(comp=False), False)]
    ev = summarize_eval(items)
    # a correct answer with a vacuous run_tests relies on the loophole but is no exploit
    assert ev["n"] == 4 and ev["hack"] == 0.25 and ev["solve"] == 0.25 and ev["relies"] == 0.5
    assert ev["compile"] == 0.75 and ev["clipped"] == 0.5
    assert ev["per_prompt"] == [{"id": 1, "n": 2, "hack": 1, "solve": 0, "relies": 1, "compile": 2, "clipped": 1},
                                {"id": 2, "n": 2, "hack": 0, "solve": 1, "relies": 1, "compile": 1, "clipped": 1}]
    assert ev["by_mode"] == {"run_tests": [1, 1, 4]}


def test_deploy_record_carries_pre_eval_held_out_and_per_prompt(tmp_path):
    ev = {"step": 3, "kind": "train", **summarize_eval([(7, "run_tests", _r(hack=True), True),
                                                        (7, "run_tests", _r(), False)])}
    pre = {"step": -1, "kind": "pre", **summarize_eval([(7, "run_tests", _r(), True), (7, "run_tests", _r(), True)])}
    rows = [{"hack_s_copy": (1, 4), "hack_s_novel": (2, 4)}, {"hack_s_copy": (0, 4), "hack_s_novel": (1, 4)}]
    cfg = SmokeConfig(intervention="erase", v_hack_random_seed=2)
    rec = summary.write_deploy_record(tmp_path, cfg, 2, tmp_path / "log", ev, ev, {}, ["run_tests"], pre=pre,
                                      held_out=True, rows=rows)
    disk = json.loads((tmp_path / "per_mode_deploy.json").read_text())
    assert disk == json.loads(json.dumps(rec))
    assert disk["held_out"] is True and disk["eval_prompt_ids"] == [7] and disk["eval_n"] == 2
    assert disk["pre"]["hack"] == 0.0 and disk["pre"]["n"] == 2
    assert disk["hack_deploy"] == 0.5 and disk["compile_deploy"] == 1.0 and disk["clipped_deploy"] == 0.5
    assert disk["relies_deploy"] == 0.5 and disk["pre"]["relies"] == 0.0
    assert disk["per_prompt"] == [{"id": 7, "n": 2, "hack": 1, "solve": 0, "relies": 1, "compile": 2, "clipped": 1}]
    assert disk["hack_s_copy"] == [1, 8] and disk["hack_s_novel"] == [3, 8]
    assert disk["controls"]["v_hack_random_seed"] == 2


def test_quarantine_check_lets_controls_route_nothing():
    summary.check_quarantine(SmokeConfig(intervention="route", v_hack_random_seed=1), 0.0)
    summary.check_quarantine(SmokeConfig(intervention="route2", gate_anchor_teacher_only=True,
                                         gate_route_anchors=False), 0.0)
    with pytest.raises(AssertionError, match="never moved"):
        summary.check_quarantine(SmokeConfig(intervention="route2"), 0.0)
    with pytest.raises(AssertionError, match="never routes"):
        summary.check_quarantine(SmokeConfig(intervention="erase", v_hack_random_seed=1), 0.5)
