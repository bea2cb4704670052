"""Small helpers every part of the package shares (one copy each).

- ``atomic_path`` / ``atomic_write``: readers never see a half-written file (tmp next to the
  target, then ``os.replace``; optionally fsynced, for files a killed run must find whole).
- ``warn_once``: a fallback or weakness said once per process, not once per call.
- ``ema_update`` / ``ema``: one exponential moving average (the route2 gate's per-step
  update and the plots' causal smoother are the same recurrence).
- ``load_tokenizer``: a model's tokenizer with a pad token (EOS when it has none), as the
  learner, both rollout engines and the driver need it.
"""
from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from loguru import logger

# Matplotlib's text layout (mathtext's cached pyparsing parser) is not thread-safe: figures drawn
# on several threads of one process at once (the evidence writers of a sweep's runs, the sweep
# report) fail with parse errors. Every such drawing holds this lock.
MPL_LOCK = threading.RLock()

# ── files ────────────────────────────────────────────────────────────────────


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path | str, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the block. On a clean exit it
    replaces ``path`` in one rename (fsynced first when ``fsync``); on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path | str, data: bytes | str, *, fsync: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


# ── logging ──────────────────────────────────────────────────────────────────

_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message)


# ── smoothing ────────────────────────────────────────────────────────────────


def ema_update(prev: float | None, x: float, beta: float) -> float:
    """One EMA step: ``beta·prev + (1-beta)·x``; the first value (``prev`` None or NaN) starts it."""
    if prev is None or (isinstance(prev, float) and math.isnan(prev)):
        return x
    return beta * prev + (1 - beta) * x


def ema(ys: Sequence, span: int = 5):
    """Causal EMA of a series with smoothing 2/(span+1); a NaN/None keeps the last smoothed value
    (a gap is not a zero). Returns a float numpy array of the same length."""
    import numpy as np

    beta = 1.0 - 2.0 / (span + 1)
    out = np.empty(len(ys))
    prev = math.nan
    for i, v in enumerate(ys):
        try:
            v = float(v) if v is not None else math.nan
        except (TypeError, ValueError):
            v = math.nan
        if not math.isnan(v):
            prev = ema_update(prev, v, beta)
        out[i] = prev
    return out


# ── models ───────────────────────────────────────────────────────────────────


def load_tokenizer(model_path):
    """``AutoTokenizer`` of ``model_path`` with a pad token (its EOS when it defines none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
