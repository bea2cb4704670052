"""``StepScheduler`` with small in-process fakes of its three parts (no Ray, no model, no sandbox).

The fakes answer out of order, replay a call whose actor "died", deliver grades of another step,
and give up on a completion (an ``error`` result), so the scheduler's own rules are checked:
groups reach the learner in prompt order, every rollout carries the step's δS version, stale
grades are ignored, failed grades are counted, and the ablated slice has no sampler log-probs.
The fakes set the scheduler's wake-up event whenever they hold news, as the real pools do; one
test delivers from a thread, late, to show the scheduler sleeps until woken instead of spinning.
"""
from __future__ import annotations

import random
import threading
import time

import pytest

from vgrout_ray.grading.pool import Graded
from vgrout_ray.rollout.base import GenRequest, GenResult
from vgrout_ray.rollout.pool import GenDone
from vgrout_ray.env.grading import RewardResult
from vgrout_ray.learner.core import LearnerStepStats
from vgrout_ray.run.sampling import PromptPlan, TeacherRow
from vgrout_ray.run.stream import PhaseTimer, StepScheduler, VersionMismatch, union_seconds

PROB = {"problem_id": 1, "env_mode": "run_tests", "gt_tests": ["assert True"], "setup_code": "",
        "func_name": "f", "messages": []}


class FakeRollouts:
    """Completions are ``[p_idx, part, j]``; calls finish in a shuffled order, one per poll. A key in
    ``die_once`` fails its first call and is replayed (what RolloutPool does after a death)."""

    def __init__(self, version: int, seed: int = 0, die_once=(), wrong_version_key=None):
        self.version, self.size = version, 2
        self.rng = random.Random(seed)
        self.calls: list[tuple] = []
        self.inflight: list[tuple] = []
        self.die_once, self.died = set(die_once), []
        self.wrong_version_key = wrong_version_key
        self.wake = None

    def notify(self, event):
        self.wake = event

    def submit(self, key, reqs, actor=None):
        self.calls.append((key, actor))
        self.inflight.append((key, reqs))
        self.wake.set()  # a fake call finishes at once

    @property
    def pending(self):
        return len(self.inflight)

    def poll(self, timeout=0.0):
        if not self.inflight:
            return []
        key, reqs = self.inflight.pop(self.rng.randrange(len(self.inflight)))
        if self.inflight:
            self.wake.set()
        if key in self.die_once:
            self.die_once.discard(key)
            self.died.append(key)
            self.submit(key, reqs, actor=key % self.size)  # replayed on the replacement
            return []
        out = []
        for r in reqs:
            p_idx, part = r.key
            comps = [[p_idx, part, j] for j in range(r.n)]
            v = self.version + (1 if key == self.wrong_version_key else 0)
            out.append(GenResult(r.key, v, comps, [True] * r.n, 0.01, n_tokens=3 * r.n,
                                 logprobs=[[-0.5] * 3 for _ in comps]))
        return [GenDone(key, out, 0.0, 0.01)]


class FakeGraders:
    """Grades answer in a shuffled order, a few per poll; reward = 1 + gi; ``fail`` keys come back
    with an error (the pool gave up after its retries); a stale grade of step-1 precedes each batch."""

    def __init__(self, seed: int = 0, fail=()):
        self.rng = random.Random(seed)
        self.queue: list[Graded] = []
        self.fail = set(fail)
        self.texts: dict = {}
        self.wake = None

    def notify(self, event):
        self.wake = event

    def submit(self, requests, keys):
        keys = list(keys)
        self.queue.append(Graded((keys[0][0] - 1, 0, 0), RewardResult(reward=99.0)))  # another step's
        for req, key in zip(requests, keys):
            self.texts[key] = req.completion
            res = (RewardResult.failed("gave up after 2 retries") if key in self.fail else
                   RewardResult(reward=1.0 + key[2], exploited=key[2] == 0, hacked_loophole_used=key[2] == 0))
            self.queue.append(Graded(key, res))
        self.rng.shuffle(self.queue)
        self.wake.set()

    def poll(self, timeout=0.0):
        n = min(len(self.queue), self.rng.randint(0, 3))
        out, self.queue = self.queue[:n], self.queue[n:]
        if self.queue:
            self.wake.set()
        return out


class FakeLearner:
    def __init__(self, version: int):
        self.version = version
        self.groups: list[tuple[int, object]] = []

    def add_group(self, index, group):
        self.groups.append((index, group))
        return index

    def collect(self, handles):
        return [{"index": h, "logps": [0.0] * len(self.groups[h][1].completion_ids), "zerovar": False}
                for h in handles]

    def end_step(self):
        self.version += 1
        return LearnerStepStats(loss=0.5, gn=1.0, version=self.version)


def _plans(n: int, n_abl: int = 0, teacher: int = 0) -> list[PromptPlan]:
    out = []
    for p in range(n):
        reqs = [GenRequest((p, 0), [1, 2, 3], 3, 8, seed=p)]
        if n_abl:
            reqs.append(GenRequest((p, 1), [1, 2, 3], n_abl, 8, seed=100 + p, ablate=True))
        rows = [TeacherRow(reward=2.0, hacked=True, gt_pass=False, fmt_ok=True, ids=[7, 7]) for _ in range(teacher)]
        out.append(PromptPlan(p, PROB, "prompt", [1, 2, 3], reqs, rows, n_abl))
    return out


def _decode(ids):
    return [" ".join(map(str, x)) for x in ids]


@pytest.mark.parametrize("seed", range(5))
def test_groups_reach_the_learner_in_prompt_order_whatever_order_work_finishes(seed):
    rollouts, graders, learner = FakeRollouts(4, seed=seed), FakeGraders(seed=seed), FakeLearner(4)
    plans = _plans(5, teacher=1)
    res = StepScheduler(rollouts, graders, learner, _decode).run(7, plans, 4)
    assert [i for i, _ in learner.groups] == list(range(5))
    assert [c[1] for c in rollouts.calls] == [k % 2 for k in range(5)]  # prompt k on actor k mod size
    for k, (_, g) in enumerate(learner.groups):
        # students first, in request order, then the teacher rows
        assert g.completion_ids == [[k, 0, j] for j in range(3)] + [[7, 7]]
        assert g.rewards == [1.0, 2.0, 3.0, 2.0] and g.is_student == [True, True, True, False]
        assert g.hack_E == [True, False, False]
    assert res.step == 7 and res.version == 4 and res.stats.version == 5 and res.grade_errors == 0
    assert [b.texts for b in res.students] == [_decode([[k, 0, j] for j in range(3)]) for k in range(5)]
    assert [[r.reward for r in g] for g in res.grades] == [[1.0, 2.0, 3.0]] * 5  # the stale 99.0s were dropped
    assert [i["index"] for i in res.infos] == list(range(5))
    assert res.timing.tokens == 45 and res.timing.gen_busy == pytest.approx(0.05)
    # the texts graded are the decoded completions, keyed (step, prompt, index)
    assert graders.texts[(7, 2, 1)] == "2 0 1"


def test_a_replayed_generation_still_lands_in_its_slot():
    rollouts = FakeRollouts(0, seed=1, die_once={0, 3})
    learner = FakeLearner(0)
    res = StepScheduler(rollouts, FakeGraders(seed=1), learner, _decode).run(0, _plans(4), 0)
    assert sorted(rollouts.died) == [0, 3]
    assert [i for i, _ in learner.groups] == [0, 1, 2, 3]
    assert [b.ids[0] for b in res.students] == [[k, 0, 0] for k in range(4)]


def test_a_rollout_from_another_version_stops_the_step():
    with pytest.raises(VersionMismatch, match="strict on-policy"):
        StepScheduler(FakeRollouts(3, wrong_version_key=1), FakeGraders(), FakeLearner(3), _decode).run(
            0, _plans(3), 3)


def test_failed_grades_are_counted_and_still_train_with_no_credit():
    graders = FakeGraders(seed=2, fail={(0, 1, 2), (0, 2, 0)})
    learner = FakeLearner(0)
    res = StepScheduler(FakeRollouts(0, seed=2), graders, learner, _decode).run(0, _plans(3), 0)
    assert res.grade_errors == 2
    assert res.grades[1][2].error and learner.groups[1][1].rewards == [1.0, 2.0, 0.0]
    assert learner.groups[2][1].rewards == [0.0, 2.0, 3.0]


def test_the_ablated_slice_is_flagged_and_has_no_sampler_logprobs():
    res = StepScheduler(FakeRollouts(0), FakeGraders(), FakeLearner(0), _decode).run(0, _plans(2, n_abl=2), 0)
    for k, b in enumerate(res.students):
        assert b.ids == [[k, 0, 0], [k, 0, 1], [k, 0, 2], [k, 1, 0], [k, 1, 1]]
        assert b.ablated == [False] * 3 + [True] * 2
        assert b.sampler_logps[:3] == [[-0.5] * 3] * 3 and b.sampler_logps[3:] == [None, None]


def test_a_step_with_no_prompts_still_steps_the_learner():
    learner = FakeLearner(2)
    res = StepScheduler(FakeRollouts(2), FakeGraders(), learner, _decode).run(0, [], 2)
    assert res.plans == [] and res.stats.version == 3 and learner.groups == []


class LateRollouts(FakeRollouts):
    """Every call finishes ``delay`` s after it was sent, delivered by a timer thread that then sets the
    wake-up event (a real pool's ray future callback)."""

    def __init__(self, version, delay):
        super().__init__(version)
        self.delay, self.ready, self.polls = delay, [], 0
        self.lock = threading.Lock()

    def submit(self, key, reqs, actor=None):
        self.calls.append((key, actor))

        def land():
            with self.lock:
                self.ready.append((key, reqs))
            self.wake.set()
        threading.Timer(self.delay, land).start()

    @property
    def pending(self):
        return len(self.calls) - self.polls

    def poll(self, timeout=0.0):
        with self.lock:
            if not self.ready:
                return []
            self.inflight, self.ready = [self.ready.pop(0)], self.ready
        self.polls += 1
        return super().poll()


def test_the_scheduler_sleeps_until_a_pool_wakes_it_instead_of_spinning():
    rollouts, learner = LateRollouts(0, delay=0.4), FakeLearner(0)
    sched = StepScheduler(rollouts, FakeGraders(), learner, _decode)
    t0 = time.perf_counter()
    sched.run(0, _plans(3), 0)
    took = time.perf_counter() - t0
    assert [i for i, _ in learner.groups] == [0, 1, 2]
    # woken by the deliveries, not by the 2 s safety timeout ...
    assert 0.4 <= took < 1.5
    # ... and asleep while waiting: a 5 ms poll loop would have looked ~80 times in 0.4 s
    assert sched.waits <= 6, sched.waits


def test_phase_timer_counts_overlapping_calls_once():
    t = PhaseTimer()
    for a, b in [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.8)]:
        t.add("gen", a, b)
    assert t.seconds("gen") == pytest.approx(4.0) == union_seconds(t.spans["gen"])
    assert t.seconds("grade") == 0.0


def test_learner_step_stats_reads_like_the_old_dict():
    st = LearnerStepStats(loss=1.5, refr="3/4")
    assert st["loss"] == 1.5 and st.get("refr") == "3/4" and st.get("nope", 7) == 7 and "kl" in st
    assert set(st.as_dict()) == set(st.keys()) and len(st.as_dict()) == 32
    with pytest.raises(KeyError):
        st["nope"]
