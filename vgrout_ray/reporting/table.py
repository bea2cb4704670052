"""The per-step table and the run's loguru sinks.

Seed 000 is the column spec: order, widths, header strings, number formats and
what each column means. The table is how a researcher watches a run live; the
run's record is rows.parquet (one name per value), and the column specs here map
those names to the seed's display headers. The layout is identical across arms
(gate columns read ``nan`` where an arm has no gate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

from loguru import logger
from tqdm import tqdm

# Level icons for the terse stdout sink (the file sink keeps full level names).
LEVEL_ICONS = {"TRACE": "T", "DEBUG": "D", "INFO": "I", "SUCCESS": "S",
               "WARNING": "W", "ERROR": "E", "CRITICAL": "C"}
FILE_FORMAT = "{time:HH:mm:ss} | {level} | {message}"


def setup_logging(run_id: str, logs_dir: str | Path = "logs", path: str | Path | None = None) -> Path:
    """Route loguru to a terse stdout (icon + message, kept below tqdm bars) and a
    verbose DEBUG file ``<logs_dir>/<YYYYmmddTHHMMSS>_<run_id>.log``; return its path.

    ``path``: an existing log to append to (a resumed run keeps one log).
    """
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = Path(path) if path is not None else logs_dir / f"{datetime.now().strftime('%Y%m%dT%H%M%S')}_{run_id}.log"
    logger.remove()
    for name, icon in LEVEL_ICONS.items():
        logger.level(name, icon=icon)
    # tqdm.write keeps progress bars intact; loguru already ends each message with "\n".
    logger.add(lambda msg: tqdm.write(msg, end=""), colorize=True,
               format="{level.icon} {message}", level="INFO")
    logger.add(path, format=FILE_FORMAT, level="DEBUG")
    return path


@dataclass(frozen=True)
class Column:
    """One table column: the row key it reads, its field width, header, format, legend text.

    The header is the display name (seed 000's), the key is the row's one name for the value:
    ``qmass`` shows the row's ``q_egy``, ``thi`` its ``tau``. ``key=None`` is a column the seed's
    layout has but this design never fills (``tlo``: route2 has one threshold); it reads ``nan``.
    """

    key: str | None
    width: int
    header: str
    fmt: str | None = None
    desc: str = ""

    @property
    def field_width(self) -> int:
        # A header longer than its declared width (slv_abl, cos_pre_s) would push every
        # later column out of line; widen the field so header and cells stay aligned.
        return max(self.width, len(self.header))


def _is_nan(v: Any) -> bool:
    try:
        return isinstance(v, (float, int)) and not isinstance(v, bool) and math.isnan(v)
    except TypeError:
        return False


def _plain(v: Any) -> Any:
    """numpy / torch scalars -> Python scalars so ``format`` specs behave."""
    item = getattr(v, "item", None)
    if callable(item) and not isinstance(v, (list, tuple, dict, str)):
        try:
            return item()
        except (TypeError, ValueError):
            return v
    return v


def format_cell(value: Any, fmt: str | None) -> str:
    """Render one cell; None and NaN always read ``nan`` whatever the spec."""
    value = _plain(value)
    if value is None or _is_nan(value):
        return "nan"
    if fmt == "frac":
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return f"{_plain(value[0])}/{_plain(value[1])}"
        return str(value)
    if fmt is None:
        return str(value)
    if fmt.endswith("d"):
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float):
            if not value.is_integer():
                return format(value, ".1f")
            value = int(value)
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def _mode_columns(modes: list[str], mode_code: Mapping[str, str],
                  in_dist: Iterable[str] | None = None) -> list[Column]:
    covered = None if in_dist is None else set(in_dist)

    def tag(m: str) -> str:
        if covered is None:
            return ""
        return " [IN-dist: the v_hack pairs cover it]" if m in covered else " [held-out: no v_hack pair covers it]"
    return [Column(f"hk_{mode_code[m]}", 5, f"hk_{mode_code[m]}", "d",
                   f"student rollouts that exploited {m} in this step's batch (a count, not cumulative){tag(m)}")
            for m in modes]


class StepLogger:
    """Formats a per-step row dict into one fixed-width table line (seed 000 layout).

    ``header()`` and ``legend()`` describe exactly the columns this run shows: per-mode
    ``hk_<code>`` columns only for multi-mode runs, the ablated-slice proxy only when
    ``show_ablate``. Reprinting the header every so often is the caller's job.
    """

    def __init__(self, arm: str, modes: Iterable[str], mode_code: Mapping[str, str],
                 show_ablate: bool = False, in_dist: Iterable[str] | None = None) -> None:
        self.arm = arm
        modes = list(modes)
        self.modes = modes if len(modes) > 1 else []
        cols = [
            Column("step", 4, "step", "d", "GRPO optimizer step"),
            Column("ref_eq", 6, "ref_eq", ".2f",
                   "reference-equivalent step: cumulative generations / 256 (the upstream step size)"),
            Column("rew", 6, "rew", "+.2f", "mean reward over every graded rollout (student and teacher)"),
            Column("rew_s", 6, "rew_s↑", "+.2f", "mean reward of the student's own rollouts"),
            Column("gt_s", 6, "gt_s↑", "frac", "student rollouts the strict oracle calls correct (n/d)"),
            Column("gt_t", 6, "gt_t", "frac", "teacher rollouts the oracle calls correct (pool sanity)"),
            Column("hack_s", 7, "hack_s?", "frac",
                   "student rollouts flagged as hacks: the number to watch (n/d)"),
            Column("hack_t", 7, "hack_t", "frac", "teacher rollouts flagged as hacks (pool sanity)"),
            Column("hack_deploy", 7, "hk_dep", "+.2f",
                   "held-out DEPLOY eval hack rate (quarantine arms: δS_hack zeroed; others: the trained "
                   "model), every eval_ablate_every steps; nan in between"),
            Column("solve_deploy", 7, "slv_dep", "+.2f",
                   "held-out DEPLOY eval solve rate, same eval and cadence; nan in between"),
        ]
        cols += _mode_columns(self.modes, mode_code, in_dist)
        cols += [
            Column("lp_s", 6, "lp_s↓", "+.2f", "mean log-prob of student completions (diagnostic)"),
            Column("lp_t", 6, "lp_t↑", "+.2f",
                   "mean log-prob of teacher completions; lp_s - lp_t is the off-policy gap"),
            Column("loss", 7, "loss", "+.2f", "mean GRPO (Dr.GRPO) loss of the step"),
            Column("gn", 7, "gn", ".1e", "L2 norm of the δS grads before clipping (compare to grad_clip)"),
            Column("lr", 7, "lr", ".1e", "learning rate from the warmup+cosine schedule"),
            Column("cos_pre_s", 6, "cos_pre_s", "+.2f",
                   "cosine of the student-only gradient with v_hack (route2: v_grad), before the intervention"),
            Column("cos_pre_t", 6, "cos_pre_t", "+.2f",
                   "cosine of the teacher-only gradient with v_hack (route2: v_grad), before the intervention"),
            Column("auroc", 6, "auroc", ".2f",
                   "route2 gate: AUROC of the per-rollout gate cosine against the hack labels on "
                   "positively reinforced rollouts (the ones reward cannot tell apart); a measurement, "
                   "it routes nothing. ~0.5 = no separation; high auroc with rout ~0 = threshold problem"),
            Column("cos", 6, "cos", "+.2f", "route2 gate: mean per-rollout gate cosine with v_grad"),
            Column("q_egy", 6, "qmass", ".2f",
                   "quarantine energy share |g_quar|/(|g_keep|+|g_quar|): how much of the update goes "
                   "to δS_hack, which is deleted at deploy"),
            Column("keep", 6, "keep", ".2f", "route2 gate: share of rollouts kept on the deployed knobs"),
            Column("resid", 6, "resid", ".2f", "route2 gate residual (seed 003 resid), averaged over modules"),
            Column("rout", 6, "rout", ".2f", "route2 gate: share of rollouts routed to the quarantine"),
            Column(None, 6, "tlo", "+.2f", "lower gate threshold; nan (route2 has a single threshold)"),
            Column("tau", 6, "thi", "+.2f",
                   "route2 threshold tau: midpoint of the EMA anchor-hack and anchor-clean cosines, "
                   "mean over modules"),
            Column("stale", 5, "stale", "d",
                   "steps since v_hack / v_grad was last re-extracted (0 = refreshed this step); "
                   "grows without bound when the arm never refreshes"),
        ]
        if show_ablate:
            cols += [
                Column("hack_abl", 6, "hk_abl", "frac",
                       "per-step deploy proxy: hacks in the rollout slice generated with δS_hack zeroed "
                       "(training prompts, so noisier than hk_dep)"),
                Column("solve_abl", 6, "slv_abl", "frac",
                       "per-step deploy proxy: oracle-correct rollouts in that ablated slice"),
            ]
        self.columns: list[Column] = cols
        self._warned: set[str] = set()

    def header(self) -> str:
        return " ".join(f"{c.header:>{c.field_width}}" for c in self.columns)

    def _lookup(self, cells: Mapping[str, Any], key: str | None) -> Any:
        if key is None:
            return None
        if key in cells:
            return cells[key]
        if key not in self._warned:  # a missing key is a driver bug, not a reason to crash a run
            self._warned.add(key)
            logger.debug(f"StepLogger: row has no '{key}' (rendered nan)")
        return None

    def row(self, cells: Mapping[str, Any]) -> str:
        return " ".join(f"{format_cell(self._lookup(cells, c.key), c.fmt):>{c.field_width}}"
                        for c in self.columns)

    def legend(self) -> str:
        """Decode the columns present in this run, one line each."""
        body = "\n".join(f" {c.header:>9} = {c.desc}" for c in self.columns if c.desc)
        return ("step table columns (timings gen/fb/t_rew/sec live in rows.parquet and the "
                "end-of-run dump, not here):\n" + body)


# Row fields left out of the end-of-run markdown dump: none by default (docs/design.md#full-row-dump: the dump
# carries every row field of seed 003).
def rows_markdown(rows: list[Mapping[str, Any]], drop: Iterable[str] = (), floatfmt: str = "+.3f") -> str:
    """Per-step rows as a pipe markdown table, fractions rendered ``n/d`` (journal-pasteable)."""
    from tabulate import tabulate

    drop = set(drop)
    out = []
    for r in rows:
        out.append({k: (f"{v[0]}/{v[1]}" if isinstance(v, (tuple, list)) and len(v) == 2 else v)
                    for k, v in r.items() if k not in drop})
    return tabulate(out, headers="keys", tablefmt="pipe", floatfmt=floatfmt)
