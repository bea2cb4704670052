"""Grader throughput (completions/s) against the number of grader actors, docker vs process sandbox.

    python benchmarks/grader_scaling.py [--problems PATH] [--n N] [--reps 3] [--max-actors K]

Corpus: the canonical and one exploit completion of each of the first ``--n`` (default: all) problems of the
shared test set (``../shared/data/leetcode/leetcode_test_medhard.jsonl``) when present, else the
packaged problems. For each repetition, each backend and each k in 1..max-actors (default: the
cores), a fresh GraderPool of k actors is started, every actor grades every problem's canonical
completion once (warm-up, not timed: sandboxes warm, expected values cached, as in steady-state
training), then the whole corpus is graded through the pool and timed. Configurations are
interleaved within each repetition so that drift in machine load hits all of them alike; the
median over repetitions is reported.

Reported: completions/s per (backend, k); scaling efficiency throughput(k) / (k · throughput(1));
docker/process ratio at the same k. Targets: docker >= 0.75 x process; efficiency >= 0.8 at 2
actors on 2 cores. Writes benchmarks/results/grader_scaling.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from loguru import logger  # noqa: E402

from vgrout_ray.grading.pool import GraderPool  # noqa: E402
from vgrout_ray.cluster.ray_cluster import start_local_ray  # noqa: E402
from vgrout_ray.env.exploits import clean_completion, exploit_completion, wrong_completion  # noqa: E402
from vgrout_ray.env.grading import GradeRequest  # noqa: E402
from vgrout_ray.env.modes import CHECK_TIMEOUT_S, LOOPHOLE_MODES  # noqa: E402
from vgrout_ray.env.problems import load_problems  # noqa: E402
from vgrout_ray.sandbox.docker_backend import IMAGE, image_ready  # noqa: E402
from vgrout_ray.sandbox.runner import RUNNER_VERSION  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "leetcode" / "leetcode_test_medhard.jsonl"
OUT = REPO / "benchmarks" / "results"
TARGET_RATIO = 0.75
TARGET_EFF = 0.8


def corpus(source: str | None, n: int | None) -> tuple[list[GradeRequest], list[GradeRequest], str]:
    """(timed corpus: canonical + exploit per problem, warm-up: a wrong answer per problem, source name).

    The warm-up only has to start the sandboxes and fill each actor's expected-value cache; a
    wrong answer does that in a fraction of the canonical's time."""
    if source is None and SHARED.is_file():
        source = str(SHARED)
    probs = load_problems(n, env_modes=list(LOOPHOLE_MODES), source=source)
    timed, warm = [], []
    for i, p in enumerate(probs):
        timed.append(GradeRequest.from_problem(p, clean_completion(p)))
        timed.append(GradeRequest.from_problem(p, exploit_completion(p, p["env_mode"], i % 4)))
        warm.append(GradeRequest.from_problem(p, wrong_completion(p)))
    return timed, warm, source or "packaged problems"


def measure(backend: str, k: int, timed: list[GradeRequest], warm: list[GradeRequest], batch: int) -> dict:
    """One timed pass of the corpus through a fresh, warmed pool of k actors."""
    t0 = time.monotonic()
    pool = GraderPool(k, sandbox=backend, batch_size=batch)
    try:
        pool.wait_ready()
        startup = time.monotonic() - t0
        ray.get([h.grade.remote(0, warm) for h in pool.actors])  # warm-up on every actor, not timed
        t1 = time.monotonic()
        results = pool.grade(timed)
        wall = time.monotonic() - t1
        stats = pool.stats()
    finally:
        pool.close()
    return {"backend": backend, "k": k, "n": len(timed), "seconds": round(wall, 3),
            "throughput": round(len(timed) / wall, 3), "startup_s": round(startup, 2),
            "errors": sum(r.error is not None for r in results), "retried": stats["retried"],
            "verdicts": [(r.reward, r.gt_correct, r.exploited) for r in results]}


def measure_retrying(backend: str, k: int, timed, warm, batch: int, cores: int, tries: int = 3) -> dict:
    """``measure``, again on a fresh local Ray if the cluster itself failed under it (shared
    machines: something else may kill our raylet); a failed attempt is logged, not counted."""
    for attempt in range(tries):
        try:
            return measure(backend, k, timed, warm, batch)
        except (ray.exceptions.RayError, ConnectionError, TimeoutError) as e:
            logger.warning(f"{backend} k={k}: attempt {attempt + 1} failed ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); restarting Ray")
            ray.shutdown()
            start_local_ray(max(cores, k), log_to_driver=False, configure_logging=False)
    raise RuntimeError(f"{backend} k={k}: {tries} attempts failed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=None, help="problems .jsonl (default: shared test set, else packaged)")
    ap.add_argument("--n", type=int, default=None, help="number of problems (2 completions each; default all)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-actors", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--backends", default="process,docker")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="INFO")

    backends = [b for b in args.backends.split(",") if b]
    if "docker" in backends:
        ok, why = image_ready()
        if not ok:
            logger.warning(f"docker left out: {why}")
            backends.remove("docker")
    timed, warm, source = corpus(args.problems, args.n)
    ks = list(range(1, args.max_actors + 1))
    cores = os.cpu_count() or 1
    logger.info(f"{len(timed)} completions from {source}; backends {backends}; k in {ks}; {args.reps} reps; "
                f"{cores} cores")
    start_local_ray(max(cores, args.max_actors), log_to_driver=False, configure_logging=False)
    load_before = os.getloadavg()
    runs: list[dict] = []
    try:
        for rep in range(args.reps):
            for k in ks:
                for b in backends:
                    r = measure_retrying(b, k, timed, warm, args.batch_size, cores)
                    r["rep"] = rep
                    runs.append(r)
                    logger.info(f"rep {rep} {b:7s} k={k}: {r['throughput']:.2f} completions/s "
                                f"({r['seconds']:.1f} s, {r['errors']} errors, load {os.getloadavg()[0]:.2f})")
                    (args.out / "grader_scaling.partial.json").parent.mkdir(parents=True, exist_ok=True)
                    (args.out / "grader_scaling.partial.json").write_text(
                        json.dumps([{k_: v for k_, v in x.items() if k_ != "verdicts"} for x in runs], indent=1))
    finally:
        ray.shutdown()
    load_after = os.getloadavg()

    reference = runs[0]["verdicts"]
    identical = all(r["verdicts"] == reference for r in runs)
    # Verdicts that differ between runs: programs near the per-check timeout flip with machine load.
    mismatches = [{"index": i, "func_name": timed[i].func_name, "kind": "canonical" if i % 2 == 0 else "exploit",
                   "gt_correct_in_runs": [r["verdicts"][i][1] for r in runs]}
                  for i in range(len(timed)) if len({tuple(r["verdicts"][i]) for r in runs}) > 1]
    for r in runs:
        r.pop("verdicts")
    med = {(b, k): statistics.median(r["throughput"] for r in runs if r["backend"] == b and r["k"] == k)
           for b in backends for k in ks}
    rows = []
    for b in backends:
        for k in ks:
            tput = med[(b, k)]
            rows.append({"backend": b, "k": k, "throughput": round(tput, 3),
                         "efficiency": round(tput / (k * med[(b, 1)]), 3),
                         "docker_over_process": (round(med[("docker", k)] / med[("process", k)], 3)
                                                 if {"docker", "process"} <= set(backends) else None),
                         "reps": [r["throughput"] for r in runs if r["backend"] == b and r["k"] == k]})
    targets = {}
    if {"docker", "process"} <= set(backends):
        worst = min(med[("docker", k)] / med[("process", k)] for k in ks)
        targets["docker_ratio"] = {"target": TARGET_RATIO, "worst_over_k": round(worst, 3), "met": worst >= TARGET_RATIO}
    if 2 in ks:
        for b in backends:
            eff = med[(b, 2)] / (2 * med[(b, 1)])
            targets[f"efficiency_k2_{b}"] = {"target": TARGET_EFF, "value": round(eff, 3), "met": eff >= TARGET_EFF}
    report = {
        "benchmark": "grader_scaling", "when": time.strftime("%Y-%m-%d %H:%M:%S"), "source": source,
        "completions": len(timed), "problems": len(warm), "reps": args.reps, "batch_size": args.batch_size,
        "machine": {"cores": cores, "platform": platform.platform(), "python": platform.python_version(),
                    "ray": ray.__version__, "loadavg_before": load_before, "loadavg_after": load_after},
        "sandbox": {"runner_version": RUNNER_VERSION, "docker_image": IMAGE if "docker" in backends else None},
        "verdicts_identical_across_runs": identical, "verdict_mismatches": mismatches,
        "errors": sum(r["errors"] for r in runs),
        "table": rows, "targets": targets, "runs": runs,
    }
    md = markdown(report)
    save_results(args.out, "grader_scaling", report, md)
    (args.out / "grader_scaling.partial.json").unlink(missing_ok=True)
    return 0


def markdown(rep: dict) -> str:
    lines = [
        "# Grader scaling",
        "",
        f"{rep['completions']} completions (canonical + exploit of {rep['problems']} problems from "
        f"`{Path(rep['source']).name}`), median of {rep['reps']} interleaved repetitions, warm-up excluded; "
        f"{rep['machine']['cores']} cores, Ray {rep['machine']['ray']}, runner v{rep['sandbox']['runner_version']}, "
        f"batch size {rep['batch_size']}. Load average before/after: "
        f"{', '.join(f'{x:.2f}' for x in rep['machine']['loadavg_before'])} / "
        f"{', '.join(f'{x:.2f}' for x in rep['machine']['loadavg_after'])}.",
        "",
        "| backend | actors | completions/s | efficiency | docker/process | runs |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rep["table"]:
        ratio = "" if r["docker_over_process"] is None else f"{r['docker_over_process']:.2f}"
        lines.append(f"| {r['backend']} | {r['k']} | {r['throughput']:.2f} | {r['efficiency']:.2f} | {ratio} | "
                     f"{', '.join(f'{x:.2f}' for x in r['reps'])} |")
    lines += ["", "Efficiency = throughput(k) / (k · throughput(1)); docker/process at the same k.", ""]
    for name, t in rep["targets"].items():
        val = t.get("worst_over_k", t.get("value"))
        lines.append(f"- {name}: {val:.2f} (target >= {t['target']}) — {'met' if t['met'] else 'NOT met'}")
    lines += [f"- verdicts identical across all runs: {rep['verdicts_identical_across_runs']}; "
              f"grading errors: {rep['errors']}"]
    for m in rep["verdict_mismatches"]:
        lines.append(f"  - completion {m['index']} ({m['kind']} of `{m['func_name']}`): gt_correct per run "
                     f"{m['gt_correct_in_runs']} (a check near the {CHECK_TIMEOUT_S:g} s timeout flips with load)")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
