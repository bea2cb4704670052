"""erase / route: remove (or park in the quarantine) the hack-ward part of each δS gradient.

Per module with V [k, r] (orthonormal rows spanning v_hack) and g = δS.grad:
c = V·g; c_use = relu(c) (one_sided, only hack-ward components) | c (no_gate) | 2c (reverse);
removed = overshoot·c_useᵀV; g ← g − removed (rescaled to ‖g‖ under preserve_magnitude).
route parks ``removed`` in δS_hack.grad, so the hack-ward update lands in the knob deploy
deletes. Modules absent from v_hack are left alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

GateMode = Literal["one_sided", "no_gate", "reverse"]
FIRE_EPS = 1e-6
NORM_EPS = 1e-12


@dataclass
class ModuleProjection:
    g_proj: torch.Tensor  # the kept gradient
    removed: torch.Tensor  # what was taken out (lies in span V)
    cos_pre: float
    cos_post: float
    fired: bool


def hackward_cos(g: torch.Tensor, V: torch.Tensor) -> float:
    """‖relu(V·g)‖ / ‖g‖: the share of g pointing hack-ward within span V."""
    V = V.to(g.device, g.dtype)
    return float(torch.relu(V @ g).norm() / g.norm().clamp_min(NORM_EPS))


def project_module(g: torch.Tensor, V: torch.Tensor, *, gate_mode: GateMode = "one_sided",
                   overshoot: float = 1.0, preserve_magnitude: bool = False) -> ModuleProjection:
    """One module's erase step (pure; ``g`` is not modified)."""
    V = V.to(g.device, g.dtype)
    c = V @ g
    if gate_mode == "one_sided":
        c_use = torch.relu(c)
    elif gate_mode == "no_gate":
        c_use = c
    elif gate_mode == "reverse":
        c_use = 2.0 * c
    else:
        raise ValueError(f"unknown gate_mode {gate_mode!r}")
    removed = overshoot * (c_use @ V)
    g_proj = g - removed
    if preserve_magnitude:
        g_proj = g_proj * (g.norm() / g_proj.norm().clamp_min(NORM_EPS))
    g_norm = g.norm().clamp_min(NORM_EPS)
    cos_pre = float(torch.relu(c).norm() / g_norm)
    cos_post = float(torch.relu(V @ g_proj).norm() / g_proj.norm().clamp_min(NORM_EPS))
    return ModuleProjection(g_proj, removed, cos_pre, cos_post, cos_pre > FIRE_EPS)


def project_grads(grads: dict[str, torch.Tensor], v_hack: dict[str, torch.Tensor], *,
                  preserve_magnitude: bool, route: bool, gate_mode: GateMode = "one_sided",
                  overshoot: float = 1.0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Project every module's grad that has a v_hack basis.

    Returns (new δS grads, δS_hack grads (route only, else empty), diag) where diag has
    mean_cos_pre, mean_cos_post, frac_fired over the projected modules (NaN if none).
    """
    new = dict(grads)
    hack: dict[str, torch.Tensor] = {}
    pre, post, fired = [], [], []
    for name, g in grads.items():
        if g is None or name not in v_hack:
            continue
        p = project_module(g, v_hack[name], gate_mode=gate_mode, overshoot=overshoot,
                           preserve_magnitude=preserve_magnitude)
        new[name] = p.g_proj
        if route:
            hack[name] = p.removed
        pre.append(p.cos_pre)
        post.append(p.cos_post)
        fired.append(float(p.fired))
    mean = (lambda xs: sum(xs) / len(xs) if xs else math.nan)
    return new, hack, {"mean_cos_pre": mean(pre), "mean_cos_post": mean(post), "frac_fired": mean(fired)}


def cos_pre_from_grads(grads: dict[str, torch.Tensor], v_hack: dict[str, torch.Tensor]) -> float:
    """Mean over modules (with a basis) of ‖relu(V·g)‖/‖g‖; NaN for an empty dict."""
    vals = [hackward_cos(g, v_hack[n]) for n, g in grads.items() if g is not None and n in v_hack]
    return sum(vals) / len(vals) if vals else math.nan


def span_residual(g_hack: torch.Tensor, V: torch.Tensor) -> float:
    """‖g − VᵀV·g‖ / ‖g‖: how far a routed gradient strays outside span V (R3 check)."""
    V = V.to(g_hack.device, g_hack.dtype)
    r = g_hack - V.T @ (V @ g_hack)
    return float(r.norm() / g_hack.norm().clamp_min(NORM_EPS))
