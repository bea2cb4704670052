"""Sweep aggregation: many run dirs (arm × seed) -> one table, one summary, one figure, one board.

Why: the evidence of a reward-hacking study is arms × seeds, never one run; the comparison
should come from the run dirs themselves, the same way every time. Pure functions over run
dirs (``rows.parquet``, ``per_mode_deploy.json``, ``config.json``), no Ray: the sweep runner
calls them during and after a sweep, benchmarks/micro_arms.py shares the statistics.

- ``sweep_table`` / ``sweep.parquet``: every step row of every run, plus run, arm, seed, status.
- ``summary_markdown`` / ``summary.md``: per arm, mean ± 95 % t-interval over seeds of the final
  train and deploy hack and solve rates and the steps to the first student hack; the run list.
- ``compare.png``: ``plots.plot_dynamics`` over the run dirs (arms as columns, a thin line per
  seed, a thick mean).
- ``format_board``: the live terminal board, one line per run (step, hack_s, reward, ETA) under
  a progress bar over all runs' steps.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

# Two-sided 95 % Student-t quantiles by degrees of freedom (exact to 3 decimals up to 30).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
       19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052,
       28: 2.048, 29: 2.045, 30: 2.042}
STATUSES = ("pending", "running", "finished", "failed")


def t95(df: int) -> float:
    """The 95 % two-sided t quantile; above 30 degrees of freedom 1.96 + 2.4/df (within 0.003)."""
    if df < 1:
        raise ValueError(f"t95 needs df >= 1, got {df}")
    return T95.get(df, 1.96 + 2.4 / df)


def finite(xs: Iterable) -> list[float]:
    """The values that are numbers: None and NaN dropped."""
    return [float(x) for x in xs if x is not None and not math.isnan(float(x))]


def mean_ci(xs: Iterable) -> tuple[float, float]:
    """(mean, half-width of the 95 % t-interval); None / NaN dropped; half-width NaN below 2 values."""
    ys = finite(xs)
    if not ys:
        return math.nan, math.nan
    m = sum(ys) / len(ys)
    if len(ys) < 2:
        return m, math.nan
    sd = math.sqrt(sum((y - m) ** 2 for y in ys) / (len(ys) - 1))
    return m, t95(len(ys) - 1) * sd / math.sqrt(len(ys))


def aggregate(xs: Sequence) -> dict:
    """{"mean", "ci95", "values"} of one metric over seeds (None kept as NaN in ``values``)."""
    vals = [math.nan if x is None else float(x) for x in xs]
    mu, hw = mean_ci(vals)
    return {"mean": mu, "ci95": hw, "values": vals}


def fmt_mean_ci(mu: float, hw: float, digits: int = 3) -> str:
    """'—' without data, 'm' for one value, 'm ± hw' otherwise."""
    if math.isnan(mu):
        return "—"
    return f"{mu:.{digits}f}" if math.isnan(hw) else f"{mu:.{digits}f} ± {hw:.{digits}f}"


def frac(v) -> float:
    """A rows.parquet fraction (n, d) -> n/d (NaN for d = 0 or missing); numbers pass through."""
    if isinstance(v, (list, tuple)) and len(v) == 2:
        if v[0] is None or not v[1]:
            return math.nan
        return v[0] / v[1]
    return float(v) if v is not None else math.nan


def first_hack_step(rows: Sequence[dict], col: str = "hack_s") -> int | None:
    """Step of the first row whose student hack rate is above zero (None: never hacked)."""
    return next((int(r["step"]) for r in sorted(rows, key=lambda r: r["step"]) if frac(r.get(col)) > 0), None)


# ------------------------------------------------------------------- runs
@dataclass
class SweepRun:
    """One (arm, seed) of a sweep and where its run dir is (None before it started)."""

    arm: str
    seed: int
    status: str
    run_dir: Path | None = None
    error: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"run {self.arm}/{self.seed}: status must be one of {STATUSES}, got {self.status!r}")
        if self.run_dir is not None:
            self.run_dir = Path(self.run_dir)

    @property
    def name(self) -> str:
        return f"{self.arm}-seed{self.seed}"


def read_final_eval(run_dir: Path) -> dict | None:
    """The driver's final eval (per_mode_deploy.json) or None when the run did not get there."""
    p = Path(run_dir) / "per_mode_deploy.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e


FINAL_KEYS = {"train_hack": "hack_train", "train_solve": "solve_train",
              "deploy_hack": "hack_deploy", "deploy_solve": "solve_deploy"}
SUMMARY_METRICS = ("train_hack", "train_solve", "deploy_hack", "deploy_solve", "first_hack_step")


def run_summary(run: SweepRun) -> dict:
    """One run -> steps done, final train / deploy hack and solve (NaN without a final eval),
    first student hack step, last hack_s and student reward."""
    from vgrout_ray.reporting.parquet import read_rows

    rows = sorted(read_rows(run.run_dir), key=lambda r: r["step"]) if run.run_dir else []
    dep = read_final_eval(run.run_dir) if run.run_dir else None
    out = {"run": run.name, "arm": run.arm, "seed": run.seed, "status": run.status,
           "run_dir": str(run.run_dir) if run.run_dir else "", "steps": len(rows),
           "first_hack_step": first_hack_step(rows),
           "last_hack_s": frac(rows[-1].get("hack_s")) if rows else math.nan,
           "last_rew_s": frac(rows[-1].get("rew_s")) if rows else math.nan}
    for k, src in FINAL_KEYS.items():
        out[k] = float(dep[src]) if dep and dep.get(src) is not None else math.nan
    return out


def summarize_arms(summaries: Sequence[dict]) -> dict[str, dict]:
    """arm -> {"seeds", "hacked", metric -> aggregate} over that arm's runs (arms in first-seen order)."""
    by_arm: dict[str, list[dict]] = {}
    for s in summaries:
        by_arm.setdefault(s["arm"], []).append(s)
    out = {}
    for arm, ss in by_arm.items():
        agg = {m: aggregate([s[m] for s in ss]) for m in SUMMARY_METRICS}
        agg["seeds"] = [s["seed"] for s in ss]
        agg["hacked"] = sum(s["first_hack_step"] is not None for s in ss)
        out[arm] = agg
    return out


def summary_markdown(title: str, summaries: Sequence[dict]) -> str:
    """summary.md: the per-arm table (mean ± 95 % CI over seeds) and the run list with status."""
    arms = summarize_arms(summaries)
    head = ["arm", "seeds", *SUMMARY_METRICS, "runs hacked"]
    lines = [f"# {title}", "", "Per arm, mean ± 95 % t-interval over seeds (a bare number: one seed). "
             "Final rates come from each run's final eval; first_hack_step is the first step with "
             "student hack_s > 0, over the runs that hacked.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for arm, a in arms.items():
        cells = [fmt_mean_ci(a[m]["mean"], a[m]["ci95"]) for m in SUMMARY_METRICS]
        lines.append(f"| {arm} | {len(a['seeds'])} | " + " | ".join(cells) + f" | {a['hacked']}/{len(a['seeds'])} |")
    lines += ["", "## Runs", "", "| run | arm | seed | status | steps | first hack | run dir |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        fh = "—" if s["first_hack_step"] is None else str(s["first_hack_step"])
        lines.append(f"| {s['run']} | {s['arm']} | {s['seed']} | {s['status']} | {s['steps']} | {fh} | "
                     f"{Path(s['run_dir']).name if s['run_dir'] else '—'} |")
    return "\n".join(lines) + "\n"


def sweep_table(runs: Sequence[SweepRun]):
    """Every rows.parquet row of every run (its own columns, as stored) plus run, arm, seed and
    status columns; runs without rows are left out. Column sets may differ between arms: the
    union is kept, missing cells null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vgrout_ray.reporting.parquet import ROWS_FILE

    tables = []
    for r in runs:
        if r.run_dir is None or not (r.run_dir / ROWS_FILE).exists():
            continue
        t = pq.read_table(r.run_dir / ROWS_FILE)
        t = t.replace_schema_metadata(None)
        n = t.num_rows
        for col, typ, val in (("status", pa.string(), r.status), ("seed", pa.int64(), r.seed),
                              ("arm", pa.string(), r.arm), ("run", pa.string(), r.name)):
            if col in t.column_names:
                raise ValueError(f"{r.run_dir / ROWS_FILE}: already has a {col!r} column")
            t = t.add_column(0, col, pa.array([val] * n, typ))
        tables.append(t)
    if not tables:
        raise ValueError("no run of the sweep has a rows.parquet yet")
    return pa.concat_tables(tables, promote_options="permissive")


def write_sweep_report(sweep_dir: str | Path, runs: Sequence[SweepRun], title: str | None = None) -> dict[str, Path]:
    """sweep.parquet, summary.md and compare.png under ``sweep_dir`` (each written atomically);
    returns their paths. compare.png is left out when no run has rows yet."""
    import pyarrow.parquet as pq

    from vgrout_ray.reporting.plots import gather, plot_dynamics
    from vgrout_ray.util import MPL_LOCK

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    summaries = [run_summary(r) for r in runs]
    md = sweep_dir / "summary.md"
    _atomic_text(md, summary_markdown(title or f"Sweep {sweep_dir.name}", summaries))
    out["summary"] = md
    have_rows = [r for r in runs if r.run_dir is not None and (r.run_dir / "rows.parquet").exists()]
    if have_rows:
        table = sweep_table(have_rows)
        tmp = sweep_dir / ".sweep.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(sweep_dir / "sweep.parquet")
        out["parquet"] = sweep_dir / "sweep.parquet"
        parsed = gather([str(r.run_dir) for r in have_rows])
        if parsed:
            tmp_png = sweep_dir / ".compare.tmp.png"
            with MPL_LOCK:  # the runs' evidence writers may be drawing on other threads
                plot_dynamics(parsed, tmp_png)
            tmp_png.replace(sweep_dir / "compare.png")
            out["compare"] = sweep_dir / "compare.png"
    return out


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ------------------------------------------------------------------- live board
@dataclass
class RunProgress:
    """What the board shows of one run: its place in the sweep and its last finished step."""

    name: str
    steps_total: int
    steps_done: int = 0
    hack_s: float = math.nan
    reward: float = math.nan
    status: str = "pending"
    started_at: float | None = None
    finished_at: float | None = None

    def eta_s(self, now: float) -> float:
        """Seconds to the last step at the run's mean pace so far (NaN before its first step)."""
        if self.status == "finished":
            return 0.0
        if self.started_at is None or self.steps_done < 1:
            return math.nan
        pace = (now - self.started_at) / self.steps_done
        return pace * max(0, self.steps_total - self.steps_done)


def progress_of(run_dir: str | Path | None, name: str, steps_total: int, status: str,
                started_at: float | None = None) -> RunProgress:
    """A run's board state read from its run dir (rows.parquet as the driver last wrote it)."""
    from vgrout_ray.reporting.parquet import read_rows

    rows = sorted(read_rows(run_dir), key=lambda r: r["step"]) if run_dir else []
    last = rows[-1] if rows else {}
    return RunProgress(name, steps_total, steps_done=len(rows), hack_s=frac(last.get("hack_s")),
                       reward=frac(last.get("rew_s")), status=status, started_at=started_at)


def _dur(s: float) -> str:
    if math.isnan(s):
        return "—"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """'[#####.....]  12/40 ( 30%)' over all runs' steps."""
    if total < 1:
        raise ValueError(f"progress_bar needs total >= 1, got {total}")
    done = max(0, min(done, total))
    k = int(width * done / total)
    return f"[{'#' * k}{'.' * (width - k)}] {done:>{len(str(total))}}/{total} ({100 * done / total:3.0f}%)"


def board_line(p: RunProgress, now: float, name_width: int = 16) -> str:
    """One run: name, status, step k/n, last hack_s and student reward, ETA."""
    hs = "  —  " if math.isnan(p.hack_s) else f"{p.hack_s:.3f}"
    rw = "  —  " if math.isnan(p.reward) else f"{p.reward:+.3f}"
    return (f"{p.name:<{name_width}} {p.status:<8} step {p.steps_done:>{len(str(p.steps_total))}}/{p.steps_total}"
            f"  hack_s {hs}  reward {rw}  ETA {_dur(p.eta_s(now))}")


def format_board(progress: Sequence[RunProgress], now: float | None = None) -> str:
    """The live board: a progress bar over every run's steps, then one line per run."""
    now = time.time() if now is None else now
    if not progress:
        return "(no runs)"
    total = sum(p.steps_total for p in progress)
    done = sum(p.steps_done for p in progress)
    counts = {s: sum(p.status == s for p in progress) for s in STATUSES}
    head = progress_bar(done, total) + "  " + " ".join(f"{k} {v}" for k, v in counts.items() if v)
    width = max(len(p.name) for p in progress)
    return "\n".join([head] + [board_line(p, now, width) for p in progress])
