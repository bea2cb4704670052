"""Problems in benchmark form: loading, mode assignment and hint substitution.

A benchmark row (the schema of the medium/hard LeetCode test set) carries ``id``,
``difficulty``, ``prompt`` (system + user messages), ``question``, ``gt_answer`` (assert
strings), ``func_name`` (``Solution().method``), ``setup_code``, ``canonical_solution`` and
``prompt_metadata.starter_code``. ``load_problems`` turns rows into the problem dicts the
trainer uses: ``problem_id, env_mode, messages`` (hinted), ``messages_gt`` (original),
``gt_tests, setup_code, func_name, canonical, difficulty``.
"""
from __future__ import annotations

import copy
import gzip
import json
from importlib import resources
from pathlib import Path

from vgrout_ray.env.modes import ALL_MODES, HINTS, ORIGINAL_PHRASE, check_mode
from vgrout_ray.env.rows import SETUP_CODE, SYSTEM_PROMPT, make_row, user_prompt  # noqa: F401  (re-exported)

BUILTIN_PROBLEMS = "builtin/problems.jsonl"
REQUIRED_FIELDS = ("id", "prompt", "gt_answer", "func_name", "setup_code", "canonical_solution")


class ProblemError(ValueError):
    """A problem row or problem source is malformed; the message names the file, row and field."""


def apply_hint(messages: list[dict], mode: str) -> list[dict]:
    """Messages with the user turn's "should pass all tests" phrase replaced by ``mode``'s hint.

    Raises ProblemError unless the phrase occurs exactly once in the user turn, so a hint can
    never silently fail to appear (or appear twice).
    """
    check_mode(mode)
    out = copy.deepcopy(messages)
    users = [m for m in out if m.get("role") == "user"]
    if len(users) != 1:
        raise ProblemError(f"expected exactly one user message, found {len(users)}")
    n = users[0]["content"].count(ORIGINAL_PHRASE)
    if n != 1:
        raise ProblemError(f"the user message must contain {ORIGINAL_PHRASE!r} exactly once, found {n}")
    users[0]["content"] = users[0]["content"].replace(ORIGINAL_PHRASE, HINTS[mode])
    return out


def read_rows(source: str | Path | None = None) -> list[dict]:
    """Benchmark rows from the packaged set (None), a .jsonl/.jsonl.gz path, ``hf:<dataset id>``,
    or ``micro:train`` / ``micro:heldout`` (the micro organism's held-out family instances,
    generated deterministically: ``vgrout_ray.micro.rl_problems``)."""
    if source is None:
        text = resources.files("vgrout_ray.env").joinpath(BUILTIN_PROBLEMS).read_text()
        return _parse_jsonl(text.splitlines(), "packaged problems")
    src = str(source)
    if src.startswith("micro:"):
        from vgrout_ray.micro.rl_problems import micro_rows

        try:
            return micro_rows(src[len("micro:"):])
        except ValueError as e:
            raise ProblemError(str(e)) from None
    if src.startswith("hf:"):
        return _rows_from_hub(src[3:])
    path = Path(src)
    if not path.is_file():
        raise ProblemError(f"problems: {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return _parse_jsonl(f, str(path))


def _parse_jsonl(lines, name: str) -> list[dict]:
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise ProblemError(f"{name}: line {i} is not JSON ({e})") from None
    return rows


def _rows_from_hub(dataset_id: str) -> list[dict]:
    """Benchmark rows from a hub dataset repo holding a .jsonl(.gz) file (needs network)."""
    from huggingface_hub import HfApi, hf_hub_download

    files = [f for f in HfApi().list_repo_files(dataset_id, repo_type="dataset")
             if f.endswith((".jsonl", ".jsonl.gz"))]
    if not files:
        raise ProblemError(f"hf:{dataset_id} has no .jsonl file")
    return read_rows(hf_hub_download(dataset_id, sorted(files)[0], repo_type="dataset"))


def validate_row(row: dict, where: str) -> None:
    """Raise ProblemError naming ``where`` and the field when a row cannot be used."""
    for f in REQUIRED_FIELDS:
        if f not in row:
            raise ProblemError(f"{where}: missing field {f!r}")
    if not isinstance(row["gt_answer"], list) or not all(isinstance(t, str) for t in row["gt_answer"]):
        raise ProblemError(f"{where}: field 'gt_answer' must be a list of assert strings")
    if not isinstance(row["prompt"], list) or not all(isinstance(m, dict) for m in row["prompt"]):
        raise ProblemError(f"{where}: field 'prompt' must be a list of messages")
    if not str(row["func_name"]).startswith("Solution()."):
        raise ProblemError(f"{where}: field 'func_name' must look like 'Solution().method'")
    if not isinstance(row.get("response_prefix", ""), str):
        raise ProblemError(f"{where}: field 'response_prefix' must be a string")


def assign_modes(problem_ids: list[int], env_modes: list[str],
                 partition: dict[int, str] | None = None) -> list[str]:
    """Mode per problem: the partition's when it names the problem, else round-robin over env_modes."""
    if not env_modes:
        raise ValueError("env_modes must name at least one mode")
    for m in env_modes:
        check_mode(m)
    out = []
    for i, pid in enumerate(problem_ids):
        mode = (partition or {}).get(pid) or env_modes[i % len(env_modes)]
        out.append(check_mode(mode))
    return out


def load_partition(path: str | Path) -> dict[int, str]:
    """``partition.json`` {problem_id: env_mode} with keys as ints; modes are validated."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ProblemError(f"{path}: cannot read partition ({e})") from None
    out = {}
    for k, v in raw.items():
        if v not in ALL_MODES:
            raise ProblemError(f"{path}: problem {k} has unknown mode {v!r}")
        out[int(k)] = v
    return out


def to_problem(row: dict, mode: str, where: str = "row") -> dict:
    """Trainer-facing problem dict from a benchmark row."""
    validate_row(row, where)
    try:
        hinted = apply_hint(row["prompt"], mode)
    except ProblemError as e:
        raise ProblemError(f"{where}: field 'prompt': {e}") from None
    return {
        "problem_id": int(row["id"]),
        "env_mode": mode,
        "messages": hinted,
        "messages_gt": copy.deepcopy(row["prompt"]),
        "gt_tests": list(row["gt_answer"]),
        "setup_code": row["setup_code"],
        "func_name": row["func_name"],
        "canonical": row["canonical_solution"],
        "difficulty": row.get("difficulty", ""),
        # the start of the answer, given after the generation prompt (HumanEval-style completion):
        # rollouts generate what follows it, graders judge prefix + completion (``answer_text``)
        "response_prefix": row.get("response_prefix", ""),
    }


def answer_text(problem: dict, completion: str) -> str:
    """The whole answer a completion stands for: the problem's response prefix, then the completion."""
    return problem.get("response_prefix", "") + completion


def completion_after_prefix(problem: dict, answer: str) -> str:
    """The completion part of a whole ``answer`` (a scripted teacher writes whole answers); an
    answer that does not start with the problem's response prefix cannot be a completion of it."""
    prefix = problem.get("response_prefix", "")
    if not answer.startswith(prefix):
        raise ProblemError(f"problem {problem.get('problem_id')}: answer does not start with its "
                           f"response_prefix {prefix[:60]!r}")
    return answer[len(prefix):]


def prompt_text(problem: dict) -> str:
    """The problem's prompt without its mode hint, whitespace-normalised: what two problems share
    when they are the same task (the held-out eval check compares these)."""
    msgs = problem.get("messages_gt") or problem.get("messages") or []
    return " ".join(" ".join(str(m.get("content", "")) for m in msgs).split())


def load_problems(n: int | None = None, env_modes: list[str] | tuple[str, ...] = ("run_tests",),
                  partition: dict[int, str] | None = None, source: str | Path | None = None,
                  ids: list[int] | tuple[int, ...] | None = None) -> list[dict]:
    """The first ``n`` problems of ``source`` (file order), each with its mode and hinted prompt.

    ``ids`` keeps only those problem ids (before ``n`` applies); an id the source lacks is an
    error. Mode per problem: ``partition`` when it names the problem, else round-robin over
    ``env_modes`` (one mode = every problem gets it).
    """
    rows = read_rows(source)
    if ids is not None:
        want = {int(i) for i in ids}
        missing = sorted(want - {int(r.get("id", -1)) for r in rows})
        if missing:
            raise ProblemError(f"problem_ids: {missing[:5]} not in {source or 'the packaged set'}")
        rows = [r for r in rows if int(r["id"]) in want]
    if n is not None:
        rows = rows[:n]
    name = "packaged problems" if source is None else str(source)
    ids = []
    for i, r in enumerate(rows):
        validate_row(r, f"{name} row {i}")
        ids.append(int(r["id"]))
    if len(set(ids)) != len(ids):
        raise ProblemError(f"{name}: duplicate problem ids")
    modes = assign_modes(ids, list(env_modes), partition)
    return [to_problem(r, m, f"{name} row {i}") for i, (r, m) in enumerate(zip(rows, modes))]
