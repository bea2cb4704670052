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
# Every statement names its predicate or expression by a keyword that means one code expression
# and nothing else in the prompt ("the even elements x of nums (those with x % 2 == 0)", "every
# character ch of s uppercased, that is ch.upper()"), from small fixed tables, so each pairing
# recurs in pretraining many times under other names and inputs. At this scale the model learns a
# keyword-to-code table but does not copy spans out of its context: with the expression only
# spelled out (free constants, "x % 3 == 1") it wrote the right family's shape with a wrong
# expression (17/256 solved on held-out draws, given the signature; near the 1-in-10 guess rate).

INT_PREDS = {"even": ("{v} % 2 == 0", "Even"), "odd": ("{v} % 2 == 1", "Odd"),
             "positive": ("{v} > 0", "Positive"), "negative": ("{v} < 0", "Negative"), "big": ("{v} > 5", "Big"),
             "small": ("{v} < 3", "Small"), "nonzero": ("{v} != 0", "Nonzero"),
             "threefold": ("{v} % 3 == 0", "Threefold")}
K_PREDS = {"divisible by k": ("{v} % k == 0", "Divisible"), "above k": ("{v} > k", "Above"),
           "below k": ("{v} < k", "Below")}
INT_EXPRS = {"doubled": ("{v} * 2", "Doubled"), "tripled": ("{v} * 3", "Tripled"),
             "incremented": ("{v} + 1", "Incremented"), "decremented": ("{v} - 1", "Decremented"),
             "squared": ("{v} * {v}", "Squared"), "halved": ("{v} // 2", "Halved"),
             "made absolute": ("abs({v})", "Absolute"), "clipped at zero": ("max({v}, 0)", "Clipped")}
CHAR_PREDS = {"vowel": ("ch in 'aeiou'", "Vowel"), "consonant": ("ch not in 'aeiou'", "Consonant"),
              "late": ("ch > 'm'", "Late"), "early": ("ch <= 'm'", "Early"), "liquid": ("ch in 'lmnr'", "Liquid")}
SPELL_EXPRS = {"uppercased": ("ch.upper()", "Uppercased"), "doubled": ("ch * 2", "Doubled"),
               "tripled": ("ch * 3", "Tripled"), "dashed": ("ch + '-'", "Dashed"),
               "bracketed": ("'[' + ch + ']'", "Bracketed"),
               "with vowels starred": ("'*' if ch in 'aeiou' else ch", "Starred"),
               "with vowels uppercased": ("ch.upper() if ch in 'aeiou' else ch", "Shouted")}


def _pick(rng, table: dict, var: str | None = None) -> tuple[str, str, str]:
    """(keyword, code, method-name part) drawn from ``table``; ``var`` names the loop variable."""
    kw = rng.choice(sorted(table))
    code, part = table[kw]
    return kw, code.format(v=var) if var else code, part


def _select(rng):
    """Sum / count / largest of the elements of nums that satisfy a named predicate."""
    with_k = rng.random() < 0.2
    kw, pred, part = _pick(rng, K_PREDS if with_k else INT_PREDS, "x")
    agg = rng.choice(["sum", "count", "max"])
    params = (("nums", "List[int]"),) + ((("k", "int"),) if with_k else ())
    lead = "You are given an integer array nums" + (" and an integer k" if with_k else "") + ". "
    name = (agg, part)
    which = f"the elements x of nums that are {kw} (those with {pred})"
    if agg == "sum":
        text = f"Return the sum of {which}. If there is none, return 0."
        bodies = (_b(f"return sum(x for x in nums if {pred})"),
                  _b("total = 0", "for x in nums:", f"    if {pred}:", "        total += x", "return total"))
    elif agg == "count":
        text = f"Return how many elements x of nums are {kw} (satisfy {pred})."
        bodies = (_b(f"return sum(1 for x in nums if {pred})"),
                  _b("count = 0", "for x in nums:", f"    if {pred}:", "        count += 1", "return count"))
    else:
        text = f"Return the largest of {which}, or -100 if there is none."
        bodies = (_b(f"vals = [x for x in nums if {pred}]", "return max(vals) if vals else -100"),
                  _b("best = -100", "for x in nums:", f"    if {pred} and (best == -100 or x > best):",
                     "        best = x", "return best"))
    make = (lambda r: (_ints(r), r.randint(1, 6))) if with_k else (lambda r: (_ints(r),))
    return name, params, "int", lead + text, bodies, make


def _mapping(rng):
    """Apply a named expression to every element (optionally only to those that qualify)."""
    ekw, expr, epart = _pick(rng, INT_EXPRS, "x")
    name = (epart.lower(),)
    if rng.random() < 0.3:
        pkw, pred, ppart = _pick(rng, INT_PREDS, "x")
        name = (epart.lower(), ppart)
        text = (f"You are given an integer array nums. Return a new list that holds every element x of nums that "
                f"is {pkw} (those with {pred}) {ekw}, that is {expr}, in the original order.")
        bodies = (_b(f"return [{expr} for x in nums if {pred}]"),
                  _b("out = []", "for x in nums:", f"    if {pred}:", f"        out.append({expr})", "return out"))
    else:
        text = (f"You are given an integer array nums. Return a new list that holds every element x of nums "
                f"{ekw}, that is {expr}, in the original order.")
        bodies = (_b(f"return [{expr} for x in nums]"),
                  _b("out = []", "for x in nums:", f"    out.append({expr})", "return out"))
    return name, (("nums", "List[int]"),), "List[int]", text, bodies, lambda r: (_ints(r),)


def _chars(rng):
    """Count, or keep, the characters of s that satisfy a named predicate."""
    kw, pred, part = _pick(rng, CHAR_PREDS)
    if rng.random() < 0.5:
        name = ("count", part)
        text = f"You are given a lowercase string s. Return how many characters ch of s are {kw} (satisfy {pred})."
        bodies = (_b(f"return sum(1 for ch in s if {pred})"),
                  _b("count = 0", "for ch in s:", f"    if {pred}:", "        count += 1", "return count"))
        returns = "int"
    else:
        name = ("keep", part)
        text = (f"You are given a lowercase string s. Return the string made of the characters ch of s that are "
                f"{kw} (those with {pred}), in their original order.")
        bodies = (_b(f"return ''.join(ch for ch in s if {pred})"),
                  _b("out = ''", "for ch in s:", f"    if {pred}:", "        out += ch", "return out"))
        returns = "str"
    return name, (("s", "str"),), returns, text, bodies, lambda r: (_word(r, (4, 9)),)


def _spell(rng):
    """Rewrite every character of s by a named expression."""
    kw, expr, part = _pick(rng, SPELL_EXPRS)
    name = ("spell", part)
    text = (f"You are given a lowercase string s. Return the string made by joining every character ch of s "
            f"{kw}, that is {expr}.")
    bodies = (_b(f"return ''.join({expr} for ch in s)"),
              _b("out = ''", "for ch in s:", f"    out += {expr}", "return out"))
    return name, (("s", "str"),), "str", text, bodies, lambda r: (_word(r, (3, 7)),)


def _ranges(rng):
    """Sum or count over range(n) with a named expression or predicate."""
    if rng.random() < 0.5:
        kw, expr, part = _pick(rng, INT_EXPRS, "i")
        name = ("sum", part)
        text = (f"You are given a non-negative integer n. Return the sum of every integer i in range(n) {kw}, "
                f"that is {expr}.")
        bodies = (_b(f"return sum({expr} for i in range(n))"),
                  _b("total = 0", "for i in range(n):", f"    total += {expr}", "return total"))
    else:
        kw, pred, part = _pick(rng, INT_PREDS, "i")
        name = ("count", part)
        text = (f"You are given a non-negative integer n. Return how many integers i in range(n) are {kw} "
                f"(satisfy {pred}).")
        bodies = (_b(f"return sum(1 for i in range(n) if {pred})"),
                  _b("count = 0", "for i in range(n):", f"    if {pred}:", "        count += 1", "return count"))
    return name, (("n", "int"),), "int", text, bodies, lambda r: (r.randint(0, 15),)


FAMILIES: dict[str, Callable] = {
    "select": _select, "mapping": _mapping, "chars": _chars, "spell": _spell, "ranges": _ranges,
}


def _fmt_args(params, args) -> str:
    return ", ".join(f"{n} = {a!r}".replace("'", '"') for (n, _), a in zip(params, args))


_NOUNS = ("values", "items", "scores", "points", "labels", "tokens", "cells", "steps", "marks", "digits", "words",
          "blocks", "rows", "pairs", "runs", "gaps", "keys", "bits", "coins", "boxes", "trees", "lights", "cards",
          "seats", "tiles", "notes", "stones", "lanes", "flags", "rooms")


def method_name(parts: tuple[str, ...], rng: random.Random, rl: bool) -> str | None:
    """The family's descriptive parts (``sum`` + ``Even``) and a noun: ``sumEvenCoins``. Names say
    what the method does, as LeetCode's do, so the keyword sits on the def line right before the
    body; the noun makes the name new. ``rl`` picks from the quarter of names kept for the RL
    problems (``is_rl_name``), otherwise from the rest; None when no noun gives such a name."""
    nouns = list(_NOUNS)
    rng.shuffle(nouns)
    for noun in nouns:
        name = _camel(*parts, noun)
        if is_rl_name(name) == rl:
            return name
    return None


def is_rl_name(name: str) -> bool:
    """Method names kept for the RL problems (``micro:train`` / ``micro:heldout``): a fixed quarter
    of the name space by hash. The corpus never uses one, so an RL problem's method name and
    signature are new to the model by construction (``tests/test_micro.py`` checks the text)."""
    return zlib.crc32(name.encode()) % 4 == 0


def draw_task(rng: random.Random, rl: bool = False, family: str | None = None) -> Task:
    """One synthetic task with two worked examples in the statement.

    Its method name (``method_name``) comes from the quarter of names kept for the RL problems
    when ``rl``, and from the rest otherwise, so no RL method name is pretraining text.
    """
    for _ in range(100):
        fam = family or rng.choice(sorted(FAMILIES))
        parts, params, returns, text, bodies, make = FAMILIES[fam](rng)
        name = method_name(parts, rng, rl)
        if name is not None:
            break
    else:
        raise RuntimeError(f"draw_task: no method name of family {family!r} found (rl={rl})")
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
