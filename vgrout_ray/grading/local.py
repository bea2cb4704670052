"""A grader that owns one sandbox in this process: grade batches, replace the sandbox when it dies.

The Ray ``GraderActor`` wraps one of these; the CLI and in-process training use it directly.
It makes one attempt per call; retries follow the one policy in ``sandbox/retry.py`` (applied by
``GraderPool`` on Ray and by ``grade_with_retries`` here).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from loguru import logger

from vgrout_ray.env.grading import Check, ExpectedCache, GradeRequest, RewardResult, grade_many, grade_under_modes
from vgrout_ray.env.modes import CHECK_MEMORY_MB, CHECK_TIMEOUT_S
from vgrout_ray.sandbox.backends import Sandbox, make_sandbox
from vgrout_ray.sandbox.client import Job, SandboxError
from vgrout_ray.grading.retry import Failure, RetryPolicy, take_batch


class LocalGrader:
    """Grades completions in one warm sandbox. Each call is one attempt: a sandbox that fails is
    dropped (the next call starts a fresh one) and the call raises SandboxError."""

    def __init__(self, sandbox: str = "auto", *, timeout: float = CHECK_TIMEOUT_S,
                 memory_mb: int = CHECK_MEMORY_MB, **sandbox_opts):
        self.kind = sandbox
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.sandbox_opts = {**sandbox_opts, "memory_mb": memory_mb}
        self.cache = ExpectedCache()
        self.replacements = 0
        self._sb: Sandbox | None = None

    @property
    def sandbox(self) -> Sandbox:
        if self._sb is None:
            self._sb = make_sandbox(self.kind, **self.sandbox_opts)
        return self._sb

    def _job(self, check: Check) -> Job:
        return Job(program=check.program, timeout=check.timeout, memory_mb=self.memory_mb)

    @property
    def started(self) -> Sandbox | None:
        """The live sandbox, or None when none is started (nothing is started by asking)."""
        return self._sb

    def discard_sandbox(self, why: str) -> None:
        """Drop the current sandbox after a failure; the next use starts a fresh one."""
        self.replacements += 1
        logger.warning(f"grader sandbox failed ({why}); replacing it (replacement #{self.replacements})")
        if self._sb is not None:
            try:
                self._sb.close()
            except Exception:
                pass
        self._sb = None

    def _attempt(self, fn, requests, **kw):
        """One try of ``fn`` on the current sandbox. A sandbox failure drops that sandbox (the next
        call starts a fresh one) and raises SandboxError: retrying is the caller's decision."""
        try:
            return fn(lambda jobs: self.sandbox.run(jobs), requests, make_job=self._job, timeout=self.timeout,
                      cache=self.cache, **kw)
        except SandboxError as e:
            self.discard_sandbox(str(e))
            raise

    def grade(self, requests: list[GradeRequest]) -> list[RewardResult]:
        """Verdicts in order, one attempt (a sandbox failure raises SandboxError; see
        ``grade_with_retries`` for the retry policy)."""
        return self._attempt(grade_many, list(requests)) if requests else []

    def grade_timed(self, requests: list[GradeRequest]) -> list[tuple[RewardResult, float | None]]:
        """Verdicts with each completion's run wall seconds (inf: timed out; None: nothing ran).
        One attempt: a sandbox failure raises SandboxError (the data build wants to know)."""
        walls: list = []
        res = self._attempt(grade_many, list(requests), walls=walls)
        return list(zip(res, walls))

    def grade_under_modes(self, requests: list[GradeRequest], modes: list[str]) -> list[dict[str, RewardResult]]:
        """Each completion's verdict under every mode, shared checks run once; one attempt (a
        sandbox failure raises SandboxError)."""
        return self._attempt(grade_under_modes, list(requests), modes=modes)

    def healthy(self) -> bool:
        return self._sb is not None and self._sb.healthy()

    def close(self) -> None:
        if self._sb is not None:
            self._sb.close()
            self._sb = None

    def __enter__(self) -> "LocalGrader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Pending:
    index: int
    failures: int = 0
    solo: bool = False


def grade_with_retries(grader: LocalGrader, requests: list[GradeRequest], policy: RetryPolicy = RetryPolicy(),
                       batch_size: int = 8) -> list[RewardResult]:
    """Verdicts in input order from ``grader`` in batches of ``batch_size``, sandbox failures
    handled by ``policy`` exactly as ``GraderPool`` does (retried alone; past ``retries`` a failed
    verdict with the reason). Anything but a sandbox failure raises: without Ray there is no
    actor to lose, and a bug in a one-shot job should be loud."""
    out: list[RewardResult | None] = [None] * len(requests)
    pending = deque(_Pending(i) for i in range(len(requests)))
    while pending:
        batch = take_batch(pending, max(1, batch_size))
        try:
            got = grader.grade([requests[p.index] for p in batch])
        except SandboxError as e:
            for p in reversed(batch):
                d = policy.decide(p.failures, Failure.SANDBOX_DIED, len(batch), str(e))
                p.failures += d.charged
                if d.retry:
                    p.solo = p.solo or d.solo
                    pending.appendleft(p)
                else:
                    logger.error(f"completion {p.index}: {d.message}")
                    out[p.index] = RewardResult.failed(d.message)
            continue
        for p, r in zip(batch, got):
            out[p.index] = r
    return out  # type: ignore[return-value]
