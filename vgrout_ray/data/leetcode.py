"""Build benchmark rows from LeetCodeDataset: ``python -m vgrout_ray data build --source PATH|hf:ID --out PATH``.

Keeps medium and hard problems, writes them in the schema of the medium/hard test set
(same prompt wording, starter-code block, setup code, ``assert Solution().m(...) == ...``
tests, func_name, canonical solution), drops ids of the given test sets, and drops rows
whose canonical solution fails its own tests when graded in the sandbox. Rows whose canonical
run uses more than a share of the grader's limit are reported (their verdict depends on the
machine) and, with ``--max-canonical-frac``, dropped. Output is sorted by problem id, so the
same input always gives the same file.
"""
from __future__ import annotations

import argparse
import ast
import gzip
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from vgrout_ray.env.exploits import clean_completion
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.modes import CHECK_TIMEOUT_S
from vgrout_ray.env.problems import ProblemError, make_row, read_rows

RAW_FIELDS = ("completion", "entry_point", "test", "meta")


@dataclass
class BuildReport:
    raw: int = 0
    medium_hard: int = 0
    excluded_test_ids: int = 0
    unconvertible: int = 0
    failed_canonical: int = 0
    slow_canonical: int = 0  # passing canonicals whose run uses more than the stated share of the limit
    dropped_slow: int = 0
    kept: int = 0

    def line(self) -> str:
        return (f"raw={self.raw} medium+hard={self.medium_hard} excluded(test ids)={self.excluded_test_ids} "
                f"unconvertible={self.unconvertible} canonical-failed={self.failed_canonical} "
                f"canonical-slow={self.slow_canonical} dropped-slow={self.dropped_slow} kept={self.kept}")


class _CandidateToSolution(ast.NodeTransformer):
    """``candidate(...)`` → ``Solution().method(...)``."""

    def __init__(self, method: str):
        self.method = method

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "candidate":
            sol = ast.Call(func=ast.Name("Solution", ast.Load()), args=[], keywords=[])
            node.func = ast.Attribute(value=sol, attr=self.method, ctx=ast.Load())
        return node


def tests_from_check(test_src: str, method: str) -> list[str]:
    """The asserts of ``def check(candidate): ...`` rewritten to call ``Solution().method``."""
    tree = ast.parse(test_src)
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(fns) != 1:
        raise ValueError("no single `def check(candidate)`")
    out = []
    for stmt in fns[0].body:
        if not isinstance(stmt, ast.Assert):
            raise ValueError(f"check() has a non-assert statement ({type(stmt).__name__})")
        stmt = _CandidateToSolution(method).visit(stmt)
        ast.fix_missing_locations(stmt)
        out.append(ast.unparse(stmt))
    if not out:
        raise ValueError("check() has no asserts")
    return out


def convert(raw: dict) -> dict:
    """One LeetCodeDataset row → one benchmark row (raises ValueError when it cannot)."""
    for f in RAW_FIELDS:
        if f not in raw:
            raise ValueError(f"missing field {f!r}")
    meta = raw["meta"]
    method = str(raw["entry_point"]).split(".")[-1]
    if not str(raw["entry_point"]).startswith("Solution()."):
        raise ValueError(f"entry_point {raw['entry_point']!r} is not Solution().method")
    return make_row(pid=int(meta["question_id"]), difficulty=str(meta["difficulty"]).lower(),
                    description=meta["question_title"], method=method, starter_code=meta["lang_code"],
                    tests=tests_from_check(raw["test"], method), canonical=raw["completion"])


def read_raw(source: str) -> list[dict]:
    """Raw LeetCodeDataset rows from a .jsonl(.gz) path or ``hf:<dataset id>`` (needs network)."""
    if source.startswith("hf:"):
        from huggingface_hub import HfApi, hf_hub_download

        repo = source[3:]
        files = sorted(f for f in HfApi().list_repo_files(repo, repo_type="dataset")
                       if "train" in f and f.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise SystemExit(f"--source {source}: no train .jsonl file in that dataset")
        source = hf_hub_download(repo, files[0], repo_type="dataset")
    path = Path(source)
    if not path.is_file():
        raise SystemExit(f"--source: {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise SystemExit(f"--source {path}: line {i} is not JSON ({e})") from None
    return rows


def test_set_ids(paths: list[Path]) -> set[int]:
    ids: set[int] = set()
    for p in paths:
        try:
            ids |= {int(r["id"]) for r in read_rows(p)}
        except (ProblemError, KeyError, ValueError) as e:
            raise SystemExit(f"--test-set {p}: {e}") from None
    return ids


def canonical_checks(rows: list[dict], *, sandbox: str, workers: int,
                     timeout: float = 10.0) -> list[tuple[bool, float]]:
    """Grade each row's canonical solution (gt_only mode) in the sandbox, with a generous limit so
    that slow ones are measured: (gt_correct, wall seconds of its run) per row."""
    from concurrent.futures import ThreadPoolExecutor

    from vgrout_ray.grading.local import LocalGrader

    reqs = []
    for r in rows:
        prob = {"canonical": r["canonical_solution"], "func_name": r["func_name"],
                "gt_tests": r["gt_answer"], "setup_code": r["setup_code"]}
        reqs.append(GradeRequest(completion=clean_completion(prob), env_mode="gt_only", gt_tests=r["gt_answer"],
                                 setup_code=r["setup_code"], func_name=r["func_name"],
                                 canonical=r["canonical_solution"]))
    k = max(1, workers)
    idx = [list(range(len(reqs)))[i::k] for i in range(k)]

    def work(part: list[int]) -> list[tuple[bool, float]]:
        with LocalGrader(sandbox, timeout=timeout) as g:
            out = []
            for i in range(0, len(part), 8):
                for res, wall in g.grade_timed([reqs[j] for j in part[i:i + 8]]):
                    out.append((res.gt_correct, float("inf") if wall is None else wall))
            return out

    with ThreadPoolExecutor(k) as ex:
        parts = list(ex.map(work, idx))
    got: list = [None] * len(reqs)
    for part, res in zip(idx, parts):
        for j, r in zip(part, res):
            got[j] = r
    return got


# Share of the grader's limit above which a canonical solution's run is reported as slow (its
# verdict, and so the row's, can depend on the machine's load).
SLOW_CANONICAL_FRAC = 0.5


def build(source: str, out: Path, *, test_sets: list[Path], limit: int | None = None, sandbox: str = "auto",
          workers: int = 1, timeout_s: float = CHECK_TIMEOUT_S, max_canonical_frac: float | None = None) -> BuildReport:
    """``max_canonical_frac``: drop rows whose canonical run takes more than this share of
    ``timeout_s`` (the grader's limit); without it, rows over SLOW_CANONICAL_FRAC are reported, kept."""
    rep = BuildReport()
    raw = read_raw(source)
    rep.raw = len(raw)
    held_out = test_set_ids(test_sets)
    rows = []
    for i, r in enumerate(raw):
        diff = str(r.get("meta", {}).get("difficulty", "")).lower()
        if diff not in ("medium", "hard"):
            continue
        rep.medium_hard += 1
        try:
            row = convert(r)
        except (ValueError, SyntaxError, KeyError, TypeError) as e:
            rep.unconvertible += 1
            logger.debug(f"row {i} ({r.get('task_id')}): cannot convert: {e}")
            continue
        if row["id"] in held_out:
            rep.excluded_test_ids += 1
            continue
        rows.append(row)
    rows.sort(key=lambda x: x["id"])
    if limit is not None:
        rows = rows[:limit]
    checked = canonical_checks(rows, sandbox=sandbox, workers=workers)
    frac = SLOW_CANONICAL_FRAC if max_canonical_frac is None else max_canonical_frac
    kept = []
    for r, (good, wall) in zip(rows, checked):
        if not good:
            rep.failed_canonical += 1
            logger.debug(f"dropped id {r['id']}: canonical solution fails its own tests")
            continue
        if wall > frac * timeout_s:
            rep.slow_canonical += 1
            if max_canonical_frac is not None:
                rep.dropped_slow += 1
                logger.info(f"dropped id {r['id']}: canonical run takes {wall:.2f} s > {frac} x {timeout_s} s")
                continue
            logger.warning(f"id {r['id']}: canonical run takes {wall:.2f} s > {frac} x {timeout_s} s "
                           "(its verdict can depend on the machine; --max-canonical-frac drops such rows)")
        kept.append(r)
    rep.kept = len(kept)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for r in kept:
            f.write(json.dumps(r) + "\n")
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vgrout_ray data", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="LeetCodeDataset rows -> benchmark rows")
    b.add_argument("--source", required=True, help="raw .jsonl(.gz) path or hf:<dataset id>")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--test-set", action="append", type=Path, default=[],
                   help="benchmark-form test set whose ids are excluded (repeatable)")
    b.add_argument("--limit", type=int, default=None, help="keep only the first N convertible rows (by id)")
    b.add_argument("--sandbox", choices=["auto", "process", "docker"], default="auto")
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--timeout-s", type=float, default=CHECK_TIMEOUT_S,
                   help="the grader limit the rows are meant for (grader.timeout-s)")
    b.add_argument("--max-canonical-frac", type=float, default=None,
                   help="drop rows whose canonical run takes more than this share of --timeout-s "
                        f"(default: keep them; rows over {SLOW_CANONICAL_FRAC} are reported)")
    args = ap.parse_args(argv)
    if args.max_canonical_frac is not None and not 0 < args.max_canonical_frac <= 1:
        ap.error(f"--max-canonical-frac must be in (0, 1], got {args.max_canonical_frac}")
    if args.timeout_s <= 0:
        ap.error(f"--timeout-s must be > 0, got {args.timeout_s}")
    if not args.test_set:
        logger.warning("no --test-set given: no held-out ids are excluded")
    rep = build(args.source, args.out, test_sets=args.test_set, limit=args.limit, sandbox=args.sandbox,
                workers=args.workers, timeout_s=args.timeout_s, max_canonical_frac=args.max_canonical_frac)
    logger.info(f"data build: {rep.line()} -> {args.out}")
    print(json.dumps({"out": str(args.out), **rep.__dict__}))
    return 0
