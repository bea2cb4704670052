"""Sweeps: arms × seeds as concurrent runs on one Ray cluster, with one comparison.

``python -m vgrout_ray sweep PRESET --arms none,erase,route,route2 --seeds 41,42,43
[--max-concurrent K] [--engines shared|separate] [--base store|private] [--learners separate|shared]
[--name NAME] [any driver flag]``, also under
``ray job submit -- python -m vgrout_ray sweep ...``; ``--resume out/sweeps/<dir>`` continues one.

Why one process for many runs: runs of a sweep differ only in their knobs and δS, so they can
share what is expensive. Here each run is a ``run.loop.Run`` on its own thread of this driver
with its own learner actor, and all runs share

- one grader pool (``GraderPool``; its pending queue is served round robin over the runs'
  streams, so a run that submits a whole step cannot starve the others);
- with ``--engines shared`` (the default) one set of multi-run rollout actors
  (``actors.rollout_shared``): each actor loads the base weights and SVD factors once, keeps
  every run's δS, and coalesces concurrent calls of different runs into one forward pass.
  ``--engines separate`` gives each run its own rollout actors, as the driver does;
- with ``--base store`` (the default) one copy per node of the base weights and SVD factors:
  the sweep reads them once and puts them in Ray's object store (``model.base_store``), and
  every learner and multi-run rollout actor maps them read-only from there instead of loading
  its own. ``--base private`` makes each actor read the checkpoint itself (the baseline);
- with ``--learners shared``, one learner actor for every run (``actors.learner.LearnerHostActor``):
  each run's learner state hooks its own adapter onto one model built from the store, so the base
  is held once per sweep, not once per run (on a GPU: one device copy). ``--learners separate``
  (the default) keeps a learner actor per run.

Everything lands in ``<out-dir>/sweeps/<time>_<name>/``: one run dir per (arm, seed) named
``<arm>-seed<seed>`` (the driver's files, plus ``run.log``), ``sweep.json`` (the plan and each
run's status), ``sweep.log``, and the report of ``sweep_report`` (``sweep.parquet``,
``summary.md``, ``compare.png``), rewritten whenever a run ends. A run that fails is recorded
with its error and the others go on; ``--resume`` skips finished runs, resumes partial ones from
their ``resume/state.pt`` and restarts the ones that never finished a step. Exit status: 0 when
every run finished, 1 when some failed, 2 on a bad command line or config, 3 when the sweep could
not start (Ray or the shared actors did not come up; ``--resume`` continues it).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from loguru import logger

from vgrout_ray.arms import ARM_NAMES
from vgrout_ray.cluster.placement import actor_options
from vgrout_ray.config import Config, ConfigError, config_from_dict, parse_config
from vgrout_ray.sweep.report import RunProgress, SweepRun, format_board, progress_of, write_sweep_report
from vgrout_ray.util import atomic_write

ENGINES = ("shared", "separate")
BASES = ("store", "private")
LEARNERS = ("separate", "shared")
SWEEP_FILE = "sweep.json"
# driver flags the sweep sets per run (or that make no sense inside a sweep)
RESERVED_FLAGS = ("--intervention", "--seed", "--resume")


class SweepStopped(Exception):
    """The sweep was interrupted; a run stops after its current step (resumable)."""


# ── the plan ─────────────────────────────────────────────────────────────────

def parse_arms(text: str) -> list[str]:
    """'none,route' -> ['none', 'route']; unknown or repeated arms fail naming the flag."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    if not arms:
        raise ConfigError("--arms: give at least one arm")
    bad = [a for a in arms if a not in ARM_NAMES]
    if bad:
        raise ConfigError(f"--arms: unknown arm(s) {bad}; choose from {sorted(ARM_NAMES)}")
    if len(set(arms)) != len(arms):
        raise ConfigError(f"--arms: an arm is repeated in {arms}")
    return arms


def parse_seeds(text: str) -> list[int]:
    """'41,42' -> [41, 42]; non-integers or repeats fail naming the flag."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is repeated in {seeds}")
    return seeds


def check_driver_args(args: list[str]) -> list[str]:
    """The driver flags passed through; the ones the sweep sets itself are refused."""
    for a in args:
        if a.split("=", 1)[0] in RESERVED_FLAGS:
            raise ConfigError(f"{a.split('=', 1)[0]}: set by the sweep for each run (use --arms / --seeds, "
                              "or --resume with the sweep dir)")
    return list(args)


def run_config(preset: str, arm: str, seed: int, driver_args: list[str]) -> Config:
    """The Config of one run: the preset, the passed-through driver flags, its arm and seed."""
    try:
        cfg = parse_config([preset, *driver_args, "--intervention", arm, "--seed", str(seed)])
    except SystemExit as e:  # tyro exits naming the bad field; keep the sweep's exit code
        raise ConfigError(f"driver flags {driver_args} for {preset}: rejected (see above)") from e
    from vgrout_ray.run.outputs import resolve_outputs

    for msg in resolve_outputs(cfg):  # under a Ray job: relative outputs go to VGROUT_HOME, said once
        if msg not in _WARNED:
            _WARNED.add(msg)
            logger.warning(msg)
    cfg.absolutize()
    return cfg


_WARNED: set[str] = set()


@dataclass
class RunEntry:
    """One (arm, seed) of a sweep as ``sweep.json`` stores it."""

    arm: str
    seed: int
    status: str = "pending"
    run_dir: str = ""
    error: str = ""
    steps_total: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def name(self) -> str:
        return f"{self.arm}-seed{self.seed}"


@dataclass
class SweepPlan:
    """What a sweep runs; stored in ``sweep.json`` so ``--resume`` needs nothing else."""

    preset: str
    arms: list[str]
    seeds: list[int]
    driver_args: list[str] = field(default_factory=list)
    engines: str = "shared"
    max_concurrent: int = 0  # 0: every run at once
    name: str = ""
    base: str = "store"
    learners: str = "separate"
    runs: list[RunEntry] = field(default_factory=list)

    def __post_init__(self):
        if self.engines not in ENGINES:
            raise ConfigError(f"--engines: must be one of {ENGINES}, got {self.engines!r}")
        if self.base not in BASES:
            raise ConfigError(f"--base: must be one of {BASES}, got {self.base!r}")
        if self.learners not in LEARNERS:
            raise ConfigError(f"--learners: must be one of {LEARNERS}, got {self.learners!r}")
        if self.learners == "shared" and self.base != "store":
            raise ConfigError("--learners shared builds every run's learner on the base in the object store: "
                              "it needs --base store")
        if self.max_concurrent < 0:
            raise ConfigError(f"--max-concurrent: must be >= 0 (0: all runs at once), got {self.max_concurrent}")
        if not self.runs:
            self.runs = [RunEntry(a, s) for a in self.arms for s in self.seeds]

    @property
    def concurrency(self) -> int:
        return min(len(self.runs), self.max_concurrent or len(self.runs))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = SWEEP_FILE) -> "SweepPlan":
        try:
            runs = [RunEntry(**r) for r in d.get("runs", [])]
            return cls(**{**d, "runs": runs})
        except TypeError as e:
            raise ConfigError(f"{where}: not a sweep plan ({e})") from None


def sweep_dir_name(plan: SweepPlan, now: datetime | None = None) -> str:
    """'<YYYYmmddTHHMMSS>_<name>'; the default name is preset_arms_<n>seeds."""
    name = plan.name or f"{plan.preset}_{'-'.join(plan.arms)}_{len(plan.seeds)}seeds"
    return f"{(now or datetime.now()).strftime('%Y%m%dT%H%M%S')}_{name}"


def _cpu_split(cfg: Config, engines: str, learners: str) -> tuple[float, float]:
    """(CPUs per run, CPUs of the shared actors): learner and rollout actors go on whichever side
    ``learners`` / ``engines`` put them; the grader pool is always shared."""
    rollout = cfg.rollout.num_actors * cfg.rollout.cpus_per_actor
    learner = cfg.cluster.learner_cpus
    per_run = (learner if learners == "separate" else 0) + (rollout if engines == "separate" else 0)
    shared = (learner if learners == "shared" else 0) + (rollout if engines == "shared" else 0) + cfg.grader.num_actors
    return per_run, shared


def cluster_cpus(cfg: Config, concurrent: int, engines: str, learners: str = "separate") -> int:
    """Logical CPUs a local cluster needs to place ``concurrent`` runs at once: a learner per run
    (or one shared), rollout actors per run (separate) or once (shared), the grader pool, one spare."""
    per_run, shared = _cpu_split(cfg, engines, learners)
    return max(4, int(math.ceil(concurrent * per_run + shared + 1)))


def thread_budget(cfg: Config, concurrent: int, engines: str, learners: str, cores: int) -> int | None:
    """Torch threads per learner / rollout actor when ``concurrent`` runs share ``cores`` cores,
    or None when every actor can keep the threads its CPUs give it.

    Why: on a local cluster the sweep asks for logical CPUs (``cluster_cpus``), not cores, so four
    micro runs put 8 learner threads and 4 rollout threads on 2 cores. Oversubscribed OpenMP
    threads spin and preempt each other, and the sweep ends up slower than running its runs one
    after another (numbers in benchmarks/results/sweep_throughput_micro.md)."""
    rc = cfg.rollout
    learner_actors = concurrent if learners == "separate" else 1
    rollout_actors = rc.num_actors * (concurrent if engines == "separate" else 1)
    if learner_actors + rollout_actors <= cores:
        # few actors (a shared learner and shared rollouts): they mostly take turns (generate,
        # then learn), so each keeps its threads; capped to 1 each, a 4-run hosted micro sweep
        # left a core idle in every phase and took 1.4x the sequential wall
        return None
    return 1  # more actors than cores: one thread each


def runs_that_fit(cfg: Config, resources: dict, engines: str, learners: str = "separate") -> int:
    """How many runs a cluster with ``resources`` (``ray.cluster_resources()``) holds at once next to
    the shared actors (grader pool; rollout actors and learner when shared). CPUs and GPUs both
    count; a run with nothing of its own is not limited by the cluster (0 when the shared part
    itself does not fit)."""
    per_run, shared = _cpu_split(cfg, engines, learners)
    rollout_gpus = cfg.rollout.num_actors * cfg.rollout.gpus_per_actor
    gpr = (cfg.cluster.learner_gpus if learners == "separate" else 0) + (rollout_gpus if engines == "separate" else 0)
    shared_gpus = (cfg.cluster.learner_gpus if learners == "shared" else 0) + (rollout_gpus if engines == "shared" else 0)
    free_cpu, free_gpu = resources.get("CPU", 0.0) - shared, resources.get("GPU", 0.0) - shared_gpus
    if free_cpu < -1e-9 or free_gpu < -1e-9:
        return 0
    fits = math.floor(free_cpu / per_run + 1e-9) if per_run > 0 else 10 ** 6
    if gpr > 0:
        fits = min(fits, math.floor(free_gpu / gpr + 1e-9))
    return max(0, fits)


def to_sweep_runs(sweep_dir: Path, plan: SweepPlan) -> list[SweepRun]:
    """The report's view of the plan (run dirs as paths; pending/running kept as they are)."""
    return [SweepRun(r.arm, r.seed, r.status, (sweep_dir / r.run_dir) if r.run_dir else None, r.error)
            for r in plan.runs]


def board_of(sweep_dir: Path, plan: SweepPlan, now: float | None = None) -> str:
    """The live board from the run dirs' rows.parquet (as each run last committed a step)."""
    progress = []
    for r in plan.runs:
        d = (sweep_dir / r.run_dir) if r.run_dir else None
        try:
            p = progress_of(d if d is not None and d.exists() else None, r.name, r.steps_total or 1, r.status,
                            started_at=r.started_at)
        except Exception:  # a rows.parquet being replaced: show the run without numbers this time
            p = RunProgress(r.name, r.steps_total or 1, status=r.status, started_at=r.started_at)
        progress.append(p)
    return format_board(progress, now)


# ── the sweep ────────────────────────────────────────────────────────────────

class SharedGrades:
    """The sweep's grader pool as each run sees it. Streams pass through (``stream``). A blocking
    ``grade`` of a batch already graded for another run is answered from memory, and a run that
    asks while another grades the same batch waits for it: the scripted teacher pool is the same
    batch for every run of a sweep, and grading it once instead of K times is most of a run's
    set-up on a small cluster. Batches with a grading error are not kept (the next asker regrades)."""

    def __init__(self, pool):
        self.pool = pool
        self._lock = threading.Lock()
        self._done: dict[str, list] = {}
        self._inflight: dict[str, threading.Event] = {}
        self.hits = 0

    @staticmethod
    def batch_key(requests: list) -> str:
        return hashlib.sha256(pickle.dumps([dataclasses.astuple(r) for r in requests])).hexdigest()

    def stream(self):
        return self.pool.stream()

    def grade(self, requests, **kw) -> list:
        requests = list(requests)
        key = self.batch_key(requests)
        with self._lock:
            if key in self._done:
                self.hits += 1
                return copy.deepcopy(self._done[key])
            wait = self._inflight.get(key)
            if wait is None:
                self._inflight[key] = threading.Event()
        if wait is not None:
            wait.wait()
            return self.grade(requests, **kw)
        try:
            out = self.pool.grade(requests, **kw)
            if all(r.error is None for r in out):
                with self._lock:
                    self._done[key] = copy.deepcopy(out)
            return out
        finally:
            with self._lock:
                self._inflight.pop(key).set()

    def __getattr__(self, name):
        return getattr(self.pool, name)


class Sweep:
    """Runs a plan's pending runs on threads of this process, sharing graders and rollouts."""

    def __init__(self, plan: SweepPlan, sweep_dir: Path, *, board_every: float = 30.0):
        self.plan, self.dir = plan, Path(sweep_dir)
        self.board_every = board_every
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self.graders = self.grades = self.shared = self.base_ref = self.learner_host = None
        self.model_path: str | None = None
        self.slots = plan.concurrency  # runs at once; lowered to what the cluster holds (fit_cluster)
        self.torch_threads = 0  # --cluster.torch-threads, or what budget_threads sets (0: the actors' CPUs)

    # ── bookkeeping ──
    def save(self) -> None:
        with self._lock:
            atomic_write(self.dir / SWEEP_FILE, json.dumps(self.plan.to_dict(), indent=2))

    def _set(self, entry: RunEntry, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(entry, k, v)
        self.save()
        self._dirty.set()

    def report(self) -> dict:
        return write_sweep_report(self.dir, to_sweep_runs(self.dir, self.plan),
                                  title=f"Sweep {self.dir.name}: {self.plan.preset}, arms {','.join(self.plan.arms)}, "
                                        f"seeds {','.join(map(str, self.plan.seeds))}")

    # ── one run ──
    def _prepare_run(self, entry: RunEntry) -> tuple[Config, dict | None, Path]:
        """(config, resume payload or None, run dir): a partial run resumes from its state; a
        run that never finished a step starts again in a clean dir."""
        from vgrout_ray.run.loop import write_config
        from vgrout_ray.run.state import load_resume, resume_path

        run_dir = self.dir / entry.name
        if (run_dir / "config.json").is_file() and resume_path(run_dir).is_file():
            cfg = config_from_dict(json.loads((run_dir / "config.json").read_text()))
            cfg.resume = run_dir
            cfg.absolutize()
            # this invocation's threads (its flag or its cluster's budget), not those it started under
            cfg.cluster.torch_threads = self.torch_threads
            return cfg, load_resume(run_dir), run_dir
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        cfg = run_config(self.plan.preset, entry.arm, entry.seed, self.plan.driver_args)
        if self.torch_threads:
            cfg.cluster.torch_threads = self.torch_threads
        write_config(run_dir, cfg)
        return cfg, None, run_dir

    def run_one(self, entry: RunEntry) -> None:
        """One run on this thread: its log to ``run.log``, its status to ``sweep.json``; an
        exception marks it failed and stops only it."""
        from vgrout_ray.learner.client import HostedLearnerClient
        from vgrout_ray.run.loop import Run
        from vgrout_ray.reporting.table import FILE_FORMAT

        if self._stop.is_set():
            return
        run = rollouts = sink = learner = None
        with logger.contextualize(run=entry.name):
            try:
                cfg, resume, run_dir = self._prepare_run(entry)  # may clear the dir: the log comes after
                log_path = run_dir / "run.log"
                sink = logger.add(log_path, format=FILE_FORMAT, level="DEBUG",
                                  filter=lambda r, n=entry.name: r["extra"].get("run") == n)
                self._set(entry, status="running", run_dir=run_dir.name, error="", steps_total=cfg.steps,
                          started_at=time.time(), finished_at=None)
                logger.info(f"sweep run {entry.name}: preset={cfg.preset_name} arm={cfg.arm} seed={cfg.seed} "
                            f"steps={cfg.steps} run_dir={run_dir}" + (" (resumed)" if resume else ""))
                if self.shared is not None:
                    rollouts = self.shared.view(entry.name)
                if self.learner_host is not None:
                    learner = HostedLearnerClient.add(self.learner_host, entry.name, cfg, self.model_path)
                run = Run(cfg, run_dir, log_path, resume=resume, graders=self.grades, rollouts=rollouts,
                          learner=learner, base=self.base_ref)
                run.run(on_step=self._on_step, progress=False)
                self._set(entry, status="finished", finished_at=time.time())
                logger.info(f"sweep run {entry.name}: finished")
            except BaseException as e:  # recorded, and the other runs go on
                why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
                if isinstance(e, SweepStopped):
                    why = "interrupted (resume the sweep to continue)"
                else:
                    logger.opt(exception=e).error(f"sweep run {entry.name} failed: {why}")
                self._set(entry, status="failed", error=why, finished_at=time.time())
            finally:
                if run is not None:
                    run.close()  # closes its learner too (a hosted one is dropped from the host)
                elif learner is not None:
                    learner.close()
                if rollouts is not None:  # its view: drops this run's δS, the actors stay for the others
                    rollouts.close()
                if sink is not None:
                    logger.remove(sink)

    def _on_step(self, step: int, row: dict) -> None:
        self._dirty.set()
        if self._stop.is_set():
            raise SweepStopped()

    # ── the whole sweep ──
    def fit_cluster(self, cfg: Config, resources: dict) -> None:
        """Placement by resources: run as many at once as the cluster holds and queue the rest,
        instead of starting actors that would wait for resources until the pending limit kills
        their runs. A cluster too small for even one run is a ConfigError (exit 2)."""
        fits = runs_that_fit(cfg, resources, self.plan.engines, self.plan.learners)
        have = {k: v for k, v in resources.items() if k in ("CPU", "GPU")}
        if fits < 1:
            raise ConfigError(f"the cluster ({have}) cannot hold one run of this sweep next to its shared grader "
                              f"pool{' and rollout actors' if self.plan.engines == 'shared' else ''}: a run needs "
                              f"learner {cfg.cluster.learner_cpus} CPU, the shared part {cfg.grader.num_actors} grader "
                              f"actor(s); give the cluster more CPUs or lower --cluster.learner-cpus / --grader.num-actors")
        if fits < self.slots:
            logger.warning(f"the cluster ({have}) holds {fits} of this sweep's runs at once, not {self.slots}: "
                           f"running {fits} at a time, the others wait their turn")
            self.slots = fits

    def budget_threads(self, cfg: Config, cores: int | None = None) -> None:
        """On a local cluster, give each learner / rollout actor at most its share of this
        machine's cores (``thread_budget``), unless ``--cluster.torch-threads`` was given."""
        if cfg.cluster.torch_threads:
            self.torch_threads = cfg.cluster.torch_threads
            return
        cores = cores or len(os.sched_getaffinity(0))
        t = thread_budget(cfg, self.slots, self.plan.engines, self.plan.learners, cores)
        if t is None:
            return
        self.torch_threads = cfg.cluster.torch_threads = t
        logger.info(f"{self.slots} run(s) at once on {cores} core(s): each learner and rollout actor gets {t} torch "
                    f"thread(s) (cluster.torch_threads), so that their threads do not outnumber the cores")

    def start_shared(self, cfg: Config) -> None:
        """The grader pool (and the multi-run rollout actors) every run of this process uses."""
        from vgrout_ray.grading.pool import GraderPool
        from vgrout_ray.rollout.shared import SharedRollouts
        from vgrout_ray.model.resolve import resolve_model

        model_path = self.model_path = resolve_model(cfg.model, cfg.svd_cache)  # build once, not in K threads
        # transformers' lazy module is not safe to import from several threads at once (3 of 4 runs
        # failed with "cannot import name 'AutoTokenizer'"): finish its imports here, on one thread
        from vgrout_ray.run.loop import Run  # noqa: F401
        from vgrout_ray.util import load_tokenizer

        load_tokenizer(model_path)
        if self.plan.base == "store":
            import torch

            from vgrout_ray.model.base_store import publish_base

            dtype = torch.bfloat16 if cfg.cluster.learner_gpus > 0 else torch.float32
            self.base_ref = publish_base(model_path, cfg.svd_cache, dtype)
            logger.info("base weights and SVD factors are in the object store: learners and shared rollout actors "
                        "map one copy per node")
        if self.plan.learners == "shared":
            import ray

            from vgrout_ray.learner.actor import LearnerHostActor

            self.learner_host = LearnerHostActor.options(**actor_options(cfg, "learner")).remote(
                self.base_ref, cfg.cluster.threads_for(cfg.cluster.learner_cpus))
            ray.get(self.learner_host.runs.remote())
            logger.info("shared learner: one actor holds every run's learner state on one model")
        self.graders = GraderPool.from_config(cfg.grader)
        self.grades = SharedGrades(self.graders)
        if self.plan.engines == "shared":
            self.shared = SharedRollouts.from_config(cfg, model_path, base=self.base_ref)
            logger.info(f"shared multi-run rollouts: {len(self.shared.handles)} actor(s) serve every run")

    def close_shared(self) -> None:
        if self.shared is not None:
            try:
                sizes = [n for per in self.shared.batch_sizes() for n in per]
                if sizes:
                    logger.info(f"shared rollouts: {len(sizes)} coalesced generate calls, {sum(sizes)} requests, "
                                f"{sum(sizes) / len(sizes):.2f} requests per call (max {max(sizes)})")
            except Exception as e:
                logger.debug(f"batch sizes: {e}")
        if self.grades is not None:
            logger.info(f"shared grades: {self.grades.hits} batch(es) answered from another run's grading")
        for part in (self.shared, self.graders):
            if part is not None:
                try:
                    part.close()
                except Exception as e:
                    logger.debug(f"close: {e}")
        if self.learner_host is not None:
            from vgrout_ray.rollout.pool import kill_actors

            kill_actors([self.learner_host])

    def run(self) -> int:
        todo = [r for r in self.plan.runs if r.status != "finished"]
        for r in todo:
            r.status = "pending"
        self.save()
        logger.info(f"sweep {self.dir}: {len(self.plan.runs)} runs ({len(todo)} to run), "
                    f"{self.slots} at once, engines={self.plan.engines}")
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=max(1, self.slots), thread_name_prefix="run") as pool:
            futures = [pool.submit(self.run_one, r) for r in todo]
            try:
                self._watch(futures)
            except KeyboardInterrupt:
                logger.warning("interrupted: each running run stops after its current step; pending runs are "
                               "left pending (resume the sweep to continue)")
                self._stop.set()
                self._watch(futures, interactive=False)
        self.report()
        print(board_of(self.dir, self.plan), flush=True)
        failed = [r for r in self.plan.runs if r.status != "finished"]
        logger.info(f"sweep done in {time.time() - t0:.0f} s: {len(self.plan.runs) - len(failed)} finished, "
                    f"{len(failed)} not; report {self.dir / 'summary.md'}")
        for r in failed:
            logger.warning(f"  {r.name}: {r.status} {r.error}")
        return 0 if not failed else 1

    def _watch(self, futures, interactive: bool = True) -> None:
        """Until every run has ended: the board (in place on a terminal, else every
        ``board_every`` s) and the report whenever a run ends."""
        tty = interactive and sys.stdout.isatty()
        shown, last_print, ended = 0, 0.0, 0
        while not all(f.done() for f in futures):
            time.sleep(0.5)
            now = time.time()
            n_ended = sum(r.status in ("finished", "failed") for r in self.plan.runs)
            if n_ended != ended:
                ended = n_ended
                try:
                    self.report()
                except Exception as e:
                    logger.warning(f"sweep report not written yet: {type(e).__name__}: {e}")
            if tty and (self._dirty.is_set() or now - last_print > 2):
                board = board_of(self.dir, self.plan, now)
                sys.stdout.write((f"\x1b[{shown}F\x1b[J" if shown else "") + board + "\n")
                sys.stdout.flush()
                shown, last_print = board.count("\n") + 1, now
                self._dirty.clear()
            elif not tty and now - last_print >= self.board_every:
                print(board_of(self.dir, self.plan, now), flush=True)
                last_print = now
        for f in futures:
            f.result()  # run_one records its own errors; anything here is a bug of the sweep


# ── entry point ──────────────────────────────────────────────────────────────

def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(
        prog="python -m vgrout_ray sweep",
        description="Run arms x seeds as concurrent runs on one Ray cluster (other flags go to every run).")
    ap.add_argument("preset", nargs="?", help="driver preset (smoke, micro, fast, full); not with --resume")
    ap.add_argument("--arms", default="none,erase,route,route2", help="comma list of interventions")
    ap.add_argument("--seeds", default="41,42,43", help="comma list of seeds")
    ap.add_argument("--max-concurrent", type=int, default=0, help="runs at once (0: all)")
    ap.add_argument("--engines", choices=ENGINES, default="shared",
                    help="shared: multi-run rollout actors serve every run; separate: rollout actors per run")
    ap.add_argument("--base", choices=BASES, default="store",
                    help="store: base weights and SVD factors read once, shared through the object store; "
                         "private: every learner and engine reads its own copy")
    ap.add_argument("--learners", choices=LEARNERS, default="separate",
                    help="separate: a learner actor per run; shared: one learner actor serves every run on one "
                         "base model (needs --base store)")
    ap.add_argument("--name", default="", help="sweep dir suffix (default preset_arms_Nseeds)")
    ap.add_argument("--resume", default=None, help="an out/sweeps/<dir> to continue")
    ap.add_argument("--board-every", type=float, default=30.0, help="seconds between boards when not on a terminal")
    return ap.parse_known_args(argv)


def _setup_logging(sweep_dir: Path) -> None:
    """Terminal: the sweep's own lines and every run's warnings (named); sweep.log: all of it."""
    from vgrout_ray.reporting.table import FILE_FORMAT, LEVEL_ICONS

    logger.remove()
    for name, icon in LEVEL_ICONS.items():
        logger.level(name, icon=icon)

    def terse(record) -> str:
        return "{level.icon} " + ("[{extra[run]}] " if "run" in record["extra"] else "") + "{message}\n{exception}"

    logger.add(sys.stderr, format=terse, level="INFO",
               filter=lambda r: "run" not in r["extra"] or r["level"].no >= 30)
    logger.add(sweep_dir / "sweep.log", format="{time:HH:mm:ss} | {level} | {extra} | {message}", level="DEBUG")


def _plan(ns: argparse.Namespace, rest: list[str]) -> tuple[SweepPlan, Path, Config]:
    """The plan and sweep dir, new or read back from ``--resume``; the first run's config."""
    if ns.resume:
        d = Path(ns.resume)
        if not (d / SWEEP_FILE).is_file():
            raise ConfigError(f"--resume: {d} has no {SWEEP_FILE}")
        if ns.preset or rest:
            raise ConfigError(f"--resume: takes the plan from {d / SWEEP_FILE}; drop the preset and driver flags "
                              f"({[ns.preset, *rest] if ns.preset else rest})")
        plan = SweepPlan.from_dict(json.loads((d / SWEEP_FILE).read_text()), str(d / SWEEP_FILE))
        if ns.max_concurrent:
            plan.max_concurrent = ns.max_concurrent
        cfg = run_config(plan.preset, plan.runs[0].arm, plan.runs[0].seed, plan.driver_args)
        return plan, d, cfg
    if not ns.preset:
        raise ConfigError("preset: give one (smoke, micro, fast, full) or --resume DIR")
    plan = SweepPlan(ns.preset, parse_arms(ns.arms), parse_seeds(ns.seeds), check_driver_args(rest),
                     ns.engines, ns.max_concurrent, ns.name, base=ns.base, learners=ns.learners)
    cfg = None
    for r in plan.runs:  # every run's flags are checked before anything starts
        c = run_config(plan.preset, r.arm, r.seed, plan.driver_args)
        r.steps_total = c.steps
        cfg = cfg or c
    d = Path(cfg.out_dir) / "sweeps" / sweep_dir_name(plan)
    d.mkdir(parents=True, exist_ok=False)
    return plan, d, cfg


def main(argv: list[str] | None = None, *, sweep_cls: type[Sweep] = Sweep) -> int:
    """The CLI. ``sweep_cls``: a Sweep subclass (tests inject a fault into one run with it)."""
    import ray

    from vgrout_ray.cluster.ray_cluster import connect

    ns, rest = parse_args(argv)
    try:
        plan, sweep_dir, cfg = _plan(ns, rest)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _setup_logging(sweep_dir)
    logger.info(f"argv: {' '.join(sys.argv)}")
    sweep = sweep_cls(plan, sweep_dir, board_every=ns.board_every)
    sweep.save()  # the plan is on disk before Ray starts: a sweep that cannot connect can be resumed
    if all(r.status == "finished" for r in plan.runs):
        logger.info(f"sweep {sweep_dir}: every run has finished; report rewritten")
        sweep.report()
        return 0
    choice = None
    try:
        if not ray.is_initialized():
            choice = connect(cfg.cluster.address, num_cpus=cfg.cluster.num_cpus,
                             local_cpus=cluster_cpus(cfg, plan.concurrency, plan.engines, plan.learners),
                             namespace=cfg.cluster.namespace, log_to_driver=False)
        sweep.fit_cluster(cfg, ray.cluster_resources())
        sweep.torch_threads = cfg.cluster.torch_threads
        if choice is not None and choice.local:  # actors on this machine: share its cores out
            sweep.budget_threads(cfg)
        sweep.start_shared(cfg)
        return sweep.run()
    except ConfigError as e:
        logger.error(f"{type(e).__name__}: {e}")
        return 2
    except Exception as e:  # Ray or the shared actors did not come up: no run has started
        logger.opt(exception=e).error(f"the sweep could not start ({type(e).__name__}: {e}); nothing ran. "
                                      f"Continue it with:\n  python -m vgrout_ray sweep --resume {sweep_dir}")
        return 3
    finally:
        sweep.close_shared()
        if choice is not None and choice.local:
            ray.shutdown()
