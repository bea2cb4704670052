"""What a step trains on: the run's problems and teacher pool, and per step the prompt plans.

The prompt RNG is the run's (``RunState.rng``), drawn in seed 003's order (one ``randint`` per
prompt slot, then the teacher rows' ``randperm`` / ``randint``), so a resumed run draws what the
uninterrupted one would have. Sampling seeds are a pure function of (run seed, step, prompt,
slice), so a replayed generation (a rollout actor died) draws the same completions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from loguru import logger

from vgrout_ray.rollout.base import GenRequest
from vgrout_ray.config import Config, ConfigError
from vgrout_ray.env.modes import LOOPHOLE_MODES
from vgrout_ray.algo.pairs import render_prompt
from vgrout_ray.env.problems import load_problems
from vgrout_ray.data.teacher_pool import completion_ids, load_pool, scripted_pool

MAX_TOKENS = 2048  # prompt + max_new longer than this is skipped (seed 003)


def seed_for(base: int, step: int, p_idx: int, part: int) -> int:
    """Deterministic sampling seed per (run seed, step, prompt, slice): replays draw the same."""
    return (base * 1_000_003 + step * 10_007 + p_idx * 31 + part) % (2 ** 31 - 1)


@dataclass
class TeacherRow:
    """One cached teacher completion mixed into a group: its labels and its ids under the run's tokenizer."""

    reward: float
    hacked: bool
    gt_pass: bool
    fmt_ok: bool
    ids: list[int]

    @classmethod
    def from_pool(cls, row: dict, tok) -> "TeacherRow":
        return cls(reward=float(row["reward"]), hacked=bool(row["hacked"]), gt_pass=bool(row["gt_pass"]),
                   fmt_ok=bool(row["fmt_ok"]), ids=completion_ids(row, tok))


@dataclass
class PromptPlan:
    """One prompt slot of a step: the problem, its rendered prompt, the generation requests (the
    training-view slice, key part 0, and the deploy-view slice, part 1) and the teacher rows."""

    p_idx: int
    prob: dict
    prompt: str
    prompt_ids: list[int]
    reqs: list[GenRequest]
    teacher: list[TeacherRow] = field(default_factory=list)
    n_abl: int = 0

    @property
    def mode(self) -> str:
        return self.prob["env_mode"]

    @property
    def n_students(self) -> int:
        return sum(r.n for r in self.reqs)


@dataclass
class RunData:
    """The problems a run trains on, its teacher pool (problem id → rows) and the mode partition."""

    problems: list[dict]
    teacher_pool: dict[int, list[dict]]
    partition: dict[int, str] | None


def _log_partition(partition: dict[int, str]) -> None:
    by: dict[str, int] = {}
    for m in partition.values():
        by[m] = by.get(m, 0) + 1
    logger.info(f"SUBSTRATE: per-problem env_mode partition ({len(partition)} problems): "
                f"{dict(sorted(by.items()))}; each problem graded by its own mode")


def _restrict(cfg: Config, problems: list[dict], pool: dict, partition) -> tuple[list[dict], dict]:
    """Teacher-mode filtering of the pool, or the problems cut to those the pool covers."""
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
    return problems, pool


def load_run_data(cfg: Config, grade) -> RunData:
    """Problems, teacher pool (loaded, or scripted and graded with ``grade``) and partition."""
    pool: dict[int, list[dict]] = {}
    partition = None
    if cfg.teacher_pool_dir is not None:
        pool, partition = load_pool(cfg.teacher_pool_dir)
        if partition is not None:
            _log_partition(partition)
    modes = [cfg.env_mode]
    if cfg.scripted_teacher and cfg.teacher_pool_dir is None and cfg.env_mode == "gt_only":
        modes = list(LOOPHOLE_MODES)
    problems = load_problems(cfg.n_problems, env_modes=modes, partition=partition, source=cfg.problems,
                             ids=cfg.problem_ids)
    logger.info(f"loaded {len(problems)} problems from {cfg.problems or 'the packaged set'} -- "
                f"{'partition' if partition else 'modes ' + ','.join(modes)}")
    if cfg.strict_grader:  # the prompt keeps its hint; the grader pays genuine correctness only
        problems = [{**p, "pay_channel": False} for p in problems]
        logger.info("strict grader: loophole channels are detected but never paid (no-loophole control)")
    if cfg.scripted_teacher and cfg.teacher_pool_dir is None:
        pool = scripted_pool(problems, grade, compat=cfg.grader.compat, style=cfg.scripted_teacher_style)
    problems, pool = _restrict(cfg, problems, pool, partition)
    if pool:
        n = sum(len(v) for v in pool.values())
        hr = sum(bool(r["hacked"]) for v in pool.values() for r in v) / max(1, n)
        g_s, g_t = cfg.teacher_split
        logger.info(f"teacher pool: {len(pool)} prompts, ~{n / len(pool):.1f} rollouts/prompt, cached "
                    f"hack_rate={hr:.2%}; G_s={g_s} student + G_t={g_t} teacher per prompt")
    return RunData(problems, pool, partition)


class PromptSampler:
    """Renders prompts (cached per problem) and draws each step's ``PromptPlan``s."""

    def __init__(self, cfg: Config, data: RunData, tok):
        self.cfg = cfg
        self.data = data
        self.tok = tok
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def prompt(self, prob: dict) -> tuple[str, list[int]]:
        """Rendered chat prompt (non-thinking) and its token ids, cached per problem."""
        pid = prob["problem_id"]
        if pid not in self._cache:
            text = render_prompt(self.tok, prob["messages"], prob.get("response_prefix", ""))
            self._cache[pid] = (text, self.tok(text, add_special_tokens=False).input_ids)
        return self._cache[pid]

    def fits(self, prompt_ids: list[int]) -> bool:
        return len(prompt_ids) + self.cfg.max_new <= MAX_TOKENS

    def curriculum(self, step: int, G: tuple[int, int]) -> tuple[int, int]:
        """(G_s, G_t) for this step: the teacher-off curriculum turns teacher rows into student rows."""
        cfg = self.cfg
        G_s, G_t = G
        if cfg.teacher_off_step is not None and step >= cfg.teacher_off_step and G_t > 0:
            logger.info(f"teacher-off curriculum: step {step} >= {cfg.teacher_off_step} -> G_t {G_t}->0, "
                        f"G_s {G_s}->{cfg.group}")
            return cfg.group, 0
        return G_s, G_t

    def _teacher(self, rows: list[dict] | None, G_t: int, rng: torch.Generator) -> list[TeacherRow]:
        if not rows or G_t <= 0:
            return []
        idxs = torch.randperm(len(rows), generator=rng)[:G_t].tolist()
        if len(rows) < G_t:
            idxs += torch.randint(0, len(rows), (G_t - len(rows),), generator=rng).tolist()
        return [TeacherRow.from_pool(rows[i], self.tok) for i in idxs]

    def _requests(self, step: int, p_idx: int, pids: list[int], G_s: int) -> tuple[list[GenRequest], int]:
        cfg = self.cfg
        n_abl = round(G_s * cfg.rollout_ablate_frac) if cfg.has_quarantine else 0
        reqs = []
        if G_s - n_abl > 0:
            reqs.append(GenRequest((p_idx, 0), pids, G_s - n_abl, cfg.max_new, seed_for(cfg.seed, step, p_idx, 0),
                                   ablate=False))
        if n_abl > 0:
            reqs.append(GenRequest((p_idx, 1), pids, n_abl, cfg.max_new, seed_for(cfg.seed, step, p_idx, 1),
                                   ablate=True))
        return reqs, n_abl

    def sample(self, step: int, rng: torch.Generator, G: tuple[int, int]) -> tuple[list[PromptPlan], int]:
        """Seed 003's prompt sampling (same RNG calls, same order) → plans and the skipped count."""
        cfg, problems, pool = self.cfg, self.data.problems, self.data.teacher_pool
        G_s, G_t = G
        plans, n_skipped = [], 0
        for p_idx in range(cfg.prompts_per_step):
            prob = problems[int(torch.randint(0, len(problems), (1,), generator=rng).item())]
            text, pids = self.prompt(prob)
            if not self.fits(pids):
                n_skipped += 1
                continue
            rows = pool.get(prob["problem_id"]) if pool else None
            if pool and G_t > 0 and not rows and cfg.teacher_modes is None:
                n_skipped += 1
                continue
            teacher = self._teacher(rows, G_t, rng)
            reqs, n_abl = self._requests(step, p_idx, pids, G_s)
            plans.append(PromptPlan(p_idx, prob, text, pids, reqs, teacher, n_abl))
        return plans, n_skipped
