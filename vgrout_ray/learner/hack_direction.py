"""The hack direction's lifecycle, apart from the step: which pairs define it, where it is cached,
how it is extracted (v_hack for erase/route, v_grad for route2), refreshed against the current
model with the quarantine ablated, checked (R3: routed gradients stay in its span) and saved.

``LearnerCore`` owns one and asks it for the direction; nothing here touches the optimiser.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from loguru import logger

from vgrout_ray.algo.pairs import Pair, pair_modes, resolve_pairs
from vgrout_ray.algo.projection import span_residual
from vgrout_ray.algo.random_dirs import random_like
from vgrout_ray.algo.vhack import (basis_overlap, extract_v_hack, load_v_hack, postprocess_v_hack, save_v_hack,
                                   v_grad_from_raw)
from vgrout_ray.config import Config
from vgrout_ray.model.adapter import SVDAdapter

R3_MAX_RATIO = 1e-4
Direction = dict[str, torch.Tensor]


def _to(d: Direction | None, device: torch.device) -> Direction | None:
    return None if d is None else {n: v.to(device) for n, v in d.items()}


class HackDirection:
    """v_hack (an orthonormal basis per module) or v_grad (one unit direction per module)."""

    def __init__(self, cfg: Config, model, adapter: SVDAdapter, tok, device: torch.device):
        self.cfg, self.model, self.adapter, self.tok, self.device = cfg, model, adapter, tok, device
        self.is_route2 = cfg.intervention == "route2"
        self.v_hack: Direction | None = None
        self.v_grad: Direction | None = None
        self.span_checked = False
        self.steps_since_refresh = 0
        self._pairs: list[Pair] | None = None

    @property
    def present(self) -> bool:
        return self.v_hack is not None or self.v_grad is not None

    def pairs(self) -> list[Pair]:
        """The contrastive pairs (the pairs file if configured, else the named pairset)."""
        if self._pairs is None:
            cfg = self.cfg
            self._pairs, what = resolve_pairs(self.tok, pairs_path=cfg.v_hack_pairs_path,
                                              pairset=cfg.v_hack_pairset, problems=cfg.problems)
            logger.info(f"pairs: {what} -> {len(self._pairs)} pairs covering modes "
                        f"{','.join(pair_modes(self._pairs)) or '?'}")
        return self._pairs

    def _extract(self, top_k: int, tau_axis: float):
        return extract_v_hack(self.model, self.adapter, self.tok, self.pairs(), top_k=top_k, tau_axis=tau_axis,
                              n_heldout=self.cfg.v_hack_n_heldout, device=self.device)

    def _compute_v_grad(self) -> Direction:
        _, _, raw, _ = self._extract(top_k=1, tau_axis=0.0)
        n_train = len(self.pairs()) - self.cfg.v_hack_n_heldout
        return _to(v_grad_from_raw(raw, self.adapter.names, n_use=n_train), self.device)

    def cache_path(self) -> Path:
        """Where erase/route read (or write) v_hack: explicit path, else keyed by pairset or model+knobs."""
        cfg = self.cfg
        if cfg.v_hack_path is not None:
            return Path(cfg.v_hack_path)
        vdir = Path(cfg.out_dir) / "vhack"
        if cfg.v_hack_pairs_path is not None:
            return vdir / f"v_hack_pairset_{Path(cfg.v_hack_pairs_path).stem}.safetensors"
        slug = str(cfg.model).rstrip("/").split("/")[-1]
        tau_tag = f"_tau{cfg.v_hack_tau_axis:g}" if cfg.v_hack_tau_axis > 0 else ""
        # all_modes pairs depend on the problem set: key a non-default one into the name
        src_tag = (f"_pp{hashlib.blake2b(str(cfg.problems).encode(), digest_size=4).hexdigest()}"
                   if cfg.problems is not None and cfg.v_hack_pairset == "all_modes" else "")
        return vdir / (f"v_hack_{slug}_{cfg.v_hack_pairset}_k{cfg.v_hack_extract_top_k}{tau_tag}{src_tag}"
                       ".safetensors")

    @property
    def is_random(self) -> bool:
        """The specificity control: a fixed seeded random direction, never refreshed."""
        return self.cfg.v_hack_random_seed is not None

    def init(self) -> None:
        """The arm's starting direction: v_grad for route2, v_hack (cached) otherwise. The vanilla
        arm loads v_hack too, to measure cos_pre (it never projects); with v_hack_random_seed the
        direction is replaced by a seeded random one of the same shape."""
        cfg = self.cfg
        if self.is_route2:
            self.v_grad = self._compute_v_grad()
            logger.info(f"route2: v_grad (gradient mean-diff) for {len(self.v_grad)} modules")
            if self.is_random:
                self.v_grad = random_like(self.v_grad, cfg.v_hack_random_seed, self.device)
                logger.info(f"route2: v_grad replaced by Haar-random directions (seed {cfg.v_hack_random_seed})")
            return
        self.v_hack = self._load_v_hack()
        if self.is_random:
            self.v_hack = random_like(self.v_hack, cfg.v_hack_random_seed, self.device)
            logger.info(f"{cfg.intervention}: v_hack replaced by Haar-random bases of the same shape "
                        f"(seed {cfg.v_hack_random_seed})")
        elif cfg.intervention == "none":
            logger.info("vanilla arm: v_hack loaded to measure cos_pre only (no projection)")

    def _load_v_hack(self) -> Direction:
        cfg = self.cfg
        path = self.cache_path()
        if not path.exists():
            if cfg.v_hack_path is not None:
                raise FileNotFoundError(f"v_hack_path: {path} does not exist")
            logger.info(f"v_hack cache miss at {path}; extracting")
            V, S, _, diag = self._extract(top_k=cfg.v_hack_extract_top_k, tau_axis=cfg.v_hack_tau_axis)
            logger.info(f"v_hack extracted: held-out span cos {diag['heldout']['span_cos']:.3f} "
                        f"(train {diag['train']['span_cos']:.3f})")
            save_v_hack(path, V, S, model=cfg.model, dtype="fp32" if self.device.type == "cpu" else "bf16",
                        top_k=min(cfg.v_hack_extract_top_k, len(self.pairs()) - cfg.v_hack_n_heldout),
                        tau_axis=cfg.v_hack_tau_axis)
        ranks = {n: self.adapter.delta[n].shape[0] for n in self.adapter.names}
        V = load_v_hack(path, ranks, k_use=cfg.v_hack_k, drop_bottom_frac=cfg.v_hack_drop_bottom_frac,
                        model=cfg.model)
        return _to(V, self.device)

    def check_routed_span(self) -> None:
        """R3, once: every parked δS_hack grad must lie in span V (routing math guard, fails loud)."""
        worst, where = 0.0, ""
        for name, V in self.v_hack.items():
            gh = self.adapter.hack[name].grad
            if gh is None or gh.norm() < 1e-12:
                continue
            ratio = span_residual(gh, V)
            if ratio > worst:
                worst, where = ratio, name
        logger.info(f"R3 span check: max ||resid||/||gh|| = {worst:.2e} ({where or 'no routed module'}; "
                    f"want <{R3_MAX_RATIO:g})")
        if worst >= R3_MAX_RATIO:
            raise AssertionError(f"delta_S_hack.grad escaped span(V) in {where}: {worst:.2e}")
        self.span_checked = True

    def maybe_refresh(self, step: int, opt: torch.optim.Optimizer) -> tuple[str, float]:
        """Re-extract against the current model, quarantine ablated, when ``step`` is due.

        Returns the table's ``refr`` cell and the basis overlap with the previous v_hack."""
        refr, overlap = self._refresh(step, opt)
        self.steps_since_refresh = 0 if refr != "-" else self.steps_since_refresh + 1
        return refr, overlap

    def _refresh(self, step: int, opt: torch.optim.Optimizer) -> tuple[str, float]:
        cfg = self.cfg
        every = cfg.v_hack_refresh_every
        if every <= 0 or (step + 1) % every != 0:
            return "-", math.nan
        if self.is_random:
            return "-", math.nan  # the fixed Haar draw is the control; never replace it
        if not self.is_route2 and self.v_hack is None:
            return "-", math.nan
        opt.zero_grad(set_to_none=True)
        try:
            with self.adapter.ablate_quarantine():
                if self.is_route2:
                    self.v_grad = self._compute_v_grad()
                    return "rfr", math.nan
                V, S, _, _ = self._extract(top_k=cfg.v_hack_extract_top_k, tau_axis=cfg.v_hack_tau_axis)
        finally:
            opt.zero_grad(set_to_none=True)
        post = postprocess_v_hack(V, S, k_use=cfg.v_hack_k, drop_bottom_frac=cfg.v_hack_drop_bottom_frac,
                                  source=f"refresh@step{step}")
        overlap = basis_overlap(post, self.v_hack)
        n_ax = sum(v.shape[0] for v in post.values())
        logger.info(f"refresh@step{step}: {len(post)}mod/{n_ax}ax basis_overlap_with_prev={overlap:.3f}")
        self.v_hack = _to(post, self.device)
        return f"{len(self.v_hack)}/{n_ax}", overlap

    def state_dict(self, cpu_copy) -> dict:
        return {"v_hack": cpu_copy(self.v_hack), "v_grad": cpu_copy(self.v_grad),
                "route_span_checked": self.span_checked, "steps_since_refresh": self.steps_since_refresh}

    def load_state_dict(self, state: dict) -> None:
        self.v_hack = _to(state["v_hack"], self.device)
        self.v_grad = _to(state["v_grad"], self.device)
        self.span_checked = bool(state["route_span_checked"])
        self.steps_since_refresh = int(state["steps_since_refresh"])
