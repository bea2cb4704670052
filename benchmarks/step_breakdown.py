"""Step breakdown: per-phase times of the streamed step and its overlap efficiency, tiny model, CPU.

Runs the real driver (local Ray, hf rollouts, process/docker graders) and reads the phase times
it logs per step: each phase's *active* wall time (union of its intervals: gen, grade), the
learner's forward/backward and refresh busy time, weight sync and eval. Overlap efficiency =
Σ phases / step wall time; > 1 means phases ran concurrently. Target >= 1.3 with hf on CPU.

    python benchmarks/step_breakdown.py [--steps 6] [--prompts 8] [--intervention erase]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# phase -> the row column holding its seconds
PHASES = {"gen": "gen", "grade": "t_rew", "fwd_bwd": "fb", "refresh": "refresh_s", "sync": "sync_s", "eval": "eval_s"}


def main() -> None:
    from vgrout_ray.driver import main as driver_main
    from vgrout_ray.reporting.parquet import read_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--intervention", default="erase")
    ap.add_argument("--graders", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vgsb-"))
    rc = driver_main(["smoke", "--steps", str(args.steps), "--prompts-per-step", str(args.prompts),
                      "--intervention", args.intervention, "--eval-ablate-every", str(max(1, args.steps // 2)),
                      "--grader.num-actors", str(args.graders), "--out-dir", str(work / "out"),
                      "--logs-dir", str(work / "logs"), "--svd-cache", str(REPO / "svd_cache")])
    if rc != 0:
        raise SystemExit(f"driver failed ({rc})")
    run = next((work / "out" / "runs").iterdir())
    rows = read_rows(run)[1:]  # step 0 includes one-off warm-up (first forks, first merges)
    per_step = []
    for r in rows:
        ph = {p: float(r.get(col) or 0.0) for p, col in PHASES.items()}
        per_step.append({"step": r["step"], **ph, "wall": r["sec"], "efficiency": sum(ph.values()) / r["sec"]})
    med = {p: statistics.median(s[p] for s in per_step) for p in (*PHASES, "wall", "efficiency")}
    res = {"steps": args.steps, "prompts_per_step": args.prompts, "group": 4, "intervention": args.intervention,
           "graders": args.graders, "per_step": per_step, "median": med,
           "target": "overlap efficiency >= 1.3 (hf rollouts, CPU)", "met": med["efficiency"] >= 1.3}
    lines = ["# Step breakdown (tiny model, CPU, hf rollouts)\n",
             f"`python benchmarks/step_breakdown.py --steps {args.steps} --prompts {args.prompts} "
             f"--intervention {args.intervention}` (steps 1.., median; seconds)\n",
             "| step | " + " | ".join(PHASES) + " | wall | Σphases/wall |", "|---" * (len(PHASES) + 3) + "|"]
    for s in per_step:
        lines.append(f"| {s['step']} | " + " | ".join(f"{s[p]:.2f}" for p in PHASES)
                     + f" | {s['wall']:.2f} | {s['efficiency']:.2f} |")
    lines.append("| **median** | " + " | ".join(f"{med[p]:.2f}" for p in PHASES)
                 + f" | {med['wall']:.2f} | **{med['efficiency']:.2f}** |")
    lines.append(f"\nTarget: {res['target']} → {'met' if res['met'] else 'NOT met'}.")
    md = "\n".join(lines) + "\n"
    save_results(args.out, "step_breakdown", res, md)


if __name__ == "__main__":
    main()
