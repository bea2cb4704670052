"""Telemetry: step table (seed 000 spec), logging sinks, step metrics, Parquet tables
(including a real kill -9 of a writer), evidence files and optional sinks."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from loguru import logger

from vgrout_ray.env.modes import MODE_CODE
from vgrout_ray.reporting import evidence as E
from vgrout_ray.reporting import sinks as S
from vgrout_ray.reporting.metrics import METRIC_DOCS, doc_for, quantiles, step_metrics
from vgrout_ray.reporting.parquet import (PARTS_DIR, ROLLOUT_SCHEMA, ROW_SCHEMA, RunTables, read_rollouts,
                                          read_rows, schema_markdown)
from tests.synthetic_telemetry import synth_run
from tests.helpers import wait_until
from vgrout_ray.reporting.table import StepLogger, format_cell, rows_markdown, setup_logging

REPO = Path(__file__).resolve().parents[1]

# Seed 000's column spec, written out independently of the implementation:
# (row key, width, header, format). cos_pre_s / cos_pre_t are the two columns docs/design.md#per-step-table adds.
SEED_HEAD = [("step", 4, "step", "d"), ("ref_eq", 6, "ref_eq", ".2f"), ("rew", 6, "rew", "+.2f"),
             ("rew_s", 6, "rew_s↑", "+.2f"), ("gt_s", 6, "gt_s↑", "frac"), ("gt_t", 6, "gt_t", "frac"),
             ("hack_s", 7, "hack_s?", "frac"), ("hack_t", 7, "hack_t", "frac"),
             ("hack_deploy", 7, "hk_dep", "+.2f"), ("solve_deploy", 7, "slv_dep", "+.2f")]
SEED_MID = [("lp_s", 6, "lp_s↓", "+.2f"), ("lp_t", 6, "lp_t↑", "+.2f"), ("loss", 7, "loss", "+.2f"),
            ("gn", 7, "gn", ".1e"), ("lr", 7, "lr", ".1e"),
            ("cos_pre_s", 6, "cos_pre_s", "+.2f"), ("cos_pre_t", 6, "cos_pre_t", "+.2f"),
            ("auroc", 6, "auroc", ".2f"), ("cos", 6, "cos", "+.2f"), ("q_egy", 6, "qmass", ".2f"),
            ("keep", 6, "keep", ".2f"), ("resid", 6, "resid", ".2f"), ("rout", 6, "rout", ".2f"),
            (None, 6, "tlo", "+.2f"), ("tau", 6, "thi", "+.2f"), ("stale", 5, "stale", "d")]
SEED_ABL = [("hack_abl", 6, "hk_abl", "frac"), ("solve_abl", 6, "slv_abl", "frac")]


def expected_spec(modes, show_ablate):
    mode_cols = [(f"hk_{MODE_CODE[m]}", 5, f"hk_{MODE_CODE[m]}", "d") for m in modes] if len(modes) > 1 else []
    return SEED_HEAD + mode_cols + SEED_MID + (SEED_ABL if show_ablate else [])


def a_row(**over):
    nan = float("nan")
    row = dict(step=7, ref_eq=0.4375, rew=1.234, rew_s=0.75, gt_s=(3, 24), gt_t=(1, 8), hack_s=(5, 24),
               hack_t=(6, 8), hack_deploy=nan, solve_deploy=None, hk_rt=2, hk_se=3, lp_s=-0.512, lp_t=-1.26,
               loss=-0.0123, gn=0.00123, lr=3e-3, cos_pre_s=0.123, cos_pre_t=-0.2, auroc=nan, cos=nan,
               q_egy=0.25, keep=nan, resid=0.1, rout=nan, tau=nan, stale=4, hack_abl=(1, 6),
               solve_abl=(0, 6))
    row.update(over)
    return row


# ------------------------------------------------------------------- table
@pytest.mark.parametrize("modes,show_ablate", [(["run_tests"], False), (["run_tests", "sentinel"], True),
                                               (list(MODE_CODE), False)])
def test_header_matches_seed_spec(modes, show_ablate):
    sl = StepLogger("routing2", modes, MODE_CODE, show_ablate=show_ablate)
    spec = expected_spec(modes, show_ablate)
    assert [(c.key, c.width, c.header, c.fmt) for c in sl.columns] == spec
    header = sl.header()
    assert header.split() == [h for _, _, h, _ in spec]
    # every field is right-aligned in max(width, len(header)) chars, one space apart
    expect = " ".join(f"{h:>{max(w, len(h))}}" for _, w, h, _ in spec)
    assert header == expect


def test_row_widths_and_formats():
    sl = StepLogger("routing2", ["run_tests", "sentinel"], MODE_CODE, show_ablate=True)
    line = sl.row(a_row())
    cells = line.split()
    assert len(cells) == len(sl.columns)
    assert len(line) == len(sl.header())
    got = dict(zip([c.header for c in sl.columns], cells))
    assert got["step"] == "7" and got["ref_eq"] == "0.44" and got["rew"] == "+1.23"
    assert got["gt_s↑"] == "3/24" and got["hack_s?"] == "5/24" and got["hack_t"] == "6/8"
    assert got["hk_dep"] == "nan" and got["slv_dep"] == "nan"  # NaN and None
    assert got["hk_rt"] == "2" and got["hk_se"] == "3"
    assert got["gn"] == "1.2e-03" and got["lr"] == "3.0e-03" and got["loss"] == "-0.01"
    assert got["cos_pre_s"] == "+0.12" and got["cos_pre_t"] == "-0.20"
    assert got["qmass"] == "0.25"  # read from q_egy
    assert got["auroc"] == "nan" and got["stale"] == "4"
    assert got["hk_abl"] == "1/6" and got["slv_abl"] == "0/6"
    # each cell sits right-aligned in its field
    pos = 0
    for c in sl.columns:
        w = c.field_width
        field = line[pos:pos + w]
        assert field == field.rjust(w) and field.strip() != ""
        pos += w + 1


def test_display_names_and_missing_keys():
    sl = StepLogger("vanilla", ["run_tests"], MODE_CODE)
    r = a_row(hack_deploy=0.25, solve_deploy=0.5, q_egy=0.9, tau=0.125)
    got = dict(zip(sl.header().split(), sl.row(r).split()))
    assert got["hk_dep"] == "+0.25" and got["slv_dep"] == "+0.50"
    assert got["qmass"] == "0.90" and got["thi"] == "+0.12" and got["tlo"] == "nan"  # the row's q_egy / tau
    got = dict(zip(sl.header().split(), sl.row({"step": 1}).split()))
    assert got["step"] == "1" and set(v for k, v in got.items() if k != "step") == {"nan"}


def test_format_cell_edge_cases():
    assert format_cell(None, ".2f") == "nan"
    assert format_cell(float("nan"), "d") == "nan"
    assert format_cell(3.0, "d") == "3"
    assert format_cell(np.float32(0.5), "+.2f") == "+0.50"
    assert format_cell(np.int64(4), "d") == "4"
    assert format_cell((0, 0), "frac") == "0/0"
    assert format_cell(True, "d") == "1"
    assert format_cell(float("inf"), "+.2f") == "+inf"


def test_legend_decodes_present_columns_only():
    one = StepLogger("vanilla", ["run_tests"], MODE_CODE)
    many = StepLogger("routing", ["run_tests", "file_marker"], MODE_CODE, show_ablate=True)
    for sl in (one, many):
        lines = sl.legend().splitlines()[1:]
        decoded = [ln.split(" = ", 1)[0].strip() for ln in lines]
        assert decoded == [c.header for c in sl.columns]
        # no legend line may look like a table header to the log parser
        assert not any("ref_eq" in ln and "hack_s" in ln for ln in sl.legend().splitlines())
    assert "hk_rt" not in one.legend() and "hk_abl" not in one.legend()
    assert "hk_fm" in many.legend() and "slv_abl" in many.legend()


def test_rows_markdown_renders_fractions():
    md = rows_markdown([a_row(), a_row(step=8)], drop=("gen",))
    assert "5/24" in md and md.splitlines()[0].startswith("|")
    assert len(md.splitlines()) == 4


def test_setup_logging_sinks(tmp_path, capsys):
    path = setup_logging("smoke_vanilla_seed1", tmp_path / "logs")
    try:
        assert re.fullmatch(r"\d{8}T\d{6}_smoke_vanilla_seed1\.log", path.name)
        logger.info("hello table")
        logger.debug("only in the file")
        logger.warning("careful")
    finally:
        logger.remove()
    out = capsys.readouterr().out
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "I hello table" in plain and "W careful" in plain and "only in the file" not in plain
    lines = path.read_text().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d \| INFO \| hello table", lines[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d \| DEBUG \| only in the file", lines[1])


# ----------------------------------------------------------------- metrics
def test_quantiles_match_numpy_linear():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=37).tolist()
    q = quantiles(xs)
    assert list(q) == ["p00", "p05", "p25", "p50", "p75", "p95", "p100"]
    for k, p in zip(q, (0, 5, 25, 50, 75, 95, 100)):
        assert q[k] == pytest.approx(np.percentile(xs, p, method="linear"))
    assert all(math.isnan(v) for v in quantiles([]).values())


def _rec(reward_parts, **kw):
    compiles, passed = reward_parts
    base = dict(step=3, env_mode="run_tests", can_compile=compiles, passed=passed, format_ok=compiles,
                gt_correct=passed and not kw.get("exploited", False), exploited=False, hacked=False,
                reward=0.5 * compiles + 3.0 * passed, comp_len=100, prompt_len=50, finished=True,
                is_ablated=False, error=None)
    base.update(kw)
    return base


def test_step_metrics_rewards_lengths_and_modes():
    recs = [_rec((True, True)), _rec((True, False), comp_len=512, finished=False),
            _rec((False, False), comp_len=30), _rec((True, True), exploited=True, env_mode="sentinel",
                                                   mechanism="sentinel", comp_len=200),
            _rec((False, False), error="grading error: boom", reward=0.0, comp_len=40)]
    m = step_metrics(recs, [r["reward"] for r in recs] + [3.5, 3.5], group_rewards=[[0.5, 0.5], [0, 3.5, 3.5]],
                     gen_s=10.0, grade_s=2.0)
    rewards = [3.5, 0.5, 0.0, 3.5, 0.0, 3.5, 3.5]
    assert m["reward_n"] == 7 and m["reward_mean"] == pytest.approx(np.mean(rewards))
    assert m["reward_std"] == pytest.approx(np.std(rewards))
    assert m["reward_p50"] == pytest.approx(np.percentile(rewards, 50))
    assert m["fmt_reward_mean"] == pytest.approx(0.5 * 3 / 5) and m["corr_reward_mean"] == pytest.approx(3.0 * 2 / 5)
    assert m["reward_recon_err"] == 0.0
    assert m["n_groups"] == 2 and m["n_zero_std_groups"] == 1 and m["frac_zero_std_groups"] == 0.5
    assert m["len_mean"] == pytest.approx(np.mean([100, 512, 30, 200, 40]))
    assert (m["len_min"], m["len_max"]) == (30, 512)
    assert m["len_term_mean"] == pytest.approx(np.mean([100, 30, 200, 40])) and m["len_term_max"] == 200
    assert m["clipped_frac"] == pytest.approx(0.2)
    assert m["exploit_rate"] == pytest.approx(0.2) and m["solve_rate"] == pytest.approx(0.2)
    assert m["mode_n_rt"] == 4 and m["mode_n_se"] == 1 and m["mode_exploit_se"] == 1 and m["mode_exploit_rt"] == 0
    assert m["tokens_per_s"] == pytest.approx(882 / 10) and m["rollouts_per_s"] == pytest.approx(0.5)
    assert m["gradings_per_s"] == pytest.approx(2.5)
    assert m["grad_errors"] == 1
    # the learner's read-outs are its own columns, never recomputed here
    assert not {"kl", "clip_low", "clip_high", "clip_region", "grad_norm", "lr"} & set(m)
    for k in m:
        assert doc_for(k), f"{k} is not documented in METRIC_DOCS"


def test_step_metrics_empty_and_reconstruction_error():
    m = step_metrics([])
    assert m["n_rollouts"] == 0 and math.isnan(m["reward_mean"]) and math.isnan(m["clipped_frac"])
    m = step_metrics([_rec((True, False), reward=3.0)])
    assert m["reward_recon_err"] == pytest.approx(2.5)
    # no finished flag: max_new decides
    m = step_metrics([{"reward": 0.5, "comp_len": 64}, {"reward": 0.5, "comp_len": 10}], max_new=64)
    assert m["clipped_frac"] == 0.5


def test_metric_docs_cover_patterns():
    assert "reward_p05" in METRIC_DOCS and "fmt_reward_mean" in METRIC_DOCS and "grad_errors" in METRIC_DOCS
    assert doc_for("mode_exploit_fm") and doc_for("time_gen") is None and doc_for("nonsense") is None


# ----------------------------------------------------------------- parquet
@pytest.fixture(scope="module")
def synth():
    return synth_run("route2", seed=3, steps=12, eval_every=4)


def _same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == pytest.approx(b, rel=1e-12, abs=1e-15)
    return a == b


def test_parquet_schema_and_roundtrip(tmp_path, synth):
    with RunTables(tmp_path) as t:
        for row, recs in zip(synth.rows, synth.rollouts):
            t.append_step(row, recs)
    sch = pq.read_schema(tmp_path / "rows.parquet")
    for f in ROW_SCHEMA:
        assert sch.field(f.name).type == f.type, f.name
    assert sch.field("hack_s_n").type == pa.int64() and sch.field("hack_s_d").type == pa.int64()
    assert "hack_s" not in sch.names and sch.field("refr").type == pa.string()
    assert pq.read_schema(tmp_path / "rollouts.parquet").equals(ROLLOUT_SCHEMA, check_metadata=False)
    assert pq.ParquetFile(tmp_path / "rollouts.parquet").num_row_groups == len(synth.rows)  # one per step
    rows = read_rows(tmp_path)
    assert len(rows) == len(synth.rows)
    for want, got in zip(synth.rows, rows):
        for k, v in want.items():
            assert _same(v, got[k]), (k, v, got[k])
    assert rows[0]["hk_eq"] is None  # declared but not in this run
    recs = read_rollouts(tmp_path)
    flat = [r for step in synth.rollouts for r in step]
    assert len(recs) == len(flat)
    for want, got in zip(flat, recs):
        for k, v in want.items():
            assert _same(v, got[k]), (k, v, got[k])


def test_parquet_extras_and_coercion(tmp_path):
    with RunTables(tmp_path) as t:
        t.append_step({"step": 0, "N": 8.0, "custom_int": 3, "custom_str": "a", "custom_frac": (1, 2),
                       "custom_flag": True, "hack_s": (1, 4), "lp_s": None, "stale": float("nan")},
                      [{"step": 0, "reward": 0.5, "problem_id": 9001, "env_mode": "run_tests", "new_field": [1, 2]}])
        t.append_step({"step": 1, "N": 8, "custom_int": 4.5, "custom_str": None, "hack_s": (0, 4)})
    rows = read_rows(tmp_path)
    assert rows[0]["N"] == 8 and rows[0]["custom_frac"] == (1, 2) and rows[0]["custom_flag"] is True
    assert rows[1]["custom_int"] == 4.5 and rows[0]["custom_int"] == 3.0  # promoted to float64
    assert rows[0]["lp_s"] is None and math.isnan(rows[0]["stale"]) and rows[1]["custom_frac"] is None
    r = read_rollouts(tmp_path)[0]
    assert r["problem_id"] == "9001" and r["new_field"] == [1, 2] and r["text"] is None


def test_truncate_resume_and_ordering(tmp_path, synth):
    t = RunTables(tmp_path, compact_every=3)
    for row, recs in zip(synth.rows, synth.rollouts):
        t.append_step(row, recs)
    # no close(): reopen as a resumed run would
    t2 = RunTables(tmp_path)
    assert t2.last_step == len(synth.rows) - 1
    assert not list((tmp_path / PARTS_DIR).glob("*.parquet"))  # reopening folds the parts in
    t2.truncate_to(5)
    assert [r["step"] for r in read_rows(tmp_path)] == list(range(6))
    assert {r["step"] for r in read_rollouts(tmp_path)} == set(range(6))
    with pytest.raises(ValueError):
        t2.append_step(synth.rows[3], synth.rollouts[3])
    for row, recs in zip(synth.rows[6:], synth.rollouts[6:]):
        t2.append_step(row, recs)
    t2.close()
    steps = [r["step"] for r in read_rollouts(tmp_path)]
    assert steps == sorted(steps) and len(steps) == sum(len(x) for x in synth.rollouts)


_KILL_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from vgrout_ray.reporting.parquet import RunTables
    from tests.synthetic_telemetry import synth_run
    run = synth_run("none", seed=5, steps=8)
    t = RunTables(sys.argv[1], compact_every=3)
    step = 0
    while True:  # keep writing (kill lands anywhere: part write, row write, compaction)
        i = step % len(run.rows)
        row = dict(run.rows[i], step=step)
        recs = [dict(r, step=step) for r in run.rollouts[i]]
        t.append_step(row, recs)
        print(step, flush=True)
        step += 1
""")


@pytest.mark.parametrize("delay", [0.05, 0.35, 0.8])
def test_sigkill_leaves_readable_complete_tables(tmp_path, delay):
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD.format(repo=str(REPO)))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE, text=True)
    reported = -1
    first = proc.stdout.readline()  # wait until imports are done and one step is on disk
    assert first.strip() == "0", first
    reported = 0
    deadline = time.monotonic() + delay
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read() or ""
    done = [int(x) for x in rest.split()]
    reported = max([reported] + done)
    assert proc.returncode == -signal.SIGKILL

    # files are readable with plain pyarrow, no helper needed
    table = pq.read_table(run_dir / "rows.parquet")
    steps = table.column("step").to_pylist()
    last = steps[-1]
    assert steps == list(range(last + 1)) and last >= reported
    recs = read_rollouts(run_dir)
    per_step = {}
    for r in recs:
        per_step[r["step"]] = per_step.get(r["step"], 0) + 1
    # every committed step has all 24 of its rollouts; at most one uncommitted step beyond
    assert all(per_step.get(s) == 24 for s in range(last + 1)), per_step
    assert set(per_step) <= set(range(last + 2))
    for p in run_dir.glob("rollouts.parts/*.parquet"):
        pq.read_table(p)
    if (run_dir / "rollouts.parquet").exists():
        pq.read_table(run_dir / "rollouts.parquet")
    # resuming: reopen, drop anything past the last committed row, continue
    t = RunTables(run_dir)
    t.truncate_to(t.last_step)
    assert {r["step"] for r in read_rollouts(run_dir)} == set(range(last + 1))
    assert not list(run_dir.glob(".*.tmp-*"))


def test_schema_doc_lists_every_column():
    md = schema_markdown()
    for f in ROW_SCHEMA:
        name = f.name
        for pat, rep in (("hk_", "hk_<code>"), ("mode_n_", "mode_n_<code>"), ("mode_exploit_", "mode_exploit_<code>"),
                         ("mode_solve_", "mode_solve_<code>")):
            if name.startswith(pat):
                name = rep
        name = re.sub(r"_p\d\d\d?$", "_p00", name)
        name = re.sub(r"_(n|d)$", "", name) if name[:-2] in md and name.endswith(("_n", "_d")) else name
        assert name in md, name
    for f in ROLLOUT_SCHEMA:
        assert f"`{f.name}`" in md
    text = (REPO / "docs" / "outputs.md").read_text()
    assert schema_markdown().strip() in text, "docs/outputs.md schemas out of date: run python tools/gen_docs.py"


# ----------------------------------------------------------------- evidence
def test_evidence_files(tmp_path, synth):
    ev = E.EvidenceWriter(tmp_path, modes=synth.modes, title="synthetic route2")
    try:
        for k in range(len(synth.rows)):
            ev.update(synth.rows[: k + 1], [e for e in synth.evals if e["step"] <= k], synth.rollouts[k])
        payload = ev.finalize(synth.pre_eval, synth.final_evals)
    finally:
        ev.close()
    assert ev.errors == 0
    for name in E.FILES:
        p = tmp_path / "evidence" / name
        assert p.exists() and p.stat().st_size > 0, name
    for name in E.FILES:
        if name.endswith(".png"):
            assert (tmp_path / "evidence" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import csv

    with open(tmp_path / "evidence" / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(synth.rows)
    for col in ("step", "loss", "reward", "reward_std", "kl", "grad_norm", "learning_rate", "wall_time_s",
                "hack_s", "gt_s"):
        assert col in rows[0]
    assert float(rows[-1]["wall_time_s"]) == pytest.approx(sum(r["sec"] for r in synth.rows), rel=1e-4)
    with open(tmp_path / "evidence" / "reward_components.csv") as f:
        comp = list(csv.DictReader(f))
    assert {f"exploit_rate_{m}" for m in synth.modes} <= set(comp[0])
    r = synth.rows[-1]
    assert float(comp[-1]["exploit_rate_run_tests"]) == pytest.approx(r["mode_exploit_rt"] / r["mode_n_rt"], rel=1e-4)
    with open(tmp_path / "evidence" / "checkpoint_evals.csv") as f:
        cp = list(csv.DictReader(f))
    assert [int(x["step"]) for x in cp] == [e["step"] for e in synth.evals]
    data = json.loads((tmp_path / "evidence" / "before_after_metrics.json").read_text())  # strict JSON
    assert set(data) >= {"pre", "final_train", "final_deploy", "delta_deploy_vs_pre", "by_mode"}
    assert data["final_deploy"]["hack"] == pytest.approx(synth.final_evals[1]["hack"])
    assert payload["pre"]["n"] == synth.pre_eval["n"]
    md = (tmp_path / "evidence" / "sample_trajectories.md").read_text()
    assert "## First hack of each mechanism" in md and "## Best by reward" in md and "## Worst by reward" in md
    first = {}
    for recs in synth.rollouts:
        for x in recs:
            if x["exploited"]:
                first.setdefault(x["mechanism"], x["step"])
    for mech, step in first.items():
        assert f"first `{mech}` exploit (step {step})" in md


def test_evidence_update_never_blocks_and_coalesces(tmp_path, monkeypatch):
    calls = []

    def slow_render(self, rows, evals):
        time.sleep(0.3)
        calls.append(len(rows))

    monkeypatch.setattr(E.EvidenceWriter, "render", slow_render)
    ev = E.EvidenceWriter(tmp_path)
    t0 = time.perf_counter()
    for k in range(1, 11):
        ev.update([{"step": i} for i in range(k)], [], [])
    assert time.perf_counter() - t0 < 0.25  # ten requests, no waiting on a 0.3 s render
    ev.close()
    assert calls[-1] == 10 and len(calls) < 10  # the newest request won, the rest coalesced
    with pytest.raises(RuntimeError):
        ev.update([], [], [])


def test_evidence_render_errors_are_counted(tmp_path, monkeypatch):
    def broken(self, rows, evals):
        raise RuntimeError("boom")

    monkeypatch.setattr(E.EvidenceWriter, "render", broken)
    ev = E.EvidenceWriter(tmp_path)
    ev.update([{"step": 0}])
    assert ev.flush(5)
    ev.close()
    assert ev.errors == 1


def test_evidence_min_interval(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(E.EvidenceWriter, "render", lambda self, rows, evals: calls.append(time.monotonic()))
    ev = E.EvidenceWriter(tmp_path, min_interval_s=0.3)
    ev.update([{"step": 0}])
    ev.flush(2)
    ev.update([{"step": 1}])
    ev.update([{"step": 2}])
    assert ev.flush(2)
    ev.close()  # close() itself does not wait out the interval: the last render runs at once
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.28


def test_evidence_finalize_draws_the_newest_rows_once(tmp_path, monkeypatch):
    """finalize draws an update still waiting out min_interval_s at once, and does not draw again
    rows the worker already drew (a render costs seconds of CPU at the end of every run)."""
    calls = []
    monkeypatch.setattr(E.EvidenceWriter, "render", lambda self, rows, evals: calls.append(len(rows)))
    monkeypatch.setattr(E, "save_figure", lambda *a, **k: None)
    ev = E.EvidenceWriter(tmp_path, min_interval_s=60.0)
    ev.update([{"step": 0}])
    assert wait_until(lambda: calls == [1], timeout=5)
    ev.update([{"step": 0}, {"step": 1}])  # waits out the 60 s floor
    t0 = time.monotonic()
    ev.finalize(None, [])
    assert time.monotonic() - t0 < 5 and calls == [1, 2]
    ev.close()
    ev2 = E.EvidenceWriter(tmp_path)
    ev2.update([{"step": 0}])
    assert ev2.flush(5) and calls == [1, 2, 1]
    ev2.finalize(None, [])
    assert calls == [1, 2, 1]  # already current
    ev2.finalize(None, [], rows=[{"step": 0}, {"step": 1}, {"step": 2}])
    assert calls == [1, 2, 1, 3]  # rows passed in are always drawn
    ev2.close()


def test_evidence_plots_tolerate_empty_inputs(tmp_path):
    assert E.plot_training_curve([]) is not None
    assert E.plot_checkpoint_progression([], []) is not None
    E.save_figure(E.plot_reward_distribution(None, []), tmp_path / "x.png")
    payload = E.before_after_payload(None, [])
    E.save_figure(E.plot_before_after(payload), tmp_path / "y.png")


def test_markdown_fence_survives_backticks():
    rec = {"step": 1, "problem_id": "1", "env_mode": "run_tests", "reward": 3.5, "prompt": "p",
           "text": "```python\nprint(1)\n```\n"}
    md = E.format_trajectory(rec, "x")
    assert "````\n```python" in md


# ------------------------------------------------------------------- sinks
def test_sinks_skip_cleanly_without_packages(tmp_path, monkeypatch):
    def missing():
        raise ImportError("nope")

    monkeypatch.setattr(S, "_import_wandb", missing)
    monkeypatch.setattr(S, "_import_summary_writer", missing)
    msgs = []
    hid = logger.add(lambda m: msgs.append(str(m)), level="WARNING")
    try:
        sinks = S.make_sinks({"seed": 1}, tmp_path, wandb=True, tensorboard=True)
    finally:
        logger.remove(hid)
    assert not sinks and len(msgs) == 2 and "wandb is not installed" in msgs[0]
    sinks.log(0, {"x": 1.0})
    sinks.close()
    assert not S.make_sinks({}, tmp_path)  # off by default


def test_sinks_with_fake_backends(tmp_path, monkeypatch):
    seen = {"init": None, "log": [], "finish": 0, "scalars": [], "closed": 0}

    class FakeRun:
        def log(self, d, step):
            seen["log"].append((step, d))

        def finish(self):
            seen["finish"] += 1

    class FakeWandb:
        @staticmethod
        def init(**kw):
            seen["init"] = kw
            return FakeRun()

    class FakeWriter:
        def __init__(self, log_dir):
            seen["tb_dir"] = log_dir

        def add_scalar(self, k, v, step):
            seen["scalars"].append((k, v, step))

        def flush(self):
            pass

        def close(self):
            seen["closed"] += 1

    monkeypatch.setattr(S, "_import_wandb", lambda: FakeWandb)
    monkeypatch.setattr(S, "_import_summary_writer", lambda: FakeWriter)
    sinks = S.make_sinks({"seed": 1}, tmp_path, wandb=True, wandb_mode="offline", tensorboard=True)
    sinks.log(3, {"rew": 1.5, "hack_s": (1, 4), "refr": "-", "lr": float("nan"), "ok": True, "z": (0, 0)})
    sinks.close()
    assert seen["init"]["mode"] == "offline" and seen["init"]["dir"].startswith(str(tmp_path))
    assert seen["log"] == [(3, {"rew": 1.5, "hack_s": 0.25, "ok": 1.0})]
    assert ("hack_s", 0.25, 3) in seen["scalars"] and seen["finish"] == 1 and seen["closed"] == 1


def test_failing_sink_is_dropped():
    class Bad:
        def log(self, step, scalars):
            raise OSError("disk full")

        def close(self):
            pass

    s = S.Sinks([Bad()])
    s.log(0, {"a": 1})
    assert not s


def test_evidence_thread_is_named_and_daemon(tmp_path):
    ev = E.EvidenceWriter(tmp_path)
    names = {t.name: t.daemon for t in threading.enumerate()}
    ev.close()
    assert names.get("evidence-writer") is True
