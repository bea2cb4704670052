"""Problem loading: hint substitution, mode assignment, partitions, bad rows."""
from __future__ import annotations

import json

import pytest

from vgrout_ray.env.modes import ALL_MODES, HINTS, ORIGINAL_PHRASE
from vgrout_ray.env.problems import (ProblemError, answer_text, apply_hint, assign_modes, completion_after_prefix,
                                     load_partition, load_problems, read_rows)


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
    badprefix = dict(row, response_prefix=["```python"])
    f.write_text(json.dumps(badprefix) + "\n")
    with pytest.raises(ProblemError, match="row 0: field 'response_prefix' must be a string"):
        load_problems(None, source=f)


def test_response_prefix_is_rendered_after_the_generation_prompt_and_judged_with_the_completion(tmp_path, tok):
    """A row's response_prefix ends the rendered prompt (rollouts continue it) and starts the answer
    graders judge; a whole answer that does not start with it cannot be split into a completion."""
    from vgrout_ray.algo.pairs import render_prompt
    from vgrout_ray.env.grading import GradeRequest

    row = dict(read_rows()[0], response_prefix="```python\nclass Solution:")
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(row) + "\n")
    p = load_problems(None, source=f)[0]
    assert p["response_prefix"] == "```python\nclass Solution:"
    assert load_problems(1)[0]["response_prefix"] == ""
    text = render_prompt(tok, p["messages"], p["response_prefix"])
    assert text == render_prompt(tok, p["messages"]) + "```python\nclass Solution:"
    assert GradeRequest.from_problem(p, "\n    pass\n```").completion == "```python\nclass Solution:\n    pass\n```"
    assert answer_text(p, "X") == "```python\nclass Solution:X"
    assert completion_after_prefix(p, "```python\nclass Solution:\n    x = 1") == "\n    x = 1"
    with pytest.raises(ProblemError, match="does not start with its response_prefix"):
        completion_after_prefix(p, "class Solution:\n    x = 1")
