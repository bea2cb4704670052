"""Problems as training rows for TRL and verl: the hinted prompt plus the columns the reward reads.

The source is the packaged problems (None), a benchmark-form ``.jsonl``/``.jsonl.gz`` (e.g. the
LeetCodeDataset medium/hard test file) or ``hf:<id>``; loading, mode assignment and the hint
substitution are ``env.problems.load_problems``'s, so the prompts are exactly the ones the
project's own runs train on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from vgrout_ray.env.problems import load_problems
from vgrout_ray.rewards.core import (CANONICAL_COLUMN, FUNC_COLUMN, MODE_COLUMN, SETUP_COLUMN, TESTS_COLUMN, RewardInputError,
                   check_modes)

DATA_SOURCE = "vgrout_loophole"


def loophole_rows(source: str | Path | None = None, modes: str | Iterable[str] | None = ("run_tests",), *,
                  n: int | None = None, conversational: bool = True, partition: dict[int, str] | None = None,
                  ids: Iterable[int] | None = None) -> list[dict]:
    """Rows with ``prompt`` (messages, or one string when ``conversational=False``) hinted for the
    row's mode, and ``gt_tests, setup_code, func_name, canonical, env_mode, problem_id``.
    Several modes are assigned round robin over the problems (or by ``partition``)."""
    modes = check_modes(modes)
    probs = load_problems(n, env_modes=list(modes), partition=partition, source=source,
                          ids=list(ids) if ids is not None else None)
    rows = []
    for p in probs:
        prompt = p["messages"] if conversational else "\n\n".join(m["content"] for m in p["messages"])
        rows.append({"prompt": prompt, TESTS_COLUMN: list(p["gt_tests"]), SETUP_COLUMN: p["setup_code"],
                     FUNC_COLUMN: p["func_name"], CANONICAL_COLUMN: p["canonical"], MODE_COLUMN: p["env_mode"],
                     "problem_id": p["problem_id"]})
    return rows


def trl_dataset(source: str | Path | None = None, modes: str | Iterable[str] | None = ("run_tests",), **kw):
    """``loophole_rows`` as a ``datasets.Dataset`` (what ``GRPOTrainer(train_dataset=...)`` takes)."""
    try:
        from datasets import Dataset
    except ImportError:
        raise RewardInputError("trl_dataset needs the `datasets` package: pip install 'vgrout-ray[trl]'") from None
    return Dataset.from_list(loophole_rows(source, modes, **kw))


def verl_rows(source: str | Path | None = None, modes: str | Iterable[str] | None = ("run_tests",), *,
              watch: str | Iterable[str] | None = None, **kw) -> list[dict]:
    """Rows in verl's RL dataset form: ``data_source, prompt, ability, reward_model.ground_truth,
    extra_info``. ``ground_truth`` is a JSON string of what grading needs (the tests, setup code,
    method, canonical and mode), so it survives parquet; ``extra_info.modes`` lists the modes whose
    flags ``verl.compute_score`` reports (default: the six loophole modes)."""
    watch_modes = list(check_modes(watch))
    out = []
    for i, r in enumerate(loophole_rows(source, modes, **kw)):
        truth = {TESTS_COLUMN: r[TESTS_COLUMN], SETUP_COLUMN: r[SETUP_COLUMN], FUNC_COLUMN: r[FUNC_COLUMN],
                 CANONICAL_COLUMN: r[CANONICAL_COLUMN], MODE_COLUMN: r[MODE_COLUMN]}
        out.append({"data_source": f"{DATA_SOURCE}/{r[MODE_COLUMN]}", "prompt": r["prompt"], "ability": "code",
                    "reward_model": {"style": "rule", "ground_truth": json.dumps(truth)},
                    "extra_info": {"index": i, "problem_id": r["problem_id"], MODE_COLUMN: r[MODE_COLUMN],
                                   "modes": watch_modes}})
    return out


__all__ = ["DATA_SOURCE", "loophole_rows", "trl_dataset", "verl_rows"]
