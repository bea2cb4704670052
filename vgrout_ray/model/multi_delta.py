"""Multi-tenant δS: K runs' knobs on one adapter, each batch row using its own run's δS.

Why: the adapter's extra term U·((Vh·x) ⊙ s) is per row — the base weights, U and Vh are
shared, only the r-vector s differs between runs. So the rows of K runs of a sweep can share
one forward pass (one model in memory, one batched matmul) if s is gathered per row: a
[B, 1, r] tensor instead of the single run's [r], broadcast over each row's tokens exactly as
the single-run [r] is broadcast over all rows.

``DeltaBank`` holds every run's δS and δS_hack as [K, r] tensors per module;
``DeltaBank.rows(adapter, runs, ablate)`` swaps the adapter's knob dicts for the gathered
per-row tensors inside a block. The adapter's own hook does the arithmetic (nothing is
re-implemented), so a row of run k computes what an adapter holding run k's knobs computes.
Per-row deploy view: a row with ``ablate`` gets δS_hack = 0 (the quarantine deleted), the
others δS + δS_hack (the training view); both kinds can share a batch.

Learner side: with ``trainable=True`` the bank's tensors are leaf Parameters, so one backward
over a batch mixing runs leaves run k's gradient in row k (the gather routes each row's
gradient to its own run). Per-run optimisers must still be kept apart where they mix
elements (a global grad-norm clip, for one); AdamW's elementwise update does not.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Hashable, Iterator, Sequence

import torch
from torch import nn

from vgrout_ray.model.adapter import SVDAdapter


class DeltaBank:
    """Per-run δS / δS_hack for every module of an adapter, stacked as [K, r] per module."""

    def __init__(self, adapter: SVDAdapter, trainable: bool = False):
        self.adapter = adapter
        self.trainable = trainable
        self.runs: list[Hashable] = []
        self.versions: dict[Hashable, int] = {}
        self.delta: dict[str, torch.Tensor] = {}
        self.hack: dict[str, torch.Tensor] = {}
        for n in adapter.names:
            p = adapter.delta[n]
            self.delta[n] = self._leaf(torch.zeros(0, p.shape[0], device=p.device, dtype=p.dtype))
            self.hack[n] = self._leaf(torch.zeros(0, p.shape[0], device=p.device, dtype=p.dtype))

    def _leaf(self, t: torch.Tensor) -> torch.Tensor:
        return nn.Parameter(t) if self.trainable else t

    def index(self, run: Hashable) -> int:
        if run not in self.versions:
            raise KeyError(f"run {run!r} is not in the bank (runs: {self.runs})")
        return self.runs.index(run)

    @torch.no_grad()
    def load(self, run: Hashable, deltas: dict[str, torch.Tensor], version: int = 0) -> None:
        """Set one run's knobs from a ``SVDAdapter.deltas_state`` dict (adding the run if new)."""
        names = self.adapter.names
        want = {f"{n}.{k}" for n in names for k in ("delta_S", "delta_S_hack")}
        if set(deltas) != want:
            raise KeyError(f"run {run!r}: deltas mismatch: missing {sorted(want - set(deltas))[:3]}, "
                           f"unexpected {sorted(set(deltas) - want)[:3]}")
        for n in names:
            r = self.delta[n].shape[1]
            for k in ("delta_S", "delta_S_hack"):
                if tuple(deltas[f"{n}.{k}"].shape) != (r,):
                    raise ValueError(f"run {run!r}: {n}.{k} has shape {tuple(deltas[f'{n}.{k}'].shape)}, want ({r},)")
        if run not in self.versions:
            self.runs.append(run)
            for n in names:
                for store in (self.delta, self.hack):
                    old = store[n].detach()
                    store[n] = self._leaf(torch.cat([old, old.new_zeros(1, old.shape[1])]))
        i = self.runs.index(run)
        for n in names:
            self.delta[n][i].copy_(deltas[f"{n}.delta_S"].to(self.delta[n].device, self.delta[n].dtype))
            self.hack[n][i].copy_(deltas[f"{n}.delta_S_hack"].to(self.hack[n].device, self.hack[n].dtype))
        self.versions[run] = version

    def drop(self, run: Hashable) -> None:
        """Remove a finished run's knobs (the others keep their values and order)."""
        i = self.index(run)
        keep = [j for j in range(len(self.runs)) if j != i]
        for store in (self.delta, self.hack):
            for n in self.adapter.names:
                store[n] = self._leaf(store[n].detach()[keep].clone())
        self.runs.pop(i)
        del self.versions[run]

    def state(self, run: Hashable) -> dict[str, torch.Tensor]:
        """One run's knobs in ``deltas_state`` form (CPU float32 copies)."""
        i = self.index(run)
        out = {}
        for n in self.adapter.names:
            out[f"{n}.delta_S"] = self.delta[n][i].detach().to("cpu", torch.float32).clone()
            out[f"{n}.delta_S_hack"] = self.hack[n][i].detach().to("cpu", torch.float32).clone()
        return out

    def params(self) -> list[torch.Tensor]:
        """The [K, r] leaves (δS then δS_hack per module) for an optimiser (``trainable`` banks).
        ``load`` of a new run and ``drop`` replace these tensors: build the optimiser after them."""
        if not self.trainable:
            raise RuntimeError("DeltaBank(trainable=False) has no parameters")
        return [self.delta[n] for n in self.adapter.names] + [self.hack[n] for n in self.adapter.names]

    def grads(self, run: Hashable) -> dict[str, torch.Tensor | None]:
        """``{name}.delta_S`` / ``{name}.delta_S_hack`` -> run's gradient row (None where none flowed)."""
        i = self.index(run)
        out = {}
        for n in self.adapter.names:
            for k, store in (("delta_S", self.delta), ("delta_S_hack", self.hack)):
                g = store[n].grad
                out[f"{n}.{k}"] = None if g is None else g[i].clone()
        return out

    def row_index(self, runs: Sequence[Hashable]) -> torch.Tensor:
        """Bank index of each row's run, as a LongTensor on the adapter's device."""
        dev = next(iter(self.delta.values())).device if self.delta else torch.device("cpu")
        return torch.tensor([self.index(r) for r in runs], dtype=torch.long, device=dev)

    @contextmanager
    def rows(self, runs: Sequence[Hashable], ablate: Sequence[bool] | bool = False) -> Iterator[None]:
        """Inside the block row b of any forward through the adapter uses run ``runs[b]``'s knobs
        (deploy view where ``ablate[b]``). Every forward must have len(runs) rows."""
        ad = self.adapter
        if not runs:
            raise ValueError("rows() needs at least one row")
        ab = [bool(ablate)] * len(runs) if isinstance(ablate, bool) else [bool(a) for a in ablate]
        if len(ab) != len(runs):
            raise ValueError(f"ablate has {len(ab)} entries for {len(runs)} rows")
        idx = self.row_index(runs)
        keep_hack = torch.tensor([not a for a in ab], device=idx.device)
        delta, hack = {}, {}
        for n in ad.names:
            delta[n] = self.delta[n].index_select(0, idx).unsqueeze(1)  # [B, 1, r]
            h = self.hack[n].index_select(0, idx).unsqueeze(1)
            hack[n] = h * keep_hack.view(-1, 1, 1).to(h.dtype)
        prev = (ad.delta, ad.hack, ad._hack_on, ad._off)
        # the adapter hook reads self.delta[name] / self.hack[name] at every call: per-row tensors
        # in, its own arithmetic broadcasts them over each row's tokens
        ad.delta, ad.hack, ad._hack_on, ad._off = delta, hack, True, False
        try:
            yield
        finally:
            ad.delta, ad.hack, ad._hack_on, ad._off = prev
