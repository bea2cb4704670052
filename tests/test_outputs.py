"""Outputs that outlive a Ray job: under ``ray job submit --working-dir .`` the driver runs in Ray's
per-job copy of the working dir, so relative output paths are resolved against ``VGROUT_HOME``
(else ``~/vgrout``) with a warning, and the run's last lines say where everything is."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from vgrout_ray.config import ConfigError, parse_config
from vgrout_ray.run.outputs import persistent_root, ray_job_workdir, resolve_outputs, where_everything_is

REPO = Path(__file__).resolve().parents[1]
JOB_CWD = "/tmp/ray/session_2026/runtime_resources/working_dir_files/_ray_pkg_abc"


def test_outside_a_ray_job_nothing_moves(tmp_path):
    cfg = parse_config(["smoke"])
    assert ray_job_workdir({}, tmp_path) is None
    assert resolve_outputs(cfg, {"VGROUT_HOME": str(tmp_path)}, tmp_path) == []
    assert cfg.out_dir == Path("out")


def test_relative_outputs_of_a_job_go_under_vgrout_home(tmp_path):
    cfg = parse_config(["smoke", "--svd-cache", "/abs/svd", "--problems", "data/p.jsonl"])
    env = {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "VGROUT_HOME": str(tmp_path)}
    warn = resolve_outputs(cfg, env, "/somewhere")
    assert cfg.out_dir == tmp_path / "out" and cfg.logs_dir == tmp_path / "logs"
    assert cfg.svd_cache == Path("/abs/svd")  # absolute: left alone
    assert cfg.problems == "data/p.jsonl"  # an input: shipped in the working dir
    assert len(warn) == 1 and "OUTPUT PATHS" in warn[0] and f"--out-dir out -> {tmp_path}/out" in warn[0]
    assert f"VGROUT_HOME={tmp_path}" in warn[0]


def test_the_working_dir_copy_alone_is_enough_and_home_is_the_default():
    assert "per-job copy" in ray_job_workdir({}, JOB_CWD)
    cfg = parse_config(["smoke"])
    warn = resolve_outputs(cfg, {"HOME": "/home/u"}, JOB_CWD)
    assert cfg.out_dir == Path("/home/u/vgrout/out") and "VGROUT_HOME is not set" in warn[0]
    with pytest.raises(ConfigError, match="VGROUT_HOME: must be an absolute path"):
        persistent_root({"VGROUT_HOME": "rel/dir"})


def test_a_sweeps_runs_resolve_the_same_way(tmp_path, monkeypatch):
    from vgrout_ray.sweep.runner import run_config

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    monkeypatch.setenv("VGROUT_HOME", str(tmp_path))
    cfg = run_config("smoke", "none", 1, ["--svd-cache", "/abs/svd"])
    assert cfg.out_dir == tmp_path / "out" and cfg.logs_dir == tmp_path / "logs"
    assert cfg.svd_cache == Path("/abs/svd")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    monkeypatch.chdir(tmp_path)
    assert run_config("smoke", "none", 1, []).out_dir == tmp_path / "out"  # a local run: the cwd, as before
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path / "x")
    assert run_config("smoke", "none", 1, []).out_dir == tmp_path / "x" / "out"


def test_closing_lines_name_every_output(tmp_path):
    cfg = parse_config(["smoke", "--out-dir", str(tmp_path / "o"), "--svd-cache", str(tmp_path / "s")])
    run = tmp_path / "o" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "train.safetensors").write_bytes(b"")
    text = "\n".join(where_everything_is(cfg, run, tmp_path / "l.log"))
    assert f"run dir:     {run}" in text and "train.safetensors" in text and f"{run}/resume" in text
    assert f"SVD cache:   {tmp_path / 's'}" in text and f"v_hack:      {tmp_path / 'o' / 'vhack'}" in text
    assert "result:" not in text  # no final eval yet
    rec = {"intervention": "route", "held_out": True, "eval_prompt_ids": [5, 6], "eval_n": 16,
           "hack_deploy": 0.5, "solve_deploy": 0.25, "pre": {"hack": 0.0625, "solve": 0.375}}
    (run / "per_mode_deploy.json").write_text(json.dumps(rec))
    route = parse_config(["smoke", "--intervention", "route", "--out-dir", str(tmp_path / "o")])
    last = where_everything_is(route, run, tmp_path / "l.log")[-1]
    assert last == ("  result:      deploy eval (2 held-out prompts, n=16, δS_hack zeroed), before RL -> final: "
                    "hack 0.062 -> 0.500, solve 0.375 -> 0.250"), last
    (run / "per_mode_deploy.json").write_text(json.dumps({**rec, "intervention": "none", "held_out": False,
                                                          "pre": None}))
    vanilla = parse_config(["smoke", "--intervention", "none", "--out-dir", str(tmp_path / "o")])
    last = where_everything_is(vanilla, run, tmp_path / "l.log")[-1]
    assert last.endswith("(training prompts, not held out, n=16), before RL -> final: hack 0.500, solve 0.250")


@pytest.fixture(scope="module")
def head2():
    """A 2-CPU head with the jobs dashboard; yields (cluster, RAY_TMPDIR whose ray/ holds its file)."""
    from .raycli import jobs_head

    with jobs_head("vg23o") as head:
        yield head


def _submit(c, home: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run(["ray", "job", "submit", "--address", c.dashboard_url, "--working-dir", ".",
                        "--runtime-env-json", json.dumps({"env_vars": {"VGROUT_HOME": str(home)}}), "--",
                        "python", "-m", "vgrout_ray.driver", "smoke", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=c.client_env(PYTHONUNBUFFERED="1"))
    return p, time.monotonic() - t0


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_with_default_paths_keeps_outputs_out_of_rays_copy(head2, tmp_path):
    """A real `ray job submit --working-dir .` of a smoke run with the default (relative) paths on a
    2-CPU head: the run cannot fit (exit 2, fast), but its log and run dir already exist, and they
    must be under VGROUT_HOME, not in Ray's per-job working dir copy; the last lines say where."""
    c, root = head2
    home = tmp_path / "home"
    p, took = _submit(c, home, "--steps", "2")
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "cannot hold this run's actors" in out, out[-3000:]
    assert "OUTPUT PATHS" in out and f"VGROUT_HOME={home}" in out, out[-3000:]
    logs = list((home / "logs").glob("*.log"))
    runs = list((home / "out" / "runs").iterdir())
    assert len(logs) == 1 and len(runs) == 1, out[-3000:]
    assert json.loads((runs[0] / "config.json").read_text())["out_dir"] == str(home / "out")
    tail = out[out.rindex("outputs of this run:"):]
    assert f"run dir:     {runs[0]}" in tail and f"log:         {logs[0]}" in tail
    copies = [d for d in Path(root).rglob("working_dir_files") if d.is_dir()]
    assert copies, "Ray's per-job working dir copy not found under the head's temp dir"
    for d in copies:
        assert not list(d.glob("*/out")) and not list(d.glob("*/logs")), list(d.iterdir())
    print(f"ray job submit ended (exit 2 as expected) in {took:.1f} s; outputs in {home}")


@pytest.mark.ray
@pytest.mark.slow
def test_on_an_autoscaling_cluster_the_run_waits_with_the_pending_report(head2, tmp_path):
    """--cluster.autoscales: the same run that exits 2 above starts, and its actor that finds no room
    waits for new nodes, reported with its resources; no node comes here, so it gives up (exit 4)."""
    c, _ = head2
    p, took = _submit(c, tmp_path / "home", "--steps", "2", "--cluster.autoscales",
                      "--cluster.pending-warn-s", "3", "--cluster.pending-fail-s", "8")
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "cluster.autoscales: the nodes up now cannot hold the run; starting anyway" in out, out[-3000:]
    assert "has waited" in out and "for resources {CPU: 1" in out, out[-3000:]
    assert "giving up" in out and "outputs of this run:" in out, out[-3000:]
    print(f"autoscaling run waited and gave up after {took:.1f} s")
