"""erase / route gradient surgery against its defining identities."""
from __future__ import annotations

import math

import pytest
import torch

from vgrout_ray.algo.projection import (cos_pre_from_grads, hackward_cos, project_grads, project_module,
                                        span_residual)


def _basis(k, r, seed=0):
    q, _ = torch.linalg.qr(torch.randn(r, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.T.contiguous()  # [k, r] orthonormal rows


def _g(r, seed=1):
    return torch.randn(r, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_one_sided_erase_removes_hackward_part():
    V, g = _basis(4, 50), _g(50)
    c = V @ g
    assert (c > 0).any() and (c < 0).any()  # the gate matters for this draw
    p = project_module(g, V, gate_mode="one_sided")
    assert torch.allclose(torch.relu(V @ p.g_proj), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(p.g_proj, g - torch.relu(c) @ V, atol=1e-14)
    assert torch.allclose(V @ p.g_proj, torch.minimum(c, torch.zeros_like(c)), atol=1e-12)  # anti-hack kept
    assert p.cos_pre == pytest.approx(float(torch.relu(c).norm() / g.norm()))
    assert p.cos_post == pytest.approx(0.0, abs=1e-12) and p.fired
    assert torch.equal(g, _g(50))  # input untouched


def test_preserve_magnitude_keeps_norm_and_direction():
    V, g = _basis(3, 40), _g(40, seed=3)
    a = project_module(g, V, preserve_magnitude=False)
    b = project_module(g, V, preserve_magnitude=True)
    assert b.g_proj.norm().item() == pytest.approx(g.norm().item(), rel=1e-12)
    assert torch.allclose(b.g_proj / b.g_proj.norm(), a.g_proj / a.g_proj.norm(), atol=1e-14)
    assert torch.allclose(b.removed, a.removed)  # the routed part is the unscaled removal


def test_gate_modes_and_overshoot():
    V, g = _basis(3, 30), _g(30, seed=4)
    c = V @ g
    nog = project_module(g, V, gate_mode="no_gate")
    assert torch.allclose(V @ nog.g_proj, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    rev = project_module(g, V, gate_mode="reverse")
    assert torch.allclose(V @ rev.g_proj, -c, atol=1e-12)
    ov = project_module(g, V, gate_mode="one_sided", overshoot=1.1)
    assert torch.allclose(V @ ov.g_proj, c - 1.1 * torch.relu(c), atol=1e-12)
    with pytest.raises(ValueError):
        project_module(g, V, gate_mode="bogus")


def test_not_fired_when_grad_points_away():
    V = _basis(2, 20)
    g = -(V[0] + 0.5 * V[1])  # strictly anti-hack in span V
    p = project_module(g, V)
    assert not p.fired and p.cos_pre == 0.0
    assert torch.allclose(p.g_proj, g) and torch.equal(p.removed, torch.zeros_like(g))


def test_route_parks_removed_in_span_and_parts_sum_to_raw():
    Vs = {"a": _basis(4, 64, seed=5), "b": _basis(2, 32, seed=6)}
    grads = {"a": _g(64, seed=7), "b": _g(32, seed=8), "c": _g(16, seed=9)}
    new, hack, diag = project_grads(grads, Vs, preserve_magnitude=False, route=True)
    for n in ("a", "b"):
        assert span_residual(hack[n], Vs[n]) < 1e-12
        assert torch.allclose(new[n] + hack[n], grads[n], atol=1e-14)
    assert "c" not in hack and torch.equal(new["c"], grads["c"])  # no basis -> untouched
    pre = [hackward_cos(grads[n], Vs[n]) for n in ("a", "b")]
    assert diag["mean_cos_pre"] == pytest.approx(sum(pre) / 2)
    assert diag["mean_cos_post"] == pytest.approx(0.0, abs=1e-12)
    assert diag["frac_fired"] == sum(x > 1e-6 for x in pre) / 2
    new_e, hack_e, _ = project_grads(grads, Vs, preserve_magnitude=False, route=False)
    assert hack_e == {} and all(torch.equal(new_e[n], new[n]) for n in new)


def test_diag_over_v_hack_modules_only_and_empty():
    _, _, d = project_grads({"x": _g(8)}, {}, preserve_magnitude=True, route=True)
    assert math.isnan(d["mean_cos_pre"]) and math.isnan(d["frac_fired"])
    assert math.isnan(cos_pre_from_grads({}, {"a": _basis(2, 8)}))
    V = _basis(2, 8)
    g = _g(8, seed=11)
    assert cos_pre_from_grads({"a": g, "z": g}, {"a": V}) == pytest.approx(float(torch.relu(V @ g).norm() / g.norm()))


def test_float32_grad_with_float32_basis():
    V, g = _basis(5, 128).float(), _g(128).float()
    p = project_module(g, V)
    assert p.g_proj.dtype == torch.float32
    assert torch.relu(V @ p.g_proj).max().item() < 1e-6
