"""route2: per-rollout routing by a calibrated-τ cosine gate on δS gradients.

The adapter's gate probe gives c.grad[b] = δS ⊙ g_b (g_b = rollout b's δS gradient). On axes
where δS has moved (|δS| > GATE_EPS) dividing by δS recovers g_b exactly; elsewhere the split
is unknowable and the full gradient stays in δS. A rollout is routed when it is a known hack
(anchor) or cos(g_b, v_grad) > τ, with τ per module the midpoint of EMA(0.9) mean cosines of
hack-anchor and clean-anchor rollouts. Routed contributions go to δS_hack (deleted at deploy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vgrout_ray.util import ema_update

GATE_EPS = 1e-6
EMA_BETA = 0.9
NORM_EPS = 1e-12


def build_route2_anchors(is_student: list[bool], hack_E: list[bool], teacher_only: bool,
                         device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(hack_anchor, clean_anchor) [B] bool: teacher rows, plus hack_E-flagged students unless
    ``teacher_only``; clean is the complement. ``hack_E`` aligns with the leading rows."""
    n = len(is_student)
    is_s = torch.as_tensor(list(is_student), dtype=torch.bool, device=device)
    flags = torch.zeros(n, dtype=torch.bool, device=device)
    if not teacher_only:
        m = min(n, len(hack_E))
        if m:
            flags[:m] = torch.as_tensor(list(hack_E[:m]), dtype=torch.bool, device=device)
    hack_anchor = (~is_s) | flags
    return hack_anchor, ~hack_anchor


def per_rollout_grads(cg: torch.Tensor, delta: torch.Tensor, eps: float = GATE_EPS
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g_b [B, r], reliable [r], safe δS [r]) from gate grads cg = δS ⊙ g_b; g_b is 0 off reliable axes."""
    dS = delta.detach().to(cg.dtype)
    reliable = dS.abs() > eps
    dS_safe = torch.where(reliable, dS, torch.ones_like(dS))
    g_b = torch.where(reliable, cg / dS_safe, torch.zeros_like(cg))
    return g_b, reliable, dS_safe


def gate_cosines(g_b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cos(g_b, v) per rollout [B] (v is unit)."""
    v = v.to(g_b.device, g_b.dtype)
    return (g_b @ v) / g_b.norm(dim=1).clamp_min(NORM_EPS)


@dataclass
class GateResult:
    g_keep: torch.Tensor  # δS grad after removing routed rollouts [r]
    g_route: torch.Tensor  # routed rollouts' contribution -> δS_hack grad [r]
    cos_b: torch.Tensor  # per-rollout gate cosine [B]
    flagged: torch.Tensor  # per-rollout routed mask [B] (float)
    tau: float
    hkgap: float
    resid: float  # cos(g_keep, v): hack-ward leak into the deployed knob


class Route2Gate:
    """Per-module EMA anchor cosines and τ; state survives across steps (and checkpoints)."""

    def __init__(self, beta: float = EMA_BETA, eps: float = GATE_EPS):
        self.beta = beta
        self.eps = eps
        self.ema_hack: dict[str, float] = {}
        self.ema_clean: dict[str, float] = {}
        self.tau: dict[str, float] = {}

    def _ema(self, store: dict[str, float], name: str, x: float) -> None:
        store[name] = ema_update(store.get(name), x, self.beta)

    def update_tau(self, name: str, cos_b: torch.Tensor, hack_anchor: torch.Tensor,
                   clean_anchor: torch.Tensor) -> float:
        """EMA the anchors' mean cosines (only when present) and return τ = their midpoint."""
        if bool(hack_anchor.any()):
            self._ema(self.ema_hack, name, cos_b[hack_anchor].mean().item())
        if bool(clean_anchor.any()):
            self._ema(self.ema_clean, name, cos_b[clean_anchor].mean().item())
        tau = (self.ema_hack.get(name, 0.0) + self.ema_clean.get(name, 0.0)) / 2
        self.tau[name] = tau
        return tau

    def filter(self, name: str, g: torch.Tensor, cg: torch.Tensor, delta: torch.Tensor, v: torch.Tensor,
               hack_anchor: torch.Tensor, clean_anchor: torch.Tensor, *, route_anchors: bool = True) -> GateResult:
        """Split one module's group gradient ``g`` [r] into kept and routed parts. Hack anchors
        are routed whatever their cosine unless ``route_anchors`` is False (they then only
        calibrate τ and the gate decides every row)."""
        g_b, reliable, dS_safe = per_rollout_grads(cg, delta, self.eps)
        cos_b = gate_cosines(g_b, v)
        tau = self.update_tau(name, cos_b, hack_anchor, clean_anchor)
        hkgap = self.ema_hack.get(name, 0.0) - self.ema_clean.get(name, 0.0)
        gate = cos_b > tau
        flagged = ((hack_anchor | gate) if route_anchors else gate).to(cg.dtype)
        g_route = torch.where(reliable, (cg * flagged.unsqueeze(1)).sum(0) / dS_safe,
                              torch.zeros_like(dS_safe)).to(g.dtype)
        g_keep = g - g_route
        vv = v.to(g.device, g.dtype)
        resid = float(g_keep @ vv / g_keep.norm().clamp_min(NORM_EPS))
        return GateResult(g_keep, g_route, cos_b, flagged, tau, hkgap, resid)

    def state_dict(self) -> dict:
        return {"beta": self.beta, "eps": self.eps, "ema_hack": dict(self.ema_hack),
                "ema_clean": dict(self.ema_clean), "tau": dict(self.tau)}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])
        self.eps = float(state["eps"])
        self.ema_hack = {k: float(v) for k, v in state["ema_hack"].items()}
        self.ema_clean = {k: float(v) for k, v in state["ema_clean"].items()}
        self.tau = {k: float(v) for k, v in state["tau"].items()}

    def mean_tau(self) -> float:
        return sum(self.tau.values()) / len(self.tau) if self.tau else math.nan


def haar_unit_dirs(v_grad: dict[str, torch.Tensor], seed: int, device=None) -> dict[str, torch.Tensor]:
    """Seeded per-module Haar-random unit vectors shaped like v_grad (the zero-alignment control);
    the 1-D case of ``algo.random_dirs.random_like``, which also draws v_hack-shaped bases."""
    from vgrout_ray.algo.random_dirs import random_like

    return random_like(v_grad, seed, device)
