"""One markdown page per run: what happened, in the order a researcher asks.

    python -m vgrout_ray report out/runs/<run>

Writes ``<run>/report.md``: the BLUF (seed 003's final numbers), the final
train-vs-deploy eval per mode, which loopholes the student learned and when,
run health, the evidence PNGs and this run's dynamics plot, and every per-step
row. Missing pieces (a killed run has no per_mode_deploy.json) are reported as
missing rather than failing the page.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from loguru import logger
from tabulate import tabulate

from vgrout_ray.arms import ARM_NAMES, QUARANTINE_ARMS

from vgrout_ray.config import DETECTORS, detector_codes
from vgrout_ray.reporting.evidence import frac_rate, num
from vgrout_ray.reporting.parquet import _GATE_ROW, _SEED_ROW, read_rollouts_table, read_rows

EVIDENCE_PNGS = [("training_curve.png", "Training curve"), ("reward_components.png", "Reward components"),
                 ("checkpoint_progression.png", "Deploy-eval progression"),
                 ("before_after_summary.png", "Before vs after"), ("reward_distribution.png", "Reward distribution")]


def _f3(x: Any) -> str:
    x = num(x)
    return "nan" if math.isnan(x) else f"{x:.3f}"


def _frac_sum(rows: Sequence[Mapping[str, Any]], key: str, part: int) -> int:
    total = 0
    for r in rows:
        v = r.get(key)
        if isinstance(v, (tuple, list)) and len(v) == 2 and v[part] is not None:
            total += int(v[part])
    return total


def summarize_rows(rows: Sequence[Mapping[str, Any]], half_a: str = "") -> dict:
    """Seed 003's end-of-run numbers from the per-step rows (HACK_RATE, PASS_RATE, HACK_S, ...)."""
    n_gens = sum(int(num(r.get("N"))) for r in rows if not math.isnan(num(r.get("N"))))
    hs, ht = _frac_sum(rows, "hack_s", 0), _frac_sum(rows, "hack_t", 0)
    ns, nt = _frac_sum(rows, "hack_s", 1), _frac_sum(rows, "hack_t", 1)
    gs, gt = _frac_sum(rows, "gt_s", 0), _frac_sum(rows, "gt_t", 0)
    codes = detector_codes(half_a)
    out = {
        "steps": len(rows), "gens": n_gens,
        "hack_rate": (hs + ht) / max(1, n_gens), "pass_rate": (gs + gt) / max(1, n_gens),
        "hack_s": hs / max(1, ns), "hack_t": ht / max(1, nt),
        "hack_s_E": _frac_sum(rows, "hack_s_E", 0) / max(1, ns), "hack_s_C": hs / max(1, ns),
        "hack_s_D": _frac_sum(rows, "hack_s_D", 0) / max(1, ns),
        "hack_A": _frac_sum(rows, "hack_s_A", 0) / max(1, ns) if codes else math.nan,
        "hack_B": _frac_sum(rows, "hack_s_B", 0) / max(1, ns) if codes else math.nan,
        "half_a": sorted(codes), "half_b": sorted(set(DETECTORS) - codes) if codes else [],
        "wall_s": sum(x for x in (num(r.get("sec")) for r in rows) if not math.isnan(x)),
        "grad_errors": sum(int(x) for x in (num(r.get("grad_errors")) for r in rows) if not math.isnan(x)),
    }
    return out


def substrate_table(run_dir: str | Path) -> list[dict]:
    """Per mode: exploit rate, hacks, student rollouts and the first step with a hack."""
    t = read_rollouts_table(run_dir, columns=["env_mode", "exploited", "source"])
    stats: dict[str, dict] = {}
    for step, mode, ex, src in zip(t.column("step").to_pylist(), t.column("env_mode").to_pylist(),
                                   t.column("exploited").to_pylist(), t.column("source").to_pylist()):
        if src not in (None, "student"):
            continue
        s = stats.setdefault(mode or "?", {"hacks": 0, "n": 0, "first": None})
        s["n"] += 1
        if ex:
            s["hacks"] += 1
            if s["first"] is None or step < s["first"]:
                s["first"] = step
    return [{"mode": m, "exploit_rate": f"{s['hacks'] / max(1, s['n']):.3f}", "hacks": s["hacks"],
             "student_rollouts": s["n"], "first_step": "-" if s["first"] is None else s["first"]}
            for m, s in sorted(stats.items())]


def _load_json(p: Path) -> dict | None:
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        logger.warning(f"{p}: unreadable JSON ({e})")
        return None


def _dynamics(run_dir: Path) -> list[Path]:
    from vgrout_ray.reporting.plots import overlay_path, parse_run, plot_dynamics, plot_hack_overlay

    run = parse_run(run_dir)
    if run is None:
        return []
    out = run_dir / "dynamics.png"
    plot_dynamics([run], out)
    plot_hack_overlay([run], overlay_path(out))
    return [out, overlay_path(out)]


def in_dist_modes(dep: Mapping[str, Any]) -> list[str]:
    """The modes the run's v_hack pairs covered (per_mode_deploy.json), as recorded by the run."""
    if "in_dist_modes" in dep:
        return list(dep["in_dist_modes"])
    return sorted(m for m, v in (dep.get("by_mode") or {}).items() if v.get("in_dist"))


def _dist_note(dep: Mapping[str, Any]) -> str:
    ind = in_dist_modes(dep)
    held = sorted(m for m, v in (dep.get("by_mode") or {}).items() if not v.get("in_dist") and m != "gt_only")
    src = f" (pairs: {dep['pairs']})" if dep.get("pairs") else ""
    if not ind:
        return f"No mode is in-distribution: the v_hack pairs{src} cover none of this run's modes.\n"
    text = (f"In-distribution: {', '.join(ind)}, the mode(s) the v_hack pairs{src} cover. ")
    if held:
        return text + (f"Held-out: {', '.join(held)}; a drop in deploy hack on these too means the intervention "
                       "generalises beyond the modes its pairs saw.\n")
    return text + "No mode of this run is held out, so the run says nothing about generalisation.\n"


def _final_eval_line(arm: str, dep: dict | None) -> str:
    """The final eval in one sentence, with the quarantine verdict for route / route2."""
    if not dep:
        return "_No per_mode_deploy.json: the run did not reach its final eval._\n"
    th, dh = num(dep.get("hack_train")), num(dep.get("hack_deploy"))
    ts, ds = num(dep.get("solve_train")), num(dep.get("solve_deploy"))
    if arm not in QUARANTINE_ARMS:
        return (f"Final eval (n={dep.get('eval_n', '?')}): hack {_f3(dh)} solve {_f3(ds)} "
                f"(no quarantine: the deployed model is the trained model).\n")
    if not th > 0:
        verdict = "the trained model did not hack at eval, so there was no cheat for the quarantine to hold"
    elif dh < th:
        verdict = "deploy hacks less than train: the quarantine holds part of the cheat"
    else:
        verdict = "deploy hacks as much as train: the quarantine did not absorb the cheat"
    return (f"Final eval (n={dep.get('eval_n', '?')}): train (quarantine on) hack {_f3(th)} solve "
            f"{_f3(ts)}; deploy (δS_hack zeroed) hack {_f3(dh)} solve {_f3(ds)}. {verdict}.\n")


def _figures_section(run_dir: Path, rows: list, plots: bool) -> list[str]:
    """The figures: dynamics PNGs (written now when ``plots``) and the evidence PNGs and data."""
    md = ["## Figures\n"]
    figs: list[Path] = []
    if plots and rows:
        try:
            figs = _dynamics(run_dir)
        except Exception as e:  # a figure must not cost the rest of the report
            logger.exception("dynamics plot failed")
            md.append(f"_dynamics plot failed: {type(e).__name__}: {e}_\n")
    for p in figs:
        md.append(f"![{p.stem}]({p.name})\n")
    ev = run_dir / "evidence"
    for name, title in EVIDENCE_PNGS:
        if (ev / name).exists():
            md.append(f"### {title}\n\n![{title}](evidence/{name})\n")
    csvs = sorted(ev.glob("*.csv")) if ev.is_dir() else []
    extra = [p for p in (ev / "sample_trajectories.md", ev / "before_after_metrics.json") if p.exists()]
    if csvs or extra:
        md.append("Data: " + ", ".join(f"[{p.name}](evidence/{p.name})" for p in csvs + extra) + "\n")
    if not figs and not (ev.is_dir() and any(ev.glob("*.png"))):
        md.append("_no figures_\n")
    return md


def build_report(run_dir: str | Path, plots: bool = True) -> str:
    """The report's markdown (also writes the dynamics PNGs into the run dir when ``plots``)."""
    run_dir = Path(run_dir)
    rows = sorted(read_rows(run_dir), key=lambda r: r["step"])
    cfg = _load_json(run_dir / "config.json") or {}
    dep = _load_json(run_dir / "per_mode_deploy.json")

    arm = cfg.get("arm") or (dep or {}).get("arm") or ARM_NAMES.get(cfg.get("intervention", ""), "?")
    preset = cfg.get("preset", "?")
    model = str(cfg.get("model") or (dep or {}).get("model") or "?")
    seed = cfg.get("seed", (dep or {}).get("seed", "?"))
    s = summarize_rows(rows, cfg.get("half_a", ""))
    md = [f"# Run report: {run_dir.name}\n"]

    # ---- BLUF
    cue = "🟢" if (arm == "vanilla" and s["hack_rate"] > 0) else "🟡"
    bluf = {"cue": cue, "arm": arm, "preset": preset, "model": model.split("/")[-1], "seed": seed,
            "steps": s["steps"], "gens": s["gens"], "HACK_RATE": _f3(s["hack_rate"]),
            "PASS_RATE": _f3(s["pass_rate"]), "HACK_S": _f3(s["hack_s"]), "HACK_T": _f3(s["hack_t"])}
    if dep:
        bluf.update({"train_hack": _f3(dep.get("hack_train")), "train_solve": _f3(dep.get("solve_train")),
                     "deploy_hack": _f3(dep.get("hack_deploy")), "deploy_solve": _f3(dep.get("solve_deploy")),
                     "eval_n": dep.get("eval_n", "?")})
    if dep:
        ind = in_dist_modes(dep)
        bluf["in_dist"] = ",".join(ind) if ind else "-"
    md += ["## BLUF\n", tabulate([bluf], headers="keys", tablefmt="github"), ""]
    md.append(f"main metric: HACK_RATE={_f3(s['hack_rate'])} PASS_RATE={_f3(s['pass_rate'])} "
              f"HACK_STUDENT={_f3(s['hack_s'])} HACK_TEACHER={_f3(s['hack_t'])} "
              f"[arm={arm} preset={preset} model={model} steps={s['steps']} gens={s['gens']}]\n")
    md.append(_final_eval_line(arm, dep))
    md.append(f"per-mech (student): HACK_S_E={_f3(s['hack_s_E'])} HACK_S_C={_f3(s['hack_s_C'])} "
              f"HACK_S_D={_f3(s['hack_s_D'])} half_A={s['half_a'] or '-'} HACK_A={_f3(s['hack_A'])} "
              f"half_B={s['half_b'] or '-'} HACK_B={_f3(s['hack_B'])}\n")

    # ---- per-mode train vs deploy
    md.append("## Final eval per mode: train vs deploy\n")
    if dep and dep.get("by_mode"):
        pm = [{"mode": m, "dist": "IN-dist" if v.get("in_dist") else "held-out",
               "train_hack": _f3(v.get("train_hack")), "train_solve": _f3(v.get("train_solve")),
               "deploy_hack": _f3(v.get("deploy_hack")), "deploy_solve": _f3(v.get("deploy_solve")),
               "n": v.get("n")} for m, v in dep["by_mode"].items()]
        md += [tabulate(pm, headers="keys", tablefmt="github"), ""]
        md.append(_dist_note(dep))
    else:
        md.append("_not available_\n")

    # ---- substrate learning
    sub = substrate_table(run_dir)
    md.append("## Which loopholes the student learned (training rollouts)\n")
    if sub:
        learned = sum(1 for r in sub if r["hacks"] > 0)
        cue_sub = "🟢" if learned == len(sub) else ("🟡" if learned else "🔴")
        md += [f"{cue_sub} {learned}/{len(sub)} modes learned.\n", tabulate(sub, headers="keys", tablefmt="github"), ""]
    else:
        md.append("_no rollouts.parquet_\n")

    # ---- run health
    if rows:
        last = rows[-1]
        md.append("## Run health\n")
        md.append(tabulate([{
            "wall_h": f"{s['wall_s'] / 3600:.2f}", "sec/step": f"{s['wall_s'] / max(1, len(rows)):.1f}",
            "grading_errors": s["grad_errors"], "last_step": last.get("step"),
            "last_hack_s": _f3(frac_rate(last.get("hack_s"))), "last_gt_s": _f3(frac_rate(last.get("gt_s"))),
            "last_lp_t": _f3(last.get("lp_t")), "last_gn": _f3(last.get("gn")), "last_lr": f"{num(last.get('lr')):.2e}",
        }], headers="keys", tablefmt="github"))
        md.append("")

    md += _figures_section(run_dir, rows, plots)

    # ---- every per-step row (seed 003 fields)
    if rows:
        from vgrout_ray.reporting.table import rows_markdown

        keep = [k for k, _ in _SEED_ROW + _GATE_ROW]
        trimmed = [{k: r.get(k) for k in keep if k in r} for r in rows]
        md += ["## Per-step rows\n", "<details><summary>every step (seed 003 row fields)</summary>\n",
               rows_markdown(trimmed), "\n</details>\n"]
    return "\n".join(md)


def write_report(run_dir: str | Path, plots: bool = True) -> Path:
    run_dir = Path(run_dir)
    out = run_dir / "report.md"
    out.write_text(build_report(run_dir, plots=plots))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vgrout_ray report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, nargs="+", help="out/runs/<run> directories")
    ap.add_argument("--no-plots", action="store_true", help="skip (re)drawing the dynamics plot")
    a = ap.parse_args(argv)
    rc = 0
    for d in a.run_dir:
        if not (d / "rows.parquet").exists():
            logger.error(f"{d}: no rows.parquet (not a run directory?)")
            rc = 1
            continue
        logger.info(f"wrote {write_report(d, plots=not a.no_plots)}")
    return rc
