"""LearnerCore: the learner's whole step, in-process (the Ray LearnerActor wraps it).

Holds the model + δS adapter, AdamW over δS and δS_hack with the seed's warmup+cosine
schedule, the hack direction (v_hack for erase/route, v_grad for route2) and route2's τ
state. The driver streams a step as ``begin_step`` → ``add_group``×P → ``end_step``: each
group is forwarded and backpropagated as soon as it arrives (gradients accumulate), and
``end_step`` applies the intervention and the optimizer step, exactly as seed 003's loop.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from loguru import logger

from .algo import loss as L
from .algo.pairs import Pair, pair_modes, resolve_pairs
from .algo.projection import cos_pre_from_grads, project_grads, span_residual
from .algo.route2 import Route2Gate, build_route2_anchors, haar_unit_dirs
from .algo.vhack import (basis_overlap, extract_v_hack, load_v_hack, postprocess_v_hack, save_v_hack,
                         v_grad_from_raw)
from .config import Config
from .model.adapter import SVDAdapter, attach_adapter
from .model.base_store import BaseBundle, build_model, local_model_dir
from .model.svd_cache import load_or_compute_factors
from .model.tiny import resolve_model
from .util import load_tokenizer

R3_MAX_RATIO = 1e-4
ZERO_VAR_EPS = 1e-4
_flash_warned = False


NAN = math.nan


@dataclass
class LearnerStepStats(Mapping):
    """What ``end_step`` reports: the optimizer step's loss and norms, the intervention's
    diagnostics (NaN where the arm has none), the sampler mismatch and the phase seconds.

    Typed fields; ``stats["gn"]`` / ``stats.get("kl")`` still work, so readers that take a
    mapping (``rows.step_row``, tests) need no change."""

    loss: float = 0.0
    gn: float = NAN
    q_egy: float = NAN
    tau: float = NAN
    hkgap: float = NAN
    resid: float = NAN
    lr: float = NAN
    cos_pre: float = NAN
    cos_pre_s: float = NAN
    cos_pre_t: float = NAN
    cos_post: float = NAN
    fired: float = NAN
    refr: str = "-"  # "-" or "<modules>/<axes>" when v_hack was refreshed this step
    fb: float = 0.0  # seconds of forward+backward over the step's groups
    t_refresh: float = 0.0
    flagged: float = NAN
    gate_cos: list = field(default_factory=list)
    overlap: float = NAN
    stale: float = NAN
    n_groups: int = 0
    n_zerovar: int = 0
    kl: float = NAN
    clip_low: float = NAN
    clip_high: float = NAN
    clip_region: float = NAN
    dsh_norm: float = 0.0
    version: int = 0
    mismatch_kl: float = NAN
    mismatch_max_abs_dlogp: float = NAN
    mismatch_tokens: int = 0
    tis_mean_w: float = NAN
    tis_capped_frac: float = NAN

    # the read-only Mapping protocol over the field names (Mapping supplies ``in``, ``get``,
    # ``keys``, ``items``), so readers written for the old dict keep working
    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class RolloutGroup:
    """One prompt's rollouts as the learner needs them (students first, then teacher rows)."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    rewards: list[float]
    is_student: list[bool]
    hack_E: list[bool] = field(default_factory=list)  # detector E per row (or per leading student row)
    # the rollout engine's log-prob of every sampled token, per leading student row (None: a row
    # the sampler did not draw from the training view, e.g. the ablated slice); [] = not given
    sampler_logps: list[list[float] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.completion_ids)
        if n == 0:
            raise ValueError("RolloutGroup has no completions")
        if len(self.rewards) != n or len(self.is_student) != n:
            raise ValueError(f"RolloutGroup: {n} completions but {len(self.rewards)} rewards and "
                             f"{len(self.is_student)} is_student flags")
        if len(self.hack_E) > n:
            raise ValueError(f"RolloutGroup: {len(self.hack_E)} hack_E flags for {n} completions")
        if not self.prompt_ids:
            raise ValueError("RolloutGroup has an empty prompt")
        if len(self.sampler_logps) > n:
            raise ValueError(f"RolloutGroup: {len(self.sampler_logps)} sampler_logps rows for {n} completions")
        for i, lp in enumerate(self.sampler_logps):
            if lp is not None and len(lp) != len(self.completion_ids[i]):
                raise ValueError(f"RolloutGroup: sampler_logps[{i}] has {len(lp)} values for "
                                 f"{len(self.completion_ids[i])} completion tokens")


def load_model(path: str, device: torch.device, dtype: torch.dtype | None = None):
    """fp32 + sdpa on CPU; bf16 + flash_attention_2 on CUDA (sdpa when flash-attn is missing).
    ``dtype`` overrides the dtype (tests run the bf16 learner on CPU)."""
    from transformers import AutoModelForCausalLM

    dtype, attn = learner_dtype_attn(device, dtype)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn).to(device)
    model.config.use_cache = False
    logger.info(f"learner: {path} loaded on {device} ({dtype}, {attn}) in {time.perf_counter() - t0:.1f}s")
    return model


def load_model_from_bundle(base: BaseBundle, device: torch.device, dtype: torch.dtype | None = None):
    """``load_model`` for a base bundle from the object store: (model, factors), same dtype and attention."""
    dtype, attn = learner_dtype_attn(device, dtype)
    model, factors = build_model(base, device, dtype, attn=attn)
    model.config.use_cache = False
    return model, factors


def learner_dtype_attn(device: torch.device, dtype: torch.dtype | None = None) -> tuple[torch.dtype, str]:
    """(dtype, attention implementation) the learner runs in on ``device``."""
    global _flash_warned
    from transformers.utils import is_flash_attn_2_available

    if device.type != "cuda":
        return dtype or torch.float32, "sdpa"
    attn = "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
    if attn == "sdpa" and not _flash_warned:
        logger.warning("flash-attn is not installed: learner uses bf16 + sdpa attention")
        _flash_warned = True
    return dtype or torch.bfloat16, attn


def _grad_l2(params) -> float:
    gs = [p.grad for p in params if p.grad is not None]
    return float(torch.norm(torch.stack([g.norm() for g in gs]))) if gs else 0.0


def _cpu_copy(obj):
    """Deep copy with every tensor moved to CPU (decouples checkpoints from live state)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


class LearnerCore:
    """Model + adapter + optimizer + intervention state; one instance per training run."""

    def __init__(self, cfg: Config, model_path: str | Path | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, base: BaseBundle | None = None, shared_model=None):
        """``base``: the frozen weights and SVD factors from the object store (a sweep shares one
        copy per node, see ``model.base_store``); None reads the checkpoint and the SVD cache.
        ``shared_model``: (model, factors) built from ``base`` that other runs' cores also hook
        (``learner_host``); this core adds its own adapter to it."""
        self.cfg = cfg
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if base is not None:  # the bundle's own files: this node may not have the checkpoint
            if model_path is not None and Path(model_path).resolve() != Path(base.model_path).resolve():
                raise ValueError(f"base bundle is of {base.model_path}, but this run trains {model_path}")
            self.model_path = local_model_dir(base)
        else:
            self.model_path = str(model_path) if model_path is not None else resolve_model(cfg.model, cfg.svd_cache)
        torch.manual_seed(cfg.seed)
        self.tok = load_tokenizer(self.model_path)
        self.pad_id = int(self.tok.pad_token_id)
        if base is None:
            self.model = load_model(self.model_path, self.device, dtype)
            factors = load_or_compute_factors(self.model, self.model_path, cfg.svd_cache)
            self.base_source = "checkpoint"
        elif shared_model is not None:
            self.model, factors = shared_model
            self.base_source = f"object store {base.digest}, model shared with other runs"
        else:
            self.model, factors = load_model_from_bundle(base, self.device, dtype)
            self.base_source = f"object store {base.digest}"
        self.adapter: SVDAdapter = attach_adapter(self.model, factors)
        self.model.train()
        if cfg.grad_checkpointing:
            from .model.checkpointing import enable_grad_checkpointing

            enable_grad_checkpointing(self.model, self.adapter)
        self.is_route2 = cfg.intervention == "route2"
        logger.info(f"learner: {self.model_path} ({self.base_source}) on {self.device}, "
                    f"{len(self.adapter.names)} adapted modules, "
                    f"δS {sum(p.numel() for p in self.adapter.delta_params()):,} "
                    f"(+{sum(p.numel() for p in self.adapter.hack_params()):,} δS_hack)")

        self.opt = torch.optim.AdamW(self.adapter.delta_params() + self.adapter.hack_params(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2))
        warmup = max(1, int(cfg.warmup_frac * cfg.steps))
        self.sched = torch.optim.lr_scheduler.SequentialLR(self.opt, schedulers=[
            torch.optim.lr_scheduler.LinearLR(self.opt, start_factor=1e-3, end_factor=1.0, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(1, cfg.steps - warmup)),
        ], milestones=[warmup])

        self.gate = Route2Gate()
        self.v_hack: dict[str, torch.Tensor] | None = None
        self.v_grad: dict[str, torch.Tensor] | None = None
        self._pairs_cache: list[Pair] | None = None
        self.version = 0
        self.step = -1
        self.route_span_checked = False
        self.steps_since_refresh = 0
        self.split = False
        self._in_step = False
        self._init_direction()
        self._reset_step_state()

    # ── hack direction ──
    def pairs(self) -> list[Pair]:
        """The contrastive pairs (the pairs file if configured, else the named pairset)."""
        if self._pairs_cache is None:
            cfg = self.cfg
            self._pairs_cache, what = resolve_pairs(self.tok, pairs_path=cfg.vhack_pairs_path,
                                                    pairset=cfg.vhack_pairset, problems=cfg.problems)
            logger.info(f"pairs: {what} -> {len(self._pairs_cache)} pairs covering modes "
                        f"{','.join(pair_modes(self._pairs_cache)) or '?'}")
        return self._pairs_cache

    def _extract(self, top_k: int, tau_axis: float):
        return extract_v_hack(self.model, self.adapter, self.tok, self.pairs(), top_k=top_k, tau_axis=tau_axis,
                              n_heldout=self.cfg.vhack_n_heldout, device=self.device)

    def _compute_v_grad(self) -> dict[str, torch.Tensor]:
        _, _, raw, _ = self._extract(top_k=1, tau_axis=0.0)
        n_train = len(self.pairs()) - self.cfg.vhack_n_heldout
        return {n: v.to(self.device) for n, v in v_grad_from_raw(raw, self.adapter.names, n_use=n_train).items()}

    def v_hack_cache_path(self) -> Path:
        """Where erase/route read (or write) v_hack: explicit path, else keyed by pairset or model+knobs."""
        cfg = self.cfg
        if cfg.v_hack_path is not None:
            return Path(cfg.v_hack_path)
        vdir = Path(cfg.out_dir) / "vhack"
        if cfg.vhack_pairs_path is not None:
            return vdir / f"v_hack_pairset_{Path(cfg.vhack_pairs_path).stem}.safetensors"
        slug = str(cfg.model).rstrip("/").split("/")[-1]
        tau_tag = f"_tau{cfg.v_hack_tau_axis:g}" if cfg.v_hack_tau_axis > 0 else ""
        # all_modes pairs depend on the problem set: key a non-default one into the name
        src_tag = (f"_pp{hashlib.blake2b(str(cfg.problems).encode(), digest_size=4).hexdigest()}"
                   if cfg.problems is not None and cfg.vhack_pairset == "all_modes" else "")
        return vdir / (f"v_hack_{slug}_{cfg.vhack_pairset}_k{cfg.v_hack_extract_top_k}{tau_tag}{src_tag}"
                       ".safetensors")

    def _init_direction(self) -> None:
        cfg = self.cfg
        if cfg.intervention == "none":
            if cfg.v_hack_path is not None:
                logger.info(f"vanilla arm: ignoring v_hack_path={cfg.v_hack_path} (no projection)")
            return
        if self.is_route2:
            self.v_grad = self._compute_v_grad()
            logger.info(f"route2: v_grad (gradient mean-diff) for {len(self.v_grad)} modules")
            if cfg.route2_random_v_seed is not None:
                self.v_grad = haar_unit_dirs(self.v_grad, cfg.route2_random_v_seed, self.device)
                logger.info(f"route2: v_grad replaced by Haar-random directions (seed {cfg.route2_random_v_seed})")
            return
        path = self.v_hack_cache_path()
        if not path.exists():
            if cfg.v_hack_path is not None:
                raise FileNotFoundError(f"v_hack_path: {path} does not exist")
            logger.info(f"v_hack cache miss at {path}; extracting")
            V, S, _, diag = self._extract(top_k=cfg.v_hack_extract_top_k, tau_axis=cfg.v_hack_tau_axis)
            logger.info(f"v_hack extracted: held-out span cos {diag['heldout']['span_cos']:.3f} "
                        f"(train {diag['train']['span_cos']:.3f})")
            save_v_hack(path, V, S, model=cfg.model, dtype="fp32" if self.device.type == "cpu" else "bf16",
                        top_k=min(cfg.v_hack_extract_top_k, len(self.pairs()) - cfg.vhack_n_heldout),
                        tau_axis=cfg.v_hack_tau_axis)
        ranks = {n: self.adapter.delta[n].shape[0] for n in self.adapter.names}
        V = load_v_hack(path, ranks, k_use=cfg.v_hack_k, drop_bottom_frac=cfg.v_hack_drop_bottom_frac,
                        model=cfg.model)
        self.v_hack = {n: v.to(self.device) for n, v in V.items()}

    # ── streaming step API ──
    def _reset_step_state(self) -> None:
        self._g_s: dict[str, torch.Tensor] = {}
        self._g_t: dict[str, torch.Tensor] = {}
        self._g_hack: dict[str, torch.Tensor] = {}
        self._loss = 0.0
        self._t_fb = 0.0
        self._n_groups = self._n_zerovar = 0
        self._tau: list[float] = []
        self._hkgap: list[float] = []
        self._resid: list[float] = []
        self._flagged: list[float] = []
        self._gate_cos: list[float] = []
        self._tok = self._clip_low = self._clip_high = self._kl_sum = 0.0
        self._mm_kl = self._mm_max = 0.0
        self._mm_n = 0
        self._tis_sum = 0.0
        self._tis_capped = self._tis_n = 0

    def begin_step(self, step: int) -> None:
        """Start optimizer step ``step``: clear grads and accumulators, pick split vs combined backward."""
        self.step = step
        self.opt.zero_grad(set_to_none=True)
        self._reset_step_state()
        # route2 has no v_hack (cos_pre is NaN anyway) and reads its gate from one combined backward
        self.split = (step % self.cfg.cos_pre_split_every == 0) and not self.is_route2
        self._in_step = True

    def _need_step(self, what: str) -> None:
        if not self._in_step:
            raise RuntimeError(f"{what} outside a step: call begin_step(step) first")

    def _tensors(self, g: RolloutGroup):
        plen = len(g.prompt_ids)
        lens = [len(c) for c in g.completion_ids]
        L_c = max(1, max(lens))
        rows = [list(g.prompt_ids) + list(c) + [self.pad_id] * (L_c - len(c)) for c in g.completion_ids]
        merged = torch.tensor(rows, dtype=torch.long, device=self.device)
        comp = merged[:, plen:]
        in_len = torch.arange(L_c, device=self.device).unsqueeze(0) < torch.tensor(lens, device=self.device).unsqueeze(1)
        mask = (in_len & (comp != self.pad_id)).float()
        return merged, L_c, mask

    def _accumulate(self, store: dict[str, torch.Tensor], name: str, g: torch.Tensor) -> None:
        store[name] = store[name] + g.detach() if name in store else g.detach().clone()

    def add_group(self, group: RolloutGroup) -> tuple[list[float], dict]:
        """Forward + backward one prompt's group; grads accumulate until ``end_step``.

        Returns (per-rollout mean log π_old over completion tokens, info). Zero-variance groups
        are skipped (NaN log-probs), like the seed. info: zerovar, loss, adv, gate_cos, flagged.
        """
        self._need_step("add_group")
        cfg = self.cfg
        n = len(group.completion_ids)
        nan = [math.nan] * n
        rewards = torch.tensor(group.rewards, dtype=torch.float32, device=self.device)
        if (rewards.max() - rewards.min()).item() < ZERO_VAR_EPS:
            self._n_zerovar += 1
            self._gate_cos.extend(nan)
            if any(lp is not None for lp in group.sampler_logps):
                # no loss, but the mismatch is still measured on every sampled row
                t0 = time.perf_counter()
                merged, L_c, mask = self._tensors(group)
                with torch.no_grad():
                    logp_old = L.completion_logps(self.model, merged, L_c).detach()
                self._sampler_terms(group, logp_old, mask)
                self._t_fb += time.perf_counter() - t0
            return nan, {"zerovar": True, "loss": 0.0, "adv": [0.0] * n, "gate_cos": nan, "flagged": nan}
        self._n_groups += 1
        t0 = time.perf_counter()
        A = L.group_advantages(rewards, cfg.unbiased)
        merged, L_c, mask = self._tensors(group)
        with torch.no_grad():
            logp_old = L.completion_logps(self.model, merged, L_c).detach()
        is_weight = self._sampler_terms(group, logp_old, mask)
        logp_ref = self.adapter.ref_logprobs(merged, L_c).detach() if cfg.beta > 0 else None
        if self.is_route2:
            with self.adapter.gate_probe():
                logp = L.completion_logps(self.model, merged, L_c)
        else:
            logp = L.completion_logps(self.model, merged, L_c)
        mean_logp = ((logp_old * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu().tolist()
        self._token_stats(logp.detach(), logp_old, logp_ref, A, mask)
        Lp = L.grpo_token_loss(logp, logp_old, A, cfg.clip, cfg.beta, logp_ref, is_weight=is_weight)
        norm = dict(unbiased=cfg.unbiased, group=cfg.group, max_new=cfg.max_new, prompts_per_step=cfg.prompts_per_step)
        info = {"zerovar": False, "adv": A.cpu().tolist(), "gate_cos": nan, "flagged": nan}
        if self.split:
            is_s = torch.tensor(group.is_student, dtype=torch.bool, device=self.device)
            loss_s, loss_t = L.split_losses(Lp, mask, is_s, **norm)
            for loss, store, retain in ((loss_s, self._g_s, True), (loss_t, self._g_t, False)):
                loss.backward(retain_graph=retain)
                for name in self.adapter.names:
                    gr = self.adapter.delta[name].grad
                    if gr is not None:
                        self._accumulate(store, name, gr)
                self.adapter.zero_grad()
            info["loss"] = float((loss_s + loss_t).item())
        else:
            loss = L.normalise_loss(Lp, mask, **norm)
            loss.backward()
            if self.is_route2:
                info.update(self._route2_group(group))
            else:
                for name in self.adapter.names:
                    gr = self.adapter.delta[name].grad
                    if gr is not None:
                        self._accumulate(self._g_s, name, gr)
            self.adapter.zero_grad()
            self.adapter.clear_gates()
            info["loss"] = float(loss.item())
        self._gate_cos.extend(info["gate_cos"])
        self._loss += info["loss"]
        self._t_fb += time.perf_counter() - t0
        return mean_logp, info

    @torch.no_grad()
    def _sampler_terms(self, group: RolloutGroup, logp_old: torch.Tensor, mask: torch.Tensor):
        """Accumulate the sampler-vs-learner mismatch of the rows with sampler log-probs and
        return the TIS weights [B, L] (None when tis_cap is off or no row has them)."""
        rows = [i for i, lp in enumerate(group.sampler_logps) if lp is not None]
        if not rows:
            return None
        B, L_c = logp_old.shape
        lp_s = torch.zeros(B, L_c, dtype=torch.float32, device=self.device)
        has = torch.zeros(B, dtype=torch.bool, device=self.device)
        for i in rows:
            v = group.sampler_logps[i]
            if v:
                lp_s[i, :len(v)] = torch.tensor(v, dtype=torch.float32, device=self.device)
            has[i] = True
        m = mask * has.unsqueeze(1).float()
        mm = L.sampler_mismatch(logp_old.float(), lp_s, m)
        self._mm_kl += mm["kl_sum"]
        self._mm_max = max(self._mm_max, mm["max_abs"])
        self._mm_n += mm["n"]
        if self.cfg.tis_cap is None:
            return None
        w = L.tis_weights(logp_old.float(), lp_s, has, self.cfg.tis_cap)
        mb = m.bool()
        self._tis_sum += float(w[mb].sum())
        self._tis_capped += int((w[mb] >= self.cfg.tis_cap).sum())
        self._tis_n += int(mb.sum())
        return w.to(logp_old.dtype)

    @torch.no_grad()
    def _token_stats(self, logp, logp_old, logp_ref, A, mask) -> None:
        """PPO clip fractions and the K3 KL over this group's completion tokens (diagnostics only)."""
        ratio = torch.exp(logp - logp_old)
        a = A.unsqueeze(1).expand_as(ratio)
        low = (ratio < 1 - self.cfg.clip) & (a < 0)
        high = (ratio > 1 + self.cfg.clip) & (a > 0)
        m = mask.bool()
        self._tok += float(m.sum())
        self._clip_low += float((low & m).sum())
        self._clip_high += float((high & m).sum())
        if logp_ref is not None:
            d = logp_ref - logp
            self._kl_sum += float(((torch.exp(d) - d - 1.0) * mask).sum())

    def _route2_group(self, group: RolloutGroup) -> dict:
        """Split this group's δS grad per module into kept and routed (quarantine) parts."""
        ha, ca = build_route2_anchors(group.is_student, group.hack_E, self.cfg.gate_anchor_teacher_only, self.device)
        cgs = self.adapter.gate_grads()
        cos_sum = torch.zeros(len(group.completion_ids), dtype=torch.float32, device=self.device)
        flag_sum = torch.zeros_like(cos_sum)
        n_mod = 0
        for name in self.adapter.names:
            g = self.adapter.delta[name].grad
            if g is None:
                continue
            r = self.gate.filter(name, g, cgs[name], self.adapter.delta[name], self.v_grad[name], ha, ca)
            self._accumulate(self._g_s, name, r.g_keep)
            self._accumulate(self._g_hack, name, r.g_route)
            self._tau.append(r.tau)
            self._hkgap.append(r.hkgap)
            self._resid.append(r.resid)
            self._flagged.append(float(r.flagged.mean()))
            cos_sum += r.cos_b.float()
            flag_sum += r.flagged.float()
            n_mod += 1
        k = max(1, n_mod)
        return {"gate_cos": (cos_sum / k).cpu().tolist(), "flagged": (flag_sum / k).cpu().tolist()}

    def end_step(self) -> LearnerStepStats:
        """Inject accumulated grads, apply the intervention, clip, step, refresh when due."""
        self._need_step("end_step")
        self._in_step = False
        cfg = self.cfg
        ad = self.adapter
        for name in ad.names:
            gs, gt = self._g_s.get(name), self._g_t.get(name)
            if gs is None and gt is None:
                continue
            ad.delta[name].grad = gt if gs is None else (gs if gt is None else gs + gt)
        for name, g in self._g_hack.items():
            ad.hack[name].grad = g
        nan = math.nan
        diag = {"mean_cos_pre": nan, "mean_cos_post": nan, "frac_fired": nan, "cos_pre_s": nan, "cos_pre_t": nan}
        if self.v_hack is not None:
            if self.split:
                diag["cos_pre_s"] = cos_pre_from_grads(self._g_s, self.v_hack)
                diag["cos_pre_t"] = cos_pre_from_grads(self._g_t, self.v_hack)
            grads = {n: ad.delta[n].grad for n in ad.names if ad.delta[n].grad is not None}
            route = cfg.intervention == "route"
            new, hack, d = project_grads(grads, self.v_hack, preserve_magnitude=cfg.preserve_magnitude, route=route,
                                         gate_mode=cfg.gate_mode, overshoot=cfg.project_overshoot)
            diag.update(d)
            for n, g in new.items():
                ad.delta[n].grad = g
            for n, g in hack.items():
                ad.hack[n].grad = g
            if route and not self.route_span_checked and d["frac_fired"] > 0:
                self._r3_span_check()
        gn_keep = _grad_l2(ad.delta_params())
        gn_quar = _grad_l2(ad.hack_params())
        q_egy = gn_quar / (gn_keep + gn_quar) if (gn_keep + gn_quar) > 0 else 0.0
        gn = float(torch.nn.utils.clip_grad_norm_(ad.delta_params() + ad.hack_params(), cfg.grad_clip))
        self.opt.step()
        self.sched.step()
        self.version += 1
        t_r = time.perf_counter()
        refr, overlap = self._maybe_refresh()
        t_refresh = time.perf_counter() - t_r
        self.steps_since_refresh = 0 if refr != "-" else self.steps_since_refresh + 1
        has_dir = self.v_hack is not None or self.v_grad is not None
        return LearnerStepStats(
            loss=self._loss, gn=gn, q_egy=q_egy,
            tau=_mean(self._tau), hkgap=_mean(self._hkgap), resid=_mean(self._resid),
            lr=self.sched.get_last_lr()[0],
            cos_pre=diag["mean_cos_pre"], cos_pre_s=diag["cos_pre_s"], cos_pre_t=diag["cos_pre_t"],
            cos_post=diag["mean_cos_post"], fired=diag["frac_fired"], refr=refr,
            fb=self._t_fb, t_refresh=t_refresh,
            flagged=_mean(self._flagged), gate_cos=list(self._gate_cos),
            overlap=overlap, stale=self.steps_since_refresh if has_dir else nan,
            n_groups=self._n_groups, n_zerovar=self._n_zerovar,
            kl=(self._kl_sum / self._tok) if (cfg.beta > 0 and self._tok) else nan,
            clip_low=self._clip_low / self._tok if self._tok else nan,
            clip_high=self._clip_high / self._tok if self._tok else nan,
            clip_region=(self._clip_low + self._clip_high) / self._tok if self._tok else nan,
            dsh_norm=self.delta_hack_norm(), version=self.version,
            mismatch_kl=self._mm_kl / self._mm_n if self._mm_n else nan,
            mismatch_max_abs_dlogp=self._mm_max if self._mm_n else nan,
            mismatch_tokens=self._mm_n,
            tis_mean_w=self._tis_sum / self._tis_n if self._tis_n else nan,
            tis_capped_frac=self._tis_capped / self._tis_n if self._tis_n else nan,
        )

    def _r3_span_check(self) -> None:
        """Once: every parked δS_hack grad must lie in span V (routing math guard, fails loud)."""
        worst, where = 0.0, ""
        for name, V in self.v_hack.items():
            gh = self.adapter.hack[name].grad
            if gh is None or gh.norm() < 1e-12:
                continue
            ratio = span_residual(gh, V)
            if ratio > worst:
                worst, where = ratio, name
        logger.info(f"R3 span check: max ||resid||/||gh|| = {worst:.2e} ({where or 'no routed module'}; want <{R3_MAX_RATIO:g})")
        if worst >= R3_MAX_RATIO:
            raise AssertionError(f"delta_S_hack.grad escaped span(V) in {where}: {worst:.2e}")
        self.route_span_checked = True

    def _maybe_refresh(self) -> tuple[str, float]:
        """Re-extract the hack direction against the current model, quarantine ablated."""
        cfg = self.cfg
        every = cfg.vhack_refresh_every
        if every <= 0 or (self.step + 1) % every != 0:
            return "-", math.nan
        if self.is_route2 and cfg.route2_random_v_seed is not None:
            return "-", math.nan  # the fixed Haar draw is the control; never replace it
        if not self.is_route2 and self.v_hack is None:
            return "-", math.nan
        self.opt.zero_grad(set_to_none=True)
        try:
            with self.adapter.ablate_quarantine():
                if self.is_route2:
                    self.v_grad = self._compute_v_grad()
                    return "rfr", math.nan
                V, S, _, _ = self._extract(top_k=cfg.v_hack_extract_top_k, tau_axis=cfg.v_hack_tau_axis)
        finally:
            self.opt.zero_grad(set_to_none=True)
        post = postprocess_v_hack(V, S, k_use=cfg.v_hack_k, drop_bottom_frac=cfg.v_hack_drop_bottom_frac,
                                  source=f"refresh@step{self.step}")
        overlap = basis_overlap(post, self.v_hack)
        n_ax = sum(v.shape[0] for v in post.values())
        logger.info(f"refresh@step{self.step}: {len(post)}mod/{n_ax}ax basis_overlap_with_prev={overlap:.3f}")
        self.v_hack = {n: v.to(self.device) for n, v in post.items()}
        return f"{len(self.v_hack)}/{n_ax}", overlap

    # ── state ──
    def deltas_state(self) -> dict[str, torch.Tensor]:
        """δS and δS_hack as CPU tensors (weight sync payload); pair it with ``version``."""
        return self.adapter.deltas_state()

    def delta_hack_norm(self) -> float:
        return self.adapter.delta_hack_norm()

    def state_dict(self) -> dict:
        """Everything a resumed run needs, as CPU tensors and plain Python (torch.save-able)."""
        return {
            "version": self.version, "step": self.step, "deltas": self.adapter.deltas_state(),
            "opt": _cpu_copy(self.opt.state_dict()), "sched": copy.deepcopy(self.sched.state_dict()),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "v_hack": _cpu_copy(self.v_hack), "v_grad": _cpu_copy(self.v_grad),
            "route2": self.gate.state_dict(), "route_span_checked": self.route_span_checked,
            "steps_since_refresh": self.steps_since_refresh,
        }

    def load_state_dict(self, state: dict) -> None:
        self.adapter.load_deltas(state["deltas"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        to_dev = (lambda d: None if d is None else {n: v.to(self.device) for n, v in d.items()})
        self.v_hack = to_dev(state["v_hack"])
        self.v_grad = to_dev(state["v_grad"])
        self.gate.load_state_dict(state["route2"])
        self.route_span_checked = bool(state["route_span_checked"])
        self.steps_since_refresh = int(state["steps_since_refresh"])
        self.version = int(state["version"])
        self.step = int(state["step"])
