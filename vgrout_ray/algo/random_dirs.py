"""Seeded random directions shaped like a hack direction: the specificity controls.

``random_like(dirs, seed)`` replaces every module's direction by a Haar-random one of the same
shape: a 1-D unit vector for route2's v_grad, a [k, r] basis with k orthonormal rows for
v_hack (erase / route), so a control arm removes (or routes) as many axes as the real one, in
directions that carry no information about the hack. Modules are drawn in sorted-name order
from one generator, so the draw depends on the seed and the shapes only, never on dict order.
"""
from __future__ import annotations

import torch

NORM_EPS = 1e-12


def haar_basis(k: int, r: int, g: torch.Generator) -> torch.Tensor:
    """[k, r] with orthonormal rows, Haar-distributed (QR of a Gaussian, signs fixed by R's diagonal)."""
    if not 1 <= k <= r:
        raise ValueError(f"haar_basis: need 1 <= k <= r, got k={k} r={r}")
    a = torch.randn(r, k, generator=g, dtype=torch.float64)
    q, rr = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(rr)).where(torch.diagonal(rr) != 0, torch.ones(k, dtype=q.dtype))
    return q.T.contiguous().float()


def random_like(dirs: dict[str, torch.Tensor], seed: int, device=None) -> dict[str, torch.Tensor]:
    """Per module, a seeded random direction of the same shape: unit vector (1-D) or a basis of
    orthonormal rows (2-D [k, r]). Same seed and shapes → the same tensors."""
    if seed is None or int(seed) < 0:
        raise ValueError(f"random_like: seed must be an int >= 0, got {seed!r}")
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for name in sorted(dirs):
        v = dirs[name]
        if v.dim() == 1:
            d = torch.randn(v.shape, generator=g)
            d = d / d.norm().clamp_min(NORM_EPS)
        elif v.dim() == 2:
            d = haar_basis(v.shape[0], v.shape[1], g)
        else:
            raise ValueError(f"random_like: {name} has shape {tuple(v.shape)}; want [r] or [k, r]")
        out[name] = d.to(device if device is not None else v.device, v.dtype)
    return out
