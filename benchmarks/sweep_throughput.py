"""Sweep throughput: the same 4 runs (2 arms × 2 seeds) four ways, in one run of this script.

    python benchmarks/sweep_throughput.py [--preset smoke] [--arms none,route] [--seeds 1,2]
        [--modes sequential,separate,shared,hosted] [--work /tmp/sweep_bench] [-- driver flags]

- sequential: one ``python -m vgrout_ray.driver`` per run, one after the other (each run its own
  process, Ray cluster, grader pool and model copies: what a sweep cost before the sweep runner);
- separate: ``python -m vgrout_ray sweep --engines separate``: the runs concurrently in one
  process, one grader pool, rollout actors per run;
- shared: ``python -m vgrout_ray sweep --engines shared``: the same with multi-run rollout
  actors (one engine holds the base model once and serves every run's rows in one forward);
- hosted: ``--engines shared --learners shared``: also one learner actor for every run (one
  model, each run's adapter hooked on it).

Reports each mode's wall seconds, its ratio to sequential (the issue's target: ≤ 0.5), whether
every run finished, and for shared how many requests each coalesced generate carried. Writes
``benchmarks/results/sweep_throughput.{json,md}`` (``sweep_throughput_<preset>`` for other
presets). Wall time on a machine shared with other work moves with that load; the ratios come
from one run of the script, modes back to back.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import save_results  # noqa: E402

DEFAULT_FLAGS = ["--steps", "3", "--prompts-per-step", "2", "--eval-ablate-every", "0", "--v-hack-refresh-every", "0"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    return env


def busy_core_seconds() -> float | None:
    """Core-seconds this machine has spent busy since boot (/proc/stat; None elsewhere). The
    difference over a mode, next to its wall, says how much of the cores it used: runs that
    already keep every core busy one at a time cannot gain wall time from running at once."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")  # steal is not our work


def _run(cmd: list[str], cwd: Path, log: Path, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    with log.open("w") as f:
        p = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, time.perf_counter() - t0


def sequential(args, flags: list[str], work: Path) -> dict:
    """One driver process per run, one after the other."""
    work.mkdir(parents=True, exist_ok=True)
    runs, total = [], 0.0
    for arm in args.arms.split(","):
        for seed in args.seeds.split(","):
            rc, wall = _run([sys.executable, "-m", "vgrout_ray.driver", args.preset, "--intervention", arm,
                             "--seed", seed, *flags, "--out-dir", str(work / "out"), "--logs-dir", str(work / "logs")],
                            work, work / f"{arm}-seed{seed}.txt", args.timeout)
            runs.append({"run": f"{arm}-seed{seed}", "rc": rc, "wall_s": round(wall, 1)})
            total += wall
            print(f"sequential {arm}-seed{seed}: rc {rc}, {wall:.0f} s", flush=True)
    return {"wall_s": round(total, 1), "finished": sum(r["rc"] == 0 for r in runs), "runs": runs}


def concurrent(args, flags: list[str], work: Path, mode: str) -> dict:
    """One sweep process running every run at once."""
    work.mkdir(parents=True, exist_ok=True)
    how = {"separate": ["--engines", "separate"], "shared": ["--engines", "shared"],
           "hosted": ["--engines", "shared", "--learners", "shared"]}[mode]
    rc, wall = _run([sys.executable, "-m", "vgrout_ray", "sweep", args.preset, "--arms", args.arms, "--seeds", args.seeds,
                     *how, "--name", mode, *flags, "--out-dir", str(work / "out"),
                     "--logs-dir", str(work / "logs")], work, work / "sweep.txt", args.timeout)
    out = {"wall_s": round(wall, 1), "rc": rc, "finished": 0}
    dirs = sorted((work / "out" / "sweeps").glob(f"*_{mode}"))
    if dirs:
        plan = json.loads((dirs[-1] / "sweep.json").read_text())
        out["finished"] = sum(r["status"] == "finished" for r in plan["runs"])
        out["sweep_dir"] = str(dirs[-1])
        text = (dirs[-1] / "sweep.log").read_text()
        m = re.search(r"(\d+) coalesced generate calls, (\d+) requests, ([\d.]+) requests per call \(max (\d+)\)", text)
        if m:
            out["coalesced"] = {"calls": int(m[1]), "requests": int(m[2]), "per_call": float(m[3]), "max": int(m[4])}
        m = re.search(r"shared grades: (\d+) batch", text)
        if m:
            out["grade_batches_reused"] = int(m[1])
    print(f"{mode}: rc {rc}, {wall:.0f} s, {out['finished']} finished", flush=True)
    return out


def markdown(res: dict) -> str:
    seq = res["modes"].get("sequential", {}).get("wall_s")
    lines = ["# Sweep throughput", "", f"`{res['command']}`", "",
             f"{res['n_runs']} runs ({res['preset']}, arms {res['arms']}, seeds {res['seeds']}, driver flags "
             f"`{' '.join(res['flags'])}`), on {res.get('cores', os.cpu_count())} cores (load average "
             f"{res.get('load_avg_at_start', float('nan')):.1f} at the start). Busy core-s: what the whole "
             "machine spent busy during the mode (/proc/stat); utilisation = busy core-s / (wall × cores).", "",
             "| mode | wall s | / sequential | runs finished | busy core-s | utilisation | notes |",
             "|---|---|---|---|---|---|---|"]
    cores = res.get("cores", os.cpu_count())
    for mode, m in res["modes"].items():
        ratio = f"**{m['wall_s'] / seq:.2f}**" if seq else "— (sequential not measured)"
        note = ""
        if "coalesced" in m:
            c = m["coalesced"]
            note = f"{c['calls']} generate calls, {c['per_call']:.2f} requests per call (max {c['max']})"
        if m.get("grade_batches_reused"):
            note += ("; " if note else "") + f"{m['grade_batches_reused']} grading batches reused across runs"
        busy = m.get("busy_core_s")
        use = f"{busy / (m['wall_s'] * cores):.2f}" if busy else "—"
        lines.append(f"| {mode} | {m['wall_s']:.0f} | {ratio} | {m['finished']}/{res['n_runs']} | "
                     f"{busy if busy else '—'} | {use} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--arms", default="none,route")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--modes", default="sequential,separate,shared,hosted")
    ap.add_argument("--work", default="/tmp/sweep_bench")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    flags = list(extra or DEFAULT_FLAGS)
    work = Path(args.work)
    if "--svd-cache" not in flags:  # one model build, before any timing, shared by every mode
        flags += ["--svd-cache", str(work / "svd_cache")]
    from vgrout_ray.model.resolve import resolve_model
    from vgrout_ray.sweep.runner import run_config

    cfg = run_config(args.preset, args.arms.split(",")[0], int(args.seeds.split(",")[0]), flags)
    path = resolve_model(cfg.model, cfg.svd_cache)
    import torch

    from vgrout_ray.learner.core import load_model
    from vgrout_ray.model.svd_cache import load_or_compute_factors

    load_or_compute_factors(load_model(path, torch.device("cpu")), path, str(cfg.svd_cache))  # SVD cache warm too
    modes = args.modes.split(",")
    res = {"command": "python benchmarks/sweep_throughput.py " + " ".join(sys.argv[1:]), "preset": args.preset,
           "arms": args.arms, "seeds": args.seeds, "flags": flags,
           "n_runs": len(args.arms.split(",")) * len(args.seeds.split(",")), "cores": os.cpu_count(), "modes": {}}
    res["load_avg_at_start"] = os.getloadavg()[0]
    for mode in modes:
        busy0 = busy_core_seconds()
        if mode == "sequential":
            res["modes"][mode] = sequential(args, flags, work / mode)
        elif mode in ("separate", "shared", "hosted"):
            res["modes"][mode] = concurrent(args, flags, work / mode, mode)
        else:
            raise SystemExit(f"--modes: unknown mode {mode!r} (sequential, separate, shared, hosted)")
        if busy0 is not None:
            res["modes"][mode]["busy_core_s"] = round(busy_core_seconds() - busy0, 1)
        name = "sweep_throughput" if args.preset == "smoke" else f"sweep_throughput_{args.preset}"
        save_results(Path(args.out), name, res, markdown(res))  # each mode as it ends
    return 0


if __name__ == "__main__":
    sys.exit(main())
