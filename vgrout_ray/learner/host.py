"""``LearnerHost``: several runs' learners on one base model in one process (a sweep's multi-run learner).

Why: the runs of a sweep differ only in δS, δS_hack, their optimizer and their intervention
state, yet a learner per run holds its own copy of the frozen base and its SVD factors (most of
a learner's memory at 4B scale). Here one model is built from the sweep's base bundle and every
run's ``LearnerCore`` hooks its own adapter onto it; only the adapter of the run being served is
live (``SVDAdapter.live``), so each call computes exactly that run's function. Calls are served
one at a time (the actor is single-threaded), and each run keeps its own torch RNG stream, so a
hosted run draws what it would draw alone: the same δS, step for step, as a learner of its own.
"""
from __future__ import annotations

import torch
from loguru import logger

from vgrout_ray.config import Config
from vgrout_ray.learner.core import LearnerCore, load_model_from_bundle
from vgrout_ray.model.base_store import BaseBundle


class LearnerHost:
    """Cores of K runs sharing one model; ``use(run)`` makes that run's adapter the live one."""

    def __init__(self, base: BaseBundle, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.base = base
        self.model, self.factors = load_model_from_bundle(base, self.device, dtype)
        self.cores: dict[str, LearnerCore] = {}
        self._rng: dict[str, tuple] = {}
        self.current: str | None = None

    def add_run(self, run: str, cfg: Config, model_path: str | None = None) -> LearnerCore:
        if run in self.cores:
            raise ValueError(f"run {run!r} is already hosted")
        self._park()
        for core in self.cores.values():
            core.adapter.live = False
        core = LearnerCore(cfg, model_path=model_path, device=self.device, base=self.base,
                           shared_model=(self.model, self.factors))
        self.cores[run] = core
        self.current = run
        self._rng[run] = self._rng_state()
        logger.info(f"learner host: run {run} added ({len(self.cores)} on one model)")
        return core

    def drop_run(self, run: str) -> None:
        """Unhook the run's adapter (its state is in its resume file) and forget it."""
        core = self.cores.pop(run, None)
        if core is None:
            return
        core.adapter.remove()
        self._rng.pop(run, None)
        if self.current == run:
            self.current = None

    def use(self, run: str) -> LearnerCore:
        """The run's core, with its adapter the only live one and its RNG stream restored."""
        if run not in self.cores:
            raise KeyError(f"run {run!r} is not hosted here (hosted: {sorted(self.cores)})")
        if self.current != run:
            self._park()
            for name, core in self.cores.items():
                core.adapter.live = name == run
            self._set_rng_state(self._rng[run])
            self.current = run
        return self.cores[run]

    def _park(self) -> None:
        if self.current is not None and self.current in self.cores:
            self._rng[self.current] = self._rng_state()

    def _rng_state(self) -> tuple:
        return (torch.get_rng_state(), torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None)

    def _set_rng_state(self, state: tuple) -> None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
