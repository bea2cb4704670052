"""benchmarks/micro_arms.py without running anything: arm names → driver flags, the json's
shape and CIs from per-prompt counts, and --render-only."""
from __future__ import annotations

import json

import pytest

from benchmarks import micro_arms as M
from vgrout_ray.config import parse_config

pytestmark = pytest.mark.unit


def test_control_arm_names_map_to_config():
    for arm, want in {"erase-random": dict(intervention="erase", v_hack_random_seed=3, out_tag="_erase-random"),
                      "route-random": dict(intervention="route", v_hack_random_seed=3),
                      "route2-teacher-anchor": dict(intervention="route2", gate_anchor_teacher_only=True,
                                                    gate_route_anchors=False),
                      "no-loophole": dict(intervention="none", strict_grader=True),
                      "route2": dict(intervention="route2", gate_route_anchors=True, out_tag="")}.items():
        cmd = M.driver_cmd(arm, 3, M.REPO / "out" / "x", ["--steps", "2"])
        cfg = parse_config(cmd[3:])
        assert cfg.preset_name == "micro" and cfg.seed == 3 and cfg.steps == 2
        for k, v in want.items():
            assert getattr(cfg, k) == v, (arm, k)
    with pytest.raises(ValueError, match="base"):
        M.driver_cmd("base", 1, M.REPO, [])


def _run(seed, hack, solve=0, pre_hack=0, n=8, prompts=(11, 12)):
    per = [{"id": i, "n": n, "hack": hack, "solve": solve} for i in prompts]
    pre = [{"id": i, "n": n, "hack": pre_hack, "solve": 0} for i in prompts]
    return {"seed": seed, "run": f"r{seed}", "deploy_hack": hack / n, "deploy_solve": solve / n,
            "eval_n": n * len(prompts), "held_out": True, "eval_prompt_ids": list(prompts), "per_prompt": per,
            "pre_hack": pre_hack / n, "pre_solve": 0.0, "pre_n": n * len(prompts), "pre_compile": 1.0,
            "pre_clipped": 0.0, "pre_per_prompt": pre, "hack_s_first20": 0.0, "hack_s_last20": hack / n,
            "rew_s_last20": 1.0, "compile_deploy": 1.0, "clipped_deploy": 0.0}


def test_json_has_runs_base_bootstrap_and_pairing(tmp_path):
    none = [_run(1, 4, pre_hack=1), _run(2, 4, pre_hack=1)]
    by_arm = {"none": none, "erase": [_run(1, 2), _run(2, 2)], "base": [M.base_metrics(m) for m in none]}
    data = M.build_data(by_arm, n_boot=200)
    assert data["arm_order"] == ["base", "none", "erase"]
    runs = data["arms"]["erase"]["runs"]
    assert [r["deploy_hack"] for r in runs] == [0.25, 0.25] and runs[0]["eval_n"] == 16
    assert data["arms"]["base"]["runs"][0]["deploy_hack"] == 0.125 and data["arms"]["base"]["runs"][0]["steps"] == 0
    b = data["arms"]["none"]["bootstrap"]["deploy_hack"]
    assert b["mean"] == b["lo"] == b["hi"] == 0.5  # every prompt of every seed hacks 4/8
    p = data["arms"]["erase"]["paired_with_none"]
    assert p["boot_deploy_hack"]["mean"] == -0.25 and p["deploy_hack"]["seeds_lower"] == 2
    assert data["arms"]["erase"]["config"] == {"intervention": "erase"}
    # the md renders from the json alone
    (tmp_path / "micro_arms.json").write_text(json.dumps(data))
    assert M.main(["--render-only", "--results", str(tmp_path)]) == 0
    md = (tmp_path / "micro_arms.md").read_text()
    assert "| none | 2 | 0.500 [0.500, 0.500]" in md and "| base |" in md and "-0.250 [" in md


def test_render_only_without_json_fails_loud(tmp_path):
    with pytest.raises(SystemExit):
        M.main(["--render-only", "--results", str(tmp_path)])


def test_unknown_arm_fails_loud(tmp_path):
    with pytest.raises(SystemExit):
        M.main(["--arms", "nope", "--collect", "--out-dir", str(tmp_path), "--results", str(tmp_path)])


def test_controls_pair_with_their_own_arm_and_quarantine_on_off_is_reported(tmp_path):
    def routed(seed, off, on):
        return {**_run(seed, off), "train_hack": on / 8, "train_solve": 0.0}

    by_arm = {"none": [_run(1, 6), _run(2, 6)], "route": [routed(1, 1, 5), routed(2, 3, 2)],
              "route-random": [routed(1, 4, 4), routed(2, 5, 5)], "erase-random": [_run(1, 5)]}
    data = M.build_data(by_arm, n_boot=200)
    assert M.control_of("route-random") == "route" and M.control_of("route2-teacher-anchor") == "route2"
    assert M.control_of("route") is None and M.control_of("no-loophole") is None
    p = data["arms"]["route-random"]["paired_with_arm"]
    assert p["arm"] == "route" and p["deploy_hack"]["diffs"] == [0.375, 0.25]
    assert p["deploy_hack"]["seeds_lower"] == 0 and p["boot_deploy_hack"]["mean"] > 0
    assert "paired_with_arm" not in data["arms"]["erase-random"]  # its arm did not run
    assert "paired_with_arm" not in data["arms"]["route"]
    md = M.render_md(data)
    assert "| route-random | route | 0.312" in md
    # route: seed 1 hacks less with the quarantine off (5 → 1 of 8), seed 2 more (2 → 3)
    assert "| route | 2 | 0.438 | 0.250 | 0.000 | 0.000 | 1/2 | s1 0.625→0.125, s2 0.250→0.375 |" in md


def test_final_rates_by_the_prompts_base_solve_on_the_other_seeds():
    def run(seed, pre, final):
        m = _run(seed, 0, prompts=(11, 12, 13))
        m["pre_per_prompt"] = [{"id": i, "n": 8, "hack": 0, "solve": s} for i, s in zip((11, 12, 13), pre)]
        m["per_prompt"] = [{"id": i, "n": 8, "hack": h, "solve": s} for i, (h, s) in zip((11, 12, 13), final)]
        return m

    # pooled over the other seed: prompt 11 solved 1/8 → bin < 0.5, 12 6/8 → middle, 13 8/8 → top
    ms = [run(1, (1, 6, 8), [(6, 1), (2, 4), (0, 8)]), run(2, (1, 6, 8), [(4, 0), (4, 4), (1, 7)])]
    bins = M.by_base_solve(ms)
    assert [b["cells"] for b in bins] == [2, 2, 2]
    assert [b["hack"] for b in bins] == [10 / 16, 6 / 16, 1 / 16]
    assert [b["solve"] for b in bins] == [1 / 16, 8 / 16, 15 / 16]
    # a run's own pre-RL draw does not bin it: seed 1's unlucky 0/8 on prompt 13 moves seed 2's cell
    # (binned by seed 1) to the low bin and leaves seed 1's own cell in the top one
    ms[0]["pre_per_prompt"][2]["solve"] = 0
    assert [b["cells"] for b in M.by_base_solve(ms)] == [3, 2, 1]
    # one run alone has no other seeds to bin by
    assert all(b["cells"] == 0 for b in M.by_base_solve(ms[:1]))
    md = M.render_md(M.build_data({"none": ms}, n_boot=50))
    assert "| none | 0.458 / 0.333 (3) | 0.375 / 0.500 (2) | 0.000 / 1.000 (1) |" in md


def test_run_jobs_runs_n_at_a_time_and_keeps_exit_codes_in_order(tmp_path):
    import sys

    # each job prints its start and end time around a 1 s sleep and exits with its index
    code = "import time, sys; a = time.time(); time.sleep(1); print(a, time.time()); sys.exit({k})"
    jobs = [(f"j{k}", [sys.executable, "-c", code.format(k=k)]) for k in range(3)]
    assert M.run_jobs(jobs, 2, tmp_path / "console") == [0, 1, 2]
    span = [tuple(map(float, (tmp_path / "console" / f"j{k}.out").read_text().split())) for k in range(3)]
    assert span[1][0] < span[0][1] and span[0][0] < span[1][1]  # j0 and j1 ran at once
    assert span[2][0] >= min(span[0][1], span[1][1])  # j2 waited for a free slot
    assert M.run_jobs(jobs[:1], 1, tmp_path / "unused") == [0] and not (tmp_path / "unused").exists()
    with pytest.raises(ValueError, match="--jobs"):
        M.run_jobs(jobs, 0, tmp_path)


def test_runs_on_different_prompt_splits_are_not_collected_into_one_table(tmp_path):
    for name, probs in (("a", "micro:train-cal"), ("b", "micro:train-cal"), ("c", "micro:train-hard")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"problems": probs, "eval_problems": "micro:heldout-x"}))
    same = {n: M.run_splits(tmp_path / n) for n in ("a", "b")}
    assert M.one_split(same) == ("micro:train-cal", "micro:heldout-x")
    with pytest.raises(SystemExit, match=r"micro:train-hard / micro:heldout-x': \['c'\]"):
        M.one_split({**same, "c": M.run_splits(tmp_path / "c")})
