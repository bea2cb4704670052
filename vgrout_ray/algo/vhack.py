"""v_hack (erase/route) and v_grad (route2): the hack direction in δS-gradient space.

For each contrastive pair and side, the teacher-forced mean completion NLL is backpropagated
to δS; per module the hack-minus-clean gradient differences D [n_pairs, r] are decomposed by
SVD. V = top-k right singular vectors, each oriented hack-ward by a per-pair majority vote,
with their singular values kept so a global noise floor can drop weak axes at load time.
v_grad is the unit mean difference. The last ``n_heldout`` pairs never enter the SVD and
report how well V generalises.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from loguru import logger
from safetensors import safe_open
from safetensors.torch import save_file

from vgrout_ray.algo.loss import completion_logps
from vgrout_ray.algo.pairs import Pair

SCHEMA = "v2_with_sv"
SV_PREFIX = "_sv/"


def _tokenize_pair_side(tok, prompt: str, completion: str) -> tuple[list[int], int]:
    p = tok(prompt, add_special_tokens=False).input_ids
    c = tok(completion, add_special_tokens=False).input_ids
    if not c:
        raise ValueError("a pair completion tokenizes to nothing")
    return p + c, len(c)


def pair_nll_grads(model, adapter, tok, pairs: list[Pair], device) -> dict[str, torch.Tensor]:
    """``hack/<name>`` and ``clean/<name>`` -> [n_pairs, r] δS grads of each side's mean NLL.

    One forward/backward per (pair, side); grads are zeroed before each and after the last.
    Runs in eval mode (restored after).
    """
    was_training = model.training
    model.eval()
    per: dict[str, list[torch.Tensor]] = {}
    try:
        for pair in pairs:
            for side, comp in (("hack", pair.hack), ("clean", pair.clean)):
                adapter.zero_grad()
                ids, n_c = _tokenize_pair_side(tok, pair.prompt, comp)
                x = torch.tensor([ids], dtype=torch.long, device=device)
                with torch.enable_grad():
                    nll = -completion_logps(model, x, n_c).mean()
                    nll.backward()
                for n in adapter.names:
                    g = adapter.delta[n].grad
                    per.setdefault(f"{side}/{n}", []).append(
                        g.detach().float().clone() if g is not None else torch.zeros_like(adapter.delta[n], dtype=torch.float32))
    finally:
        adapter.zero_grad()
        if was_training:
            model.train()
    return {k: torch.stack(v) for k, v in per.items()}


def svd_directions(D: torch.Tensor, top_k: int, tau_axis: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(V [k, r], S [k]) from differences D [n, r]: top-k right singular vectors, hack-ward.

    Row i's sign is a per-pair majority vote sign(#(D·vᵢ > 0) − n/2) (ties -> +1). With
    ``tau_axis`` > 0, rows with Sᵢ/S₀ < tau_axis are zeroed (S kept).
    """
    D = D.float()
    n = D.shape[0]
    _, S, Vh = torch.linalg.svd(D, full_matrices=False)
    k = min(top_k, Vh.shape[0])
    V, S = Vh[:k].clone(), S[:k].clone()
    votes = (D @ V.T > 0).sum(0).float() - n / 2
    V = V * torch.where(votes >= 0, 1.0, -1.0).unsqueeze(1)
    if tau_axis > 0:
        ratio = S / S[0] if S[0] > 0 else torch.zeros_like(S)
        V[ratio < tau_axis] = 0.0
    return V.contiguous(), S.contiguous()


def _heldout_diag(V: dict[str, torch.Tensor], raw: dict[str, torch.Tensor], names, sl: slice) -> dict:
    """Mean over modules and pairs of ‖V·d‖/‖d‖ and cos(d, v₀) for pair differences d in ``sl``."""
    span, top = [], []
    for n in names:
        d = (raw[f"hack/{n}"] - raw[f"clean/{n}"])[sl]
        if d.numel() == 0:
            continue
        dn = d.norm(dim=1).clamp_min(1e-12)
        span.extend(((d @ V[n].T).norm(dim=1) / dn).tolist())
        top.extend(((d @ V[n][0]) / dn).tolist())
    mean = (lambda xs: sum(xs) / len(xs) if xs else math.nan)
    return {"span_cos": mean(span), "top_cos": mean(top)}


def extract_v_hack(model, adapter, tok, pairs: list[Pair], *, top_k: int, tau_axis: float = 0.0,
                   n_heldout: int = 2, device=None):
    """(V, S, raw_grads, diag) per module from ``pairs`` against the model as it is now.

    raw_grads holds all pairs' per-side grads (``hack/<name>``, ``clean/<name>`` [n, r]); the SVD
    uses the first n − n_heldout. diag reports in-sample and held-out direction agreement.
    """
    n_train = len(pairs) - n_heldout
    if n_train < 1:
        raise ValueError(f"need more than n_heldout={n_heldout} pairs, got {len(pairs)}")
    device = device if device is not None else next(iter(adapter.delta.values())).device
    raw = pair_nll_grads(model, adapter, tok, pairs, device)
    V, S = {}, {}
    for n in adapter.names:
        D = (raw[f"hack/{n}"] - raw[f"clean/{n}"])[:n_train]
        V[n], S[n] = svd_directions(D, top_k, tau_axis)
    diag = {"n_train": n_train, "n_heldout": n_heldout,
            "train": _heldout_diag(V, raw, adapter.names, slice(0, n_train)),
            "heldout": _heldout_diag(V, raw, adapter.names, slice(n_train, None))}
    logger.debug(f"v_hack extract: {len(V)} modules, k={min(top_k, n_train)}, train {diag['train']}, "
                 f"held-out {diag['heldout']}")
    return V, S, raw, diag


def v_grad_from_raw(raw: dict[str, torch.Tensor], names, n_use: int | None = None) -> dict[str, torch.Tensor]:
    """route2 direction per module: unit(mean over the first ``n_use`` pairs of g_hack − g_clean)."""
    out = {}
    for n in names:
        d = (raw[f"hack/{n}"] - raw[f"clean/{n}"])[:n_use].mean(0)
        out[n] = d / d.norm().clamp_min(1e-12)
    return out


def postprocess_v_hack(V: dict[str, torch.Tensor], S: dict[str, torch.Tensor], *, k_use: int,
                       drop_bottom_frac: float, source: str = "") -> dict[str, torch.Tensor]:
    """Slice each module to its top ``k_use`` rows, then drop rows whose Sᵢ is below the global
    ``drop_bottom_frac`` quantile of all kept Sᵢ; modules left with no row are dropped."""
    sliced = {n: (V[n][:k_use], S[n][:k_use]) for n in V}
    if drop_bottom_frac > 0 and sliced:
        all_s = torch.cat([s.float() for _, s in sliced.values()])
        thr = torch.quantile(all_s, drop_bottom_frac).item()
    else:
        thr = -math.inf
    out = {}
    for n, (v, s) in sliced.items():
        keep = s.float() >= thr
        if bool(keep.any()):
            out[n] = v[keep].contiguous()
    n_ax = sum(v.shape[0] for v in out.values())
    logger.debug(f"v_hack postprocess{f' [{source}]' if source else ''}: k_use={k_use} "
                 f"drop_bottom_frac={drop_bottom_frac} thr={thr:.3g} -> {len(out)}/{len(V)} modules, {n_ax} axes")
    return out


def save_v_hack(path: str | Path, V: dict[str, torch.Tensor], S: dict[str, torch.Tensor], *, model: str,
                dtype: str, top_k: int, tau_axis: float) -> None:
    """V per module plus ``_sv/<module>`` singular values in one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {n: v.detach().float().cpu().contiguous() for n, v in V.items()}
    payload.update({f"{SV_PREFIX}{n}": s.detach().float().cpu().contiguous() for n, s in S.items()})
    save_file(payload, str(path), metadata={"model": str(model), "dtype": dtype, "top_k": str(top_k),
                                            "tau_axis": str(tau_axis), "schema": SCHEMA})


def read_v_hack(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    """(V, S, metadata) as saved; files without ``_sv/`` keys get S = ones (no noise floor)."""
    V, S = {}, {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            (S if k.startswith(SV_PREFIX) else V)[k.removeprefix(SV_PREFIX)] = f.get_tensor(k)
    for n, v in V.items():
        S.setdefault(n, torch.ones(v.shape[0]))
    return V, S, meta


def load_v_hack(path: str | Path, ranks: dict[str, int], *, k_use: int, drop_bottom_frac: float,
                model: str | None = None) -> dict[str, torch.Tensor]:
    """Read, check against the adapter's module ranks, and postprocess a saved v_hack."""
    V, S, meta = read_v_hack(path)
    if model is not None and meta.get("model") not in (None, str(model)):
        logger.warning(f"v_hack {path} was extracted for model {meta.get('model')!r}, loading into {model!r}")
    unknown = sorted(set(V) - set(ranks))
    if unknown:
        raise KeyError(f"v_hack {path} names modules the adapter lacks: {unknown[:3]}")
    for n, v in V.items():
        if v.dim() != 2 or v.shape[1] != ranks[n]:
            raise ValueError(f"v_hack {path}: {n} has shape {tuple(v.shape)}, adapter rank is {ranks[n]}")
    out = postprocess_v_hack(V, S, k_use=k_use, drop_bottom_frac=drop_bottom_frac, source=str(path))
    logger.info(f"v_hack loaded from {path}: {len(out)} modules, {sum(v.shape[0] for v in out.values())} axes "
                f"(k_use={k_use}, drop_bottom_frac={drop_bottom_frac})")
    return out


def basis_overlap(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> float:
    """Mean over shared modules of ‖V_new·V_oldᵀ‖_F² / k_old: the share of the old subspace the new
    basis still spans (1 = same subspace, 0 = orthogonal). NaN when no module is shared."""
    shared = sorted(set(new) & set(old))
    vals = [float((new[n].float() @ old[n].float().to(new[n].device).T).pow(2).sum() / old[n].shape[0])
            for n in shared]
    return sum(vals) / len(vals) if vals else math.nan
