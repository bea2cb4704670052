"""The packaged problem set (vgrout_ray/env/builtin/problems.jsonl): loads, is well formed,
its canonical solutions pass and its tests reject constant answers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vgrout_ray.env.modes import ALL_MODES, HINTS, ORIGINAL_PHRASE
from vgrout_ray.env.problems import load_problems, read_rows

ROWS = read_rows()
IDS = [r["id"] for r in ROWS]
TIMEOUT_S = 10
# Constants a wrong Solution returns; each must fail at least one assert of every problem.
WRONG_CONSTANTS = [None, 0, -1, [], ""]


def _method(row: dict) -> str:
    return row["func_name"].split(".", 1)[1]


def _run(program: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def _program(row: dict, solution: str) -> str:
    return row["setup_code"] + "\n" + solution + "\n" + "\n".join(row["gt_answer"])


def test_set_size_and_difficulty():
    assert len(ROWS) >= 30
    diffs = [r["difficulty"] for r in ROWS]
    assert set(diffs) <= {"medium", "hard"}
    assert diffs.count("medium") > diffs.count("hard") > 0


@pytest.mark.parametrize("mode", ALL_MODES)
def test_loads_in_every_mode(mode):
    problems = load_problems(env_modes=(mode,))
    assert len(problems) == len(ROWS)
    for p, row in zip(problems, ROWS):
        assert p["problem_id"] == row["id"] and p["env_mode"] == mode
        user = [m for m in p["messages"] if m["role"] == "user"][0]["content"]
        assert HINTS[mode] in user
        assert p["gt_tests"] == row["gt_answer"] and p["canonical"] == row["canonical_solution"]


def test_loads_round_robin_over_all_modes():
    problems = load_problems(env_modes=ALL_MODES)
    assert [p["env_mode"] for p in problems] == [ALL_MODES[i % len(ALL_MODES)] for i in range(len(ROWS))]
    assert len(load_problems(n=5)) == 5


def test_ids_unique_and_out_of_leetcode_range():
    assert len(set(IDS)) == len(IDS)
    assert all(isinstance(i, int) and i >= 9001 for i in IDS)


@pytest.mark.parametrize("row", ROWS, ids=[str(i) for i in IDS])
def test_row_shape(row):
    method = _method(row)
    tests = row["gt_answer"]
    assert 8 <= len(tests) <= 14
    assert len(set(tests)) == len(tests)
    for t in tests:
        assert "\n" not in t and t.startswith(f"assert Solution().{method}(") and " == " in t
    user = row["prompt"][1]["content"]
    assert row["prompt"][1]["role"] == "user" and user.count(ORIGINAL_PHRASE) == 1
    assert "Example 1:" in user and "Example 2:" in user and "Constraints:" in user
    assert row["prompt_metadata"]["starter_code"].startswith(f"class Solution:\n    def {method}(self, ")
    assert "ListNode" not in row["canonical_solution"] and "TreeNode" not in row["canonical_solution"]


@pytest.mark.parametrize("row", ROWS, ids=[str(i) for i in IDS])
def test_canonical_passes(row, tmp_path):
    proc = _run(_program(row, row["canonical_solution"]), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _constant_solution(method: str, const) -> str:
    return f"class Solution:\n    def {method}(self, *args, **kwargs):\n        return {const!r}\n"


@pytest.mark.parametrize("row", ROWS, ids=[str(i) for i in IDS])
def test_constant_solution_fails(row, tmp_path):
    method = _method(row)
    # As a plain program in a fresh interpreter (how the graders run it) ...
    proc = _run(_program(row, _constant_solution(method, 0)), tmp_path)
    assert proc.returncode != 0, "returning 0 passes every test"
    assert "AssertionError" in proc.stderr
    # ... and, cheaply in-process, for a few more constants of other types.
    for const in WRONG_CONSTANTS:
        with pytest.raises(AssertionError):
            exec(compile(_program(row, _constant_solution(method, const)), f"<{row['id']}>", "exec"), {})


def test_file_matches_generator():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import author_builtin as _author

    assert _author.OUT_PATH.read_text(encoding="utf-8") == _author.render_jsonl(_author.build_rows())
