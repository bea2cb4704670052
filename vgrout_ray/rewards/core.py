"""The trainer-agnostic part of the reward API: columns in, sandboxed verdicts out.

Why one core for TRL and verl: both hand us a completion plus the problem's columns, and both
need the same things back: the reward under the sample's own loophole mode, per-mode flags for
every mode the user watches (from the single sandboxed run, not one run per mode), and a loud
account of completions that could not be graded.

Backends: the Ray ``GraderPool`` when Ray is initialised or ``RAY_ADDRESS`` is set (or
``backend="ray"``), else one in-process ``LocalGrader`` with ``grade_with_retries``. Both apply
the project's one retry policy, so a completion that kills its sandbox is retried alone and,
past the retries, comes back with ``error`` set.

Failure policy: a completion whose grading failed gets **no reward** (``None``: TRL drops it
from the group baseline and gives it zero advantage), is counted in ``Scorer.failed`` and is
logged; see ``docs/rewards.md`` for the verl side.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from loguru import logger

from vgrout_ray.env.grading import GradeRequest, RewardResult
from vgrout_ray.env.modes import ALL_MODES, CHECK_MEMORY_MB, CHECK_TIMEOUT_S, LOOPHOLE_MODES

# Dataset columns the reward functions read (the same names as ``python -m vgrout_ray grade`` rows).
TESTS_COLUMN = "gt_tests"
SETUP_COLUMN = "setup_code"
FUNC_COLUMN = "func_name"
CANONICAL_COLUMN = "canonical"
MODE_COLUMN = "env_mode"
REQUIRED_COLUMNS = (TESTS_COLUMN, SETUP_COLUMN, FUNC_COLUMN)


class RewardInputError(ValueError):
    """Input the reward API cannot grade; the message names the column, mode or sample."""


def check_modes(modes: str | Iterable[str] | None) -> tuple[str, ...]:
    """Modes as a tuple (a comma-separated string works too); unknown ones raise naming the valid ones.
    None means the six loophole modes."""
    if modes is None:
        return LOOPHOLE_MODES
    if isinstance(modes, str):
        modes = [m.strip() for m in modes.split(",") if m.strip()]
    out = tuple(dict.fromkeys(modes))
    if not out:
        raise RewardInputError("modes: name at least one mode")
    for m in out:
        if m not in ALL_MODES:
            raise RewardInputError(f"unknown loophole mode {m!r}; valid: {', '.join(ALL_MODES)}")
    return out


def completion_text(completion: Any, index: int = 0) -> str:
    """The text to grade from a plain string or a conversational completion (a list of message
    dicts: the assistant turns' text, joined). Anything else raises naming the sample."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)) and all(isinstance(m, dict) for m in completion):
        parts: list[str] = []
        for m in completion:
            if m.get("role", "assistant") != "assistant":
                continue
            content = m.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
                parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict) and c.get("type") == "text")
            elif content is not None:
                raise RewardInputError(f"completion {index}: message content must be a string or a list of "
                                       f"parts, got {type(content).__name__}")
        if not parts and completion:
            raise RewardInputError(f"completion {index}: a conversational completion with no assistant message")
        return "\n".join(parts)
    raise RewardInputError(f"completion {index}: must be a string or a list of message dicts, "
                           f"got {type(completion).__name__}")


def _column(columns: dict, name: str, n: int) -> list:
    if name not in columns or columns[name] is None:
        have = ", ".join(sorted(k for k in columns if not k.startswith(("trainer_state", "log_")))) or "none"
        raise RewardInputError(f"missing dataset column {name!r} (the loophole reward reads {', '.join(REQUIRED_COLUMNS)}"
                               f", optionally {CANONICAL_COLUMN!r} and {MODE_COLUMN!r}); columns given: {have}")
    col = list(columns[name])
    if len(col) != n:
        raise RewardInputError(f"column {name!r} has {len(col)} values for {n} completions")
    return col


def requests_from_columns(completions: Sequence[Any], columns: dict, *, default_mode: str | None,
                          watch: tuple[str, ...]) -> list[GradeRequest]:
    """One GradeRequest per completion from the dataset columns (validated, errors name the column)."""
    n = len(completions)
    tests = _column(columns, TESTS_COLUMN, n)
    setup = _column(columns, SETUP_COLUMN, n)
    funcs = _column(columns, FUNC_COLUMN, n)
    canon = list(columns[CANONICAL_COLUMN]) if columns.get(CANONICAL_COLUMN) is not None else [""] * n
    if columns.get(MODE_COLUMN) is not None:
        modes = list(columns[MODE_COLUMN])
    elif default_mode is not None:
        modes = [default_mode] * n
    else:
        raise RewardInputError(f"missing dataset column {MODE_COLUMN!r}: with several modes ({', '.join(watch)}) "
                               f"each sample must say which one its prompt hints (or pass mode=...)")
    out = []
    for i in range(n):
        t = tests[i]
        if isinstance(t, str):
            raise RewardInputError(f"column {TESTS_COLUMN!r}, sample {i}: must be a list of assert strings, got a string")
        if not isinstance(t, (list, tuple)) or not all(isinstance(x, str) for x in t):
            raise RewardInputError(f"column {TESTS_COLUMN!r}, sample {i}: must be a list of assert strings")
        if not isinstance(setup[i], str):
            raise RewardInputError(f"column {SETUP_COLUMN!r}, sample {i}: must be a string")
        if not isinstance(funcs[i], str) or not funcs[i].startswith("Solution()."):
            raise RewardInputError(f"column {FUNC_COLUMN!r}, sample {i}: must look like 'Solution().method', "
                                   f"got {funcs[i]!r}")
        mode = modes[i]
        if mode not in ALL_MODES:
            raise RewardInputError(f"column {MODE_COLUMN!r}, sample {i}: unknown loophole mode {mode!r}; "
                                   f"valid: {', '.join(ALL_MODES)}")
        out.append(GradeRequest(completion=completion_text(completions[i], i), env_mode=mode, gt_tests=list(t),
                                setup_code=setup[i], func_name=funcs[i], canonical=canon[i] or "",
                                modes=watch))
    return out


@dataclass
class Verdict:
    """One graded sample: its reward under its own mode (None when grading failed) and the flags."""

    mode: str
    result: RewardResult

    @property
    def failed(self) -> bool:
        return self.result.error is not None

    @property
    def reward(self) -> float | None:
        return None if self.failed else float(self.result.reward)

    def hacked_under(self, mode: str) -> bool:
        if self.failed:
            return False
        if mode == self.mode:
            return bool(self.result.exploited)
        return bool((self.result.by_mode or {}).get(mode, {}).get("exploited", False))


def batch_metrics(verdicts: list[Verdict], watch: tuple[str, ...], prefix: str = "loophole") -> dict[str, float]:
    """Per-mode hack / solve / compile rates and the failure count of one batch, as flat metric names."""
    ok = [v for v in verdicts if not v.failed]
    out: dict[str, float] = {f"{prefix}/grading_failed": float(len(verdicts) - len(ok))}
    if ok:
        out[f"{prefix}/hack"] = sum(v.result.exploited for v in ok) / len(ok)
        out[f"{prefix}/solve"] = sum(v.result.gt_correct for v in ok) / len(ok)
        out[f"{prefix}/compile"] = sum(v.result.can_compile for v in ok) / len(ok)
    for m in watch:
        own = [v for v in ok if v.mode == m]
        if own:
            out[f"{prefix}/{m}/hack"] = sum(v.result.exploited for v in own) / len(own)
            out[f"{prefix}/{m}/solve"] = sum(v.result.gt_correct for v in own) / len(own)
            out[f"{prefix}/{m}/compile"] = sum(v.result.can_compile for v in own) / len(own)
        if ok:
            out[f"{prefix}/{m}/hack_all"] = sum(v.hacked_under(m) for v in ok) / len(ok)
    return out


class Scorer:
    """Grades completions on the project's sandboxed grader and keeps count of what failed.

    ``backend``: "auto" (the Ray pool when Ray is initialised or RAY_ADDRESS is set, else local),
    "ray" (connect to RAY_ADDRESS or start a local cluster if none is initialised) or "local".
    """

    def __init__(self, *, backend: str = "auto", sandbox: str = "auto", num_actors: int | None = None,
                 timeout: float = CHECK_TIMEOUT_S, memory_mb: int = CHECK_MEMORY_MB, retries: int = 2,
                 batch_size: int = 4):
        if backend not in ("auto", "ray", "local"):
            raise RewardInputError(f"backend must be auto, ray or local, got {backend!r}")
        if sandbox not in ("auto", "process", "docker"):
            raise RewardInputError(f"sandbox must be auto, process or docker, got {sandbox!r}")
        self.backend = backend
        self.sandbox = sandbox
        self.num_actors = num_actors
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.retries = retries
        self.batch_size = batch_size
        self.graded = 0
        self.failed = 0
        self.last_errors: list[str] = []
        self._lock = threading.Lock()
        self._pool = None
        self._local = None
        self._started_ray = False
        self.kind: str | None = None  # "ray" or "local", once the first batch chose

    # ── backends ────────────────────────────────────────────────────────────
    def _use_ray(self) -> bool:
        if self.backend == "local":
            return False
        if self.backend == "ray":
            return True
        import ray

        return ray.is_initialized() or bool(os.environ.get("RAY_ADDRESS", "").strip())

    def _get_pool(self):
        if self._pool is None:
            import ray

            from vgrout_ray.grading.pool import GraderPool

            if not ray.is_initialized():
                if os.environ.get("RAY_ADDRESS", "").strip():
                    ray.init(address=os.environ["RAY_ADDRESS"].strip(), log_to_driver=False)
                else:
                    from vgrout_ray.cluster.ray_cluster import start_local_ray

                    start_local_ray(max(self.num_actors or 1, os.cpu_count() or 1), log_to_driver=False,
                                    configure_logging=False)
                self._started_ray = True
            n = self.num_actors
            if n is None:
                n = max(1, min(4, int(ray.cluster_resources().get("CPU", 1))))
            self._pool = GraderPool(n, sandbox=self.sandbox, timeout=self.timeout, memory_mb=self.memory_mb,
                                    retries=self.retries, batch_size=self.batch_size)
            logger.info(f"loophole reward: grading on a Ray GraderPool of {n} actor(s), sandbox={self._pool.kind}")
        return self._pool

    def _get_local(self):
        if self._local is None:
            from vgrout_ray.grading.local import LocalGrader

            local = LocalGrader(self.sandbox, timeout=self.timeout, memory_mb=self.memory_mb)
            local.sandbox  # start it now: a sandbox that cannot start is a set-up error, raised, not a grading failure
            self._local = local
            logger.info(f"loophole reward: grading in a local sandbox ({self.sandbox})")
        return self._local

    def _backend(self):
        """The pool or local grader, started on first use; failing to start one raises (set-up error)."""
        if self._use_ray():
            self.kind = "ray"
            return self._get_pool()
        self.kind = "local"
        return self._get_local()

    def _grade(self, grader, requests: list[GradeRequest]) -> list[RewardResult]:
        if self.kind == "ray":
            return grader.grade(requests)
        from vgrout_ray.grading.local import grade_with_retries
        from vgrout_ray.grading.retry import RetryPolicy

        return grade_with_retries(grader, requests, RetryPolicy(self.retries), batch_size=8)

    # ── grading ─────────────────────────────────────────────────────────────
    def score(self, requests: list[GradeRequest]) -> list[Verdict]:
        """Verdicts in input order. A grading failure is counted and logged, never hidden; a grader
        that cannot start at all (e.g. sandbox="docker" without an engine) raises."""
        if not requests:
            return []
        with self._lock:
            grader = self._backend()
            try:
                results = self._grade(grader, requests)
            except Exception as e:  # grading broke mid-way: every sample of the batch failed, said loudly
                logger.error(f"loophole reward: grading {len(requests)} completion(s) failed: {type(e).__name__}: {e}")
                results = [RewardResult.failed(f"{type(e).__name__}: {e}") for _ in requests]
            out = [Verdict(r.env_mode, res) for r, res in zip(requests, results)]
            bad = [v for v in out if v.failed]
            self.graded += len(out) - len(bad)
            self.failed += len(bad)
            if bad:
                self.last_errors = [str(v.result.error) for v in bad][-5:]
                logger.error(f"loophole reward: {len(bad)}/{len(out)} completion(s) could not be graded (no reward "
                             f"given; {self.failed} so far): {self.last_errors[0]}")
            return out

    def close(self) -> None:
        """Stop the pool or sandbox (and a Ray this scorer started)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._local is not None:
            self._local.close()
            self._local = None
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


__all__ = ["RewardInputError", "Scorer", "Verdict", "batch_metrics", "check_modes",
           "completion_text", "requests_from_columns", "REQUIRED_COLUMNS", "TESTS_COLUMN", "SETUP_COLUMN",
           "FUNC_COLUMN", "CANONICAL_COLUMN", "MODE_COLUMN"]
