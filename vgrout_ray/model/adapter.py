"""δS adapter (AntiPaSTO-style) on every target Linear, as forward hooks.

Per Linear with cached SVD W = U·diag(S)·Vh the hook adds U·((Vh·x) ⊙ (δS + δS_hack)) to the
Linear's own output, so W is never rebuilt on the training path and δS = δS_hack = 0 gives
the base model bit for bit (the added term is exactly zero). Hooks keep HF ``generate``,
``save_pretrained`` and the module names untouched. δS is the kept knob, δS_hack the
quarantine that deploy deletes (``ablate_quarantine``).

route2's gate probe multiplies δS by a ones tensor c of shape [B, 1, r] (one row per
sequence, broadcast over its tokens): c.grad[b] = δS ⊙ Σ_tokens ∂L/∂scale, i.e. δS ⊙ g_b, the
same quantity a per-token gate gives after summing a rollout's tokens.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vgrout_ray.algo.loss import per_token_logps
from vgrout_ray.model.svd_cache import Factors, target_linears


def merge_delta(W: torch.Tensor, U: torch.Tensor, Vh: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """W' = W + U·diag(delta)·Vh, computed in ≥ float32 and returned in W's dtype."""
    ct = torch.promote_types(W.dtype, torch.float32)
    dev = W.device
    upd = (U.to(dev, ct) * delta.to(dev, ct)) @ Vh.to(dev, ct)
    return (W.to(ct) + upd).to(W.dtype)


class SVDAdapter:
    """δS / δS_hack knobs on a model's target Linears. Build with ``attach_adapter``."""

    def __init__(self, model: nn.Module, factors: dict[str, Factors]):
        self.model = model
        layers = target_linears(model)
        missing = sorted(set(factors) - set(layers))
        if missing:
            raise KeyError(f"factors name modules the model lacks: {missing[:3]}")
        self.names: list[str] = [n for n in layers if n in factors]
        self.layers: dict[str, nn.Linear] = {n: layers[n] for n in self.names}
        self.U: dict[str, torch.Tensor] = {}
        self.Vh: dict[str, torch.Tensor] = {}
        self.delta: dict[str, nn.Parameter] = {}
        self.hack: dict[str, nn.Parameter] = {}
        for n in self.names:
            w = self.layers[n].weight
            f = factors[n]
            # factors in the layer's compute dtype (bf16 on GPU); knobs in ≥ fp32 for AdamW
            self.U[n] = f.U.to(w.device, w.dtype).contiguous()
            self.Vh[n] = f.Vh.to(w.device, w.dtype).contiguous()
            pdt = torch.promote_types(w.dtype, torch.float32)
            self.delta[n] = nn.Parameter(torch.zeros(f.rank, device=w.device, dtype=pdt))
            self.hack[n] = nn.Parameter(torch.zeros(f.rank, device=w.device, dtype=pdt))
        self._off = False  # zero_delta: hooks return the base output untouched
        # a model shared by several runs' adapters (learner_host): only the run being served is live
        self.live = True
        self._hack_on = True  # ablate_quarantine turns this off
        self._probe = False
        self._recompute = False  # inside a gradient-checkpoint recompute (model/checkpointing.py)
        self._gates: dict[str, torch.Tensor] = {}
        self._handles = [self.layers[n].register_forward_hook(self._make_hook(n)) for n in self.names]

    # ── forward ──
    def _make_hook(self, name: str):
        def hook(mod: nn.Module, args, out: torch.Tensor) -> torch.Tensor:
            if self._off or not self.live:
                return out
            x = args[0]
            scale = self.delta[name]
            if self._probe and torch.is_grad_enabled():
                if x.dim() < 2:
                    raise ValueError(f"gate probe needs [batch, tokens, d] inputs, got {tuple(x.shape)}")
                if name in self._gates:
                    if not self._recompute:
                        raise RuntimeError("gate probe saw two grad forwards; read gate_grads between them")
                    gate = self._gates[name]  # checkpoint recompute: the same gate, so c.grad fills
                else:
                    gate = torch.ones(*x.shape[:-2], 1, scale.shape[0], device=x.device,
                                      dtype=scale.dtype, requires_grad=True)
                    self._gates[name] = gate
                scale = scale * gate
            if self._hack_on:
                scale = scale + self.hack[name]
            h = F.linear(x, self.Vh[name])
            return out + F.linear(h * scale.to(h.dtype), self.U[name])
        return hook

    def remove(self) -> None:
        """Detach the hooks (the model is the base model again)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # ── parameters ──
    def delta_params(self) -> list[nn.Parameter]:
        return [self.delta[n] for n in self.names]

    def hack_params(self) -> list[nn.Parameter]:
        return [self.hack[n] for n in self.names]

    def zero_grad(self) -> None:
        for p in self.delta_params() + self.hack_params():
            p.grad = None

    def delta_hack_norm(self) -> float:
        """‖δS_hack‖ over all modules (0 exactly for arms that never route)."""
        return float(torch.stack([p.detach().double().pow(2).sum() for p in self.hack_params()]).sum().sqrt())

    # ── modes ──
    @contextmanager
    def ablate_quarantine(self) -> Iterator[None]:
        """Deploy view: δS_hack contributes nothing inside the block (parameters untouched)."""
        prev = self._hack_on
        self._hack_on = False
        try:
            yield
        finally:
            self._hack_on = prev

    @contextmanager
    def zero_delta(self) -> Iterator[None]:
        """Base-model view (π_ref): both knobs off inside the block."""
        prev = self._off
        self._off = True
        try:
            yield
        finally:
            self._off = prev

    @contextmanager
    def gate_probe(self) -> Iterator[None]:
        """route2 probe: the next grad forward multiplies δS by per-sequence ones gates."""
        self._gates = {}
        self._probe = True
        try:
            yield
        finally:
            self._probe = False

    def gate_grads(self) -> dict[str, torch.Tensor]:
        """name -> c.grad as [B, r] (= δS ⊙ per-sequence grad); zeros where no grad flowed."""
        out = {}
        for n, g in self._gates.items():
            gr = g.grad if g.grad is not None else torch.zeros_like(g)
            out[n] = gr.reshape(-1, gr.shape[-1])
        return out

    def clear_gates(self) -> None:
        self._gates = {}

    @torch.no_grad()
    def ref_logprobs(self, input_ids: torch.Tensor, n_completion: int,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """π_ref log-probs of the last ``n_completion`` tokens: a no-grad forward with δS zeroed."""
        with self.zero_delta():
            logits = self.model(input_ids, attention_mask=attention_mask, logits_to_keep=n_completion + 1,
                                use_cache=False).logits[:, :-1]
        return per_token_logps(logits, input_ids[:, -n_completion:])

    # ── state for weight sync / checkpoints ──
    def deltas_state(self) -> dict[str, torch.Tensor]:
        """``{name}.delta_S`` / ``{name}.delta_S_hack`` -> CPU float32 copies (what weight sync ships)."""
        out = {}
        for n in self.names:
            out[f"{n}.delta_S"] = self.delta[n].detach().to("cpu", torch.float32).clone()
            out[f"{n}.delta_S_hack"] = self.hack[n].detach().to("cpu", torch.float32).clone()
        return out

    @torch.no_grad()
    def load_deltas(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a ``deltas_state`` dict in; every key must match (names and shapes)."""
        want = {f"{n}.{k}" for n in self.names for k in ("delta_S", "delta_S_hack")}
        got = set(state)
        if want != got:
            raise KeyError(f"deltas mismatch: missing {sorted(want - got)[:3]}, unexpected {sorted(got - want)[:3]}")
        for n in self.names:
            for k, p in (("delta_S", self.delta[n]), ("delta_S_hack", self.hack[n])):
                t = state[f"{n}.{k}"]
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"{n}.{k}: shape {tuple(t.shape)} != {tuple(p.shape)}")
                p.copy_(t.to(p.device, p.dtype))

    @torch.no_grad()
    def merged_weights(self, include_hack: bool) -> dict[str, torch.Tensor]:
        """HF parameter name -> W + U·diag(δS [+ δS_hack])·Vh (what a rollout engine loads)."""
        out = {}
        for n in self.names:
            d = self.delta[n] + self.hack[n] if include_hack else self.delta[n]
            out[f"{n}.weight"] = merge_delta(self.layers[n].weight, self.U[n], self.Vh[n], d)
        return out


def attach_adapter(model: nn.Module, factors: dict[str, Factors]) -> SVDAdapter:
    """Freeze ``model`` and hook a zero-initialised δS / δS_hack adapter onto its target Linears."""
    model.requires_grad_(False)
    return SVDAdapter(model, factors)
