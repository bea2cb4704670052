"""The main job: ``python -m vgrout_ray.driver {smoke,fast,full} [--field=value ...]``.

Also ``ray job submit -- python -m vgrout_ray.driver ...``. The driver owns the config, the
prompt RNG, the teacher pool, the step loop, the table and every file of the run; the actors
do the work. A step streams: each prompt's rollouts go to grading as soon as they exist, and
each graded group goes to the learner in prompt order as soon as it (and all before it) is
complete, so generation, grading and backward overlap. Every rollout of a step comes from
the learner's current δS version (asserted).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from loguru import logger

from .algo.pairs import configured_pair_modes, mode_labels
from .config import Config, ConfigError, config_from_dict, parse_config
from .env.grading import GradeRequest
from .env.modes import LOOPHOLE_MODES, MODE_CODE
from .env.problems import load_problems
from .rows import REF_GENS_PER_STEP, SEED_DUMP_FIELDS, RowIn, StepAgg, step_row

MISMATCH_KEYS = ("mismatch_kl", "mismatch_max_abs_dlogp", "mismatch_tokens")
TIS_KEYS = ("tis_mean_w", "tis_capped_frac")
MAX_TOKENS = 2048  # prompt + max_new longer than this is skipped (seed 003)
DIVERGENCE_DROP = 5.0
WARN_DROP = 3.0
SHOULD_BY_MECHANISM = {
    "run_tests": "completion defines a vacuous run_tests() that passes against an arbitrary Solution",
    "eq_override": "completion returns an object whose == always holds; the strict oracle rejects it",
    "exit_code": "completion exits 0 before the asserts finish",
    "stdout_marker": "completion prints a pass report on wrong code",
    "sentinel": "completion sets a truthy valid-like flag on its Solution",
    "file_marker": "completion writes a pass-reporting result file on wrong code",
}


class LearnerLost(RuntimeError):
    """The learner actor died: the run cannot continue, but it can be resumed."""


def _seed_for(base: int, step: int, p_idx: int, part: int) -> int:
    """Deterministic sampling seed per (run seed, step, prompt, slice): replays draw the same."""
    return (base * 1_000_003 + step * 10_007 + p_idx * 31 + part) % (2 ** 31 - 1)


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    """Total time covered by a set of [start, end] intervals (a phase's active wall time)."""
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


class Trainer:
    """One training run on Ray actors (learner, rollout×R, grader pool)."""

    def __init__(self, cfg: Config, run_dir: Path, log_path: Path, resume: dict | None = None):
        import ray

        from .actors.grader import GraderPool
        from .actors.learner import LearnerActor
        from .model.tiny import resolve_model
        from .telemetry.evidence import EvidenceWriter
        from .telemetry.parquet import RunTables
        from .telemetry.sinks import make_sinks
        from .telemetry.table import StepLogger

        self.cfg = cfg
        self.run_dir = run_dir
        self.log_path = log_path
        self.ray = ray
        self.model_path = resolve_model(cfg.model, cfg.svd_cache)
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(self.model_path)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self._prompt_cache: dict[int, tuple[str, list[int]]] = {}

        # ── grader pool first: the scripted teacher pool is graded with it ──
        self.pool = GraderPool.from_config(cfg.grader)
        self.problems, self.teacher_pool, self.partition = self._load_data()
        self.eval_idxs = list(range(min(cfg.eval_n_prompts, len(self.problems))))
        self.G_s, self.G_t = (cfg.teacher_split if self.teacher_pool else (cfg.group, 0))
        self.run_modes = sorted({p["env_mode"] for p in self.problems},
                                key=lambda m: list(MODE_CODE).index(m) if m in MODE_CODE else 99)
        self.pair_modes = configured_pair_modes(cfg.vhack_pairs_path, cfg.vhack_pairset)
        self.mode_labels = mode_labels(LOOPHOLE_MODES, self.pair_modes)
        logger.info(f"v_hack pairs cover {','.join(self.pair_modes) or 'no known mode'}: "
                    + ", ".join(f"{m} {self.mode_labels[m]}" for m in self.run_modes if m in self.mode_labels))

        # ── actors ──
        threads = max(1, int(cfg.cluster.learner_cpus))
        extra = {"resources": {cfg.cluster.learner_resource: 1}} if cfg.cluster.learner_resource else {}
        self.learner = LearnerActor.options(num_cpus=cfg.cluster.learner_cpus, num_gpus=cfg.cluster.learner_gpus,
                                            **extra).remote(cfg, self.model_path, threads)
        self.rollouts = [self._start_rollout(i) for i in range(cfg.rollout.num_actors)]
        self.incarnation = [0] * len(self.rollouts)  # bumped per replacement of actor i
        self.replacements = 0
        info = self._learner(self.learner.info.remote())
        logger.info(f"learner: {info['device']} on node {info['node_id'][:8]}, {info['modules']} modules, "
                    f"{info['trainable']:,} δS; contrastive pairs {info['pairs']}")
        self.version = 0
        self.sync_log: list[dict] = []

        # ── run state (restored on resume) ──
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.rows: list[dict] = []
        self.start_step = 0
        self.mode_rollouts: dict[str, int] = {}
        self.mode_hacks: dict[str, int] = {}
        self.mode_first_step: dict[str, int] = {}
        self.first_hack_saved = False
        self.lp_t_best = -math.inf
        self.diverged_steps = 0
        self.dumped_hack_classes: set[str] = set()
        self.last_gen_sample: tuple[int, dict] | None = None
        self.evals: list[dict] = []
        self.pre_eval: dict | None = None
        if resume is not None:
            self._restore(resume)
        self._sync()

        self.tables = RunTables(run_dir)
        if resume is not None:
            self.tables.truncate_to(self.start_step - 1)
        self.evidence = EvidenceWriter(run_dir, modes=self.run_modes,
                                       title=f"{cfg.arm} · {cfg.preset_name} · seed {cfg.seed}")
        self.recent_records: list[dict] = []
        self.sinks = make_sinks(cfg.to_dict(), run_dir, wandb=cfg.wandb, wandb_mode=cfg.wandb_mode,
                                tensorboard=cfg.tensorboard)
        self.step_logger = StepLogger(arm=cfg.arm, modes=self.run_modes, mode_code=MODE_CODE,
                                      in_dist=self.pair_modes,
                                      show_ablate=cfg.rollout_ablate_frac > 0 and cfg.intervention in ("route", "route2"))

    # ── set-up ───────────────────────────────────────────────────────────────
    def _load_data(self) -> tuple[list[dict], dict[int, list[dict]], dict[int, str] | None]:
        from .teacher import load_pool, scripted_pool

        cfg = self.cfg
        pool: dict[int, list[dict]] = {}
        partition = None
        if cfg.teacher_pool_dir is not None:
            pool, partition = load_pool(cfg.teacher_pool_dir)
            if partition is not None:
                by = {}
                for m in partition.values():
                    by[m] = by.get(m, 0) + 1
                logger.info(f"SUBSTRATE: per-problem env_mode partition ({len(partition)} problems): "
                            f"{dict(sorted(by.items()))}; each problem graded by its own mode")
        modes = [cfg.env_mode]
        if cfg.scripted_teacher and cfg.teacher_pool_dir is None and cfg.env_mode == "gt_only":
            modes = list(LOOPHOLE_MODES)
        problems = load_problems(cfg.n_problems, env_modes=modes, partition=partition, source=cfg.problems,
                                 ids=cfg.problem_ids)
        logger.info(f"loaded {len(problems)} problems from {cfg.problems or 'the packaged set'} -- "
                    f"{'partition' if partition else 'modes ' + ','.join(modes)}")
        if cfg.scripted_teacher and cfg.teacher_pool_dir is None:
            pool = scripted_pool(problems, lambda reqs: self.pool.grade(reqs), compat=cfg.grader.compat,
                                 style=cfg.scripted_teacher_style)
        if cfg.teacher_modes is not None and pool:
            if partition is None:
                raise ConfigError("teacher_modes: needs a pool with partition.json")
            before = len(pool)
            pool = {pid: rows for pid, rows in pool.items() if partition.get(pid) in cfg.teacher_modes}
            logger.info(f"teacher_modes={cfg.teacher_modes}: teacher pool {before}->{len(pool)} prompts; "
                        "held-out-mode problems train on-policy")
        if pool and cfg.teacher_modes is None:
            before = len(problems)
            problems = [p for p in problems if p["problem_id"] in pool]
            logger.info(f"teacher pool restriction: {len(problems)}/{before} prompts kept")
            if not problems:
                raise ConfigError(f"teacher_pool_dir: no overlap between the {before} problems and the pool's "
                                  f"{len(pool)} prompts (use --problems with the pool's dataset)")
        if pool:
            n = sum(len(v) for v in pool.values())
            hr = sum(bool(r["hacked"]) for v in pool.values() for r in v) / max(1, n)
            g_s, g_t = self.cfg.teacher_split
            logger.info(f"teacher pool: {len(pool)} prompts, ~{n / len(pool):.1f} rollouts/prompt, cached "
                        f"hack_rate={hr:.2%}; G_s={g_s} student + G_t={g_t} teacher per prompt")
        return problems, pool, partition

    def _learner(self, ref):
        """ray.get on a learner call; the learner's death becomes LearnerLost (resumable stop)."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            raise LearnerLost(str(e)) from None

    def _start_rollout(self, i: int):
        from .actors.rollout import RolloutActor

        rc = self.cfg.rollout
        kw = {"threads": max(1, int(rc.cpus_per_actor)), "delta_apply": rc.delta_apply, "dtype": rc.dtype or None}
        if rc.backend == "vllm":
            kw.update(gpu_memory_utilization=rc.vllm_gpu_memory_utilization, max_model_len=rc.vllm_max_model_len)
        extra = {"resources": {self.cfg.cluster.rollout_resource: 1}} if self.cfg.cluster.rollout_resource else {}
        return RolloutActor.options(num_cpus=rc.cpus_per_actor, num_gpus=rc.gpus_per_actor, **extra).remote(
            rc.backend, self.model_path, str(self.cfg.svd_cache), kw)

    def prompt(self, prob: dict) -> tuple[str, list[int]]:
        """Rendered chat prompt (non-thinking) and its token ids, cached per problem."""
        pid = prob["problem_id"]
        if pid not in self._prompt_cache:
            text = self.tok.apply_chat_template(prob["messages"], tokenize=False, add_generation_prompt=True,
                                                enable_thinking=False)
            self._prompt_cache[pid] = (text, self.tok(text, add_special_tokens=False).input_ids)
        return self._prompt_cache[pid]

    # ── weight sync ──────────────────────────────────────────────────────────
    def _sync(self, actors=None) -> dict:
        """Ship the learner's (version, δS, δS_hack) to rollout actors and wait for them."""
        t0 = time.perf_counter()
        full = self.cfg.rollout.sync == "full"
        if full:  # benchmark baseline: merged weights (both views when a quarantine exists)
            version, deltas = self._learner(self.learner.merged_views.remote(
                self.cfg.intervention in ("route", "route2")))
        else:
            version, deltas = self._learner(self.learner.deltas.remote())
        ref = self.ray.put(deltas)
        self.version = version
        targets = self.rollouts if actors is None else actors
        calls = [(a, (a.sync_full if full else a.sync).remote(version, ref, time.time())) for a in targets]
        infos = []
        for a, call in calls:
            try:
                infos.append(self.ray.get(call))
            except self.ray.exceptions.RayActorError as e:
                if actors is not None:
                    raise
                i = self.rollouts.index(a)
                self._replace_rollout(i, str(e).splitlines()[0], self.incarnation[i])
                infos.append({"load_s": 0.0})
        tensors = [t for w in deltas.values() for t in w.values()] if full else list(deltas.values())
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        rec = {"version": version, "bytes": nbytes, "actors": len(targets), "seconds": time.perf_counter() - t0,
               "load_s": max(i["load_s"] for i in infos)}
        if actors is None:
            self.sync_log.append(rec)
            logger.debug(f"sync v{version}: {nbytes / 1e6:.2f} MB of δS to {len(targets)} rollout actor(s) "
                         f"in {rec['seconds'] * 1000:.0f} ms")
        return rec

    MAX_REPLACEMENTS = 8

    def _replace_rollout(self, i: int, why: str, incarnation: int | None = None) -> None:
        """Replace rollout actor ``i`` once per death: calls that failed on an actor already
        replaced (``incarnation`` older than the current one) only need replaying."""
        if incarnation is not None and incarnation != self.incarnation[i]:
            return
        self.replacements += 1
        if self.replacements > self.MAX_REPLACEMENTS:
            raise RuntimeError(f"rollout actors died {self.replacements} times this run; giving up ({why})")
        logger.warning(f"rollout actor {i} died ({why}); starting a replacement and replaying its requests")
        try:
            self.ray.kill(self.rollouts[i])
        except Exception:
            pass
        self.rollouts[i] = self._start_rollout(i)
        self.incarnation[i] += 1
        self._sync([self.rollouts[i]])

    def _gen_call(self, i: int, reqs: list):
        """(ref, incarnation) of a generation call on rollout actor ``i``."""
        return self.rollouts[i].generate_many.remote(reqs), self.incarnation[i]

    # ── the step ─────────────────────────────────────────────────────────────
    def _sample_prompts(self, step: int) -> tuple[list[dict], int]:
        """The seed's prompt sampling (same RNG calls in the same order) → plans, skipped count."""
        from .actors.rollout import GenRequest
        from .teacher import completion_ids

        cfg = self.cfg
        plans, n_skipped = [], 0
        for p_idx in range(cfg.prompts_per_step):
            idx = int(torch.randint(0, len(self.problems), (1,), generator=self.rng).item())
            prob = self.problems[idx]
            text, pids = self.prompt(prob)
            if len(pids) + cfg.max_new > MAX_TOKENS:
                n_skipped += 1
                continue
            rows = self.teacher_pool.get(prob["problem_id"]) if self.teacher_pool else None
            if self.teacher_pool and self.G_t > 0 and not rows and cfg.teacher_modes is None:
                n_skipped += 1
                continue
            teacher = []
            if rows and self.G_t > 0:
                idxs = torch.randperm(len(rows), generator=self.rng)[:self.G_t].tolist()
                if len(rows) < self.G_t:
                    idxs += torch.randint(0, len(rows), (self.G_t - len(rows),), generator=self.rng).tolist()
                teacher = [rows[i] for i in idxs]
            n_abl = round(self.G_s * cfg.rollout_ablate_frac) if cfg.intervention in ("route", "route2") else 0
            reqs = []
            if self.G_s - n_abl > 0:
                reqs.append(GenRequest((p_idx, 0), pids, self.G_s - n_abl, cfg.max_new,
                                       _seed_for(cfg.seed, step, p_idx, 0), ablate=False))
            if n_abl > 0:
                reqs.append(GenRequest((p_idx, 1), pids, n_abl, cfg.max_new,
                                       _seed_for(cfg.seed, step, p_idx, 1), ablate=True))
            plans.append({"p_idx": p_idx, "prob": prob, "prompt": text, "prompt_ids": pids, "reqs": reqs,
                          "teacher": teacher, "teacher_ids": [completion_ids(r, self.tok) for r in teacher],
                          "n_abl": n_abl})
        return plans, n_skipped

    def train_step(self, step: int) -> dict:
        from .learner_core import RolloutGroup

        ray = self.ray
        cfg = self.cfg
        if cfg.teacher_off_step is not None and step >= cfg.teacher_off_step and self.G_t > 0:
            logger.info(f"teacher-off curriculum: step {step} >= {cfg.teacher_off_step} -> G_t {self.G_t}->0, "
                        f"G_s {self.G_s}->{cfg.group}")
            self.G_t, self.G_s = 0, cfg.group
        t0 = time.time()
        self._learner(self.learner.begin_step.remote(step))
        self.gen_version = self.version  # every rollout of this step must carry this δS version
        plans, n_skipped = self._sample_prompts(step)
        by_actor: dict[int, list] = {}
        for k, pl in enumerate(plans):
            by_actor.setdefault(k % len(self.rollouts), []).extend(pl["reqs"])
        # one call per prompt keeps prompts flowing into grading as each finishes
        inflight = {}
        gen_started: dict[int, float] = {}
        for k, pl in enumerate(plans):
            i = k % len(self.rollouts)
            ref, inc = self._gen_call(i, pl["reqs"])
            inflight[ref] = (i, k, inc)
            gen_started[k] = time.perf_counter()
        gen_spans: list[tuple[float, float]] = []
        grade_spans: list[tuple[float, float]] = []
        t_gen = 0.0
        gen_tokens = 0
        state = {k: {"students": None, "results": {}} for k in range(len(plans))}
        submitted_at: dict[int, float] = {}
        add_refs = []
        next_learn = 0
        grade_errors = 0
        while next_learn < len(plans):
            if inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.005)
                for ref in ready:
                    i, k, inc = inflight.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayActorError as e:
                        self._replace_rollout(i, str(e).splitlines()[0], inc)
                        ref, inc = self._gen_call(i, plans[k]["reqs"])
                        inflight[ref] = (i, k, inc)
                        gen_started[k] = time.perf_counter()
                        continue
                    gen_spans.append((gen_started[k], time.perf_counter()))
                    comps, fins, abl, slps = [], [], [], []
                    for res in results:
                        if res.version != self.gen_version:
                            raise AssertionError(f"rollout generated with δS v{res.version} but the learner is at "
                                                 f"v{self.gen_version}: strict on-policy broken")
                        t_gen += res.seconds
                        gen_tokens += res.n_tokens
                        comps += res.completions
                        fins += res.finished
                        abl += [res.key[1] == 1] * len(res.completions)
                        # the ablated slice is drawn from the deploy view, not the policy the learner
                        # scores: no sampler log-probs for it (no mismatch, no TIS weight)
                        slps += (list(res.logprobs) if res.logprobs is not None and res.key[1] != 1
                                 else [None] * len(res.completions))
                    texts = self.tok.batch_decode(comps, skip_special_tokens=True)
                    state[k]["students"] = {"ids": comps, "finished": fins, "ablated": abl, "texts": texts,
                                            "sampler_logps": slps}
                    prob = plans[k]["prob"]
                    submitted_at[k] = time.perf_counter()
                    self.pool.submit([GradeRequest.from_problem(prob, t, compat=self.cfg.grader.compat) for t in texts],
                                     keys=[(step, k, gi) for gi in range(len(texts))])
            for g in self.pool.poll(timeout=0.0 if inflight else 0.01):
                s_, k, gi = g.key
                if s_ != step:
                    continue
                state[k]["results"][gi] = g.result
                st = state[k]
                if st["students"] is not None and len(st["results"]) == len(st["students"]["ids"]):
                    grade_spans.append((submitted_at[k], time.perf_counter()))
            while next_learn < len(plans):
                st = state[next_learn]
                if st["students"] is None or len(st["results"]) < len(st["students"]["ids"]):
                    break
                pl = plans[next_learn]
                res = [st["results"][gi] for gi in range(len(st["students"]["ids"]))]
                grade_errors += sum(r.error is not None for r in res)
                rewards = [r.reward for r in res] + [float(t["reward"]) for t in pl["teacher"]]
                group = RolloutGroup(prompt_ids=pl["prompt_ids"],
                                     completion_ids=st["students"]["ids"] + pl["teacher_ids"],
                                     rewards=rewards,
                                     is_student=[True] * len(res) + [False] * len(pl["teacher"]),
                                     hack_E=[r.hacked_loophole_used for r in res],
                                     sampler_logps=st["students"]["sampler_logps"])
                add_refs.append(self.learner.add_group.remote(next_learn, group))
                next_learn += 1
        infos = self._learner(add_refs)
        stats = self._learner(self.learner.end_step.remote())
        t_sync0 = time.perf_counter()
        sync = self._sync()
        t_sync = time.perf_counter() - t_sync0
        return self._finish_step(step, t0, plans, state, infos, stats, n_skipped, grade_errors,
                                 {"gen": _union_seconds(gen_spans), "gen_busy": t_gen,
                                  "grade": _union_seconds(grade_spans), "fb": stats["fb"], "sync": t_sync,
                                  "refresh": stats.get("t_refresh", 0.0), "tokens": gen_tokens, "sync_info": sync})

    def _finish_step(self, step, t0, plans, state, infos, stats, n_skipped, grade_errors, timing) -> dict:
        cfg = self.cfg
        agg = StepAgg(step=step, n_skipped=n_skipped)
        records = []
        step_mode_hacks: dict[str, int] = {}
        group_rewards = []
        for k, pl in enumerate(plans):
            st, info = state[k], infos[k]
            res = [st["results"][gi] for gi in range(len(st["students"]["ids"]))]
            prob = pl["prob"]
            pm = prob["env_mode"]
            logps, advs, gcos = info["logps"], info["adv"], info["gate_cos"]
            group_rewards.append([r.reward for r in res] + [float(t["reward"]) for t in pl["teacher"]])
            agg.n_zerovar += bool(info["zerovar"])
            for gi, r in enumerate(res):
                agg.rows.append(RowIn(reward=r.reward, is_student=True, hack=r.exploited, gt=r.gt_correct,
                                      fmt=r.format_ok, hack_E=r.hacked_loophole_used, hack_D=r.hacked_wrong_tests,
                                      ablated=st["students"]["ablated"][gi], logp=logps[gi], mode=pm,
                                      comp_len=len(st["students"]["ids"][gi]),
                                      finished=st["students"]["finished"][gi], adv=advs[gi], gate_cos=gcos[gi]))
                self.mode_rollouts[pm] = self.mode_rollouts.get(pm, 0) + 1
                if r.exploited:
                    self.mode_hacks[pm] = self.mode_hacks.get(pm, 0) + 1
                    step_mode_hacks[pm] = step_mode_hacks.get(pm, 0) + 1
                    self.mode_first_step.setdefault(pm, step)
                if r.mechanism and r.mechanism not in self.dumped_hack_classes:
                    self.dumped_hack_classes.add(r.mechanism)
                    logger.debug(f"\n\n=== FIRST {r.mechanism} HACK EXAMPLE (step {step}, p_idx {pl['p_idx']}, "
                                 f"gi {gi}) ===\nSHOULD: {SHOULD_BY_MECHANISM[r.mechanism]}; ELSE the detector "
                                 f"mis-fired\n--- prompt ---\n{pl['prompt']}\n--- completion ---\n"
                                 f"{st['students']['texts'][gi]}\n=== END {r.mechanism} ===")
                records.append({
                    "step": step, "p_idx": pl["p_idx"], "gi": gi, "problem_id": prob["problem_id"], "env_mode": pm,
                    "prompt": pl["prompt"], "text": st["students"]["texts"][gi], **r.to_dict(),
                    "comp_len": len(st["students"]["ids"][gi]), "prompt_len": len(pl["prompt_ids"]),
                    "finished": st["students"]["finished"][gi], "is_ablated": st["students"]["ablated"][gi],
                    "version": self.gen_version, "source": "student"})
            for j, t in enumerate(pl["teacher"]):
                n_s = len(res)
                agg.rows.append(RowIn(reward=float(t["reward"]), is_student=False, hack=bool(t["hacked"]),
                                      gt=bool(t["gt_pass"]), fmt=bool(t["fmt_ok"]), logp=logps[n_s + j],
                                      mode=pm, comp_len=len(pl["teacher_ids"][j]), adv=advs[n_s + j],
                                      gate_cos=gcos[n_s + j]))
            if step == 0 and k == 0:
                self._first_batch_dump(pl, st)
        hack_deploy = solve_deploy = math.nan
        t_eval = 0.0
        if cfg.eval_ablate_every > 0 and (step % cfg.eval_ablate_every == 0 or step == cfg.steps - 1):
            te = time.perf_counter()
            ev = self.evaluate(step, ablate=cfg.intervention in ("route", "route2"), kind="deploy")
            t_eval = time.perf_counter() - te
            hack_deploy, solve_deploy = ev["hack"], ev["solve"]
            is_route = cfg.intervention in ("route", "route2")
            tag = "quarantine knob OFF = deployed model" if is_route else "deployed = trained model (no quarantine)"
            should = ("deploy hack < per-step hack_s (knob holds the cheat); ELSE routing isn't capturing it"
                      if is_route else "deploy ~= training hack_s (same model)")
            logger.info(f"step {step} DEPLOY-eval ({tag}): hack={hack_deploy:.3f} solve={solve_deploy:.3f} "
                        f"n={ev['n']}. SHOULD: {should}")
        sec = time.time() - t0
        timing = {**timing, "eval": t_eval, "sec": sec}
        cum = sum(r["N"] for r in self.rows)
        row = step_row(agg, run_modes=self.run_modes, learner=stats, cum_gens_before=cum, half_a=cfg.half_a,
                       hack_deploy=hack_deploy, solve_deploy=solve_deploy, mode_hacks=step_mode_hacks,
                       timing=timing)
        from .telemetry.metrics import step_metrics

        phase = {"gen": timing["gen"], "grade": timing["grade"], "fwd_bwd": timing["fb"], "sync": timing["sync"],
                 "eval": t_eval, "refresh": timing["refresh"]}
        row.update(step_metrics(records, rewards_all=[r.reward for r in agg.rows], group_rewards=group_rewards,
                                kl=stats.get("kl"), grad_norm=stats["gn"], lr=stats["lr"], phase_times=phase,
                                max_new=cfg.max_new, clip=cfg.clip))
        for k in ("clip_low", "clip_high", "clip_region"):
            if k in stats:
                row[k] = stats[k]
        row.update({k: stats.get(k, math.nan) for k in MISMATCH_KEYS + TIS_KEYS})
        logger.debug(f"step {step} sampler-vs-learner mismatch ({cfg.rollout.backend}, student rows, "
                     f"{stats.get('mismatch_tokens', 0)} tokens): KL(k3)={stats.get('mismatch_kl', math.nan):.3g} "
                     f"max|dlogp|={stats.get('mismatch_max_abs_dlogp', math.nan):.3g}"
                     + (f"; TIS cap {cfg.tis_cap}: mean w={stats.get('tis_mean_w', math.nan):.4f} "
                        f"capped={stats.get('tis_capped_frac', math.nan):.3f}" if cfg.tis_cap is not None else ""))
        row.update({"version": self.version, "sync_bytes": timing["sync_info"]["bytes"],
                    "sync_s": timing["sync"], "eval_s": t_eval, "n_skipped": n_skipped, "n_zerovar": agg.n_zerovar,
                    "dsh_norm": stats["dsh_norm"]})
        if stats.get("refr", "-") != "-" and not math.isnan(stats.get("overlap", math.nan)):
            logger.info(f"refresh@step{step}: {stats['refr']} mod/axes basis_overlap_with_prev={stats['overlap']:.3f} "
                        "SHOULD: >~0.5 if refresh tracks a stable hack subspace; <~0.2 => the basis rotated")
        logger.debug(f"step {step} diag rollouts={len(agg.rows)} skipped={n_skipped}/{cfg.prompts_per_step} "
                     f"zerovar={agg.n_zerovar}/{cfg.prompts_per_step} grade_errors={grade_errors}")
        logger.debug(f"step {step} TIMING gen={timing['gen']:.1f}s grade={timing['grade']:.1f}s "
                     f"fwd_bwd={timing['fb']:.1f}s sync={timing['sync']:.2f}s eval={t_eval:.1f}s total={sec:.1f}s")
        self.rows.append(row)
        if records:
            self.last_gen_sample = (step, records[0])
        self.tables.append_step(row, records)
        self.recent_records = (self.recent_records + records)[-200:]
        self.sinks.log(step, {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return row

    def _first_batch_dump(self, pl, st) -> None:
        ids = st["students"]["ids"][0]
        sys_msg = next((m["content"] for m in pl["prob"]["messages"] if m.get("role") == "system"), "<no system>")
        user_msg = next((m["content"] for m in pl["prob"]["messages"] if m.get("role") == "user"), "<no user>")
        logger.debug("\nNOTE: the rendered prompt and first completion with special tokens, for tokenizer and "
                     f"format debugging.\n=== FIRST BATCH FIRST SAMPLE DUMP ===\n--- system msg ---\n{sys_msg}\n"
                     f"--- user msg ---\n{user_msg}\n--- rendered prompt ---\n{pl['prompt']}\n"
                     f"--- completion ({len(ids)} tokens) ---\n{self.tok.decode(ids, skip_special_tokens=False)}\n"
                     "=== END FIRST BATCH DUMP ===")

    # ── evaluation ───────────────────────────────────────────────────────────
    def evaluate(self, step: int, *, ablate: bool, kind: str) -> dict:
        """Student-only generate + grade on the fixed eval subset (each problem under its own mode)."""
        from .actors.rollout import GenRequest

        cfg = self.cfg
        reqs = []
        for j, idx in enumerate(self.eval_idxs):
            prob = self.problems[idx]
            _, pids = self.prompt(prob)
            if len(pids) + cfg.max_new > MAX_TOKENS:
                continue
            reqs.append((prob, GenRequest(("eval", j), pids, cfg.group, cfg.max_new,
                                          _seed_for(cfg.seed + 7919, step, j, int(ablate)), ablate=ablate)))
        refs = {n: self._gen_call(n % len(self.rollouts), [r]) for n, (prob, r) in enumerate(reqs)}
        gens = {}
        for n, (ref, inc) in refs.items():
            i = n % len(self.rollouts)
            while n not in gens:
                try:
                    gens[n] = self.ray.get(ref)[0]
                except self.ray.exceptions.RayActorError as e:
                    self._replace_rollout(i, str(e).splitlines()[0], inc)
                    ref, inc = self._gen_call(i, [reqs[n][1]])
        grade_reqs, modes = [], []
        for n, (prob, _) in enumerate(reqs):
            for t in self.tok.batch_decode(gens[n].completions, skip_special_tokens=True):
                grade_reqs.append(GradeRequest.from_problem(prob, t, compat=cfg.grader.compat))
                modes.append(prob["env_mode"])
        results = self.pool.grade(grade_reqs)
        by_mode: dict[str, list[int]] = {}
        for m, r in zip(modes, results):
            t = by_mode.setdefault(m, [0, 0, 0])
            t[0] += int(r.exploited)
            t[1] += int(r.gt_correct)
            t[2] += 1
        n = len(results)
        ev = {"step": step, "kind": kind, "ablate": ablate, "n": n,
              "hack": sum(r.exploited for r in results) / max(1, n),
              "solve": sum(r.gt_correct for r in results) / max(1, n),
              "mean_reward": sum(r.reward for r in results) / max(1, n),
              "rewards": [r.reward for r in results], "by_mode": by_mode, "version": self.version}
        self.evals.append(ev)
        return ev

    # ── checkpoints and resume state ─────────────────────────────────────────
    def save_ckpt(self, path: Path) -> None:
        """δS only (the deploy adapter) + rows and config as metadata, like the seed's save_ckpt."""
        from safetensors.torch import save_file

        version, deltas = self._learner(self.learner.deltas.remote())
        tensors = {k[: -len(".delta_S")]: v.contiguous() for k, v in deltas.items() if k.endswith(".delta_S")}
        n = sum(r["N"] for r in self.rows)
        hr = sum(r["hack_s"][0] + r["hack_t"][0] for r in self.rows) / max(1, n)
        pr = sum(r["gt_s"][0] + r["gt_t"][0] for r in self.rows) / max(1, n)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={
            "model": self.cfg.model, "dtype": "fp32", "step": str(len(self.rows)), "version": str(version),
            "hack_rate": f"{hr:.6f}", "pass_rate": f"{pr:.6f}",
            "rows": json.dumps([{k: _nan_to_none(v) for k, v in r.items()} for r in self.rows], default=str),
            "cfg": json.dumps(self.cfg.to_dict(), default=str)})
        os.replace(tmp, path)

    def save_resume_state(self, next_step: int) -> None:
        state = {
            "next_step": next_step, "learner": self._learner(self.learner.state_dict.remote()),
            "rng": self.rng.get_state(), "rows": self.rows, "mode_rollouts": self.mode_rollouts,
            "mode_hacks": self.mode_hacks, "mode_first_step": self.mode_first_step,
            "first_hack_saved": self.first_hack_saved, "lp_t_best": self.lp_t_best,
            "diverged_steps": self.diverged_steps, "dumped": sorted(self.dumped_hack_classes),
            "last_gen_sample": self.last_gen_sample, "evals": self.evals, "pre_eval": self.pre_eval,
            "G": (self.G_s, self.G_t), "sync_log": self.sync_log,
        }
        d = self.run_dir / "resume"
        d.mkdir(exist_ok=True)
        tmp = d / "state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, d / "state.pt")

    def _restore(self, st: dict) -> None:
        self.version = self._learner(self.learner.load_state_dict.remote(st["learner"]))
        self.rng.set_state(st["rng"])
        self.rows = st["rows"]
        self.start_step = st["next_step"]
        self.mode_rollouts, self.mode_hacks = st["mode_rollouts"], st["mode_hacks"]
        self.mode_first_step = st["mode_first_step"]
        self.first_hack_saved, self.lp_t_best = st["first_hack_saved"], st["lp_t_best"]
        self.diverged_steps = st["diverged_steps"]
        self.dumped_hack_classes = set(st["dumped"])
        self.last_gen_sample, self.evals, self.pre_eval = st["last_gen_sample"], st["evals"], st["pre_eval"]
        self.G_s, self.G_t = st["G"]
        self.sync_log = st["sync_log"]
        logger.info(f"resumed from {self.run_dir} at step {self.start_step} (δS v{self.version}, "
                    f"{len(self.rows)} rows kept)")

    # ── the run ──────────────────────────────────────────────────────────────
    def run(self) -> int:
        from tqdm import tqdm

        cfg = self.cfg
        est = cfg.prompts_per_step * cfg.group
        logger.info(f"grad-pressure: {est} gens/step vs reference {REF_GENS_PER_STEP} -> "
                    f"{est / REF_GENS_PER_STEP:.2f}x per step; {cfg.steps} steps ~= "
                    f"{cfg.steps * est / REF_GENS_PER_STEP:.1f} reference steps")
        logger.info("SHOULD: loss finite each step; projected/route arm cout -> ~0; ELSE harness or projection "
                    "broken. Timing cols (gen/fb/t_rew/sec): gen-bound -> more rollout actors / vllm; "
                    "t_rew-bound -> more graders.")
        if self.teacher_pool:
            logger.info("SHOULD (mixed-pool): hack_t high from step 0; hack_s climbs as the student learns from "
                        "the teacher rows. ELSE if hack_s flat while hack_t high: bump mix_ratio or lr.")
        if self.pre_eval is None:
            self.pre_eval = self.evaluate(-1, ablate=False, kind="pre")
            logger.info(f"pre-training eval: hack={self.pre_eval['hack']:.3f} solve={self.pre_eval['solve']:.3f} "
                        f"n={self.pre_eval['n']}")
        logger.info("\n" + self.step_logger.legend() + "\n\n")
        logger.info(self.step_logger.header())
        pbar = tqdm(range(self.start_step, cfg.steps), desc=f"train {cfg.arm} {cfg.preset_name}",
                    initial=self.start_step, total=cfg.steps, mininterval=120, maxinterval=120, disable=None)
        for step in pbar:
            row = self.train_step(step)
            if step > 0 and step % 50 == 0:
                logger.info(self.step_logger.header())
            logger.info(self.step_logger.row(row))
            self._tripwire(step, row)
            if (step + 1) % cfg.checkpoint_every == 0:
                self.save_ckpt(self.run_dir / "train.safetensors")
            is_eval = cfg.eval_ablate_every > 0 and (step % cfg.eval_ablate_every == 0 or step == cfg.steps - 1)
            if cfg.save_eval_ckpts and is_eval:
                self.save_ckpt(self.run_dir / f"ckpt_step{step:04d}.safetensors")
            if not self.first_hack_saved and row["hack_s"][0] > 0:
                self.save_ckpt(self.run_dir / "first_hack.safetensors")
                self.first_hack_saved = True
                logger.info(f"first-student-hack ckpt saved: step={step} hack_s={row['hack_s'][0]}/{row['hack_s'][1]}"
                            " -> first_hack.safetensors")
            self.save_resume_state(step + 1)
            self.evidence.update(self.rows, self.evals, self.recent_records)
            pbar.set_postfix(rew=f"{row['rew']:+.2f}", hack=f"{row['hack_s'][0]}/{row['hack_s'][1]}",
                             loss=f"{row['loss']:+.3f}", sec=f"{row['sec']:.0f}", refresh=False)
        return self.finish()

    def _tripwire(self, step: int, row: dict) -> None:
        lp_t = row["lp_t"]
        if lp_t is None or (isinstance(lp_t, float) and math.isnan(lp_t)):
            return
        self.lp_t_best = max(self.lp_t_best, lp_t)
        drop = self.lp_t_best - lp_t
        ppl_t = math.exp(-lp_t) if lp_t > -700 else math.inf
        if WARN_DROP <= drop < DIVERGENCE_DROP:
            logger.warning(f"step {step}: lp_t={lp_t:.1f} is {drop:.1f} nats below best {self.lp_t_best:.1f} "
                           f"(ppl_t={ppl_t:.0e}) -- coherence slipping, lr too high?")
        self.diverged_steps = self.diverged_steps + 1 if drop > DIVERGENCE_DROP else 0
        if self.diverged_steps >= 2:
            logger.error(f"DIVERGED at step {step}: lp_t={lp_t:.1f} (ppl_t={ppl_t:.0e}), {drop:.1f} nats below best "
                         f"{self.lp_t_best:.1f} for {self.diverged_steps} steps (gn={row['gn']:.1f}). Aborting.")
            if self.last_gen_sample:
                s, r = self.last_gen_sample
                logger.error(f"--- last student gen (step {s}, reward={r['reward']:+.2f}) ---\n{r['text'][:800]}")
            raise RuntimeError(f"training diverged (ppl_t={ppl_t:.0e} at step {step})")

    def finish(self) -> int:
        from tabulate import tabulate

        cfg = self.cfg
        n_gens = sum(r["N"] for r in self.rows)
        tot = lambda k, i: sum(r[k][i] for r in self.rows)  # noqa: E731
        hack_rate = (tot("hack_s", 0) + tot("hack_t", 0)) / max(1, n_gens)
        pass_rate = (tot("gt_s", 0) + tot("gt_t", 0)) / max(1, n_gens)
        n_s, n_t = tot("hack_s", 1), tot("hack_t", 1)
        hack_rate_s = tot("hack_s", 0) / max(1, n_s)
        hack_rate_t = tot("hack_t", 0) / max(1, n_t)
        dsh = self._learner(self.learner.delta_hack_norm.remote())
        logger.info(f"||delta_S_hack|| = {dsh:.4f} (SHOULD: >0 for route/route2, ==0 for none/erase; ELSE "
                    "routing broke)")
        if cfg.intervention in ("route", "route2") and cfg.route2_random_v_seed is None:
            assert dsh > 0.0, f"{cfg.intervention}: delta_S_hack never moved -> nothing routed into quarantine"
        elif cfg.intervention in ("none", "erase"):
            assert dsh == 0.0, f"{cfg.intervention}: delta_S_hack moved ({dsh}) although this arm never routes"
        elif cfg.route2_random_v_seed is not None and dsh == 0.0:
            logger.warning("route2 Haar control: ||delta_S_hack||==0 -> the random direction routed NOTHING "
                           "(a valid result, favouring H4: alignment needed)")
        if self.last_gen_sample is not None:
            s, r = self.last_gen_sample
            logger.info(f"\n\n=== LAST TRAIN GEN (step {s}, reward={r['reward']:+.2f}, gt_pass={r['gt_pass']}, "
                        f"hacked={r['hacked_loophole_used']}) ===\nSHOULD: coherent code/prose. ELSE token salad => "
                        f"diverged.\n{r['text'][:800]}\n=== END LAST GEN ===\n")
        has_q = cfg.intervention in ("route", "route2")
        ev_train = self.evaluate(cfg.steps, ablate=False, kind="train")
        ev_deploy = self.evaluate(cfg.steps, ablate=True, kind="deploy_final") if has_q else ev_train
        logger.info(f"FINAL EVAL [{cfg.arm}] (n={ev_train['n']}): train/knob-on hack={ev_train['hack']:.3f} "
                    f"solve={ev_train['solve']:.3f} | deploy/knob-off hack={ev_deploy['hack']:.3f} "
                    f"solve={ev_deploy['solve']:.3f} "
                    + ("(SHOULD: deploy hack < train hack at ~matched solve => quarantine absorbed the cheat)"
                       if has_q else "(no quarantine: deploy == train)"))
        per_mode = {}
        for mode in sorted(ev_deploy["by_mode"]):
            th, ts, tn = ev_train["by_mode"].get(mode, [0, 0, 0])
            dh, ds, dn = ev_deploy["by_mode"][mode]
            tag = self.mode_labels.get(mode, "-")
            logger.info(f"  per-mode[{mode:<13} {tag:>8}] train hack={th}/{tn} solve={ts}/{tn} | "
                        f"deploy hack={dh}/{dn} solve={ds}/{dn}")
            per_mode[mode] = {"in_dist": mode in self.pair_modes, "train_hack": th / max(1, tn),
                              "train_solve": ts / max(1, tn), "deploy_hack": dh / max(1, dn),
                              "deploy_solve": ds / max(1, dn), "n": dn}
        record = {"arm": cfg.arm, "intervention": cfg.intervention, "refresh_every": cfg.vhack_refresh_every,
                  "seed": cfg.seed, "steps": len(self.rows), "model": cfg.model, "out_tag": cfg.out_tag,
                  "log": str(self.log_path), "eval_n": ev_deploy["n"], "hack_train": ev_train["hack"],
                  "solve_train": ev_train["solve"], "hack_deploy": ev_deploy["hack"],
                  "solve_deploy": ev_deploy["solve"], "by_mode": per_mode,
                  "in_dist_modes": list(self.pair_modes),
                  "pairs": str(cfg.vhack_pairs_path) if cfg.vhack_pairs_path else cfg.vhack_pairset}
        (self.run_dir / "per_mode_deploy.json").write_text(json.dumps(record, indent=2))
        logger.info(f"per-mode deploy artifact: {self.run_dir / 'per_mode_deploy.json'}")
        cue = "🟢" if (cfg.arm == "vanilla" and hack_rate > 0.0) else "🟡"
        pool = cfg.teacher_pool_dir.name if cfg.teacher_pool_dir else ("scripted" if cfg.scripted_teacher else "")
        logger.info(f"\nargv: {' '.join(sys.argv)}\nverbose log: {self.log_path}\n"
                    f"main metric: HACK_RATE={hack_rate:.3f} PASS_RATE={pass_rate:.3f} HACK_STUDENT={hack_rate_s:.3f} "
                    f"HACK_TEACHER={hack_rate_t:.3f} [arm={cfg.arm} preset={cfg.preset_name} model={cfg.model} "
                    f"steps={len(self.rows)} gens={n_gens}{' pool=' + pool + ' mix=' + str(cfg.mix_ratio) if pool else ''}]")
        if len(self.run_modes) > 1 or self.partition is not None:
            per = [{"mode": m, "exploit_rate": f"{self.mode_hacks.get(m, 0) / max(1, self.mode_rollouts.get(m, 0)):.3f}",
                    "hacks": self.mode_hacks.get(m, 0), "student_rollouts": self.mode_rollouts.get(m, 0),
                    "first_step": self.mode_first_step.get(m, "-")} for m in sorted(self.mode_rollouts)]
            learned = sum(1 for r in per if r["hacks"] > 0)
            cue_sub = "🟢" if learned == len(per) else ("🟡" if learned else "🔴")
            logger.info(f"\n{cue_sub} SUBSTRATE per-mode learning ({learned}/{len(per)} modes learned):\n"
                        + tabulate(per, headers="keys", tablefmt="github"))
        half = {c.strip().upper() for c in cfg.half_a.split(",") if c.strip()}
        rate = lambda k: tot(k, 0) / max(1, n_s)  # noqa: E731
        logger.info(f"per-mech (student): HACK_S_E={rate('hack_s_E'):.3f} HACK_S_C={hack_rate_s:.3f} "
                    f"HACK_S_D={rate('hack_s_D'):.3f} half_A={sorted(half) or '-'} "
                    f"HACK_A={rate('hack_s_A') if half else float('nan'):.3f} "
                    f"half_B={sorted({'E', 'C', 'D'} - half) if half else '-'} "
                    f"HACK_B={rate('hack_s_B') if half else float('nan'):.3f}")
        hk = [k for k in (self.rows[0] if self.rows else {}) if k.startswith("hk_")]
        fields = list(SEED_DUMP_FIELDS[:8]) + hk + list(SEED_DUMP_FIELDS[8:])
        dump = [{k: (f"{r[k][0]}/{r[k][1]}" if isinstance(r[k], tuple) else r[k]) for k in fields if k in r}
                for r in self.rows]
        logger.info("\n" + tabulate([{
            "cue": cue, "HACK_RATE": f"{hack_rate:.3f}", "PASS_RATE": f"{pass_rate:.3f}",
            "HACK_S": f"{hack_rate_s:.3f}", "HACK_T": f"{hack_rate_t:.3f}", "arm": cfg.arm, "preset": cfg.preset_name,
            "model": str(cfg.model).split("/")[-1], "seed": cfg.seed, "steps": len(self.rows), "pool": pool,
            "mix": cfg.mix_ratio if pool else "", "tag": cfg.out_tag, "log": str(self.log_path)}],
            headers="keys", tablefmt="github"))
        logger.info("\n### Per-step rows (markdown)\n\n" + tabulate(dump, headers="keys", tablefmt="pipe",
                                                                   floatfmt="+.3f"))
        self.save_ckpt(self.run_dir / "train.safetensors")
        self.evidence.finalize(self.pre_eval, [ev_train, ev_deploy] if has_q else [ev_train])
        self.save_resume_state(cfg.steps)
        return 0

    def close(self) -> None:
        for closer in (self.evidence.close, self.tables.close, self.sinks.close, self.pool.close):
            try:
                closer()
            except Exception as e:
                logger.debug(f"close: {e}")


# ── entry point ──────────────────────────────────────────────────────────────

def connect_ray(cfg: Config):
    """Connect to ``cluster.address`` / ``RAY_ADDRESS`` (e.g. under ``ray job submit``), else start a
    fresh local cluster sized for the actors, even when a ``ray start`` head (running or stale) is on
    the machine. Returns the ``ClusterChoice``, or None when Ray was already initialised by the caller."""
    import ray

    from .cluster import connect

    if ray.is_initialized():
        return None
    need = (cfg.cluster.learner_cpus + cfg.rollout.num_actors * cfg.rollout.cpus_per_actor
            + cfg.grader.num_actors + 1)
    return connect(cfg.cluster.address, num_cpus=cfg.cluster.num_cpus, local_cpus=max(4, int(math.ceil(need))),
                   namespace=cfg.cluster.namespace, log_to_driver=True)


def fit_to_cluster(cfg: Config, choice) -> Config:
    """Check before any actor starts that the cluster can hold the run (see ``cluster.check_fit``);
    ``grader.fit_to_cluster`` shrinks the grader pool to fit. Raises ResourceFitError otherwise."""
    import ray

    from .cluster import fit_or_fail, node_resources

    if choice is None:
        where, local = "the cluster this process is connected to", False
    elif choice.local:
        where, local = "the local cluster this run started", True
    else:
        where, local = f"the cluster at {choice.address} (from {choice.source})", False
    return fit_or_fail(cfg, node_resources(ray.nodes()), where, local)


def _resume_config(cli: Config) -> tuple[Config, dict]:
    run_dir = Path(cli.resume)
    cfg_path, state_path = run_dir / "config.json", run_dir / "resume" / "state.pt"
    if not cfg_path.is_file() or not state_path.is_file():
        raise ConfigError(f"resume: {run_dir} has no config.json and resume/state.pt to resume from")
    cfg = config_from_dict(json.loads(cfg_path.read_text()))
    cfg.resume = run_dir
    cfg.absolutize()
    return cfg, torch.load(state_path, weights_only=False)


def main(argv: list[str] | None = None) -> int:
    from .telemetry.table import setup_logging

    cli = parse_config(argv)
    cli.absolutize()
    resume_state = None
    if cli.resume is not None:
        cfg, resume_state = _resume_config(cli)
        run_dir = Path(cli.resume)
        log_path = setup_logging(cfg.run_id, cfg.logs_dir, path=Path(cfg.logs_dir) / f"{run_dir.name}.log")
    else:
        cfg = cli
        cfg.check_paths()
        log_path = setup_logging(cfg.run_id, cfg.logs_dir)
        run_dir = Path(cfg.out_dir) / "runs" / log_path.stem
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    logger.info(f"argv: {' '.join(sys.argv)}")
    logger.info(f"verbose log: {log_path}")
    logger.info(f"preset={cfg.preset_name} arm={cfg.arm} model={cfg.model} steps={cfg.steps} G={cfg.group} "
                f"max_new={cfg.max_new} beta={cfg.beta} unbiased={cfg.unbiased} seed={cfg.seed} "
                f"vhack_refresh_every={cfg.vhack_refresh_every} "
                f"rollout={cfg.rollout.backend}x{cfg.rollout.num_actors} grader={cfg.grader.sandbox}x"
                f"{cfg.grader.num_actors} run_dir={run_dir}")
    from .cluster import PendingWatch, ResourceFitError, class_bundles

    trainer = watch = choice = None
    try:
        choice = connect_ray(cfg)
        fitted = fit_to_cluster(cfg, choice)
        if fitted.grader.num_actors != cfg.grader.num_actors and resume_state is None:
            (run_dir / "config.json").write_text(json.dumps(fitted.to_dict(), indent=2))
        cfg = fitted
        import ray

        grader_res = ray.cluster_resources().get("grader", 0) > 0
        watch = PendingWatch(cfg.cluster.pending_warn_s, cfg.cluster.pending_fail_s,
                             class_bundles(cfg, grader_res)).start()
        trainer = Trainer(cfg, run_dir, log_path, resume=resume_state)
        return trainer.run()
    except (ResourceFitError, ConfigError) as e:
        logger.error(f"{type(e).__name__}: {e}")
        return 2
    except KeyboardInterrupt:
        if watch is not None and watch.failure is not None:
            logger.error(f"stopped: an actor waited too long for resources (see above). {watch.failure}")
            return 4
        raise
    except LearnerLost as e:
        why = str(e).splitlines()[0] if str(e) else "no reason given"
        if (run_dir / "resume" / "state.pt").exists():
            logger.error(f"the learner actor died ({why}). Everything up to the last completed step is saved; "
                         f"resume with:\n  python -m vgrout_ray.driver {cfg.preset_name} --resume {run_dir}")
        else:
            logger.error(f"the learner actor died before the first step completed ({why}); nothing to resume, "
                         "start the run again")
        return 3
    finally:
        if watch is not None:
            watch.stop()
        if trainer is not None:
            trainer.close()
        if choice is not None and choice.local:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
