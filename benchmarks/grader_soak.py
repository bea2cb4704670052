"""Grader pool soak: a hostile mixed stream for S seconds, one actor killed every K seconds, vs no kills.

    python benchmarks/grader_soak.py --seconds 120 --kill-every 20 [--actors 2] [--sandbox docker] [--out DIR]

The stream cycles over the packaged problems (one loophole mode each) and, per problem, a correct
answer, a wrong one, its mode's exploit and the hostile kinds: a fork bomb, a memory hog, an
infinite loop, an output flood and a file writer (each a wrong Solution whose module code attacks
the sandbox). Item i of the stream is always the same request, so the two runs can be compared
item by item. Each run starts a fresh GraderPool, warms it (every actor grades the cycle's correct
and wrong answers, untimed: sandbox warm, expected values cached), then keeps the pool saturated
(a window of outstanding completions) for S seconds, stops submitting and drains. The kill run
``ray.kill``s one ready grader actor (one with work in flight when there is one) every K seconds.

Reported per run: submitted, graded, lost (submitted, never answered), duplicates (answered twice),
errors (answered with ``result.error``), throughput; the pool's memory (RSS of the actor and runner
processes, and the containers' own usage) after warm-up and at the end; leftover containers and
processes after ``close()``. Across runs: ``verdict_mismatches`` (items graded in both runs whose
verdicts differ), ``inconsistent`` (the same request graded differently within a run) and
``throughput_ratio`` (kills / no kills). Targets: nothing lost, no duplicate or changed verdict,
ratio >= 0.7 with a kill every 20 s, no memory growth, nothing left over.
Writes benchmarks/results/grader_soak.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import ray  # noqa: E402
from loguru import logger  # noqa: E402

from vgrout_ray.grading.pool import GraderPool  # noqa: E402
from vgrout_ray.env.exploits import clean_completion, exploit_completion, method_name, wrong_completion  # noqa: E402
from vgrout_ray.env.grading import GradeRequest  # noqa: E402
from vgrout_ray.env.modes import LOOPHOLE_MODES  # noqa: E402
from vgrout_ray.env.problems import load_problems  # noqa: E402

OUT = REPO / "benchmarks" / "results"
TARGET_RATIO = 0.7

HOSTILE = {
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "memory_hog": "hog = []\nwhile True:\n    hog.append(bytearray(64 * 1024 * 1024))",
    "infinite_loop": "while True:\n    pass",
    "output_flood": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
    "file_writer": ("for i in range(100000):\n    with open(f'junk{i}.txt', 'w') as f:\n        f.write('y' * 100000)"),
}


def _hostile(problem: dict, module_code: str) -> str:
    m = method_name(problem)
    return (f"```python\n{module_code}\n\nclass Solution:\n    def {m}(self, *args, **kwargs):\n"
            f"        return 0\n```\n")


def make_cycle(n_problems: int = 6, hostile: bool = True) -> list[tuple[str, GradeRequest]]:
    """One cycle of the stream: (kind, request) for each problem and kind, interleaved by problem."""
    probs = load_problems(n_problems, env_modes=list(LOOPHOLE_MODES))
    out = []
    for i, p in enumerate(probs):
        out.append(("correct", GradeRequest.from_problem(p, clean_completion(p))))
        out.append(("wrong", GradeRequest.from_problem(p, wrong_completion(p))))
        out.append(("exploit", GradeRequest.from_problem(p, exploit_completion(p, p["env_mode"], i % 4))))
        if hostile:
            for kind, code in HOSTILE.items():
                out.append((kind, GradeRequest.from_problem(p, _hostile(p, code))))
    return out


def verdict(r) -> tuple:
    return (r.reward, r.gt_correct, r.gt_pass, r.passed, r.exploited, r.can_compile, r.hacked, r.error is None)


def _rss(pid: int | None) -> int:
    try:
        return psutil.Process(pid).memory_info().rss if pid else 0
    except (psutil.Error, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _container_mem(names: list[str]) -> int:
    """Memory the containers use (their cgroup, as ``docker stats`` reports it), summed."""
    if not names:
        return 0
    try:
        from vgrout_ray.sandbox.docker_backend import _client

        c = _client()
        total = 0
        for n in names:
            st = c.containers.get(n).stats(stream=False, one_shot=True)
            ms = st.get("memory_stats", {})
            total += int(ms.get("usage", 0)) - int(ms.get("stats", {}).get("inactive_file", 0))
        return total
    except Exception as e:
        logger.warning(f"container memory not read: {type(e).__name__}: {e}")
        return -1


def pool_memory(pool: GraderPool) -> dict:
    states = [s for s in pool.actor_states() if s["ready"] and not s["dead"]]
    actors = [_rss(s["info"].get("pid")) for s in states]
    runners = [_rss(s["info"].get("runner_pid")) for s in states]
    containers = [s["info"]["container"] for s in states if s["info"].get("container")]
    return {"actors": len(states), "actor_rss_mb": round(sum(actors) / 2**20, 1),
            "runner_rss_mb": round(sum(runners) / 2**20, 1),
            "container_mem_mb": round(_container_mem(containers) / 2**20, 1) if containers else 0.0}


def _seen(pool: GraderPool, pids: set, containers: set) -> None:
    for s in pool.actor_states():
        info = s["info"]
        for k in ("pid", "runner_pid"):
            if info.get(k):
                pids.add(int(info[k]))
        if info.get("container"):
            containers.add(info["container"])


def soak(cycle: list[tuple[str, GradeRequest]], *, seconds: float, kill_every: float | None, actors: int,
         sandbox: str, batch_size: int = 4, drain_timeout: float = 180.0, mem_every: float = 30.0) -> dict:
    """One soak run on a fresh pool; returns counts, per-index verdicts, memory and leftovers."""
    pool = GraderPool(actors, sandbox=sandbox, batch_size=batch_size)
    pids: set[int] = set()
    containers: set[str] = set()
    results: dict[int, tuple] = {}
    kinds: dict[int, str] = {}
    dup = 0
    killed: list[str] = []
    try:
        pool.wait_ready()
        warm = [r for k, r in cycle if k in ("correct", "wrong")]
        ray.get([h.grade.remote(0, warm) for h in pool.actors])  # untimed: sandboxes warm, caches filled
        _seen(pool, pids, containers)
        mem_before = pool_memory(pool)
        window = actors * batch_size * 2
        submitted = 0
        t0 = time.monotonic()
        next_kill = t0 + kill_every if kill_every else float("inf")
        next_mem = t0 + mem_every
        series = [{"t": 0.0, **mem_before}]
        stop_at = t0 + seconds
        last_result = t0
        while True:
            now = time.monotonic()
            if now < stop_at:
                out = submitted - len(results) - dup
                while out < window:
                    i = submitted
                    kinds[i] = cycle[i % len(cycle)][0]
                    pool.submit([cycle[i % len(cycle)][1]], keys=[i])
                    submitted += 1
                    out += 1
            if now >= next_kill and now < stop_at:
                _seen(pool, pids, containers)
                states = [s for s in pool.actor_states() if s["ready"] and not s["dead"]]
                if states:
                    busy = [s for s in states if s["in_flight"] > 0] or states
                    victim = busy[len(killed) % len(busy)]
                    ray.kill(victim["handle"], no_restart=True)
                    killed.append(victim["name"])
                    logger.info(f"t={now - t0:.0f}s killed {victim['name']} ({victim['in_flight']} in flight)")
                next_kill += kill_every
            if now >= next_mem and now < stop_at:
                series.append({"t": round(now - t0, 1), **pool_memory(pool)})
                next_mem += mem_every
            for g in pool.poll(timeout=0.1):
                if g.key in results:
                    dup += 1
                    continue
                results[g.key] = verdict(g.result)
                last_result = time.monotonic()
            if now >= stop_at and len(results) >= submitted:
                break
            if now >= stop_at + drain_timeout:
                logger.error(f"drain timed out with {submitted - len(results)} outstanding")
                break
        wall = last_result - t0
        _seen(pool, pids, containers)
        mem_after = pool_memory(pool)
        series.append({"t": round(time.monotonic() - t0, 1), **mem_after})
        stats = pool.stats()
    finally:
        _seen(pool, pids, containers)
        pool.close()
    # What the pool leaves behind: containers it started, actor / runner processes it ran.
    from vgrout_ray.sandbox.docker_backend import running_sandboxes

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left_c = sorted(containers & set(running_sandboxes())) if containers else []
        left_p = sorted(p for p in pids if _alive(p))
        if not left_c and not left_p:
            break
        time.sleep(1)
    graded = len(results)
    by_cycle: dict[int, set] = {}
    for i, v in results.items():
        by_cycle.setdefault(i % len(cycle), set()).add(v)
    return {
        "kill_every_s": kill_every, "seconds": seconds, "actors": actors, "sandbox": pool.kind,
        "submitted": submitted, "graded": graded, "lost": submitted - graded, "duplicates": dup,
        "errors": sum(1 for v in results.values() if not v[-1]),
        "inconsistent": sum(1 for s in by_cycle.values() if len(s) > 1),
        "actors_killed": len(killed), "wall_s": round(wall, 2),
        "throughput": round(graded / wall, 3) if wall > 0 else 0.0,
        "kinds": {k: sum(1 for i in results if kinds[i] == k) for k in sorted(set(kinds.values()))},
        "pool_stats": stats, "memory_before": mem_before, "memory_after": mem_after, "memory_series": series,
        "leftover_containers": left_c, "leftover_processes": left_p,
        "containers_seen": len(containers), "processes_seen": len(pids),
        "_verdicts": results,
    }


def compare(clean: dict, kill: dict) -> dict:
    both = set(clean["_verdicts"]) & set(kill["_verdicts"])
    mism = sorted(i for i in both if clean["_verdicts"][i] != kill["_verdicts"][i])
    return {"compared": len(both), "verdict_mismatches": len(mism), "mismatched_items": mism[:20],
            "throughput_ratio": round(kill["throughput"] / clean["throughput"], 3) if clean["throughput"] else None}


def _growth(run: dict) -> float:
    b, a = run["memory_before"], run["memory_after"]
    return round((a["actor_rss_mb"] + a["runner_rss_mb"] + max(a["container_mem_mb"], 0))
                 - (b["actor_rss_mb"] + b["runner_rss_mb"] + max(b["container_mem_mb"], 0)), 1)


def _total(m: dict) -> float:
    return m["actor_rss_mb"] + m["runner_rss_mb"] + max(m["container_mem_mb"], 0)


def targets(data: dict) -> dict:
    """The issue's targets. Memory: idle after the run against idle after warm-up, on the clean run
    (samples taken mid-stream include the live jobs' memory, e.g. a memory hog up to its limit)."""
    c, k, x = data["no_kills"], data["with_kills"], data["comparison"]
    return {
        "nothing lost": c["lost"] == 0 and k["lost"] == 0,
        "no duplicates": c["duplicates"] == 0 and k["duplicates"] == 0,
        "no changed verdicts": x["verdict_mismatches"] == 0 and c["inconsistent"] == 0 and k["inconsistent"] == 0,
        f"throughput ratio >= {TARGET_RATIO}": (x["throughput_ratio"] or 0) >= TARGET_RATIO,
        "no memory growth (clean run, idle after vs idle after warm-up, <= 5%)":
            _growth(c) <= 0.05 * max(1.0, _total(c["memory_before"])),
        "nothing left over": not data["leftover_containers"] and not data["leftover_processes"],
    }


def markdown(data: dict) -> str:
    c, k, x = data["no_kills"], data["with_kills"], data["comparison"]
    rows = [("submitted", "submitted"), ("graded", "graded"), ("lost", "lost"), ("duplicates", "duplicates"),
            ("errors (result.error)", "errors"), ("inconsistent within run", "inconsistent"),
            ("actors killed", "actors_killed"), ("wall s (first submit → last result)", "wall_s"),
            ("throughput (completions/s)", "throughput"), ("memory growth MB (actors+runners+containers)", "growth_mb"),
            ("leftover containers", "n_left_c"), ("leftover processes", "n_left_p")]
    for r in (c, k):
        r["growth_mb"] = _growth(r)
        r["n_left_c"] = len(r["leftover_containers"])
        r["n_left_p"] = len(r["leftover_processes"])
    lines = [f"# Grader pool soak ({data['sandbox']} sandbox, {data['actors']} actors, {data['seconds']} s per run)", "",
             f"`{data['command']}`", "",
             f"Machine: {data['machine']}; load average before {data['load_before']}, after {data['load_after']}.",
             f"Stream: {data['cycle_len']} requests per cycle over {data['n_problems']} problems "
             f"(correct, wrong, exploit, {', '.join(HOSTILE)}).", "",
             "| | no kills | kill every %s s |" % data["kill_every"], "|---|---|---|"]
    for label, key in rows:
        lines.append(f"| {label} | {c[key]} | {k[key]} |")
    lines += ["", f"Compared item by item: {x['compared']} items graded in both runs, "
              f"**{x['verdict_mismatches']} verdict mismatches**; throughput ratio (kills / no kills) "
              f"**{x['throughput_ratio']}** (target ≥ {TARGET_RATIO}).", "",
              "Memory (MB) after warm-up → at the end:", ""]
    for name, r in (("no kills", c), ("kills", k)):
        b, a = r["memory_before"], r["memory_after"]
        lines.append(f"- {name}: actors {b['actor_rss_mb']} → {a['actor_rss_mb']}, runners {b['runner_rss_mb']} → "
                     f"{a['runner_rss_mb']}, containers {b['container_mem_mb']} → {a['container_mem_mb']}")
    lines += ["", "Memory of the no-kill run over time (t s: actors / runners / containers MB; the samples "
              "between the first and the last are taken mid-stream and include the jobs then running):",
              "", ", ".join(f"{m['t']:.0f}: {m['actor_rss_mb']} / {m['runner_rss_mb']} / {m['container_mem_mb']}"
                            for m in c["memory_series"])]
    lines += ["", "Targets: " + ", ".join(f"{t}: {'met' if ok else 'MISSED'}" for t, ok in data["targets"].items()), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--kill-every", type=float, default=20)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--sandbox", choices=["docker", "process"], default="docker")
    ap.add_argument("--problems", type=int, default=6, help="packaged problems in the stream's cycle")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--name", default="grader_soak")
    ap.add_argument("--render", type=Path, default=None, help="re-render the .md (and targets) of a saved .json")
    args = ap.parse_args(argv)
    if args.render is not None:
        import json

        data = json.loads(args.render.read_text())
        data["targets"] = targets(data)
        save_results(args.render.parent, args.render.stem, data, markdown(data))
        return 0 if all(data["targets"].values()) else 1
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    from vgrout_ray.cluster.ray_cluster import start_local_ray

    cycle = make_cycle(args.problems)
    start_local_ray(args.actors + 1, log_to_driver=False, configure_logging=False,
                    runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        runs = {}
        for label, ke in (("no_kills", None), ("with_kills", args.kill_every)):
            logger.info(f"soak {label}: {args.seconds} s, {args.actors} {args.sandbox} actors")
            runs[label] = soak(cycle, seconds=args.seconds, kill_every=ke, actors=args.actors, sandbox=args.sandbox,
                               batch_size=args.batch_size)
            r = runs[label]
            logger.info(f"soak {label}: {r['graded']}/{r['submitted']} graded, {r['lost']} lost, {r['duplicates']} dup, "
                        f"{r['throughput']} /s, {r['actors_killed']} killed")
    finally:
        ray.shutdown()
    cmp_ = compare(runs["no_kills"], runs["with_kills"])
    for r in runs.values():
        r.pop("_verdicts")
    c, k = runs["no_kills"], runs["with_kills"]
    data = {
        "command": "python benchmarks/grader_soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        "sandbox": c["sandbox"], "actors": args.actors, "seconds": args.seconds, "kill_every": args.kill_every,
        "cycle_len": len(cycle), "n_problems": args.problems,
        # The headline numbers the issue asks for (the kill run's, compared with the clean run).
        "submitted": k["submitted"], "graded": k["graded"], "lost": k["lost"], "duplicates": k["duplicates"],
        "verdict_mismatches": cmp_["verdict_mismatches"], "actors_killed": k["actors_killed"],
        "throughput_ratio": cmp_["throughput_ratio"],
        "memory_before": k["memory_before"], "memory_after": k["memory_after"],
        "leftover_containers": c["leftover_containers"] + k["leftover_containers"],
        "leftover_processes": c["leftover_processes"] + k["leftover_processes"],
        "no_kills": c, "with_kills": k, "comparison": cmp_,
    }
    data["targets"] = targets(data)
    save_results(args.out, args.name, data, markdown(data))
    return 0 if all(data["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
