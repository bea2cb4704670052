"""One streamed step: generation, grading and the learner's backward overlap.

``StepScheduler.run`` sends each prompt's generation call to the rollout pool; as each call
finishes its completions are checked (every one must come from the δS version the step started
at), decoded and submitted for grading; as each prompt's grades are all in, and all prompts
before it have gone, its group goes to the learner, in prompt order (so the run is
reproducible); then the learner's ``end_step``. It returns a typed ``StepResult``.

It talks to three small interfaces, so tests can drive it with in-process fakes:

- rollouts: ``submit(key, reqs, actor=i)``, ``poll(timeout) -> [GenDone]``, ``pending``, ``size``,
  ``notify(event)`` (``rollout.pool.RolloutPool``; replacement and replay happen inside it);
- graders: ``submit(requests, keys)``, ``poll(timeout) -> [Graded]``, ``notify(event)``
  (``GraderPool.stream()``; retries happen inside the pool, a completion that cannot be graded
  comes back with ``error``);

Both pools set the scheduler's one ``threading.Event`` when something finishes, so the loop
sleeps until there is news instead of polling on a timer.
- learner: ``add_group(index, group) -> handle``, ``collect(handles) -> [GroupResult]``, ``end_step()``
  (``run.learner.LearnerClient``).
"""
from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from vgrout_ray.env.grading import GradeRequest, RewardResult
from vgrout_ray.learner.core import GroupResult, LearnerStepStats, RolloutGroup
from vgrout_ray.run.sampling import PromptPlan


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Total time covered by a set of [start, end] intervals (a phase's active wall time)."""
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


class PhaseTimer:
    """Wall time per phase of a step as the union of its intervals (overlapping calls count once)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def add(self, phase: str, start: float, end: float | None = None) -> None:
        self.spans[phase].append((start, time.perf_counter() if end is None else end))

    def seconds(self, phase: str) -> float:
        return union_seconds(self.spans.get(phase, []))


@dataclass
class StudentBatch:
    """A prompt's generated completions, in request order (training-view slice, then ablated)."""

    ids: list[list[int]] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    ablated: list[bool] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    sampler_logps: list[list[float] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class StepTiming:
    gen: float = 0.0  # wall seconds some generation call was running
    gen_busy: float = 0.0  # engine seconds summed over calls
    grade: float = 0.0  # wall seconds some prompt was being graded
    tokens: int = 0


@dataclass
class StepResult:
    """A finished step: per plan its students, their verdicts and the learner's group info."""

    step: int
    version: int  # the δS version every rollout of the step came from
    plans: list[PromptPlan]
    students: list[StudentBatch]
    grades: list[list[RewardResult]]
    infos: list[GroupResult]  # the learner's answer per plan (student and teacher rows by name)
    stats: LearnerStepStats
    grade_errors: int
    timing: StepTiming


# Longest sleep between two looks at the pools when no pool has reported news: a safety net only
# (the pools wake the scheduler when a call finishes), so a lost wake-up costs seconds, not a hang.
WAKE_TIMEOUT_S = 2.0


@dataclass
class _Slot:
    """One prompt's progress through a step: its completions, then their grades as they arrive."""

    students: StudentBatch | None = None
    grades: dict[int, RewardResult] = field(default_factory=dict)  # completion index -> verdict
    graded_from: float = 0.0  # when its completions went to grading

    @property
    def complete(self) -> bool:
        return self.students is not None and len(self.grades) == len(self.students)

    @property
    def results(self) -> list[RewardResult]:
        return [self.grades[gi] for gi in range(len(self.grades))]


class VersionMismatch(AssertionError):
    """A rollout came from another δS version than the learner's: strict on-policy is broken."""


class StepScheduler:
    """Streams one step over rollout pool → grader pool → learner (see the module docstring)."""

    def __init__(self, rollouts, graders, learner, decode: Callable[[list[list[int]]], list[str]], *,
                 compat: str = "reference"):
        self.rollouts = rollouts
        self.graders = graders
        self.learner = learner
        self.decode = decode
        self.compat = compat
        self.wake = threading.Event()
        rollouts.notify(self.wake)
        graders.notify(self.wake)
        self.waits = 0  # times the loop slept on ``wake`` (tests check it does not spin)

    def run(self, step: int, plans: list[PromptPlan], version: int) -> StepResult:
        slots = [_Slot() for _ in plans]
        timer, timing = PhaseTimer(), StepTiming()
        handles, next_learn, grade_errors = [], 0, 0
        for k, pl in enumerate(plans):  # one call per prompt: prompts flow into grading as each finishes
            self.rollouts.submit(k, pl.reqs, actor=k % self.rollouts.size)
        while next_learn < len(plans):
            self.wake.clear()  # before polling: news that lands after the polls below wakes the wait
            news = False
            for done in self.rollouts.poll(timeout=0.0):
                news = True
                timer.add("gen", done.started, done.finished)
                slot = slots[done.key]
                slot.students = self._students(done.results, version, timing)
                slot.graded_from = time.perf_counter()
                self._grade(step, done.key, plans[done.key], slot.students)
            for g in self.graders.poll(timeout=0.0):
                news = True
                s_, k, gi = g.key
                if s_ != step:
                    continue
                slots[k].grades[gi] = g.result
                if slots[k].complete:
                    timer.add("grade", slots[k].graded_from)
            while next_learn < len(plans) and slots[next_learn].complete:
                slot = slots[next_learn]
                grade_errors += sum(r.error is not None for r in slot.results)
                handles.append(self.learner.add_group(next_learn, self._group(plans[next_learn], slot)))
                next_learn += 1
            if not news and next_learn < len(plans):
                self._sleep()
        infos = self.learner.collect(handles)
        stats = self.learner.end_step()
        timing.gen, timing.grade = timer.seconds("gen"), timer.seconds("grade")
        return StepResult(step, version, plans, [s.students for s in slots], [s.results for s in slots], infos,
                          stats, grade_errors, timing)

    def _sleep(self) -> None:
        """Wait for a pool to report news (the timeout is a safety net, not the schedule)."""
        self.waits += 1
        self.wake.wait(timeout=WAKE_TIMEOUT_S)

    @staticmethod
    def _students(results, version: int, timing: StepTiming) -> StudentBatch:
        b = StudentBatch()
        for res in results:
            if res.version != version:
                raise VersionMismatch(f"rollout generated with δS v{res.version} but the learner is at "
                                      f"v{version}: strict on-policy broken")
            timing.gen_busy += res.seconds
            timing.tokens += res.n_tokens
            ablated = res.key[1] == 1
            b.ids += res.completions
            b.finished += res.finished
            b.ablated += [ablated] * len(res.completions)
            # the ablated slice is drawn from the deploy view, not the policy the learner scores:
            # no sampler log-probs for it (no mismatch, no TIS weight)
            b.sampler_logps += (list(res.logprobs) if res.logprobs is not None and not ablated
                                else [None] * len(res.completions))
        return b

    def _grade(self, step: int, k: int, plan: PromptPlan, batch: StudentBatch) -> None:
        batch.texts = self.decode(batch.ids)
        self.graders.submit([GradeRequest.from_problem(plan.prob, t, compat=self.compat) for t in batch.texts],
                            keys=[(step, k, gi) for gi in range(len(batch.texts))])

    @staticmethod
    def _group(plan: PromptPlan, slot: "_Slot") -> RolloutGroup:
        # students lead, teachers follow: GroupResult.students / .teachers split the rows back by name
        batch, res = slot.students, slot.results
        return RolloutGroup(prompt_ids=plan.prompt_ids,
                            completion_ids=batch.ids + [t.ids for t in plan.teacher],
                            rewards=[r.reward for r in res] + [t.reward for t in plan.teacher],
                            is_student=[True] * len(res) + [False] * len(plan.teacher),
                            hack_E=[r.hacked_loophole_used for r in res],
                            sampler_logps=batch.sampler_logps)
