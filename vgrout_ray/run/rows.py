"""Per-step row arithmetic (pure): seed 003's row fields from a step's rollouts and learner stats.

Kept apart from the driver so the numbers can be tested without actors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from vgrout_ray.config import DETECTORS, detector_codes
from vgrout_ray.env.modes import MODE_CODE

REF_GENS_PER_STEP = 16 * 16  # the reference's gens per step (16 prompts × 16 samples)
# Seed 003's row fields as the end-of-run markdown dump shows them (timing, sprd and N dropped;
# the per-mode hk_<code> columns follow hack_t).
SEED_DUMP_FIELDS = (
    "step", "ref_eq", "rew", "rew_s", "gt_s", "gt_t", "hack_s", "hack_t", "hack_s_E", "hack_s_D", "hack_s_A",
    "hack_s_B", "lp_s", "lp_t", "loss", "gn", "q_egy", "tau", "hkgap", "resid", "lr", "cos_pre", "cos_pre_s",
    "cos_pre_t", "cos_post", "fired", "refr", "hack_deploy", "solve_deploy", "hack_abl", "solve_abl",
)
NAN = float("nan")


@dataclass
class RowIn:
    """One rollout as the step row sees it (students and teachers; zero-variance groups included)."""

    reward: float
    is_student: bool
    hack: bool  # exploited (student) / cached hacked label (teacher)
    gt: bool  # gt_correct (student) / cached gt_pass label (teacher)
    fmt: bool
    hack_E: bool = False
    hack_D: bool = False
    ablated: bool = False
    logp: float = NAN  # mean per-token log π_old (NaN in zero-variance groups)
    mode: str = ""
    comp_len: int = 0
    finished: bool = True
    adv: float = 0.0
    gate_cos: float = NAN
    copy: bool = False  # a student hack that copies a teacher completion of its problem (env.copying)


@dataclass
class StepAgg:
    """Everything a step gathered; ``row()`` turns it into seed 003's row dict."""

    step: int
    rows: list[RowIn] = field(default_factory=list)
    n_skipped: int = 0
    n_zerovar: int = 0
    loss: float = 0.0


def _tup(n: int, d: int) -> tuple[int, int]:
    return (n, d) if d else (0, 0)


def _nanmean(xs: list[float]) -> float:
    ys = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(ys) / len(ys) if ys else NAN


def auroc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (ties count half); NaN if one class is empty."""
    pairs = [(s, l) for s, l in zip(scores, labels) if s is not None and not math.isnan(s)]
    pos = [s for s, l in pairs if l]
    neg = [s for s, l in pairs if not l]
    if not pos or not neg:
        return NAN
    wins = 0.0
    for p in pos:
        for q in neg:
            wins += 1.0 if p > q else (0.5 if p == q else 0.0)
    return wins / (len(pos) * len(neg))


def half_ab(rows: list[RowIn], half_a: str) -> tuple[int, int]:
    """Cross-mechanism split on student rows: A = any half-A detector fires; B = a half-B one fires
    and no half-A one does (detector codes E, C, D; C is the hack flag)."""
    codes = detector_codes(half_a)
    if not codes:
        return 0, 0
    det = {"E": lambda r: r.hack_E, "C": lambda r: r.hack, "D": lambda r: r.hack_D}
    a = b = 0
    for r in rows:
        if not r.is_student:
            continue
        in_a = any(det[c](r) for c in codes)
        in_b = any(det[c](r) for c in set(DETECTORS) - codes)
        a += in_a
        b += in_b and not in_a
    return a, b


def step_row(agg: StepAgg, *, run_modes: list[str], learner: dict, cum_gens_before: int, half_a: str,
             hack_deploy: float, solve_deploy: float, mode_hacks: dict[str, int], timing: dict) -> dict:
    """Seed 003's per-step row (raw values; the table renderer formats them)."""
    rows = agg.rows
    stu = [r for r in rows if r.is_student]
    tea = [r for r in rows if not r.is_student]
    abl = [r for r in rows if r.ablated]
    n, n_s, n_t = len(rows), len(stu), len(tea)
    rewards = [r.reward for r in rows]
    spread = (max(rewards) - min(rewards)) > 1e-3 if n > 1 else False
    a_n, b_n = half_ab(rows, half_a)
    # route2 gate diagnostics (NaN where the arm has no gate)
    gate = [(r.gate_cos, r.hack) for r in rows if r.adv > 0]
    cos_all = [r.gate_cos for r in rows]
    rout = learner.get("flagged", NAN)
    row = {
        "step": agg.step,
        "ref_eq": (cum_gens_before + n) / REF_GENS_PER_STEP,
        "rew": sum(rewards) / n if n else 0.0,
        "rew_s": (sum(r.reward for r in stu) / n_s) if n_s else None,
        "sprd": "T" if spread else "F",
        "N": n,
        "gt_s": _tup(sum(r.gt for r in stu), n_s),
        "gt_t": _tup(sum(r.gt for r in tea), n_t),
        "hack_s": _tup(sum(r.hack for r in stu), n_s),
        "hack_t": _tup(sum(r.hack for r in tea), n_t),
        **{f"hk_{MODE_CODE[m]}": mode_hacks.get(m, 0) for m in run_modes if m in MODE_CODE},
        "hack_s_E": _tup(sum(r.hack_E for r in stu), n_s),
        "hack_s_D": _tup(sum(r.hack_D for r in stu), n_s),
        "hack_s_A": _tup(a_n, n_s),
        "hack_s_B": _tup(b_n, n_s),
        "hack_s_copy": _tup(sum(r.hack and r.copy for r in stu), n_s),
        "hack_s_novel": _tup(sum(r.hack and not r.copy for r in stu), n_s),
        "lp_s": _nanmean([r.logp for r in stu]) if n_s else None,
        "lp_t": _nanmean([r.logp for r in tea]) if n_t else None,
        "loss": learner.get("loss", 0.0),
        "gn": learner.get("gn", NAN),
        "q_egy": learner.get("q_egy", NAN),
        "tau": learner.get("tau", NAN),
        "hkgap": learner.get("hkgap", NAN),
        "resid": learner.get("resid", NAN),
        "lr": learner.get("lr", NAN),
        "cos_pre": learner.get("cos_pre", NAN),
        "cos_pre_s": learner.get("cos_pre_s", NAN),
        "cos_pre_t": learner.get("cos_pre_t", NAN),
        "cos_post": learner.get("cos_post", NAN),
        "fired": learner.get("fired", NAN),
        "refr": learner.get("refr", "-"),
        "hack_deploy": hack_deploy,
        "solve_deploy": solve_deploy,
        "hack_abl": _tup(sum(r.hack for r in abl), len(abl)),
        "solve_abl": _tup(sum(r.gt for r in abl), len(abl)),
        # route2 gate read-outs (the table shows q_egy as qmass and tau as thi; see reporting.table)
        "auroc": auroc([c for c, _ in gate], [h for _, h in gate]),
        "cos": _nanmean(cos_all),
        "rout": rout,
        "keep": (1.0 - rout) if not math.isnan(rout) else NAN,
        "stale": learner.get("stale", NAN),
        "gen": timing.get("gen", 0.0),
        "fb": timing.get("fb", 0.0),
        "t_rew": timing.get("grade", 0.0),
        "sec": timing.get("sec", 0.0),
    }
    return row
