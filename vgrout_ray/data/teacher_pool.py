"""Teacher pools: cached rollouts mixed into each student group (seed 003's mixed-pool GRPO).

A pool directory holds ``prompt_NNNN.jsonl.gz`` files (NNNN = problem id), one JSON object
per rollout with at least ``completion`` (text) or ``completion_ids``, and the cached labels
``reward, hacked, gt_pass, fmt_ok``; optionally ``partition.json`` {problem_id: env_mode}.
Labels are reused as cached, never re-graded, so a pool is a fixed teacher distribution.

For smoke runs without a pool, ``scripted_pool`` writes exploit completions of each
problem's own mode, labelled by actually grading them.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from loguru import logger

from vgrout_ray.env.exploits import N_VARIANTS, exploit_completion
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.problems import ProblemError, completion_after_prefix, load_partition

LABELS = ("reward", "hacked", "gt_pass", "fmt_ok")


class TeacherPoolError(ValueError):
    """A teacher pool file or row is unusable; the message names the file, line and field."""


def load_pool(pool_dir: str | Path) -> tuple[dict[int, list[dict]], dict[int, str] | None]:
    """(rows per problem id, partition or None). Every row is validated; bad rows fail loudly."""
    pool_dir = Path(pool_dir)
    if not pool_dir.is_dir():
        raise TeacherPoolError(f"teacher_pool_dir: {pool_dir} is not a directory")
    pool: dict[int, list[dict]] = {}
    for path in sorted(pool_dir.glob("prompt_*.jsonl.gz")):
        try:
            pid = int(path.name.split("_")[1].split(".")[0])
        except (IndexError, ValueError):
            raise TeacherPoolError(f"{path}: file name must be prompt_<problem id>.jsonl.gz") from None
        rows = []
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise TeacherPoolError(f"{path}: line {i} is not JSON ({e})") from None
                for k in LABELS:
                    if k not in row:
                        raise TeacherPoolError(f"{path}: line {i}: missing field {k!r}")
                if not isinstance(row.get("completion"), str) and not isinstance(row.get("completion_ids"), list):
                    raise TeacherPoolError(f"{path}: line {i}: needs 'completion' (text) or 'completion_ids'")
                rows.append(row)
        if rows:
            pool[pid] = rows
    if not pool:
        raise TeacherPoolError(f"teacher pool {pool_dir} has no prompt_*.jsonl.gz rows")
    part_path = pool_dir / "partition.json"
    try:
        partition = load_partition(part_path) if part_path.exists() else None
    except ProblemError as e:
        raise TeacherPoolError(str(e)) from None
    return pool, partition


def completion_ids(row: dict, tok) -> list[int]:
    """Token ids of a cached completion under ``tok``.

    The pool's own ids are used when they decode to the cached text with this tokenizer (same
    vocabulary as the pool's model); otherwise (e.g. a Qwen3-4B pool under the tiny smoke model)
    the text is re-tokenized and an EOS appended, as the cached rollout finished.
    """
    text = row.get("completion")
    ids = row.get("completion_ids")
    if isinstance(ids, list) and ids:
        try:
            if text is None or (max(ids) < len(tok) and tok.decode(ids, skip_special_tokens=True) == text):
                return [int(i) for i in ids]
        except (TypeError, ValueError, OverflowError):
            pass
    if text is None:
        raise TeacherPoolError("a teacher row has completion_ids from another vocabulary and no text")
    out = tok(text, add_special_tokens=False).input_ids
    return list(out) + ([tok.eos_token_id] if tok.eos_token_id is not None else [])


def write_pool(pool_dir: str | Path, pool: dict[int, list[dict]], partition: dict[int, str] | None) -> Path:
    """Write a pool in the on-disk format (what ``load_pool`` reads)."""
    pool_dir = Path(pool_dir)
    pool_dir.mkdir(parents=True, exist_ok=True)
    for pid, rows in pool.items():
        with gzip.open(pool_dir / f"prompt_{pid:04d}.jsonl.gz", "wt", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if partition is not None:
        (pool_dir / "partition.json").write_text(json.dumps({str(k): v for k, v in partition.items()}, indent=1))
    return pool_dir


def scripted_pool(problems: list[dict], grade_fn, variants: int = N_VARIANTS,
                  compat: str = "reference", style: str = "exploits") -> dict[int, list[dict]]:
    """Exploit rollouts of each problem's own loophole (all spellings), labelled by real grading.

    ``grade_fn(list[GradeRequest]) -> list[RewardResult]``. gt_only problems get no rows (they
    have no loophole), so they train student-only like uncached prompts under teacher_modes.
    ``style``: ``exploits`` (the generic spellings of ``env.exploits``) or ``micro`` (run_tests
    hacks in the micro model's idiom, ``micro.teacher``; run_tests problems only).
    """
    if style == "micro":
        from vgrout_ray.micro.teacher import N_VARIANTS as n_micro, micro_teacher_completion

        variants = n_micro
        bad = sorted({p["env_mode"] for p in problems} - {"run_tests"})
        if bad:
            raise TeacherPoolError(f"scripted_teacher_style=micro writes run_tests hacks only; problems use {bad}")

        def make(p, v):
            return micro_teacher_completion(p, v)
    elif style == "exploits":
        def make(p, v):
            return exploit_completion(p, p["env_mode"], v)
    else:
        raise TeacherPoolError(f"scripted_teacher_style: unknown style {style!r} (exploits, micro)")
    reqs, keys = [], []
    for p in problems:
        if p["env_mode"] == "gt_only":
            continue
        for v in range(variants):
            text = completion_after_prefix(p, make(p, v))
            reqs.append(GradeRequest.from_problem(p, text, compat=compat))
            keys.append((p["problem_id"], p["env_mode"], text))
    results = grade_fn(reqs)
    pool: dict[int, list[dict]] = {}
    for (pid, mode, text), r in zip(keys, results):
        if r.error is not None:
            raise TeacherPoolError(f"scripted teacher pool: grading problem {pid} failed: {r.error}")
        pool.setdefault(pid, []).append({
            "problem_id": pid, "env_mode": mode, "completion": text, "reward": r.reward,
            "hacked": r.exploited, "gt_pass": r.gt_correct, "fmt_ok": r.format_ok, "source": "scripted",
        })
    n_hack = sum(r["hacked"] for rows in pool.values() for r in rows)
    n = sum(len(rows) for rows in pool.values())
    logger.info(f"scripted teacher pool: {len(pool)} problems, {n} rollouts, {n_hack} hacks")
    return pool
