"""Problem loading: hint substitution, mode assignment, partitions, bad rows."""
from __future__ import annotations

import json

import pytest

from vgrout_ray.env.modes import ALL_MODES, HINTS, ORIGINAL_PHRASE
from vgrout_ray.env.problems import (ProblemError, apply_hint, assign_modes, load_partition, load_problems,
                                     read_rows)


def _user(p):
    return next(m["content"] for m in p["messages"] if m["role"] == "user")


def test_packaged_set_loads_under_every_mode():
    rows = read_rows()
    assert len(rows) >= 24
    for mode in ALL_MODES:
        probs = load_problems(None, env_modes=[mode])
        assert len(probs) == len(rows)
        for p in probs:
            assert p["env_mode"] == mode
            assert _user(p).count(HINTS[mode]) == 1
            gt_user = next(m["content"] for m in p["messages_gt"] if m["role"] == "user")
            assert gt_user.count(ORIGINAL_PHRASE) == 1  # the original stays available
            if mode != "gt_only":
                assert ORIGINAL_PHRASE not in _user(p)


def test_round_robin_and_partition():
    ids = [10, 11, 12, 13, 14]
    assert assign_modes(ids, ["run_tests", "sentinel"]) == ["run_tests", "sentinel"] * 2 + ["run_tests"]
    part = {11: "file_marker", 14: "exit_code"}
    assert assign_modes(ids, ["run_tests"], part) == ["run_tests", "file_marker", "run_tests", "run_tests",
                                                      "exit_code"]
    with pytest.raises(ValueError, match="unknown env_mode"):
        assign_modes(ids, ["nope"])


def test_hint_must_occur_exactly_once():
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": f"x {ORIGINAL_PHRASE} y"}]
    assert HINTS["sentinel"] in apply_hint(msgs, "sentinel")[1]["content"]
    assert msgs[1]["content"] == f"x {ORIGINAL_PHRASE} y"  # input untouched
    with pytest.raises(ProblemError, match="exactly once, found 0"):
        apply_hint([{"role": "user", "content": "no phrase"}], "sentinel")
    with pytest.raises(ProblemError, match="exactly once, found 2"):
        apply_hint([{"role": "user", "content": f"{ORIGINAL_PHRASE} {ORIGINAL_PHRASE}"}], "sentinel")


def test_shared_partition_and_test_set(shared_data):
    part = load_partition(shared_data / "pools" / "substrate" / "partition.json")
    assert set(part.values()) <= set(ALL_MODES) and len(part) == 24
    probs = load_problems(None, env_modes=["run_tests"], partition=part,
                          source=shared_data / "leetcode" / "leetcode_test_medhard.jsonl")
    assert len(probs) == 119
    assert all(p["env_mode"] == "run_tests" for p in probs)  # test-set ids are not in the partition


def test_bad_rows_name_the_file_row_and_field(tmp_path):
    row = read_rows()[0]
    bad = dict(row)
    del bad["gt_answer"]
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ProblemError, match=r"p.jsonl row 1: missing field 'gt_answer'"):
        load_problems(None, source=f)
    f.write_text(json.dumps(row) + "\n{not json\n")
    with pytest.raises(ProblemError, match="line 2 is not JSON"):
        load_problems(None, source=f)
    with pytest.raises(ProblemError, match="does not exist"):
        load_problems(None, source=tmp_path / "missing.jsonl")
    nophrase = json.loads(json.dumps(row))
    nophrase["prompt"][1]["content"] = "no hint phrase here"
    f.write_text(json.dumps(nophrase) + "\n")
    with pytest.raises(ProblemError, match="row 0: field 'prompt'"):
        load_problems(None, source=f)
