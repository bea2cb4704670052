"""The loophole grader as a TRL reward function (``GRPOTrainer(reward_funcs=...)``).

``loophole_reward(modes)`` returns a callable ``(prompts, completions, **columns) -> list[float | None]``
that reads the problem from the dataset columns (``gt_tests``, ``setup_code``, ``func_name``,
optional ``canonical`` and ``env_mode``; ``rewards.dataset`` builds them) and pays the sample's
own mode. Per-mode hack / solve / compile rates go to TRL's logs through the ``log_metric``
hook TRL passes to reward functions (as ``loophole/<mode>/hack`` ...); with a TRL that has no
such hook they are logged here instead. A completion that could not be graded gets ``None``
(TRL: no reward, no advantage) and is counted as ``loophole/grading_failed``.
"""
from __future__ import annotations

from typing import Any, Iterable

from loguru import logger

from vgrout_ray.env.modes import CHECK_TIMEOUT_S
from vgrout_ray.rewards.core import RewardInputError, Scorer, batch_metrics, check_modes, requests_from_columns


class LoopholeReward:
    """TRL reward function over the sandboxed loophole grader (see the module docstring)."""

    def __init__(self, modes: str | Iterable[str] | None = None, *, mode: str | None = None,
                 backend: str = "auto", sandbox: str = "auto", num_actors: int | None = None,
                 timeout: float = CHECK_TIMEOUT_S, name: str = "loophole_reward", scorer: Scorer | None = None):
        self.modes = check_modes(modes if modes is not None else ([mode] if mode else None))
        if mode is not None:
            check_modes([mode])
        # The mode a sample without an ``env_mode`` column is paid under: the only watched one.
        self.default_mode = mode or (self.modes[0] if len(self.modes) == 1 else None)
        self.scorer = scorer or Scorer(backend=backend, sandbox=sandbox, num_actors=num_actors, timeout=timeout)
        self.__name__ = name  # TRL names its reward columns (rewards/<name>/mean) after this
        self.last_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    @property
    def failed(self) -> int:
        """Completions whose grading failed so far (each got no reward)."""
        return self.scorer.failed

    def __call__(self, prompts: list | None = None, completions: list | None = None, **columns: Any) -> list:
        if completions is None:
            raise RewardInputError("the loophole reward needs completions=[...] (TRL passes them)")
        log_metric = columns.pop("log_metric", None)
        for k in ("trainer_state", "log_extra", "completion_ids", "environments"):
            columns.pop(k, None)
        reqs = requests_from_columns(list(completions), columns, default_mode=self.default_mode, watch=self.modes)
        verdicts = self.scorer.score(reqs)
        metrics = batch_metrics(verdicts, self.modes)
        metrics["loophole/grading_failed_total"] = float(self.scorer.failed)
        self.last_metrics = metrics
        self.history.append(metrics)
        if callable(log_metric):
            for k, v in metrics.items():
                log_metric(k, v)
        else:
            logger.info("loophole reward: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items())))
        return [v.reward for v in verdicts]

    def close(self) -> None:
        self.scorer.close()


def loophole_reward(modes: str | Iterable[str] | None = None, **kw) -> LoopholeReward:
    """A TRL reward function for ``modes`` (default: the six loophole modes); see ``LoopholeReward``."""
    return LoopholeReward(modes, **kw)


__all__ = ["LoopholeReward", "loophole_reward"]
