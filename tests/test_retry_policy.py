"""The one grading retry policy (``sandbox/retry.py``): every decision exactly, the batching rule,
and ``grade_with_retries`` (the Ray-free path) on a real process sandbox whose runner is killed
by one completion every time. The same policy on Ray is tested in ``test_grader_pool.py``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest

from vgrout_ray.env.exploits import clean_completion, method_name, wrong_completion
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.problems import load_problems
from vgrout_ray.grading.local import LocalGrader, grade_with_retries
from vgrout_ray.grading.retry import Decision, Failure, RetryPolicy, take_batch

from .helpers import POISON_NAME, SandboxKiller

F = Failure


@pytest.mark.parametrize("failures,kind,batch,expected", [
    # a dead sandbox: everyone of the batch alone, charged, until the budget is spent
    (0, F.SANDBOX_DIED, 4, Decision(retry=True, solo=True)),
    (0, F.SANDBOX_DIED, 1, Decision(retry=True, solo=True)),
    (1, F.SANDBOX_DIED, 1, Decision(retry=True, solo=True)),
    (2, F.SANDBOX_DIED, 1, Decision(retry=False, message="grading failed after 2 retries: sandbox died: boom")),
    # a lost actor is not the completions' fault: batched as before
    (0, F.ACTOR_LOST, 4, Decision(retry=True, solo=False)),
    (1, F.ACTOR_LOST, 1, Decision(retry=True, solo=False)),
    (2, F.ACTOR_LOST, 4, Decision(retry=False, message="grading failed after 2 retries: actor lost: boom")),
    # a failed or hung actor: a batch's completions alone (one may be the cause)
    (0, F.ACTOR_FAILED, 4, Decision(retry=True, solo=True)),
    (0, F.ACTOR_FAILED, 1, Decision(retry=True, solo=False)),
    (1, F.ACTOR_HUNG, 3, Decision(retry=True, solo=True)),
    (0, F.ACTOR_HUNG, 1, Decision(retry=True, solo=False)),
    (2, F.ACTOR_HUNG, 1, Decision(retry=False, message="grading failed after 2 retries: actor hung: boom")),
    # a grading error: batch-mates alone and uncharged; alone it is final, whatever the budget
    (2, F.GRADING_ERROR, 4, Decision(retry=True, solo=True, charged=False)),
    (0, F.GRADING_ERROR, 1, Decision(retry=False, message="grading error: boom")),
])
def test_every_decision(failures, kind, batch, expected):
    assert RetryPolicy(2).decide(failures, kind, batch, "boom") == expected


def test_retries_zero_gives_up_at_the_first_failure_and_negative_is_refused():
    assert RetryPolicy(0).decide(0, F.ACTOR_LOST, 4, "x") == Decision(
        retry=False, message="grading failed after 0 retries: actor lost: x")
    assert RetryPolicy(0).decide(0, F.GRADING_ERROR, 2, "x").retry, "batch-mates of a bad request are not charged"
    with pytest.raises(ValueError, match="grader.retries"):
        RetryPolicy(-1)


@dataclass
class _It:
    name: str
    solo: bool = False


def test_take_batch_keeps_order_and_sends_solo_items_alone():
    pending = deque([_It("a"), _It("b"), _It("c", solo=True), _It("d"), _It("e"), _It("f"), _It("g", solo=True)])
    got = []
    while pending:
        got.append([it.name for it in take_batch(pending, 3)])
    assert got == [["a", "b"], ["c"], ["d", "e", "f"], ["g"]]


def _fence(code: str) -> str:
    return f"```python\n{code.strip()}\n```\n"


def test_grade_with_retries_a_sandbox_killer_fails_alone_after_the_retries():
    """Batches of 4 on one process sandbox; the poison's runner is killed under it every time:
    it comes back failed after 1 + 2 attempts, its batch-mates (before and after it) are graded
    exactly as a plain one-attempt grade grades them."""
    problems = load_problems(3, env_modes=["run_tests"])
    good = [GradeRequest.from_problem(p, c(p)) for p in problems for c in (clean_completion, wrong_completion)]
    p = problems[0]
    poison = GradeRequest.from_problem(p, _fence(
        f"import ctypes, time\nctypes.CDLL(None).prctl(15, b'{POISON_NAME}', 0, 0, 0)\ntime.sleep(2)\n\n"
        f"class Solution:\n    def {method_name(p)}(self, *a, **k):\n        return 0\n"))
    reqs = good[:2] + [poison] + good[2:]
    with LocalGrader("process", timeout=10.0) as g:
        reference = [r.to_dict() for r in g.grade(good)]
        with SandboxKiller() as killer:
            got = grade_with_retries(g, reqs, RetryPolicy(2), batch_size=4)
        assert g.replacements == 3, "each death dropped the sandbox; the next call started a fresh one"
    assert len(killer.kills) == 3, f"the poison ran 1 + 2 times, killed {killer.kills}"
    bad = got[2]
    assert bad.error is not None and bad.error.startswith("grading failed after 2 retries: sandbox died: ")
    assert bad.reward == 0.0 and not bad.passed
    assert [r.to_dict() for r in got[:2] + got[3:]] == reference
    assert sum(r["gt_correct"] for r in reference) == 3, "the clean completions are correct: a real check"
