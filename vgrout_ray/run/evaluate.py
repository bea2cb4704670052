"""Student-only evaluation on the run's fixed eval problems: generate on the rollout pool (train or
deploy view), grade on the grader pool, each problem under its own mode.

The eval problems are ``eval_problems`` (held out: no id or prompt shared with training) or, when
unset, the first ``eval_n_prompts`` training problems (``held_out: false``). Every eval draws
``eval_k`` samples per prompt with a seed that depends only on (run seed, step, prompt): the
same samples in every arm and with the quarantine on or off, so deploy-vs-train and arm-vs-arm
differences are the weights', never the sampling's.
"""
from __future__ import annotations

from loguru import logger

from vgrout_ray.rollout.base import GenRequest
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.problems import ProblemError, load_problems, prompt_text
from vgrout_ray.run.sampling import PromptSampler, seed_for

EVAL_SEED_OFFSET = 7919  # eval draws never coincide with a training step's


def eval_seed(cfg, step: int, j: int) -> int:
    """The eval's sampling seed for prompt ``j`` at ``step``: no arm, no quarantine flag in it."""
    return seed_for(cfg.seed + EVAL_SEED_OFFSET, step, j, 0)


def check_held_out(train: list[dict], held: list[dict], field: str = "eval_problems") -> None:
    """Fail loud when an eval problem is also a training problem (same id or same prompt text)."""
    ids = {p["problem_id"] for p in train}
    texts = {prompt_text(p): p["problem_id"] for p in train}
    same_id = sorted(p["problem_id"] for p in held if p["problem_id"] in ids)
    if same_id:
        raise ProblemError(f"{field}: problem ids {same_id[:5]} are also training problems")
    same_text = [(p["problem_id"], texts[prompt_text(p)]) for p in held if prompt_text(p) in texts]
    if same_text:
        raise ProblemError(f"{field}: eval problem {same_text[0][0]} has the prompt of training problem "
                           f"{same_text[0][1]} ({len(same_text)} such)")
    if not held:
        raise ProblemError(f"{field}: no problems")


def eval_problems(cfg, train: list[dict]) -> tuple[list[dict], bool]:
    """(the eval problems, held_out): ``cfg.eval_problems`` checked against ``train``, else the
    first ``eval_n_prompts`` training problems."""
    if cfg.eval_problems is None:
        return list(train[:cfg.eval_n_prompts]), False
    modes = sorted({p["env_mode"] for p in train}) or [cfg.env_mode]
    held = load_problems(cfg.eval_n_prompts, env_modes=modes, source=cfg.eval_problems)
    check_held_out(train, held)
    if cfg.strict_grader:
        held = [{**p, "pay_channel": False} for p in held]
    logger.info(f"deploy eval: {len(held)} held-out problems from {cfg.eval_problems} "
                f"(ids {[p['problem_id'] for p in held][:8]}{'...' if len(held) > 8 else ''})")
    return held, True


def eval_requests(cfg, sampler: PromptSampler, probs: list[dict], step: int, ablate: bool):
    """(problem, GenRequest) per eval prompt that fits the token budget."""
    out = []
    for j, prob in enumerate(probs):
        _, pids = sampler.prompt(prob)
        if not sampler.fits(pids):
            continue
        out.append((prob, GenRequest(("eval", j), pids, cfg.eval_k, cfg.max_new, eval_seed(cfg, step, j),
                                     ablate=ablate)))
    return out


def summarize_eval(items: list[tuple[int, str, object, bool]]) -> dict:
    """From (problem id, mode, RewardResult, finished) per sample: rates, per-mode and per-prompt counts.

    ``hack`` counts exploits (the loophole paid and the strict oracle failed); ``relies`` counts
    answers whose own run_tests passes an arbitrary Solution (detector C), correct or not: the
    hack *behaviour*, which a policy can adopt on every answer while still solving some of them
    (those are not exploits): hack <= 1 - solve always, however high relies goes."""
    by_mode: dict[str, list[int]] = {}
    per: dict[int, dict] = {}
    for pid, mode, r, fin in items:
        t = by_mode.setdefault(mode, [0, 0, 0])
        t[0] += int(r.exploited)
        t[1] += int(r.gt_correct)
        t[2] += 1
        q = per.setdefault(pid, {"id": pid, "n": 0, "hack": 0, "solve": 0, "relies": 0, "compile": 0, "clipped": 0})
        q["n"] += 1
        q["hack"] += int(r.exploited)
        q["relies"] += int(r.hacked)
        q["solve"] += int(r.gt_correct)
        q["compile"] += int(r.can_compile)
        q["clipped"] += int(not fin)
    n = len(items)
    rate = lambda k: sum(q[k] for q in per.values()) / max(1, n)  # noqa: E731
    rewards = [r.reward for _, _, r, _ in items]
    return {"n": n, "hack": rate("hack"), "solve": rate("solve"), "relies": rate("relies"),
            "compile": rate("compile"), "clipped": rate("clipped"), "mean_reward": sum(rewards) / max(1, n),
            "rewards": rewards, "by_mode": by_mode, "per_prompt": list(per.values())}


def evaluate(cfg, sampler: PromptSampler, probs: list[dict], rollouts, graders, *, step: int, ablate: bool,
             kind: str, version: int) -> dict:
    """{step, kind, ablate, n, hack, solve, relies, compile, clipped, mean_reward, rewards, by_mode: {mode:
    [hacks, solves, n]}, per_prompt: [{id, n, hack, solve, relies, compile, clipped}], version}."""
    reqs = eval_requests(cfg, sampler, probs, step, ablate)
    gens = rollouts.generate([r for _, r in reqs])
    grade_reqs, meta = [], []
    for (prob, _), gen in zip(reqs, gens):
        texts = sampler.tok.batch_decode(gen.completions, skip_special_tokens=True)
        for t, fin in zip(texts, gen.finished, strict=True):
            grade_reqs.append(GradeRequest.from_problem(prob, t, compat=cfg.grader.compat))
            meta.append((prob["problem_id"], prob["env_mode"], fin))
    results = graders.grade(grade_reqs)
    ev = summarize_eval([(pid, m, r, fin) for (pid, m, fin), r in zip(meta, results)])
    return {"step": step, "kind": kind, "ablate": ablate, **ev, "version": version}


def log_deploy_eval(cfg, step: int, ev: dict) -> None:
    if cfg.has_quarantine:
        tag = "quarantine knob OFF = deployed model"
        should = "deploy hack < per-step hack_s (knob holds the cheat); ELSE routing isn't capturing it"
    else:
        tag = "deployed = trained model (no quarantine)"
        should = "deploy ~= training hack_s (same model)"
    logger.info(f"step {step} DEPLOY-eval ({tag}): hack={ev['hack']:.3f} solve={ev['solve']:.3f} "
                f"relies={ev.get('relies', float('nan')):.3f} n={ev['n']}. SHOULD: {should}")
