"""Sweep aggregation over run dirs: the statistics, sweep.parquet, summary.md, compare.png and the
live board, with known answers over the synthetic runs the plot tests use (written through the
real RunTables). The same report over real runs is checked on the real sweep of
``test_sweep.py::test_small_sweep_survives_a_failed_run_and_resumes_it``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vgrout_ray.sweep.report import (RunProgress, SweepRun, first_hack_step, fmt_mean_ci, format_board, mean_ci,
                                     progress_bar, run_summary, summarize_arms, sweep_table, t95,
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


def test_rows_that_already_carry_sweep_columns_fail_loud_naming_the_file(tmp_path):
    """A run dir whose rows.parquet is a sweep table (sweep columns already there) is refused, with
    its path. (The report over real runs is checked on a real sweep: test_sweep.py's fault test.)"""
    d = write_run_dir(synth_run("none", 7, steps=3), tmp_path / "runs")
    t = sweep_table([SweepRun("none", 7, "finished", d)])
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(t, bad / "rows.parquet")
    with pytest.raises(ValueError, match="bad/rows.parquet: already has"):
        sweep_table([SweepRun("x", 1, "finished", bad)])
