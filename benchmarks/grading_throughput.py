"""Grading throughput: the single-run grader against the reference style (a fresh interpreter per check).

    python benchmarks/grading_throughput.py [--problems PATH] [--n N] [--n-exploit 20] [--n-mixed 16]
                                            [--max-canonical-frac 0.5] [--no-docker]

- grader: this package's grader (one sandboxed run of a completion's tests; expected values
  computed once per problem on the host) in one warm process-backend runner;
- baseline (reference style): the previous grader's programs (gt_pass, the strict oracle and the
  mode's channel program, plus run_tests detectors when the completion defines run_tests), each
  in a fresh ``python -c`` in its own temp dir, one at a time.

Both grade the same completions, one at a time on one core, alternating completion by
completion so that load on the machine hits both alike. Start-up is cancelled out: the runner is
started and warmed, and every problem's expected values are computed (for both: the baseline
gets the same values in its cache, as the reference computes them once per problem), before
anything is timed, so the times are the marginal cost per completion.

Corpora (each graded under a loophole mode, round-robin over the six): ``correct`` (canonical
solutions), ``wrong_complete`` (the canonical made wrong on its last test: runs every test),
``exploit`` (one exploit of each family per problem, spellings round-robin), ``mixed`` (per
problem: canonical, wrong-complete, a constant wrong answer and two exploits). Problems whose
canonical run takes more than ``--max-canonical-frac`` of the 3 s limit are left out (their
verdict depends on the machine). Verdicts are compared with the baseline's (today's grader) and
with the reference labels (canonical: oracle-correct, never exploited; wrong: not correct, paid
nothing; exploit: paid exactly under its own mode). With Docker, the grader's completions/s in a
docker sandbox (one container, ``--cpus 1``) on the correct and mixed corpora are reported too.
Writes benchmarks/results/grading_throughput.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import legacy_grader as legacy  # noqa: E402
from vgrout_ray.env.exploits import (N_VARIANTS, clean_completion, exploit_completion,  # noqa: E402
                                     wrong_complete_completion, wrong_completion)
from vgrout_ray.env.grading import ExpectedCache, GradeRequest, grade_many, plan, problem_info  # noqa: E402
from vgrout_ray.env.modes import CHECK_TIMEOUT_S, LOOPHOLE_MODES  # noqa: E402
from vgrout_ray.env.problems import load_problems  # noqa: E402
from vgrout_ray.env.programs import read_report  # noqa: E402
from vgrout_ray.sandbox.backends import ProcessSandbox  # noqa: E402
from vgrout_ray.sandbox.client import Job, JobResult  # noqa: E402

DEFAULT_PROBLEMS = REPO.parent / "shared" / "data" / "leetcode" / "leetcode_test_medhard.jsonl"
TARGET = 6.0


def fresh_interpreter_run(jobs: list[Job]) -> list[JobResult]:
    """Reference-style execution: a new ``python -c`` per program, in its own temp dir, one at a time.
    fd 3 carries the report pipe so the same probe programs work."""
    out = []
    for job in jobs:
        with tempfile.TemporaryDirectory() as td:
            r, w = os.pipe()
            t0 = time.monotonic()
            try:
                # close_fds=False: subprocess would otherwise close fd 3 after preexec_fn put the
                # report pipe there.
                proc = subprocess.run([sys.executable, "-c", job.program], cwd=td, capture_output=True,
                                      timeout=job.timeout, close_fds=False,
                                      preexec_fn=lambda w=w: os.dup2(w, 3),
                                      env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
                code, timed_out, so, se = proc.returncode, False, proc.stdout, proc.stderr
            except subprocess.TimeoutExpired as e:
                code, timed_out, so, se = None, True, e.stdout or b"", e.stderr or b""
            os.close(w)
            with os.fdopen(r, "rb") as f:
                report = f.read()
            files = []
            for name in sorted(os.listdir(td)):
                p = os.path.join(td, name)
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as fh:
                        files.append({"name": name, "kind": "file", "size": os.path.getsize(p),
                                      "head": fh.read(4096).decode("utf-8", "replace")})
            out.append(JobResult(exit_code=code if code is None or code >= 0 else None, timed_out=timed_out,
                                 stdout=so.decode("utf-8", "replace")[:65536],
                                 stderr=se.decode("utf-8", "replace")[:65536],
                                 report=report.decode("utf-8", "replace"), files=files,
                                 wall=time.monotonic() - t0))
    return out


def mk(check) -> Job:
    return Job(check.program, check.timeout)


def canonical_walls(sb: ProcessSandbox, probs: list[dict], cache: ExpectedCache) -> list[float]:
    """Wall seconds of each canonical solution's single run (10 s limit, so slow ones are measured)."""
    walls = []
    for p in probs:
        pl = plan(GradeRequest.from_problem(p, clean_completion(p), "gt_only"), timeout=10.0, cache=cache)
        r = sb.run([mk(c) for c in pl.checks if c.name == "run"])[0]
        walls.append(10.0 if r.timed_out else r.wall)
    return walls


def corpora(probs: list[dict], n_exploit: int, n_mixed: int) -> dict[str, list[tuple[GradeRequest, str, str]]]:
    """name → [(request, kind, exploit family or "")]; the mode of problem i is LOOPHOLE_MODES[i % 6]."""
    out: dict[str, list] = {"correct": [], "wrong_complete": [], "exploit": [], "mixed": []}
    for i, p in enumerate(probs):
        mode = LOOPHOLE_MODES[i % len(LOOPHOLE_MODES)]
        req = lambda c: GradeRequest.from_problem(p, c, mode)  # noqa: E731
        out["correct"].append((req(clean_completion(p)), "correct", ""))
        out["wrong_complete"].append((req(wrong_complete_completion(p)), "wrong", ""))
        if i < n_exploit:
            out["exploit"] += [(req(exploit_completion(p, fam, (i + k) % N_VARIANTS)), "exploit", fam)
                               for k, fam in enumerate(LOOPHOLE_MODES)]
        if i < n_mixed:
            fams = [LOOPHOLE_MODES[i % 6], LOOPHOLE_MODES[(i + 3) % 6]]
            out["mixed"] += [(req(clean_completion(p)), "correct", ""), (req(wrong_complete_completion(p)), "wrong", ""),
                             (req(wrong_completion(p)), "wrong", "")]
            out["mixed"] += [(req(exploit_completion(p, f, i % N_VARIANTS)), "exploit", f) for f in fams]
    return out


def reference_label_ok(r, kind: str, family: str, mode: str) -> bool:
    """The reference checks: what each kind of completion must get."""
    if r.error is not None:
        return False
    if kind == "correct":
        return r.gt_correct and r.passed and not r.exploited
    if kind == "wrong":
        return not r.gt_correct and not r.passed
    return not r.gt_correct and r.exploited == (family == mode) and r.passed == (family == mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=str(DEFAULT_PROBLEMS) if DEFAULT_PROBLEMS.exists() else None,
                    help="benchmark-form JSONL (default: the shared test set, else the packaged problems)")
    ap.add_argument("--n", type=int, default=None, help="number of problems (default: all)")
    ap.add_argument("--n-exploit", type=int, default=20, help="problems in the exploit corpus (6 completions each)")
    ap.add_argument("--n-mixed", type=int, default=16, help="problems in the mixed corpus (5 completions each)")
    ap.add_argument("--max-canonical-frac", type=float, default=0.5,
                    help="leave out problems whose canonical run takes more than this share of the 3 s limit")
    ap.add_argument("--no-docker", action="store_true", help="skip the docker-backend measurement")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    all_probs = load_problems(args.n, source=args.problems)

    sb = ProcessSandbox()
    cache = ExpectedCache()
    t0 = time.perf_counter()
    for p in all_probs:  # start-up: every problem's expected values and run-program text, once
        problem_info(GradeRequest.from_problem(p, "", "gt_only"), cache)
    t_expected = time.perf_counter() - t0
    walls = canonical_walls(sb, all_probs, cache)
    limit = args.max_canonical_frac * CHECK_TIMEOUT_S
    probs = [p for p, w in zip(all_probs, walls) if w <= limit]
    dropped = [(p["func_name"], round(w, 2)) for p, w in zip(all_probs, walls) if w > limit]
    sets = corpora(probs, args.n_exploit, args.n_mixed)
    print(f"{len(all_probs)} problems, {len(dropped)} left out (canonical run > {limit:.2f} s): {dropped}")
    print("corpora: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))

    lcache = legacy.LegacyExpectedCache()
    for p in all_probs:  # the baseline computes expected values once per problem too: same values
        info = problem_info(GradeRequest.from_problem(p, "", "gt_only"), cache)
        lcache.put(legacy._key(p["setup_code"], list(p["gt_tests"])), info.expected)
    warm = [r for r, _, _ in sets["mixed"][:10]]
    grade_many(sb.run, warm, make_job=mk, cache=cache)
    legacy.grade_many(fresh_interpreter_run, warm, make_job=mk, cache=lcache)

    rows, all_mism = {}, []
    for name, items in sets.items():
        t_new = t_old = 0.0
        agree = ref_ok = 0
        runs: Counter = Counter()
        programs_old = 0
        for req, kind, fam in items:
            names: list[str] = []
            t = time.perf_counter()
            new = grade_many(sb.run, [req], make_job=lambda c: (names.append(c.name), mk(c))[1], cache=cache)[0]
            t_new += time.perf_counter() - t
            jobs: list = []
            t = time.perf_counter()
            old = legacy.grade_many(lambda js: (jobs.extend(js), fresh_interpreter_run(js))[1], [req],
                                    make_job=mk, cache=lcache)[0]
            t_old += time.perf_counter() - t
            runs[sum(n in ("run", "main") for n in names)] += 1
            programs_old += len(jobs)
            agree += asdict(new) == asdict(old)
            ref_ok += reference_label_ok(new, kind, fam, req.env_mode)
            if asdict(new) != asdict(old):
                all_mism.append({"corpus": name, "func": req.func_name, "mode": req.env_mode, "kind": kind,
                                 "family": fam, "new": asdict(new), "baseline": asdict(old)})
        n = len(items)
        rows[name] = {"n": n, "grader_ms": round(1000 * t_new / n, 1), "baseline_ms": round(1000 * t_old / n, 1),
                      "grader_per_s": round(n / t_new, 2), "baseline_per_s": round(n / t_old, 2),
                      "ratio": round(t_old / t_new, 2), "agreement": agree / n, "reference_ok": ref_ok / n,
                      "test_runs_per_completion": dict(sorted(runs.items())),
                      "baseline_programs_per_completion": round(programs_old / n, 2)}
        print(name, rows[name], flush=True)
    sb.close()

    docker = None
    if not args.no_docker:
        from vgrout_ray.sandbox.docker_backend import DockerSandbox, image_ready
        ok, why = image_ready()
        if ok:
            dsb = DockerSandbox()
            try:
                grade_many(dsb.run, warm, make_job=mk, cache=cache)
                docker = {}
                for name in ("correct", "mixed"):
                    reqs = [r for r, _, _ in sets[name]]
                    t = time.perf_counter()
                    grade_many(dsb.run, reqs, make_job=mk, cache=cache)
                    dt = time.perf_counter() - t
                    docker[name] = {"n": len(reqs), "per_s_per_core": round(len(reqs) / dt, 2),
                                    "ms": round(1000 * dt / len(reqs), 1)}
            finally:
                dsb.close()
        else:
            docker = {"skipped": why}

    res = {
        "problems": len(all_probs), "kept": len(probs), "left_out": dropped, "source": str(args.problems or "packaged"),
        "max_canonical_frac": args.max_canonical_frac, "expected_values_s": round(t_expected, 2),
        "corpora": rows, "docker": docker, "mismatches": all_mism[:10], "n_mismatches": len(all_mism),
        "target": f"ratio >= {TARGET} on correct and wrong_complete, verdicts identical",
        "met": all(rows[k]["ratio"] >= TARGET for k in ("correct", "wrong_complete")) and not all_mism
        and all(r["reference_ok"] == 1.0 for r in rows.values()),
        "machine": f"{os.cpu_count()} cores, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}",
    }
    cmd = (f"python benchmarks/grading_throughput.py" + (f" --n {args.n}" if args.n else "")
           + f" --n-exploit {args.n_exploit} --n-mixed {args.n_mixed} --max-canonical-frac {args.max_canonical_frac}")
    table = "".join(
        f"| {k} | {v['n']} | {v['grader_ms']} | {v['baseline_ms']} | **{v['ratio']}x** | {v['grader_per_s']} | "
        f"{v['baseline_per_s']} | {100 * v['agreement']:.1f}% | {100 * v['reference_ok']:.1f}% | "
        f"{v['test_runs_per_completion']} | {v['baseline_programs_per_completion']} |\n" for k, v in rows.items())
    dock = ("" if docker is None else
            f"Docker backend (one container, `--cpus 1`): skipped ({docker['skipped']}).\n" if "skipped" in docker else
            "Docker backend (one container, `--cpus 1`), grader: " + "; ".join(
                f"{k} {v['per_s_per_core']} completions/s per core ({v['ms']} ms each)" for k, v in docker.items()) + ".\n")
    md = (f"# Grading throughput\n\n`{cmd}` (one core, sequential, alternating grader and baseline completion by "
          f"completion; start-up cancelled: runner warm, expected values computed before timing)\n\n"
          f"{res['problems']} problems of `{Path(res['source']).name}`; left out (canonical run > "
          f"{args.max_canonical_frac} x 3 s): {dropped or 'none'}.\n\n"
          "| corpus | n | grader ms | baseline ms | ratio | grader /s | baseline /s | agreement with today's "
          "grader | reference checks | test runs per completion (grader) | programs per completion (baseline) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|\n" + table + "\n" + dock +
          f"\nTarget: {res['target']} → {'met' if res['met'] else 'NOT met'}. Expected values of all problems "
          f"(trusted side, once): {res['expected_values_s']} s. Machine: {res['machine']}.\n")
    if all_mism:
        md += "\nMismatches (first 10): " + "; ".join(f"{m['corpus']} {m['func']} {m['mode']} {m['kind']}"
                                                       for m in all_mism[:10]) + "\n"
    save_results(args.out, "grading_throughput", res, md)


if __name__ == "__main__":
    main()
