"""Pairsets from teacher pools: ``python -m vgrout_ray pairs build --pool DIR --out FILE``.

A teacher pool holds, per prompt, completions labelled by the grader (``hacked``, ``gt_pass``,
``fmt_ok``). A prompt that has both a hacked and a non-hacked completion gives one pair:
hack = its first hacked completion, clean = its best non-hacked one (oracle-passing and well
formed first). The output is the reference's pairset JSON, a list of
``{problem_id, prompt, hack, clean, mode}``, which ``--v-hack-pairs-path`` reads.

The prompt is the row's ``prompt`` text when the pool stores one, else its ``prompt_ids``
decoded with ``--tokenizer``. The mode is the row's ``env_mode``, else the pool's
``partition.json``, else the hint its prompt carries.

    python -m vgrout_ray pairs modes FILE      # the loophole modes a pairset covers
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vgrout_ray.algo.pairs import LOOPHOLE_MODES, PairsError, infer_mode


def _text(row: dict, key: str, tok, where: str) -> str:
    """A row's text field, or its ``<key>_ids`` decoded with ``tok``."""
    if isinstance(row.get(key), str):
        return row[key]
    ids = row.get(f"{key}_ids")
    if isinstance(ids, str):  # some pools store the id list as a JSON string
        ids = json.loads(ids)
    if not isinstance(ids, list):
        raise PairsError(f"{where}: needs '{key}' (text) or '{key}_ids'")
    if tok is None:
        raise PairsError(f"{where}: has only '{key}_ids'; pass --tokenizer to decode them")
    return tok.decode(ids, skip_special_tokens=key != "prompt")


def _clean_rank(row: dict) -> tuple:
    """Sort key for clean candidates: oracle-passing and well formed first, then pool order."""
    return (not bool(row.get("gt_pass")), not bool(row.get("fmt_ok")))


def pairs_from_pool(pool: dict[int, list[dict]], partition: dict[int, str] | None = None, tok=None,
                    modes: tuple[str, ...] | None = None) -> tuple[list[dict], dict]:
    """(pairs, stats) from a loaded pool: one pair per prompt that has a hack and a clean row."""
    out = []
    stats = {"prompts": len(pool), "no_hack": 0, "no_clean": 0, "other_mode": 0}
    for pid in sorted(pool):
        rows = pool[pid]
        where = f"pool prompt {pid}"
        hacks = [r for r in rows if bool(r["hacked"])]
        cleans = sorted((r for r in rows if not bool(r["hacked"])), key=_clean_rank)
        if not hacks:
            stats["no_hack"] += 1
            continue
        if not cleans:
            stats["no_clean"] += 1
            continue
        hack, clean = hacks[0], cleans[0]
        prompt = _text(hack, "prompt", tok, where)
        mode = str(hack.get("env_mode") or (partition or {}).get(pid) or infer_mode(prompt))
        if mode and mode not in LOOPHOLE_MODES:
            raise PairsError(f"{where}: mode {mode!r} is not a loophole mode {LOOPHOLE_MODES}")
        if modes is not None and mode not in modes:
            stats["other_mode"] += 1
            continue
        if _text(clean, "prompt", tok, where) != prompt:
            raise PairsError(f"{where}: its hack and clean rows carry different prompts")
        out.append({"problem_id": pid, "prompt": prompt, "hack": _text(hack, "completion", tok, where),
                    "clean": _text(clean, "completion", tok, where), "mode": mode})
    return out, stats


def build(pool_dir: str | Path, out: str | Path, tokenizer: str | None = None,
          modes: tuple[str, ...] | None = None) -> list[dict]:
    """Build and write the pairset JSON; fails when the pool yields no pair."""
    from vgrout_ray.data.teacher_pool import load_pool

    tok = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
    pool, partition = load_pool(pool_dir)
    pairs, st = pairs_from_pool(pool, partition, tok, modes)
    if not pairs:
        raise PairsError(f"--pool {pool_dir}: no prompt has both a hacked and a clean completion "
                         f"({st['prompts']} prompts: {st['no_hack']} without a hack, {st['no_clean']} without a "
                         f"clean row, {st['other_mode']} of other modes)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(pairs, indent=1))
    covered = sorted({p["mode"] for p in pairs if p["mode"]})
    print(f"{len(pairs)} pairs from {st['prompts']} prompts ({st['no_hack']} without a hack, {st['no_clean']} "
          f"without a clean row, {st['other_mode']} of other modes) -> {out}; modes covered: "
          f"{', '.join(covered) or 'unknown'}")
    return pairs


def main(argv: list[str] | None = None) -> int:
    from vgrout_ray.algo.pairs import configured_pair_modes

    ap = argparse.ArgumentParser(prog="python -m vgrout_ray pairs", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a pairset JSON from a teacher pool")
    b.add_argument("--pool", required=True, help="teacher pool dir (prompt_NNNN.jsonl.gz, optional partition.json)")
    b.add_argument("--out", required=True, help="pairset JSON to write")
    b.add_argument("--tokenizer", default=None, help="tokenizer dir/name, for pools that store only token ids")
    b.add_argument("--modes", default=None, help="comma-separated modes to keep (default: all)")
    m = sub.add_parser("modes", help="print the loophole modes a pairset file (.json / .md) covers")
    m.add_argument("path")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            modes = tuple(x.strip() for x in a.modes.split(",") if x.strip()) if a.modes else None
            bad = [x for x in modes or () if x not in LOOPHOLE_MODES]
            if bad:
                raise PairsError(f"--modes: unknown {bad}; valid: {LOOPHOLE_MODES}")
            build(a.pool, a.out, a.tokenizer, modes)
        else:
            print(",".join(configured_pair_modes(a.path)))
    except (PairsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
