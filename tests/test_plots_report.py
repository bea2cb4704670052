"""Dynamics plots and run reports on synthetic runs: 4 arms x 2 seeds (+ routing2), run dirs written
through RunTables / EvidenceWriter, the log through the real setup_logging + StepLogger."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from vgrout_ray.reporting import plots, run_report as report
from vgrout_ray.reporting.evidence import frac_rate
from tests.synthetic_telemetry import step_logger_for, synth_run, write_log, write_run_dir

STEPS = 30
# (intervention, refresh) -> the arm the plot must file it under
ARMS = {("none", 0): "vanilla", ("erase", 0): "static erasure", ("erase", 5): "online erasure",
        ("route", 0): "routing"}
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    runs, logs, run_dirs = {}, {}, {}
    for (iv, refr), arm in ARMS.items():
        for s in SEEDS:
            run = synth_run(iv, s, STEPS, refresh=refr)
            runs[(arm, s)] = run
            logs[(arm, s)] = write_log(run, root / "logs")
            run_dirs[(arm, s)] = write_run_dir(run, root / "runs", evidence=(arm, s) == ("routing", 1))
    r2 = synth_run("route2", 1, STEPS)
    runs[("routing2", 1)] = r2
    run_dirs[("routing2", 1)] = write_run_dir(r2, root / "runs")
    return dict(root=root, runs=runs, logs=logs, run_dirs=run_dirs)


def _rates(run, key):
    return np.array([frac_rate(r[key]) for r in run.rows])


def _assert_run_matches(parsed, run, arm):
    assert plots.classify(parsed) == arm
    assert parsed["seed"] == str(run.seed)
    np.testing.assert_array_equal(parsed["steps"], np.arange(STEPS))
    np.testing.assert_allclose(parsed["hack_s_train"], _rates(run, "hack_s"), equal_nan=True)
    np.testing.assert_allclose(parsed["gt_s_train"], _rates(run, "gt_s"), equal_nan=True)
    np.testing.assert_allclose(parsed["cos_pre_t"], [r["cos_pre_t"] for r in run.rows], rtol=1e-6)
    np.testing.assert_allclose(parsed["cos_pre_s"], [r["cos_pre_s"] for r in run.rows], rtol=1e-6)
    if arm in plots.ROUTING_ARMS:
        assert parsed["plotted"] == "ablated"
        np.testing.assert_allclose(parsed["hack_s"], _rates(run, "hack_abl"), equal_nan=True)
        np.testing.assert_allclose(parsed["gt_s"], _rates(run, "solve_abl"), equal_nan=True)
    else:
        assert parsed["plotted"] == "train"
    dep = np.array([r["hack_deploy"] for r in run.rows])
    np.testing.assert_allclose(parsed["hack_deploy"], dep, rtol=1e-6, equal_nan=True)


def test_log_is_the_step_logger_format(corpus):
    text = corpus["logs"][("vanilla", 1)].read_text().splitlines()
    run = corpus["runs"][("vanilla", 1)]
    sl = step_logger_for(run)
    assert any(ln.endswith("| INFO | " + sl.header()) for ln in text)
    assert any(ln.endswith("| INFO | " + sl.row(run.rows[3])) for ln in text)


def test_parse_run_matches_the_run(corpus):
    for (arm, s), d in corpus["run_dirs"].items():
        _assert_run_matches(plots.parse_run(d), corpus["runs"][(arm, s)], arm)


def test_refresh_from_the_config_old_key_or_the_preset(corpus, tmp_path):
    """The erasure facet needs v_hack's refresh period: the config's, a run dir's from before the
    v_hack_* rename, or the preset's default."""
    src = corpus["run_dirs"][("online erasure", 1)]
    d = tmp_path / src.name
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    assert plots.classify(plots.parse_run(d)) == "online erasure"
    cfg["vhack_refresh_every"] = cfg.pop("v_hack_refresh_every")
    cfg["vhack_refresh_every"] = 0
    (d / "config.json").write_text(json.dumps(cfg))
    assert plots.classify(plots.parse_run(d)) == "static erasure"
    del cfg["vhack_refresh_every"]
    (d / "config.json").write_text(json.dumps(cfg))
    assert plots.parse_run(d)["refr"] == 5  # the fast preset's default -> online
    assert plots.classify(plots.parse_run(d)) == "online erasure"


def _panel_lines(ax):
    gids = [ln.get_gid() or "" for ln in ax.get_lines()]
    return ([g for g in gids if g.startswith("seed:")], [g for g in gids if g.startswith("mean:")],
            [g for g in gids if g == "onset"])


def test_plot_dynamics_structure(corpus, tmp_path):
    runs = [plots.parse_run(d) for d in corpus["run_dirs"].values()]
    out = tmp_path / "dyn.png"
    fig = plots.plot_dynamics(runs, out)
    assert out.exists() and out.stat().st_size > 10_000
    axes = fig.axes
    arms = ["vanilla", "static erasure", "online erasure", "routing", "routing2"]
    assert len(axes) == 2 * len(arms)
    grid = np.array(axes).reshape(2, len(arms))
    for col, arm in enumerate(arms):
        title = grid[0][col].get_title()
        n = 1 if arm == "routing2" else 2
        assert title.startswith(arm) and f"n={n} seed" in title
        if arm in plots.ROUTING_ARMS:
            assert "ablated slice" in title
        for row, series in ((0, ("hack_s", "gt_s")), (1, ("cos_pre_t", "cos_pre_s"))):
            seeds, means, onset = _panel_lines(grid[row][col])
            assert len(seeds) == n * len(series) and len(means) == len(series)  # seeds + mean per series
            assert {m.split(":")[1] for m in means} == set(series)
            assert len(onset) == 1
    assert grid[0][0].get_ylabel() == "student rate" and grid[1][0].get_ylabel() == "cos(grad, direction)"
    # route2's cos is against its own gate direction, every other arm's against v_hack
    assert [grid[1][c].get_title() for c in range(len(arms))] == ["cos vs v_hack"] * 4 + ["cos vs v_grad"]
    assert grid[1][2].get_xlabel() == "optimizer step"
    assert "Training dynamics" in fig._suptitle.get_text()
    # the routing panel's bold hack line is the seed mean of the EMA'd ablated series
    mean = next(ln for ln in grid[0][3].get_lines() if ln.get_gid() == "mean:hack_s")
    rs = [corpus["runs"][("routing", s)] for s in SEEDS]
    want = np.nanmean([plots._ema(_rates(r, "hack_abl")) for r in rs], axis=0)
    np.testing.assert_allclose(mean.get_ydata(), want, equal_nan=True)
    # the deploy evals (quarantine zeroed) are drawn as markers: at the eval steps, the seed mean
    for col, arm in ((0, "vanilla"), (3, "routing")):
        for key in ("hack_deploy", "solve_deploy"):
            line = next(ln for ln in grid[0][col].get_lines() if ln.get_gid() == f"deploy:{key}")
            dep = np.array([[r.get(key, np.nan) for r in corpus["runs"][(arm, s)].rows] for s in SEEDS], float)
            steps = np.flatnonzero(np.isfinite(dep).any(axis=0))
            assert 0 < len(steps) < STEPS
            np.testing.assert_array_equal(line.get_xdata(), steps)
            np.testing.assert_allclose(line.get_ydata(), np.nanmean(dep[:, steps], axis=0))
    # onset = mean first step with a hack (raw series)
    onset = next(ln for ln in grid[0][0].get_lines() if ln.get_gid() == "onset")
    firsts = [int(np.flatnonzero(_rates(corpus["runs"][("vanilla", s)], "hack_s") > 0)[0]) for s in SEEDS]
    assert onset.get_xdata()[0] == pytest.approx(np.mean(firsts))


def test_hack_overlay_structure(corpus, tmp_path):
    runs = [plots.parse_run(d) for d in corpus["run_dirs"].values()]
    fig = plots.plot_hack_overlay(runs, tmp_path / "o.png")
    (ax,) = fig.axes
    gids = [ln.get_gid() for ln in ax.get_lines()]
    for arm in ("vanilla", "static erasure", "online erasure", "routing"):
        assert sum(g == f"seed:{arm}:{s}" for g in gids for s in ("1", "2")) == 2
        assert gids.count(f"mean:{arm}") == 1
    assert {t.get_text() for t in ax.texts} >= {"vanilla", "routing", "routing2"}
    assert ax.get_ylabel() == "student hack rate" and "by arm" in ax.get_title()


def test_cli_dynamics_from_run_dirs(corpus, tmp_path):
    out = tmp_path / "d" / "dyn.png"
    one = next(iter(corpus["run_dirs"].values()))
    rc = plots.main(["dynamics", str(corpus["root"] / "runs"), str(one), "--out", str(out)])
    assert rc == 0 and out.exists() and (tmp_path / "d" / "dyn_hack_overlay.png").exists()
    runs = plots.gather([str(corpus["root"] / "runs"), str(one)])
    assert len(runs) == len(corpus["run_dirs"])  # each run counted once though reached twice
    with pytest.raises(SystemExit):
        plots.main(["dynamics", str(tmp_path / "empty"), "--out", str(out)])
    with pytest.raises(SystemExit, match="not files"):  # a log is for people; plots read the Parquet rows
        plots.main(["dynamics", str(next(iter(corpus["logs"].values()))), "--out", str(out)])


def test_report_full_run(corpus):
    d = corpus["run_dirs"][("routing", 1)]
    run = corpus["runs"][("routing", 1)]
    assert report.main([str(d)]) == 0
    md = (d / "report.md").read_text()
    assert md.startswith(f"# Run report: {d.name}")
    assert "## BLUF" in md and "HACK_RATE" in md and "| routing " in md
    s = report.summarize_rows(run.rows)
    hs = sum(r["hack_s"][0] for r in run.rows) / sum(r["hack_s"][1] for r in run.rows)
    assert s["hack_s"] == pytest.approx(hs) and f"HACK_STUDENT={hs:.3f}" in md
    dep = run.per_mode_deploy
    assert f"deploy (δS_hack zeroed) hack {dep['hack_deploy']:.3f}" in md
    # per-mode train vs deploy table
    assert "## Final eval per mode: train vs deploy" in md
    assert "| mode " in md and "deploy_hack" in md and "IN-dist" in md and "held-out" in md
    for m, v in dep["by_mode"].items():
        assert any(ln.startswith(f"| {m} ") and f"{v['deploy_hack']:.3f}".rstrip("0").rstrip(".") in ln
                   for ln in md.splitlines())
    # substrate table from rollouts.parquet
    assert "first_step" in md and "student_rollouts" in md
    flat = [x for recs in run.rollouts for x in recs]
    first_rt = min(x["step"] for x in flat if x["exploited"] and x["env_mode"] == "run_tests")
    row = next(ln for ln in md.split("## Which loopholes")[1].splitlines() if ln.startswith("| run_tests"))
    assert row.rstrip(" |").endswith(str(first_rt))
    # figures: dynamics generated for this run, evidence embedded
    assert (d / "dynamics.png").exists() and "![dynamics](dynamics.png)" in md
    for name in ("training_curve.png", "reward_components.png", "before_after_summary.png"):
        assert f"(evidence/{name})" in md and (d / "evidence" / name).exists()
    assert "## Per-step rows" in md and md.count("\n| ") > STEPS


def test_report_killed_run(corpus, tmp_path):
    src = corpus["run_dirs"][("vanilla", 2)]
    d = tmp_path / src.name
    shutil.copytree(src, d)
    (d / "per_mode_deploy.json").unlink()
    md = report.build_report(d, plots=False)
    assert "## BLUF" in md and "did not reach its final eval" in md and "_not available_" in md
    assert "deploy_hack" not in md.split("## Final eval per mode")[0]
    assert report.main([str(tmp_path / "nope")]) == 1


def test_report_config_drives_arm(corpus):
    d = corpus["run_dirs"][("online erasure", 1)]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["intervention"] == "erase" and cfg["v_hack_refresh_every"] == 5 and cfg["preset"] == "fast"
    md = report.build_report(d, plots=False)
    assert "| projected " in md
    assert not math.isnan(report.summarize_rows(corpus["runs"][("online erasure", 1)].rows)["pass_rate"])
