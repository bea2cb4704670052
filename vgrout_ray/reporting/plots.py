"""Training-dynamics small multiples across arms and seeds (seed 001), from run directories.

    vgrout plots dynamics out/runs/ --out out/dynamics.png

Columns are arms (vanilla, static erasure, online erasure, routing, routing2);
row 0 is the student's hack rate against its solve rate, row 1 the cosine of the
live teacher / student gradient with the arm's direction (v_hack; route2's own v_grad,
named in each cos panel). Every panel has one thin EMA-5 line per seed and a bold mean
per series; a dashed line marks the mean step of the
first hack. Routing arms are drawn from the ablated slice (``hack_abl`` /
``solve_abl``: δS_hack zeroed, the model that ships) when the run has one,
because their training-time rollouts keep hacking through the quarantine by
design. A second figure, ``<out>_hack_overlay.png``, overlays the mean hack rate
of every arm in one panel.

Source: run directories (``rows.parquet`` + ``config.json``), or folders holding them. The
log's table is for people; the numbers are read from the Parquet rows the run wrote, never
parsed back out of the log.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402
from matplotlib import transforms  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vgrout_ray.arms import ARM_NAMES, PLOT_FACETS, QUARANTINE_ARMS, cos_direction, plot_facet  # noqa: E402
from vgrout_ray.util import ema as _ema  # noqa: E402

RATE_COLS = {"hack_s": "hack", "gt_s": "solve"}
COS_COLS = {"cos_pre_t": "teacher", "cos_pre_s": "student"}
RATE_COLORS = {"hack_s": "#c1432b", "gt_s": "#2f7d4f"}
COS_COLORS = {"cos_pre_t": "#33508c", "cos_pre_s": "#c98a2b"}
ARM_ORDER = list(PLOT_FACETS)
ARM_COLORS = {"vanilla": "#7a7a7a", "static erasure": "#c98a2b", "online erasure": "#33508c",
              "routing": "#2f7d4f", "routing2": "#7b3294"}
ROUTING_ARMS = QUARANTINE_ARMS
SERIES = ("hack_s", "gt_s", "cos_pre_s", "cos_pre_t", "hack_abl", "solve_abl", "hack_deploy", "solve_deploy")


# ------------------------------------------------------------------- reading
def _preset_default_refresh(preset: str | None) -> int:
    try:
        from vgrout_ray.config import PRESETS, Config

        cls = PRESETS.get(preset or "", Config)
        return int({f.name: f.default for f in dataclasses.fields(cls)}["v_hack_refresh_every"])
    except Exception:  # pragma: no cover - config import problems must not stop a plot
        return 0


def _finish(run: dict) -> dict:
    """Pick the plotted hack/solve series: routing arms use the ablated slice when it has data."""
    run["hack_s_train"], run["gt_s_train"] = run["hack_s"], run["gt_s"]
    run["plotted"] = "train"
    if run["arm"] in ROUTING_ARMS and np.isfinite(run.get("hack_abl", np.array([np.nan]))).any():
        run["hack_s"], run["gt_s"] = run["hack_abl"], run["solve_abl"]
        run["plotted"] = "ablated"
    return run


def parse_run(run_dir: str | Path) -> dict | None:
    """A run directory (rows.parquet + config.json / per_mode_deploy.json) ->
    {arm, refr, seed, preset, source, name, steps, <series>...}; None when it has no rows."""
    from vgrout_ray.reporting.evidence import frac_rate, num
    from vgrout_ray.reporting.parquet import read_rows

    run_dir = Path(run_dir)
    rows = read_rows(run_dir)
    if not rows:
        return None
    cfg: dict = {}
    for name in ("config.json", "per_mode_deploy.json"):
        p = run_dir / name
        if p.exists():
            try:
                d = json.loads(p.read_text())
            except json.JSONDecodeError:
                continue
            for k, v in d.items():
                cfg.setdefault(k, v)
    arm = cfg.get("arm") or ARM_NAMES.get(cfg.get("intervention", "none"), "vanilla")
    refr = cfg.get("v_hack_refresh_every", cfg.get("vhack_refresh_every", cfg.get("refresh_every")))
    if refr is None:
        refr = _preset_default_refresh(cfg.get("preset"))
    m = re.search(r"_seed(\d+)", run_dir.name)
    seed = cfg.get("seed", m.group(1) if m else "?")
    rows = sorted(rows, key=lambda r: r["step"])
    series = {c: np.array([frac_rate(r.get(c)) if c in ("hack_s", "gt_s", "hack_abl", "solve_abl")
                           else num(r.get(c)) for r in rows], dtype=float) for c in SERIES}
    run = dict(arm=arm, refr=int(refr), seed=str(seed), preset=cfg.get("preset"), source=str(run_dir),
               name=run_dir.name, steps=np.array([int(r["step"]) for r in rows]), **series)
    return _finish(run)


def classify(run: dict) -> str:
    return plot_facet(run["arm"], run["refr"])


# ---------------------------------------------------------------- plotting
def _onset(steps: np.ndarray, hack: np.ndarray) -> int | None:
    """First step with a raw hack rate > 0 (unsmoothed: EMA would blur the very step)."""
    nz = np.flatnonzero(np.nan_to_num(hack, nan=0.0) > 0)
    return int(steps[nz[0]]) if len(nz) else None


def _mean_over_seeds(runs: list[dict], smoothed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the smoothed series over seeds on the steps every seed has (union if none shared)."""
    common = set(runs[0]["steps"].tolist())
    for r in runs[1:]:
        common &= set(r["steps"].tolist())
    grid = np.array(sorted(common or {s for r in runs for s in r["steps"].tolist()}))
    stack = np.full((len(runs), len(grid)), np.nan)
    pos = {s: i for i, s in enumerate(grid)}
    for k, (r, ys) in enumerate(zip(runs, smoothed)):
        for s, y in zip(r["steps"], ys):
            if s in pos:
                stack[k, pos[s]] = y
    with np.errstate(all="ignore"), _quiet():
        return grid, np.nanmean(stack, axis=0)


class _quiet:
    """Silence numpy's 'mean of empty slice' for all-NaN columns (they stay NaN)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _series_panel(ax, runs: list[dict], cols: dict[str, str], colors: dict[str, str], label: bool) -> None:
    ends = []
    for col, name in cols.items():
        color = colors[col]
        smoothed = []
        for r in runs:
            ys = _ema(r[col])
            ax.plot(r["steps"], ys, color=color, lw=0.7, alpha=0.35, gid=f"seed:{col}:{r['seed']}")
            smoothed.append(ys)
        xm, ym = _mean_over_seeds(runs, smoothed)
        ax.plot(xm, ym, color=color, lw=1.8, gid=f"mean:{col}")
        fin = np.flatnonzero(np.isfinite(ym))
        if len(fin):
            ends.append((ym[fin[-1]], xm[fin[-1]], name, color))
    if label and ends:  # direct labels, leftmost column only; nudged apart by endpoint order when close
        ends.sort(key=lambda e: e[0])
        close = len(ends) > 1 and abs(ends[-1][0] - ends[0][0]) < 0.06
        for rank, (y, x, name, color) in enumerate(ends):
            dy = 0 if not close else (-6 if rank == 0 else (6 if rank == len(ends) - 1 else 0))
            ax.annotate(name, (x, y), color=color, fontsize=8, xytext=(3, dy), textcoords="offset points",
                        va="center")


DEPLOY_COLS = {"hack_deploy": "deploy hack", "solve_deploy": "deploy solve"}
DEPLOY_COLORS = {"hack_deploy": RATE_COLORS["hack_s"], "solve_deploy": RATE_COLORS["gt_s"]}


def _deploy_points(ax, runs: list[dict], label: bool) -> None:
    """The held-out deploy evals (before RL, every k steps, at the end; δS_hack zeroed in the
    quarantine arms) as the seed mean at each eval step, markers on a dashed line: the number the
    results table reports, drawn beside the training-batch rates it is easy to mistake them for."""
    for col, name in DEPLOY_COLS.items():
        by_step: dict[int, list[float]] = defaultdict(list)
        for r in runs:
            for s, y in zip(r["steps"], r[col]):
                if np.isfinite(y):
                    by_step[int(s)].append(float(y))
        if not by_step:
            continue
        xs = np.array(sorted(by_step))
        ym = np.array([np.mean(by_step[s]) for s in xs])
        marker = "o" if col == "hack_deploy" else "s"
        ax.plot(xs, ym, color=DEPLOY_COLORS[col], lw=1.0, ls=(0, (2, 2)), marker=marker, ms=3.5,
                mfc="white", gid=f"deploy:{col}")
        if label:
            dy = 6 if col == "hack_deploy" else 9
            ax.annotate(name, (xs[0], ym[0]), color=DEPLOY_COLORS[col], fontsize=7, xytext=(3, dy),
                        textcoords="offset points", va="center")


def _group(runs: Iterable[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_arm[classify(r)].append(r)
    return by_arm, [a for a in ARM_ORDER if a in by_arm]


def _tidy(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=8)


def plot_dynamics(runs: list[dict], out: str | Path | None = None) -> Figure:
    """Small multiples: arms as columns; hack vs solve (training batch, and the held-out deploy
    evals as markers) and teacher/student cos(grad, direction) as rows (the direction is v_hack,
    or route2's own v_grad in its column, named in each cos panel)."""
    by_arm, arms = _group(runs)
    if not arms:
        raise ValueError("no runs to plot")
    fig = Figure(figsize=(max(3.1 * len(arms), 5.2), 4.9))
    axes = fig.subplots(2, len(arms), sharex=True, sharey="row", squeeze=False)
    cos_vals = np.concatenate([r[c][np.isfinite(r[c])] for r in runs for c in COS_COLS] or [np.zeros(0)])
    cos_lo = min(-0.05, float(cos_vals.min()) - 0.02) if cos_vals.size else -0.05
    cos_hi = max(0.45, float(cos_vals.max()) + 0.02) if cos_vals.size else 0.45
    for col, arm in enumerate(arms):
        rs = sorted(by_arm[arm], key=lambda r: r["seed"])
        n_seed = len({r["seed"] for r in rs})
        note = ""
        if arm in ROUTING_ARMS:
            kinds = {r["plotted"] for r in rs}
            note = ", ablated slice" if kinds == {"ablated"} else (", train-time" if kinds == {"train"} else ", mixed")
        axes[0][col].set_title(f"{arm}\n(n={n_seed} seed{'s' if n_seed > 1 else ''}{note})", fontsize=9)
        _series_panel(axes[0][col], rs, RATE_COLS, RATE_COLORS, label=col == 0)
        _deploy_points(axes[0][col], rs, label=col == 0)
        _series_panel(axes[1][col], rs, COS_COLS, COS_COLORS, label=col == 0)
        axes[1][col].set_title(f"cos vs {cos_direction(arm)}", fontsize=8)
        axes[0][col].set_ylim(0, 1)
        axes[1][col].set_ylim(cos_lo, cos_hi)
        axes[1][col].axhline(0, color="0.8", lw=0.6, zorder=0, gid="zero")
        axes[1][col].set_xlabel("optimizer step", fontsize=9)
        onsets = [s for r in rs if (s := _onset(r["steps"], r["hack_s"])) is not None]
        if onsets:
            s0 = float(np.mean(onsets))
            for row in (0, 1):
                axes[row][col].axvline(s0, color="0.55", lw=0.8, ls=(0, (4, 3)), zorder=0, gid="onset")
            axes[0][col].annotate("first hack", (s0, 1.0), color="0.4", fontsize=7, xytext=(2, -2),
                                  textcoords="offset points", va="top")
    axes[0][0].set_ylabel("student rate", fontsize=9)
    axes[1][0].set_ylabel("cos(grad, direction)", fontsize=9)
    for ax in axes.flat:
        _tidy(ax)
    fig.suptitle("Training dynamics by arm: hack vs solve, gradient alignment with the arm's direction\n"
                 "(EMA-5 training batch: thin = seed, bold = mean; markers = held-out deploy eval, seed mean; "
                 "dashed = mean first hack)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    if out is not None:
        _save(fig, out)
        logger.info(f"wrote {out} ({len(runs)} runs, arms={arms})")
    return fig


def plot_hack_overlay(runs: list[dict], out: str | Path | None = None) -> Figure:
    """One panel: the mean student hack rate of every arm (thin = seeds, dot = mean onset)."""
    by_arm, arms = _group(runs)
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.subplots()
    labels = []
    for arm in arms:
        rs = sorted(by_arm[arm], key=lambda r: r["seed"])
        color = ARM_COLORS[arm]
        smoothed = []
        for r in rs:
            ys = _ema(r["hack_s"])
            ax.plot(r["steps"], ys, color=color, lw=0.6, alpha=0.25, gid=f"seed:{arm}:{r['seed']}")
            smoothed.append(ys)
        xm, ym = _mean_over_seeds(rs, smoothed)
        ax.plot(xm, ym, color=color, lw=2.0, gid=f"mean:{arm}")
        onsets = [s for r in rs if (s := _onset(r["steps"], r["hack_s"])) is not None]
        fin = np.isfinite(ym)
        if onsets and fin.any():
            s0 = float(np.mean(onsets))
            ax.plot(s0, np.interp(s0, xm[fin], ym[fin]), marker="o", ms=4, color=color, zorder=3,
                    gid=f"onset:{arm}")
        if fin.any():
            i = np.flatnonzero(fin)[-1]
            labels.append([float(ym[i]), float(xm[i]), arm, color])
    # direct labels at the line ends, pushed apart so close arms stay legible
    labels.sort(key=lambda e: e[0])
    for k in range(1, len(labels)):
        labels[k][0] = max(labels[k][0], labels[k - 1][0] + 0.06)
    shift = transforms.offset_copy(ax.transData, fig=fig, x=4, units="points")
    for y, x, arm, color in labels:
        ax.text(x, y, arm, color=color, fontsize=8, va="center", transform=shift)
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimizer step", fontsize=9)
    ax.set_ylabel("student hack rate", fontsize=9)
    ax.set_title("Student hack rate by arm (EMA-5; dot = mean onset;\nrouting arms: quarantine-ablated slice)",
                 fontsize=10)
    _tidy(ax)
    fig.tight_layout()
    if out is not None:
        _save(fig, out)
        logger.info(f"wrote {out}")
    return fig


def _save(fig: Figure, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")


def overlay_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + "_hack_overlay.png")


# ---------------------------------------------------------------------- CLI
def gather(paths: Iterable[str]) -> list[dict]:
    """Read run dirs, globs and folders of run dirs; a run reached twice counts once."""
    runs: list[dict] = []
    seen: set[str] = set()

    def add(d: Path) -> None:
        key = str(d.resolve())
        if key in seen:
            return
        seen.add(key)
        r = parse_run(d)
        if r is not None:
            runs.append(r)

    def visit(p: Path) -> None:
        if p.is_file():
            raise SystemExit(f"{p}: plots read run directories (rows.parquet), not files; pass its run dir "
                             "(out/runs/<run>) or a folder of run dirs")
        if (p / "rows.parquet").exists():
            add(p)
        elif p.is_dir():
            for q in sorted(p.iterdir()):
                if q.is_dir() and (q / "rows.parquet").exists():
                    add(q)

    for s in paths:
        if any(c in s for c in "*?["):
            for q in sorted(Path().glob(s)):
                visit(q)
        else:
            visit(Path(s))
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vgrout plots", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    dyn = sub.add_parser("dynamics", help="small multiples by arm + single-panel hack overlay")
    dyn.add_argument("inputs", nargs="+", help="run dirs, globs, or folders holding run dirs")
    dyn.add_argument("--out", type=Path, default=Path("out/dynamics.png"))
    a = ap.parse_args(argv)
    runs = gather(a.inputs)
    if not runs:
        raise SystemExit(f"no parseable runs in {a.inputs}")
    for r in runs:
        logger.info(f"{classify(r):16s} seed={r['seed']} steps={len(r['steps'])} plotted={r['plotted']} "
                    f"{r['source']}")
    plot_dynamics(runs, a.out)
    plot_hack_overlay(runs, overlay_path(a.out))
    return 0
