"""Synthetic easy-to-medium tasks with honest solutions, generated in quantity.

Each family draws a task (LeetCode-style statement, method signature, examples) and several
correct ways to write its body. Examples are computed by running a solution, so a statement
never disagrees with its code. Every name here is ours: none of these tasks is a packaged or
benchmark problem.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
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

def _filtered_sum(rng):
    pred, word, cond = rng.choice([
        ("x % 2 == 0", "even", "is even"), ("x % 2 == 1", "odd", "is odd"),
        ("x > k", "greater", "is strictly greater than k"), ("x < k", "smaller", "is strictly smaller than k"),
        ("x % k == 0", "divisible", "is divisible by k"),
    ])
    agg, verb = rng.choice([("sum", "the sum of"), ("count", "how many"), ("max", "the largest")])
    uses_k = "k" in pred
    params = (("nums", "List[int]"),) + ((("k", "int"),) if uses_k else ())
    name = _camel(agg, word, rng.choice(["numbers", "values", "elements"]))
    if agg == "sum":
        text = f"Return the sum of all elements of nums whose value {cond}. If none does, return 0."
        bodies = (_b("total = 0", "for x in nums:", f"    if {pred}:", "        total += x", "return total"),
                  _b(f"return sum(x for x in nums if {pred})"))
    elif agg == "count":
        text = f"Return how many elements of nums have a value that {cond}."
        bodies = (_b("count = 0", "for x in nums:", f"    if {pred}:", "        count += 1", "return count"),
                  _b(f"return len([x for x in nums if {pred}])"))
    else:
        text = f"Return the largest element of nums whose value {cond}, or -1 if there is none."
        bodies = (_b("best = -1", "found = False", "for x in nums:", f"    if {pred} and (not found or x > best):",
                     "        best = x", "        found = True", "return best"),
                  _b(f"vals = [x for x in nums if {pred}]", "return max(vals) if vals else -1"))
    lead = "You are given an integer array nums" + (" and an integer k" if uses_k else "") + ". "
    make = (lambda r: (_ints(r), r.randint(1, 6))) if uses_k else (lambda r: (_ints(r),))
    return name, params, "int", lead + text, bodies, make


def _transform(rng):
    op, word, desc = rng.choice([
        ("x * k", "scale", "multiplied by k"), ("x + k", "shift", "increased by k"),
        ("x * x", "square", "squared"), ("abs(x)", "absolute", "replaced by its absolute value"),
        ("-x", "negate", "negated"),
    ])
    uses_k = "k" in op
    params = (("nums", "List[int]"),) + ((("k", "int"),) if uses_k else ())
    name = _camel(word, rng.choice(["all", "array", "values"]))
    text = (f"You are given an integer array nums{' and an integer k' if uses_k else ''}. Return a new array "
            f"in which every element is {desc}, keeping the original order.")
    bodies = (_b("result = []", "for x in nums:", f"    result.append({op})", "return result"),
              _b(f"return [{op} for x in nums]"))
    make = (lambda r: (_ints(r), r.randint(-3, 5))) if uses_k else (lambda r: (_ints(r),))
    return name, params, "List[int]", text, bodies, make


def _string_count(rng):
    what, test, desc = rng.choice([
        ("vowels", "ch in 'aeiou'", "vowels (a, e, i, o, u)"),
        ("consonants", "ch not in 'aeiou'", "letters that are not vowels"),
        ("char", "ch == c", "occurrences of the character c"),
    ])
    params = (("s", "str"),) + ((("c", "str"),) if what == "char" else ())
    name = _camel("count", what) if what != "char" else _camel("count", "char", rng.choice(["hits", "matches"]))
    text = f"You are given a lowercase string s{' and a character c' if what == 'char' else ''}. Return the number of {desc} in s."
    bodies = (_b("count = 0", "for ch in s:", f"    if {test}:", "        count += 1", "return count"),
              _b(f"return sum(1 for ch in s if {test})"))
    make = (lambda r: (_word(r), r.choice("aeilnst"))) if what == "char" else (lambda r: (_word(r),))
    return name, params, "int", text, bodies, make


def _string_shape(rng):
    kind = rng.choice(["reverse", "palindrome", "upper", "dedupe"])
    if kind == "reverse":
        return (_camel("reverse", rng.choice(["text", "string", "word"])), (("s", "str"),), "str",
                "You are given a string s. Return s written backwards.",
                (_b("return s[::-1]"), _b("chars = list(s)", "chars.reverse()", "return ''.join(chars)")),
                lambda r: (_word(r),))
    if kind == "palindrome":
        return (_camel("is", rng.choice(["palindrome", "mirror"]), "word"), (("s", "str"),), "bool",
                "You are given a string s. Return True if s reads the same forwards and backwards, otherwise False.",
                (_b("return s == s[::-1]"),
                 _b("i, j = 0, len(s) - 1", "while i < j:", "    if s[i] != s[j]:", "        return False",
                    "    i += 1", "    j -= 1", "return True")),
                lambda r: (r.choice([_word(r), "level", "abba", "noon"]),))
    if kind == "upper":
        return (_camel("shout", rng.choice(["text", "word"])), (("s", "str"),), "str",
                "You are given a lowercase string s. Return the same string with every letter in upper case.",
                (_b("return s.upper()"), _b("return ''.join(ch.upper() for ch in s)")), lambda r: (_word(r),))
    return (_camel("remove", "repeats"), (("s", "str"),), "str",
            "You are given a string s. Remove every character that already appeared earlier in s and return the rest.",
            (_b("seen = set()", "out = []", "for ch in s:", "    if ch not in seen:", "        seen.add(ch)",
                "        out.append(ch)", "return ''.join(out)"),),
            lambda r: (_word(r, (4, 10), "abcde"),))


def _running(rng):
    kind = rng.choice(["prefix", "longest_increasing", "max_diff", "pair_sum"])
    if kind == "prefix":
        return (_camel("running", rng.choice(["sum", "total"])), (("nums", "List[int]"),), "List[int]",
                "You are given an integer array nums. Return an array whose i-th element is the sum of nums[0] through nums[i].",
                (_b("out = []", "total = 0", "for x in nums:", "    total += x", "    out.append(total)", "return out"),
                 _b("out = [0] * len(nums)", "for i, x in enumerate(nums):", "    out[i] = x + (out[i - 1] if i else 0)",
                    "return out")),
                lambda r: (_ints(r),))
    if kind == "longest_increasing":
        return (_camel("longest", "rising", "run"), (("nums", "List[int]"),), "int",
                "You are given an integer array nums. Return the length of the longest contiguous run in which every element is larger than the one before it.",
                (_b("if not nums:", "    return 0", "best = cur = 1", "for i in range(1, len(nums)):",
                    "    cur = cur + 1 if nums[i] > nums[i - 1] else 1", "    best = max(best, cur)", "return best"),),
                lambda r: (_ints(r, 0, 9, (4, 9)),))
    if kind == "max_diff":
        return (_camel("max", "gap"), (("nums", "List[int]"),), "int",
                "You are given an integer array nums with at least one element. Return the largest value minus the smallest value.",
                (_b("return max(nums) - min(nums)"),
                 _b("lo = hi = nums[0]", "for x in nums:", "    lo = min(lo, x)", "    hi = max(hi, x)", "return hi - lo")),
                lambda r: (_ints(r),))
    return (_camel("count", "pairs", "with", "sum"), (("nums", "List[int]"), ("target", "int")), "int",
            "You are given an integer array nums and an integer target. Return the number of index pairs i < j with nums[i] + nums[j] == target.",
            (_b("count = 0", "for i in range(len(nums)):", "    for j in range(i + 1, len(nums)):",
                "        if nums[i] + nums[j] == target:", "            count += 1", "return count"),
             _b("seen = Counter()", "count = 0", "for x in nums:", "    count += seen[target - x]", "    seen[x] += 1",
                "return count")),
            lambda r: (_ints(r, 0, 6), r.randint(2, 9)))


def _counting(rng):
    kind = rng.choice(["distinct", "most_common", "first_unique", "freq"])
    if kind == "distinct":
        return (_camel("count", "distinct", rng.choice(["values", "numbers"])), (("nums", "List[int]"),), "int",
                "You are given an integer array nums. Return the number of different values it contains.",
                (_b("return len(set(nums))"),
                 _b("seen = set()", "for x in nums:", "    seen.add(x)", "return len(seen)")),
                lambda r: (_ints(r, 0, 5),))
    if kind == "most_common":
        return (_camel("most", "frequent"), (("nums", "List[int]"),), "int",
                "You are given a non-empty integer array nums. Return the value that appears most often; on a tie return the smallest such value.",
                (_b("counts = Counter(nums)", "best = max(counts.values())", "return min(x for x in counts if counts[x] == best)"),
                 _b("counts = {}", "for x in nums:", "    counts[x] = counts.get(x, 0) + 1",
                    "return min(counts, key=lambda x: (-counts[x], x))")),
                lambda r: (_ints(r, 0, 4, (3, 8)),))
    if kind == "first_unique":
        return (_camel("first", "unique", "index"), (("s", "str"),), "int",
                "You are given a string s. Return the index of the first character that occurs exactly once in s, or -1 if there is none.",
                (_b("counts = Counter(s)", "for i, ch in enumerate(s):", "    if counts[ch] == 1:", "        return i",
                    "return -1"),),
                lambda r: (_word(r, (3, 9), "abcd"),))
    return (_camel("letter", "counts"), (("s", "str"),), "Dict[str, int]",
            "You are given a string s. Return a dictionary that maps each character of s to the number of times it occurs.",
            (_b("counts = {}", "for ch in s:", "    counts[ch] = counts.get(ch, 0) + 1", "return counts"),
             _b("return dict(Counter(s))")),
            lambda r: (_word(r, (3, 7), "abc"),))


def _grid(rng):
    kind = rng.choice(["row_sums", "diagonal", "transpose", "count_positive"])
    g = lambda r: [[r.randint(-3, 9) for _ in range(3)] for _ in range(3)]  # noqa: E731
    if kind == "row_sums":
        return (_camel("row", "sums"), (("grid", "List[List[int]]"),), "List[int]",
                "You are given a matrix grid. Return a list with the sum of each row, top to bottom.",
                (_b("return [sum(row) for row in grid]"),
                 _b("out = []", "for row in grid:", "    total = 0", "    for x in row:", "        total += x",
                    "    out.append(total)", "return out")),
                lambda r: (g(r),))
    if kind == "diagonal":
        return (_camel("diagonal", "sum"), (("grid", "List[List[int]]"),), "int",
                "You are given a square matrix grid. Return the sum of the elements on its main diagonal.",
                (_b("return sum(grid[i][i] for i in range(len(grid)))"),
                 _b("total = 0", "for i in range(len(grid)):", "    total += grid[i][i]", "return total")),
                lambda r: (g(r),))
    if kind == "transpose":
        return (_camel("flip", "matrix"), (("grid", "List[List[int]]"),), "List[List[int]]",
                "You are given a matrix grid. Return its transpose (rows become columns).",
                (_b("return [list(col) for col in zip(*grid)]"),
                 _b("rows, cols = len(grid), len(grid[0])", "return [[grid[i][j] for i in range(rows)] for j in range(cols)]")),
                lambda r: (g(r),))
    return (_camel("count", "positive", "cells"), (("grid", "List[List[int]]"),), "int",
            "You are given a matrix grid. Return how many of its cells hold a value greater than zero.",
            (_b("return sum(1 for row in grid for x in row if x > 0)"),
             _b("count = 0", "for row in grid:", "    for x in row:", "        if x > 0:", "            count += 1",
                "return count")),
            lambda r: (g(r),))


def _math(rng):
    kind = rng.choice(["digit_sum", "gcd_all", "fib", "primes", "power_of_two"])
    if kind == "digit_sum":
        return (_camel("digit", "sum"), (("n", "int"),), "int",
                "You are given a non-negative integer n. Return the sum of its decimal digits.",
                (_b("total = 0", "while n > 0:", "    total += n % 10", "    n //= 10", "return total"),
                 _b("return sum(int(d) for d in str(n))")),
                lambda r: (r.randint(0, 99999),))
    if kind == "gcd_all":
        return (_camel("common", "divisor"), (("nums", "List[int]"),), "int",
                "You are given an array of positive integers nums. Return the greatest common divisor of all of them.",
                (_b("g = 0", "for x in nums:", "    g = math.gcd(g, x)", "return g"),
                 _b("g = nums[0]", "for x in nums[1:]:", "    while x:", "        g, x = x, g % x", "return g")),
                lambda r: ([r.choice([2, 3, 5]) * r.randint(1, 9) for _ in range(r.randint(2, 5))],))
    if kind == "fib":
        return (_camel("fib", "number"), (("n", "int"),), "int",
                "Return the n-th Fibonacci number, where F(0) = 0, F(1) = 1 and F(n) = F(n - 1) + F(n - 2).",
                (_b("a, b = 0, 1", "for _ in range(n):", "    a, b = b, a + b", "return a"),
                 _b("if n < 2:", "    return n", "prev, cur = 0, 1", "for _ in range(n - 1):",
                    "    prev, cur = cur, prev + cur", "return cur")),
                lambda r: (r.randint(0, 20),))
    if kind == "primes":
        return (_camel("count", "primes", "below"), (("n", "int"),), "int",
                "You are given an integer n. Return how many prime numbers are strictly smaller than n.",
                (_b("if n < 3:", "    return 0", "sieve = [True] * n", "sieve[0] = sieve[1] = False",
                    "for i in range(2, int(n ** 0.5) + 1):", "    if sieve[i]:", "        for j in range(i * i, n, i):",
                    "            sieve[j] = False", "return sum(sieve)"),
                 _b("count = 0", "for x in range(2, n):", "    if all(x % d for d in range(2, int(x ** 0.5) + 1)):",
                    "        count += 1", "return count")),
                lambda r: (r.randint(0, 60),))
    return (_camel("is", "power", "of", "two"), (("n", "int"),), "bool",
            "You are given an integer n. Return True if n is a power of two, otherwise False.",
            (_b("return n > 0 and n & (n - 1) == 0"),
             _b("if n <= 0:", "    return False", "while n % 2 == 0:", "    n //= 2", "return n == 1")),
            lambda r: (r.choice([1, 2, 6, 8, 12, 16, 64, 100]),))


def _search(rng):
    kind = rng.choice(["index_of", "binary_search", "second_largest", "move_zeros"])
    if kind == "index_of":
        return (_camel("find", "index"), (("nums", "List[int]"), ("target", "int")), "int",
                "You are given an integer array nums and an integer target. Return the first index at which target occurs, or -1.",
                (_b("for i, x in enumerate(nums):", "    if x == target:", "        return i", "return -1"),
                 _b("return nums.index(target) if target in nums else -1")),
                lambda r: (_ints(r, 0, 6), r.randint(0, 6)))
    if kind == "binary_search":
        return (_camel("search", "sorted"), (("nums", "List[int]"), ("target", "int")), "int",
                "You are given a sorted integer array nums and an integer target. Return the index of target in nums, or -1 if it is absent.",
                (_b("lo, hi = 0, len(nums) - 1", "while lo <= hi:", "    mid = (lo + hi) // 2", "    if nums[mid] == target:",
                    "        return mid", "    if nums[mid] < target:", "        lo = mid + 1", "    else:", "        hi = mid - 1",
                    "return -1"),),
                lambda r: (sorted(set(_ints(r, 0, 30, (4, 9)))), r.randint(0, 30)))
    if kind == "second_largest":
        return (_camel("second", "largest"), (("nums", "List[int]"),), "int",
                "You are given an integer array nums. Return the second largest distinct value, or -1 if there are fewer than two distinct values.",
                (_b("vals = sorted(set(nums), reverse=True)", "return vals[1] if len(vals) > 1 else -1"),),
                lambda r: (_ints(r, 0, 9),))
    return (_camel("move", "zeros"), (("nums", "List[int]"),), "List[int]",
            "You are given an integer array nums. Return a new array with all zeros moved to the end while the other elements keep their order.",
            (_b("rest = [x for x in nums if x != 0]", "return rest + [0] * (len(nums) - len(rest))"),
             _b("out = []", "zeros = 0", "for x in nums:", "    if x == 0:", "        zeros += 1", "    else:",
                "        out.append(x)", "return out + [0] * zeros")),
            lambda r: ([r.choice([0, 0, 1, 2, 3, 5]) for _ in range(r.randint(3, 8))],))


FAMILIES: dict[str, Callable] = {
    "filtered_sum": _filtered_sum, "transform": _transform, "string_count": _string_count,
    "string_shape": _string_shape, "running": _running, "counting": _counting, "grid": _grid,
    "math": _math, "search": _search,
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


def draw_task(rng: random.Random, family_name_share: float = 0.3) -> Task:
    """One synthetic task with two worked examples in the statement.

    Most tasks get a random method name (so answers must copy it from the starter code, as the
    RL prompts require); the rest keep the family's descriptive name.
    """
    fam = rng.choice(sorted(FAMILIES))
    name, params, returns, text, bodies, make = FAMILIES[fam](rng)
    if rng.random() >= family_name_share:
        name = random_method_name(rng)
    inputs = tuple(make(rng) for _ in range(2))
    task = Task(fam, name, tuple(params), returns, text, tuple(bodies), inputs)
    examples = []
    for i, args in enumerate(inputs, 1):
        out = task.call(tuple(_copy(a) for a in args))
        examples.append(f"Example {i}:\n\nInput: {_fmt_args(params, args)}\nOutput: {out!r}".replace("'", '"'))
    statement = text + "\n\n" + "\n\n".join(examples)
    return Task(fam, name, tuple(params), returns, statement, tuple(bodies), inputs)


def _copy(a):
    return [list(x) if isinstance(x, list) else x for x in a] if isinstance(a, list) else a
