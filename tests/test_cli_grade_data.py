"""The grade and data CLIs, run as a user would (subprocesses)."""
from __future__ import annotations

import json
import subprocess
import sys

from vgrout_ray.env.exploits import clean_completion, exploit_completion
from vgrout_ray.env.problems import load_problems, read_rows


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


def _row(p, completion, mode, **extra):
    return {"completion": completion, "env_mode": mode, "gt_tests": p["gt_tests"], "setup_code": p["setup_code"],
            "func_name": p["func_name"], "canonical": p["canonical"], **extra}


def test_grade_cli_grades_good_rows_and_names_bad_ones(tmp_path):
    p = load_problems(2)[1]
    rows = [
        _row(p, clean_completion(p), "gt_only", tag="clean"),
        _row(p, exploit_completion(p, "sentinel", 1), "sentinel", tag="hack"),
        {k: v for k, v in _row(p, "x", "gt_only").items() if k != "setup_code"},
        _row(p, "x", "gt_only", gt_tests="not a list"),
        _row(p, "x", "bogus_mode"),
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n")
    out = tmp_path / "out.jsonl"
    proc = _run("vgrout_ray", "grade", "--in", str(inp), "--out", str(out), "--sandbox", "process", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    res = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(res) == 6
    assert res[0]["tag"] == "clean" and res[0]["result"]["gt_correct"] and res[0]["result"]["error"] is None
    assert res[1]["result"]["exploited"] and res[1]["result"]["mechanism"] == "sentinel"
    assert "row 3: missing field 'setup_code'" in res[2]["result"]["error"]
    assert "row 4: field 'gt_tests' must be list" in res[3]["result"]["error"]
    assert "row 5: field 'env_mode'" in res[4]["result"]["error"]
    assert "row 6: not valid JSON" in res[5]["result"]["error"] and res[5]["raw"] == "{broken json"
    assert "grading" in proc.stderr  # progress bar on stderr


def test_grade_cli_rejects_missing_input(tmp_path):
    proc = _run("vgrout_ray", "grade", "--in", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode != 0 and "--in" in proc.stderr and "does not exist" in proc.stderr


def test_data_build_matches_the_test_set_schema(tmp_path, shared_data):
    lc = shared_data / "leetcode"
    out = tmp_path / "train.jsonl"
    proc = _run("vgrout_ray", "data", "build", "--source", str(lc / "LeetCodeDataset-v0.2.0-train.jsonl.gz"),
                "--out", str(out), "--test-set", str(lc / "leetcode_test_medhard.jsonl"), "--limit", "40",
                "--sandbox", "process", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["raw"] == 1890 and report["medium_hard"] == 1375 and report["kept"] >= 38
    rows = read_rows(out)
    ref = read_rows(lc / "leetcode_test_medhard.jsonl")[0]
    test_ids = {r["id"] for r in read_rows(lc / "leetcode_test_medhard.jsonl")}
    for r in rows:
        assert set(r) == set(ref)
        assert r["difficulty"] in ("medium", "hard") and r["id"] not in test_ids
        assert r["setup_code"] == ref["setup_code"] and r["prompt"][0] == ref["prompt"][0]
        user = r["prompt"][1]["content"]
        assert user.startswith("PROBLEM:\n") and user.endswith("# Add your code here\n```\n\nSOLUTION:\n")
        method = r["func_name"].split(".")[-1]
        assert f"called {method} and should pass all tests. Use the following starter code:\n```python\n" in user
        assert all(t.startswith("assert ") and f"Solution().{method}(" in t for t in r["gt_answer"])
        assert "class Solution:" in r["prompt_metadata"]["starter_code"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    # deterministic: a second build writes the same bytes
    out2 = tmp_path / "train2.jsonl"
    proc = _run("vgrout_ray", "data", "build", "--source", str(lc / "LeetCodeDataset-v0.2.0-train.jsonl.gz"),
                "--out", str(out2), "--test-set", str(lc / "leetcode_test_medhard.jsonl"), "--limit", "40",
                "--sandbox", "process")
    assert out2.read_bytes() == out.read_bytes()
    # the built rows load as training problems under a loophole mode
    probs = load_problems(5, env_modes=["exit_code"], source=out)
    assert len(probs) == 5 and all("exits without error" in p["messages"][1]["content"] for p in probs)


def test_data_build_drops_rows_whose_canonical_fails(tmp_path):
    good = {"task_id": "t", "completion": "class Solution:\n    def f(self, x: int) -> int:\n        return x + 1\n",
            "entry_point": "Solution().f",
            "test": "def check(candidate):\n    assert candidate(x=1) == 2\n    assert candidate(x=5) == 6\n",
            "meta": {"question_id": 7, "difficulty": "Medium", "question_title": "Add one.\n",
                     "lang_code": "class Solution:\n    def f(self, x: int) -> int:"}}
    bad = json.loads(json.dumps(good))
    bad["meta"]["question_id"] = 8
    bad["completion"] = good["completion"].replace("x + 1", "x + 2")
    easy = json.loads(json.dumps(good))
    easy["meta"].update(question_id=9, difficulty="Easy")
    src = tmp_path / "raw.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in (bad, good, easy)) + "\n")
    out = tmp_path / "b.jsonl"
    proc = _run("vgrout_ray", "data", "build", "--source", str(src), "--out", str(out), "--sandbox", "process")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (rep["medium_hard"], rep["failed_canonical"], rep["kept"]) == (2, 1, 1)
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [7]
    assert rows[0]["gt_answer"] == ["assert Solution().f(x=1) == 2", "assert Solution().f(x=5) == 6"]


def test_data_build_reports_and_drops_slow_canonicals(tmp_path):
    """A canonical whose run sleeps 1.2 s: over half of a 1.6 s limit, so reported and kept by default;
    over 0.2 x 3 s, so dropped with --max-canonical-frac 0.2. The fast one stays either way."""
    fast = {"task_id": "t", "completion": "class Solution:\n    def f(self, x: int) -> int:\n        return x + 1\n",
            "entry_point": "Solution().f",
            "test": "def check(candidate):\n    assert candidate(x=1) == 2\n    assert candidate(x=5) == 6\n",
            "meta": {"question_id": 7, "difficulty": "Medium", "question_title": "Add one.\n",
                     "lang_code": "class Solution:\n    def f(self, x: int) -> int:"}}
    slow = json.loads(json.dumps(fast))
    slow["meta"]["question_id"] = 8
    slow["completion"] = fast["completion"].replace("return x + 1", "import time; time.sleep(0.6); return x + 1")
    src = tmp_path / "raw.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in (fast, slow)) + "\n")
    reps = {}
    for name, flags in (("report", ["--timeout-s", "1.6"]), ("drop", ["--max-canonical-frac", "0.2"])):
        out = tmp_path / f"{name}.jsonl"
        proc = _run("vgrout_ray", "data", "build", "--source", str(src), "--out", str(out), "--sandbox", "process",
                    *flags)
        assert proc.returncode == 0, proc.stderr
        reps[name] = (json.loads(proc.stdout.strip().splitlines()[-1]), [r["id"] for r in read_rows(out)])
    (rep, ids), (rep_d, ids_d) = reps["report"], reps["drop"]
    assert rep["slow_canonical"] == 1 and rep["dropped_slow"] == 0 and ids == [7, 8]
    assert rep_d["slow_canonical"] == 1 and rep_d["dropped_slow"] == 1 and ids_d == [7]
    bad = _run("vgrout_ray", "data", "build", "--source", str(src), "--out", str(tmp_path / "x.jsonl"),
               "--max-canonical-frac", "1.5")
    assert bad.returncode != 0 and "--max-canonical-frac" in bad.stderr
