"""Sweep aggregation over run dirs: the statistics, sweep.parquet, summary.md, compare.png and the
live board. Run dirs come from real smoke-driver runs (2 arms × 1 seed, 2 steps, on a
``ray start`` cluster) and, for known-answer checks over many steps and seeds, from the
synthetic runs the plot tests use (written through the real RunTables)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vgrout_ray.sweep.report import (RunProgress, SweepRun, first_hack_step, fmt_mean_ci, format_board, mean_ci,
                                     progress_bar, progress_of, run_summary, summarize_arms, sweep_table, t95,
                                     write_sweep_report)
from vgrout_ray.reporting.parquet import read_rows
from tests.synthetic_telemetry import synth_run, write_run_dir

REPO = Path(__file__).resolve().parents[1]


def test_mean_ci_known_values():
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.303 -> half-width 4.303 / sqrt(3)
    mu, hw = mean_ci([1.0, 2.0, None, 3.0, math.nan])
    assert mu == 2.0 and hw == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([5.0])[0] == 5.0
    assert all(math.isnan(v) for v in mean_ci([None, math.nan]))
    assert t95(30) == 2.042 and abs(t95(60) - 2.000) < 0.003 and abs(t95(120) - 1.980) < 0.003
    with pytest.raises(ValueError, match="df"):
        t95(0)
    assert fmt_mean_ci(math.nan, math.nan) == "—" and fmt_mean_ci(0.5, math.nan) == "0.500"
    assert fmt_mean_ci(0.5, 0.25) == "0.500 ± 0.250"
    assert first_hack_step([{"step": 1, "hack_s": (1, 4)}, {"step": 0, "hack_s": (0, 4)}]) == 1
    assert first_hack_step([{"step": 0, "hack_s": (0, 0)}]) is None


@pytest.fixture(scope="module")
def synth_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_sweep")
    runs = []
    for iv in ("none", "route"):
        for seed in (1, 2, 3):
            d = write_run_dir(synth_run(iv, seed, 12), root / "runs")
            runs.append(SweepRun(iv, seed, "finished", d))
    runs.append(SweepRun("route", 4, "failed", None, error="learner died"))
    return root, runs


def test_summary_numbers_match_the_run_dirs(synth_sweep):
    root, runs = synth_sweep
    sums = [run_summary(r) for r in runs]
    arms = summarize_arms(sums)
    assert list(arms) == ["none", "route"] and arms["route"]["seeds"] == [1, 2, 3, 4]
    for arm in arms:
        done = [r for r in runs if r.arm == arm and r.run_dir]
        dep = [json.loads((r.run_dir / "per_mode_deploy.json").read_text()) for r in done]
        mu, hw = mean_ci([d["hack_deploy"] for d in dep])
        assert arms[arm]["deploy_hack"]["mean"] == pytest.approx(mu)
        assert arms[arm]["deploy_hack"]["ci95"] == pytest.approx(hw)
        firsts = [first_hack_step(read_rows(r.run_dir)) for r in done]
        assert arms[arm]["first_hack_step"]["mean"] == pytest.approx(mean_ci(firsts)[0])
    failed = sums[-1]
    assert failed["status"] == "failed" and failed["steps"] == 0 and math.isnan(failed["deploy_hack"])


def test_write_sweep_report_on_synthetic_runs(synth_sweep, tmp_path):
    root, runs = synth_sweep
    out = write_sweep_report(tmp_path / "sweep", runs, title="synthetic")
    assert set(out) == {"summary", "parquet", "compare"}
    t = pq.read_table(out["parquet"])
    assert t.num_rows == 6 * 12
    assert t.column_names[:4] == ["run", "arm", "seed", "status"]
    assert sorted(set(zip(t["arm"].to_pylist(), t["seed"].to_pylist()))) == [
        ("none", 1), ("none", 2), ("none", 3), ("route", 1), ("route", 2), ("route", 3)]
    # the stored rows are the run's own rows, unchanged
    one = t.filter(t["run"].to_numpy(zero_copy_only=False) == "route-seed2").drop_columns(["run", "arm", "seed", "status"])
    own = pq.read_table(runs[4].run_dir / "rows.parquet").replace_schema_metadata(None)
    assert repr(one.select(own.column_names).to_pylist()) == repr(own.to_pylist())  # repr: NaN == NaN
    md = out["summary"].read_text()
    assert "| none | 3 |" in md and "| route | 4 |" in md and "| route-seed4 | route | 4 | failed | 0 |" in md
    assert " ± " in md
    assert out["compare"].stat().st_size > 10_000


def test_board_lines_and_progress():
    now = 1000.0
    ps = [RunProgress("none-seed1", 10, 5, 0.25, 0.5, "running", started_at=900.0),
          RunProgress("route-seed1", 10, 10, 0.0, 1.0, "finished", started_at=800.0),
          RunProgress("route2-seed1", 10, 0, status="pending"),
          RunProgress("erase-seed1", 10, 3, 0.1, -0.2, "failed", started_at=950.0)]
    board = format_board(ps, now).splitlines()
    assert board[0].startswith("[" + "#" * 13 + "." * 17 + "] 18/40 ( 45%)")
    assert "running 1" in board[0] and "failed 1" in board[0] and "pending 1" in board[0]
    assert len(board) == 5
    # 5 of 10 steps in 100 s: 100 s left
    assert "step  5/10" in board[1] and "hack_s 0.250" in board[1] and "reward +0.500" in board[1]
    assert board[1].endswith("ETA 1m40s")
    assert board[2].endswith("ETA 0m00s") and board[3].endswith("ETA —") and "hack_s   —" in board[3]
    assert progress_bar(0, 3, width=3) == "[...] 0/3 (  0%)"
    with pytest.raises(ValueError, match="total"):
        progress_bar(0, 0)
    with pytest.raises(ValueError, match="status"):
        SweepRun("none", 1, "done")


# ---------------------------------------------------------------------------- real runs
SMOKE = ["--steps", "2", "--prompts-per-step", "2", "--eval-ablate-every", "0", "--v-hack-refresh-every", "0"]


@pytest.mark.long(6)  # minutes, on 2 busy cores
@pytest.mark.slow
def test_sweep_report_on_real_smoke_runs(tmp_path, tiny):
    """Two real smoke-driver runs (none and route, 2 steps each, each on the local Ray cluster the
    driver starts itself) aggregated into a sweep report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    runs = []
    for arm in ("none", "route"):
        work = tmp_path / arm
        work.mkdir()
        p = subprocess.run([sys.executable, "-m", "vgrout_ray.driver", "smoke", "--intervention", arm,
                            "--seed", "7", *SMOKE, "--out-dir", str(work / "out"), "--logs-dir", str(work / "logs"),
                            "--svd-cache", str(tiny.parent)],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        (d,) = sorted((work / "out" / "runs").iterdir())
        runs.append(SweepRun(arm, 7, "finished", d))
    out = write_sweep_report(tmp_path / "sweep", runs)
    t = pq.read_table(out["parquet"])
    assert t.num_rows == 4 and t["arm"].to_pylist() == ["none", "none", "route", "route"]
    assert t["step"].to_pylist() == [0, 1, 0, 1] and set(t["seed"].to_pylist()) == {7}
    md = out["summary"].read_text()
    for r in runs:
        dep = json.loads((r.run_dir / "per_mode_deploy.json").read_text())
        s = run_summary(r)
        assert s["steps"] == 2 and s["deploy_hack"] == dep["hack_deploy"] and s["train_solve"] == dep["solve_train"]
        assert f"| {r.name} | {r.arm} | 7 | finished | 2 |" in md
    assert out["compare"].stat().st_size > 10_000
    prog = [progress_of(r.run_dir, r.name, 2, "finished") for r in runs]
    assert all(p.steps_done == 2 for p in prog)
    assert "4/4 (100%)" in format_board(prog).splitlines()[0]
    # the board reads the run dir's last row
    last = read_rows(runs[1].run_dir)[-1]
    assert prog[1].reward == pytest.approx(last["rew_s"])
    # a run dir whose rows already carry sweep columns fails loud, naming the file
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(t, bad / "rows.parquet")
    with pytest.raises(ValueError, match="bad/rows.parquet: already has"):
        sweep_table([SweepRun("x", 1, "finished", bad)])
