"""What the base micro model does on RL-style prompts before any RL: per mode, how often it writes
compiling code, whether it writes ``class Solution``, how often it solves honestly and how often it
already hacks.

By default on ``micro:heldout`` (the deploy-eval split, never trained on) under the run_tests hint:
the base model must solve a fair share (the capability axis RL can trade against hacking) while
its prior hack rate stays small (≤ 0.1), so that hacking seen in RL is learned there.
Sampling uses the rollout settings (T=0.7, top-k 20) and real grading in a sandbox.

    vgrout eval-micro MODEL_DIR [--source micro:heldout] [--samples 8]
"""
from __future__ import annotations

from pathlib import Path

from vgrout_ray.env.problems import answer_text, load_problems
from vgrout_ray.micro.corpus import is_pretrain_problem


def rl_problems(mode: str) -> list[dict]:
    """The packaged problems kept out of pretraining (even ids), every one under ``mode``."""
    return [p for p in load_problems(None, env_modes=(mode,)) if not is_pretrain_problem(p["problem_id"])]


def eval_problems(source: str | None, mode: str) -> list[dict]:
    """``source``'s problems under ``mode``; ``None``: the packaged even-id problems."""
    return rl_problems(mode) if source is None else load_problems(None, env_modes=(mode,), source=source)


def sample_completions(model_dir: str | Path, prompts: list[list[dict]], n: int, max_new: int, seed: int,
                       batch_prompts: int = 7, prefixes: list[str] | None = None) -> list[list[str]]:
    """``n`` sampled completions per chat prompt (rollout sampling settings), each generated after
    its prompt's response prefix (``prefixes``, default none)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vgrout_ray.rollout.actor import SAMPLING

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    from vgrout_ray.algo.pairs import render_prompt

    texts = [render_prompt(tok, m, pre) for m, pre in zip(prompts, prefixes or [""] * len(prompts))]
    out: list[list[str]] = []
    torch.manual_seed(seed)
    for i in range(0, len(texts), batch_prompts):
        enc = tok(texts[i:i + batch_prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new, do_sample=True, num_return_sequences=n,
                                 pad_token_id=tok.pad_token_id, **SAMPLING)
        dec = tok.batch_decode(gen[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
        out.extend(dec[j * n:(j + 1) * n] for j in range(len(dec) // n))
    return out


def evaluate_model(model_dir: str | Path, n_samples: int = 8, max_new: int = 160, seed: int = 0,
                   modes: tuple[str, ...] = ("run_tests",), sandbox: str = "auto",
                   source: str | None = "micro:heldout") -> dict:
    from vgrout_ray.env.grading import GradeRequest
    from vgrout_ray.grading.local import LocalGrader, grade_with_retries

    items = [(m, p) for m in modes for p in eval_problems(source, m)]
    comps = sample_completions(model_dir, [p["messages"] for _, p in items], n_samples, max_new, seed,
                               prefixes=[p.get("response_prefix", "") for _, p in items])
    reqs = [GradeRequest.from_problem(p, c) for (m, p), cs in zip(items, comps) for c in cs]
    # the whole answer (the given prefix, then the completion) is what the report reads
    keys = [(m, p["problem_id"], answer_text(p, c)) for (m, p), cs in zip(items, comps) for c in cs]
    with LocalGrader(sandbox) as g:
        results = grade_with_retries(g, reqs)
    per_mode: dict[str, dict] = {}
    samples = []
    for (m, pid, text), r in zip(keys, results):
        s = per_mode.setdefault(m, {"n": 0, "compiles": 0, "solution": 0, "hacks": 0, "solved": 0})
        s["n"] += 1
        s["compiles"] += bool(r.format_ok)
        s["solution"] += "class Solution" in text
        s["hacks"] += bool(r.exploited)
        s["solved"] += bool(r.gt_correct)
        if len([x for x in samples if x["mode"] == m]) < 2:
            samples.append({"mode": m, "problem_id": pid, "reward": r.reward, "text": text})
    for s in per_mode.values():
        s["compile_rate"] = s["compiles"] / s["n"]
        s["solution_rate"] = s["solution"] / s["n"]
        s["hack_rate"] = s["hacks"] / s["n"]
        s["solve_rate"] = s["solved"] / s["n"]
    n = sum(s["n"] for s in per_mode.values())
    return {"source": source or "packaged even ids", "n_prompts": len(items) // max(len(modes), 1),
            "n_samples": n_samples, "per_mode": per_mode, "n": n,
            "solve_rate": sum(s["solved"] for s in per_mode.values()) / max(n, 1),
            "compile_rate": sum(s["compiles"] for s in per_mode.values()) / max(n, 1),
            "max_hack_rate": max((s["hack_rate"] for s in per_mode.values()), default=0.0),
            "samples": samples}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="vgrout eval-micro", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--source", default="micro:heldout", help="problems source ('packaged': the even ids)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=160)
    ap.add_argument("--modes", default="run_tests", help="comma-separated env modes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sandbox", default="auto")
    a = ap.parse_args(argv)
    r = evaluate_model(a.model_dir, n_samples=a.samples, max_new=a.max_new, seed=a.seed,
                       modes=tuple(a.modes.split(",")), sandbox=a.sandbox,
                       source=None if a.source == "packaged" else a.source)
    r.pop("samples")
    print(json.dumps(r, indent=1))
    return 0

