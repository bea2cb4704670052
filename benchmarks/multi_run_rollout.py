"""Multi-tenant δS rollout: K runs served by one shared engine vs one engine per run, tiny model.

"separate": what K single-run engines do — each run's δS loaded, each request generated
alone (run one after another; on 2 cores K engines would only time-slice). "shared": one
MultiRunHFEngine generating every run's requests in one ``generate`` call. Same prompts,
seeds, sampling and δS; warm-up excluded; the ratio is measured within one run of the script.
Also checked: the shared engine draws the same tokens per request as the separate one.
On paper: the per-run memory of the knobs at Qwen3-4B versus the shared weights and factors.

    python benchmarks/multi_run_rollout.py [--runs 4] [--prompts 2] [--n 4] [--max-new 32]
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

# Qwen3-4B (config.json on the hub): the shapes that set the adapter's ranks
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936)


def module_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of the seven adapted projections of one decoder layer."""
    h, i, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}


def memory_on_paper(cfg: dict) -> dict:
    """Bytes of what K runs share (bf16 weights of the adapted Linears, bf16 U and Vh) and what each
    run adds (δS + δS_hack in float32, one r-vector each per module)."""
    shapes = module_shapes(cfg).values()
    L = cfg["num_hidden_layers"]
    w = L * sum(o * i for o, i in shapes)
    uv = L * sum(o * min(o, i) + min(o, i) * i for o, i in shapes)
    r = L * sum(min(o, i) for o, i in shapes)
    return {"adapted_weight_bytes": 2 * w, "factor_bytes": 2 * uv, "knob_values_per_run": 2 * r,
            "knob_bytes_per_run": 4 * 2 * r}


def main() -> None:
    import torch

    from vgrout_ray.rollout.actor import GenRequest, HFEngine
    from vgrout_ray.rollout.multi_engine import MultiRunHFEngine
    from vgrout_ray.env.problems import load_problems
    from vgrout_ray.model.resolve import resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=2, help="prompts per run")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="vgmr-")
    path = resolve_model("tiny", cache)
    single = HFEngine(path, cache, threads=args.threads)
    multi = MultiRunHFEngine(path, cache, threads=args.threads)
    tok = single.tok
    probs = load_problems(args.prompts * args.runs)
    prompts = [tok(tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True,
                                           enable_thinking=False), add_special_tokens=False).input_ids for p in probs]
    runs = [f"run{k}" for k in range(args.runs)]
    deltas = {}
    for k, run in enumerate(runs):
        g = torch.Generator().manual_seed(k)
        deltas[run] = {}
        for n in single.layers:
            r = single.U[n].shape[1]
            deltas[run][f"{n}.delta_S"] = torch.randn(r, generator=g) * 0.3
            deltas[run][f"{n}.delta_S_hack"] = torch.randn(r, generator=g) * 0.1
        multi.load_run(run, 1, deltas[run])
    items = [(run, GenRequest((run, j), prompts[k * args.prompts + j], args.n, args.max_new, seed=100 * k + j))
             for k, run in enumerate(runs) for j in range(args.prompts)]
    # warm-up both
    single.load_deltas(1, deltas[runs[0]])
    single.generate(GenRequest("w", prompts[0], args.n, 8, seed=0))
    multi.generate_many([(runs[0], GenRequest("w", prompts[0], args.n, 8, seed=0))])

    t0, c0 = time.perf_counter(), time.process_time()
    sep = []
    for run in runs:
        single.load_deltas(1, deltas[run])
        sep += [single.generate(req) for r, req in items if r == run]
    t_sep, c_sep = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    shared = multi.generate_many(items)
    t_shared, c_shared = time.perf_counter() - t0, time.process_time() - c0
    same = sum(a.completions == b.completions for a, b in zip(sep, shared))
    toks = sum(r.n_tokens for r in shared)
    paper = memory_on_paper(QWEN3_4B)
    out = {"runs": args.runs, "prompts_per_run": args.prompts, "n": args.n, "max_new": args.max_new,
           "threads": args.threads, "tokens": toks, "separate_s": round(t_sep, 3), "shared_s": round(t_shared, 3),
           "separate_cpu_s": round(c_sep, 3), "shared_cpu_s": round(c_shared, 3),
           "shared_over_separate": round(t_shared / t_sep, 3), "shared_over_separate_cpu": round(c_shared / c_sep, 3), "requests_same_tokens": f"{same}/{len(items)}",
           "qwen3_4b_on_paper": paper}
    gb = 1 << 30
    md = "\n".join([
        "# Multi-tenant δS rollout (tiny model, CPU)\n",
        f"`python benchmarks/multi_run_rollout.py --runs {args.runs} --prompts {args.prompts} --n {args.n} "
        f"--max-new {args.max_new} --threads {args.threads}`\n",
        "| mode | requests | tokens | wall s | CPU s |", "|---|---|---|---|---|",
        f"| separate (one run's δS at a time, request by request) | {len(items)} | {sum(r.n_tokens for r in sep)} "
        f"| {t_sep:.2f} | {c_sep:.2f} |",
        f"| shared (all runs' rows in one generate) | {len(items)} | {toks} | {t_shared:.2f} | {c_shared:.2f} |",
        f"\nshared / separate: wall **{t_shared / t_sep:.2f}**, CPU time **{c_shared / c_sep:.2f}** (same prompts, "
        f"seeds, δS; warm-up excluded; CPU time is the steadier figure on a shared machine). "
        f"Requests drawing the same tokens in both modes: {same}/{len(items)}.\n",
        "## On paper: Qwen3-4B", "",
        f"Shared once per engine: adapted Linear weights {paper['adapted_weight_bytes'] / gb:.2f} GiB (bf16) and "
        f"their SVD factors U, Vh {paper['factor_bytes'] / gb:.2f} GiB (bf16, as the adapter hooks hold them; "
        f"HFEngine also keeps float32 copies for merge mode, twice that again, which hook mode never reads). "
        f"Each run adds its δS and δS_hack: "
        f"{paper['knob_values_per_run']:,} float32 values = {paper['knob_bytes_per_run'] / (1 << 20):.1f} MiB, "
        f"plus the KV cache of its own rows. So the runs per GPU are set by KV cache and batch, not by the runs' "
        f"weights: 16 runs' knobs are {16 * paper['knob_bytes_per_run'] / (1 << 20):.0f} MiB next to the shared "
        f"{(paper['adapted_weight_bytes'] + paper['factor_bytes']) / gb:.1f} GiB.", ""])
    save_results(args.out, "multi_run_rollout", out, md)


if __name__ == "__main__":
    main()
