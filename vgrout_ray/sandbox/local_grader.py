"""A grader that owns one sandbox in this process: grade batches, replace the sandbox when it dies.

The Ray ``GraderActor`` wraps one of these; the CLI and in-process training use it directly.
"""
from __future__ import annotations

from loguru import logger

from ..env.grading import Check, ExpectedCache, GradeRequest, RewardResult, grade_many, grade_under_modes
from ..env.modes import CHECK_MEMORY_MB, CHECK_TIMEOUT_S
from .backends import Sandbox, make_sandbox
from .client import Job, SandboxError


class LocalGrader:
    """Grades completions in one warm sandbox; a sandbox that fails is replaced and the work retried."""

    def __init__(self, sandbox: str = "auto", *, timeout: float = CHECK_TIMEOUT_S,
                 memory_mb: int = CHECK_MEMORY_MB, retries: int = 2, **sandbox_opts):
        self.kind = sandbox
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.retries = retries
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

    def grade_once(self, requests: list[GradeRequest]) -> list[RewardResult]:
        """One attempt on the current sandbox; a sandbox failure raises SandboxError (no retry)."""
        return grade_many(lambda jobs: self.sandbox.run(jobs), requests, make_job=self._job,
                          timeout=self.timeout, cache=self.cache)

    def grade_timed(self, requests: list[GradeRequest]) -> list[tuple[RewardResult, float | None]]:
        """Verdicts with each completion's run wall seconds (inf: timed out; None: nothing ran).
        No retry: a sandbox failure raises SandboxError (the data build wants to know)."""
        walls: list = []
        res = grade_many(lambda jobs: self.sandbox.run(jobs), requests, make_job=self._job,
                         timeout=self.timeout, cache=self.cache, walls=walls)
        return list(zip(res, walls))

    def grade(self, requests: list[GradeRequest]) -> list[RewardResult]:
        """Verdicts in order. A sandbox failure is retried on a fresh sandbox; after ``retries``
        failures a completion is returned with ``error`` set (never dropped)."""
        if not requests:
            return []
        try:
            return self.grade_once(requests)
        except SandboxError as e:
            self.discard_sandbox(str(e))
        # Retry one by one so a completion that kills its sandbox cannot sink the others.
        out = []
        for req in requests:
            err = None
            for _ in range(max(1, self.retries)):
                try:
                    out.append(self.grade_once([req])[0])
                    break
                except SandboxError as e:
                    err = str(e)
                    self.discard_sandbox(err)
            else:
                out.append(RewardResult.failed(f"sandbox failed {self.retries + 1} times: {err}"))
        return out

    def grade_under_modes(self, requests: list[GradeRequest], modes: list[str]) -> list[dict[str, RewardResult]]:
        """Each completion's verdict under every mode, shared checks run once. A sandbox failure
        is retried once on a fresh sandbox; a second one raises SandboxError."""
        def attempt():
            return grade_under_modes(lambda jobs: self.sandbox.run(jobs), requests, modes, make_job=self._job,
                                     timeout=self.timeout, cache=self.cache)
        try:
            return attempt()
        except SandboxError as e:
            self.discard_sandbox(str(e))
        return attempt()

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
