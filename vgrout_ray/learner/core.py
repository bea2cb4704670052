"""LearnerCore: the learner's whole step, in-process (the Ray LearnerActor wraps it).

Holds the model + δS adapter, AdamW over δS and δS_hack with the seed's warmup+cosine
schedule, the hack direction (v_hack for erase/route, v_grad for route2) and route2's τ
state. The driver streams a step as ``begin_step`` → ``add_group``×P → ``end_step``: each
group is forwarded and backpropagated as soon as it arrives (gradients accumulate), and
``end_step`` applies the intervention and the optimizer step, exactly as seed 003's loop.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from loguru import logger

from vgrout_ray.algo import loss as L
from vgrout_ray.algo.projection import cos_pre_from_grads, project_grads
from vgrout_ray.algo.route2 import Route2Gate, build_route2_anchors
from vgrout_ray.learner.accumulators import StepAccumulators, accumulate
from vgrout_ray.learner.hack_direction import HackDirection
from vgrout_ray.config import Config
from vgrout_ray.model.adapter import SVDAdapter, attach_adapter
from vgrout_ray.model.base_store import BaseBundle, build_model, local_model_dir
from vgrout_ray.model.svd_cache import load_or_compute_factors
from vgrout_ray.model.resolve import resolve_model
from vgrout_ray.util import load_tokenizer

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

    @property
    def n_students(self) -> int:
        return next((i for i, s in enumerate(self.is_student) if not s), len(self.is_student))

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
        if any(self.is_student[self.n_students:]):
            raise ValueError("RolloutGroup: student rows must come before teacher rows")
        if len(self.sampler_logps) > n:
            raise ValueError(f"RolloutGroup: {len(self.sampler_logps)} sampler_logps rows for {n} completions")
        for i, lp in enumerate(self.sampler_logps):
            if lp is not None and len(lp) != len(self.completion_ids[i]):
                raise ValueError(f"RolloutGroup: sampler_logps[{i}] has {len(lp)} values for "
                                 f"{len(self.completion_ids[i])} completion tokens")


@dataclass(frozen=True)
class RowScore:
    """What the learner computed for one rollout row of a group."""

    logp: float  # mean log π_old over its completion tokens (NaN in a skipped zero-variance group)
    adv: float
    gate_cos: float  # route2's gate cosine (NaN elsewhere)


@dataclass
class GroupResult:
    """The learner's answer for one group, with its student and teacher rows by name.

    Rows are stored in the group's order (students, then teachers); ``students`` and
    ``teachers`` are the two named parts, so no reader counts positions."""

    logps: list[float]
    adv: list[float]
    gate_cos: list[float]
    n_students: int
    zerovar: bool
    loss: float
    flagged: list[float]
    index: int = -1  # the prompt's position in the step (set by the actor)
    seconds: float = 0.0

    def _row(self, i: int) -> RowScore:
        return RowScore(self.logps[i], self.adv[i], self.gate_cos[i])

    @property
    def students(self) -> list[RowScore]:
        return [self._row(i) for i in range(self.n_students)]

    @property
    def teachers(self) -> list[RowScore]:
        return [self._row(i) for i in range(self.n_students, len(self.logps))]


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
            from vgrout_ray.model.checkpointing import enable_grad_checkpointing

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
        self.direction = HackDirection(cfg, self.model, self.adapter, self.tok, self.device)
        self.version = 0
        self.step = -1
        self.split = False
        self._in_step = False
        self.direction.init()
        self._reset_step_state()

    # ── streaming step API ──
    def _reset_step_state(self) -> None:
        self.acc = StepAccumulators()

    def begin_step(self, step: int) -> None:
        """Start optimizer step ``step``: clear grads and accumulators, pick split vs combined backward."""
        self.step = step
        self.opt.zero_grad(set_to_none=True)
        self._reset_step_state()
        # a split step backs the student and teacher losses up separately to measure cos_pre_s/_t
        # (route2 against its v_grad: its gate still reads the summed grads)
        self.split = step % self.cfg.cos_pre_split_every == 0
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

    def add_group(self, group: RolloutGroup) -> GroupResult:
        """Forward + backward one prompt's group; grads accumulate until ``end_step``.

        Zero-variance groups are skipped (NaN log-probs, no loss), like the seed."""
        self._need_step("add_group")
        cfg = self.cfg
        n = len(group.completion_ids)
        nan = [math.nan] * n
        rewards = torch.tensor(group.rewards, dtype=torch.float32, device=self.device)
        if (rewards.max() - rewards.min()).item() < ZERO_VAR_EPS:
            self.acc.n_zerovar += 1
            self.acc.gate_cos.extend(nan)
            if any(lp is not None for lp in group.sampler_logps):
                # no loss, but the mismatch is still measured on every sampled row
                t0 = time.perf_counter()
                merged, L_c, mask = self._tensors(group)
                with torch.no_grad():
                    logp_old = L.completion_logps(self.model, merged, L_c).detach()
                self._sampler_terms(group, logp_old, mask)
                self.acc.fb_seconds += time.perf_counter() - t0
            return GroupResult(logps=nan, adv=[0.0] * n, gate_cos=nan, n_students=group.n_students, zerovar=True,
                               loss=0.0, flagged=nan)
        self.acc.n_groups += 1
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
            loss = loss_s + loss_t
            if self.is_route2:
                self._route2_split_backward(loss_s, loss_t)
            else:
                for part, store, retain in ((loss_s, self.acc.g_s, True), (loss_t, self.acc.g_t, False)):
                    part.backward(retain_graph=retain)
                    self._accumulate_delta_grads(store)
                    self.adapter.zero_grad()
        else:
            loss = L.normalise_loss(Lp, mask, **norm)
            loss.backward()
            if not self.is_route2:
                self._accumulate_delta_grads(self.acc.g_s)
        if self.is_route2:  # the gate reads the summed grads, whichever backward left them
            info.update(self._route2_group(group))
        self.adapter.zero_grad()
        self.adapter.clear_gates()
        info["loss"] = float(loss.item())
        self.acc.gate_cos.extend(info["gate_cos"])
        self.acc.loss += info["loss"]
        self.acc.fb_seconds += time.perf_counter() - t0
        return GroupResult(logps=mean_logp, adv=info["adv"], gate_cos=info["gate_cos"], n_students=group.n_students,
                           zerovar=False, loss=info["loss"], flagged=info["flagged"])

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
        self.acc.mismatch_kl_sum += mm["kl_sum"]
        self.acc.mismatch_max = max(self.acc.mismatch_max, mm["max_abs"])
        self.acc.mismatch_n += mm["n"]
        if self.cfg.tis_cap is None:
            return None
        w = L.tis_weights(logp_old.float(), lp_s, has, self.cfg.tis_cap)
        mb = m.bool()
        self.acc.tis_sum += float(w[mb].sum())
        self.acc.tis_capped += int((w[mb] >= self.cfg.tis_cap).sum())
        self.acc.tis_n += int(mb.sum())
        return w.to(logp_old.dtype)

    @torch.no_grad()
    def _token_stats(self, logp, logp_old, logp_ref, A, mask) -> None:
        """PPO clip fractions and the K3 KL over this group's completion tokens (diagnostics only)."""
        low, high = L.ppo_clip_masks(logp, logp_old, A, self.cfg.clip)
        m = mask.bool()
        self.acc.tokens += float(m.sum())
        self.acc.clip_low += float((low & m).sum())
        self.acc.clip_high += float((high & m).sum())
        if logp_ref is not None:
            self.acc.kl_sum += float((L.k3_kl(logp, logp_ref) * mask).sum())

    def _accumulate_delta_grads(self, store: dict) -> None:
        """Add the δS grads the last backward left into ``store`` (per module)."""
        for name in self.adapter.names:
            gr = self.adapter.delta[name].grad
            if gr is not None:
                accumulate(store, name, gr)

    def _route2_split_backward(self, loss_s: torch.Tensor, loss_t: torch.Tensor) -> None:
        """Back up the student loss, note the δS grads, then the teacher loss on top: the grads
        (and the gate's) end as the sum, as one combined backward leaves them, and the student /
        teacher parts go to the measurement accumulators for cos_pre_s/_t."""
        loss_s.backward(retain_graph=True)
        g_s = {n: self.adapter.delta[n].grad.clone() for n in self.adapter.names
               if self.adapter.delta[n].grad is not None}
        loss_t.backward()
        for name in self.adapter.names:
            total = self.adapter.delta[name].grad
            if total is None:
                continue
            gs = g_s.get(name)
            accumulate(self.acc.m_s, name, gs if gs is not None else torch.zeros_like(total))
            accumulate(self.acc.m_t, name, total - gs if gs is not None else total)

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
            r = self.gate.filter(name, g, cgs[name], self.adapter.delta[name], self.direction.v_grad[name], ha, ca,
                                 route_anchors=self.cfg.gate_route_anchors)
            accumulate(self.acc.g_s, name, r.g_keep)
            accumulate(self.acc.g_hack, name, r.g_route)
            self.acc.tau.append(r.tau)
            self.acc.hkgap.append(r.hkgap)
            self.acc.resid.append(r.resid)
            self.acc.flagged.append(float(r.flagged.mean()))
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
            gs, gt = self.acc.g_s.get(name), self.acc.g_t.get(name)
            if gs is None and gt is None:
                continue
            ad.delta[name].grad = gt if gs is None else (gs if gt is None else gs + gt)
        for name, g in self.acc.g_hack.items():
            ad.hack[name].grad = g
        nan = math.nan
        diag = {"mean_cos_pre": nan, "mean_cos_post": nan, "frac_fired": nan, "cos_pre_s": nan, "cos_pre_t": nan}
        v_hack = self.direction.v_hack
        v_grad = self.direction.v_grad
        if self.is_route2 and self.split and v_grad is not None:  # route2's own direction, one-sided
            basis = {n: v.reshape(1, -1) for n, v in v_grad.items()}
            diag["cos_pre_s"] = cos_pre_from_grads(self.acc.m_s, basis)
            diag["cos_pre_t"] = cos_pre_from_grads(self.acc.m_t, basis)
        if v_hack is not None:
            if self.split:
                diag["cos_pre_s"] = cos_pre_from_grads(self.acc.g_s, v_hack)
                diag["cos_pre_t"] = cos_pre_from_grads(self.acc.g_t, v_hack)
            grads = {n: ad.delta[n].grad for n in ad.names if ad.delta[n].grad is not None}
            if cfg.intervention == "none":  # vanilla measures only: the gradient is left as it is
                diag["mean_cos_pre"] = cos_pre_from_grads(grads, v_hack)
            else:
                route = cfg.intervention == "route"
                new, hack, d = project_grads(grads, v_hack, preserve_magnitude=cfg.preserve_magnitude, route=route,
                                             gate_mode=cfg.gate_mode, overshoot=cfg.project_overshoot)
                diag.update(d)
                for n, g in new.items():
                    ad.delta[n].grad = g
                for n, g in hack.items():
                    ad.hack[n].grad = g
                if route and not self.direction.span_checked and d["frac_fired"] > 0:
                    self.direction.check_routed_span()
        gn_keep = _grad_l2(ad.delta_params())
        gn_quar = _grad_l2(ad.hack_params())
        q_egy = gn_quar / (gn_keep + gn_quar) if (gn_keep + gn_quar) > 0 else 0.0
        gn = float(torch.nn.utils.clip_grad_norm_(ad.delta_params() + ad.hack_params(), cfg.grad_clip))
        self.opt.step()
        self.sched.step()
        self.version += 1
        t_r = time.perf_counter()
        refr, overlap = self.direction.maybe_refresh(self.step, self.opt)
        t_refresh = time.perf_counter() - t_r
        return LearnerStepStats(
            gn=gn, q_egy=q_egy, lr=self.sched.get_last_lr()[0],
            cos_pre=diag["mean_cos_pre"], cos_pre_s=diag["cos_pre_s"], cos_pre_t=diag["cos_pre_t"],
            cos_post=diag["mean_cos_post"], fired=diag["frac_fired"], refr=refr, t_refresh=t_refresh,
            overlap=overlap, stale=self.direction.steps_since_refresh if self.direction.present else nan,
            dsh_norm=self.delta_hack_norm(), version=self.version, **self.acc.stats_fields(cfg.beta),
        )

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
            "route2": self.gate.state_dict(), **self.direction.state_dict(_cpu_copy),
        }

    def load_state_dict(self, state: dict) -> None:
        self.adapter.load_deltas(state["deltas"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.direction.load_state_dict(state)
        self.gate.load_state_dict(state["route2"])
        self.version = int(state["version"])
        self.step = int(state["step"])
