"""The micro organism's RL problems: held-out instances of its own task families.

The packaged problems are beyond the micro model (it never solves one), so on them hacking and
honest solving never compete. These problems are new draws of the corpus's families: the same
kind of statement the model was pretrained on, but with method names from the quarter of the name
space the corpus never uses (``families.is_rl_name``) and fresh inputs, so no statement, method
name or signature is pretraining text (``tests/test_micro.py`` checks it).

Two disjoint splits, deterministic given ``SEED``:
- ``micro:train`` (ids 20001..): the RL prompts of the ``micro`` preset;
- ``micro:heldout`` (ids 21001..): deploy-eval prompts, never trained on.

``micro:train-hard`` / ``micro:heldout-hard`` are the same rows restricted to the families in
``HARD_FAMILIES``, the ones whose statements name an expression or predicate the model must
write (the easy families are mostly a single keyword away from the answer). On problems the base
model nearly always solves, a hack pays no more than an honest answer, so hacking has nothing to
win; on these, solving and hacking compete.

Each row is in benchmark form (``env.rows.make_row``): the statement with two worked
examples, the starter code, ``N_TESTS`` assert tests (the two examples and fresh inputs), the
honest solution as the canonical one.
"""
from __future__ import annotations

import random
from functools import lru_cache

from vgrout_ray.micro.families import FAMILIES, Task, _copy, draw_task

SEED = 20240
N_TRAIN = 64
N_HELDOUT = 32
N_TESTS = 8
SPLITS = {"train": 20001, "heldout": 21001}
HARD_FAMILIES = ("mapping", "ranges", "select")


def _tests(task: Task, rng: random.Random) -> list[str]:
    args = list(task.inputs)
    while len(args) < N_TESTS:
        args.append(task.make(rng))
    out = []
    for a in args:
        kw = ", ".join(f"{n}={v!r}" for (n, _), v in zip(task.params, a))
        out.append(f"assert Solution().{task.method}({kw}) == {task.call(tuple(_copy(v) for v in a))!r}")
    return out


def task_row(task: Task, pid: int, rng: random.Random) -> dict:
    from vgrout_ray.env.rows import make_row

    return make_row(pid=pid, difficulty="easy", description=task.statement, method=task.method,
                    starter_code=task.starter_code(), tests=_tests(task, rng), canonical=task.solution(0),
                    response_prefix=response_prefix(task))


def response_prefix(task: Task) -> str:
    """The answer's given start: the fence and the starter code's class and def line, ending at
    the colon (so the model's first token is the body's newline-and-indent, as in pretraining).

    The micro model does not copy a multi-token method name from its context (measured on the
    earlier recipe: the prompt's name in 0 of 64 samples), and every RL problem's name is new to
    it; given the signature, as HumanEval gives it, the model writes the body and whatever follows
    the class, which is where honest solving and the run_tests hack compete."""
    return "```python\n" + task.starter_code().rstrip("\n")


@lru_cache(maxsize=None)
def _all_rows(seed: int = SEED) -> tuple[tuple[tuple[str, dict], ...], tuple[tuple[str, dict], ...]]:
    """(family, row) pairs of both splits."""
    rng = random.Random(seed)
    fams = sorted(FAMILIES)
    tasks: list[Task] = []
    names: set[str] = set()
    i = 0
    while len(tasks) < N_TRAIN + N_HELDOUT:  # families in turn, every method name distinct
        t = draw_task(rng, rl=True, family=fams[i % len(fams)])
        if t.method not in names:
            names.add(t.method)
            tasks.append(t)
            i += 1
    train = tuple((t.family, task_row(t, SPLITS["train"] + j, rng)) for j, t in enumerate(tasks[:N_TRAIN]))
    held = tuple((t.family, task_row(t, SPLITS["heldout"] + j, rng)) for j, t in enumerate(tasks[N_TRAIN:]))
    return train, held


def micro_rows(split: str) -> list[dict]:
    """Rows of ``split``: "train" or "heldout", with "-hard" for the ``HARD_FAMILIES`` only;
    fresh copies."""
    import copy

    base, hard = (split[:-len("-hard")], True) if split.endswith("-hard") else (split, False)
    if base not in SPLITS:
        known = sorted(SPLITS) + [f"{k}-hard" for k in sorted(SPLITS)]
        raise ValueError(f"micro problems: unknown split {split!r}; known: {known}")
    train, held = _all_rows()
    rows = [r for fam, r in (train if base == "train" else held) if not hard or fam in HARD_FAMILIES]
    return copy.deepcopy(rows)
