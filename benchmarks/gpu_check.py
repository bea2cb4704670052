"""One-GPU check of what CPU tests cannot measure: learner memory with and without gradient
checkpointing, the rollout engines' δS hooks and sampler/learner mismatch in bf16, and generate
throughput batched vs one prompt per call. A Qwen3-shaped model with random weights is built
locally (no hub); ``--shape`` picks the 0.6B / 1.7B / 4B layout.

Part A (torch + transformers, always):
  - learner: one group of the longest rows (G × (prompt + max_new)) forward + backward through
    the δS adapter in bf16, checkpointing off and on; peak CUDA memory, seconds, and that the
    δS grads and route2's per-rollout gate grads are the same both ways;
  - HF engine: δS hooks (hook mode) vs the learner's log-probs of the engine's own samples
    (mismatch), the on-policy probe (start-up δS + sync), and generate tokens/s with a step's
    prompts in one ``generate`` vs one prompt per call;
Part B (only where vllm imports): vLLM engine memory after start and after the δS hooks, the
  on-policy probe (hooks move vLLM's log-probs as the learner predicts), batched vs per-prompt
  tokens/s.

    python benchmarks/gpu_check.py                       # GPU, writes benchmarks/results/gpu_check.{json,md}
    python benchmarks/gpu_check.py --device cpu --tiny   # plumbing check here (writes under /tmp)
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Qwen3 dense layouts (hidden, intermediate, layers, heads, kv heads); head_dim 128, tied embeddings
SHAPES = {"0.6B": (1024, 3072, 28, 16, 8), "1.7B": (2048, 6144, 28, 16, 8), "4B": (2560, 9728, 36, 32, 8)}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def build_model(root: Path, shape: str, tiny: bool, dtype) -> Path:
    """A random Qwen3 of the shape, saved with the tiny model's tokenizer (ids fit any vocab)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from vgrout_ray.model.tiny import ensure_tiny_model

    tiny_dir = ensure_tiny_model(root / "tiny")
    if tiny:
        return tiny_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    h, inter, L, nh, kv = SHAPES[shape]
    cfg = Qwen3Config(vocab_size=151936, hidden_size=h, intermediate_size=inter, num_hidden_layers=L,
                      num_attention_heads=nh, num_key_value_heads=kv, head_dim=128, max_position_embeddings=8192,
                      tie_word_embeddings=True, rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    out = root / f"qwen3-{shape}-random"
    if (out / "config.json").exists():
        return out
    log(f"building random Qwen3-{shape} ({L} layers, hidden {h})")
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(cfg).to(dtype)
    model.generation_config.update(do_sample=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out


def mem(device) -> dict:
    import torch

    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"allocated_gib": torch.cuda.memory_allocated() / 2**30, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "device_used_gib": (total - free) / 2**30}


def rand_deltas(names_ranks: dict, scale: float, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(r, generator=g) * scale for n, r in names_ranks.items()
            for k in (f"{n}.delta_S", f"{n}.delta_S_hack")}


def learner_part(path: Path, cache: Path, device, dtype, a) -> tuple[dict, object]:
    import torch

    from vgrout_ray.algo import loss as L
    from vgrout_ray.learner.core import load_model
    from vgrout_ray.model.adapter import attach_adapter
    from vgrout_ray.model.checkpointing import enable_grad_checkpointing
    from vgrout_ray.model.svd_cache import load_or_compute_factors

    t = time.perf_counter()
    model = load_model(str(path), device, dtype)
    log(f"learner model loaded in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    factors = load_or_compute_factors(model, str(path), str(cache))
    svd_s = time.perf_counter() - t
    log(f"SVD factors ready in {svd_s:.1f}s")
    ad = attach_adapter(model, factors)
    del factors
    model.train()
    ranks = {n: ad.U[n].shape[1] for n in ad.names}
    ad.load_deltas(rand_deltas(ranks, a.delta_scale, 1))
    g = torch.Generator().manual_seed(2)
    B, P, C = a.group, a.prompt_len, a.max_new
    x = torch.randint(10, 2000, (B, P + C), generator=g).to(device)
    A = torch.linspace(-1, 1, B, device=device)
    res = {"svd_s": svd_s, "group": B, "tokens": B * (P + C), "base_mem": mem(device)}
    grads = {}
    for gc_on in (False, True):
        if gc_on:
            enable_grad_checkpointing(model, ad)
        ad.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        t = time.perf_counter()
        with ad.gate_probe():
            logp = L.completion_logps(model, x, C)
        loss = -(A.unsqueeze(1) * logp).mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t
        cg = ad.gate_grads()
        grads[gc_on] = ({n: ad.delta[n].grad.detach().float().clone() for n in ad.names},
                        {n: v.detach().float().clone() for n, v in cg.items()})
        ad.zero_grad()
        ad.clear_gates()
        res["ckpt_on" if gc_on else "ckpt_off"] = {
            "seconds": secs, "peak_gib": (torch.cuda.max_memory_allocated() - before) / 2**30 if device.type == "cuda"
            else None}
        log(f"learner fwd+bwd, checkpointing {'on ' if gc_on else 'off'}: {secs:.2f}s "
            f"peak +{res['ckpt_on' if gc_on else 'ckpt_off']['peak_gib']} GiB")
    model.gradient_checkpointing_disable()
    model.eval()

    def rel(a_, b_):
        return max(float((a_[n] - b_[n]).norm() / b_[n].norm().clamp_min(1e-30)) for n in a_)
    res["grad_rel_diff"] = rel(grads[True][0], grads[False][0])
    res["gate_grad_rel_diff"] = rel(grads[True][1], grads[False][1])
    res["gate_grads_nonzero"] = all(float(v.abs().sum()) > 0 for v in grads[True][1].values())
    del grads, logp, loss, x
    gc.collect()
    if device.type == "cuda":  # give the backward's cached blocks back before the engines size themselves
        torch.cuda.empty_cache()
    return res, ad


def hf_part(path: Path, cache: Path, device, dtype, ad, a) -> dict:
    import torch

    from vgrout_ray.rollout.hf_engine import HFEngine
    from vgrout_ray.rollout.base import GenRequest
    from vgrout_ray.model.onpolicy_probe import check_engine, learner_probe, split_probe, text_probe_ids

    t = time.perf_counter()
    eng = HFEngine(str(path), str(cache), device=str(device), dtype=dtype)
    res = {"start_s": time.perf_counter() - t, "mem_after_start": mem(device),
           "factor_dtype": str(next(iter(eng.U.values())).dtype)}
    log(f"hf engine up in {res['start_s']:.1f}s")
    payload = ad.deltas_state()
    ids = text_probe_ids(eng.tok, eng.model.get_input_embeddings().weight.shape[0])
    t = time.perf_counter()
    payload.update(learner_probe(ad, ids, startup=True))
    deltas, probe = split_probe(payload)
    eng.load_deltas(1, deltas)
    res["probe"] = check_engine(eng, 1, deltas, probe, a.tol)
    res["probe_s"] = time.perf_counter() - t
    log(f"hf on-policy probe: {json.dumps(res['probe'])}")
    prompts = [torch.randint(10, 2000, (a.prompt_len,), generator=torch.Generator().manual_seed(i)).tolist()
               for i in range(a.prompts)]
    reqs = [GenRequest(i, p, a.group, a.gen_new, seed=7 + i) for i, p in enumerate(prompts)]
    # mismatch: the engine's sampling log-probs vs the learner's on the same tokens
    from vgrout_ray.algo import loss as L

    out = eng.generate(reqs[0])
    diffs = []
    with torch.no_grad():
        for c, lp in zip(out.completions, out.logprobs):
            if not c:
                continue
            x = torch.tensor([prompts[0] + c], device=device)
            mine = L.completion_logps(ad.model, x, len(c))[0].float().cpu()
            diffs.append((mine - torch.tensor(lp)).abs())
    d = torch.cat(diffs)
    res["mismatch"] = {"tokens": int(d.numel()), "mean_abs": float(d.mean()), "max_abs": float(d.max())}
    log(f"hf sampler/learner mismatch: {res['mismatch']}")
    # throughput: one prompt per call (the engine's generate) vs one left-padded generate of all
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    per = [eng.generate(r) for r in reqs]
    per_s = time.perf_counter() - t
    per_tok = sum(r.n_tokens for r in per)
    t = time.perf_counter()
    tok = eng.tok
    width = max(len(p) for p in prompts)
    x = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    m = torch.zeros_like(x)
    for i, p in enumerate(prompts):
        x[i, width - len(p):] = torch.tensor(p)
        m[i, width - len(p):] = 1
    from vgrout_ray.rollout.base import SAMPLING, trim_completion

    with torch.no_grad(), eng.view(False):
        o = eng.model.generate(input_ids=x.to(device), attention_mask=m.to(device), max_new_tokens=a.gen_new,
                               do_sample=True, num_return_sequences=a.group, pad_token_id=tok.pad_token_id,
                               use_cache=True, **SAMPLING)
    bat_s = time.perf_counter() - t
    bat_tok = sum(len(trim_completion(r, eng.eos_ids)[0]) for r in o[:, width:].tolist())
    res["throughput"] = {"per_prompt_tok_s": per_tok / per_s, "batched_tok_s": bat_tok / bat_s,
                         "per_prompt_s": per_s, "batched_s": bat_s, "prompts": a.prompts, "n": a.group}
    log(f"hf generate tokens/s: per prompt {per_tok / per_s:.0f}, batched {bat_tok / bat_s:.0f}")
    del eng, o
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def vllm_part(path: Path, cache: Path, device, dtype, ad, a) -> dict:
    import torch

    from vgrout_ray.rollout.base import GenRequest
    from vgrout_ray.rollout.vllm_engine import VLLMEngine
    from vgrout_ray.model.onpolicy_probe import check_engine, learner_probe, split_probe, text_probe_ids

    before = mem(device)
    t = time.perf_counter()
    eng = VLLMEngine(str(path), str(cache), gpu_memory_utilization=a.vllm_mem, max_model_len=a.prompt_len + a.max_new + 64,
                     dtype=dtype)
    res = {"start_s": time.perf_counter() - t, "mem_before": before, "mem_after_start_and_hooks": mem(device)}

    def hook_bytes(worker):
        return sum(U.numel() * U.element_size() + Vh.numel() * Vh.element_size()
                   for h in worker._vgrout_hooks.values() for _, U, Vh in h.parts)
    res["hook_factor_gib"] = eng.llm.collective_rpc(hook_bytes)[0] / 2**30
    log(f"vllm engine up in {res['start_s']:.1f}s, memory {res['mem_after_start_and_hooks']}, "
        f"hook factors {res['hook_factor_gib']:.2f} GiB")
    ids = text_probe_ids(eng.tok, ad.model.get_input_embeddings().weight.shape[0])
    payload = ad.deltas_state()
    payload.update(learner_probe(ad, ids, startup=True))
    deltas, probe = split_probe(payload)
    eng.load_deltas(1, deltas)
    res["probe"] = check_engine(eng, 1, deltas, probe, a.tol)
    res["mem_after_probe"] = mem(device)
    log(f"vllm on-policy probe: {json.dumps(res['probe'])}")
    prompts = [torch.randint(10, 2000, (a.prompt_len,), generator=torch.Generator().manual_seed(i)).tolist()
               for i in range(a.prompts)]
    reqs = [GenRequest(i, p, a.group, a.gen_new, seed=7 + i) for i, p in enumerate(prompts)]
    eng.generate_many(reqs[:1])
    t = time.perf_counter()
    per = [eng.generate(r) for r in reqs]
    per_s = time.perf_counter() - t
    t = time.perf_counter()
    bat = eng.generate_many(reqs)
    bat_s = time.perf_counter() - t
    res["throughput"] = {"per_prompt_tok_s": sum(r.n_tokens for r in per) / per_s,
                         "batched_tok_s": sum(r.n_tokens for r in bat) / bat_s,
                         "same_completions": [r.completions for r in per] == [r.completions for r in bat]}
    log(f"vllm tokens/s: {res['throughput']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model (CPU plumbing check)")
    ap.add_argument("--shape", default="1.7B", choices=sorted(SHAPES))
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--max-new", type=int, default=1024, help="completion length of the learner's longest group")
    ap.add_argument("--gen-new", type=int, default=256, help="tokens per sample in the throughput runs")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--delta-scale", type=float, default=0.02)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--vllm-mem", type=float, default=0.35)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    import torch

    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --tiny for the plumbing check")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        torch.set_num_threads(2)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    cache = work / "svd"
    path = build_model(work, a.shape, a.tiny, dtype)
    name = "gpu_check" if device.type == "cuda" and not a.tiny else "gpu_check_cpu"
    out_dir = a.out or (REPO / "benchmarks" / "results" if name == "gpu_check" else Path("/tmp/vgrout_gpu_check"))
    data = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "model": "tiny" if a.tiny else f"random Qwen3-{a.shape}", "dtype": str(dtype), "args": vars(a) | {
                "workdir": str(work), "out": str(out_dir)}}
    errors = {}
    data["learner"], ad = learner_part(path, cache, device, dtype, a)
    for part, fn in (("hf", hf_part), ("vllm", vllm_part)):
        if part == "vllm" and (a.skip_vllm or importlib.util.find_spec("vllm") is None):
            data[part] = {"skipped": "vllm not importable" if not a.skip_vllm else "--skip-vllm"}
            continue
        try:
            data[part] = fn(path, cache, device, dtype, ad, a)
        except Exception as e:  # report, keep the other part's numbers, exit non-zero at the end
            errors[part] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    data["errors"] = errors
    data["total_s"] = time.perf_counter() - T0
    ln = data["learner"]
    md = [f"# GPU check: {data['model']} on {data['device']} ({data['dtype']})\n",
          f"Learner, one group of {ln['group']} × {a.prompt_len + a.max_new} tokens through the δS adapter "
          f"(SVD {ln['svd_s']:.1f} s):\n",
          "| checkpointing | fwd+bwd s | peak GiB over weights |\n| --- | --- | --- |",
          f"| off | {ln['ckpt_off']['seconds']:.2f} | {ln['ckpt_off']['peak_gib']} |",
          f"| on | {ln['ckpt_on']['seconds']:.2f} | {ln['ckpt_on']['peak_gib']} |\n",
          f"δS grad max rel. diff on vs off {ln['grad_rel_diff']:.2e}; route2 gate grads {ln['gate_grad_rel_diff']:.2e} "
          f"(nonzero: {ln['gate_grads_nonzero']}).\n"]
    for part in ("hf", "vllm"):
        r = data.get(part, {})
        if "skipped" in r or part in errors:
            md.append(f"{part}: {r.get('skipped') or errors[part]}\n")
            continue
        md.append(f"{part} engine: start {r['start_s']:.1f} s; probe {json.dumps(r['probe'])}; "
                  f"tokens/s per prompt {r['throughput']['per_prompt_tok_s']:.0f} vs batched "
                  f"{r['throughput']['batched_tok_s']:.0f}"
                  + (f"; mismatch {r['mismatch']}" if "mismatch" in r else "")
                  + (f"; memory after start+hooks {r['mem_after_start_and_hooks']}, hook factors "
                     f"{r['hook_factor_gib']:.2f} GiB" if part == "vllm" else "") + "\n")
    md.append(f"Total {data['total_s']:.0f} s.\n")
    save_results(out_dir, name, data, "\n".join(md))
    if errors:
        raise SystemExit(f"gpu_check: parts failed: {errors}")


if __name__ == "__main__":
    main()
