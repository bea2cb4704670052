"""Grade completions from a JSONL file: ``python -m vgrout_ray grade --in IN.jsonl --out OUT.jsonl``.

Each input row carries ``completion, env_mode, gt_tests, setup_code, func_name, canonical``
(other keys pass through). Each output row is the input plus ``result``: the RewardResult
fields, ``error`` included. A malformed row gets ``result.error`` naming the row and field
and the others are still graded. Output order = input order.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loguru import logger
from tqdm import tqdm

from vgrout_ray.env.grading import GradeRequest, RewardResult
from vgrout_ray.env.modes import ALL_MODES

REQUIRED = {"completion": str, "env_mode": str, "gt_tests": list, "setup_code": str, "func_name": str,
            "canonical": str}


def request_from_row(row, where: str) -> GradeRequest:
    """Validate one input row; raise ValueError naming ``where`` and the field."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not a JSON object")
    for name, typ in REQUIRED.items():
        if name not in row:
            raise ValueError(f"{where}: missing field '{name}'")
        if not isinstance(row[name], typ):
            raise ValueError(f"{where}: field '{name}' must be {typ.__name__}, got {type(row[name]).__name__}")
    if row["env_mode"] not in ALL_MODES:
        raise ValueError(f"{where}: field 'env_mode' is {row['env_mode']!r}; valid: {', '.join(ALL_MODES)}")
    if not all(isinstance(t, str) for t in row["gt_tests"]):
        raise ValueError(f"{where}: field 'gt_tests' must be a list of strings")
    if not row["func_name"].startswith("Solution()."):
        raise ValueError(f"{where}: field 'func_name' must look like 'Solution().method'")
    return GradeRequest(completion=row["completion"], env_mode=row["env_mode"], gt_tests=row["gt_tests"],
                        setup_code=row["setup_code"], func_name=row["func_name"], canonical=row["canonical"])


def read_input(path: Path) -> list[tuple[dict | None, GradeRequest | None, str | None]]:
    """(row, request, error) per line; a line that is not valid JSON keeps its raw text."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}: row {i}"
            try:
                row = json.loads(line)
            except ValueError as e:
                out.append(({"raw": line.rstrip("\n")}, None, f"{where}: not valid JSON ({e})"))
                continue
            try:
                out.append((row, request_from_row(row, where), None))
            except ValueError as e:
                out.append((row if isinstance(row, dict) else {"raw": row}, None, str(e)))
    return out


def grade_local(requests: list[GradeRequest], *, sandbox: str, workers: int, batch: int = 8,
                timeout: float = 3.0, memory_mb: int = 1024, progress: bool = True) -> list[RewardResult]:
    """Grade with ``workers`` warm sandboxes in this process (threads; the work runs in the sandboxes).
    Sandbox failures follow the grader pool's retry policy (``grade_with_retries``)."""
    from vgrout_ray.grading.local import LocalGrader, grade_with_retries

    graders = [LocalGrader(sandbox, timeout=timeout, memory_mb=memory_mb) for _ in range(max(1, workers))]
    chunks = [list(range(i, min(i + batch, len(requests)))) for i in range(0, len(requests), batch)]
    results: list[RewardResult | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), desc="grading", unit="completion", file=sys.stderr, disable=not progress)
    free = list(graders)

    def work(idx: list[int]) -> None:
        g = free.pop()
        try:
            for i, r in zip(idx, grade_with_retries(g, [requests[i] for i in idx], batch_size=batch)):
                results[i] = r
        finally:
            free.append(g)
            bar.update(len(idx))

    try:
        with ThreadPoolExecutor(max_workers=len(graders)) as ex:
            list(ex.map(work, chunks))
    finally:
        bar.close()
        for g in graders:
            g.close()
    return [r if r is not None else RewardResult.failed("not graded") for r in results]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vgrout_ray grade", description=__doc__.splitlines()[0])
    ap.add_argument("--in", dest="inp", required=True, type=Path, help="input JSONL")
    ap.add_argument("--out", required=True, type=Path, help="output JSONL")
    ap.add_argument("--sandbox", choices=["auto", "process", "docker"], default="auto")
    ap.add_argument("--workers", type=int, default=1, help="parallel sandboxes")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per check program")
    ap.add_argument("--memory-mb", type=int, default=1024)
    ap.add_argument("--ray", action="store_true", help="grade on a Ray GraderPool (RAY_ADDRESS or a local cluster)")
    ap.add_argument("--compat", choices=["reference", "intended"], default="reference",
                    help="channel-probe semantics: reference = the completion runs in an empty namespace (the "
                         "reference grader); intended = with the setup code's names visible")
    args = ap.parse_args(argv)
    if not args.inp.is_file():
        ap.error(f"--in: {args.inp} does not exist")
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    rows = read_input(args.inp)
    todo = [(k, req) for k, (_, req, err) in enumerate(rows) if req is not None]
    logger.info(f"{len(rows)} rows, {len(todo)} well-formed, {len(rows) - len(todo)} malformed; "
                f"sandbox={args.sandbox} workers={args.workers}")
    reqs = [dataclasses.replace(req, compat=args.compat) for _, req in todo]
    from vgrout_ray.sandbox.client import SandboxError
    try:
        if args.ray or args.sandbox == "docker":
            from vgrout_ray.grading.pool import grade_with_pool
            graded = grade_with_pool(reqs, sandbox=args.sandbox, workers=args.workers, timeout=args.timeout,
                                     memory_mb=args.memory_mb)
        else:
            graded = grade_local(reqs, sandbox=args.sandbox, workers=args.workers, timeout=args.timeout,
                                 memory_mb=args.memory_mb)
    except SandboxError as e:  # e.g. --sandbox docker with no engine: say why, no traceback
        logger.error(str(e))
        return 2
    by_index = {k: r for (k, _), r in zip(todo, graded)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n_err = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for k, (row, _, err) in enumerate(rows):
            res = by_index[k] if k in by_index else RewardResult.failed(err or "malformed row")
            n_err += res.error is not None
            f.write(json.dumps({**row, "result": res.to_dict()}) + "\n")
    logger.info(f"wrote {args.out}: {len(rows)} rows, {n_err} with result.error")
    return 0
