"""Optional metric sinks (W&B, TensorBoard), off by default.

The run's own record is rows.parquet; these only mirror scalars for people who
watch dashboards. Neither is a hard dependency: a missing package costs one log
line and the run goes on. W&B defaults to offline mode with its files under the
run dir, so it works with no network (``wandb sync`` uploads later).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from loguru import logger


def scalars_of(row: Mapping[str, Any]) -> dict[str, float]:
    """Loggable scalars of a row: finite numbers and bools; (n, d) fractions as the rate n/d."""
    out: dict[str, float] = {}
    for k, v in row.items():
        item = getattr(v, "item", None)
        if callable(item) and not isinstance(v, (list, tuple, str)):
            try:
                v = item()
            except (TypeError, ValueError):
                continue
        if isinstance(v, (tuple, list)) and len(v) == 2:
            n, d = v
            if isinstance(n, (int, float)) and isinstance(d, (int, float)) and d:
                out[k] = n / d
            continue
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


def _import_wandb():
    import wandb  # noqa: PLC0415 - optional

    return wandb


def _import_summary_writer():
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - needs the tensorboard package

    return SummaryWriter


class WandbSink:
    def __init__(self, cfg: Mapping[str, Any], run_dir: Path, mode: str = "offline") -> None:
        wandb = _import_wandb()
        d = run_dir / "wandb"
        d.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project="vgrout-ray", name=run_dir.name, dir=str(d), mode=mode,
                               config=dict(cfg))
        logger.info(f"W&B sink on ({mode}), files under {d}")

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._run.log(scalars_of(scalars), step=int(step))

    def close(self) -> None:
        self._run.finish()


class TensorBoardSink:
    def __init__(self, run_dir: Path) -> None:
        SummaryWriter = _import_summary_writer()
        d = run_dir / "tensorboard"
        self._w = SummaryWriter(log_dir=str(d))
        logger.info(f"TensorBoard sink on: tensorboard --logdir {d}")

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        for k, v in scalars_of(scalars).items():
            self._w.add_scalar(k, v, int(step))
        self._w.flush()

    def close(self) -> None:
        self._w.close()


class Sinks:
    """Fan-out to the sinks that started; a sink that fails while logging is dropped, not fatal."""

    def __init__(self, sinks: list[Any] | None = None) -> None:
        self.sinks = list(sinks or [])

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        for s in list(self.sinks):
            try:
                s.log(step, scalars)
            except Exception as e:  # a dashboard must never stop training
                logger.warning(f"{type(s).__name__} failed ({type(e).__name__}: {e}); sink dropped")
                self.sinks.remove(s)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:
                logger.warning(f"{type(s).__name__} close failed: {e}")
        self.sinks = []


def make_sinks(cfg_dict: Mapping[str, Any], run_dir: str | Path, wandb: bool = False,
               wandb_mode: str = "offline", tensorboard: bool = False) -> Sinks:
    """Start the requested sinks; each one missing its package is skipped with one log line."""
    run_dir = Path(run_dir)
    out = []
    if wandb:
        try:
            out.append(WandbSink(cfg_dict, run_dir, wandb_mode))
        except ImportError:
            logger.warning("W&B sink requested but wandb is not installed (pip install wandb); skipped")
        except Exception as e:
            logger.warning(f"W&B sink failed to start ({type(e).__name__}: {e}); skipped")
    if tensorboard:
        try:
            out.append(TensorBoardSink(run_dir))
        except ImportError:
            logger.warning("TensorBoard sink requested but tensorboard is not installed "
                           "(pip install tensorboard); skipped")
        except Exception as e:
            logger.warning(f"TensorBoard sink failed to start ({type(e).__name__}: {e}); skipped")
    return Sinks(out)
