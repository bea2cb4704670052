"""Evidence a researcher can open without any tooling: CSVs, PNGs and a markdown sampler.

Seed 002's evidence set, for this environment. Under ``<run_dir>/evidence/``:

- ``training_log.csv`` / ``training_curve.png``: reward, hack and solve rates, loss,
  grad norm, lr, KL and wall time per step.
- ``reward_components.csv`` / ``reward_components.png``: the two reward components
  (0.5·compiles, 3.0·passed) and the per-mode exploit rates; a reward that rises
  through the correctness component while the solve rate stays flat is the
  signature of reward hacking.
- ``checkpoint_evals.csv`` / ``checkpoint_progression.png``: every held-out deploy eval.
- ``before_after_metrics.json``, ``before_after_summary.png``, ``reward_distribution.png``:
  the pre-training eval against the final train and deploy evals.
- ``sample_trajectories.md``: best and worst rollouts and the first hack of each mechanism.

``EvidenceWriter.update`` hands the work to one background thread and returns at once;
requests that arrive while it is busy are coalesced into the newest one. Files are
written atomically, so a reader never sees half a PNG.
"""
from __future__ import annotations

import csv
import io
import json
import math
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from vgrout_ray.env.modes import ALL_MODES  # noqa: E402
from vgrout_ray.util import MPL_LOCK, atomic_write, ema  # noqa: E402,F401  (ema: seed 001's smoother)
from vgrout_ray.reporting.metrics import MODE_KEYS  # noqa: E402

NAN = float("nan")
HACK_C, SOLVE_C, REW_C, FMT_C, LOSS_C, GREY = "#c1432b", "#2f7d4f", "#33508c", "#c98a2b", "#7b3294", "0.45"
# Per-mode colours: tab10 without its red and green, which mean hack and solve here.
MODE_COLORS = [matplotlib.colormaps["tab10"].colors[i] for i in (0, 1, 4, 5, 6, 8, 9)]
# Colours of the evals compared in the before/after figures.
PRE_C, TRAIN_C, DEPLOY_C = "#9aa5b1", "#c98a2b", "#33508c"
FILES = ("training_log.csv", "reward_components.csv", "checkpoint_evals.csv", "training_curve.png",
         "reward_components.png", "checkpoint_progression.png", "before_after_metrics.json",
         "before_after_summary.png", "reward_distribution.png", "sample_trajectories.md")


# ------------------------------------------------------------------ row access
def frac_rate(v: Any) -> float:
    """(n, d) -> n/d; NaN for d == 0 or missing; a plain number passes through."""
    if isinstance(v, (tuple, list)) and len(v) == 2:
        n, d = v
        return NAN if not d or n is None else n / d
    return num(v)


def num(v: Any) -> float:
    if v is None:
        return NAN
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


def run_modes(rows: Sequence[Mapping[str, Any]], modes: Sequence[str] | None = None) -> list[str]:
    """Modes of the run: as given, else those with per-mode counts in the rows."""
    if modes:
        return list(modes)
    found = {m for m in ALL_MODES for r in rows if num(r.get(f"mode_n_{MODE_KEYS[m]}")) > 0}
    return [m for m in ALL_MODES if m in found]


def _mode_rate(r: Mapping[str, Any], mode: str, what: str = "exploit") -> float:
    n = num(r.get(f"mode_n_{MODE_KEYS[mode]}"))
    k = num(r.get(f"mode_{what}_{MODE_KEYS[mode]}"))
    return k / n if n > 0 else NAN


# ---------------------------------------------------------------- atomic files
def save_figure(fig: Figure, path: Path, dpi: int = 140) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write(path, buf.getvalue())
    return path


def json_safe(v: Any) -> Any:
    """NaN/inf -> None recursively, so the JSON is strict (jq and browsers reject NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def _csv_text(fields: list[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_cell(r.get(k)) for k in fields})
    return buf.getvalue()


def _csv_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


# ---------------------------------------------------------------------- CSVs
TRAINING_LOG_FIELDS = ["step", "loss", "reward", "reward_std", "reward_student", "kl", "grad_norm",
                       "learning_rate", "wall_time_s", "step_time_s", "hack_s", "gt_s", "hack_t", "gt_t",
                       "hack_deploy", "solve_deploy", "lp_s", "lp_t", "q_egy", "len_mean", "clipped_frac",
                       "frac_zero_std_groups", "grad_errors"]


def training_log_records(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    out, wall = [], 0.0
    for r in rows:
        sec = num(r.get("sec"))
        wall += 0.0 if math.isnan(sec) else sec
        out.append({
            "step": r.get("step"), "loss": num(r.get("loss")), "reward": num(r.get("rew")),
            "reward_std": num(r.get("reward_std")), "reward_student": num(r.get("rew_s")),
            "kl": num(r.get("kl")), "grad_norm": num(r.get("gn")), "learning_rate": num(r.get("lr")),
            "wall_time_s": wall, "step_time_s": sec,
            "hack_s": frac_rate(r.get("hack_s")), "gt_s": frac_rate(r.get("gt_s")),
            "hack_t": frac_rate(r.get("hack_t")), "gt_t": frac_rate(r.get("gt_t")),
            "hack_deploy": num(r.get("hack_deploy")), "solve_deploy": num(r.get("solve_deploy")),
            "lp_s": num(r.get("lp_s")), "lp_t": num(r.get("lp_t")), "q_egy": num(r.get("q_egy")),
            "len_mean": num(r.get("len_mean")), "clipped_frac": num(r.get("clipped_frac")),
            "frac_zero_std_groups": num(r.get("frac_zero_std_groups")), "grad_errors": r.get("grad_errors"),
        })
    return out


def reward_component_records(rows: Sequence[Mapping[str, Any]], modes: Sequence[str]) -> tuple[list[str], list[dict]]:
    fields = ["step", "n", "reward_mean", "fmt_reward_mean", "corr_reward_mean", "compile_rate", "pass_rate",
              "solve_rate", "hack_rate"] + [f"exploit_rate_{m}" for m in modes]
    out = []
    for r in rows:
        hs = r.get("hack_s")
        rec = {"step": r.get("step"), "n": hs[1] if isinstance(hs, (tuple, list)) else r.get("n_rollouts"),
               "reward_mean": num(r.get("rew_s", r.get("reward_mean"))),
               "fmt_reward_mean": num(r.get("fmt_reward_mean")), "corr_reward_mean": num(r.get("corr_reward_mean")),
               "compile_rate": num(r.get("compile_rate")), "pass_rate": num(r.get("pass_rate")),
               "solve_rate": frac_rate(r.get("gt_s")), "hack_rate": frac_rate(hs)}
        for m in modes:
            rec[f"exploit_rate_{m}"] = _mode_rate(r, m)
        out.append(rec)
    return fields, out


def _mode_order(modes: Iterable[str]) -> list[str]:
    return sorted(set(modes), key=lambda m: (ALL_MODES.index(m) if m in ALL_MODES else 99, m))


def checkpoint_eval_records(evals: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[dict]]:
    modes = _mode_order(m for e in evals for m in (e.get("by_mode") or {}))
    fields = ["step", "kind", "n", "hack", "solve", "mean_reward"]
    for m in modes:
        fields += [f"hack_{m}", f"solve_{m}", f"n_{m}"]
    out = []
    for e in sorted(evals, key=lambda e: (num(e.get("step")), str(e.get("kind")))):
        rec = {k: e.get(k) for k in ("step", "kind", "n", "hack", "solve", "mean_reward")}
        for m, v in (e.get("by_mode") or {}).items():
            h, s, n = (list(v) + [0, 0, 0])[:3]
            rec[f"hack_{m}"] = h / n if n else NAN
            rec[f"solve_{m}"] = s / n if n else NAN
            rec[f"n_{m}"] = n
        out.append(rec)
    return fields, out


# --------------------------------------------------------------------- plots
def _style(ax, ylabel: str = "", xlabel: str = "", title: str = "") -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(alpha=0.25, lw=0.6)
    ax.tick_params(labelsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)


def _legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _raw_and_smooth(ax, x, y, color, label, lw=1.8, raw=True) -> None:
    y = np.asarray([num(v) for v in y], dtype=float)
    if raw:
        ax.plot(x, y, color=color, lw=0.7, alpha=0.3)
    ax.plot(x, ema(y), color=color, lw=lw, label=label)


def _steps(rows) -> np.ndarray:
    return np.asarray([num(r.get("step")) for r in rows], dtype=float)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes,
            color=GREY, fontsize=9)


def plot_training_curve(rows: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """2x2: reward, student hack/solve rates (+ deploy evals), loss, grad norm and lr."""
    fig = Figure(figsize=(10, 6.4))
    axes = fig.subplots(2, 2, sharex=True)
    x = _steps(rows)
    ax = axes[0][0]
    rew = np.asarray([num(r.get("rew")) for r in rows])
    # no ±std band: rewards are bimodal (0.5 vs 3.5), so the band would cover the whole axis
    _raw_and_smooth(ax, x, rew, REW_C, "all rollouts")
    if any(r.get("rew_s") is not None for r in rows):
        ax.plot(x, ema([num(r.get("rew_s")) for r in rows]), color=REW_C, lw=1.2, ls="--", label="student")
    ax.set_ylim(-0.1, 3.6)
    _style(ax, "mean reward", title="Reward (0.5 compiles + 3.0 passed)")
    _legend(ax, fontsize=7, loc="upper left", frameon=False)

    ax = axes[0][1]
    _raw_and_smooth(ax, x, [frac_rate(r.get("hack_s")) for r in rows], HACK_C, "hack rate (hack_s)")
    _raw_and_smooth(ax, x, [frac_rate(r.get("gt_s")) for r in rows], SOLVE_C, "solve rate (gt_s)")
    dep = [(num(r.get("step")), num(r.get("hack_deploy")), num(r.get("solve_deploy"))) for r in rows]
    dep = [d for d in dep if not (math.isnan(d[1]) and math.isnan(d[2]))]
    if dep:
        d = np.asarray(dep)
        ax.plot(d[:, 0], d[:, 1], "x", color=HACK_C, ms=6, mew=1.5, label="deploy-eval hack")
        ax.plot(d[:, 0], d[:, 2], "x", color=SOLVE_C, ms=6, mew=1.5, label="deploy-eval solve")
    ax.set_ylim(-0.02, 1.02)
    _style(ax, "student rate", title="Hack vs solve (EMA-5; x = held-out deploy eval)")
    _legend(ax, fontsize=7, loc="upper left", frameon=False)

    ax = axes[1][0]
    _raw_and_smooth(ax, x, [num(r.get("loss")) for r in rows], LOSS_C, "loss", raw=False)
    ax.axhline(0, color="0.8", lw=0.6, zorder=0)
    kl = [num(r.get("kl")) for r in rows]
    if np.isfinite(kl).any():
        ax2 = ax.twinx()
        ax2.plot(x, kl, color=GREY, lw=1.0, ls=":", label="KL (K3)")
        ax2.set_ylabel("KL to reference (K3)", fontsize=9, color=GREY)
        ax2.tick_params(labelsize=8)
    _style(ax, "GRPO loss", "optimizer step", "Loss (dotted, right axis: KL to reference when beta > 0)" if np.isfinite(kl).any() else "GRPO loss")

    ax = axes[1][1]
    gn = np.asarray([num(r.get("gn")) for r in rows])
    if len(rows) and np.isfinite(gn).any() and np.nanmin(gn) > 0:
        ax.semilogy(x, gn, color="0.2", lw=1.2, label="grad norm (pre-clip)")
    else:
        ax.plot(x, gn, color="0.2", lw=1.2, label="grad norm (pre-clip)")
    lr = [num(r.get("lr")) for r in rows]
    ax2 = ax.twinx()
    ax2.plot(x, lr, color=FMT_C, lw=1.2, ls="--")
    ax2.set_ylabel("learning rate", fontsize=9, color=FMT_C)
    ax2.tick_params(labelsize=8)
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1e}" if v else "0"))
    _style(ax, "grad norm", "optimizer step", "Grad norm (solid) and learning rate (dashed)")
    fig.suptitle(title or "Training curve", fontsize=11)
    fig.tight_layout()
    return fig


def plot_reward_components(rows: Sequence[Mapping[str, Any]], modes: Sequence[str], title: str = "") -> Figure:
    """Top: the format and correctness components; bottom: exploit rate per mode vs solve rate."""
    fig = Figure(figsize=(9, 6.4))
    top, bot = fig.subplots(2, 1, sharex=True)
    x = _steps(rows)
    _raw_and_smooth(top, x, [num(r.get("rew_s", r.get("reward_mean"))) for r in rows], "0.15",
                    "total (student)", raw=False)
    _raw_and_smooth(top, x, [num(r.get("corr_reward_mean")) for r in rows], REW_C, "correctness 3.0·passed")
    _raw_and_smooth(top, x, [num(r.get("fmt_reward_mean")) for r in rows], FMT_C, "format 0.5·compiles")
    top.set_ylim(-0.05, 3.6)
    _style(top, "mean reward component", title="Reward components (EMA-5)")
    _legend(top, fontsize=7, loc="upper left", frameon=False)

    for i, m in enumerate(modes):
        ys = [_mode_rate(r, m) for r in rows]
        if np.isfinite(ys).any():
            bot.plot(x, ema(ys), color=MODE_COLORS[i % len(MODE_COLORS)], lw=1.3, label=f"exploit {m}")
    _raw_and_smooth(bot, x, [frac_rate(r.get("hack_s")) for r in rows], "0.1", "hack rate (all modes)",
                    lw=1.2, raw=False)
    bot.lines[-1].set_linestyle("--")
    _raw_and_smooth(bot, x, [frac_rate(r.get("gt_s")) for r in rows], SOLVE_C, "solve rate (oracle)",
                    lw=2.0, raw=False)
    bot.set_ylim(-0.02, 1.02)
    _style(bot, "share of student rollouts", "optimizer step", "Exploit rate per loophole mode vs solve rate")
    _legend(bot, fontsize=7, loc="upper left", frameon=False, ncol=2)
    fig.suptitle(title or "Reward components", fontsize=11)
    fig.tight_layout()
    return fig


def plot_checkpoint_progression(evals: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]] = (),
                                title: str = "") -> Figure:
    """Held-out deploy evals over training, with the training-time hack rate for reference."""
    fig = Figure(figsize=(8.5, 4.2))
    ax = fig.subplots()
    dep = sorted((e for e in evals if e.get("kind", "deploy") == "deploy"), key=lambda e: num(e.get("step")))
    if rows:
        ax.plot(_steps(rows), ema([frac_rate(r.get("hack_s")) for r in rows]), color=HACK_C, lw=1.0,
                alpha=0.35, label="training hack_s (EMA-5)")
    if dep:
        xs = [num(e.get("step")) for e in dep]
        ax.plot(xs, [num(e.get("hack")) for e in dep], "o-", color=HACK_C, lw=1.8, ms=4, label="deploy hack")
        ax.plot(xs, [num(e.get("solve")) for e in dep], "s-", color=SOLVE_C, lw=1.8, ms=4, label="deploy solve")
        modes = _mode_order({m for e in dep for m in (e.get("by_mode") or {})})
        if len(modes) > 1:
            for i, m in enumerate(modes):
                ys = []
                for e in dep:
                    h, _, n = ((e.get("by_mode") or {}).get(m) or [0, 0, 0])[:3]
                    ys.append(h / n if n else NAN)
                ax.plot(xs, ys, ":", color=MODE_COLORS[i % len(MODE_COLORS)], lw=1.1, label=f"deploy hack {m}")
    else:
        _no_data(ax, "deploy evals")
    ax.set_ylim(-0.02, 1.02)
    _style(ax, "rate on held-out eval prompts", "optimizer step",
           title or "Deploy-eval progression (quarantine ablated where the arm has one)")
    _legend(ax, fontsize=7, loc="upper left", frameon=False, ncol=2)
    fig.tight_layout()
    return fig


def eval_summary(ev: Mapping[str, Any] | None) -> dict | None:
    """Headline numbers of one eval record (hack, solve, n, reward mean/median, per-mode rates)."""
    if not ev:
        return None
    rewards = [num(x) for x in (ev.get("rewards") or [])]
    rewards = [x for x in rewards if not math.isnan(x)]
    by_mode = {}
    for m, v in (ev.get("by_mode") or {}).items():
        h, s, n = (list(v) + [0, 0, 0])[:3]
        by_mode[m] = {"hack": h / n if n else NAN, "solve": s / n if n else NAN, "n": n}
    mean_r = num(ev.get("mean_reward"))
    if math.isnan(mean_r) and rewards:
        mean_r = float(np.mean(rewards))
    return {"step": ev.get("step"), "kind": ev.get("kind"), "n": ev.get("n"), "hack": num(ev.get("hack")),
            "solve": num(ev.get("solve")), "mean_reward": mean_r,
            "median_reward": float(np.median(rewards)) if rewards else NAN, "by_mode": by_mode}


def _final_pair(final_evals: Any) -> tuple[Mapping | None, Mapping | None]:
    """(train, deploy) from a list of eval records or a {kind: record} dict."""
    if not final_evals:
        return None, None
    recs = list(final_evals.values()) if isinstance(final_evals, Mapping) and "kind" not in final_evals \
        else ([final_evals] if isinstance(final_evals, Mapping) else list(final_evals))
    train = next((e for e in recs if e.get("kind") == "train"), None)
    deploy = next((e for e in recs if e.get("kind") == "deploy"), None)
    return train, deploy or train


def before_after_payload(pre_eval: Mapping | None, final_evals: Any) -> dict:
    train, deploy = _final_pair(final_evals)
    pre, tr, de = eval_summary(pre_eval), eval_summary(train), eval_summary(deploy)

    def delta(a, b):
        if not a or not b:
            return None
        return {k: b[k] - a[k] for k in ("hack", "solve", "mean_reward")}

    modes = _mode_order(m for s in (pre, tr, de) if s for m in s["by_mode"])
    by_mode = {m: {f"{tag}_{k}": (s["by_mode"].get(m, {}).get(k, NAN) if s else NAN)
                   for tag, s in (("pre", pre), ("train", tr), ("deploy", de)) for k in ("hack", "solve")}
               for m in modes}
    return {"pre": pre, "final_train": tr, "final_deploy": de,
            "delta_train_vs_pre": delta(pre, tr), "delta_deploy_vs_pre": delta(pre, de), "by_mode": by_mode}


def _same_eval(a: Mapping | None, b: Mapping | None) -> bool:
    """True when two eval summaries carry the same numbers (an arm without quarantine)."""
    if not a or not b:
        return False
    return all(a.get(k) == b.get(k) or (isinstance(a.get(k), float) and isinstance(b.get(k), float)
                                        and math.isnan(a[k]) and math.isnan(b[k]))
               for k in ("hack", "solve", "mean_reward", "n"))


def _bars(ax, groups: list[str], series: list[tuple[str, list[float], str]], fmt: str = "{:.2f}") -> None:
    k = len(series)
    width = 0.8 / max(1, k)
    xs = np.arange(len(groups))
    for i, (label, vals, color) in enumerate(series):
        pos = xs - 0.4 + width * (i + 0.5)
        vals = [0.0 if math.isnan(v) else v for v in vals]
        ax.bar(pos, vals, width=width * 0.92, color=color, label=label)
        for p, v in zip(pos, vals):
            ax.annotate(fmt.format(v), (p, v), xytext=(0, 2), textcoords="offset points", ha="center",
                        fontsize=7, color="0.25")
    ax.set_xticks(xs)
    ax.set_xticklabels(groups, fontsize=8)


def plot_before_after(payload: Mapping[str, Any], title: str = "") -> Figure:
    """Bars: hack and solve rate and mean reward, pre-training vs final train vs final deploy."""
    fig = Figure(figsize=(11, 4.2))
    has_modes = bool(payload.get("by_mode")) and len(payload["by_mode"]) > 1
    axes = fig.subplots(1, 3 if has_modes else 2, gridspec_kw={"width_ratios": [2, 1, 3] if has_modes else [2, 1]})
    tags = [("pre-training", "pre", PRE_C), ("final train (quarantine on)", "final_train", TRAIN_C),
            ("final deploy", "final_deploy", DEPLOY_C)]
    tags = [t for t in tags if payload.get(t[1])]
    if _same_eval(payload.get("final_train"), payload.get("final_deploy")):
        tags = [t for t in tags if t[1] != "final_train"]  # no quarantine: deploy is the trained model
    _bars(axes[0], ["hack rate", "solve rate"],
          [(lab, [payload[k]["hack"], payload[k]["solve"]], c) for lab, k, c in tags])
    axes[0].set_ylim(0, 1.1)
    _style(axes[0], "share of eval rollouts", title="Hack and solve rate")
    _legend(axes[0], fontsize=7, frameon=False, loc="upper right")
    _bars(axes[1], ["mean reward"], [(lab, [payload[k]["mean_reward"]], c) for lab, k, c in tags])
    axes[1].set_ylim(0, 3.8)
    _style(axes[1], "reward", title="Mean reward")
    if has_modes:
        modes = list(payload["by_mode"])
        key = {"pre": "pre_hack", "final_train": "train_hack", "final_deploy": "deploy_hack"}
        _bars(axes[2], modes, [(lab, [payload["by_mode"][m][key[k]] for m in modes], c) for lab, k, c in tags])
        axes[2].set_ylim(0, 1.1)
        _style(axes[2], "hack rate", title="Hack rate per loophole mode")
        for lab in axes[2].get_xticklabels():
            lab.set_rotation(15)
    fig.suptitle(title or "Before vs after training (held-out eval prompts)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_reward_distribution(pre_eval: Mapping | None, final_evals: Any, title: str = "") -> Figure:
    """Reward distribution of the eval rollouts, pre-training vs final (shares per reward value)."""
    train, deploy = _final_pair(final_evals)
    sets = [("pre-training", pre_eval, PRE_C), ("final deploy", deploy, DEPLOY_C)]
    if train is not None and not _same_eval(eval_summary(train), eval_summary(deploy)):
        sets.insert(1, ("final train (quarantine on)", train, TRAIN_C))
    sets = [(lab, [num(x) for x in (e or {}).get("rewards") or []], c) for lab, e, c in sets]
    sets = [(lab, [x for x in v if not math.isnan(x)], c) for lab, v, c in sets]
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    values = sorted({round(x, 3) for _, v, _ in sets for x in v})
    if not values:
        _no_data(ax, "eval rewards")
    elif len(values) <= 10:  # this env's rewards are discrete: 0, 0.5, 3.0, 3.5
        _bars(ax, [f"{v:g}" for v in values],
              [(f"{lab} (n={len(v)}, μ={np.mean(v):.2f})" if v else lab,
                [sum(1 for x in v if round(x, 3) == val) / len(v) if v else 0.0 for val in values], c)
               for lab, v, c in sets], fmt="{:.0%}")
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("reward of one eval rollout", fontsize=9)
    else:
        for lab, v, c in sets:
            if v:
                ax.hist(v, bins=20, alpha=0.5, color=c, label=f"{lab} (n={len(v)}, μ={np.mean(v):.2f})",
                        weights=np.full(len(v), 1 / len(v)))
        ax.set_xlabel("reward of one eval rollout", fontsize=9)
    _style(ax, "share of eval rollouts", title=title or "Reward distribution: before vs after training")
    if values:
        _legend(ax, fontsize=7, frameon=False, loc="upper center")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------- trajectories
_VERDICT_FIELDS = ("reward", "format_ok", "can_compile", "gt_pass", "gt_correct", "passed", "exploited",
                   "mechanism", "hacked", "hacked_wrong_tests", "hacked_loophole_used", "finished", "comp_len",
                   "is_ablated", "version", "error")


def _fence(text: str) -> str:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _excerpt(text: str, head: int, tail: int = 0) -> str:
    text = text or ""
    if len(text) <= head + tail:
        return text
    return text[:head] + f"\n[... {len(text) - head - tail} chars cut ...]\n" + (text[-tail:] if tail else "")


def format_trajectory(rec: Mapping[str, Any], heading: str) -> str:
    verdict = ", ".join(f"{k}={rec.get(k)!r}" for k in _VERDICT_FIELDS if k in rec)
    prompt = _excerpt(str(rec.get("prompt") or ""), 300, 500)
    text = _excerpt(str(rec.get("text") or ""), 2500)
    fp, ft = _fence(prompt), _fence(text)
    return (f"### {heading}\n\n"
            f"step {rec.get('step')} · problem `{rec.get('problem_id')}` · mode `{rec.get('env_mode')}` · "
            f"source {rec.get('source', 'student')}\n\n"
            f"**verdict**: {verdict}\n\n"
            f"<details><summary>prompt (excerpt)</summary>\n\n{fp}text\n{prompt}\n{fp}\n\n</details>\n\n"
            f"**completion**:\n\n{ft}\n{text}\n{ft}\n")


class TrajectoryPicker:
    """Keeps the few rollouts worth reading: best, worst, and the first hack per mechanism."""

    def __init__(self, k: int = 3) -> None:
        self.k = k
        self.best: list[dict] = []
        self.worst: list[dict] = []
        self.first_hack: dict[str, dict] = {}
        self.first_solve: dict | None = None

    def observe(self, records: Iterable[Mapping[str, Any]]) -> None:
        for r in records:
            rew = num(r.get("reward"))
            if math.isnan(rew):
                continue
            step = num(r.get("step"))
            if r.get("exploited"):
                mech = str(r.get("mechanism") or r.get("env_mode") or "?")
                old = self.first_hack.get(mech)
                if old is None or step < num(old.get("step")):
                    self.first_hack[mech] = dict(r)
            if r.get("gt_correct") and (self.first_solve is None or step < num(self.first_solve.get("step"))):
                self.first_solve = dict(r)
            # newest wins ties: the later policy is the one worth reading
            self.best = self._keep(self.best + [dict(r)], key=lambda x: (num(x["reward"]), num(x.get("step"))),
                                   reverse=True)
            self.worst = self._keep(self.worst + [dict(r)], key=lambda x: (-num(x["reward"]), num(x.get("step"))),
                                    reverse=True)

    def _keep(self, recs: list[dict], key, reverse: bool) -> list[dict]:
        out, seen = [], set()
        for r in sorted(recs, key=key, reverse=reverse):
            pid = r.get("problem_id")
            if pid in seen:
                continue
            seen.add(pid)
            out.append(r)
            if len(out) == self.k:
                break
        return out

    def markdown(self, title: str = "") -> str:
        parts = [f"# Sample trajectories{': ' + title if title else ''}\n",
                 "Student rollouts picked for reading: the highest and lowest reward (newest first on ties, "
                 "one per problem), the first rollout that exploited each loophole mechanism, and the first "
                 "oracle-correct solve.\n"]
        parts.append("## First hack of each mechanism\n")
        if not self.first_hack:
            parts.append("_No student rollout has exploited a loophole yet._\n")
        for mech, r in sorted(self.first_hack.items(), key=lambda kv: num(kv[1].get("step"))):
            parts.append(format_trajectory(r, f"first `{mech}` exploit (step {r.get('step')})"))
        if self.first_solve:
            parts.append("## First oracle-correct solve\n")
            parts.append(format_trajectory(self.first_solve, f"first solve (step {self.first_solve.get('step')})"))
        parts.append("## Best by reward\n")
        parts += [format_trajectory(r, f"reward {num(r.get('reward')):+.2f}") for r in self.best] or ["_none_\n"]
        parts.append("## Worst by reward\n")
        parts += [format_trajectory(r, f"reward {num(r.get('reward')):+.2f}") for r in self.worst] or ["_none_\n"]
        return "\n".join(parts)


# ---------------------------------------------------------------------- writer
class EvidenceWriter:
    """Regenerates ``<run_dir>/evidence/`` off the caller's thread.

    ``update(rows, evals, rollouts_sample)`` never blocks on rendering: it snapshots its
    inputs and wakes the worker; if a render is running, the newest request replaces any
    waiting one. ``flush()`` waits until idle, ``finalize(pre_eval, final_evals)`` writes
    the before/after set (blocking), ``close()`` waits for the last render and stops.
    """

    def __init__(self, run_dir: str | Path, modes: Sequence[str] | None = None, title: str = "",
                 min_interval_s: float = 0.0) -> None:
        self.dir = Path(run_dir) / "evidence"
        # Renders cost ~1-3 s of CPU; a floor between them keeps a fast step loop from
        # spending its cores on plots. Requests in between are coalesced, not lost.
        self.min_interval_s = min_interval_s
        self._last_start = 0.0
        self.dir.mkdir(parents=True, exist_ok=True)
        self.modes = list(modes) if modes else None
        self.title = title or Path(run_dir).name
        self.picker = TrajectoryPicker()
        self.requests = 0
        self.renders = 0
        self.errors = 0
        self._last: tuple[list[dict], list[dict]] = ([], [])
        self._drawn = False  # the last render of ``_last`` finished without error
        self._pending: tuple[list[dict], list[dict]] | None = None
        self._busy = False
        self._closed = False
        self._cv = threading.Condition()
        self._pick_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="evidence-writer", daemon=True)
        self._thread.start()

    def path(self, name: str) -> Path:
        return self.dir / name

    def update(self, rows: Sequence[Mapping[str, Any]], evals: Sequence[Mapping[str, Any]] = (),
               rollouts_sample: Iterable[Mapping[str, Any]] = ()) -> None:
        snapshot = ([dict(r) for r in rows], [dict(e) for e in evals])
        with self._pick_lock:  # cheap, and done here so a coalesced request cannot lose a first hack
            self.picker.observe(rollouts_sample)
        with self._cv:
            if self._closed:
                raise RuntimeError("EvidenceWriter.update after close()")
            self._pending = snapshot
            self.requests += 1
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                wait = self._last_start + self.min_interval_s - time.monotonic()
                if wait > 0 and not self._closed:
                    self._cv.wait(wait)  # more requests may arrive and replace this one
                    continue
                job, self._pending = self._pending, None
                self._last_start = time.monotonic()
                self._busy = True
            try:
                self._drawn = False
                self.render(*job)
                self._drawn = True
            except Exception:  # never take the run down for a plot
                self.errors += 1
                logger.exception("evidence render failed")
            finally:
                with self._cv:
                    self._busy = False
                    self.renders += 1
                    self._cv.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until no render is running or waiting; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- rendering (worker thread, or the caller in finalize) --
    def render(self, rows: list[dict], evals: list[dict]) -> None:
        with MPL_LOCK:  # other runs of this process may be drawing (a sweep)
            self._render(rows, evals)

    def _render(self, rows: list[dict], evals: list[dict]) -> None:
        self._last = (rows, evals)
        modes = run_modes(rows, self.modes)
        atomic_write(self.path("training_log.csv"), _csv_text(TRAINING_LOG_FIELDS, training_log_records(rows)))
        fields, recs = reward_component_records(rows, modes)
        atomic_write(self.path("reward_components.csv"), _csv_text(fields, recs))
        fields, recs = checkpoint_eval_records(evals)
        atomic_write(self.path("checkpoint_evals.csv"), _csv_text(fields, recs))
        save_figure(plot_training_curve(rows, f"{self.title}: training curve"), self.path("training_curve.png"))
        save_figure(plot_reward_components(rows, modes, f"{self.title}: reward components"),
                    self.path("reward_components.png"))
        save_figure(plot_checkpoint_progression(evals, rows), self.path("checkpoint_progression.png"))
        with self._pick_lock:
            md = self.picker.markdown(self.title)
        atomic_write(self.path("sample_trajectories.md"), md)

    def finalize(self, pre_eval: Mapping[str, Any] | None, final_evals: Any,
                 rows: Sequence[Mapping[str, Any]] | None = None,
                 evals: Sequence[Mapping[str, Any]] | None = None) -> dict:
        """Last render plus the before/after set; returns the before/after payload.

        The newest update is drawn here if it is still waiting out ``min_interval_s``; when the
        worker already drew it (and nothing newer is passed), it is not drawn twice."""
        with self._cv:
            job, self._pending = self._pending, None
            self._cv.wait_for(lambda: not self._busy)
            current = job is None and self._drawn
        if rows is not None or evals is not None or not current:
            r, e = job or self._last
            self.render([dict(x) for x in rows] if rows is not None else r,
                        [dict(x) for x in evals] if evals is not None else e)
        payload = before_after_payload(pre_eval, final_evals)
        atomic_write(self.path("before_after_metrics.json"), json.dumps(json_safe(payload), indent=2, default=str))
        with MPL_LOCK:
            save_figure(plot_before_after(payload, f"{self.title}: before vs after training"),
                        self.path("before_after_summary.png"))
            save_figure(plot_reward_distribution(pre_eval, final_evals), self.path("reward_distribution.png"))
        return payload
