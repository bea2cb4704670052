"""The hf rollout engine: transformers ``generate`` with the learner's adapter hooked on.

The sampler must be the policy the learner scores. Merging δS into weights stored in bf16
loses most of a small update to rounding, so by default the engine does not merge: it hooks
the learner's own adapter onto its model (``delta_apply="hook"``) and computes exactly the
learner's function, in the learner's dtype. Every generation returns the per-token log-probs
of its sampled tokens under the engine's raw (untempered) distribution, which the learner
compares with its own on the same tokens (the mismatch columns of rows.parquet).
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext

import torch
from loguru import logger

from vgrout_ray.model.svd_cache import load_or_compute_factors, shipped_factors, target_linears
from vgrout_ray.rollout.base import DELTA_APPLY, SAMPLING, GenRequest, GenResult, MergingEngine, resolve_dtype, trim_completion
from vgrout_ray.util import load_tokenizer


class HFEngine(MergingEngine):
    """transformers generation. ``delta_apply="hook"`` (default): the learner's adapter hooks on
    the base weights, δS applied exactly as the learner applies it. ``"merge"``: W' merged into
    the weights per (version, view), the old behaviour (kept as a measured baseline). Full-weight
    sync (``load_views``) always pushes the merged views and turns the hooks off."""

    backend = "hf"

    def __init__(self, model_path: str, svd_cache: str, device: str | None = None, threads: int | None = None,
                 dtype=None, delta_apply: str = "hook", base=None, factors: dict | None = None):
        """``base``: a ``model.base_store.BaseBundle`` to build the model from (hook mode maps its
        weights read-only; merge mode copies them), or None to read the checkpoint."""
        from transformers import AutoModelForCausalLM

        from vgrout_ray.model.adapter import attach_adapter
        from vgrout_ray.model.base_store import build_model, local_model_dir

        if delta_apply not in DELTA_APPLY:
            raise ValueError(f"delta_apply must be one of {DELTA_APPLY}, got {delta_apply!r}")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(dtype, self.device.type == "cuda")
        self.delta_apply = delta_apply
        self.tok = load_tokenizer(model_path if base is None else local_model_dir(base))
        # a shared base is read-only: only hook mode (which never writes the weights) maps it
        self.shared_base = base is not None and delta_apply == "hook"
        if base is None:
            t0 = time.perf_counter()
            self.model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=self.dtype, attn_implementation="sdpa").to(self.device)
            logger.info(f"hf engine: {model_path} loaded on {self.device} in {time.perf_counter() - t0:.1f}s")
            factors = (shipped_factors(factors) if factors is not None
                       else load_or_compute_factors(self.model, model_path, svd_cache))
        else:
            self.model, factors = build_model(base, self.device, self.dtype, writable=not self.shared_base)
        self.model.eval()
        self.model.requires_grad_(False)
        self.layers = {n: l for n, l in target_linears(self.model).items() if n in factors}
        # the unmerged weights, restored after a merge. Hook mode never writes the layers, so its
        # base is the layers' own tensors (a copy is taken only before a full-weight sync writes
        # them); merge mode writes them every sync and keeps a private copy.
        self.base = {n: l.weight.detach() if delta_apply == "hook" else l.weight.detach().clone()
                     for n, l in self.layers.items()}
        self._base_is_live = delta_apply == "hook"
        # the learner's adapter (zero δS until the first sync): used in hook mode, off otherwise
        self.adapter = attach_adapter(self.model, {n: factors[n] for n in self.layers})
        del factors
        # one copy of the factors, in the model dtype: the adapter's (merges promote to fp32 per use)
        self.U, self.Vh = self.adapter.U, self.adapter.Vh
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
        if self.shared_base:
            raise RuntimeError("this engine maps the shared base weights read-only: full-weight sync would write "
                               "into them (use rollout.sync=delta, or build the engine without base=)")
        if self._base_is_live:  # the first write: keep the unmerged weights to restore later
            self.base = {n: w.clone() for n, w in self.base.items()}
            self._base_is_live = False
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
