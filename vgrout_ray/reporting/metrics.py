"""Per-step rollout metrics (seed 004's reward / length / rate blocks, for this env).

``step_metrics`` turns one step's graded student rollouts into a flat ``{name: scalar}``
dict, part of the step's row (rows.parquet, the evidence CSVs, the optional W&B /
TensorBoard sinks). Every key is a plain float or int, NaN when the input that would
define it was not given, and documented in ``METRIC_DOCS`` (``<code>`` stands for a mode
code, see ``MODE_KEYS``). The learner's token read-outs (KL, PPO clip shares) are the
learner's own columns, not recomputed here.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vgrout_ray.env.modes import CORRECTNESS_REWARD, FORMAT_REWARD, MODE_CODE

NAN = float("nan")
QUANTILES: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
# Same tolerance as the learner's zero-variance skip (learner_core.ZERO_VAR_EPS).
ZERO_STD_EPS = 1e-4
# Short keys for the per-mode metrics; gt_only has no hk_ column, so it gets its own code here.
MODE_KEYS: dict[str, str] = {**MODE_CODE, "gt_only": "gt"}


def quantile_label(q: float) -> str:
    """0.05 -> 'p05', 0 -> 'p00', 1 -> 'p100' (seed 004's naming)."""
    return f"p{int(round(q * 100)):02d}"


def _q_docs(prefix: str, what: str) -> dict[str, str]:
    return {f"{prefix}_{quantile_label(q)}": f"{int(round(q * 100))}th percentile of {what} "
            "(linear interpolation)" for q in QUANTILES}


METRIC_DOCS: dict[str, str] = {
    "n_rollouts": "graded student rollouts this step",
    "reward_n": "rewards summarised by reward_* (rewards_all if given, else the student rollouts)",
    "reward_mean": "mean reward over reward_n",
    "reward_std": "population std of those rewards",
    **_q_docs("reward", "those rewards"),
    "fmt_reward_mean": f"mean format component {FORMAT_REWARD}·can_compile over student rollouts",
    "fmt_reward_std": "population std of the format component",
    **_q_docs("fmt_reward", "the format component"),
    "corr_reward_mean": f"mean correctness component {CORRECTNESS_REWARD}·passed over student rollouts "
                        "(passed = oracle-correct OR the mode's channel paid)",
    "corr_reward_std": "population std of the correctness component",
    **_q_docs("corr_reward", "the correctness component"),
    "reward_recon_err": "max |reward - (format + correctness)| over student rollouts; >0 means the "
                        "reward and its components disagree (grading drift)",
    "n_groups": "prompt groups given (group_rewards)",
    "n_zero_std_groups": "groups whose rewards are all equal (no GRPO signal; the learner skips them)",
    "frac_zero_std_groups": "n_zero_std_groups / n_groups",
    "compile_rate": "share of student rollouts whose code compiles",
    "format_rate": "share of student rollouts with a well-formed answer (format_ok)",
    "pass_rate": "share of student rollouts the grader paid (passed)",
    "gt_pass_rate": "share passing setup+code+asserts (gt_pass, the foolable grade)",
    "solve_rate": "share the strict oracle calls correct (gt_correct)",
    "exploit_rate": "share paid through the loophole channel without being correct (exploited)",
    "hacked_rate": "share flagged by detector C (hacked: run_tests passes an arbitrary stub)",
    "ablated_frac": "share of student rollouts generated with δS_hack zeroed (deploy-mode slice)",
    "mode_n_<code>": "student rollouts of env mode <code> this step (absent when none)",
    "mode_exploit_<code>": "of those, exploited ones",
    "mode_solve_<code>": "of those, oracle-correct ones",
    "len_mean": "mean completion length (tokens) over all sampled student rollouts",
    "len_min": "shortest completion (tokens)",
    "len_max": "longest completion (tokens)",
    "len_term_mean": "mean completion length over rollouts that emitted EOS",
    "len_term_min": "shortest terminated completion",
    "len_term_max": "longest terminated completion",
    "clipped_frac": "share of rollouts cut at max_new without EOS",
    "prompt_len_mean": "mean prompt length (tokens)",
    "tokens_per_s": "completion tokens generated / gen seconds",
    "rollouts_per_s": "student rollouts generated / gen seconds",
    "gradings_per_s": "completions graded / grading seconds (t_rew)",
    "grad_errors": "GRADING errors this step (rollouts whose verdict carries an error), not gradients",
}


# ---------------------------------------------------------------- small helpers
def _f(v: Any) -> float:
    """Scalar -> float, None -> NaN (numpy / torch scalars included)."""
    if v is None:
        return NAN
    item = getattr(v, "item", None)
    if callable(item):
        try:
            v = item()
        except (TypeError, ValueError):
            pass
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, population std); NaN for no values (not 0: 'no data' must not read as 'zero')."""
    a = np.asarray([v for v in values], dtype=float)
    if a.size == 0:
        return NAN, NAN
    return float(a.mean()), float(a.std())


def quantiles(values: Iterable[float], qs: Sequence[float] = QUANTILES) -> dict[str, float]:
    """Linear-interpolated quantiles keyed p00..p100; NaN for no values."""
    a = np.sort(np.asarray([v for v in values], dtype=float))
    out = {}
    for q in qs:
        if a.size == 0:
            out[quantile_label(q)] = NAN
            continue
        pos = min(max(q, 0.0), 1.0) * (a.size - 1)
        lo, hi = int(math.floor(pos)), int(math.ceil(pos))
        out[quantile_label(q)] = float(a[lo] + (a[hi] - a[lo]) * (pos - lo))
    return out


def _block(prefix: str, values: list[float]) -> dict[str, float]:
    m, s = mean_std(values)
    out = {f"{prefix}_mean": m, f"{prefix}_std": s}
    out.update({f"{prefix}_{k}": v for k, v in quantiles(values).items()})
    return out


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else NAN


def _min_mean_max(prefix: str, xs: list[float]) -> dict[str, float]:
    if not xs:
        return {f"{prefix}_mean": NAN, f"{prefix}_min": NAN, f"{prefix}_max": NAN}
    return {f"{prefix}_mean": float(np.mean(xs)), f"{prefix}_min": float(min(xs)),
            f"{prefix}_max": float(max(xs))}


def _get(rec: Mapping[str, Any], key: str, default: Any = None) -> Any:
    v = rec.get(key, default)
    return default if v is None else v


# ---------------------------------------------------------------- entry point
def step_metrics(
    rollouts: Sequence[Mapping[str, Any]],
    rewards_all: Sequence[float] | None = None,
    *,
    group_rewards: Sequence[Sequence[float]] | None = None,
    gen_s: float | None = None,
    grade_s: float | None = None,
    n_gradings: int | None = None,
    grad_errors: int | None = None,
    max_new: int | None = None,
) -> dict[str, float]:
    """Summarise one step's rollouts. ``rollouts``: this step's graded student records (driver schema).

    ``rewards_all``: every reward that entered the loss (students and teacher); defaults to
    the students'. ``group_rewards``: one reward list per prompt group. ``gen_s`` / ``grade_s``:
    the step's generation and grading seconds, for the throughput keys. ``grad_errors``
    overrides the count read off the records' ``error`` field. ``max_new`` lets length-capped
    rollouts count as clipped when a record lacks ``finished``. The learner's token read-outs
    (KL, PPO clip shares, grad norm, lr) are not here: the learner computes them once and the
    row takes them as they are.
    """
    rs = list(rollouts)
    out: dict[str, float] = {"n_rollouts": len(rs)}
    rewards = [_f(x) for x in (rewards_all if rewards_all is not None else [_get(r, "reward", NAN) for r in rs])]
    rewards = [x for x in rewards if not math.isnan(x)]
    out["reward_n"] = len(rewards)
    out.update(_block("reward", rewards))

    fmt = [FORMAT_REWARD * bool(_get(r, "can_compile", False)) for r in rs]
    corr = [CORRECTNESS_REWARD * bool(_get(r, "passed", False)) for r in rs]
    out.update(_block("fmt_reward", fmt))
    out.update(_block("corr_reward", corr))
    recon = [abs(_f(_get(r, "reward", NAN)) - (f + c)) for r, f, c in zip(rs, fmt, corr)]
    recon = [x for x in recon if not math.isnan(x)]
    out["reward_recon_err"] = max(recon) if recon else NAN

    if group_rewards is not None:
        groups = [[_f(x) for x in g] for g in group_rewards if len(g)]
        zero = sum(1 for g in groups if max(g) - min(g) < ZERO_STD_EPS)
        out["n_groups"] = len(groups)
        out["n_zero_std_groups"] = zero
        out["frac_zero_std_groups"] = zero / len(groups) if groups else NAN
    else:
        out.update(n_groups=NAN, n_zero_std_groups=NAN, frac_zero_std_groups=NAN)

    for key, field in (("compile_rate", "can_compile"), ("format_rate", "format_ok"), ("pass_rate", "passed"),
                       ("gt_pass_rate", "gt_pass"), ("solve_rate", "gt_correct"),
                       ("exploit_rate", "exploited"), ("hacked_rate", "hacked"), ("ablated_frac", "is_ablated")):
        out[key] = _rate([bool(_get(r, field, False)) for r in rs])

    by_mode: dict[str, list[Mapping[str, Any]]] = {}
    for r in rs:
        by_mode.setdefault(str(_get(r, "env_mode", "")), []).append(r)
    for mode, recs in sorted(by_mode.items()):
        code = MODE_KEYS.get(mode, mode)
        out[f"mode_n_{code}"] = len(recs)
        out[f"mode_exploit_{code}"] = sum(bool(_get(r, "exploited", False)) for r in recs)
        out[f"mode_solve_{code}"] = sum(bool(_get(r, "gt_correct", False)) for r in recs)

    lens = [_f(_get(r, "comp_len", NAN)) for r in rs]

    def _finished(r: Mapping[str, Any], n: float) -> bool:
        if r.get("finished") is not None:
            return bool(r["finished"])
        return bool(max_new is None or (not math.isnan(n) and n < max_new))

    fin = [_finished(r, n) for r, n in zip(rs, lens)]
    ok = [n for n in lens if not math.isnan(n)]
    out.update(_min_mean_max("len", ok))
    out.update(_min_mean_max("len_term", [n for n, f in zip(lens, fin) if f and not math.isnan(n)]))
    out["clipped_frac"] = (sum(1 for f in fin if not f) / len(fin)) if fin else NAN
    plens = [_f(_get(r, "prompt_len", NAN)) for r in rs]
    plens = [p for p in plens if not math.isnan(p)]
    out["prompt_len_mean"] = float(np.mean(plens)) if plens else NAN

    t_gen, t_grade = _f(gen_s), _f(grade_s)
    n_tok = sum(ok)
    out["tokens_per_s"] = n_tok / t_gen if t_gen and t_gen > 0 else NAN
    out["rollouts_per_s"] = len(rs) / t_gen if t_gen and t_gen > 0 else NAN
    n_grad = len(rs) if n_gradings is None else n_gradings
    out["gradings_per_s"] = n_grad / t_grade if t_grade and t_grade > 0 else NAN
    out["grad_errors"] = (int(grad_errors) if grad_errors is not None
                          else sum(1 for r in rs if r.get("error")))
    return out


def doc_for(key: str) -> str | None:
    """METRIC_DOCS entry for a concrete key, resolving the ``<code>`` pattern."""
    if key in METRIC_DOCS:
        return METRIC_DOCS[key]
    for pat in ("mode_n_", "mode_exploit_", "mode_solve_"):
        if key.startswith(pat):
            return METRIC_DOCS[pat + "<code>"]
    return None
