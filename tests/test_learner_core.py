"""LearnerCore: the seed's step on the tiny model, per arm, in-process (no Ray)."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import GenerationConfig

from vgrout_ray.algo.pairs import pairs_from_problems, render_prompt, save_pairs_json
from vgrout_ray.algo.route2 import haar_unit_dirs
from vgrout_ray.algo.vhack import extract_v_hack, postprocess_v_hack, v_grad_from_raw
from vgrout_ray.config import SmokeConfig
from vgrout_ray.env.exploits import clean_completion, exploit_completion, wrong_completion
from vgrout_ray.env.modes import LOOPHOLE_MODES
from vgrout_ray.env.problems import load_problems
from vgrout_ray.learner.core import GroupResult, LearnerCore, RolloutGroup

STEP_KEYS = ("loss", "gn", "q_egy", "tau", "hkgap", "resid", "lr", "cos_pre", "cos_pre_s", "cos_pre_t",
             "cos_post", "fired", "refr", "fb", "flagged", "gate_cos")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problems(tok):
    """The packaged problems with the shortest prompt + canonical (keeps CPU steps cheap)."""
    ps = load_problems()
    cost = {p["problem_id"]: len(tok(render_prompt(tok, p["messages"]) + p["canonical"]).input_ids) for p in ps}
    return sorted(ps, key=lambda p: cost[p["problem_id"]])[:8]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, problems, tok):
    root = tmp_path_factory.mktemp("learner")
    save_pairs_json(pairs_from_problems(problems[:6], tok), root / "pairs6.json")
    return root


def _cfg(workdir, tmp_path, arm, **kw):
    base = dict(intervention=arm, steps=30, max_new=24, out_dir=tmp_path / "out", svd_cache=workdir / "svd",
                v_hack_pairs_path=workdir / "pairs6.json", v_hack_refresh_every=10, v_hack_extract_top_k=3,
                v_hack_k=2)
    base.update(kw)
    return SmokeConfig(**base)


def _teacher_group(tok, prob, step, n_students=2, student_rewards=(0.0, 0.5)):
    """A group whose completions are scripted text (no sampling): students wrong, teachers exploit/clean."""
    pids = tok(render_prompt(tok, prob["messages"]), add_special_tokens=False).input_ids
    enc = (lambda s: tok(s, add_special_tokens=False).input_ids + [tok.eos_token_id])
    students = [enc(wrong_completion(prob, str(i)))[: 10 + 3 * i] for i in range(n_students)]
    teachers = [enc(exploit_completion(prob, LOOPHOLE_MODES[step % 6])), enc(clean_completion(prob))]
    return RolloutGroup(pids, students + teachers, list(student_rewards[:n_students]) + [3.5, 3.5],
                        [True] * n_students + [False, False], [False] * n_students)


def test_rollout_group_validates():
    with pytest.raises(ValueError, match="rewards"):
        RolloutGroup([1], [[2], [3]], [1.0], [True, True], [])
    with pytest.raises(ValueError, match="empty prompt"):
        RolloutGroup([], [[2]], [1.0], [True], [])


def test_zero_variance_group_is_skipped(tiny, tok, problems, workdir, tmp_path):
    core = LearnerCore(_cfg(workdir, tmp_path, "none"), model_path=tiny, device="cpu")
    g = _teacher_group(tok, problems[0], 0)
    g.rewards = [1.0] * 4
    with pytest.raises(RuntimeError, match="begin_step"):
        core.add_group(g)
    core.begin_step(0)
    info = core.add_group(g)
    assert info.zerovar and all(math.isnan(x) for x in info.logps)
    st = core.end_step()
    assert st["n_zerovar"] == 1 and st["n_groups"] == 0 and st["gn"] == 0.0 and st["loss"] == 0.0
    assert all(torch.equal(v, torch.zeros_like(v)) for v in core.deltas_state().values())
    assert st["version"] == core.version == 1
    # vanilla holds v_hack to measure cos_pre; with no gradient there is nothing to measure
    assert core.direction.v_hack is not None and core.direction.v_grad is None and math.isnan(st["cos_pre"])
    with pytest.raises(RuntimeError, match="begin_step"):
        core.end_step()


def test_first_step_loss_matches_seed_formula(tiny, tok, problems, workdir, tmp_path):
    """At δS = 0 and ρ ≡ 1 the per-token loss is −A; summed over real tokens / (G·max_new·P)."""
    cfg = _cfg(workdir, tmp_path, "none", prompts_per_step=2)
    core = LearnerCore(cfg, model_path=tiny, device="cpu")
    core.begin_step(0)
    total = 0.0
    for i in range(2):
        g = _teacher_group(tok, problems[i], i)
        info = core.add_group(g)
        r = torch.tensor(g.rewards)
        A = r - r.mean()
        lens = torch.tensor([len(c) for c in g.completion_ids], dtype=torch.float32)
        want = float((-A * lens).sum() / (cfg.group * cfg.max_new * cfg.prompts_per_step))
        assert info.loss == pytest.approx(want, rel=1e-5, abs=1e-7)
        assert info.adv == pytest.approx(A.tolist())
        assert all(x < 0 for x in info.logps)
        total += want
    st = core.end_step()
    assert st["loss"] == pytest.approx(total, rel=1e-5)
    assert core.adapter.delta_hack_norm() == 0.0


def test_kl_term_zero_at_start_then_positive(tiny, tok, problems, workdir, tmp_path):
    """β > 0: K3 and its gradient vanish at δS = 0, so step 0 matches β = 0; once δS moved, the
    β-loss exceeds the plain one by β·ΣK3 (≥ 0)."""
    cores = {b: LearnerCore(_cfg(workdir, tmp_path, "none", beta=b, lr=1.0), model_path=tiny, device="cpu")
             for b in (0.0, 0.5)}
    losses, states = {}, {}
    for step in range(2):
        g = _teacher_group(tok, problems[step], step)
        for b, core in cores.items():
            core.begin_step(step)
            losses[step, b] = core.add_group(g).loss
            core.end_step()
            states[step, b] = core.deltas_state()
    assert losses[0, 0.5] == losses[0, 0.0]
    assert all(torch.allclose(states[0, 0.0][k], states[0, 0.5][k], rtol=1e-5, atol=1e-12) for k in states[0, 0.0])
    assert losses[1, 0.5] > losses[1, 0.0]


def test_biased_branch_normalises_per_rollout(tiny, tok, problems, workdir, tmp_path):
    core = LearnerCore(_cfg(workdir, tmp_path, "none", unbiased=False), model_path=tiny, device="cpu")
    core.begin_step(0)
    g = _teacher_group(tok, problems[0], 0)
    info = core.add_group(g)
    r = torch.tensor(g.rewards)
    assert info.adv == pytest.approx(((r - r.mean()) / (r.std() + 1e-4)).tolist(), rel=1e-6)
    # ρ ≡ 1: each rollout's token mean is −A_b, and the standardised A sums to zero
    assert info.loss == pytest.approx(0.0, abs=1e-6)
    assert core.end_step()["gn"] > 0


def test_split_and_combined_backward_agree(tiny, tok, problems, workdir, tmp_path):
    grads = {}
    for every, step in ((1, 0), (2, 1)):  # step 0 splits, step 1 (every 2) runs one combined backward
        core = LearnerCore(_cfg(workdir, tmp_path, "erase", cos_pre_split_every=every), model_path=tiny, device="cpu")
        core.begin_step(step)
        assert core.split is (every == 1)
        core.add_group(_teacher_group(tok, problems[0], 0))
        grads[every] = ({n: g.clone() for n, g in core.acc.g_s.items()}, {n: g.clone() for n, g in core.acc.g_t.items()})
        st = core.end_step()
        if every == 1:
            assert 0 <= st["cos_pre_s"] <= 1 and 0 <= st["cos_pre_t"] <= 1
        else:
            assert math.isnan(st["cos_pre_s"]) and math.isnan(st["cos_pre_t"])
        assert st["cos_post"] == pytest.approx(0.0, abs=1e-5) and 0 < st["fired"] <= 1
    (gs, gt), (gc, gc_t) = grads[1], grads[2]
    assert gc_t == {}
    for n in gc:
        assert torch.allclose(gs[n] + gt[n], gc[n], rtol=1e-4, atol=1e-9)


def test_route2_split_step_measures_cos_pre_and_routes_as_a_combined_one(tiny, tok, problems, workdir, tmp_path):
    got = {}
    for every in (1, 2):  # step 1 splits with every=1, runs one combined backward with every=2
        core = LearnerCore(_cfg(workdir, tmp_path, "route2", cos_pre_split_every=every), model_path=tiny, device="cpu")
        core.begin_step(1)
        assert core.split is (every == 1)
        core.add_group(_teacher_group(tok, problems[0], 0))
        a = core.acc
        got[every] = [{n: g.clone() for n, g in d.items()} for d in (a.g_s, a.g_hack, a.m_s, a.m_t)]
        st = core.end_step()
        if every == 1:
            assert 0 <= st["cos_pre_s"] <= 1 and 0 <= st["cos_pre_t"] <= 1
        else:
            assert math.isnan(st["cos_pre_s"]) and math.isnan(st["cos_pre_t"]) and got[2][2] == {}
    (keep, hack, m_s, m_t), (keep_c, hack_c, _, _) = got[1], got[2]
    assert set(keep) == set(keep_c) and hack and set(hack) == set(hack_c)
    for n in keep:  # the gate saw the same summed grads either way
        assert torch.allclose(keep[n], keep_c[n], rtol=1e-4, atol=1e-9)
        assert torch.allclose(hack[n], hack_c[n], rtol=1e-4, atol=1e-9)
        assert torch.allclose(m_s[n] + m_t[n], keep[n] + hack[n], rtol=1e-4, atol=1e-9)


def _one_step(core, group, step=0):
    core.begin_step(step)
    core.add_group(group)
    return core.end_step()


def test_none_arm_measures_cos_pre_without_changing_its_update(tiny, tok, problems, workdir, tmp_path):
    cfg = _cfg(workdir, tmp_path, "none", cos_pre_split_every=2)
    on, off = (LearnerCore(cfg, model_path=tiny, device="cpu") for _ in range(2))
    assert on.direction.v_hack is not None
    off.direction.v_hack = None  # measurement off, everything else equal
    for step in range(3):  # steps 0 and 2 split (measure cos_pre_s/t), step 1 does not
        group = _teacher_group(tok, problems[step], step)
        st_on, st_off = _one_step(on, group, step), _one_step(off, group, step)
        if step % 2 == 0:
            assert 0 <= st_on["cos_pre_s"] <= 1 and 0 <= st_on["cos_pre_t"] <= 1
        else:
            assert math.isnan(st_on["cos_pre_s"]) and math.isnan(st_on["cos_pre_t"])
        assert 0 <= st_on["cos_pre"] <= 1 and math.isnan(st_on["cos_post"]) and math.isnan(st_on["fired"])
        assert math.isnan(st_off["cos_pre"]) and math.isnan(st_off["cos_pre_s"])
        a, b = on.deltas_state(), off.deltas_state()
        assert all(torch.equal(a[k], b[k]) for k in a), "measuring cos_pre changed the vanilla update"
        assert st_on["gn"] == st_off["gn"] and on.delta_hack_norm() == 0.0


def test_random_direction_controls(tiny, tok, problems, workdir, tmp_path):
    real = LearnerCore(_cfg(workdir, tmp_path, "erase"), model_path=tiny, device="cpu")
    rnd = LearnerCore(_cfg(workdir, tmp_path, "erase", v_hack_random_seed=5), model_path=tiny, device="cpu")
    again = LearnerCore(_cfg(workdir, tmp_path, "erase", v_hack_random_seed=5), model_path=tiny, device="cpu")
    other = LearnerCore(_cfg(workdir, tmp_path, "erase", v_hack_random_seed=6), model_path=tiny, device="cpu")
    V, R = real.direction.v_hack, rnd.direction.v_hack
    assert set(V) == set(R)
    for n in V:
        assert R[n].shape == V[n].shape
        assert torch.allclose(R[n] @ R[n].T, torch.eye(R[n].shape[0]), atol=1e-5)
        assert torch.equal(R[n], again.direction.v_hack[n]) and not torch.equal(R[n], other.direction.v_hack[n])
    group = _teacher_group(tok, problems[0], 0)
    st_real, st_rnd = _one_step(real, group), _one_step(rnd, group)
    assert st_rnd["refr"] == "-" and 0 < st_rnd["fired"] <= 1
    a, b = real.deltas_state(), rnd.deltas_state()
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith(".delta_S"))
    route = LearnerCore(_cfg(workdir, tmp_path, "route", v_hack_random_seed=5, v_hack_refresh_every=1),
                        model_path=tiny, device="cpu")
    st = _one_step(route, group)
    assert route.delta_hack_norm() > 0 and st["q_egy"] > 0 and st["refr"] == "-"  # never refreshed
    assert all(torch.equal(route.direction.v_hack[n], R[n]) for n in R)


def test_v_hack_cache_resolution(tiny, workdir, tmp_path):
    cfg = _cfg(workdir, tmp_path, "erase")
    core = LearnerCore(cfg, model_path=tiny, device="cpu")
    path = tmp_path / "out" / "vhack" / "v_hack_pairset_pairs6.safetensors"
    assert core.direction.cache_path() == path and path.exists()
    stamp = path.stat().st_mtime_ns
    core2 = LearnerCore(cfg, model_path=tiny, device="cpu")  # cache hit: no re-extraction
    assert path.stat().st_mtime_ns == stamp
    assert all(torch.equal(core.direction.v_hack[n], core2.direction.v_hack[n]) for n in core.direction.v_hack)
    assert all(v.shape[0] <= cfg.v_hack_k for v in core.direction.v_hack.values())
    explicit = _cfg(workdir, tmp_path, "route", v_hack_path=path, v_hack_pairs_path=None)
    core3 = LearnerCore(explicit, model_path=tiny, device="cpu")
    assert all(torch.equal(core.direction.v_hack[n], core3.direction.v_hack[n]) for n in core.direction.v_hack)
    with pytest.raises(FileNotFoundError, match="v_hack_path"):
        LearnerCore(_cfg(workdir, tmp_path, "erase", v_hack_path=tmp_path / "nope.safetensors"),
                    model_path=tiny, device="cpu")
    # the vanilla arm reads v_hack too, to measure cos_pre (it never projects)
    vanilla = LearnerCore(_cfg(workdir, tmp_path, "none", v_hack_path=path, v_hack_pairs_path=None),
                          model_path=tiny, device="cpu")
    assert all(torch.equal(core.direction.v_hack[n], vanilla.direction.v_hack[n]) for n in core.direction.v_hack)


def test_route2_haar_control_is_fixed(tiny, tok, problems, workdir, tmp_path):
    core = LearnerCore(_cfg(workdir, tmp_path, "route2", v_hack_random_seed=3, v_hack_refresh_every=1),
                       model_path=tiny, device="cpu")
    want = haar_unit_dirs(core.direction.v_grad, 3)
    assert all(torch.equal(core.direction.v_grad[n], want[n]) for n in want)
    core.begin_step(0)
    core.add_group(_teacher_group(tok, problems[0], 0))
    st = core.end_step()
    assert st["refr"] == "-" and all(torch.equal(core.direction.v_grad[n], want[n]) for n in want)


def test_state_dict_resume_is_exact(tiny, tok, problems, workdir, tmp_path):
    cfg = _cfg(workdir, tmp_path, "route2", steps=6, v_hack_refresh_every=2)
    a = LearnerCore(cfg, model_path=tiny, device="cpu")
    groups = [_teacher_group(tok, problems[i % 3], i, student_rewards=(0.0, 3.5)) for i in range(4)]
    for s in range(2):
        a.begin_step(s)
        a.add_group(groups[s])
        a.end_step()
    state = a.state_dict()
    assert state["version"] == 2 and state["route2"]["tau"]
    b = LearnerCore(cfg, model_path=tiny, device="cpu")
    torch.manual_seed(12345)  # scrambled; resume must restore the saved generator state
    b.load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), state["rng_cpu"])
    for s in range(2, 4):
        outs = []
        for core in (a, b):
            core.begin_step(s)
            info = core.add_group(groups[s])
            outs.append((info.logps, info, core.end_step()))
        assert outs[0][0] == outs[1][0] and outs[0][1].gate_cos == outs[1][1].gate_cos
        assert outs[0][2]["loss"] == outs[1][2]["loss"] and outs[0][2]["tau"] == outs[1][2]["tau"]
    sa, sb = a.deltas_state(), b.deltas_state()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.version == b.version == 4 and a.gate.state_dict() == b.gate.state_dict()
    assert all(torch.equal(a.direction.v_grad[n], b.direction.v_grad[n]) for n in a.direction.v_grad)


def _check_last_refresh_used_ablation(core, cfg, trained_quarantine: bool) -> None:
    """The step-29 refresh ran against the final model with δS_hack ablated: redo it both ways."""
    def extract():
        return extract_v_hack(core.model, core.adapter, core.tok, core.direction.pairs(), top_k=cfg.v_hack_extract_top_k,
                              tau_axis=cfg.v_hack_tau_axis, n_heldout=cfg.v_hack_n_heldout)

    with core.adapter.ablate_quarantine():
        V_abl, S_abl, raw_abl, _ = extract()
    V_live, _, raw_live, _ = extract()
    assert any(not torch.equal(raw_abl[k], raw_live[k]) for k in raw_abl) is trained_quarantine
    n_train = len(core.direction.pairs()) - cfg.v_hack_n_heldout
    close = (lambda a, b: set(a) == set(b) and all(torch.allclose(a[n], b[n], rtol=1e-5, atol=1e-7) for n in a))
    if core.is_route2:
        assert close(core.direction.v_grad, v_grad_from_raw(raw_abl, core.adapter.names, n_use=n_train))
        live = v_grad_from_raw(raw_live, core.adapter.names, n_use=n_train)
        current = core.direction.v_grad
    else:
        post = (lambda V: postprocess_v_hack(V, S_abl, k_use=cfg.v_hack_k, drop_bottom_frac=cfg.v_hack_drop_bottom_frac))
        assert close(core.direction.v_hack, post(V_abl))
        live, current = post(V_live), core.direction.v_hack
    assert close(current, live) is not trained_quarantine  # without the ablation the direction would differ


def _student_reward(text: str) -> float:
    """Deterministic stand-in grader for random-init students: format and parity of the text."""
    return 3.5 if "```" in text else (0.5 if len(text) % 2 else 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["none", "erase", "route", "route2"])
def test_thirty_steps_per_arm(arm, tiny, tok, problems, workdir, tmp_path):
    cfg = _cfg(workdir, tmp_path, arm)
    core = LearnerCore(cfg, model_path=tiny, device="cpu")
    G_s, G_t = cfg.teacher_split
    assert (G_s, G_t) == (2, 2)
    gen = GenerationConfig(max_new_tokens=cfg.max_new, do_sample=True, temperature=0.7, top_k=20, top_p=1.0,
                           min_p=0.0, repetition_penalty=1.0, num_return_sequences=G_s,
                           pad_token_id=tok.pad_token_id, eos_token_id=[tok.eos_token_id, tok.pad_token_id])
    torch.manual_seed(cfg.seed)
    rows = []
    for step in range(cfg.steps):
        core.begin_step(step)
        prob = problems[step % len(problems)]
        pids = tok(render_prompt(tok, prob["messages"]), add_special_tokens=False).input_ids
        core.model.config.use_cache = True
        with torch.no_grad():
            out = core.model.generate(torch.tensor([pids]), generation_config=gen)
        core.model.config.use_cache = False
        students = []
        for row in out[:, len(pids):].tolist():
            while row and row[-1] == tok.pad_token_id:
                row.pop()
            students.append(row)
        texts = tok.batch_decode(students, skip_special_tokens=True)
        mode = LOOPHOLE_MODES[step % len(LOOPHOLE_MODES)]
        second = clean_completion(prob) if step % 2 else wrong_completion(prob)
        teachers = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id]
                    for t in (exploit_completion(prob, mode), second)]
        group = RolloutGroup(pids, students + teachers,
                             [_student_reward(t) for t in texts] + [3.5, 3.5 if step % 2 else 0.5],
                             [True] * G_s + [False] * G_t, ["run_tests" in t for t in texts])
        info = core.add_group(group)
        assert not info.zerovar and len(info.logps) == 4 and all(math.isfinite(x) for x in info.logps)
        st = core.end_step()
        assert set(STEP_KEYS) <= set(st)
        assert math.isfinite(st["loss"]) and math.isfinite(st["gn"]) and 0 <= st["q_egy"] <= 1
        assert len(st["gate_cos"]) == 4
        rows.append(st)
    assert core.version == cfg.steps
    assert [r["refr"] != "-" for r in rows] == [(s + 1) % 10 == 0 for s in range(cfg.steps)]
    assert rows[-1]["lr"] < rows[5]["lr"]  # cosine decay after warmup
    dsh = core.delta_hack_norm()
    if arm in ("route", "route2"):
        assert dsh > 0
        assert any(r["q_egy"] > 0 for r in rows)
    else:
        assert dsh == 0.0 and all(r["q_egy"] == 0.0 for r in rows)
    assert any(v.abs().sum() > 0 for k, v in core.deltas_state().items() if k.endswith(".delta_S"))
    if arm in ("erase", "route"):
        assert all(abs(r["cos_post"]) < 1e-5 for r in rows) and all(0 <= r["cos_pre"] <= 1 for r in rows)
        assert all(math.isfinite(r["cos_pre_s"]) for r in rows)
        assert all(math.isfinite(r["overlap"]) for r in rows if r["refr"] != "-")
    if arm == "route":
        assert core.direction.span_checked
    if arm != "none":
        _check_last_refresh_used_ablation(core, cfg, trained_quarantine=arm in ("route", "route2"))
    if arm == "route2":
        assert all(math.isfinite(r["tau"]) and 0 <= r["flagged"] <= 1 for r in rows)
        assert all(math.isfinite(c) for r in rows for c in r["gate_cos"])
        # every step splits here (cos_pre_split_every=1): cos_pre_s/_t against route2's v_grad
        assert all(0 <= r["cos_pre_s"] <= 1 and 0 <= r["cos_pre_t"] <= 1 for r in rows)
        assert all(math.isfinite(r["resid"]) and math.isfinite(r["hkgap"]) for r in rows)
    if arm == "none":  # measures cos_pre against v_hack, never projects
        assert all(0 <= r["cos_pre"] <= 1 and math.isfinite(r["cos_pre_s"]) for r in rows)
        assert all(math.isnan(r["cos_post"]) and math.isnan(r["tau"]) for r in rows)


def test_group_result_names_its_student_and_teacher_rows():
    r = GroupResult(logps=[-1.0, -2.0, -3.0], adv=[0.5, -0.5, 0.0], gate_cos=[0.1, 0.2, 0.3], n_students=2,
                    zerovar=False, loss=1.0, flagged=[0.0, 0.0, 0.0])
    assert [s.logp for s in r.students] == [-1.0, -2.0] and [t.adv for t in r.teachers] == [0.0]
    assert r.teachers[0].gate_cos == 0.3


def test_a_group_with_a_teacher_before_a_student_is_refused():
    with pytest.raises(ValueError, match="student rows must come before teacher rows"):
        RolloutGroup([1, 2], [[3], [4]], [0.0, 1.0], [False, True])
    assert RolloutGroup([1, 2], [[3], [4], [5]], [0.0, 1.0, 2.0], [True, True, False]).n_students == 2
