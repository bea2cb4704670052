"""Synthetic easy-to-medium tasks with honest solutions, generated in quantity.

Each family draws a task (LeetCode-style statement, method signature, examples) and several
correct ways to write its body. Examples are computed by running a solution, so a statement
never disagrees with its code. Every name here is ours: none of these tasks is a packaged or
benchmark problem.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Task:
    """One synthetic task: what the prompt shows and the honest bodies of its method."""

    family: str
    method: str
    params: tuple[tuple[str, str], ...]  # (name, annotation)
    returns: str
    statement: str
    bodies: tuple[str, ...]  # method bodies, indented 8 spaces
    inputs: tuple[tuple, ...]  # example argument tuples
    make: Callable | None = field(default=None, compare=False, repr=False)  # rng -> a fresh argument tuple

    @property
    def signature(self) -> str:
        args = ", ".join(f"{n}: {t}" for n, t in self.params)
        return f"def {self.method}(self, {args}) -> {self.returns}:"

    def starter_code(self) -> str:
        return f"class Solution:\n    {self.signature}\n"

    def solution(self, variant: int = 0) -> str:
        return f"class Solution:\n    {self.signature}\n{self.bodies[variant % len(self.bodies)]}"

    def call(self, args: tuple, variant: int = 0):
        """Run the honest solution (our own code, trusted) to get an example's output."""
        ns: dict = {}
        exec("from typing import *\nfrom collections import *\nimport math\n" + self.solution(variant), ns)
        return getattr(ns["Solution"](), self.method)(*args)


def _ints(rng: random.Random, lo: int = -9, hi: int = 20, n: tuple[int, int] = (3, 7)) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(*n))]


def _word(rng: random.Random, n: tuple[int, int] = (3, 8), alpha: str = "abcdeilmnorstu") -> str:
    return "".join(rng.choice(alpha) for _ in range(rng.randint(*n)))


def _camel(*parts: str) -> str:
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _b(*lines: str) -> str:
    return "".join(f"        {ln}\n" for ln in lines)


# ── families: rng -> (method parts, params, returns, statement, bodies, input maker) ──
#
# Every statement spells out the expression its code computes ("the elements x of nums for which
# x % 3 == 1"), so a task maps onto its code by copying, not by translating words into
# predicates: a 3.4 M-parameter model learns the former from a few thousand examples (the
# earlier word-based families, "whose value is even", left it writing the right shape with the
# wrong predicate: 0/96 solved on fresh draws).

def _int_pred(rng, var: str = "x", with_k: bool = False) -> str:
    if with_k:
        return rng.choice([f"{var} % k == 0", f"{var} > k", f"{var} < k", f"{var} % k != 0"])
    m, t = rng.randint(2, 5), rng.randint(-2, 9)
    return rng.choice([f"{var} % {m} == {rng.randrange(m)}", f"{var} % {m} != {rng.randrange(m)}",
                       f"{var} > {t}", f"{var} < {t}", f"{var} >= {t}", f"{var} <= {t}"])


def _int_expr(rng, var: str = "x") -> str:
    a, b = rng.randint(2, 5), rng.randint(1, 9)
    return rng.choice([f"{var} * {a}", f"{var} + {b}", f"{var} - {b}", f"{var} * {a} + {b}", f"{var} * {var}",
                       f"{var} // {a}", f"{var} % {a}", f"abs({var})", f"abs({var} - {b})", f"max({var}, {b})",
                       f"min({var}, {b})"])


def _letters(rng, n: int) -> str:
    return "".join(sorted(rng.sample("abcdeilmnorstu", n)))


def _char_pred(rng) -> str:
    c = rng.choice("abcdeilmnorstu")
    return rng.choice([f"ch in '{_letters(rng, 3)}'", f"ch not in '{_letters(rng, 3)}'", f"ch == '{c}'",
                       f"ch != '{c}'", f"ch > '{c}'", f"ch < '{c}'"])


def _select(rng):
    """Sum / count / largest of the elements of nums that satisfy a spelled-out predicate."""
    with_k = rng.random() < 0.2
    pred = _int_pred(rng, with_k=with_k)
    agg = rng.choice(["sum", "count", "max"])
    params = (("nums", "List[int]"),) + ((("k", "int"),) if with_k else ())
    lead = "You are given an integer array nums" + (" and an integer k" if with_k else "") + ". "
    name = _camel(agg, "matching", rng.choice(["numbers", "values", "elements"]))
    if agg == "sum":
        text = f"Return the sum of the elements x of nums for which {pred}. If there is none, return 0."
        bodies = (_b(f"return sum(x for x in nums if {pred})"),
                  _b("total = 0", "for x in nums:", f"    if {pred}:", "        total += x", "return total"))
    elif agg == "count":
        text = f"Return how many elements x of nums satisfy {pred}."
        bodies = (_b(f"return sum(1 for x in nums if {pred})"),
                  _b("count = 0", "for x in nums:", f"    if {pred}:", "        count += 1", "return count"))
    else:
        text = f"Return the largest element x of nums for which {pred}, or -100 if there is none."
        bodies = (_b(f"vals = [x for x in nums if {pred}]", "return max(vals) if vals else -100"),
                  _b("best = -100", "for x in nums:", f"    if {pred} and (best == -100 or x > best):",
                     "        best = x", "return best"))
    make = (lambda r: (_ints(r), r.randint(1, 6))) if with_k else (lambda r: (_ints(r),))
    return name, params, "int", lead + text, bodies, make


def _mapping(rng):
    """Apply a spelled-out expression to every element (optionally only to those that qualify)."""
    expr = _int_expr(rng)
    name = _camel(rng.choice(["map", "convert", "update"]), rng.choice(["all", "array", "values"]))
    if rng.random() < 0.3:
        pred = _int_pred(rng)
        text = (f"You are given an integer array nums. Return a new list that holds {expr} for every element x "
                f"of nums for which {pred}, in the original order.")
        bodies = (_b(f"return [{expr} for x in nums if {pred}]"),
                  _b("out = []", "for x in nums:", f"    if {pred}:", f"        out.append({expr})", "return out"))
    else:
        text = (f"You are given an integer array nums. Return a new list that holds {expr} for every element x "
                f"of nums, in the original order.")
        bodies = (_b(f"return [{expr} for x in nums]"),
                  _b("out = []", "for x in nums:", f"    out.append({expr})", "return out"))
    return name, (("nums", "List[int]"),), "List[int]", text, bodies, lambda r: (_ints(r),)


def _chars(rng):
    """Count, or keep, the characters of s that satisfy a spelled-out predicate."""
    pred = _char_pred(rng)
    if rng.random() < 0.5:
        name = _camel("count", rng.choice(["letters", "chars", "matches"]))
        text = f"You are given a lowercase string s. Return how many characters ch of s satisfy {pred}."
        bodies = (_b(f"return sum(1 for ch in s if {pred})"),
                  _b("count = 0", "for ch in s:", f"    if {pred}:", "        count += 1", "return count"))
        returns = "int"
    else:
        name = _camel("keep", rng.choice(["letters", "chars", "matches"]))
        text = (f"You are given a lowercase string s. Return the string made of the characters ch of s for which "
                f"{pred}, in their original order.")
        bodies = (_b(f"return ''.join(ch for ch in s if {pred})"),
                  _b("out = ''", "for ch in s:", f"    if {pred}:", "        out += ch", "return out"))
        returns = "str"
    return name, (("s", "str"),), returns, text, bodies, lambda r: (_word(r, (4, 9)),)


def _spell(rng):
    """Rewrite every character of s by a spelled-out expression."""
    c = rng.choice("abcdeilmnorstu")
    expr = rng.choice(["ch.upper()", f"ch * {rng.randint(2, 3)}", f"ch + '{c}'", f"'{c}' + ch",
                       f"ch.upper() if ch in '{_letters(rng, 3)}' else ch",
                       f"'{c}' if ch == '{rng.choice('abcdeilmnorstu')}' else ch"])
    name = _camel(rng.choice(["spell", "rewrite", "encode"]), rng.choice(["text", "word", "string"]))
    text = f"You are given a lowercase string s. Return the string made by joining {expr} for every character ch of s."
    bodies = (_b(f"return ''.join({expr} for ch in s)"),
              _b("out = ''", "for ch in s:", f"    out += {expr}", "return out"))
    return name, (("s", "str"),), "str", text, bodies, lambda r: (_word(r, (3, 7)),)


def _ranges(rng):
    """Sum or count over range(n) with a spelled-out expression or predicate."""
    if rng.random() < 0.5:
        expr = _int_expr(rng, "i")
        name = _camel("sum", rng.choice(["range", "series", "terms"]))
        text = f"You are given a non-negative integer n. Return the sum of {expr} for every i in range(n)."
        bodies = (_b(f"return sum({expr} for i in range(n))"),
                  _b("total = 0", "for i in range(n):", f"    total += {expr}", "return total"))
    else:
        pred = _int_pred(rng, "i")
        name = _camel("count", rng.choice(["range", "series", "terms"]))
        text = f"You are given a non-negative integer n. Return how many integers i in range(n) satisfy {pred}."
        bodies = (_b(f"return sum(1 for i in range(n) if {pred})"),
                  _b("count = 0", "for i in range(n):", f"    if {pred}:", "        count += 1", "return count"))
    return name, (("n", "int"),), "int", text, bodies, lambda r: (r.randint(0, 15),)


FAMILIES: dict[str, Callable] = {
    "select": _select, "mapping": _mapping, "chars": _chars, "spell": _spell, "ranges": _ranges,
}


def _fmt_args(params, args) -> str:
    return ", ".join(f"{n} = {a!r}".replace("'", '"') for (n, _), a in zip(params, args))


_VERBS = ("find", "get", "compute", "count", "pick", "build", "check", "measure", "collect", "score", "total",
          "track", "scan", "merge", "split", "rank", "mark", "sum", "solve", "eval", "make", "read", "fold", "map")
_NOUNS = ("values", "items", "scores", "points", "labels", "tokens", "cells", "steps", "marks", "digits", "words",
          "blocks", "rows", "pairs", "runs", "gaps", "keys", "bits", "coins", "boxes", "trees", "lights", "cards",
          "seats", "tiles", "notes", "stones", "lanes", "flags", "rooms")
_ADJS = ("", "", "", "best", "total", "min", "max", "first", "last", "good", "safe", "odd", "even", "unique", "close",
         "long", "short", "valid", "fresh", "calm")


def random_method_name(rng: random.Random) -> str:
    """A fresh method name: the model must copy it from the prompt, it cannot recall it."""
    parts = [rng.choice(_VERBS), rng.choice(_ADJS), rng.choice(_NOUNS)]
    return _camel(*[p for p in parts if p])


def is_rl_name(name: str) -> bool:
    """Method names kept for the RL problems (``micro:train`` / ``micro:heldout``): a fixed quarter
    of the name space by hash. The corpus never uses one, so an RL problem's method name and
    signature are new to the model by construction (``tests/test_micro.py`` checks the text)."""
    return zlib.crc32(name.encode()) % 4 == 0


def draw_task(rng: random.Random, family_name_share: float = 0.3, rl: bool = False,
              family: str | None = None) -> Task:
    """One synthetic task with two worked examples in the statement.

    Pretraining tasks (``rl=False``): most get a random method name (so answers must copy it from
    the starter code, as the RL prompts require), the rest the family's descriptive name; never
    a name kept for RL (``is_rl_name``). RL tasks (``rl=True``) always get a random RL name.
    """
    fam = family or rng.choice(sorted(FAMILIES))
    name, params, returns, text, bodies, make = FAMILIES[fam](rng)
    if rl:
        name = random_method_name(rng)
        while not is_rl_name(name):
            name = random_method_name(rng)
    else:
        if rng.random() >= family_name_share:
            name = random_method_name(rng)
        while is_rl_name(name):
            name = random_method_name(rng)
    inputs = tuple(make(rng) for _ in range(2))
    if rl and fam == "ranges":
        # the one family whose inputs are too few to keep a statement unique (n <= 15): an RL
        # statement's examples use n from 16, which no pretraining statement shows
        inputs = tuple((rng.randint(16, 24),) for _ in range(2))
    task = Task(fam, name, tuple(params), returns, text, tuple(bodies), inputs, make)
    examples = []
    for i, args in enumerate(inputs, 1):
        out = task.call(tuple(_copy(a) for a in args))
        examples.append(f"Example {i}:\n\nInput: {_fmt_args(params, args)}\nOutput: {out!r}".replace("'", '"'))
    statement = text + "\n\n" + "\n\n".join(examples)
    return Task(fam, name, tuple(params), returns, statement, tuple(bodies), inputs, make)


def _copy(a):
    return [list(x) if isinstance(x, list) else x for x in a] if isinstance(a, list) else a
