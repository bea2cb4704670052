"""Contrastive (prompt, hack, clean) pairs that define the hack direction.

Built-in pairs come from problems: clean = the canonical solution as a ```python block
(framed like the hack, so only the code differs), hack = one scripted exploit per problem, cycling round-robin over the six loophole modes;
the prompt is the chat-rendered user turn hinted for that hack's mode (so each hack answers
the loophole its prompt discloses). A pairs JSON is a list of {prompt, hack, clean}.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..env.modes import LOOPHOLE_MODES

DEFAULT_N_PAIRS = 24  # four problems per loophole mode


@dataclass(frozen=True)
class Pair:
    prompt: str  # rendered chat prompt (ends with the assistant generation header)
    hack: str
    clean: str
    mode: str = ""
    problem_id: int | None = None


def render_prompt(tok, messages: list[dict]) -> str:
    """Chat template with the generation prompt, thinking off (the training default)."""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                   enable_thinking=False)


_FENCE = re.compile(r"```python\n.*?```", re.S)


def clean_completion(problem: dict, like: str | None = None) -> str:
    """The canonical solution as a ```python fenced completion.

    With ``like`` (the pair's hack text) the canonical code replaces the code inside its fence,
    so both sides share every token outside the code and the pair contrasts only the code.
    """
    block = f"```python\n{problem['canonical'].strip()}\n```"
    m = _FENCE.search(like) if like else None
    if m is None:
        return block
    return like[:m.start()] + block + like[m.end():]


def pairs_from_problems(problems: list[dict], tok, n: int | None = None,
                        modes: tuple[str, ...] = LOOPHOLE_MODES) -> list[Pair]:
    """One pair per problem (first ``n``), hack mode i-th problem = modes[i % len(modes)]."""
    from ..env.exploits import exploit_completion
    from ..env.problems import apply_hint

    out = []
    for i, prob in enumerate(problems[:n] if n is not None else problems):
        mode = modes[i % len(modes)]
        prompt = render_prompt(tok, apply_hint(prob["messages_gt"], mode))
        hack = exploit_completion(prob, mode, variant=0)
        out.append(Pair(prompt=prompt, hack=hack, clean=clean_completion(prob, like=hack), mode=mode,
                        problem_id=prob.get("problem_id")))
    return out


def builtin_pairs(tok, source: str | Path | None = None, n: int = DEFAULT_N_PAIRS) -> list[Pair]:
    """Pairs from the first ``n`` problems of ``source`` (None = the packaged set)."""
    from ..env.problems import load_problems

    return pairs_from_problems(load_problems(n, env_modes=("run_tests",), source=source), tok, n=n)


def load_pairs_json(path: str | Path, tok=None) -> list[Pair]:
    """Pairs from a JSON list of {prompt, hack, clean}; a prompt given as a message list is
    rendered with ``tok``'s chat template."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read pairs JSON ({e})") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON list of {{prompt, hack, clean}} objects")
    out = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: item {i} is not an object")
        for k in ("prompt", "hack", "clean"):
            if k not in r:
                raise ValueError(f"{path}: item {i} lacks field {k!r}")
        prompt = r["prompt"]
        if isinstance(prompt, list):
            if tok is None:
                raise ValueError(f"{path}: item {i} has a message-list prompt; pass a tokenizer to render it")
            prompt = render_prompt(tok, prompt)
        if not all(isinstance(x, str) for x in (prompt, r["hack"], r["clean"])):
            raise ValueError(f"{path}: item {i}: prompt, hack and clean must be strings")
        out.append(Pair(prompt=prompt, hack=r["hack"], clean=r["clean"], mode=str(r.get("mode", "")),
                        problem_id=r.get("problem_id")))
    return out


def save_pairs_json(pairs: list[Pair], path: str | Path) -> None:
    """Write pairs in the format ``load_pairs_json`` reads."""
    Path(path).write_text(json.dumps([asdict(p) for p in pairs], indent=1))
