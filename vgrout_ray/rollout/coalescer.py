"""Concurrent callers' requests joined into one engine call.

An engine generates a batch far more cheaply than the same rows one call at a time; the driver
(and a sweep's runs) call per prompt. A ``Coalescer`` waits a short window, runs everyone's items
as one call, and hands each caller its own results; a batch that fails is run again caller by
caller, so only the caller whose items fail sees the error.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class Coalescer:
    """Joins calls made from several threads into one call of ``fn`` over all their items.

    Why: in a sweep each run's step sends its own generation calls; one ``generate`` over all of
    them is what lets rows of different runs share a forward pass. A caller whose items are not
    yet taken becomes the leader when no batch is running: it waits ``window_s`` for others to
    join, runs ``fn`` on every queued item, hands each caller its slice and wakes them; the
    next waiting caller leads the next batch.

    One caller's bad items must not fail the others: in a sweep, a run that has failed drops its
    δS while a request it sent earlier is still queued, and that request may share a batch with
    healthy runs. So when ``fn`` raises on a batch of several callers, each caller's items are
    run again alone, and only the callers whose own items fail see an exception."""

    def __init__(self, fn: Callable[[list], list], window_s: float = 0.002):
        self.fn, self.window_s = fn, window_s
        self._cond = threading.Condition()
        self._queue: list[dict] = []
        self._busy = False
        self.batches: list[int] = []  # items per batch run so far (for tests and benchmarks)
        self.isolated = 0  # batches that failed and were run again caller by caller

    def __call__(self, items: list) -> list:
        slot = {"items": list(items), "done": False, "out": None, "err": None}
        with self._cond:
            self._queue.append(slot)
            while not slot["done"] and self._busy:
                self._cond.wait()
            if slot["done"]:
                return self._result(slot)
            self._busy = True
        batch: list[dict] = []
        try:
            if self.window_s > 0:
                time.sleep(self.window_s)
            with self._cond:
                batch, self._queue = self._queue, []
            try:
                self._run(batch)
            except Exception:
                self.isolated += 1
                for s in batch:  # alone: the failure stays with the caller(s) that caused it
                    self._run([s])
            self.batches.append(sum(len(s["items"]) for s in batch))
        finally:
            with self._cond:
                for s in batch:
                    s["done"] = True
                self._busy = False
                self._cond.notify_all()
        return self._result(slot)

    def _run(self, batch: list[dict]) -> None:
        """``fn`` over the batch's items; each slot gets its slice. Raises (slots left unset) when
        the batch has several callers, so that they can be run alone; a lone caller gets the error."""
        flat = [it for s in batch for it in s["items"]]
        try:
            out = self.fn(flat)
            if len(out) != len(flat):
                raise RuntimeError(f"coalesced call returned {len(out)} results for {len(flat)} items")
        except Exception as e:
            if len(batch) > 1:
                raise
            batch[0]["err"] = e
            return
        at = 0
        for s in batch:
            s["out"] = out[at:at + len(s["items"])]
            at += len(s["items"])

    @staticmethod
    def _result(slot: dict) -> list:
        if slot["err"] is not None:
            raise slot["err"]
        return slot["out"]
