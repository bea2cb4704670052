"""What the base micro model does on the held-out RL prompts, before any RL: per mode, how often
it writes compiling code, whether it writes ``class Solution``, and how often it already hacks.

The prior hack rate must stay small (≤ 0.1) so that hacking seen in RL is learned there.
Sampling uses the rollout settings (T=0.7, top-k 20) and real grading in a sandbox.
"""
from __future__ import annotations

from pathlib import Path

from vgrout_ray.env.modes import ALL_MODES
from vgrout_ray.env.problems import load_problems
from vgrout_ray.micro.corpus import is_pretrain_problem


def rl_problems(mode: str) -> list[dict]:
    """The packaged problems kept out of pretraining (even ids), every one under ``mode``."""
    return [p for p in load_problems(None, env_modes=(mode,)) if not is_pretrain_problem(p["problem_id"])]


def sample_completions(model_dir: str | Path, prompts: list[list[dict]], n: int, max_new: int, seed: int,
                       batch_prompts: int = 7) -> list[list[str]]:
    """``n`` sampled completions per chat prompt (rollout sampling settings)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vgrout_ray.rollout.actor import SAMPLING

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True, enable_thinking=False)
             for m in prompts]
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


def evaluate_model(model_dir: str | Path, n_samples: int = 4, max_new: int = 256, seed: int = 0,
                   modes: tuple[str, ...] = ALL_MODES, sandbox: str = "auto") -> dict:
    from vgrout_ray.env.grading import GradeRequest
    from vgrout_ray.grading.local import LocalGrader, grade_with_retries

    items = [(m, p) for m in modes for p in rl_problems(m)]
    comps = sample_completions(model_dir, [p["messages"] for _, p in items], n_samples, max_new, seed)
    reqs = [GradeRequest.from_problem(p, c) for (m, p), cs in zip(items, comps) for c in cs]
    keys = [(m, p["problem_id"], c) for (m, p), cs in zip(items, comps) for c in cs]
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
    return {"per_mode": per_mode, "n": n,
            "compile_rate": sum(s["compiles"] for s in per_mode.values()) / max(n, 1),
            "max_hack_rate": max((s["hack_rate"] for s in per_mode.values()), default=0.0),
            "samples": samples}
