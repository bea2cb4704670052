"""The sweep runner: the plan and its checks, fair sharing of the grader pool, coalescing of
concurrent runs' generation calls, grading a batch once for every run, and a real small sweep
(2 arms × 2 seeds × 3 smoke steps on shared multi-run engines) with one run failing mid-way,
then ``--resume`` finishing it from its run dir."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vgrout_ray.grading.pool import FairQueue
from vgrout_ray.rollout.coalescer import Coalescer
from vgrout_ray.config import ConfigError, SmokeConfig
from vgrout_ray.sweep.runner import (RunEntry, SharedGrades, Sweep, SweepPlan, check_driver_args, cluster_cpus, main,
                              parse_arms, parse_seeds, run_config, runs_that_fit, sweep_dir_name)
from vgrout_ray.reporting.parquet import read_rows
from vgrout_ray.sweep.report import SweepRun, format_board, progress_of, run_summary

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- the plan
def test_plan_parsing_fails_loud_naming_the_flag():
    assert parse_arms(" none, route2 ") == ["none", "route2"]
    with pytest.raises(ConfigError, match="--arms: unknown arm"):
        parse_arms("none,bogus")
    with pytest.raises(ConfigError, match="--arms: an arm is repeated"):
        parse_arms("none,none")
    assert parse_seeds("41,42") == [41, 42]
    with pytest.raises(ConfigError, match="--seeds: expected comma-separated integers"):
        parse_seeds("41,x")
    with pytest.raises(ConfigError, match="--seeds: a seed is repeated"):
        parse_seeds("1,1")
    with pytest.raises(ConfigError, match="--seed: set by the sweep"):
        check_driver_args(["--steps", "3", "--seed=4"])
    with pytest.raises(ConfigError, match="--engines"):
        SweepPlan("smoke", ["none"], [1], engines="pooled")
    cfg = run_config("smoke", "route", 7, ["--steps", "3"])
    assert (cfg.intervention, cfg.seed, cfg.steps) == ("route", 7, 3)


def test_plan_round_trip_names_and_cluster_size():
    plan = SweepPlan("smoke", ["none", "route"], [1, 2], ["--steps", "3"], "shared", 0, "")
    assert [r.name for r in plan.runs] == ["none-seed1", "none-seed2", "route-seed1", "route-seed2"]
    assert plan.concurrency == 4 and SweepPlan("smoke", ["none"], [1, 2, 3], max_concurrent=2).concurrency == 2
    plan.runs[1].status, plan.runs[1].error = "failed", "boom"
    back = SweepPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan and isinstance(back.runs[0], RunEntry)
    with pytest.raises(ConfigError, match="sweep.json: not a sweep plan"):
        SweepPlan.from_dict({"preset": "smoke", "arms": [], "seeds": [], "bogus": 1})
    from datetime import datetime
    assert sweep_dir_name(plan, datetime(2026, 1, 2, 3, 4, 5)) == "20260102T030405_smoke_none-route_2seeds"
    cfg = SmokeConfig()
    # a learner per run (1 CPU) + the grader (1) + a spare (1); separate engines add a rollout actor per run
    assert cluster_cpus(cfg, 4, "shared") == 4 + 1 + 1 + 1
    assert cluster_cpus(cfg, 4, "separate") == 8 + 1 + 1


def test_placement_runs_what_the_cluster_holds_and_queues_the_rest():
    """On a given cluster (``ray job submit``) the sweep runs as many at once as fit and queues the
    rest; a cluster too small for one run is refused before anything starts."""
    cfg = SmokeConfig()
    # shared engines: a learner per run (1 CPU) next to one rollout actor and one grader actor
    assert [runs_that_fit(cfg, {"CPU": c}, "shared") for c in (2, 3, 4, 6)] == [0, 1, 2, 4]
    assert [runs_that_fit(cfg, {"CPU": c}, "separate") for c in (3, 4, 6)] == [1, 1, 2]
    # one learner for every run: nothing per run, so the cluster only has to hold the shared part
    assert runs_that_fit(cfg, {"CPU": 3}, "shared", "shared") > 100 and runs_that_fit(cfg, {"CPU": 2}, "shared",
                                                                                      "shared") == 0
    assert cluster_cpus(cfg, 4, "shared", "shared") == 4
    gpu = run_config("smoke", "none", 1, ["--cluster.learner-gpus", "1"])
    assert runs_that_fit(gpu, {"CPU": 64, "GPU": 3}, "shared") == 3
    plan = SweepPlan("smoke", ["none", "route"], [1, 2])
    sweep = Sweep(plan, Path("/nonexistent"))
    sweep.fit_cluster(cfg, {"CPU": 4.0})
    assert sweep.slots == 2 and plan.concurrency == 4  # the plan on disk keeps what was asked
    with pytest.raises(ConfigError, match="needs --base store"):
        SweepPlan("smoke", ["none"], [1], base="private", learners="shared")
    with pytest.raises(ConfigError, match="cannot hold one run"):
        Sweep(plan, Path("/nonexistent")).fit_cluster(cfg, {"CPU": 2.0})


def test_cli_fails_loud_before_starting_anything(tmp_path, capsys):
    assert main(["smoke", "--arms", "none,bogus", "--out-dir", str(tmp_path)]) == 2
    assert "--arms: unknown arm" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path)]) == 2
    assert "has no sweep.json" in capsys.readouterr().err
    assert main(["smoke", "--seeds", "1", "--intervention", "none", "--out-dir", str(tmp_path)]) == 2
    assert "--intervention: set by the sweep" in capsys.readouterr().err
    assert not (tmp_path / "sweeps").exists()


# ---------------------------------------------------------------------------- sharing
class _Sink:
    pass


class _It:
    def __init__(self, sink, k):
        self.sink, self.k = sink, k


def test_fair_queue_serves_submitters_round_robin():
    a, b, c = _Sink(), _Sink(), _Sink()
    q = FairQueue()
    for k in range(4):
        q.append(_It(a, f"a{k}"))  # run a submits its whole step first
    q.append(_It(b, "b0"))
    q.append(_It(b, "b1"))
    q.append(_It(c, "c0"))
    q.appendleft(_It(b, "b-retry"))  # a retry goes to the head of its own run's queue
    assert len(q) == 8 and q[0].k == "a0"
    order = []
    while q:
        head = q[0].k
        order.append(q.popleft().k)
        assert order[-1] == head  # [0] peeks at what popleft returns
    assert order == ["a0", "b-retry", "c0", "a1", "b0", "a2", "b1", "a3"]
    with pytest.raises(IndexError):
        q.popleft()


def test_coalescer_joins_concurrent_calls_and_keeps_errors_with_their_caller():
    seen = []

    def fn(items):
        seen.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [x.upper() for x in items]

    co = Coalescer(fn, window_s=0.3)
    out, start = {}, threading.Barrier(3)

    def call(name, items):
        start.wait()
        try:
            out[name] = co(items)
        except ValueError as e:
            out[name] = e

    ts = [threading.Thread(target=call, args=(n, it)) for n, it in (("r1", ["a", "b"]), ("r2", ["c"]), ("r3", ["d"]))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert out == {"r1": ["A", "B"], "r2": ["C"], "r3": ["D"]}
    assert co.batches == [4] and sorted(seen[0]) == ["a", "b", "c", "d"]  # one call for all three runs
    ts = [threading.Thread(target=call, args=(n, it)) for n, it in (("r1", ["x"]), ("r2", ["bad"]), ("r3", ["y"]))]
    start = threading.Barrier(3)
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    # the failed mixed batch is run again caller by caller: only the caller with the bad item fails
    assert isinstance(out["r2"], ValueError) and out["r1"] == ["X"] and out["r3"] == ["Y"], out
    assert co.isolated == 1 and sorted(seen[1]) == ["bad", "x", "y"]
    assert co(["z"]) == ["Z"]  # a failed batch leaves the coalescer usable


def test_shared_grades_grade_a_batch_once_for_every_run():
    from vgrout_ray.env.grading import GradeRequest, RewardResult

    calls = []

    class Pool:  # counts the real pool calls; the memo and the single flight are under test
        def grade(self, reqs, **kw):
            calls.append(len(reqs))
            time.sleep(0.2)
            return [RewardResult.failed("x") if r.completion == "err" else RewardResult(reward=1.0) for r in reqs]

        def stream(self):
            return "stream"

    g = SharedGrades(Pool())
    reqs = [GradeRequest("print(1)", "run_tests", ["assert 1"], "", "f")] * 3
    got = []
    ts = [threading.Thread(target=lambda: got.append(g.grade(reqs))) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert calls == [3] and len(got) == 4 and all(r[0].reward == 1.0 for r in got)
    assert got[0][0] is not got[1][0]  # each run gets its own copies
    bad = [GradeRequest("err", "run_tests", ["assert 1"], "", "f")]
    g.grade(bad)
    g.grade(bad)
    assert calls == [3, 1, 1]  # a batch with an error is graded again
    assert g.stream() == "stream"


# ---------------------------------------------------------------------------- a real sweep
SMOKE = ["--steps", "3", "--prompts-per-step", "1", "--eval-n-prompts", "1", "--eval-ablate-every", "0",
         "--v-hack-refresh-every", "0"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    return env


@pytest.mark.long(5)  # minutes, on 2 busy cores
@pytest.mark.slow
@pytest.mark.timeout(900)  # 85 s on 2 quiet cores; 15.5 min measured on 2 cores under a load average of ~15
def test_small_sweep_survives_a_failed_run_and_resumes_it(tmp_path, tiny):
    """2 arms × 2 seeds × 3 steps on one local cluster, shared multi-run rollouts, one learner actor
    for all four runs and one grader pool; route-seed2 fails after step 1: the others finish, the sweep exits 1 and records it;
    ``--resume`` skips the finished runs and continues route-seed2 from step 2."""
    cache = tiny.parent
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "tests" / "sweep_fault.py"), "route-seed2", "1", "smoke",
           "--arms", "none,route", "--seeds", "1,2", "--name", "t", "--learners", "shared", *SMOKE, "--svd-cache", str(cache),
           "--out-dir", str(out), "--logs-dir", str(tmp_path / "logs")]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    (sweep,) = sorted((out / "sweeps").iterdir())
    assert sweep.name.endswith("_t")
    plan = json.loads((sweep / "sweep.json").read_text())
    status = {f"{r['arm']}-seed{r['seed']}": (r["status"], r["error"]) for r in plan["runs"]}
    assert status["route-seed2"] == ("failed", "RuntimeError: injected fault after step 1")
    assert all(status[n][0] == "finished" for n in ("none-seed1", "none-seed2", "route-seed1"))
    assert "| route-seed2 | route | 2 | failed | 2 |" in (sweep / "summary.md").read_text()
    # each run logged to its own run.log (the actors ran this checkout: its generate_run is new)
    for name in status:
        log = (sweep / name / "run.log").read_text()
        assert f"seed={name[-1]}" in log and ("sweep run route-seed2: finished" not in log)
        assert "base from object store" in log and "model shared with other runs" in log  # one learner model
    assert "shared multi-run rollouts: 1 actor(s)" in (sweep / "sweep.log").read_text()
    assert "base weights and SVD factors are in the object store" in (sweep / "sweep.log").read_text()
    assert "shared learner: one actor holds every run's learner state" in (sweep / "sweep.log").read_text()

    p = subprocess.run([sys.executable, "-m", "vgrout_ray", "sweep", "--resume", str(sweep)], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    plan = json.loads((sweep / "sweep.json").read_text())
    assert [r["status"] for r in plan["runs"]] == ["finished"] * 4
    assert "(resumed)" in (sweep / "route-seed2" / "run.log").read_text()
    assert "1 to run" in (sweep / "sweep.log").read_text()
    t = pq.read_table(sweep / "sweep.parquet")
    assert t.num_rows == 12 and t.column_names[:4] == ["run", "arm", "seed", "status"]
    for r in plan["runs"]:
        rows = read_rows(sweep / r["run_dir"])
        assert [x["step"] for x in rows] == [0, 1, 2]
        assert (sweep / r["run_dir"] / "per_mode_deploy.json").exists()
    md = (sweep / "summary.md").read_text()
    assert "| none | 2 |" in md and "| route | 2 |" in md and "| route-seed2 | route | 2 | finished | 3 |" in md
    assert (sweep / "compare.png").stat().st_size > 10_000
    # the report over these real run dirs: each run's summary is its own per-mode deploy record,
    # and the live board reads the run dirs' last rows
    runs = [SweepRun(r["arm"], r["seed"], "finished", sweep / r["run_dir"]) for r in plan["runs"]]
    for r in runs:
        dep = json.loads((r.run_dir / "per_mode_deploy.json").read_text())
        summ = run_summary(r)
        assert summ["steps"] == 3 and summ["deploy_hack"] == dep["hack_deploy"]
        assert summ["train_solve"] == dep["solve_train"]
    prog = [progress_of(r.run_dir, r.name, 3, "finished") for r in runs]
    assert all(p.steps_done == 3 for p in prog) and "12/12 (100%)" in format_board(prog).splitlines()[0]
    assert prog[-1].reward == pytest.approx(read_rows(runs[-1].run_dir)[-1]["rew_s"])


def test_thread_budget_keeps_actor_threads_within_the_cores():
    """Four micro runs with their own learners (2 threads) and rollout actors (1) want 12 torch
    threads; on 2 cores each actor gets 1, on 16 cores they keep what they asked for. A shared
    learner and shared rollouts are 2 actors that take turns: they keep theirs. An explicit
    --cluster.torch-threads is the user's choice and is left alone."""
    from vgrout_ray.sweep.runner import Sweep, SweepPlan, thread_budget

    cfg = run_config("micro", "none", 1, [])
    assert cfg.cluster.learner_cpus == 2 and cfg.rollout.cpus_per_actor == 1
    assert thread_budget(cfg, 4, "separate", "separate", cores=2) == 1
    assert thread_budget(cfg, 4, "separate", "separate", cores=16) is None
    assert thread_budget(cfg, 4, "separate", "separate", cores=11) is None  # 8 actors, a core each
    assert thread_budget(cfg, 4, "separate", "separate", cores=6) == 1  # 8 actors on 6 cores
    assert thread_budget(cfg, 2, "separate", "separate", cores=8) is None  # 6 wanted
    assert thread_budget(cfg, 4, "shared", "shared", cores=2) is None
    assert thread_budget(cfg, 4, "shared", "separate", cores=2) == 1  # 4 learners + 1 rollout actor
    assert thread_budget(cfg, 4, "separate", "shared", cores=4) == 1  # 1 learner + 4 rollout actors
    assert cfg.cluster.threads_for(2.0) == 2 and cfg.cluster.threads_for(0.5) == 1
    plan = SweepPlan(preset="micro", arms=["none"], seeds=[1, 2, 3, 4], driver_args=[])
    sweep = Sweep(plan, Path("/nonexistent"))
    sweep.budget_threads(cfg, cores=2)
    assert sweep.torch_threads == cfg.cluster.torch_threads == 1 and cfg.cluster.threads_for(2.0) == 1
    explicit = run_config("micro", "none", 1, ["--cluster.torch-threads", "3"])
    sweep.torch_threads = 0
    sweep.budget_threads(explicit, cores=2)
    assert sweep.torch_threads == explicit.cluster.torch_threads == 3
    with pytest.raises(ConfigError, match="cluster.torch.threads"):
        run_config("micro", "none", 1, ["--cluster.torch-threads", "-1"])
