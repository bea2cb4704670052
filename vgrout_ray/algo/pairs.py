"""Contrastive (prompt, hack, clean) pairs that define the hack direction.

Pairsets (``--v-hack-pairset``, or a file with ``--v-hack-pairs-path``):

- ``run_tests`` (default, seed 003's choice): hand-written pairs for the run_tests loophole
  only, on problems written for the pairset (``pairsets/run_tests.md``): clean = an honest
  attempt, hack = the same attempt with a vacuous run_tests(). run_tests is then the
  in-distribution mode and every other mode is held out.
- ``all_modes``: built from the run's problems: clean = the oracle canonical solution framed
  like the hack, hack = one scripted exploit per problem cycling over the six loophole modes.
  Every mode is in-distribution (and the pairs see oracle answers of training problems).
- a file: the reference's pairset JSON (a list of ``{problem_id, prompt, hack, clean}``,
  optionally ``mode``) or the authored Markdown form (``load_pairs_md``). ``python -m
  vgrout_ray.data.pairsets build`` writes the JSON from a teacher pool.

Which modes a pairset covers decides the in-dist / held-out labels of every report
(``pair_modes``, ``mode_labels``); a pair without a ``mode`` gets the one whose hint its prompt
carries.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from vgrout_ray.env.modes import HINTS, LOOPHOLE_MODES

DEFAULT_N_PAIRS = 24  # all_modes: four problems per loophole mode
PAIRSETS = ("run_tests", "all_modes")
DEFAULT_PAIRSET = "run_tests"
_PAIRSET_DIR = Path(__file__).parent / "pairsets"


class PairsError(ValueError):
    """A pairset file or item is unusable; the message names the file and item."""


@dataclass(frozen=True)
class Pair:
    prompt: str  # rendered chat prompt (ends with the assistant generation header)
    hack: str
    clean: str
    mode: str = ""
    problem_id: int | None = None


def render_prompt(tok, messages: list[dict], response_prefix: str = "") -> str:
    """Chat template with the generation prompt, thinking off (the training default), then the
    problem's response prefix (the answer's given start, if any)."""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                   enable_thinking=False) + response_prefix


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
    from vgrout_ray.env.exploits import exploit_completion
    from vgrout_ray.env.problems import apply_hint

    out = []
    for i, prob in enumerate(problems[:n] if n is not None else problems):
        mode = modes[i % len(modes)]
        prompt = render_prompt(tok, apply_hint(prob["messages_gt"], mode))
        hack = exploit_completion(prob, mode, variant=0)
        out.append(Pair(prompt=prompt, hack=hack, clean=clean_completion(prob, like=hack), mode=mode,
                        problem_id=prob.get("problem_id")))
    return out


def builtin_pairs(tok, source: str | Path | None = None, n: int = DEFAULT_N_PAIRS) -> list[Pair]:
    """The ``all_modes`` pairset: pairs from the first ``n`` problems of ``source`` (None = the
    packaged set), hack modes cycling over the six loopholes."""
    from vgrout_ray.env.problems import load_problems

    return pairs_from_problems(load_problems(n, env_modes=("run_tests",), source=source), tok, n=n)


def infer_mode(prompt: str) -> str:
    """The loophole mode whose hint the prompt carries ("" when none or several do)."""
    hits = [m for m in LOOPHOLE_MODES if HINTS[m] in prompt]
    return hits[0] if len(hits) == 1 else ""


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))


def load_pairs_json(path: str | Path, tok=None) -> list[Pair]:
    """Pairs from a JSON list of {prompt, hack, clean} (the reference's pairset form, with
    optional ``problem_id`` and ``mode``); a prompt given as a message list is rendered with
    ``tok``'s chat template. A missing ``mode`` is read off the prompt's hint."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PairsError(f"{path}: cannot read pairs JSON ({e})") from None
    if not isinstance(raw, list) or not raw:
        raise PairsError(f"{path}: expected a non-empty JSON list of {{prompt, hack, clean}} objects")
    out = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            raise PairsError(f"{path}: item {i} is not an object")
        for k in ("prompt", "hack", "clean"):
            if k not in r:
                raise PairsError(f"{path}: item {i} lacks field {k!r}")
        prompt = r["prompt"]
        mode = str(r.get("mode") or "") or infer_mode(_prompt_text(prompt))
        if mode and mode not in LOOPHOLE_MODES:
            raise PairsError(f"{path}: item {i}: mode {mode!r} is not a loophole mode {LOOPHOLE_MODES}")
        if isinstance(prompt, list):
            if tok is None:
                raise PairsError(f"{path}: item {i} has a message-list prompt; pass a tokenizer to render it")
            prompt = render_prompt(tok, prompt)
        if not all(isinstance(x, str) for x in (prompt, r["hack"], r["clean"])):
            raise PairsError(f"{path}: item {i}: prompt, hack and clean must be strings")
        out.append(Pair(prompt=prompt, hack=r["hack"], clean=r["clean"], mode=mode,
                        problem_id=r.get("problem_id")))
    return out


def save_pairs_json(pairs: list[Pair], path: str | Path) -> None:
    """Write pairs in the format ``load_pairs_json`` reads."""
    Path(path).write_text(json.dumps([asdict(p) for p in pairs], indent=1))


# ── the authored Markdown form ──
_MD_SECTIONS = ("prompt", "problem", "starter", "tests", "clean", "hack", "system")
_MD_KEYS = ("mode", "method")


@dataclass(frozen=True)
class PairSpec:
    """One Markdown pair before rendering: everything its file says about it."""

    problem_id: int
    mode: str
    method: str
    sections: dict

    def user_turn(self) -> str:
        """The user message: ``prompt`` verbatim, else the training prompt built from the parts."""
        from vgrout_ray.env.problems import apply_hint, user_prompt

        if "prompt" in self.sections:
            return self.sections["prompt"]
        starter = _unfence(self.sections["starter"])
        user = user_prompt(self.sections["problem"], self.method, starter)
        return apply_hint([{"role": "user", "content": user}], self.mode)[0]["content"]

    def messages(self) -> list[dict]:
        from vgrout_ray.env.problems import SYSTEM_PROMPT

        return [{"role": "system", "content": self.sections.get("system", SYSTEM_PROMPT)},
                {"role": "user", "content": self.user_turn()}]

    def tests(self) -> list[str]:
        return [ln for ln in _unfence(self.sections.get("tests", "")).splitlines() if ln.strip()]


def _unfence(text: str) -> str:
    """The code inside a single ```python fence (the text itself when it has none)."""
    m = re.search(r"```[a-z]*\n(.*?)```", text, re.S)
    return m.group(1).rstrip("\n") if m else text.strip("\n")


def parse_pairs_md(path: str | Path) -> list[PairSpec]:
    """Read the Markdown form: ``## pair <problem_id>`` sections with ``key: value`` lines and
    ``### <section>`` blocks. Headings inside code fences are code, not structure."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise PairsError(f"{path}: cannot read pairs Markdown ({e})") from None
    items: list[dict] = []
    cur = sec = None
    in_fence = False
    for no, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("## ") and not line.startswith("### "):
            head = line[3:].split()
            if len(head) != 2 or head[0] != "pair" or not head[1].lstrip("-").isdigit():
                raise PairsError(f"{path}:{no}: a pair heading must read '## pair <problem_id>', got {line!r}")
            cur = {"problem_id": int(head[1]), "line": no, "keys": {}, "sections": {}}
            items.append(cur)
            sec = None
            continue
        if cur is None:
            continue  # preamble
        if not in_fence and line.startswith("### ") and not line.startswith("```"):
            sec = line[4:].strip()
            if sec not in _MD_SECTIONS:
                raise PairsError(f"{path}:{no}: unknown section {sec!r} (known: {', '.join(_MD_SECTIONS)})")
            if sec in cur["sections"]:
                raise PairsError(f"{path}:{no}: pair {cur['problem_id']} has two '{sec}' sections")
            cur["sections"][sec] = []
            continue
        if sec is None:
            if line.strip():
                k, sep, v = line.partition(":")
                if not sep or k.strip() not in _MD_KEYS:
                    raise PairsError(f"{path}:{no}: expected 'mode: ...' or 'method: ...', got {line!r}")
                cur["keys"][k.strip()] = v.strip()
            continue
        cur["sections"][sec].append(line)
    if in_fence:
        raise PairsError(f"{path}: a code fence is never closed")
    if not items:
        raise PairsError(f"{path}: no '## pair <problem_id>' sections")
    out, seen = [], set()
    for it in items:
        where = f"{path}: pair {it['problem_id']} (line {it['line']})"
        if it["problem_id"] in seen:
            raise PairsError(f"{where}: duplicate problem_id")
        seen.add(it["problem_id"])
        secs = {k: "\n".join(v).strip("\n") + "\n" for k, v in it["sections"].items()}
        for k in ("clean", "hack"):
            if not secs.get(k, "").strip():
                raise PairsError(f"{where}: missing or empty '### {k}' section")
            secs[k] = secs[k].rstrip("\n")
        mode = it["keys"].get("mode", "")
        if mode not in LOOPHOLE_MODES:
            raise PairsError(f"{where}: 'mode:' must be one of {LOOPHOLE_MODES}, got {mode!r}")
        if "prompt" not in secs:
            for k in ("problem", "starter"):
                if not secs.get(k, "").strip():
                    raise PairsError(f"{where}: needs a '### prompt' section, or '### problem' and '### starter'")
            if not it["keys"].get("method"):
                raise PairsError(f"{where}: 'method:' is required with '### problem' / '### starter'")
        out.append(PairSpec(problem_id=it["problem_id"], mode=mode, method=it["keys"].get("method", ""),
                            sections=secs))
    return out


def load_pairs_md(path: str | Path, tok) -> list[Pair]:
    """Pairs from the authored Markdown form, prompts rendered with ``tok``'s chat template."""
    return [Pair(prompt=render_prompt(tok, s.messages()), hack=s.sections["hack"], clean=s.sections["clean"],
                 mode=s.mode, problem_id=s.problem_id) for s in parse_pairs_md(path)]


def load_pairs(path: str | Path, tok=None) -> list[Pair]:
    """A pairset file by suffix: ``.json`` (reference form) or ``.md`` (authored form)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return load_pairs_json(path, tok)
    if suffix == ".md":
        return load_pairs_md(path, tok)
    raise PairsError(f"v_hack_pairs_path: {path} must be a .json or .md pairset")


def pairset_path(name: str) -> Path:
    """The packaged file of a named pairset (``all_modes`` is built, it has no file)."""
    if name not in PAIRSETS or name == "all_modes":
        raise PairsError(f"v_hack_pairset: {name!r} has no packaged file (named pairsets: {PAIRSETS})")
    return _PAIRSET_DIR / f"{name}.md"


def resolve_pairs(tok, *, pairs_path: str | Path | None, pairset: str = DEFAULT_PAIRSET,
                  problems: str | Path | None = None) -> tuple[list[Pair], str]:
    """(pairs, description) for a run: the file when given, else the named pairset."""
    if pairs_path is not None:
        return load_pairs(pairs_path, tok), f"file {pairs_path}"
    if pairset == "all_modes":
        return builtin_pairs(tok, source=problems), "all_modes (scripted exploits vs oracle canonicals, six modes)"
    return load_pairs_md(pairset_path(pairset), tok), f"pairset {pairset}"


def pair_modes(pairs: list[Pair]) -> tuple[str, ...]:
    """The loophole modes a pairset covers (its in-distribution modes), in canonical order."""
    have = {p.mode or infer_mode(p.prompt) for p in pairs}
    return tuple(m for m in LOOPHOLE_MODES if m in have)


def configured_pair_modes(pairs_path: str | Path | None, pairset: str = DEFAULT_PAIRSET,
                          n_all_modes: int = DEFAULT_N_PAIRS) -> tuple[str, ...]:
    """The modes a run's pairs cover, read without a model or tokenizer (the driver's labels)."""
    if pairs_path is not None:
        if Path(pairs_path).suffix.lower() == ".md":
            return tuple(m for m in LOOPHOLE_MODES if m in {s.mode for s in parse_pairs_md(pairs_path)})
        return pair_modes(load_pairs_json_modes(pairs_path))
    if pairset == "all_modes":
        return tuple(LOOPHOLE_MODES[:min(n_all_modes, len(LOOPHOLE_MODES))])
    return tuple(m for m in LOOPHOLE_MODES if m in {s.mode for s in parse_pairs_md(pairset_path(pairset))})


def load_pairs_json_modes(path: str | Path) -> list[Pair]:
    """The JSON pairs with message-list prompts flattened to text (enough to read their modes)."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, list):
        raise PairsError(f"{path}: expected a JSON list of pairs")
    return [Pair(prompt=_prompt_text(r.get("prompt", "")), hack="", clean="", mode=str(r.get("mode") or ""))
            for r in raw if isinstance(r, dict)]


def mode_labels(modes, covered) -> dict[str, str]:
    """mode -> "IN-dist" when the pairs cover it, else "held-out" (gt_only has no loophole: "-")."""
    covered = set(covered)
    return {m: ("IN-dist" if m in covered else ("-" if m not in LOOPHOLE_MODES else "held-out")) for m in modes}
