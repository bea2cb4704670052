"""The run state and its resume format: a run dir written before the refactor still resumes.

``tests/fixtures/pre_refactor_run`` holds ``config.json`` and ``resume/state.pt`` as the old driver
wrote them (see its README). ``RunState`` must read that payload and write back the same keys in
the same order with the same values, and the restored prompt RNG must draw what the saved one would.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vgrout_ray.config import parse_config
from vgrout_ray.run.state import RESUME_KEYS, RunState, load_resume, save_resume

FIXTURE = Path(__file__).parent / "fixtures" / "pre_refactor_run"


def _same(a, b) -> bool:
    """Deep equality where tensors compare by value and NaN equals NaN."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_the_pre_refactor_resume_payload_round_trips_unchanged():
    old = load_resume(FIXTURE)
    assert tuple(old) == RESUME_KEYS
    state, learner = RunState.from_dict(old)
    assert state.next_step == 3 and len(state.rows) == 3 and state.G == (3, 1) and state.dumped == {"run_tests"}
    assert _same(state.to_dict(learner), old)


def test_the_restored_rng_draws_what_the_saved_one_would():
    old = load_resume(FIXTURE)
    saved = torch.Generator()
    saved.set_state(old["rng"])
    state, _ = RunState.from_dict(old)
    assert torch.equal(torch.randint(0, 1000, (16,), generator=state.rng),
                       torch.randint(0, 1000, (16,), generator=saved))


def test_the_pre_refactor_run_dir_is_accepted_by_resume(tmp_path):
    from vgrout_ray.driver import _resume_config

    cli = parse_config(["smoke", "--resume", str(FIXTURE)])
    cfg, payload = _resume_config(cli)
    assert cfg.preset_name == "smoke" and cfg.steps == 5 and cfg.seed == 1 and cfg.resume == FIXTURE.absolute()
    assert RunState.from_dict(payload)[0].next_step == 3


def test_save_and_load_through_the_file(tmp_path):
    st = RunState.fresh(7, (4, 0))
    torch.randint(0, 5, (3,), generator=st.rng)
    st.next_step, st.rows, st.dumped = 2, [{"step": 0, "N": 4}, {"step": 1, "N": 4}], {"sentinel", "exit_code"}
    st.lp_t_best = -math.inf
    save_resume(tmp_path, st.to_dict({"version": 2}))
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["state.pt"]  # no temporary left
    back, learner = RunState.from_dict(load_resume(tmp_path))
    assert learner == {"version": 2} and back.dumped == st.dumped and back.gens_so_far == 8
    assert _same(back.to_dict(learner), st.to_dict(learner))


def test_a_payload_missing_a_key_names_it():
    old = load_resume(FIXTURE)
    del old["sync_log"]
    with pytest.raises(KeyError, match="sync_log"):
        RunState.from_dict(old)
