"""Does LearnerCore learn the right thing? Two end-to-end checks of its training signal.

1. Gradient oracle: the δS / δS_hack gradients LearnerCore holds after ``end_step`` equal the
   seed-003 Dr.GRPO loss differentiated by an independent float64 re-implementation written
   here: the HF model loaded in float64 with this file's own adapter hooks
   y = W x + U((Vh x) ⊙ s), its own log-softmax, advantages, ratio, clip, K3 and normalisation,
   autograd w.r.t. δS. For erase / route / route2 the arm's projection or routing (the
   project's pure functions) is applied to that oracle gradient.
2. Direction: one optimizer step raises J = Σ_b A_b Σ_t log π_b on its group; with the
   rewards negated the same step lowers J.

Together they fail on a flipped advantage sign, an inverted ratio or a negated injected
gradient (each was introduced by hand once and turned these tests red).

The learner computes π_old on-policy inside ``add_group`` (one inner step), so ρ ≡ 1 in value
there and only ∇ρ = ρ∇log π reaches δS; the clipped branches (ρ ≠ 1) are checked on the loss
functions directly in ``test_token_loss_matches_oracle_off_policy``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from vgrout_ray.algo import loss as L
from vgrout_ray.algo.pairs import pairs_from_problems, render_prompt, save_pairs_json
from vgrout_ray.algo.projection import project_grads
from vgrout_ray.config import SmokeConfig
from vgrout_ray.env.exploits import clean_completion, exploit_completion, wrong_completion
from vgrout_ray.env.problems import load_problems
from vgrout_ray.learner.core import LearnerCore, RolloutGroup
from vgrout_ray.model.svd_cache import load_or_compute_factors

F64 = torch.float64
# The learner runs fp32 forward + backward; fp32 rounding (~6e-8 per op) accumulated through the
# 2-layer model, a 3k-way softmax and ~120-token sums stays near 1e-6 relative (measured 5e-7..7e-7).
# 1e-4 keeps two orders of headroom and is four orders below the O(1) error of any sign bug.
REL_TOL = 1e-4
PROMPT_TAIL = 96  # prompt tokens kept (the tail, ending in the assistant header): CPU time, not realism
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ── the independent float64 oracle ──
class Float64Policy:
    """The tiny model in float64 with this file's own δS hooks: y = W x + U((Vh x) ⊙ s)."""

    def __init__(self, path, factors):
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=F64, attn_implementation="eager")
        self.model.requires_grad_(False)
        self.model.eval()  # no dropout in Qwen3 anyway; eval() makes it explicit
        mods = dict(self.model.named_modules())
        self.names = [n for n in mods if n.rsplit(".", 1)[-1] in TARGETS]
        self.U = {n: factors[n].U.to(F64) for n in self.names}
        self.Vh = {n: factors[n].Vh.to(F64) for n in self.names}
        self.scale: dict[str, torch.Tensor] = {}
        for n in self.names:
            mods[n].register_forward_hook(self._hook(n))

    def _hook(self, name):
        def hook(mod, args, out):
            s = self.scale.get(name)
            if s is None:
                return out
            return out + ((args[0] @ self.Vh[name].T) * s) @ self.U[name].T
        return hook

    def logps(self, prompt: list[int], comp: list[int], scale: dict | None) -> torch.Tensor:
        """log π(comp_t | prompt, comp_<t) [len(comp)] with adapter scales ``scale`` (None = base)."""
        self.scale = scale or {}
        try:
            ids = torch.tensor([list(prompt) + list(comp)])
            logits = self.model(ids, use_cache=False).logits[0]
        finally:
            self.scale = {}
        lp = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
        return lp.gather(1, torch.tensor(comp).unsqueeze(1)).squeeze(1)


def oracle_row_grads(pol: Float64Policy, g: RolloutGroup, delta: dict, hack: dict, cfg, pad_id: int):
    """Seed-003 loss of each rollout of ``g`` and its float64 gradient w.r.t. δS.

    Returns (loss per row [B], {module: [B, r] gradient}); the group loss and gradient are the
    sums over rows (rows never interact: each is its own causal sequence).
    """
    r = torch.tensor(g.rewards, dtype=F64)
    A = r - r.mean()
    if not cfg.unbiased:
        A = A / (r.std() + 1e-4)
    losses, grads = [], {n: [] for n in pol.names}
    for b, comp in enumerate(g.completion_ids):
        d = {n: delta[n].to(F64).clone().requires_grad_(True) for n in pol.names}
        logp = pol.logps(g.prompt_ids, comp, {n: d[n] + hack[n].to(F64) for n in pol.names})
        mask = torch.tensor([t != pad_id for t in comp], dtype=F64)
        old = logp.detach()
        ratio = torch.exp(logp - old)
        per_tok = -torch.minimum(ratio * A[b], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * A[b])
        if cfg.beta > 0:
            with torch.no_grad():
                ref = pol.logps(g.prompt_ids, comp, None)
            k = ref - logp
            per_tok = per_tok + cfg.beta * (torch.exp(k) - k - 1)
        if cfg.unbiased:
            loss_b = (per_tok * mask).sum() / (cfg.group * cfg.max_new * cfg.prompts_per_step)
        else:
            loss_b = (per_tok * mask).sum() / mask.sum().clamp_min(1) / (cfg.group * cfg.prompts_per_step)
        gr = torch.autograd.grad(loss_b, [d[n] for n in pol.names])
        losses.append(float(loss_b.detach()))
        for n, x in zip(pol.names, gr):
            grads[n].append(x)
    return losses, {n: torch.stack(v) for n, v in grads.items()}


def rel_err(got: dict, want: dict) -> float:
    """‖got − want‖ / ‖want‖ over all modules together (a missing grad counts as zero)."""
    num = sum(float(((got[n].to(F64) if got.get(n) is not None else 0.0) - w).pow(2).sum()) for n, w in want.items())
    den = sum(float(w.pow(2).sum()) for w in want.values())
    return math.sqrt(num / den)


def clip_coef(*grad_dicts, max_norm: float) -> float:
    """torch's clip_grad_norm_ factor for the global L2 norm of every gradient given."""
    total = math.sqrt(sum(float(g.pow(2).sum()) for gd in grad_dicts for g in gd.values()))
    return min(1.0, max_norm / (total + 1e-6))


# ── fixtures and inputs ──
@pytest.fixture(scope="module")
def problems(tok):
    """The packaged problems with the shortest prompt + canonical (keeps CPU steps cheap)."""
    ps = load_problems()
    cost = {p["problem_id"]: len(tok(render_prompt(tok, p["messages"]) + p["canonical"]).input_ids) for p in ps}
    return sorted(ps, key=lambda p: cost[p["problem_id"]])[:8]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, problems, tok):
    root = tmp_path_factory.mktemp("signal")
    save_pairs_json(pairs_from_problems(problems[:6], tok), root / "pairs6.json")
    return root


@pytest.fixture(scope="module")
def policy(tiny, workdir):
    """The float64 oracle policy; SVD factors read through the same cache the learners use."""
    m32 = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    return Float64Policy(tiny, load_or_compute_factors(m32, tiny, workdir / "svd"))


def _cfg(workdir, tmp_path, arm, **kw):
    base = dict(intervention=arm, steps=30, group=4, max_new=24, prompts_per_step=2, out_dir=tmp_path / "out",
                svd_cache=workdir / "svd", v_hack_pairs_path=workdir / "pairs6.json",
                v_hack_refresh_every=0,  # a refresh would zero the grads this file reads after end_step
                v_hack_extract_top_k=3, v_hack_k=2)
    base.update(kw)
    return SmokeConfig(**base)


def _group(tok, prob, k: int, rewards) -> RolloutGroup:
    """Scripted rollouts of different lengths: two wrong students, then an exploit and a clean teacher row."""
    pids = tok(render_prompt(tok, prob["messages"]), add_special_tokens=False).input_ids[-PROMPT_TAIL:]
    enc = (lambda s, n: (tok(s, add_special_tokens=False).input_ids + [tok.eos_token_id])[-n:])
    comps = [enc(wrong_completion(prob, str(k)), 14), enc(wrong_completion(prob, str(k + 7)), 20),
             enc(exploit_completion(prob, "run_tests"), 24), enc(clean_completion(prob), 17)]
    return RolloutGroup(pids, comps, list(rewards), [True, True, False, False], [k % 2 == 1, False])


def _groups(tok, problems):
    """Two prompts, four rollouts each, all rewards distinct (nonzero advantages everywhere)."""
    return [_group(tok, problems[0], 0, (0.0, 1.5, 3.5, 0.5)), _group(tok, problems[1], 1, (2.0, 0.0, 3.0, 1.0))]


def _random_knobs(core, seed: int, hack: bool, zero_every: int = 0) -> None:
    """Load a nonzero δS (and δS_hack when ``hack``) so the loss is not at the base model."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for n in core.adapter.names:
        r = core.adapter.delta[n].shape[0]
        d = 0.05 * torch.randn(r, generator=gen)
        if zero_every:
            d[::zero_every] = 0.0  # route2: axes where δS has not moved (split unknowable, stays in δS)
        state[f"{n}.delta_S"] = d
        state[f"{n}.delta_S_hack"] = 0.03 * torch.randn(r, generator=gen) if hack else torch.zeros(r)
    core.adapter.load_deltas(state)


# ── 1. gradient oracle ──
CASES = {
    "none": dict(arm="none"),
    "none_kl_biased": dict(arm="none", beta=0.5, unbiased=False),
    "erase": dict(arm="erase"),
    "route": dict(arm="route"),
    "route2": dict(arm="route2"),
}


def oracle_route2(gate, groups, row_grads, delta, v_grad):
    """route2 on the oracle's per-rollout grads: anchors written out here, then the gate's filter.

    Returns (kept δS grad, routed δS_hack grad, per group (flag fraction over modules [B], anchors [B])).
    """
    keep: dict[str, torch.Tensor] = {}
    route: dict[str, torch.Tensor] = {}
    flagged = []
    for g, (_, rows) in zip(groups, row_grads):
        is_s = torch.tensor(g.is_student)
        hack_E = torch.tensor(list(g.hack_E) + [False] * (len(is_s) - len(g.hack_E)))
        anchor = ~is_s | hack_E  # teacher rows, plus students the detector flagged
        frac = torch.zeros(len(is_s), dtype=F64)
        for n, gb in rows.items():
            d = delta[n].to(F64)
            res = gate.filter(n, gb.sum(0), d * gb, d, v_grad[n].to(F64), anchor, ~anchor)
            keep[n] = keep.get(n, 0.0) + res.g_keep
            route[n] = route.get(n, 0.0) + res.g_route
            frac += res.flagged
        flagged.append((frac / len(rows), anchor))
    return keep, route, flagged


@pytest.mark.parametrize("case", list(CASES))
def test_injected_grad_matches_float64_oracle(case, tiny, tok, problems, workdir, policy, tmp_path):
    spec = dict(CASES[case])
    arm = spec.pop("arm")
    cfg = _cfg(workdir, tmp_path, arm, **spec)
    core = LearnerCore(cfg, model_path=tiny, device="cpu")
    assert sorted(core.adapter.names) == sorted(policy.names)  # the adapter covers every target Linear
    _random_knobs(core, seed=1, hack=arm in ("route", "route2"), zero_every=4 if arm == "route2" else 0)
    delta = {n: core.adapter.delta[n].detach().clone() for n in core.adapter.names}
    hack = {n: core.adapter.hack[n].detach().clone() for n in core.adapter.names}
    gate = copy.deepcopy(core.gate)  # route2's τ state before this step
    groups = _groups(tok, problems)

    core.begin_step(0)
    infos = [core.add_group(g) for g in groups]
    core.end_step()
    got_d = {n: core.adapter.delta[n].grad for n in core.adapter.names}
    got_h = {n: core.adapter.hack[n].grad for n in core.adapter.names}

    # the oracle: per-rollout float64 grads, summed over the step, then the arm's intervention
    row_grads = [oracle_row_grads(policy, g, delta, hack, cfg, core.pad_id) for g in groups]
    full = {n: sum(rows[n].sum(0) for _, rows in row_grads) for n in policy.names}
    want_d, want_h = full, {}
    if arm in ("erase", "route"):
        V = {n: v.to(F64) for n, v in core.direction.v_hack.items()}
        want_d, want_h, diag = project_grads(full, V, preserve_magnitude=cfg.preserve_magnitude,
                                             route=arm == "route", gate_mode=cfg.gate_mode,
                                             overshoot=cfg.project_overshoot)
        assert diag["frac_fired"] > 0
    elif arm == "route2":
        want_d, want_h, flagged = oracle_route2(gate, groups, row_grads, delta, core.direction.v_grad)
    c = clip_coef(want_d, want_h, max_norm=cfg.grad_clip)
    want_d = {n: g * c for n, g in want_d.items()}
    want_h = {n: g * c for n, g in want_h.items()}

    err_d = rel_err(got_d, want_d)
    print(f"{case}: rel err δS.grad {err_d:.2e} (‖want‖ {math.sqrt(sum(float(g.pow(2).sum()) for g in want_d.values())):.3e})")
    assert err_d < REL_TOL, f"{case}: δS.grad differs from the float64 oracle by {err_d:.2e} (relative)"
    if arm in ("route", "route2"):
        err_h = rel_err(got_h, want_h)
        print(f"{case}: rel err δS_hack.grad {err_h:.2e}")
        assert err_h < REL_TOL, f"{case}: δS_hack.grad differs from the float64 oracle by {err_h:.2e}"
    else:
        assert all(g is None for g in got_h.values())  # no arm but route/route2 feeds the quarantine

    # the same group loss and advantages, and the case really exercises what it is named for
    for g, info, (losses, _) in zip(groups, infos, row_grads):
        assert info.loss == pytest.approx(sum(losses), rel=REL_TOL, abs=1e-9)
        r = torch.tensor(g.rewards, dtype=F64)
        A = r - r.mean() if cfg.unbiased else (r - r.mean()) / (r.std() + 1e-4)
        assert info.adv == pytest.approx(A.tolist(), rel=1e-5)
    if arm in ("erase", "route"):
        assert rel_err(want_d, {n: x * c for n, x in full.items()}) > 100 * REL_TOL  # projection moved it
    if arm == "route2":
        for info, (frac, anchor) in zip(infos, flagged):
            assert info.flagged == pytest.approx(frac.tolist(), abs=1e-6)  # same routing decisions
        assert core.gate.tau == pytest.approx(gate.tau, abs=1e-5)  # same calibrated τ per module
        fr = torch.cat([f for f, _ in flagged])
        non_anchor = ~torch.cat([a for _, a in flagged])
        # the gate (not only the anchors) routed some rollouts somewhere, and kept some
        assert float(fr[non_anchor].max()) > 0 and float(fr.min()) < 1
        assert all(float(h.norm()) > 0 for h in want_h.values())
    if cfg.beta > 0:
        cfg0 = _cfg(workdir, tmp_path, arm, **{**spec, "beta": 0.0})
        rows0 = [oracle_row_grads(policy, g, delta, hack, cfg0, core.pad_id)[1] for g in groups]
        no_kl = {n: sum(rows[n].sum(0) for rows in rows0) for n in policy.names}
        assert rel_err(no_kl, full) > 100 * REL_TOL  # the K3 term moves the gradient measurably


def test_token_loss_matches_oracle_off_policy():
    """ρ ≠ 1 with both clip sides active: the project's token loss and normalisation vs the formula."""
    gen = torch.Generator().manual_seed(5)
    B, T, clip, beta = 4, 9, 0.2, 0.3
    logp = (-3 + torch.randn(B, T, generator=gen, dtype=F64)).requires_grad_(True)
    rho = torch.tensor([0.5, 0.75, 0.85, 0.95, 1.0, 1.05, 1.15, 1.3, 2.0], dtype=F64)
    old = logp.detach() - torch.log(rho)[torch.randperm(T, generator=gen)]  # ρ = exp(logπ − logπ_old)
    ref = logp.detach() + 0.2 * torch.randn(B, T, generator=gen, dtype=F64)
    A = torch.tensor([1.0, -2.0, 0.5, -0.5], dtype=F64)
    mask = (torch.rand(B, T, generator=gen) > 0.2).to(F64)
    ratio = torch.exp(logp - old)
    assert torch.allclose(ratio.detach().sort(1).values, rho.expand(B, T))
    k = ref - logp
    per_tok = -torch.minimum(ratio * A[:, None], ratio.clamp(1 - clip, 1 + clip) * A[:, None]) \
        + beta * (torch.exp(k) - k - 1)
    want = (per_tok * mask).sum() / (4 * 32 * 2)
    (g_want,) = torch.autograd.grad(want, logp)
    got = L.normalise_loss(L.grpo_token_loss(logp, old, A, clip, beta, ref), mask, unbiased=True, group=4,
                           max_new=32, prompts_per_step=2)
    (g_got,) = torch.autograd.grad(got, logp)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    assert torch.allclose(g_got, g_want, rtol=1e-12, atol=1e-15)


# ── 2. direction of one optimizer step ──
def _objective(pol: Float64Policy, core, g: RolloutGroup, A: torch.Tensor) -> float:
    """J = Σ_b A_b Σ_t log π_b over the real (non-pad) completion tokens, in float64 at the core's knobs."""
    st = core.deltas_state()
    scale = {n: (st[f"{n}.delta_S"] + st[f"{n}.delta_S_hack"]).to(F64) for n in pol.names}
    J = 0.0
    with torch.no_grad():
        for b, comp in enumerate(g.completion_ids):
            mask = torch.tensor([t != core.pad_id for t in comp], dtype=F64)
            J += float(A[b]) * float((pol.logps(g.prompt_ids, comp, scale) * mask).sum())
    return J


@pytest.mark.parametrize("sign", [1, -1], ids=["rewards", "negated_rewards"])
def test_one_step_moves_logp_along_advantage(sign, tiny, tok, problems, workdir, policy, tmp_path):
    """One AdamW step raises J for the group's advantages, and lowers it when the rewards are negated."""
    cfg = _cfg(workdir, tmp_path, "none", prompts_per_step=1, lr=1.0)  # warmup: first step at 1e-3·lr
    core = LearnerCore(cfg, model_path=tiny, device="cpu")
    g = _group(tok, problems[0], 0, (0.0, 1.5, 3.5, 0.5))
    r = torch.tensor(g.rewards, dtype=F64)
    A = r - r.mean()  # the unnegated advantages define J in both cases
    before = _objective(policy, core, g, A)
    g.rewards = [sign * x for x in g.rewards]
    core.begin_step(0)
    core.add_group(g)
    st = core.end_step()
    after = _objective(policy, core, g, A)
    print(f"sign {sign:+d}: J {before:.6f} -> {after:.6f} (ΔJ {after - before:+.3e}, gn {st['gn']:.3e})")
    assert st["gn"] > 0
    assert sign * (after - before) > 1e-6 * abs(before), f"ΔJ = {after - before:+.3e} for sign {sign:+d}"
