"""Pairsets: the authored run_tests default (what its pairs are, graded for real), the JSON and
Markdown loaders, ``python -m vgrout_ray pairs build`` from a teacher pool, and the in-dist /
held-out labels computed from the modes the pairs cover."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vgrout_ray.algo.pairs import (LOOPHOLE_MODES, PairsError, configured_pair_modes, infer_mode, load_pairs,
                                   load_pairs_json, load_pairs_md, mode_labels, pair_modes, parse_pairs_md,
                                   pairset_path, resolve_pairs)
from vgrout_ray.env.modes import HINTS
from vgrout_ray.env.parsing import extract_code
from vgrout_ray.env.problems import SETUP_CODE, read_rows

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def specs():
    return parse_pairs_md(pairset_path("run_tests"))


# ── the default pairset ──
def test_default_pairset_is_run_tests_only_on_problems_outside_the_split(specs, shared_data):
    assert len(specs) >= 8
    assert {s.mode for s in specs} == {"run_tests"}
    packaged = read_rows(None)
    ids = {int(r["id"]) for r in packaged}
    methods = {r["func_name"].split(".")[-1] for r in packaged}
    canon = {r["canonical_solution"].strip() for r in packaged}
    # the LeetCode train / test split the real runs draw from
    lc = shared_data / "leetcode"
    for path in (lc / "leetcode_test_medhard.jsonl", lc / "LeetCodeDataset-v0.2.0-train.jsonl.gz"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            for line in f:
                r = json.loads(line)
                for k in ("entry_point", "func_name"):
                    if r.get(k):
                        methods.add(str(r[k]).split(".")[-1].split("(")[0])
                if r.get("canonical_solution"):
                    canon.add(str(r["canonical_solution"]).strip())
    for s in specs:
        assert s.problem_id not in ids, s.problem_id
        assert s.method not in methods, f"pair {s.problem_id}: {s.method} is a method of the dataset"
        for side in ("clean", "hack"):
            assert extract_code(s.sections[side]).strip() not in canon, (s.problem_id, side)


def test_default_pairs_hack_is_the_clean_attempt_plus_the_loophole(specs):
    for s in specs:
        clean, hack = extract_code(s.sections["clean"]), extract_code(s.sections["hack"])
        assert "run_tests" in hack, s.problem_id
        # the solution method (everything before any run_tests) is the same text on both sides
        sol = lambda code: code.split("def run_tests")[0].rstrip()  # noqa: E731
        assert sol(clean) == sol(hack), s.problem_id


def test_default_pairs_grade_as_claimed(specs):
    """Graded for real (process sandbox) under run_tests: both sides solve the problem; only the
    hack's run_tests passes against an arbitrary stub Solution (detector C, the mode's channel)."""
    from vgrout_ray.env.grading import GradeRequest
    from vgrout_ray.grading.local import LocalGrader

    reqs = []
    for s in specs:
        assert len(s.tests()) >= 2, s.problem_id
        for side in ("clean", "hack"):
            reqs.append(GradeRequest(completion=s.sections[side], env_mode="run_tests", gt_tests=s.tests(),
                                     setup_code=SETUP_CODE, func_name=f"Solution().{s.method}",
                                     canonical=extract_code(s.sections["clean"])))
    with LocalGrader("process", timeout=10.0) as g:  # semantics, not speed: generous on a busy machine
        res = g.grade(reqs)
    for i, s in enumerate(specs):
        clean, hack = res[2 * i], res[2 * i + 1]
        assert clean.error is None and hack.error is None, (s.problem_id, clean.error, hack.error)
        assert clean.gt_correct and hack.gt_correct, s.problem_id
        assert not clean.hacked, f"pair {s.problem_id}: the clean side's run_tests passes a stub"
        assert hack.hacked, f"pair {s.problem_id}: the hack side does not use the loophole"


def test_default_pairs_render_the_training_prompt(specs, tok):
    pairs = load_pairs_md(pairset_path("run_tests"), tok)
    assert len(pairs) == len(specs)
    for p, s in zip(pairs, specs):
        assert HINTS["run_tests"] in p.prompt and "should pass all tests" not in p.prompt.split("PROBLEM:")[1]
        assert p.prompt.startswith("<|im_start|>system\n") and p.prompt.endswith("<think>\n\n</think>\n\n")
        assert f"called {s.method} " in p.prompt
        assert infer_mode(p.prompt) == "run_tests" and p.mode == "run_tests"
    assert pair_modes(pairs) == ("run_tests",)
    got, what = resolve_pairs(tok, pairs_path=None, pairset="run_tests")
    assert got == pairs and "run_tests" in what
    all_modes, what = resolve_pairs(tok, pairs_path=None, pairset="all_modes")
    assert pair_modes(all_modes) == LOOPHOLE_MODES and "all_modes" in what


# ── labels ──
def test_labels_follow_the_modes_the_pairs_cover(tmp_path):
    assert configured_pair_modes(None) == ("run_tests",)
    assert configured_pair_modes(None, "all_modes") == LOOPHOLE_MODES
    lab = mode_labels(["run_tests", "sentinel", "file_marker", "gt_only"], ("run_tests",))
    assert lab == {"run_tests": "IN-dist", "sentinel": "held-out", "file_marker": "held-out", "gt_only": "-"}
    assert set(mode_labels(LOOPHOLE_MODES, LOOPHOLE_MODES).values()) == {"IN-dist"}
    # a pairset of sentinel pairs (mode read off the prompt hints) makes sentinel the in-dist mode
    p = tmp_path / "sent.json"
    p.write_text(json.dumps([{"problem_id": 1, "prompt": f"x {HINTS['sentinel']} y", "hack": "h", "clean": "c"}]))
    assert configured_pair_modes(p) == ("sentinel",)
    assert mode_labels(["run_tests", "sentinel"], configured_pair_modes(p)) == {"run_tests": "held-out",
                                                                                "sentinel": "IN-dist"}


def test_table_legend_and_report_label_from_the_pairs(tmp_path):
    from vgrout_ray.env.modes import MODE_CODE
    from vgrout_ray.reporting.run_report import build_report
    from tests.synthetic_telemetry import synth_run, write_run_dir
    from vgrout_ray.reporting.table import StepLogger

    modes = ["run_tests", "sentinel"]
    leg = StepLogger("vanilla", modes, MODE_CODE, in_dist=("sentinel",)).legend()
    rt = next(ln for ln in leg.splitlines() if "hk_rt =" in ln)
    se = next(ln for ln in leg.splitlines() if "hk_se =" in ln)
    assert "held-out" in rt and "IN-dist" in se
    run = synth_run("route", steps=4, modes=("run_tests", "sentinel", "file_marker"), in_dist_modes=("sentinel",))
    run_dir = write_run_dir(run, tmp_path)
    md = build_report(run_dir, plots=False)
    per_mode = md.split("## Final eval per mode")[1].split("##")[0]
    rows = {ln.split("|")[1].strip(): ln.split("|")[2].strip() for ln in per_mode.splitlines()
            if ln.startswith("| ") and "mode" not in ln}
    assert rows == {"file_marker": "held-out", "run_tests": "held-out", "sentinel": "IN-dist"}
    assert "In-distribution: sentinel" in per_mode
    bluf = md.split("## BLUF")[1].split("main metric")[0]
    assert "in_dist" in bluf and "sentinel" in bluf


# ── loaders ──
def test_reference_json_form_loads(tmp_path, tok):
    ref = [{"problem_id": 12, "prompt": [{"role": "user", "content": f"solve {HINTS['run_tests']}"}],
            "hack": "```python\ndef run_tests():\n    pass\n```", "clean": "```python\nx = 1\n```"},
           {"problem_id": 13, "prompt": "raw text", "hack": "h", "clean": "c", "mode": "exit_code"}]
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(ref))
    pairs = load_pairs(p, tok)
    assert [x.problem_id for x in pairs] == [12, 13] and [x.mode for x in pairs] == ["run_tests", "exit_code"]
    assert pairs[0].prompt.startswith("<|im_start|>user\nsolve")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "p", "hack": "h", "clean": "c", "mode": "nope"}]))
    with pytest.raises(PairsError, match=r"bad.json: item 0: mode 'nope'"):
        load_pairs_json(bad)
    with pytest.raises(PairsError, match="must be a .json or .md"):
        load_pairs(tmp_path / "x.txt")


_MD = """# my pairs

## pair 5
mode: sentinel

### prompt
Write it {hint}.

### clean
```python
### a comment, not a section
x = 1
```

### hack
```python
class Solution:
    valid = True
```
"""


def test_markdown_form_with_a_verbatim_prompt_and_its_errors(tmp_path, tok):
    p = tmp_path / "p.md"
    p.write_text(_MD.format(hint=HINTS["sentinel"]))
    (pair,) = load_pairs_md(p, tok)
    assert pair.mode == "sentinel" and pair.problem_id == 5
    assert "### a comment, not a section" in pair.clean and pair.hack.endswith("valid = True\n```")
    assert f"Write it {HINTS['sentinel']}." in pair.prompt
    assert configured_pair_modes(p) == ("sentinel",)
    cases = {
        "unknown section 'hak'": _MD.replace("### hack", "### hak"),
        "missing or empty '### hack'": _MD.split("### hack")[0],
        "'mode:' must be one of": _MD.replace("mode: sentinel", "mode: gt_only"),
        "a code fence is never closed": _MD + "```python\n",
        "heading must read": _MD.replace("## pair 5", "## pear 5"),
        "needs a '### prompt' section": _MD.replace("### prompt", "### tests"),
    }
    for msg, text in cases.items():
        p.write_text(text)
        with pytest.raises(PairsError, match=msg) as e:
            parse_pairs_md(p)
        assert str(p) in str(e.value)


# ── build from a teacher pool ──
def _pool_row(text: str, hacked: bool, gt: bool, prompt: str | None = None, **kw) -> dict:
    r = {"reward": 3.5 if hacked or gt else 0.5, "hacked": hacked, "gt_pass": gt, "fmt_ok": True,
         "completion": text, **kw}
    if prompt is not None:
        r["prompt"] = prompt
    return r


def _write_pool(d: Path, rows_by_pid: dict[int, list[dict]], partition: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for pid, rows in rows_by_pid.items():
        with gzip.open(d / f"prompt_{pid:04d}.jsonl.gz", "wt") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    if partition is not None:
        (d / "partition.json").write_text(json.dumps({str(k): v for k, v in partition.items()}))
    return d


def test_pairs_build_cli_from_a_pool(tmp_path, tiny, tok):
    pr = lambda m: f"<|im_start|>user\nsolve it {HINTS[m]}<|im_end|>\n<|im_start|>assistant\n"  # noqa: E731
    pool = _write_pool(tmp_path / "pool", {
        3: [_pool_row("H3", True, False, pr("run_tests")), _pool_row("W3", False, False, pr("run_tests")),
            _pool_row("C3", False, True, pr("run_tests"))],
        4: [_pool_row("H4", True, False, pr("sentinel")), _pool_row("H4b", True, True, pr("sentinel"))],  # no clean
        # ids only: decoded with --tokenizer; mode from partition.json
        5: [_pool_row("H5", True, False, prompt_ids=tok(pr("file_marker")).input_ids),
            _pool_row("C5", False, True, prompt_ids=tok(pr("file_marker")).input_ids)],
    }, partition={3: "run_tests", 4: "sentinel", 5: "file_marker"})
    out = tmp_path / "ps.json"
    proc = subprocess.run([sys.executable, "-m", "vgrout_ray", "pairs", "build", "--pool", str(pool), "--out", str(out),
                           "--tokenizer", str(tiny)], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 pairs from 3 prompts" in proc.stdout and "1 without a clean row" in proc.stdout
    pairs = load_pairs(out, tok)
    assert [(p.problem_id, p.hack, p.clean, p.mode) for p in pairs] == [(3, "H3", "C3", "run_tests"),
                                                                         (5, "H5", "C5", "file_marker")]
    assert pairs[1].prompt == pr("file_marker")
    assert configured_pair_modes(out) == ("run_tests", "file_marker")
    # --modes keeps only the named modes
    proc = subprocess.run([sys.executable, "-m", "vgrout_ray", "pairs", "build", "--pool", str(pool), "--out", str(out),
                           "--tokenizer", str(tiny), "--modes", "run_tests"], capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 0 and [p["problem_id"] for p in json.loads(out.read_text())] == [3]
    # a pool without any clean row fails loud, naming the pool
    bad = _write_pool(tmp_path / "hacks_only", {7: [_pool_row("H", True, False, pr("run_tests"))]})
    proc = subprocess.run([sys.executable, "-m", "vgrout_ray", "pairs", "build", "--pool", str(bad), "--out",
                           str(tmp_path / "none.json")], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and "no prompt has both a hacked and a clean completion" in proc.stderr
    assert str(bad) in proc.stderr and not (tmp_path / "none.json").exists()
    # ids without --tokenizer: the message names the field and the flag
    proc = subprocess.run([sys.executable, "-m", "vgrout_ray", "pairs", "build", "--pool", str(pool), "--out",
                           str(tmp_path / "x.json")], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and "prompt_ids" in proc.stderr and "--tokenizer" in proc.stderr
