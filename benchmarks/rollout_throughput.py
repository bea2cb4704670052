"""Rollout throughput: tokens/s of the hf and vllm(-cpu) engines on the tiny model.

Same prompts (packaged problems under the chat template), same sampling (the seed's: T=0.7,
top_k=20, top_p=1), same n and max_new, same synced δS; warm-up excluded. Writes
benchmarks/results/rollout_throughput.{json,md}.

    python benchmarks/rollout_throughput.py [--prompts 8] [--n 4] [--max-new 64]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import torch

    from vgrout_ray.rollout.actor import GenRequest, HFEngine
    from vgrout_ray.env.problems import load_problems
    from vgrout_ray.model.resolve import resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="vgrt-")
    path = resolve_model("tiny", cache)
    engines = {"hf": HFEngine(path, cache, threads=args.threads)}
    try:
        from vgrout_ray.rollout.vllm_engine import VLLMEngine

        engines["vllm"] = VLLMEngine(path, cache, gpu_memory_utilization=0.3, max_model_len=2048)
    except ImportError as e:
        print(f"vllm not installed ({e}); measuring hf only")
    tok = engines["hf"].tok
    probs = load_problems(args.prompts)
    prompts = [tok(tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True,
                                           enable_thinking=False), add_special_tokens=False).input_ids for p in probs]
    g = torch.Generator().manual_seed(0)
    deltas = {}
    for n in engines["hf"].layers:
        r = engines["hf"].U[n].shape[1]
        deltas[f"{n}.delta_S"] = torch.randn(r, generator=g) * 0.05
        deltas[f"{n}.delta_S_hack"] = torch.zeros(r)
    res = {}
    for name, eng in engines.items():
        eng.load_deltas(1, deltas)
        eng.generate(GenRequest("w", prompts[0], args.n, 8, seed=0))  # warm-up (and weight load)
        t0 = time.perf_counter()
        toks = 0
        for i, ids in enumerate(prompts):
            toks += eng.generate(GenRequest(i, ids, args.n, args.max_new, seed=100 + i)).n_tokens
        dt = time.perf_counter() - t0
        res[name] = {"tokens": toks, "seconds": round(dt, 3), "tokens_per_s": round(toks / dt, 1)}
    out = {"prompts": len(prompts), "n": args.n, "max_new": args.max_new, "threads": args.threads, **res}
    if "vllm" in res:
        out["vllm_over_hf"] = round(res["vllm"]["tokens_per_s"] / res["hf"]["tokens_per_s"], 2)
    lines = ["# Rollout throughput (tiny model, CPU)\n",
             f"`python benchmarks/rollout_throughput.py --prompts {args.prompts} --n {args.n} "
             f"--max-new {args.max_new}`\n", "| engine | tokens | seconds | tokens/s |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['tokens']} | {v['seconds']} | {v['tokens_per_s']} |" for k, v in res.items()]
    if "vllm_over_hf" in out:
        lines.append(f"\nvllm / hf = **{out['vllm_over_hf']}x** (same prompts, sampling, δS; warm-up excluded).")
    md = "\n".join(lines) + "\n"
    save_results(args.out, "rollout_throughput", out, md)


if __name__ == "__main__":
    main()
