"""The loophole grader as a verl custom reward function.

verl config::

    custom_reward_function.path=<site-packages>/vgrout_ray/rewards/verl.py
    custom_reward_function.name=compute_score          # or compute_score_batch with the batch reward manager
    custom_reward_function.reward_kwargs.sandbox=docker

``compute_score(data_source, solution_str, ground_truth, extra_info)`` returns a dict: ``score``
(the reward under the sample's own mode) and numeric flags verl averages into its metrics:
``format_ok``, ``can_compile``, ``gt_correct``, ``hack`` (own mode), ``hack_<mode>`` for each watched
mode, ``grading_failed``. ``ground_truth``: the JSON string ``rewards.dataset.verl_rows`` writes (or
a dict, or a list of assert strings with the rest in ``extra_info``).

Failure policy: verl needs a number for every sample, and None or NaN would poison its
advantages. With ``on_error="flag"`` (default) a failed grading scores 0.0 **and** says so:
``grading_failed=1.0`` (verl logs its mean), ``grading_failed_total`` and an error log line. With
``on_error="raise"`` (reward_kwargs or ``VGROUT_REWARD_ON_ERROR=raise``) it raises instead.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

from vgrout_ray.env.modes import CHECK_TIMEOUT_S
from vgrout_ray.rewards.core import (CANONICAL_COLUMN, FUNC_COLUMN, MODE_COLUMN, SETUP_COLUMN, TESTS_COLUMN, RewardInputError,
                   Scorer, Verdict, check_modes, requests_from_columns)


class GradingFailed(RuntimeError):
    """A completion could not be graded and ``on_error="raise"`` was asked for."""


_scorers: dict[tuple, Scorer] = {}
_lock = threading.Lock()


def _scorer(backend: str, sandbox: str, num_actors: int | None, timeout: float) -> Scorer:
    """One scorer per process and setting: verl calls per sample, the sandbox must stay warm."""
    key = (backend, sandbox, num_actors, timeout)
    with _lock:
        if key not in _scorers:
            _scorers[key] = Scorer(backend=backend, sandbox=sandbox, num_actors=num_actors, timeout=timeout)
        return _scorers[key]


def _spec(ground_truth: Any, extra_info: dict | None, index: int) -> dict:
    """The grading columns of one sample from ground_truth (+ extra_info); errors name the field."""
    extra = dict(extra_info or {})
    gt = ground_truth
    if isinstance(gt, (bytes, bytearray)):
        gt = gt.decode()
    if isinstance(gt, str):
        try:
            gt = json.loads(gt)
        except ValueError:
            raise RewardInputError(f"sample {index}: ground_truth must be JSON (what verl_rows writes: the tests, "
                                   f"setup_code, func_name, env_mode), got {gt[:60]!r}") from None
    if hasattr(gt, "tolist"):  # a numpy array out of parquet
        gt = gt.tolist()
    if isinstance(gt, list):
        gt = {TESTS_COLUMN: gt}
    if not isinstance(gt, dict):
        raise RewardInputError(f"sample {index}: ground_truth must be a JSON object or a list of assert strings, "
                               f"got {type(gt).__name__}")
    spec = {**{k: extra[k] for k in (TESTS_COLUMN, SETUP_COLUMN, FUNC_COLUMN, CANONICAL_COLUMN, MODE_COLUMN)
               if k in extra}, **gt}
    if hasattr(spec.get(TESTS_COLUMN), "tolist"):
        spec[TESTS_COLUMN] = spec[TESTS_COLUMN].tolist()
    return spec


def _watch(extra_info: dict | None, modes) -> tuple[str, ...]:
    if modes is None and extra_info and extra_info.get("modes") is not None:
        modes = extra_info["modes"]
        modes = modes.tolist() if hasattr(modes, "tolist") else modes
    return check_modes(modes)


def _to_dict(v: Verdict, watch: tuple[str, ...], total_failed: int, on_error: str) -> dict:
    if v.failed and on_error == "raise":
        raise GradingFailed(f"loophole grading failed: {v.result.error}")
    r = v.result
    out = {"score": 0.0 if v.failed else float(r.reward), "format_ok": float(r.format_ok),
           "can_compile": float(r.can_compile), "gt_correct": float(r.gt_correct), "hack": float(r.exploited),
           "grading_failed": float(v.failed), "grading_failed_total": float(total_failed)}
    for m in watch:
        out[f"hack_{m}"] = float(v.hacked_under(m))
    return out


def _on_error(on_error: str | None) -> str:
    on_error = on_error or os.environ.get("VGROUT_REWARD_ON_ERROR", "flag")
    if on_error not in ("flag", "raise"):
        raise RewardInputError(f"on_error must be 'flag' or 'raise', got {on_error!r}")
    return on_error


def compute_score_batch(data_sources: list, solution_strs: list, ground_truths: list, extra_infos: list | None = None,
                        *, modes=None, backend: str = "auto", sandbox: str = "auto", num_actors: int | None = None,
                        timeout: float = CHECK_TIMEOUT_S, on_error: str | None = None, **_: Any) -> list[dict]:
    """Batch form (verl's ``batch`` reward manager): one dict per sample, graded together."""
    on_error = _on_error(on_error)
    n = len(solution_strs)
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * n
    if len(ground_truths) != n or len(extra_infos) != n:
        raise RewardInputError(f"{n} solutions but {len(ground_truths)} ground truths and {len(extra_infos)} extra_infos")
    specs = [_spec(g, e, i) for i, (g, e) in enumerate(zip(ground_truths, extra_infos))]
    watch = _watch(extra_infos[0] if extra_infos else None, modes)
    columns = {k: [s.get(k) for s in specs] for k in (TESTS_COLUMN, SETUP_COLUMN, FUNC_COLUMN)}
    for k in (TESTS_COLUMN, SETUP_COLUMN, FUNC_COLUMN):
        for i, s in enumerate(specs):
            if s.get(k) is None:
                raise RewardInputError(f"sample {i}: ground_truth/extra_info lacks {k!r}")
    columns[CANONICAL_COLUMN] = [s.get(CANONICAL_COLUMN) or "" for s in specs]
    if all(s.get(MODE_COLUMN) is not None for s in specs):
        columns[MODE_COLUMN] = [s[MODE_COLUMN] for s in specs]
    default_mode = watch[0] if len(watch) == 1 else None
    reqs = requests_from_columns(list(solution_strs), columns, default_mode=default_mode, watch=watch)
    scorer = _scorer(backend, sandbox, num_actors, timeout)
    verdicts = scorer.score(reqs)
    return [_to_dict(v, watch, scorer.failed, on_error) for v in verdicts]


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> dict:
    """verl's custom reward function: one sample (see the module docstring for the dict)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]


def close() -> None:
    """Stop every scorer this process started (sandboxes, pools)."""
    with _lock:
        for s in _scorers.values():
            s.close()
        _scorers.clear()


__all__ = ["GradingFailed", "close", "compute_score", "compute_score_batch"]
