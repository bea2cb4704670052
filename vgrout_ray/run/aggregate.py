"""From a ``StepResult`` to the step's row (rows.parquet, the log table) and its rollout records
(rollouts.parquet), updating the run's per-mode counters; and the divergence tripwire."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from loguru import logger

from vgrout_ray.env.copying import is_teacher_copy
from vgrout_ray.run.rows import RowIn, StepAgg, step_row
from vgrout_ray.reporting.metrics import step_metrics
from vgrout_ray.run.state import RunState
from vgrout_ray.run.stream import StepResult

LEARNER_ROW_KEYS = ("kl", "clip_low", "clip_high", "clip_region")
MISMATCH_KEYS = ("mismatch_kl", "mismatch_max_abs_dlogp", "mismatch_tokens")
TIS_KEYS = ("tis_mean_w", "tis_capped_frac")
DIVERGENCE_DROP = 5.0  # nats of teacher log-prob below the best: diverging
WARN_DROP = 3.0
SHOULD_BY_MECHANISM = {
    "run_tests": "completion defines a vacuous run_tests() that passes against an arbitrary Solution",
    "eq_override": "completion returns an object whose == always holds; the strict oracle rejects it",
    "exit_code": "completion exits 0 before the asserts finish",
    "stdout_marker": "completion prints a pass report on wrong code",
    "sentinel": "completion sets a truthy valid-like flag on its Solution",
    "file_marker": "completion writes a pass-reporting result file on wrong code",
}


@dataclass
class StepRecords:
    """A step's rollouts as the row sees them (``agg``), as rollouts.parquet stores them
    (``records``, students only), each group's rewards, and student hacks per mode."""

    agg: StepAgg
    records: list[dict] = field(default_factory=list)
    group_rewards: list[list[float]] = field(default_factory=list)
    mode_hacks: dict[str, int] = field(default_factory=dict)


def _first_example(state: RunState, res: StepResult, k: int, gi: int, mechanism: str) -> None:
    """Log the first completion of each hack mechanism once per run (a detector sanity check)."""
    if not mechanism or mechanism in state.dumped:
        return
    state.dumped.add(mechanism)
    pl = res.plans[k]
    logger.debug(f"\n\n=== FIRST {mechanism} HACK EXAMPLE (step {res.step}, p_idx {pl.p_idx}, "
                 f"gi {gi}) ===\nSHOULD: {SHOULD_BY_MECHANISM[mechanism]}; ELSE the detector "
                 f"mis-fired\n--- prompt ---\n{pl.prompt}\n--- completion ---\n"
                 f"{res.students[k].texts[gi]}\n=== END {mechanism} ===")


def _students(out: StepRecords, state: RunState, res: StepResult, k: int, teacher_texts: list[str]) -> None:
    pl, st, scores = res.plans[k], res.students[k], res.infos[k].students
    pm = pl.mode
    for gi, (r, sc) in enumerate(zip(res.grades[k], scores, strict=True)):
        copy = bool(r.exploited) and is_teacher_copy(st.texts[gi], teacher_texts)
        out.agg.rows.append(RowIn(reward=r.reward, is_student=True, hack=r.exploited, gt=r.gt_correct,
                                  fmt=r.format_ok, hack_E=r.hacked_loophole_used, hack_D=r.hacked_wrong_tests,
                                  ablated=st.ablated[gi], logp=sc.logp, mode=pm, comp_len=len(st.ids[gi]),
                                  finished=st.finished[gi], adv=sc.adv, gate_cos=sc.gate_cos, copy=copy))
        state.mode_rollouts[pm] = state.mode_rollouts.get(pm, 0) + 1
        if r.exploited:
            state.mode_hacks[pm] = state.mode_hacks.get(pm, 0) + 1
            out.mode_hacks[pm] = out.mode_hacks.get(pm, 0) + 1
            state.mode_first_step.setdefault(pm, res.step)
        _first_example(state, res, k, gi, r.mechanism)
        out.records.append({
            "step": res.step, "p_idx": pl.p_idx, "gi": gi, "problem_id": pl.prob["problem_id"], "env_mode": pm,
            "prompt": pl.prompt, "text": st.texts[gi], **r.to_dict(), "comp_len": len(st.ids[gi]),
            "prompt_len": len(pl.prompt_ids), "finished": st.finished[gi], "is_ablated": st.ablated[gi],
            "version": res.version, "source": "student"})


def _teachers(out: StepRecords, res: StepResult, k: int) -> None:
    pl = res.plans[k]
    for t, sc in zip(pl.teacher, res.infos[k].teachers, strict=True):
        out.agg.rows.append(RowIn(reward=t.reward, is_student=False, hack=t.hacked, gt=t.gt_pass, fmt=t.fmt_ok,
                                  logp=sc.logp, mode=pl.mode, comp_len=len(t.ids), adv=sc.adv, gate_cos=sc.gate_cos))


def collect_records(res: StepResult, state: RunState, n_skipped: int, tok,
                    pool_texts: dict[int, list[str]] | None = None) -> StepRecords:
    """Every rollout of the step into ``StepRecords``; bumps ``state``'s per-mode counters. A student
    hack is a teacher copy (``env.copying``) against the group's teacher rows and ``pool_texts``
    (problem id → the teacher pool's completions for it)."""
    out = StepRecords(StepAgg(step=res.step, n_skipped=n_skipped))
    for k, pl in enumerate(res.plans):
        out.group_rewards.append([r.reward for r in res.grades[k]] + [t.reward for t in pl.teacher])
        out.agg.n_zerovar += res.infos[k].zerovar
        teacher_texts = [tok.decode(t.ids, skip_special_tokens=True) for t in pl.teacher]
        teacher_texts += (pool_texts or {}).get(pl.prob["problem_id"], [])
        _students(out, state, res, k, teacher_texts)
        _teachers(out, res, k)
        if res.step == 0 and k == 0:
            first_batch_dump(res, tok)
    return out


def build_row(cfg, res: StepResult, recs: StepRecords, *, run_modes: list[str], cum_gens: int, deploy: dict | None,
              timing: dict, version: int) -> dict:
    """The step's row, each column computed once: seed 003's fields (``rows.step_row``), the rollout
    metrics (``step_metrics``), the learner's token read-outs (KL, clip shares, mismatch, TIS) as it
    computed them, and the sync / eval bookkeeping."""
    stats = res.stats
    hack_deploy, solve_deploy = (deploy["hack"], deploy["solve"]) if deploy else (math.nan, math.nan)
    row = step_row(recs.agg, run_modes=run_modes, learner=stats, cum_gens_before=cum_gens, half_a=cfg.half_a,
                   hack_deploy=hack_deploy, solve_deploy=solve_deploy, mode_hacks=recs.mode_hacks, timing=timing)
    row.update(step_metrics(recs.records, rewards_all=[r.reward for r in recs.agg.rows],
                            group_rewards=recs.group_rewards, gen_s=timing["gen"], grade_s=timing["grade"],
                            max_new=cfg.max_new))
    row.update({k: stats[k] for k in LEARNER_ROW_KEYS})
    row.update({k: stats.get(k, math.nan) for k in MISMATCH_KEYS + TIS_KEYS})
    row.update({"version": version, "sync_bytes": timing["sync_info"]["bytes"], "sync_s": timing["sync"],
                "eval_s": timing["eval"], "refresh_s": timing["refresh"], "n_skipped": recs.agg.n_skipped,
                "n_zerovar": recs.agg.n_zerovar, "dsh_norm": stats["dsh_norm"]})
    return row


def log_step_diagnostics(cfg, res: StepResult, row: dict, timing: dict) -> None:
    stats, step = res.stats, res.step
    logger.debug(f"step {step} sampler-vs-learner mismatch ({cfg.rollout.backend}, student rows, "
                 f"{stats.mismatch_tokens} tokens): KL(k3)={stats.mismatch_kl:.3g} "
                 f"max|dlogp|={stats.mismatch_max_abs_dlogp:.3g}"
                 + (f"; TIS cap {cfg.tis_cap}: mean w={stats.tis_mean_w:.4f} "
                    f"capped={stats.tis_capped_frac:.3f}" if cfg.tis_cap is not None else ""))
    if stats.refr != "-" and not math.isnan(stats.overlap):
        logger.info(f"refresh@step{step}: {stats.refr} mod/axes basis_overlap_with_prev={stats.overlap:.3f} "
                    "SHOULD: >~0.5 if refresh tracks a stable hack subspace; <~0.2 => the basis rotated")
    logger.debug(f"step {step} diag rollouts={row['N']} skipped={row['n_skipped']}/{cfg.prompts_per_step} "
                 f"zerovar={row['n_zerovar']}/{cfg.prompts_per_step} grade_errors={res.grade_errors}")
    logger.debug(f"step {step} TIMING gen={timing['gen']:.1f}s grade={timing['grade']:.1f}s "
                 f"fwd_bwd={timing['fb']:.1f}s sync={timing['sync']:.2f}s eval={timing['eval']:.1f}s "
                 f"total={timing['sec']:.1f}s")


def first_batch_dump(res: StepResult, tok) -> None:
    """The rendered prompt and first completion with special tokens (tokenizer / format debugging)."""
    if not res.plans or not res.students[0].ids:
        return
    pl, ids = res.plans[0], res.students[0].ids[0]
    sys_msg = next((m["content"] for m in pl.prob["messages"] if m.get("role") == "system"), "<no system>")
    user_msg = next((m["content"] for m in pl.prob["messages"] if m.get("role") == "user"), "<no user>")
    logger.debug("\nNOTE: the rendered prompt and first completion with special tokens, for tokenizer and "
                 f"format debugging.\n=== FIRST BATCH FIRST SAMPLE DUMP ===\n--- system msg ---\n{sys_msg}\n"
                 f"--- user msg ---\n{user_msg}\n--- rendered prompt ---\n{pl.prompt}\n"
                 f"--- completion ({len(ids)} tokens) ---\n{tok.decode(ids, skip_special_tokens=False)}\n"
                 "=== END FIRST BATCH DUMP ===")


def check_divergence(state: RunState, step: int, row: dict) -> None:
    """Abort when the teacher rows' log-prob stays > DIVERGENCE_DROP nats below its best for 2 steps."""
    lp_t = row["lp_t"]
    if lp_t is None or (isinstance(lp_t, float) and math.isnan(lp_t)):
        return
    state.lp_t_best = max(state.lp_t_best, lp_t)
    drop = state.lp_t_best - lp_t
    ppl_t = math.exp(-lp_t) if lp_t > -700 else math.inf
    if WARN_DROP <= drop < DIVERGENCE_DROP:
        logger.warning(f"step {step}: lp_t={lp_t:.1f} is {drop:.1f} nats below best {state.lp_t_best:.1f} "
                       f"(ppl_t={ppl_t:.0e}) -- coherence slipping, lr too high?")
    state.diverged_steps = state.diverged_steps + 1 if drop > DIVERGENCE_DROP else 0
    if state.diverged_steps >= 2:
        logger.error(f"DIVERGED at step {step}: lp_t={lp_t:.1f} (ppl_t={ppl_t:.0e}), {drop:.1f} nats below best "
                     f"{state.lp_t_best:.1f} for {state.diverged_steps} steps (gn={row['gn']:.1f}). Aborting.")
        if state.last_gen_sample:
            s, r = state.last_gen_sample
            logger.error(f"--- last student gen (step {s}, reward={r['reward']:+.2f}) ---\n{r['text'][:800]}")
        raise RuntimeError(f"training diverged (ppl_t={ppl_t:.0e} at step {step})")
