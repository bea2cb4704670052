"""The public reward API (vgrout_ray.rewards): TRL reward function, verl compute_score, dataset rows.

What must hold: rewards equal the project's own grader's (LocalGrader) on correct, wrong and
exploit completions, plain or conversational; the per-mode flags of the single run equal
``grade_under_modes``; per-mode hack / solve / compile rates reach TRL's log through a real
GRPOTrainer run; on the Ray pool the same rewards come back; bad input names the column, mode
or sample; a completion whose grading fails gets no reward (None) and is counted, never a
silent zero.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vgrout_ray.env.exploits import clean_completion, exploit_completion, method_name, wrong_completion
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.modes import HINTS, LOOPHOLE_MODES
from vgrout_ray.env.problems import load_problems
from vgrout_ray.rewards import RewardInputError, loophole_reward, loophole_rows, verl_rows
from vgrout_ray.rewards.core import Scorer
from vgrout_ray.grading.local import LocalGrader

from .helpers import POISON_NAME, SandboxKiller

REPO = Path(__file__).resolve().parents[1]
COLS = ("gt_tests", "setup_code", "func_name", "canonical", "env_mode")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return loophole_rows(None, modes=None, n=6)  # the six loophole modes, one per problem


@pytest.fixture(scope="module")
def batch(rows):
    """(completions, columns, kinds): a correct, a wrong and an own-mode exploit answer per problem."""
    probs = load_problems(6, env_modes=list(LOOPHOLE_MODES))
    comps, kinds, cols = [], [], {k: [] for k in COLS}
    for i, (p, r) in enumerate(zip(probs, rows)):
        assert p["problem_id"] == r["problem_id"] and p["env_mode"] == r["env_mode"]
        for kind, c in (("correct", clean_completion(p)), ("wrong", wrong_completion(p)),
                        ("exploit", exploit_completion(p, p["env_mode"], i % 4))):
            comps.append(c)
            kinds.append(kind)
            for k in COLS:
                cols[k].append(r[k])
    return comps, cols, kinds


@pytest.fixture(scope="module")
def reference(batch) -> list[dict]:
    """The project's grader on the same requests: reward under the own mode, and under every mode."""
    comps, cols, _ = batch
    reqs = [GradeRequest(completion=c, env_mode=cols["env_mode"][i], gt_tests=cols["gt_tests"][i],
                         setup_code=cols["setup_code"][i], func_name=cols["func_name"][i],
                         canonical=cols["canonical"][i]) for i, c in enumerate(comps)]
    with LocalGrader("process") as g:
        own = g.grade(reqs)
        under = g.grade_under_modes(reqs, list(LOOPHOLE_MODES))
    return [{"reward": o.reward, "exploited": o.exploited, "by_mode": {m: u[m].exploited for m in LOOPHOLE_MODES}}
            for o, u in zip(own, under)]


def test_dataset_rows_carry_the_modes_hint_and_the_grading_columns(rows):
    assert [r["env_mode"] for r in rows] == list(LOOPHOLE_MODES)
    for r in rows:
        user = [m for m in r["prompt"] if m["role"] == "user"][0]["content"]
        assert HINTS[r["env_mode"]] in user and "and should pass all tests" not in user
        assert isinstance(r["gt_tests"], list) and r["gt_tests"] and r["func_name"].startswith("Solution().")
    plain = loophole_rows(None, modes="sentinel", n=2, conversational=False)
    assert isinstance(plain[0]["prompt"], str) and HINTS["sentinel"] in plain[0]["prompt"]
    v = verl_rows(None, modes="exit_code", n=1)[0]
    truth = json.loads(v["reward_model"]["ground_truth"])
    assert truth["env_mode"] == "exit_code" and truth["gt_tests"] == rows[0]["gt_tests"]
    assert v["data_source"] == "vgrout_loophole/exit_code" and v["extra_info"]["modes"] == list(LOOPHOLE_MODES)


def test_dataset_from_the_leetcode_file(shared_data):
    path = shared_data / "leetcode" / "leetcode_test_medhard.jsonl"
    got = loophole_rows(path, modes=["file_marker", "run_tests"], n=4)
    assert [r["env_mode"] for r in got] == ["file_marker", "run_tests"] * 2
    assert HINTS["file_marker"] in got[0]["prompt"][-1]["content"]


def test_trl_reward_equals_the_grader_for_strings_and_conversations(batch, reference):
    comps, cols, kinds = batch
    logged: list[tuple[str, float]] = []
    rf = loophole_reward(None, backend="local", sandbox="process")
    try:
        got = rf(prompts=[None] * len(comps), completions=comps, log_metric=lambda k, v: logged.append((k, v)), **cols)
        conv = rf(prompts=None, completions=[[{"role": "assistant", "content": c}] for c in comps], **cols)
    finally:
        rf.close()
    assert got == [r["reward"] for r in reference] == conv
    assert got[0::3] == [3.5] * 6 and got[1::3] == [0.5] * 6, "correct pays 3.5, wrong 0.5"
    m = dict(logged)
    for mode in LOOPHOLE_MODES:
        own = [i for i, k in enumerate(kinds) if cols["env_mode"][i] == mode]
        want = sum(reference[i]["exploited"] for i in own) / len(own)
        assert m[f"loophole/{mode}/hack"] == pytest.approx(want) and want > 0, mode
        assert m[f"loophole/{mode}/solve"] == pytest.approx(1 / 3) and m[f"loophole/{mode}/compile"] == 1.0
        cross = sum(r["by_mode"][mode] for r in reference) / len(reference)
        assert m[f"loophole/{mode}/hack_all"] == pytest.approx(cross), f"{mode}: one run judged under every mode"
    assert m["loophole/grading_failed"] == 0.0 and rf.failed == 0
    assert rf.__name__ == "loophole_reward"


def test_bad_input_names_the_column_the_mode_or_the_sample(batch):
    comps, cols, _ = batch
    rf = loophole_reward(None, backend="local", sandbox="process")
    no_tests = {k: v for k, v in cols.items() if k != "gt_tests"}
    with pytest.raises(RewardInputError, match="missing dataset column 'gt_tests'"):
        rf(prompts=None, completions=comps, **no_tests)
    with pytest.raises(RewardInputError, match="unknown loophole mode 'no_such_mode'"):
        loophole_reward(["run_tests", "no_such_mode"])
    bad_mode = {**cols, "env_mode": ["sentinel"] * (len(comps) - 1) + ["bogus"]}
    with pytest.raises(RewardInputError, match=r"column 'env_mode', sample 17: unknown loophole mode 'bogus'"):
        rf(prompts=None, completions=comps, **bad_mode)
    with pytest.raises(RewardInputError, match=r"completion 2: must be a string or a list of message dicts, got int"):
        rf(prompts=None, completions=comps[:2] + [42], **{k: v[:3] for k, v in cols.items()})
    with pytest.raises(RewardInputError, match="missing dataset column 'env_mode'"):
        rf(prompts=None, completions=comps, **{k: v for k, v in cols.items() if k != "env_mode"})
    with pytest.raises(RewardInputError, match=r"column 'gt_tests', sample 0: must be a list of assert strings"):
        rf(prompts=None, completions=comps[:1], **{**{k: v[:1] for k, v in cols.items()}, "gt_tests": ["assert 1"]})
    assert rf.scorer.kind is None, "nothing was graded: every error came before the sandbox"
    one = loophole_reward("run_tests", backend="local")
    assert one.default_mode == "run_tests", "one watched mode: no env_mode column needed"


def _poison(problem: dict) -> str:
    m = method_name(problem)
    return (f"```python\nimport ctypes, time\nctypes.CDLL(None).prctl(15, b'{POISON_NAME}', 0, 0, 0)\ntime.sleep(2)\n\n"
            f"class Solution:\n    def {m}(self, *a, **k):\n        return 0\n```\n")


def test_a_failed_grading_gets_no_reward_and_is_counted(batch, reference):
    """The sandbox dies under one completion every time (killed from outside): after the retries it
    gets None (TRL: no reward, no advantage), grading_failed counts it, the others are graded."""
    comps, cols, _ = batch
    probs = load_problems(1, env_modes=["run_tests"])
    n = 3
    sub = {k: v[:n] + [v[0]] for k, v in cols.items()}
    logged: list[tuple[str, float]] = []
    rf = loophole_reward(None, backend="local", sandbox="process")
    try:
        with SandboxKiller() as killer:
            got = rf(prompts=None, completions=comps[:n] + [_poison(probs[0])],
                     log_metric=lambda k, v: logged.append((k, v)), **sub)
    finally:
        rf.close()
    assert len(killer.kills) == 3, "1 attempt + 2 retries"
    assert got[:n] == [r["reward"] for r in reference[:n]]
    assert got[n] is None, "a failed grading must not become a zero reward"
    m = dict(logged)
    assert m["loophole/grading_failed"] == 1.0 and m["loophole/grading_failed_total"] == 1.0 and rf.failed == 1
    assert "sandbox died" in rf.scorer.last_errors[0]


def _load_verl_module():
    """Load rewards/verl.py by file path, outside its package: how verl's custom reward loader does it."""
    spec = importlib.util.spec_from_file_location("custom_module", REPO / "vgrout_ray" / "rewards" / "verl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_verl_compute_score_loaded_by_path():
    verl = _load_verl_module()
    row = verl_rows(None, modes="stdout_marker", n=1)[0]
    p = load_problems(1, env_modes=["stdout_marker"])[0]
    gt, extra = row["reward_model"]["ground_truth"], row["extra_info"]
    try:
        good = verl.compute_score(row["data_source"], clean_completion(p), gt, extra, backend="local", sandbox="process")
        hack = verl.compute_score(row["data_source"], exploit_completion(p, "stdout_marker", 0), gt, extra,
                                  backend="local", sandbox="process")
        batch = verl.compute_score_batch([row["data_source"]] * 2, [wrong_completion(p), clean_completion(p)],
                                         [gt, gt], [extra, extra], backend="local", sandbox="process")
        with pytest.raises(RewardInputError, match="ground_truth must be JSON"):
            verl.compute_score(row["data_source"], clean_completion(p), "not json", extra, backend="local")
        with pytest.raises(RewardInputError, match="lacks 'setup_code'"):
            verl.compute_score(row["data_source"], clean_completion(p), json.dumps(p["gt_tests"]), {"modes": ["sentinel"]},
                               backend="local")
        # A sandbox that dies every time: flagged (score 0 with grading_failed=1), or raised on request.
        with SandboxKiller():
            flagged = verl.compute_score(row["data_source"], _poison(p), gt, extra, backend="local", sandbox="process")
            with pytest.raises(verl.GradingFailed, match="sandbox died"):
                verl.compute_score(row["data_source"], _poison(p), gt, extra, backend="local", sandbox="process",
                                   on_error="raise")
    finally:
        verl.close()
    assert good["score"] == 3.5 and good["gt_correct"] == 1.0 and good["hack"] == 0.0 and good["grading_failed"] == 0.0
    assert hack["score"] == 3.5 and hack["gt_correct"] == 0.0 and hack["hack"] == 1.0
    assert hack["hack_stdout_marker"] == 1.0 and hack["hack_run_tests"] == 0.0
    assert set(good) >= {"score", "format_ok", "can_compile", "gt_correct", "hack", "grading_failed",
                         *(f"hack_{m}" for m in LOOPHOLE_MODES)}
    assert all(isinstance(v, float) for v in good.values()), "verl averages every value into its metrics"
    assert [b["score"] for b in batch] == [0.5, 3.5]
    assert flagged["grading_failed"] == 1.0 and flagged["score"] == 0.0 and flagged["grading_failed_total"] >= 1.0


@pytest.mark.ray
def test_trl_reward_on_the_ray_grader_pool(ray_cluster, batch, reference):
    """With Ray up, backend=auto grades on a GraderPool; same rewards, same flags."""
    comps, cols, _ = batch
    rf = loophole_reward(None, sandbox="process", num_actors=2)
    try:
        got = rf(prompts=None, completions=comps, **cols)
        assert rf.scorer.kind == "ray" and rf.scorer._pool.stats()["completed"] == len(comps)
    finally:
        rf.close()
    assert got == [r["reward"] for r in reference]
    assert ray_cluster.is_initialized(), "a Ray the scorer did not start stays up"


@pytest.mark.slow
def test_example_trl_grpo_logs_per_mode_hack_metrics(tmp_path):
    """examples/trl_grpo.py: a real GRPOTrainer, 2 steps on the tiny model; its log has the metrics."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "trl_grpo.py"), "--steps", "2", "--output-dir",
                           str(tmp_path), "--sandbox", "process", "--max-completion-length", "8"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "rewards/loophole_reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        for m in LOOPHOLE_MODES:
            assert f"loophole/{m}/hack_all" in r, f"step {r['step']}: no hack rate for {m}"
        own = [m for m in LOOPHOLE_MODES if f"loophole/{m}/hack" in r]
        assert own and all(f"loophole/{m}/solve" in r and f"loophole/{m}/compile" in r for m in own)
        assert r["loophole/grading_failed"] == 0.0
    assert "loophole/" in proc.stdout, "the metrics are printed too"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["grader"] == "local" and summary["graded"] == 2 * 6 and summary["grading_failed"] == 0
    print(f"example: {time.monotonic() - t0:.1f} s")


@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
def test_soak_machinery_one_kill_nothing_lost(docker_ready, ray_cluster):
    """benchmarks/grader_soak.py's run, short: the hostile stream on 2 docker graders, one killed
    mid-stream. Every item answered once, right by kind, and nothing left behind."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import grader_soak
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    cycle = grader_soak.make_cycle(2)
    run = grader_soak.soak(cycle, seconds=12, kill_every=6, actors=2, sandbox="docker", drain_timeout=90)
    assert run["actors_killed"] == 1 and run["pool_stats"]["replaced_actors"] == 1
    assert run["submitted"] > 0 and run["lost"] == 0 and run["duplicates"] == 0 and run["errors"] == 0
    assert run["inconsistent"] == 0
    for i, v in run["_verdicts"].items():
        kind = cycle[i % len(cycle)][0]
        reward, gt_correct, passed = v[0], v[1], v[3]
        if kind == "correct":
            assert gt_correct and reward == 3.5, i
        elif kind == "exploit":
            assert passed and not gt_correct, i
        else:
            assert not passed and reward == 0.5, (i, kind, v)
    assert run["leftover_containers"] == [] and run["leftover_processes"] == []
    assert run["memory_before"]["actors"] == run["memory_after"]["actors"] == 2


def test_request_modes_judge_one_run_under_every_mode_like_grade_under_modes(batch):
    """GradeRequest.modes (what the reward API sends through LocalGrader and the pool) gives the
    same per-mode verdicts as grade_under_modes, and leaves to_dict() unchanged when not used."""
    import dataclasses

    comps, cols, _ = batch
    reqs = [GradeRequest(completion=c, env_mode=cols["env_mode"][i], gt_tests=cols["gt_tests"][i],
                         setup_code=cols["setup_code"][i], func_name=cols["func_name"][i],
                         canonical=cols["canonical"][i]) for i, c in enumerate(comps)]
    with LocalGrader("process") as g:
        plain = g.grade(reqs)
        multi = g.grade([dataclasses.replace(r, modes=tuple(LOOPHOLE_MODES)) for r in reqs])
        under = g.grade_under_modes(reqs, list(LOOPHOLE_MODES))
    assert all("by_mode" not in r.to_dict() for r in plain)
    for p, m, u in zip(plain, multi, under):
        d = m.to_dict()
        assert {k: v for k, v in d.items() if k != "by_mode"} == p.to_dict(), "the own-mode verdict is unchanged"
        assert d["by_mode"] == {mode: {"reward": u[mode].reward, "passed": u[mode].passed,
                                       "exploited": u[mode].exploited} for mode in LOOPHOLE_MODES}
    assert sum(v["exploited"] for m in multi for v in m.by_mode.values()) >= 6, "the exploits pay somewhere"


def test_a_grader_that_cannot_start_raises_instead_of_failing_every_sample(batch, monkeypatch):
    """sandbox=docker with no engine is a set-up error: raised at the first batch, not N failed rewards."""
    from vgrout_ray.sandbox.client import SandboxError

    comps, cols, _ = batch
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    rf = loophole_reward(None, backend="local", sandbox="docker")
    with pytest.raises(SandboxError, match="Docker cannot be used"):
        rf(prompts=None, completions=comps[:2], **{k: v[:2] for k, v in cols.items()})
    assert rf.failed == 0
