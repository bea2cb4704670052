"""The run loop (``run.loop.Run``) end to end with real parts held in-process: the real
``LearnerCore``, the real hf engine on the tiny model and the real process sandbox, behind the
same small interfaces the Ray pools and the learner client offer. No Ray: this checks the loop,
its files and its resume on any machine; ``test_driver.py`` checks the same on real actors.

A run is stopped after two of its three steps, its run dir copied, and the copy resumed by a new
``Run`` with a fresh learner and engine: the resumed rows must equal the uninterrupted ones.
"""
from __future__ import annotations

import json
import math
import queue
import shutil
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from loguru import logger

from vgrout_ray.arms import display_name
from vgrout_ray.grading.pool import Graded
from vgrout_ray.rollout.actor import make_engine
from vgrout_ray.rollout.pool import GenDone
from vgrout_ray.config import SmokeConfig
from vgrout_ray.learner.actor import LearnerActorImpl
from vgrout_ray.learner.core import LearnerCore
from vgrout_ray.model.onpolicy_probe import check_engine, split_probe
from vgrout_ray.run.loop import Run, write_config
from vgrout_ray.run.state import load_resume
from vgrout_ray.grading.local import LocalGrader, grade_with_retries
from vgrout_ray.reporting.parquet import ROW_SCHEMA, is_timing_column, read_rollouts, read_rows
from vgrout_ray.reporting.table import FILE_FORMAT

from .helpers import table_steps_in_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class InProcLearner:
    """``LearnerClient``'s methods over a LearnerCore in this process."""

    def __init__(self, cfg, model_path):
        self.core = LearnerCore(cfg, model_path=model_path, device="cpu")
        self.impl = LearnerActorImpl.around(self.core)  # the actor's own methods, without Ray

    def sync_payload(self, probe=True, tol=None):
        return self.impl.sync_payload(probe, tol)

    def info(self):
        return {"device": "cpu", "node_id": "in-process", "modules": len(self.core.adapter.names),
                "trainable": sum(p.numel() for p in self.core.adapter.delta_params()), "pairs": 0}

    def begin_step(self, step):
        self.core.begin_step(step)

    def add_group(self, index, group):
        res = self.core.add_group(group)
        res.index = index
        return res

    def collect(self, handles):
        return list(handles)

    def end_step(self):
        return self.core.end_step()

    def deltas(self):
        return self.core.version, self.core.deltas_state()

    def delta_hack_norm(self):
        return self.core.delta_hack_norm()

    def state_dict(self):
        return self.core.state_dict()

    def load_state_dict(self, state):
        self.core.load_state_dict(state)
        return self.core.version

    def close(self):
        pass


class InProcRollouts:
    """``RolloutPool``'s methods over one hf engine in this process (calls run at submit)."""

    size = 1

    def __init__(self, model_path, svd_cache):
        self.engine = make_engine("hf", model_path, str(svd_cache), threads=1)
        self.done: list[GenDone] = []
        self.owner = None

    def sync(self, version, payload, *, full=False, owner=None):
        deltas, probe = split_probe(payload)  # as RolloutActorImpl.sync: load, then the on-policy probe
        self.engine.load_deltas(version, deltas)
        if probe is not None:
            check_engine(self.engine, version, deltas, probe, float(probe["tol"]))
        self.owner = owner
        return {"version": version, "bytes": sum(t.numel() * t.element_size() for t in payload.values()),
                "actors": 1, "load_s": 0.0}

    def holds(self, owner, version):
        return self.owner is owner and self.engine.version == version

    def notify(self, event):
        self.wake = event

    def submit(self, key, reqs, actor=None):
        self.done.append(GenDone(key, [self.engine.generate(r) for r in reqs], 0.0, 0.0))
        self.wake.set()  # the call ran at submit: its result is news

    @property
    def pending(self):
        return len(self.done)

    def poll(self, timeout=0.0):
        out = [self.done.pop(0)] if self.done else []
        if self.done:
            self.wake.set()
        return out

    def generate(self, reqs):
        return [self.engine.generate(r) for r in reqs]


class InProcGraders:
    """``GraderPool``'s ``grade`` / ``stream`` over one process-sandbox LocalGrader, with the
    pool's retry policy."""

    def __init__(self):
        self.grader = LocalGrader("process", timeout=10.0)  # semantics, not speed: generous on a busy machine

    def grade(self, requests):
        return grade_with_retries(self.grader, list(requests))

    def stream(self):
        return _Stream(self)

    def close(self):
        self.grader.close()


class _Stream:
    def __init__(self, pool):
        self.pool, self.q = pool, queue.Queue()

    def notify(self, event):
        self.wake = event

    def submit(self, requests, keys):
        for k, r in zip(keys, self.pool.grade(requests)):
            self.q.put(Graded(k, r))
        self.wake.set()

    def poll(self, timeout=0.0):
        out = []
        while not self.q.empty():
            out.append(self.q.get())
        return out


@pytest.fixture(scope="module")
def cache(tiny):
    return Path(tiny).parent


@pytest.fixture(scope="module")
def graders():
    g = InProcGraders()
    yield g
    g.close()


def _cfg(cache: Path, out: Path, arm: str) -> SmokeConfig:
    # route2 with an ablated slice: the deploy view in generation, deploy evals and δS_hack in play;
    # route with a v_hack refresh at step 1 (as the driver's smoke route run had)
    return SmokeConfig(intervention=arm, rollout_ablate_frac=0.5 if arm == "route2" else 0.0, steps=3, n_problems=6,
                       prompts_per_step=2, max_new=12, eval_ablate_every=2, eval_n_prompts=1, checkpoint_every=2,
                       v_hack_refresh_every=2 if arm == "route" else 0, svd_cache=cache, out_dir=out,
                       logs_dir=out / "logs")


@contextmanager
def _file_log(path: Path):
    """The driver's verbose file sink (same format) for the duration of a run."""
    sink = logger.add(path, format=FILE_FORMAT, level="DEBUG")
    try:
        yield path
    finally:
        logger.remove(sink)


def _check_log(log: Path, arm: str, steps: int) -> None:
    """What test_driver.py's smoke runs checked in the driver's log, per arm."""
    text = log.read_text()
    assert table_steps_in_log(text) == list(range(steps))  # the streamed table, one line per step
    assert f"arm={display_name(arm)}" in text
    assert "||delta_S_hack||" in text and "FINAL EVAL" in text and "### Per-step rows (markdown)" in text
    if arm == "route":
        assert "refresh@step1" in text and "R3 span check" in text


def _run(cfg, run_dir, graders, resume=None) -> Run:
    model_path = str(Path(cfg.svd_cache) / "tiny-qwen3-seed0")
    return Run(cfg, run_dir, run_dir / "run.log", resume=resume, graders=graders,
               rollouts=InProcRollouts(model_path, cfg.svd_cache), learner=InProcLearner(cfg, model_path))


def _science(rows):
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()
             if not is_timing_column(k)} for r in rows]


@pytest.mark.parametrize("arm", ["none", "route", "route2"])
def test_the_loop_writes_its_run_and_a_resumed_copy_reproduces_it(cache, graders, tmp_path, arm):
    cfg = _cfg(cache, tmp_path / "out", arm)
    run_dir = tmp_path / "a"
    run_dir.mkdir()
    write_config(run_dir, cfg)
    with _file_log(tmp_path / "run.log") as log:
        run = _run(cfg, run_dir, graders)
        try:
            run._preamble()
            for step in (0, 1):
                run._after_step(step, run.train_step(step))
            shutil.copytree(run_dir, tmp_path / "b")  # what a run killed after step 1 leaves behind
            run._after_step(2, run.train_step(2))
            assert run.finish() == 0
        finally:
            run.close()
    _check_log(log, arm, 3)
    rows = read_rows(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2] and [r["version"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in rows)
    if any(r["hack_s"][0] for r in rows):
        assert (run_dir / "first_hack.safetensors").is_file()
    schema = pq.read_schema(run_dir / "rows.parquet")
    assert all(schema.field(f.name).type == f.type for f in ROW_SCHEMA)
    ro = read_rollouts(run_dir)
    assert {(r["step"], r["version"]) for r in ro} == {(0, 0), (1, 1), (2, 2)}
    assert all(sum(1 for r in ro if r["step"] == row["step"]) == row["hack_s"][1] for row in rows)
    for name in ("train.safetensors", "per_mode_deploy.json", "ckpt_step0000.safetensors",
                 "ckpt_step0002.safetensors", "config.json", "resume/state.pt"):
        assert (run_dir / name).is_file(), name
    state = load_resume(run_dir)
    final = ["train", "deploy_final"] if arm != "none" else ["train"]
    assert state["next_step"] == 3 and [e["kind"] for e in state["evals"]] == ["pre", "deploy", "deploy", *final]
    if arm == "route2":
        assert all(r["hack_abl"][1] == 2 for r in rows)
        assert sum(r["is_ablated"] for r in ro) == 6 and all(e["ablate"] for e in state["evals"][1:3])
    dep = json.loads((run_dir / "per_mode_deploy.json").read_text())
    assert dep["held_out"] is False and dep["eval_prompt_ids"] == [q["id"] for q in dep["per_prompt"]]
    assert dep["eval_n"] == sum(q["n"] for q in dep["per_prompt"]) == cfg.eval_k * cfg.eval_n_prompts
    assert dep["pre"]["n"] == dep["eval_n"] and 0 <= dep["compile_deploy"] <= 1 and 0 <= dep["clipped_deploy"] <= 1
    assert all(r["hack_s_copy"][0] + r["hack_s_novel"][0] == r["hack_s"][0] for r in rows)
    # one sampling seed per (step, prompt): knob-on and knob-off evals of the same step draw alike
    ev = {(e["step"], e["kind"]): e for e in state["evals"]}
    if arm != "none":
        assert ev[(3, "train")]["per_prompt"][0]["n"] == ev[(3, "deploy_final")]["per_prompt"][0]["n"]
    if arm == "none":
        assert all(r["dsh_norm"] == 0.0 for r in rows)
        assert all(math.isfinite(r["cos_pre_s"]) and math.isfinite(r["cos_pre"]) for r in rows)  # measures only
    else:
        assert rows[-1]["dsh_norm"] > 0, "a routing arm moved δS_hack"

    b = tmp_path / "b"
    payload = load_resume(b)
    assert payload["next_step"] == 2
    resumed = _run(cfg, b, graders, resume=payload)
    try:
        assert resumed.run() == 0
    finally:
        resumed.close()
    assert _science(read_rows(b)) == _science(rows)
