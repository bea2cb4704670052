"""What every rollout engine shares: requests and results, the sampling settings, the dtype
rule, EOS trimming, and ``MergingEngine`` (base W, SVD factors, synced δS or full views, and
the merged W' of a view). The hf engine (rollout_hf.py) and the vllm engine (rollout_vllm.py)
build on it; the Ray actor (rollout.py) picks one. Nothing here imports an engine.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch

from vgrout_ray.model.adapter import merge_delta

# The seed's sampling settings (Qwen3 non-thinking card, T=0.7 as the upstream benchmark).
SAMPLING = dict(temperature=0.7, top_p=1.0, top_k=20, min_p=0.0, repetition_penalty=1.0)


@dataclass
class GenRequest:
    """Sample ``n`` completions of one tokenized prompt; ``seed`` makes the draw reproducible."""

    key: object
    prompt_ids: list[int]
    n: int
    max_new: int
    seed: int
    ablate: bool = False


@dataclass
class GenResult:
    key: object
    version: int
    completions: list[list[int]]  # token ids up to and including EOS (when emitted)
    finished: list[bool]
    seconds: float
    n_tokens: int = 0
    meta: dict = field(default_factory=dict)
    # per completion, log p(token) of each kept token under the engine's raw (T=1) distribution
    logprobs: list[list[float]] | None = None


DELTA_APPLY = ("hook", "merge")


def resolve_dtype(dtype, cuda: bool) -> torch.dtype:
    """Engine dtype: an explicit torch dtype or name, else bf16 on CUDA and fp32 on CPU (the learner's)."""
    if dtype is None:
        return torch.bfloat16 if cuda else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def trim_completion(ids: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Cut a generated row after its first EOS (padding follows it); report whether it finished."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i + 1], True
    return ids, False


class MergingEngine(abc.ABC):
    """What both engines share: base W, SVD factors, the synced δS (or full views), and the
    merged W' of the requested view, pushed into the engine only when (version, view) changes.
    Subclasses set ``base``, ``U``, ``Vh``, ``device`` and implement ``_push``."""

    base: dict[str, torch.Tensor]
    U: dict[str, torch.Tensor]
    Vh: dict[str, torch.Tensor]
    device: torch.device

    def _init_sync_state(self) -> None:
        self.deltas: dict[str, torch.Tensor] | None = None
        self.views: dict[bool, dict[str, torch.Tensor]] | None = None
        self.version = 0
        self._applied: tuple[int, bool] | None = None  # None: the engine holds its base weights

    def load_deltas(self, version: int, deltas: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.base if f"{n}.delta_S" not in deltas or f"{n}.delta_S_hack" not in deltas]
        if missing:
            raise KeyError(f"sync payload lacks modules {missing[:3]}")
        self.deltas = {k: v.to(self.device, torch.float32) for k, v in deltas.items()}
        self.views = None
        self.version = version
        self._applied = (-1, False)

    def load_views(self, version: int, views: dict[bool, dict[str, torch.Tensor]]) -> None:
        """Full-weight sync (benchmark baseline): merged W' per view {ablate: {hf name: W'}}."""
        self.views = {ab: {k: v.to(self.device) for k, v in w.items()} for ab, w in views.items()}
        self.deltas = None
        self.version = version
        self._applied = (-1, False)

    @torch.no_grad()
    def merged(self, ablate: bool) -> dict[str, torch.Tensor]:
        """HF name -> W' of the view (deploy view = δS only when ``ablate``)."""
        if self.views is not None:
            return self.views.get(ablate, self.views[False])
        out = {}
        for n in self.base:
            if self.deltas is None:
                out[f"{n}.weight"] = self.base[n]
                continue
            d = self.deltas[f"{n}.delta_S"]
            if not ablate:
                d = d + self.deltas[f"{n}.delta_S_hack"]
            out[f"{n}.weight"] = merge_delta(self.base[n], self.U[n], self.Vh[n], d)
        return out

    def _apply(self, ablate: bool) -> None:
        if self._applied is None or self._applied == (self.version, ablate):
            return
        self._push(self.merged(ablate))
        self._applied = (self.version, ablate)

    @abc.abstractmethod
    def _push(self, named: dict[str, torch.Tensor]) -> None:
        """Load merged target weights (HF names) into the engine."""

    def merged_state(self, ablate: bool) -> dict[str, torch.Tensor]:
        """Merged target weights of a view (tests and benchmarks compare engines with it)."""
        return {k: v.detach().cpu().clone() for k, v in self.merged(ablate).items()}
