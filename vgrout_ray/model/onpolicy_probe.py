"""On-policy probe: proof that a rollout engine samples from the δS the learner trains.

A rollout engine applies δS through hooks (hf: the learner's adapter; vllm: hooks on the fused
Linears). Anything that skips them (CUDA graphs captured without the hooks, a future engine
flag, a stale prefix cache) leaves the engine sampling from the base model while every row
still carries the new version, and nothing downstream would notice. So the learner ships, with
each weight-sync payload, the log-probs of a fixed probe sequence under the synced δS (and
under δS = 0), and the rollout actor compares its engine's log-probs of the same sequence after
loading the payload. On the first sync the learner also ships a probe δS chosen to move the
log-probs a lot, and the engine must follow it: δS = 0 at start-up would prove nothing.

The probe rides in the payload under reserved keys (``PROBE_PREFIX``), so the pool, the object
store and replacement actors need no new plumbing; ``split_probe`` strips them before δS loads.
"""
from __future__ import annotations

import torch

PROBE_PREFIX = "__probe__."
# mean |log p| error allowed between engine and learner on the probe tokens; bf16 engines on a
# 4B model stay well below it, a bypassed hook on the start-up probe δS is far above it
DEFAULT_TOL = 0.1
# the start-up probe δS must move the learner's own log-probs by at least this (mean |Δ log p|)
MIN_MOVE = 0.1


class OnPolicyError(RuntimeError):
    """The rollout engine's log-probs do not follow the learner's δS."""


# natural code keeps the probe tokens' probabilities away from the tail, where bf16 error is largest
PROBE_TEXT = ("class Solution:\n    def twoSum(self, nums: list[int], target: int) -> list[int]:\n"
              "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
              "                return [seen[target - x], i]\n            seen[x] = i\n")


def text_probe_ids(tok, vocab_size: int, min_len: int = 16) -> list[int]:
    """PROBE_TEXT in the model's tokenizer (random ids when it tokenizes too short)."""
    ids = tok(PROBE_TEXT, add_special_tokens=False).input_ids[:64]
    return ids if len(ids) >= min_len and max(ids) < vocab_size else probe_ids(vocab_size)


def probe_ids(vocab_size: int, n: int = 32, seed: int = 1234) -> list[int]:
    """A fixed pseudo-random token sequence (any tokenizer: ids below the embedding size)."""
    g = torch.Generator().manual_seed(seed)
    hi = max(2, min(vocab_size, 32000))
    return torch.randint(1, hi, (n,), generator=g).tolist()


def probe_delta(adapter, scale: float = 0.5, seed: int = 4321) -> dict[str, torch.Tensor]:
    """A δS (δS_hack = 0) whose axes move by ``scale``·S·N(0,1): large enough that hooks that do
    not run are obvious. Reads S back from U, Vh and the base weight (S = diag(Uᵀ W Vhᵀ))."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in adapter.names:
        w = adapter.layers[n].weight.detach().float()
        U, Vh = adapter.U[n].float(), adapter.Vh[n].float()
        S = ((U.T @ w) * Vh).sum(1).abs().cpu()  # diag(Uᵀ W Vhᵀ) without the r×r product
        out[f"{n}.delta_S"] = (scale * S * torch.randn(S.shape, generator=g)).float()
        out[f"{n}.delta_S_hack"] = torch.zeros_like(S, dtype=torch.float32)
    return out


@torch.no_grad()
def adapter_logprobs(adapter, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]), t >= 1, of the adapter's model in the training view (δS + δS_hack)."""
    model = adapter.model
    dev = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    logits = model(x, use_cache=False).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, x[0, 1:].unsqueeze(1)).squeeze(1).cpu()


@torch.no_grad()
def learner_probe(adapter, ids: list[int], startup: bool, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """The probe part of a sync payload, computed by the learner's adapter at its current δS."""
    out = {f"{PROBE_PREFIX}ids": torch.tensor(ids, dtype=torch.long),
           f"{PROBE_PREFIX}logp": adapter_logprobs(adapter, ids)}
    with adapter.zero_delta():
        out[f"{PROBE_PREFIX}base_logp"] = adapter_logprobs(adapter, ids)
    if startup:
        current = adapter.deltas_state()
        base = out[f"{PROBE_PREFIX}base_logp"]
        try:  # the smallest of a few scales that moves the log-probs clearly (models differ a lot)
            for s in (scale, 2 * scale, 4 * scale, 8 * scale):
                moved = probe_delta(adapter, s)
                adapter.load_deltas(moved)
                lp = adapter_logprobs(adapter, ids)
                move = float((lp - base).abs().mean())
                if move >= MIN_MOVE:
                    break
        finally:
            adapter.load_deltas(current)
        if move < MIN_MOVE:
            raise OnPolicyError(f"start-up probe δS (scale {s}) moves the learner's own log-probs by only "
                                f"{move:.3g} (< {MIN_MOVE})")
        out[f"{PROBE_PREFIX}move_logp"] = lp
        for k, v in moved.items():
            out[f"{PROBE_PREFIX}dS.{k}"] = v
    return out


def split_probe(payload: dict) -> tuple[dict, dict | None]:
    """(δS payload without probe keys, probe dict with the prefix stripped, or None)."""
    deltas = {k: v for k, v in payload.items() if not k.startswith(PROBE_PREFIX)}
    probe = {k[len(PROBE_PREFIX):]: v for k, v in payload.items() if k.startswith(PROBE_PREFIX)}
    return deltas, (probe or None)


def compare(got, want, base, tol: float, what: str) -> dict:
    """Fail loud unless the engine's log-probs ``got`` match the learner's ``want`` within ``tol``
    (mean |Δ|) and sit closer to ``want`` than to the δS = 0 log-probs ``base`` whenever the two differ."""
    got = torch.as_tensor(got, dtype=torch.float32)
    want = torch.as_tensor(want, dtype=torch.float32)
    base = torch.as_tensor(base, dtype=torch.float32)
    if got.shape != want.shape:
        raise OnPolicyError(f"{what}: engine returned {tuple(got.shape)} log-probs, learner {tuple(want.shape)}")
    d_pred = float((got - want).abs().mean())
    d_base = float((got - base).abs().mean())
    move = float((want - base).abs().mean())
    rec = {"d_pred": d_pred, "d_base": d_base, "move": move}
    if not torch.isfinite(got).all():
        raise OnPolicyError(f"{what}: engine log-probs are not finite")
    if d_pred > tol:
        raise OnPolicyError(f"{what}: engine log-probs differ from the learner's by {d_pred:.4g} mean |Δ| "
                            f"(tol {tol}); distance to the δS = 0 model {d_base:.4g}, learner move {move:.4g}. "
                            "δS is not applied as the learner applies it (hooks bypassed, CUDA graphs, stale KV?)")
    if move > tol and d_base <= d_pred:
        raise OnPolicyError(f"{what}: engine log-probs are closer to the δS = 0 model ({d_base:.4g}) than to "
                            f"the learner's ({d_pred:.4g}): δS is not reaching the engine")
    return rec


def check_engine(engine, version: int, deltas: dict, probe: dict, tol: float = DEFAULT_TOL) -> dict:
    """Run the probe on an engine that has just loaded ``deltas`` at ``version``; raise OnPolicyError
    on a mismatch. With a start-up probe δS in ``probe`` the engine loads it, is checked, and is
    left holding ``deltas`` again."""
    ids = [int(t) for t in probe["ids"].tolist()]
    rec = {"version": version}
    moved = {k[3:]: v for k, v in probe.items() if k.startswith("dS.")}
    if moved:
        engine.load_deltas(version, moved)
        try:
            # a large δS amplifies low-precision error: allow a quarter of the move it causes
            move = float((probe["move_logp"] - probe["base_logp"]).abs().mean())
            rec["startup"] = compare(engine.prompt_logprobs(ids), probe["move_logp"], probe["base_logp"],
                                     max(tol, 0.25 * move), f"start-up probe (v{version}, nonzero δS)")
        finally:
            engine.load_deltas(version, deltas)
        if rec["startup"]["d_base"] < MIN_MOVE / 2:
            raise OnPolicyError(f"start-up probe: a nonzero δS moved the engine's log-probs by only "
                                f"{rec['startup']['d_base']:.4g}: δS hooks are not running")
    rec["sync"] = compare(engine.prompt_logprobs(ids), probe["logp"], probe["base_logp"], tol,
                          f"sync probe (v{version})")
    return rec
