"""The one grading retry policy, as a small pure piece.

Graders (``LocalGrader``, ``GraderActor``) make exactly one attempt per call and report how it
failed; what happens next is decided here and nowhere else. ``GraderPool`` applies it to Ray
calls; ``grade_with_retries`` (``sandbox/local_grader.py``) applies the same policy in one
thread for paths without Ray (the ``grade`` CLI, the micro model's evaluation).

The rules:

- A sandbox that dies (or hangs) under a batch leaves every verdict of the batch unknown, and
  any of its completions may be the one that killed it: each is retried alone, so a completion
  that kills its sandbox cannot sink its batch-mates.
- An actor that is lost (killed, node gone) is not its completions' fault: they are retried in
  batches as before. An actor that fails otherwise, or hangs past its deadline, is replaced and
  a batch's completions are retried alone (one of them may be the cause).
- A grading error (grading code raised on a request: a bad request or a bug) is the request's own
  and deterministic: in a batch, every completion is re-sent alone without it counting as a
  failed attempt; alone, it is final at once.
- A completion whose failed attempts exceed ``retries`` comes back as a failed verdict with a
  message saying why; it is never dropped.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum


class Failure(str, Enum):
    """How one grading call failed."""

    SANDBOX_DIED = "sandbox died"
    ACTOR_LOST = "actor lost"
    ACTOR_FAILED = "actor failed"
    ACTOR_HUNG = "actor hung"
    GRADING_ERROR = "grading error"


@dataclass(frozen=True)
class Decision:
    """What to do with one completion of a failed call.

    ``retry``: send it again; ``solo``: in a batch of its own; ``charged``: the failure counts as
    one of its attempts; ``message``: the verdict's error when not retried."""

    retry: bool
    solo: bool = False
    charged: bool = True
    message: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """``retries``: how many times a completion is retried after failed attempts."""

    retries: int = 2

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"grader.retries must be >= 0, got {self.retries}")

    def decide(self, failures: int, kind: Failure, batch_size: int, why: str) -> Decision:
        """The decision for a completion of a ``batch_size`` call that failed as ``kind``;
        ``failures``: its charged failed attempts before this one."""
        if kind is Failure.GRADING_ERROR:
            if batch_size > 1:
                return Decision(retry=True, solo=True, charged=False)
            return Decision(retry=False, message=f"grading error: {why}")
        if failures + 1 > self.retries:
            return Decision(retry=False, message=f"grading failed after {self.retries} retries: {kind.value}: {why}")
        solo = kind is Failure.SANDBOX_DIED or (kind in (Failure.ACTOR_FAILED, Failure.ACTOR_HUNG) and batch_size > 1)
        return Decision(retry=True, solo=solo)


def take_batch(pending: deque, limit: int) -> list:
    """Pop the next batch off ``pending`` (items with a ``solo`` flag): up to ``limit`` items in
    order, except that an item to be retried alone always goes in a batch of its own."""
    items = [pending.popleft()]
    while len(items) < limit and pending and not items[0].solo and not pending[0].solo:
        items.append(pending.popleft())
    return items


__all__ = ["Decision", "Failure", "RetryPolicy", "take_batch"]
