"""``Run``: one training run, as a loop over the parts in this package.

Set-up (``__init__``): tokenizer, grader pool, data and teacher pool, learner, rollout pool, the
run state (fresh or restored), telemetry. Each step (``step``): curriculum → sample prompts →
``StepScheduler`` (generate, grade, learn, streamed) → sync δS → rows and records → deploy eval
when due → table, checkpoints, resume state. The end (``finish``): final evals and report.

A run can be handed its grader pool and rollout pool (``graders=``, ``rollouts=``) so that one
process hosts several runs that share them; it then leaves them open at ``close``. ``learner=``
takes anything with ``LearnerClient``'s methods (tests run the loop with in-process parts);
``base=`` a ``publish_base`` ref the learner builds its frozen model from (a sweep's runs share it).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from loguru import logger
from tqdm import tqdm

from vgrout_ray.grading.pool import GraderPool
from vgrout_ray.rollout.pool import RolloutPool
from vgrout_ray.algo.pairs import configured_pair_modes, mode_labels
from vgrout_ray.config import Config
from vgrout_ray.env.modes import LOOPHOLE_MODES, MODE_CODE
from vgrout_ray.model.resolve import resolve_model
from vgrout_ray.run.rows import REF_GENS_PER_STEP
from vgrout_ray.reporting.evidence import EvidenceWriter
from vgrout_ray.reporting.parquet import RunTables
from vgrout_ray.reporting.sinks import make_sinks
from vgrout_ray.reporting.table import StepLogger
from vgrout_ray.util import load_tokenizer
from vgrout_ray.run import summary
from vgrout_ray.run.aggregate import build_row, check_divergence, collect_records, log_step_diagnostics
from vgrout_ray.run.evaluate import eval_problems, evaluate, log_deploy_eval
from vgrout_ray.learner.client import LearnerClient
from vgrout_ray.run.sampling import PromptSampler, load_run_data
from vgrout_ray.run.state import RunState, save_ckpt, save_resume
from vgrout_ray.run.stream import StepResult, StepScheduler


class Run:
    """One training run on Ray actors (learner, rollout pool, grader pool)."""

    def __init__(self, cfg: Config, run_dir: Path, log_path: Path, resume: dict | None = None, *,
                 graders: GraderPool | None = None, rollouts: RolloutPool | None = None,
                 learner: LearnerClient | None = None, base=None):
        self.cfg, self.run_dir, self.log_path = cfg, Path(run_dir), log_path
        self._own_graders, self._own_rollouts = graders is None, rollouts is None
        try:
            self._setup(resume, graders, rollouts, learner, base)
        except BaseException:
            # a set-up that stops half-way (an actor that never gets resources, Ctrl-C) must not
            # leave the pool threads it started running into interpreter exit
            self.close()
            raise

    def _setup(self, resume: dict | None, graders: GraderPool | None, rollouts: RolloutPool | None,
               learner: LearnerClient | None, base=None) -> None:
        cfg = self.cfg
        self.model_path = resolve_model(cfg.model, cfg.svd_cache)
        self.tok = load_tokenizer(self.model_path)
        # The learner and rollout actors are created first (neither call waits for them): they start
        # their processes and load the model while the grader pool starts and grades the scripted
        # teacher pool, instead of one after the other. info() below is the first wait.
        self.learner = learner if learner is not None else LearnerClient.start(cfg, self.model_path, base)
        self.rollouts = rollouts if rollouts is not None else RolloutPool.from_config(
            cfg, self.model_path, factors=self.learner.factors_later())
        self.graders = graders if graders is not None else GraderPool.from_config(cfg.grader)
        self.data = load_run_data(cfg, self.graders.grade)
        self.sampler = PromptSampler(cfg, self.data, self.tok)
        self.eval_probs, self.eval_held_out = eval_problems(cfg, self.data.problems)
        self.pool_texts = {pid: [r["completion"] for r in rows if r.get("completion")]
                           for pid, rows in self.data.teacher_pool.items()}
        self._modes()
        info = self.learner.info()
        logger.info(f"learner: {info['device']} on node {info['node_id'][:8]}, base from {info.get('base', '?')}, "
                    f"{info['modules']} modules, "
                    f"{info['trainable']:,} δS; contrastive pairs {info['pairs']}")
        self.version = 0
        self.state = RunState.fresh(cfg.seed, cfg.teacher_split if self.data.teacher_pool else (cfg.group, 0))
        if resume is not None:
            self._restore(resume)
        self.sync()
        self.scheduler = StepScheduler(self.rollouts, self.graders.stream(), self.learner,
                                       lambda ids: self.tok.batch_decode(ids, skip_special_tokens=True),
                                       compat=cfg.grader.compat)
        self._telemetry(resume is not None)

    # ── set-up ───────────────────────────────────────────────────────────────
    def _modes(self) -> None:
        cfg = self.cfg
        self.run_modes = sorted({p["env_mode"] for p in self.data.problems},
                                key=lambda m: list(MODE_CODE).index(m) if m in MODE_CODE else 99)
        self.pair_modes = configured_pair_modes(cfg.v_hack_pairs_path, cfg.v_hack_pairset)
        self.mode_labels = mode_labels(LOOPHOLE_MODES, self.pair_modes)
        logger.info(f"v_hack pairs cover {','.join(self.pair_modes) or 'no known mode'}: "
                    + ", ".join(f"{m} {self.mode_labels[m]}" for m in self.run_modes if m in self.mode_labels))

    def _telemetry(self, resumed: bool) -> None:
        cfg = self.cfg
        self.tables = RunTables(self.run_dir)
        if resumed:
            self.tables.truncate_to(self.state.next_step - 1)
        # figures refresh at most every 15 s while the run goes (their CPU is the actors' on a small
        # machine); finalize always draws the last rows
        self.evidence = EvidenceWriter(self.run_dir, modes=self.run_modes, min_interval_s=15.0,
                                       title=f"{cfg.arm} · {cfg.preset_name} · seed {cfg.seed}")
        self.recent_records: list[dict] = []
        self.sinks = make_sinks(cfg.to_dict(), self.run_dir, wandb=cfg.wandb, wandb_mode=cfg.wandb_mode,
                                tensorboard=cfg.tensorboard)
        self.step_logger = StepLogger(arm=cfg.arm, modes=self.run_modes, mode_code=MODE_CODE,
                                      in_dist=self.pair_modes,
                                      show_ablate=cfg.rollout_ablate_frac > 0 and cfg.has_quarantine)

    def _restore(self, payload: dict) -> None:
        self.state, learner_state = RunState.from_dict(payload)
        self.version = self.learner.load_state_dict(learner_state)
        logger.info(f"resumed from {self.run_dir} at step {self.state.next_step} (δS v{self.version}, "
                    f"{len(self.state.rows)} rows kept)")

    # ── weight sync ──────────────────────────────────────────────────────────
    def sync(self) -> dict:
        """Ship the learner's (version, δS, δS_hack) to the rollout pool and wait for it."""
        t0 = time.perf_counter()
        full = self.cfg.rollout.sync == "full"
        if full:  # benchmark baseline: merged weights (both views when a quarantine exists)
            version, payload = self.learner.merged_views(self.cfg.has_quarantine)
        else:
            version, payload = self.learner.sync_payload(self.cfg.rollout.onpolicy_probe, self.cfg.rollout.onpolicy_tol)
        self.version = version
        rec = self.rollouts.sync(version, payload, full=full, owner=self)
        rec = {"version": version, "bytes": rec["bytes"], "actors": rec["actors"],
               "seconds": time.perf_counter() - t0, "load_s": rec["load_s"]}
        self.state.sync_log.append(rec)
        logger.debug(f"sync v{version}: {rec['bytes'] / 1e6:.2f} MB of δS to {rec['actors']} rollout actor(s) "
                     f"in {rec['seconds'] * 1000:.0f} ms")
        return rec

    def evaluate(self, step: int, *, ablate: bool, kind: str) -> dict:
        ev = evaluate(self.cfg, self.sampler, self.eval_probs, self.rollouts, self.graders, step=step,
                      ablate=ablate, kind=kind, version=self.version)
        self.state.evals.append(ev)
        return ev

    # ── the step ─────────────────────────────────────────────────────────────
    def train_step(self, step: int) -> dict:
        st = self.state
        st.G = self.sampler.curriculum(step, st.G)
        t0 = time.time()
        if not self.rollouts.holds(self, self.version):  # a shared pool last synced by another run
            self.sync()
        self.learner.begin_step(step)
        plans, n_skipped = self.sampler.sample(step, st.rng, st.G)
        res = self.scheduler.run(step, plans, self.version)
        t_sync0 = time.perf_counter()
        sync = self.sync()
        timing = {"gen": res.timing.gen, "gen_busy": res.timing.gen_busy, "grade": res.timing.grade,
                  "fb": res.stats.fb, "sync": time.perf_counter() - t_sync0, "refresh": res.stats.t_refresh,
                  "tokens": res.timing.tokens, "sync_info": sync}
        return self._finish_step(res, n_skipped, t0, timing)

    def _finish_step(self, res: StepResult, n_skipped: int, t0: float, timing: dict) -> dict:
        cfg, st, step = self.cfg, self.state, res.step
        recs = collect_records(res, st, n_skipped, self.tok, self.pool_texts)
        deploy, t_eval = None, 0.0
        if cfg.is_eval_step(step):
            te = time.perf_counter()
            deploy = self.evaluate(step, ablate=cfg.has_quarantine, kind="deploy")
            t_eval = time.perf_counter() - te
            log_deploy_eval(cfg, step, deploy)
        timing = {**timing, "eval": t_eval, "sec": time.time() - t0}
        row = build_row(cfg, res, recs, run_modes=self.run_modes, cum_gens=st.gens_so_far, deploy=deploy,
                        timing=timing, version=self.version)
        log_step_diagnostics(cfg, res, row, timing)
        st.rows.append(row)
        if recs.records:
            st.last_gen_sample = (step, recs.records[0])
        self.tables.append_step(row, recs.records)
        self.recent_records = (self.recent_records + recs.records)[-200:]
        self.sinks.log(step, {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return row

    def _after_step(self, step: int, row: dict) -> None:
        """Table line, tripwire, checkpoints, resume state, evidence."""
        cfg, st = self.cfg, self.state
        if step > 0 and step % 50 == 0:
            logger.info(self.step_logger.header())
        logger.info(self.step_logger.row(row))
        check_divergence(st, step, row)
        if (step + 1) % cfg.checkpoint_every == 0:
            self.save_ckpt(self.run_dir / "train.safetensors")
        if cfg.save_eval_ckpts and cfg.is_eval_step(step):
            self.save_ckpt(self.run_dir / f"ckpt_step{step:04d}.safetensors")
        if not st.first_hack_saved and row["hack_s"][0] > 0:
            self.save_ckpt(self.run_dir / "first_hack.safetensors")
            st.first_hack_saved = True
            logger.info(f"first-student-hack ckpt saved: step={step} hack_s={row['hack_s'][0]}/{row['hack_s'][1]}"
                        " -> first_hack.safetensors")
        self.save_resume_state(step + 1)
        self.evidence.update(st.rows, st.evals, self.recent_records)

    # ── checkpoints ──────────────────────────────────────────────────────────
    def save_ckpt(self, path: Path) -> None:
        version, deltas = self.learner.deltas()
        save_ckpt(path, deltas, version, self.state.rows, self.cfg)

    def save_resume_state(self, next_step: int) -> None:
        self.state.next_step = next_step
        save_resume(self.run_dir, self.state.to_dict(self.learner.state_dict()))

    # ── the run ──────────────────────────────────────────────────────────────
    def _preamble(self) -> None:
        cfg = self.cfg
        est = cfg.prompts_per_step * cfg.group
        logger.info(f"grad-pressure: {est} gens/step vs reference {REF_GENS_PER_STEP} -> "
                    f"{est / REF_GENS_PER_STEP:.2f}x per step; {cfg.steps} steps ~= "
                    f"{cfg.steps * est / REF_GENS_PER_STEP:.1f} reference steps")
        logger.info("SHOULD: loss finite each step; projected/route arm cout -> ~0; ELSE harness or projection "
                    "broken. Timing cols (gen/fb/t_rew/sec): gen-bound -> more rollout actors / vllm; "
                    "t_rew-bound -> more graders.")
        if self.data.teacher_pool:
            logger.info("SHOULD (mixed-pool): hack_t high from step 0; hack_s climbs as the student learns from "
                        "the teacher rows. ELSE if hack_s flat while hack_t high: bump mix_ratio or lr.")
        if self.state.pre_eval is None:
            pre = self.state.pre_eval = self.evaluate(-1, ablate=False, kind="pre")
            logger.info(f"pre-training eval: hack={pre['hack']:.3f} solve={pre['solve']:.3f} n={pre['n']}")
        logger.info("\n" + self.step_logger.legend() + "\n\n")
        logger.info(self.step_logger.header())

    def run(self, on_step=None, progress: bool = True) -> int:
        """Preamble, the steps from the resume point, the final evals. ``on_step(step, row)`` is
        called after each step (the sweep's board); ``progress=False`` hides the tqdm bar."""
        cfg, start = self.cfg, self.state.next_step
        self._preamble()
        pbar = tqdm(range(start, cfg.steps), desc=f"train {cfg.arm} {cfg.preset_name}",
                    initial=start, total=cfg.steps, mininterval=120, maxinterval=120,
                    disable=None if progress else True)
        for step in pbar:
            row = self.train_step(step)
            self._after_step(step, row)
            if on_step is not None:
                on_step(step, row)
            pbar.set_postfix(rew=f"{row['rew']:+.2f}", hack=f"{row['hack_s'][0]}/{row['hack_s'][1]}",
                             loss=f"{row['loss']:+.3f}", sec=f"{row['sec']:.0f}", refresh=False)
        return self.finish()

    def finish(self) -> int:
        cfg, st = self.cfg, self.state
        summary.check_quarantine(cfg, self.learner.delta_hack_norm())
        summary.log_last_gen(st)
        ev_train = self.evaluate(cfg.steps, ablate=False, kind="train")
        ev_deploy = self.evaluate(cfg.steps, ablate=True, kind="deploy_final") if cfg.has_quarantine else ev_train
        per_mode = summary.final_eval_by_mode(cfg, ev_train, ev_deploy, self.mode_labels, self.pair_modes)
        summary.write_deploy_record(self.run_dir, cfg, len(st.rows), self.log_path, ev_train, ev_deploy, per_mode,
                                    self.pair_modes, pre=st.pre_eval, held_out=self.eval_held_out,
                                    rows=st.rows)
        summary.log_main_metric(cfg, st, self.log_path,
                                several_modes=len(self.run_modes) > 1 or self.data.partition is not None)
        self.save_ckpt(self.run_dir / "train.safetensors")
        self.evidence.finalize(st.pre_eval, [ev_train, ev_deploy] if cfg.has_quarantine else [ev_train])
        self.save_resume_state(cfg.steps)
        return 0

    def close(self) -> None:
        """Flush telemetry; stop the learner and whichever pools this run started itself."""
        closers = [self.evidence.close, self.tables.close, self.sinks.close] if hasattr(self, "sinks") else []
        if self._own_rollouts and hasattr(self, "rollouts"):
            closers.append(self.rollouts.close)
        if self._own_graders and hasattr(self, "graders"):
            closers.append(self.graders.close)
        if hasattr(self, "learner"):
            closers.append(self.learner.close)
        for closer in closers:
            try:
                closer()
            except Exception as e:
                logger.debug(f"close: {e}")


def write_config(run_dir: Path, cfg: Config) -> None:
    (Path(run_dir) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
