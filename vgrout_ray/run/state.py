"""Everything a run carries from step to step, in one place: ``RunState``.

It is listed once (the dataclass), saved once (``to_dict`` → ``resume/state.pt``) and restored
once (``from_dict``). The dict layout is the resume format of every run dir written so far
(the keys of ``RESUME_KEYS``), so old run dirs still resume. Checkpoints (δS as safetensors,
the rows and config as metadata) are written here too.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from vgrout_ray.util import atomic_path

# The keys of resume/state.pt, in the order they were always written.
RESUME_KEYS = ("next_step", "learner", "rng", "rows", "mode_rollouts", "mode_hacks", "mode_first_step",
               "first_hack_saved", "lp_t_best", "diverged_steps", "dumped", "last_gen_sample", "evals",
               "pre_eval", "G", "sync_log")


@dataclass
class RunState:
    """A run's mutable state (the learner's own state lives in the learner; ``to_dict`` takes it)."""

    rng: torch.Generator  # the prompt RNG
    G: tuple[int, int]  # (student, teacher) rows per prompt; the curriculum changes it
    next_step: int = 0
    rows: list[dict] = field(default_factory=list)
    mode_rollouts: dict[str, int] = field(default_factory=dict)
    mode_hacks: dict[str, int] = field(default_factory=dict)
    mode_first_step: dict[str, int] = field(default_factory=dict)
    first_hack_saved: bool = False
    lp_t_best: float = -math.inf  # the divergence tripwire's best teacher log-prob so far
    diverged_steps: int = 0
    dumped: set[str] = field(default_factory=set)  # hack mechanisms whose first example was logged
    last_gen_sample: tuple[int, dict] | None = None
    evals: list[dict] = field(default_factory=list)
    pre_eval: dict | None = None
    sync_log: list[dict] = field(default_factory=list)

    @classmethod
    def fresh(cls, seed: int, G: tuple[int, int]) -> "RunState":
        return cls(rng=torch.Generator().manual_seed(seed), G=tuple(G))

    @property
    def gens_so_far(self) -> int:
        return sum(r["N"] for r in self.rows)

    def to_dict(self, learner_state: dict) -> dict:
        """The resume payload (``resume/state.pt``); ``learner_state`` is the learner's state_dict."""
        return {"next_step": self.next_step, "learner": learner_state, "rng": self.rng.get_state(),
                "rows": self.rows, "mode_rollouts": self.mode_rollouts, "mode_hacks": self.mode_hacks,
                "mode_first_step": self.mode_first_step, "first_hack_saved": self.first_hack_saved,
                "lp_t_best": self.lp_t_best, "diverged_steps": self.diverged_steps, "dumped": sorted(self.dumped),
                "last_gen_sample": self.last_gen_sample, "evals": self.evals, "pre_eval": self.pre_eval,
                "G": tuple(self.G), "sync_log": self.sync_log}

    @classmethod
    def from_dict(cls, d: dict) -> tuple["RunState", dict]:
        """(state, the learner's state_dict) from a resume payload; a missing key fails naming it."""
        missing = [k for k in RESUME_KEYS if k not in d]
        if missing:
            raise KeyError(f"resume/state.pt lacks {missing}")
        rng = torch.Generator()
        rng.set_state(d["rng"])
        st = cls(rng=rng, G=tuple(d["G"]), next_step=d["next_step"], rows=d["rows"],
                 mode_rollouts=d["mode_rollouts"], mode_hacks=d["mode_hacks"], mode_first_step=d["mode_first_step"],
                 first_hack_saved=d["first_hack_saved"], lp_t_best=d["lp_t_best"],
                 diverged_steps=d["diverged_steps"], dumped=set(d["dumped"]), last_gen_sample=d["last_gen_sample"],
                 evals=d["evals"], pre_eval=d["pre_eval"], sync_log=d["sync_log"])
        return st, d["learner"]


def resume_path(run_dir: Path) -> Path:
    return Path(run_dir) / "resume" / "state.pt"


def save_resume(run_dir: Path, payload: dict) -> None:
    """Write ``resume/state.pt`` atomically (a kill mid-write leaves the previous one)."""
    with atomic_path(resume_path(run_dir)) as tmp:
        torch.save(payload, tmp)


def load_resume(run_dir: Path) -> dict:
    return torch.load(resume_path(run_dir), weights_only=False)


def _nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def save_ckpt(path: Path, deltas: dict[str, torch.Tensor], version: int, rows: list[dict], cfg) -> None:
    """δS only (the deploy adapter) + rows and config as metadata, like the seed's save_ckpt."""
    tensors = {k[: -len(".delta_S")]: v.contiguous() for k, v in deltas.items() if k.endswith(".delta_S")}
    n = sum(r["N"] for r in rows)
    hr = sum(r["hack_s"][0] + r["hack_t"][0] for r in rows) / max(1, n)
    pr = sum(r["gt_s"][0] + r["gt_t"][0] for r in rows) / max(1, n)
    meta = {"model": cfg.model, "dtype": "fp32", "step": str(len(rows)), "version": str(version),
            "hack_rate": f"{hr:.6f}", "pass_rate": f"{pr:.6f}",
            "rows": json.dumps([{k: _nan_to_none(v) for k, v in r.items()} for r in rows], default=str),
            "cfg": json.dumps(cfg.to_dict(), default=str)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
