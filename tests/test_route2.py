"""route2: exact per-rollout gradients from the gate probe, the τ EMA, anchors, Haar control."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from vgrout_ray.algo.loss import completion_logps
from vgrout_ray.algo.route2 import (EMA_BETA, GATE_EPS, Route2Gate, build_route2_anchors, gate_cosines,
                                    haar_unit_dirs, per_rollout_grads)
from vgrout_ray.model.adapter import attach_adapter
from vgrout_ray.model.svd_cache import load_or_compute_factors


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _adapted(tiny, root, dtype=torch.float64):
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    ad = attach_adapter(model, load_or_compute_factors(model, tiny, root))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n in ad.names:
            d = 0.05 * torch.randn(ad.delta[n].shape, generator=g, dtype=torch.float64)
            d[::3] = 0.0  # unreliable axes: the split there is unknowable and must stay out
            ad.delta[n].copy_(d)
            ad.hack[n].copy_(0.02 * torch.randn(ad.hack[n].shape, generator=g, dtype=torch.float64))
    return model, ad


def _row_loss(model, ids, n_c, A):
    lp = completion_logps(model, ids, n_c)
    return -(lp * A[:, None]).sum() / 100.0


def test_per_rollout_grads_are_exact(tiny, tmp_path):
    model, ad = _adapted(tiny, tmp_path)
    ids = torch.randint(5, 1000, (3, 20), generator=torch.Generator().manual_seed(1))
    A = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    with ad.gate_probe():
        loss = _row_loss(model, ids, 8, A)
    loss.backward()
    cg = ad.gate_grads()
    batch = {n: ad.delta[n].grad.clone() for n in ad.names}
    per = {n: per_rollout_grads(cg[n], ad.delta[n]) for n in ad.names}
    for n in ad.names:
        g_b, reliable, _ = per[n]
        assert g_b.shape == (3, ad.delta[n].shape[0])
        assert torch.equal(reliable, ad.delta[n].detach().abs() > GATE_EPS) and (~reliable).any()
        assert torch.allclose(g_b.sum(0)[reliable], batch[n][reliable], rtol=1e-9, atol=1e-14)
        assert torch.equal(g_b[:, ~reliable], torch.zeros_like(g_b[:, ~reliable]))
    # each row's g_b equals that rollout's own gradient from a separate forward/backward
    for b in range(3):
        ad.zero_grad()
        _row_loss(model, ids[b:b + 1], 8, A[b:b + 1]).backward()
        for n in ad.names[::4]:
            g_b, reliable, _ = per[n]
            assert torch.allclose(g_b[b][reliable], ad.delta[n].grad[reliable], rtol=1e-7, atol=1e-13)


def test_gate_probe_leaves_forward_and_grads_unchanged(tiny, tmp_path):
    model, ad = _adapted(tiny, tmp_path)
    ids = torch.randint(5, 1000, (2, 16), generator=torch.Generator().manual_seed(2))
    A = torch.tensor([1.0, -1.0], dtype=torch.float64)
    l0 = _row_loss(model, ids, 6, A)
    l0.backward()
    plain = {n: (ad.delta[n].grad.clone(), ad.hack[n].grad.clone()) for n in ad.names}
    ad.zero_grad()
    with ad.gate_probe():
        l1 = _row_loss(model, ids, 6, A)
    assert torch.equal(l0, l1)
    l1.backward()
    for n in ad.names:
        assert torch.allclose(ad.delta[n].grad, plain[n][0], rtol=1e-12, atol=1e-16)
        assert torch.allclose(ad.hack[n].grad, plain[n][1], rtol=1e-12, atol=1e-16)


def test_anchors():
    ha, ca = build_route2_anchors([True, True, True, False], [False, True, False], teacher_only=False)
    assert ha.tolist() == [False, True, False, True] and torch.equal(ca, ~ha)
    ha, _ = build_route2_anchors([True, True, True, False], [False, True, False, False], teacher_only=True)
    assert ha.tolist() == [False, False, False, True]
    ha, _ = build_route2_anchors([True, True], [], teacher_only=False)
    assert ha.tolist() == [False, False]


def test_tau_ema_update():
    gate = Route2Gate()
    cos = torch.tensor([0.4, 0.2, -0.1, 0.0])
    ha = torch.tensor([True, True, False, False])
    tau = gate.update_tau("m", cos, ha, ~ha)
    assert gate.ema_hack["m"] == pytest.approx(0.3) and gate.ema_clean["m"] == pytest.approx(-0.05)
    assert tau == pytest.approx(0.125)
    cos2 = torch.tensor([0.8, 0.6, 0.1, 0.3])
    tau2 = gate.update_tau("m", cos2, ha, ~ha)
    h = EMA_BETA * 0.3 + (1 - EMA_BETA) * 0.7
    c = EMA_BETA * -0.05 + (1 - EMA_BETA) * 0.2
    assert gate.ema_hack["m"] == pytest.approx(h) and gate.ema_clean["m"] == pytest.approx(c)
    assert tau2 == pytest.approx((h + c) / 2)
    # no hack anchor this time: the hack EMA holds, only the clean one moves
    none = torch.zeros(4, dtype=torch.bool)
    gate.update_tau("m", cos2, none, ~none)
    assert gate.ema_hack["m"] == pytest.approx(h)
    assert gate.ema_clean["m"] == pytest.approx(EMA_BETA * c + (1 - EMA_BETA) * cos2.mean().item())
    # a module seen only with clean anchors: missing hack EMA counts as 0
    assert gate.update_tau("n", cos, none, ~none) == pytest.approx(cos.mean().item() / 2)
    st = gate.state_dict()
    g2 = Route2Gate()
    g2.load_state_dict(st)
    assert g2.state_dict() == st and g2.mean_tau() == pytest.approx(gate.mean_tau())


def test_filter_routes_anchors_and_above_tau():
    gen = torch.Generator().manual_seed(3)
    r, B = 12, 4
    delta = torch.randn(r, generator=gen, dtype=torch.float64)
    delta[:3] = 0.0
    g_b_true = torch.randn(B, r, generator=gen, dtype=torch.float64)
    v = torch.randn(r, generator=gen, dtype=torch.float64)
    v = v / v.norm()
    g_b_true[2] = 3 * v + 0.01 * g_b_true[2]  # strongly hack-ward student
    cg = delta * g_b_true
    g = g_b_true.sum(0)
    ha = torch.tensor([False, False, False, True])
    gate = Route2Gate()
    res = gate.filter("m", g, cg, delta, v, ha, ~ha)
    reliable = delta.abs() > GATE_EPS
    g_b = torch.where(reliable, g_b_true, torch.zeros_like(g_b_true))
    cos = (g_b @ v) / g_b.norm(dim=1)
    assert torch.allclose(res.cos_b, cos)
    flagged = ha | (cos > res.tau)
    assert res.flagged.bool().tolist() == flagged.tolist() and bool(flagged[2]) and bool(flagged[3])
    want_route = torch.where(reliable, g_b_true[flagged].sum(0), torch.zeros(r, dtype=torch.float64))
    assert torch.allclose(res.g_route, want_route, atol=1e-12)
    assert torch.allclose(res.g_keep + res.g_route, g, atol=1e-14)
    assert torch.equal(res.g_route[~reliable], torch.zeros(3, dtype=torch.float64))
    assert res.resid == pytest.approx(float(res.g_keep @ v / res.g_keep.norm()))
    assert res.hkgap == pytest.approx(gate.ema_hack["m"] - gate.ema_clean["m"])
    assert torch.allclose(gate_cosines(g_b, v), cos)


def test_haar_dirs_are_seeded_unit_and_orthogonal_in_high_dim():
    gen = torch.Generator().manual_seed(4)
    v_grad = {f"m{i}": torch.randn(20000, generator=gen) for i in range(6)}
    v_grad = {k: v / v.norm() for k, v in v_grad.items()}
    a = haar_unit_dirs(v_grad, seed=7)
    b = haar_unit_dirs(dict(reversed(list(v_grad.items()))), seed=7)
    assert all(torch.equal(a[k], b[k]) for k in v_grad)
    assert not torch.equal(a["m0"], haar_unit_dirs(v_grad, seed=8)["m0"])
    for k in v_grad:
        assert a[k].norm().item() == pytest.approx(1.0, abs=1e-6)
        assert abs(float(a[k] @ v_grad[k])) < 5 / math.sqrt(20000)


def test_random_like_bases_are_orthonormal_seeded_and_shaped_like_the_input():
    from vgrout_ray.algo.random_dirs import random_like

    dirs = {"b": torch.zeros(3, 16), "a": torch.zeros(1, 8), "v": torch.zeros(5)}
    r = random_like(dirs, 11)
    for n, d in dirs.items():
        assert r[n].shape == d.shape and r[n].dtype == d.dtype
    for n in ("a", "b"):
        assert torch.allclose(r[n] @ r[n].T, torch.eye(r[n].shape[0]), atol=1e-6)
    assert abs(float(r["v"].norm()) - 1.0) < 1e-6
    again, other = random_like(dict(reversed(list(dirs.items()))), 11), random_like(dirs, 12)
    assert all(torch.equal(r[n], again[n]) for n in dirs)
    assert all(not torch.equal(r[n], other[n]) for n in dirs)
    with pytest.raises(ValueError, match="shape"):
        random_like({"x": torch.zeros(2, 2, 2)}, 1)
    with pytest.raises(ValueError, match="seed"):
        random_like(dirs, -1)


def test_gate_can_leave_anchors_to_the_gate():
    """route_anchors=False (route2-teacher-anchor): anchors calibrate τ, the cosine alone routes."""
    v = torch.tensor([1.0, 0.0])
    delta = torch.tensor([1.0, 1.0])
    # rows: 0 teacher pointing away from v, 1 student along v, 2 student orthogonal
    g_b = torch.tensor([[-1.0, 0.2], [1.0, 0.0], [0.0, 1.0]])
    cg = g_b * delta
    hack = torch.tensor([True, False, False])
    forced = Route2Gate().filter("m", g_b.sum(0), cg, delta, v, hack, ~hack)
    free = Route2Gate().filter("m", g_b.sum(0), cg, delta, v, hack, ~hack, route_anchors=False)
    assert forced.flagged.tolist()[0] == 1.0  # the anchor is routed although its cosine is low
    assert free.flagged.tolist() == (free.cos_b > free.tau).float().tolist()
    assert free.flagged.tolist()[0] == 0.0
