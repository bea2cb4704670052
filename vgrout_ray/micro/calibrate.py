"""Measure the base micro model on the calibration pool, prompt by prompt, and store it.

``micro:train-cal`` / ``micro:heldout-cal`` keep the pool prompts the base model solves within
``rl_problems.CAL_BAND``. The measurement uses its own sampling seed (``SAMPLE_SEED``), which no
run uses, so a run's pre-RL eval of the kept prompts is an independent draw: selecting and
measuring on the same samples would put unlucky draws in the band and show a rise under RL that is
regression to the mean. The file records the build hash it was measured on
(``tests/test_micro.py`` fails when the recipe changes and the file does not).

    vgrout calibrate-micro [--model-dir DIR] [--samples 16]
"""
from __future__ import annotations

import json
from pathlib import Path

SAMPLE_SEED = 777_001


def per_prompt_rates(model_dir: str | Path, rows: list[dict], n_samples: int, seed: int,
                     max_new: int = 160, sandbox: str = "auto") -> dict[int, dict]:
    """{problem id: {solve, hack, compile, n}} from ``n_samples`` completions per row, graded for real."""
    from vgrout_ray.micro.evaluate import sample_completions

    comps = sample_completions(model_dir, [p["messages"] for p in rows], n_samples, max_new, seed,
                               prefixes=[p.get("response_prefix", "") for p in rows])
    return grade_per_prompt(rows, comps, sandbox)


def grade_per_prompt(rows: list[dict], completions: list[list[str]], sandbox: str = "auto") -> dict[int, dict]:
    """Grade each row's completions (after its response prefix) and count per row."""
    from vgrout_ray.env.grading import GradeRequest
    from vgrout_ray.grading.local import LocalGrader, grade_with_retries

    reqs = [GradeRequest.from_problem(p, c) for p, cs in zip(rows, completions) for c in cs]
    with LocalGrader(sandbox) as g:
        results = iter(grade_with_retries(g, reqs))
    out: dict[int, dict] = {}
    for p, cs in zip(rows, completions):
        rs = [next(results) for _ in cs]
        n = len(rs)
        out[int(p["problem_id"])] = {"solve": sum(bool(r.gt_correct) for r in rs) / n,
                                     "hack": sum(bool(r.exploited) for r in rs) / n,
                                     "compile": sum(bool(r.format_ok) for r in rs) / n, "n": n}
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from vgrout_ray.env.problems import load_problems
    from vgrout_ray.micro import rl_problems
    from vgrout_ray.micro.build import ensure_micro_model

    ap = argparse.ArgumentParser(prog="vgrout calibrate-micro", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=None, help="a built micro model (default: build or reuse under --cache)")
    ap.add_argument("--cache", default="~/.cache/vgrout", help="where the micro model is built and cached")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--sandbox", default="auto")
    ap.add_argument("--out", default=str(rl_problems.CALIBRATION))
    a = ap.parse_args(argv)
    model_dir = Path(a.model_dir) if a.model_dir else ensure_micro_model(Path(a.cache).expanduser())
    # the pool rows through the loader, so they carry the run_tests hint a run's prompts carry
    rows = load_problems(None, env_modes=("run_tests",), source="micro:pool")
    rates = per_prompt_rates(model_dir, rows, a.samples, SAMPLE_SEED, sandbox=a.sandbox)
    build = Path(model_dir).name.split("-")[1]
    cal = {"build": build, "pool_seed": rl_problems.POOL_SEED, "n_pool": rl_problems.N_POOL,
           "samples": a.samples, "sample_seed": SAMPLE_SEED, "env_mode": "run_tests",
           "per_prompt": {str(k): v for k, v in sorted(rates.items())}}
    Path(a.out).write_text(json.dumps(cal, indent=1) + "\n")
    train, held = rl_problems.calibrated_ids(cal)
    solve = [v["solve"] for v in rates.values()]
    print(f"calibrated {len(rates)} prompts × {a.samples} on build {build}: mean solve {sum(solve) / len(solve):.3f}; "
          f"in band {rl_problems.CAL_BAND}: {len(train)} train, {len(held)} held-out -> {a.out}")
    return 0
