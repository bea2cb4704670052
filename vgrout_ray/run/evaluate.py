"""Student-only evaluation on the run's fixed eval subset: generate on the rollout pool (train or
deploy view), grade on the grader pool, each problem under its own mode."""
from __future__ import annotations

from loguru import logger

from vgrout_ray.rollout.base import GenRequest
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.run.sampling import PromptSampler, seed_for

EVAL_SEED_OFFSET = 7919  # eval draws never coincide with a training step's


def eval_requests(cfg, sampler: PromptSampler, eval_idxs: list[int], step: int, ablate: bool):
    """(problem, GenRequest) per eval prompt that fits the token budget."""
    out = []
    for j, idx in enumerate(eval_idxs):
        prob = sampler.data.problems[idx]
        _, pids = sampler.prompt(prob)
        if not sampler.fits(pids):
            continue
        out.append((prob, GenRequest(("eval", j), pids, cfg.group, cfg.max_new,
                                     seed_for(cfg.seed + EVAL_SEED_OFFSET, step, j, int(ablate)), ablate=ablate)))
    return out


def evaluate(cfg, sampler: PromptSampler, eval_idxs: list[int], rollouts, graders, *, step: int, ablate: bool,
             kind: str, version: int) -> dict:
    """{step, kind, ablate, n, hack, solve, mean_reward, rewards, by_mode: {mode: [hacks, solves, n]}, version}."""
    reqs = eval_requests(cfg, sampler, eval_idxs, step, ablate)
    gens = rollouts.generate([r for _, r in reqs])
    grade_reqs, modes = [], []
    for (prob, _), gen in zip(reqs, gens):
        for t in sampler.tok.batch_decode(gen.completions, skip_special_tokens=True):
            grade_reqs.append(GradeRequest.from_problem(prob, t, compat=cfg.grader.compat))
            modes.append(prob["env_mode"])
    results = graders.grade(grade_reqs)
    by_mode: dict[str, list[int]] = {}
    for m, r in zip(modes, results):
        t = by_mode.setdefault(m, [0, 0, 0])
        t[0] += int(r.exploited)
        t[1] += int(r.gt_correct)
        t[2] += 1
    n = len(results)
    return {"step": step, "kind": kind, "ablate": ablate, "n": n,
            "hack": sum(r.exploited for r in results) / max(1, n),
            "solve": sum(r.gt_correct for r in results) / max(1, n),
            "mean_reward": sum(r.reward for r in results) / max(1, n),
            "rewards": [r.reward for r in results], "by_mode": by_mode, "version": version}


def log_deploy_eval(cfg, step: int, ev: dict) -> None:
    if cfg.has_quarantine:
        tag = "quarantine knob OFF = deployed model"
        should = "deploy hack < per-step hack_s (knob holds the cheat); ELSE routing isn't capturing it"
    else:
        tag = "deployed = trained model (no quarantine)"
        should = "deploy ~= training hack_s (same model)"
    logger.info(f"step {step} DEPLOY-eval ({tag}): hack={ev['hack']:.3f} solve={ev['solve']:.3f} "
                f"n={ev['n']}. SHOULD: {should}")
