"""GraderPool on a real local Ray cluster with real sandboxes (process backend; one docker test).

What must hold: verdicts equal LocalGrader's; results stream out as they complete (a slow
completion does not hold back fast ones); an actor killed mid-batch is replaced and every
completion still gets its correct verdict; a completion whose sandbox dies every time comes
back with ``result.error`` after 2 retries while its batch-mates are fine; stats count it all.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vgrout_ray.env.exploits import clean_completion, exploit_completion, method_name, wrong_completion
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.modes import LOOPHOLE_MODES
from vgrout_ray.env.problems import load_problems
from vgrout_ray.sandbox.client import SandboxError
from vgrout_ray.grading.local import LocalGrader

from .helpers import POISON_NAME, SandboxKiller, wait_until

pytestmark = pytest.mark.ray

SHARED_TEST_SET = Path(os.environ.get("VGROUT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "leetcode" / "leetcode_test_medhard.jsonl"


def _problems(n: int) -> list[dict]:
    modes = list(LOOPHOLE_MODES)
    try:
        return load_problems(n, env_modes=modes)
    except Exception:  # packaged set not there yet: the shared test set
        return load_problems(n, env_modes=modes, source=SHARED_TEST_SET)


def _fence(code: str) -> str:
    return f"```python\n{code.strip()}\n```\n"


def _wrong_with(problem: dict, module_code: str) -> str:
    """A wrong solution (returns 0) with ``module_code`` run at import."""
    return _fence(f"{module_code}\n\nclass Solution:\n    def {method_name(problem)}(self, *a, **k):\n        return 0\n")


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return _problems(12)


@pytest.fixture(scope="module")
def corpus(problems) -> list[GradeRequest]:
    """clean + wrong + own-mode exploit per problem: every verdict kind occurs."""
    reqs = []
    for i, p in enumerate(problems):
        reqs.append(GradeRequest.from_problem(p, clean_completion(p)))
        reqs.append(GradeRequest.from_problem(p, wrong_completion(p)))
        reqs.append(GradeRequest.from_problem(p, exploit_completion(p, p["env_mode"], i % 4)))
    return reqs


@pytest.fixture(scope="module")
def reference(corpus) -> list[dict]:
    """Verdicts of an in-process LocalGrader (the pool must agree exactly)."""
    with LocalGrader("process") as g:
        res = [r.to_dict() for r in g.grade(corpus)]
    assert sum(r["gt_correct"] for r in res) == len(corpus) // 3, "every clean completion must be correct"
    assert sum(r["exploited"] for r in res) >= len(corpus) // 3 - 2, "exploits must mostly pay their channel"
    assert not any(r["error"] for r in res)
    return res


@pytest.fixture
def pool_factory(ray_cluster):
    from vgrout_ray.grading.pool import GraderPool

    made = []

    def make(n=2, **kw):
        p = GraderPool(n, **{"sandbox": "process", **kw})
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_verdicts_match_local_grader_and_stats(pool_factory, corpus, reference):
    pool = pool_factory(2)
    got = pool.grade(corpus)
    assert [r.to_dict() for r in got] == reference
    s = pool.stats()
    assert s["submitted"] == s["completed"] == len(corpus)
    assert s["failed"] == s["retried"] == s["replaced_actors"] == s["sandbox_failures"] == 0
    assert s["pending"] == s["in_flight"] == 0
    assert pool.health() == [True, True]
    info = pool.describe()
    assert {d["sandbox"] for d in info} == {"process"} and len({d["actor_id"] for d in info}) == 2
    assert sum(d["batches"] for d in info) == s["calls"] >= 2, "both actors share the work"
    assert all(d["batches"] > 0 for d in info), "least-outstanding dispatch uses every actor"


def test_keyed_streaming_slow_completion_does_not_hold_back_fast_ones(pool_factory, problems, corpus, reference):
    pool = pool_factory(2)
    slow_p = problems[0]
    slow = GradeRequest.from_problem(slow_p, _wrong_with(slow_p, "import time\ntime.sleep(2.5)"), "gt_only")
    fast_idx = list(range(16))
    pool.wait_ready()
    t0 = time.monotonic()
    pool.submit([slow], keys=["slow"])
    pool.submit([corpus[i] for i in fast_idx], keys=[f"fast-{i}" for i in fast_idx])
    arrivals: list[tuple[str, float]] = []
    by_key = {}
    for g in pool.as_completed(timeout=60):
        arrivals.append((g.key, time.monotonic() - t0))
        by_key[g.key] = g.result
    order = [k for k, _ in arrivals]
    assert sorted(order) == sorted(["slow"] + [f"fast-{i}" for i in fast_idx]), "each key exactly once"
    t_slow = dict(arrivals)["slow"]
    assert t_slow >= 2.5, f"the slow completion sleeps 2.5 s in its single run, took {t_slow:.1f}"
    before = [k for k, t in arrivals if k != "slow" and t < t_slow]
    assert len(before) >= 10, f"only {len(before)}/16 fast results arrived before the slow one: {arrivals}"
    assert arrivals[0][1] < 2.0 and arrivals[0][0] != "slow", f"first result too late: {arrivals[0]}"
    for i in fast_idx:
        assert by_key[f"fast-{i}"].to_dict() == reference[i]
    r = by_key["slow"]
    assert r.error is None and not r.passed and not r.gt_correct and r.reward == 0.5
    # poll(): non-blocking, returns what is finished
    assert pool.poll() == []
    pool.submit(corpus[:3], keys=["a", "b", "c"])
    got = []
    while len(got) < 3:
        got += pool.poll(timeout=10)
    assert sorted(g.key for g in got) == ["a", "b", "c"]


def test_actor_killed_mid_batch_is_replaced_and_nothing_is_lost(pool_factory, ray_cluster, problems, corpus, reference):
    import ray

    pool = pool_factory(2)
    # Slow-ish completions (0.3 s per check) keep both actors busy while we kill one.
    extra = [GradeRequest.from_problem(p, _wrong_with(p, "import time\ntime.sleep(0.3)"), "gt_only")
             for p in problems[:8]]
    reqs = corpus + extra
    before = {d["actor_id"] for d in pool.describe()}
    keys = pool.submit(reqs)
    results = {}
    it = pool.as_completed(timeout=120)
    for g in it:
        results[g.key] = g
        if len(results) >= 4:
            break
    busy = [a for a in pool.actor_states() if a["in_flight"] > 0]
    assert busy, "expected an actor with work in flight"
    victim = busy[0]
    runner_pid = victim["info"]["runner_pid"]
    ray.kill(victim["handle"], no_restart=True)
    for g in it:
        assert g.key not in results, f"duplicate result for {g.key}"
        results[g.key] = g
    assert sorted(results) == sorted(keys), "every completion gets exactly one result"
    for k, req in zip(keys, reqs):
        r = results[k].result
        assert r.error is None, f"{k}: {r.error}"
        if k < len(corpus):
            assert r.to_dict() == reference[k]
        else:
            assert not r.passed and not r.gt_correct
    s = pool.stats()
    assert s["replaced_actors"] == 1 and s["retried"] >= 1 and s["failed"] == 0
    assert s["completed"] == len(reqs)
    assert any(g.attempts == 2 for g in results.values()), "the victim's in-flight work was retried"
    after = {d["actor_id"] for d in pool.describe()}
    assert len(after) == 2 and len(after - before) == 1, "one actor replaced, the other kept"
    # The killed actor's sandbox goes with it (its runner sees EOF on its protocol pipe).
    assert wait_until(lambda: not _pid_alive(runner_pid), 15), f"runner {runner_pid} outlived its actor"


def test_completion_that_kills_its_sandbox_every_time_errors_after_two_retries(pool_factory, problems, corpus,
                                                                               reference):
    pool = pool_factory(2, batch_size=4)
    p = problems[1]
    poison = GradeRequest.from_problem(p, _wrong_with(
        p, f"import ctypes, time\nctypes.CDLL(None).prctl(15, b'{POISON_NAME}', 0, 0, 0)\ntime.sleep(2)"))
    reqs = corpus[:11] + [poison]  # 12 → 3 batches of 4: the poison has batch-mates
    with SandboxKiller() as killer:
        results = pool.grade(reqs)
    bad = results[-1]
    assert bad.error is not None and "after 2 retries" in bad.error and "sandbox died" in bad.error
    assert bad.reward == 0.0 and not bad.passed
    assert len(killer.kills) == 3, f"the poison ran 3 times (1 + 2 retries), killed {killer.kills}"
    assert [r.to_dict() for r in results[:-1]] == reference[:11], "batch-mates graded correctly"
    s = pool.stats()
    assert s["failed"] == 1 and s["completed"] == 11 and s["sandbox_failures"] == 3
    assert s["retried"] >= 2 + 1, "the poison twice, its batch-mates once"
    assert s["replaced_actors"] == 0, "a sandbox death is handled inside the actor"
    assert sum(d["sandbox_restarts"] for d in pool.describe()) == 3
    assert pool.health() == [True, True], "fresh sandboxes serve after the deaths"
    assert [r.to_dict() for r in pool.grade(corpus[:6])] == reference[:6]


def test_a_request_grading_cannot_handle_fails_alone_and_keeps_its_actor(pool_factory, corpus, reference):
    """A request that makes grading raise (an unknown env_mode) comes back with a grading error
    at once; its batch-mates are re-sent alone, uncharged, and graded right; no actor is replaced."""
    import dataclasses

    pool = pool_factory(1, batch_size=4)
    pool.wait_ready()
    bad = dataclasses.replace(corpus[0], env_mode="no_such_mode")
    results = pool.grade(corpus[:3] + [bad])
    assert results[-1].error is not None and results[-1].error.startswith("grading error: ValueError: ")
    assert "no_such_mode" in results[-1].error
    assert [r.to_dict() for r in results[:3]] == reference[:3]
    s = pool.stats()
    assert s["failed"] == 1 and s["completed"] == 3 and s["replaced_actors"] == 0 and s["sandbox_failures"] == 0
    assert s["retried"] == 4 and s["calls"] == 5, "one batch of 4, then each of the 4 alone"


def test_explicit_docker_without_engine_fails_before_starting_actors(ray_cluster):
    from vgrout_ray.grading.pool import GraderPool

    total = ray_cluster.cluster_resources()["CPU"]
    assert wait_until(lambda: ray_cluster.available_resources().get("CPU") == total, 30), "earlier pools' CPUs"
    cpus = ray_cluster.available_resources().get("CPU")
    with pytest.raises(SandboxError, match="Docker cannot be used"):
        GraderPool(2, sandbox="docker", docker_image="vgrout-sandbox:no-such-image")
    time.sleep(0.5)
    assert ray_cluster.available_resources().get("CPU") == cpus, "no actor may have been started"


def test_auto_without_docker_says_so_once_and_uses_process(pool_factory, corpus, reference):
    from loguru import logger

    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m)), level="WARNING")
    try:
        a = pool_factory(1, sandbox="auto", docker_image="vgrout-sandbox:no-such-image")
        b = pool_factory(1, sandbox="auto", docker_image="vgrout-sandbox:no-such-image")
    finally:
        logger.remove(sink)
    assert a.kind == b.kind == "process"
    assert len([m for m in seen if "Docker not usable" in m]) == 1
    assert [r.to_dict() for r in a.grade(corpus[:3])] == reference[:3]


def test_grade_with_pool_reuses_a_connected_ray(ray_cluster, corpus, reference):
    from vgrout_ray.grading.pool import grade_with_pool

    got = grade_with_pool(corpus[:6], sandbox="process", workers=2, progress=False)
    assert [r.to_dict() for r in got] == reference[:6]
    assert ray_cluster.is_initialized(), "a Ray it did not start must stay up"


def test_cli_docker_without_engine_is_a_clear_error(tmp_path, corpus):
    import json

    rows = tmp_path / "in.jsonl"
    r = corpus[0]
    rows.write_text(json.dumps({"completion": r.completion, "env_mode": r.env_mode, "gt_tests": r.gt_tests,
                                "setup_code": r.setup_code, "func_name": r.func_name,
                                "canonical": r.canonical}) + "\n")
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vgrout_ray", "grade", "--in", str(rows), "--out",
                           str(tmp_path / "out.jsonl"), "--sandbox", "docker"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Docker cannot be used" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 30, "must fail before starting Ray"
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.docker
def test_docker_pool_grades_replaces_and_removes_containers(docker_ready, pool_factory, corpus, reference,
                                                            ray_cluster):
    from vgrout_ray.sandbox.docker_backend import running_sandboxes

    pool = pool_factory(2, sandbox="docker")
    info = pool.describe()
    names = {d["container"] for d in info}
    assert len(names) == 2 and None not in names and names <= set(running_sandboxes())
    assert [r.to_dict() for r in pool.grade(corpus[:12])] == reference[:12]
    victim = pool.actor_states()[0]
    ray_cluster.kill(victim["handle"], no_restart=True)
    gone = victim["info"]["container"]
    # the successor grades; the killed actor's container goes away on its own (stdin EOF → runner exits, --rm)
    assert [r.to_dict() for r in pool.grade(corpus[12:24])] == reference[12:24]
    assert pool.stats()["replaced_actors"] == 1
    assert wait_until(lambda: gone not in running_sandboxes(), 30), f"{gone} outlived its actor"
    live = {d["container"] for d in pool.describe()}
    pool.close()
    assert wait_until(lambda: not (live & set(running_sandboxes())), 30), "close() removes the containers"
