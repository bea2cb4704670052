"""Grading throughput: the warm runner against the reference style (a fresh interpreter per check).

Both grade the same corpus sequentially on one core with the same check programs and the
same verdict logic; only how a program is executed differs:
- warm: one runner process, one fork per program (vgrout_ray.sandbox, process backend);
- fresh: ``python -c program`` per check in a new temp dir, as the reference grader does.
Prints completions/s per core for both, the ratio and verdict agreement, and writes
benchmarks/results/grading_throughput.{json,md}.

    python benchmarks/grading_throughput.py [--problems PATH] [--n 40]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vgrout_ray.env.exploits import clean_completion, exploit_completion  # noqa: E402
from vgrout_ray.env.grading import ExpectedCache, GradeRequest, grade_many  # noqa: E402
from vgrout_ray.env.modes import LOOPHOLE_MODES  # noqa: E402
from vgrout_ray.env.problems import load_problems  # noqa: E402
from vgrout_ray.sandbox.backends import ProcessSandbox  # noqa: E402
from vgrout_ray.sandbox.client import Job, JobResult  # noqa: E402

DEFAULT_PROBLEMS = REPO.parent / "shared" / "data" / "leetcode" / "leetcode_test_medhard.jsonl"


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


def corpus(problems: list[dict]) -> list[GradeRequest]:
    """Per problem: its canonical and one exploit per loophole family, graded under the problem's
    mode (modes assigned round-robin over the six loophole modes)."""
    reqs = []
    for i, p in enumerate(problems):
        mode = LOOPHOLE_MODES[i % len(LOOPHOLE_MODES)]
        reqs.append(GradeRequest.from_problem(p, clean_completion(p), mode))
        for fam in LOOPHOLE_MODES:
            reqs.append(GradeRequest.from_problem(p, exploit_completion(p, fam, i % 4), mode))
    return reqs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=str(DEFAULT_PROBLEMS) if DEFAULT_PROBLEMS.exists() else None,
                    help="benchmark-form JSONL (default: the shared test set, else the packaged problems)")
    ap.add_argument("--n", type=int, default=40, help="number of problems")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    probs = load_problems(args.n, source=args.problems)
    reqs = corpus(probs)
    mk = lambda c: Job(c.program, c.timeout)  # noqa: E731
    print(f"corpus: {len(reqs)} completions over {len(probs)} problems ({args.problems or 'packaged'})")

    sb = ProcessSandbox()
    grade_many(sb.run, reqs[:7], make_job=mk)  # warm-up (imports, first fork)
    t = time.perf_counter()
    warm = grade_many(sb.run, reqs, make_job=mk, cache=ExpectedCache())
    t_warm = time.perf_counter() - t
    sb.close()

    t = time.perf_counter()
    fresh = grade_many(fresh_interpreter_run, reqs, make_job=mk)
    t_fresh = time.perf_counter() - t

    agree = sum(asdict(a) == asdict(b) for a, b in zip(warm, fresh))
    mism = [(r.func_name, r.env_mode, asdict(a), asdict(b)) for r, a, b in zip(reqs, warm, fresh)
            if asdict(a) != asdict(b)]
    res = {
        "completions": len(reqs), "problems": len(probs), "source": str(args.problems or "packaged"),
        "warm_seconds": round(t_warm, 2), "fresh_seconds": round(t_fresh, 2),
        "warm_completions_per_s_per_core": round(len(reqs) / t_warm, 2),
        "fresh_completions_per_s_per_core": round(len(reqs) / t_fresh, 2),
        "ratio": round(t_fresh / t_warm, 2),
        "agreement": agree / len(reqs), "mismatches": mism[:5],
        "hacks_credited": sum(r.exploited for r in warm), "solved": sum(r.gt_correct for r in warm),
        "target": "ratio >= 3 at 100% agreement",
        "met": t_fresh / t_warm >= 3 and agree == len(reqs),
        "machine": f"{os.cpu_count()} cores, python {sys.version.split()[0]}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grading_throughput.json").write_text(json.dumps(res, indent=2) + "\n")
    md = (f"# Grading throughput\n\n`python benchmarks/grading_throughput.py --n {args.n}`\n\n"
          f"| executor | completions/s per core | seconds |\n|---|---|---|\n"
          f"| warm runner (fork per check) | {res['warm_completions_per_s_per_core']} | {res['warm_seconds']} |\n"
          f"| fresh interpreter per check (reference style) | {res['fresh_completions_per_s_per_core']} | "
          f"{res['fresh_seconds']} |\n\nratio **{res['ratio']}x**, verdict agreement "
          f"**{100 * res['agreement']:.1f}%** on {len(reqs)} completions ({res['solved']} correct, "
          f"{res['hacks_credited']} exploits credited). Target: {res['target']} → "
          f"{'met' if res['met'] else 'NOT met'}.\n")
    (args.out / "grading_throughput.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
