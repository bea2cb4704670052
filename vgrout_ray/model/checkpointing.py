"""Gradient checkpointing for the learner that keeps the δS adapter's gradients exact.

Checkpointing re-runs each decoder layer's forward during backward. The adapter's hooks read
mode flags (zero_delta, ablate_quarantine, live, route2's gate probe) that may have changed by
then: route2's probe context has already exited when backward runs, so a plain recompute
would rebuild the layer without the per-rollout gates and leave their grads empty. The
``context_fn`` below (non-reentrant checkpoint only) snapshots every adapter's flags at the
forward and restores them for the recompute, where the probe reuses the gate tensors it made
at the forward, so gate grads, δS grads and the update match the un-checkpointed backward.
"""
from __future__ import annotations

from functools import partial

from torch import nn

_FLAGS = ("_off", "live", "_hack_on", "_probe")


def _adapters(model: nn.Module) -> list:
    return model.__dict__.setdefault("_vgrout_adapters", [])


class _Forward:
    """Entered once per checkpointed call's forward: snapshot every adapter's mode flags."""

    def __init__(self, model: nn.Module, snap: list):
        self.model, self.snap = model, snap

    def __enter__(self):
        self.snap[:] = [(a, {f: getattr(a, f) for f in _FLAGS}) for a in _adapters(self.model)]

    def __exit__(self, *exc):
        return False


class _Recompute:
    """Entered at each recompute (once per backward that reaches the layer; a retained graph
    recomputes again): the forward's flags in, the current ones back after."""

    def __init__(self, snap: list):
        self.snap = snap
        self.prev: list = []

    def __enter__(self):
        self.prev.append([(a, {f: getattr(a, f) for f in (*_FLAGS, "_recompute")}) for a, _ in self.snap])
        for a, flags in self.snap:
            for f, v in flags.items():
                setattr(a, f, v)
            a._recompute = True

    def __exit__(self, *exc):
        for a, flags in self.prev.pop():
            for f, v in flags.items():
                setattr(a, f, v)
        return False


def _context_fn(model: nn.Module):
    """(forward context, recompute context) for one checkpointed call."""
    snap: list = []
    return _Forward(model, snap), _Recompute(snap)


def enable_grad_checkpointing(model: nn.Module, adapter) -> None:
    """Checkpoint every decoder layer of ``model`` (non-reentrant) with ``adapter``'s modes carried
    into the recompute. Several adapters on one shared model: call once per adapter."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
    if adapter not in _adapters(model):
        _adapters(model).append(adapter)
    model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False, "context_fn": partial(_context_fn, model)})
    if not model.is_gradient_checkpointing:
        raise RuntimeError("gradient checkpointing did not turn on")
