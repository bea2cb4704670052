"""Rollout actors: generate G samples per prompt with the learner's current δS.

Weight sync ships δS / δS_hack (a few MB, versioned), never merged weights: the actor holds
the frozen base weights and the SVD factors of every target Linear (from the same cache as
the learner) and rebuilds W' = W + U·diag(δS [+ δS_hack])·Vh itself. Two views exist: the
training view (δS + δS_hack) and the deploy view (δS only, the quarantine ablated) used for
deploy eval and ``rollout_ablate_frac``. Every generation carries the δS version it used.

Backends: ``hf`` (transformers ``generate``, below) and ``vllm`` (rollout_vllm.py).

The sampler must be the policy the learner scores. Merging δS into weights stored in bf16
loses most of a small update to rounding, so the hf engine by default does not merge: it
hooks the learner's own adapter onto its model (``delta_apply="hook"``) and computes exactly
the learner's function, in the learner's dtype. Every generation returns the per-token
log-probs of its sampled tokens under the engine's raw (untempered) distribution, which the
learner compares with its own on the same tokens (the mismatch columns of rows.parquet).
"""
from __future__ import annotations

import abc
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import ray
import torch
from loguru import logger

from ..model.adapter import merge_delta
from ..model.svd_cache import load_or_compute_factors, target_linears

# The seed's sampling settings (Qwen3 non-thinking card, T=0.7 as the upstream benchmark).
SAMPLING = dict(temperature=0.7, top_p=1.0, top_k=20, min_p=0.0, repetition_penalty=1.0)


@dataclass
class GenRequest:
    """Sample ``n`` completions of one tokenized prompt; ``seed`` makes the draw reproducible."""

    key: object
    prompt_ids: list[int]
    n: int
    max_new: int
    seed: int
    ablate: bool = False


@dataclass
class GenResult:
    key: object
    version: int
    completions: list[list[int]]  # token ids up to and including EOS (when emitted)
    finished: list[bool]
    seconds: float
    n_tokens: int = 0
    meta: dict = field(default_factory=dict)
    # per completion, log p(token) of each kept token under the engine's raw (T=1) distribution
    logprobs: list[list[float]] | None = None


DELTA_APPLY = ("hook", "merge")


def resolve_dtype(dtype, cuda: bool) -> torch.dtype:
    """Engine dtype: an explicit torch dtype or name, else bf16 on CUDA and fp32 on CPU (the learner's)."""
    if dtype is None:
        return torch.bfloat16 if cuda else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def trim_completion(ids: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Cut a generated row after its first EOS (padding follows it); report whether it finished."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i + 1], True
    return ids, False


class MergingEngine(abc.ABC):
    """What both engines share: base W, SVD factors, the synced δS (or full views), and the
    merged W' of the requested view, pushed into the engine only when (version, view) changes.
    Subclasses set ``base``, ``U``, ``Vh``, ``device`` and implement ``_push``."""

    base: dict[str, torch.Tensor]
    U: dict[str, torch.Tensor]
    Vh: dict[str, torch.Tensor]
    device: torch.device

    def _init_sync_state(self) -> None:
        self.deltas: dict[str, torch.Tensor] | None = None
        self.views: dict[bool, dict[str, torch.Tensor]] | None = None
        self.version = 0
        self._applied: tuple[int, bool] | None = None  # None: the engine holds its base weights

    def load_deltas(self, version: int, deltas: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.base if f"{n}.delta_S" not in deltas or f"{n}.delta_S_hack" not in deltas]
        if missing:
            raise KeyError(f"sync payload lacks modules {missing[:3]}")
        self.deltas = {k: v.to(self.device, torch.float32) for k, v in deltas.items()}
        self.views = None
        self.version = version
        self._applied = (-1, False)

    def load_views(self, version: int, views: dict[bool, dict[str, torch.Tensor]]) -> None:
        """Full-weight sync (benchmark baseline): merged W' per view {ablate: {hf name: W'}}."""
        self.views = {ab: {k: v.to(self.device) for k, v in w.items()} for ab, w in views.items()}
        self.deltas = None
        self.version = version
        self._applied = (-1, False)

    @torch.no_grad()
    def merged(self, ablate: bool) -> dict[str, torch.Tensor]:
        """HF name -> W' of the view (deploy view = δS only when ``ablate``)."""
        if self.views is not None:
            return self.views.get(ablate, self.views[False])
        out = {}
        for n in self.base:
            if self.deltas is None:
                out[f"{n}.weight"] = self.base[n]
                continue
            d = self.deltas[f"{n}.delta_S"]
            if not ablate:
                d = d + self.deltas[f"{n}.delta_S_hack"]
            out[f"{n}.weight"] = merge_delta(self.base[n], self.U[n], self.Vh[n], d)
        return out

    def _apply(self, ablate: bool) -> None:
        if self._applied is None or self._applied == (self.version, ablate):
            return
        self._push(self.merged(ablate))
        self._applied = (self.version, ablate)

    @abc.abstractmethod
    def _push(self, named: dict[str, torch.Tensor]) -> None:
        """Load merged target weights (HF names) into the engine."""

    def merged_state(self, ablate: bool) -> dict[str, torch.Tensor]:
        """Merged target weights of a view (tests and benchmarks compare engines with it)."""
        return {k: v.detach().cpu().clone() for k, v in self.merged(ablate).items()}


class HFEngine(MergingEngine):
    """transformers generation. ``delta_apply="hook"`` (default): the learner's adapter hooks on
    the base weights, δS applied exactly as the learner applies it. ``"merge"``: W' merged into
    the weights per (version, view), the old behaviour (kept as a measured baseline). Full-weight
    sync (``load_views``) always pushes the merged views and turns the hooks off."""

    backend = "hf"

    def __init__(self, model_path: str, svd_cache: str, device: str | None = None, threads: int | None = None,
                 dtype=None, delta_apply: str = "hook"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..model.adapter import attach_adapter

        if delta_apply not in DELTA_APPLY:
            raise ValueError(f"delta_apply must be one of {DELTA_APPLY}, got {delta_apply!r}")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(dtype, self.device.type == "cuda")
        self.delta_apply = delta_apply
        self.tok = AutoTokenizer.from_pretrained(model_path)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=self.dtype, attn_implementation="sdpa").to(self.device)
        self.model.eval()
        self.model.requires_grad_(False)
        factors = load_or_compute_factors(self.model, model_path, svd_cache)
        self.layers = {n: l for n, l in target_linears(self.model).items() if n in factors}
        self.base = {n: l.weight.detach().clone() for n, l in self.layers.items()}
        self.U = {n: factors[n].U.to(self.device) for n in self.layers}
        self.Vh = {n: factors[n].Vh.to(self.device) for n in self.layers}
        # the learner's adapter (zero δS until the first sync): used in hook mode, off otherwise
        self.adapter = attach_adapter(self.model, {n: factors[n] for n in self.layers})
        self._merged_in = False  # the layers hold merged weights, not the base
        self._init_sync_state()
        gc = self.model.generation_config
        self.eos_ids = {int(e) for e in ([gc.eos_token_id] if isinstance(gc.eos_token_id, int)
                                         else (gc.eos_token_id or []))}
        if self.tok.eos_token_id is not None:
            self.eos_ids.add(int(self.tok.eos_token_id))

    def load_deltas(self, version: int, deltas: dict[str, torch.Tensor]) -> None:
        super().load_deltas(version, deltas)
        self.adapter.load_deltas(deltas)

    @torch.no_grad()
    def _push(self, named: dict[str, torch.Tensor]) -> None:
        for n, layer in self.layers.items():
            layer.weight.copy_(named[f"{n}.weight"])
        self._merged_in = True

    @torch.no_grad()
    def _restore_base(self) -> None:
        if self._merged_in:
            for n, layer in self.layers.items():
                layer.weight.copy_(self.base[n])
            self._merged_in = False
            self._applied = (-1, False)

    @contextmanager
    def view(self, ablate: bool):
        """The model as the (version, view) policy inside the block."""
        if self.views is not None or self.delta_apply == "merge":
            self._apply(ablate)
            with self.adapter.zero_delta():
                yield
            return
        self._restore_base()
        with (self.adapter.ablate_quarantine() if ablate else nullcontext()):
            yield

    @torch.no_grad()
    def generate(self, req: GenRequest) -> GenResult:
        t0 = time.perf_counter()
        ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
        torch.manual_seed(req.seed)  # one seed per (step, prompt): identical draws on replay / resume
        with self.view(req.ablate):
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=req.max_new, do_sample=True,
                num_return_sequences=req.n, pad_token_id=self.tok.pad_token_id, use_cache=True,
                return_dict_in_generate=True, output_logits=True, **SAMPLING)
        seq = out.sequences[:, ids.shape[1]:]
        lps = sampled_logprobs(out.logits, seq)
        comps, fin, lp = [], [], []
        for row, row_lp in zip(seq.tolist(), lps.tolist()):
            c, f = trim_completion(row, self.eos_ids)
            comps.append(c)
            fin.append(f)
            lp.append(row_lp[:len(c)])
        return GenResult(req.key, self.version, comps, fin, time.perf_counter() - t0,
                         n_tokens=sum(len(c) for c in comps), logprobs=lp)

    @torch.no_grad()
    def prompt_logprobs(self, ids: list[int], ablate: bool = False) -> list[float]:
        """log p(ids[t] | ids[:t]) for t >= 1 under the current view (for checks)."""
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        with self.view(ablate):
            logp = torch.log_softmax(self.model(x).logits[0, :-1].float(), -1)
        return logp.gather(1, x[0, 1:].unsqueeze(1)).squeeze(1).tolist()


def sampled_logprobs(step_logits, seq: torch.Tensor) -> torch.Tensor:
    """[n, T] log-softmax of each step's raw logits at the token sampled there (one step at a time,
    so no [n, T, V] float32 tensor is built)."""
    out = torch.empty(seq.shape, dtype=torch.float32, device=seq.device)
    for t, lg in enumerate(step_logits[:seq.shape[1]]):
        out[:, t] = torch.log_softmax(lg.float(), -1).gather(1, seq[:, t:t + 1]).squeeze(1)
    return out


def make_engine(backend: str, model_path: str, svd_cache: str, **kw):
    if backend == "hf":
        return HFEngine(model_path, svd_cache, device=kw.get("device"), threads=kw.get("threads"),
                        dtype=kw.get("dtype"), delta_apply=kw.get("delta_apply", "hook"))
    if backend == "vllm":
        from .rollout_vllm import VLLMEngine

        return VLLMEngine(model_path, svd_cache, **kw)
    raise ValueError(f"rollout.backend must be hf or vllm, got {backend!r}")


class RolloutActorImpl:
    """One generation engine behind a Ray actor: sync δS, generate, report its version."""

    def __init__(self, backend: str, model_path: str, svd_cache: str, engine_kw: dict | None = None):
        self.engine = make_engine(backend, model_path, svd_cache, **(engine_kw or {}))
        self.syncs: list[dict] = []

    def ready(self) -> dict:
        import os
        return {"backend": self.engine.backend, "version": self.engine.version, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}

    def sync(self, version: int, deltas: dict[str, torch.Tensor], sent_at: float | None = None) -> dict:
        """Load a new δS version; returns bytes received and the seconds the merge/load took."""
        t0 = time.perf_counter()
        self.engine.load_deltas(version, deltas)
        nbytes = sum(t.numel() * t.element_size() for t in deltas.values())
        info = {"version": version, "bytes": nbytes, "load_s": time.perf_counter() - t0,
                "latency_s": (time.time() - sent_at) if sent_at else None}
        self.syncs.append(info)
        return info

    def sync_full(self, version: int, views: dict, sent_at: float | None = None) -> dict:
        """Full-weight sync (``rollout.sync=full``, the benchmark baseline): merged W' per view."""
        t0 = time.perf_counter()
        self.engine.load_views(version, views)
        nbytes = sum(t.numel() * t.element_size() for w in views.values() for t in w.values())
        info = {"version": version, "bytes": nbytes, "load_s": time.perf_counter() - t0,
                "latency_s": (time.time() - sent_at) if sent_at else None}
        self.syncs.append(info)
        return info

    def generate(self, req: GenRequest) -> GenResult:
        return self.engine.generate(req)

    def generate_many(self, reqs: list[GenRequest]) -> list[GenResult]:
        return [self.engine.generate(r) for r in reqs]

    def merged_state(self, ablate: bool) -> dict:
        return self.engine.merged_state(ablate)

    def prompt_logprobs(self, ids: list[int], ablate: bool = False) -> list[float]:
        return self.engine.prompt_logprobs(ids, ablate)

    def version(self) -> int:
        return self.engine.version


RolloutActor = ray.remote(max_restarts=0)(RolloutActorImpl)


def log_sync(infos: list[dict]) -> None:
    tot = sum(i["bytes"] for i in infos)
    lat = max((i["latency_s"] or 0.0) for i in infos) if infos else 0.0
    logger.debug(f"δS sync v{infos[0]['version'] if infos else '?'}: {tot / 1e6:.2f} MB to {len(infos)} "
                 f"actor(s), latency {lat * 1000:.0f} ms")
