"""Static reading of a completion and of the problem's asserts (no code is run here)."""
from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass

# A fenced block, ```python or bare ```, whose closing fence may be missing at the end.
_FENCE = re.compile(r"```(?:python)?\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str | None:
    """The code of every fenced block, stripped and joined by a blank line; None when there is none."""
    blocks = [b.strip() for b in _FENCE.findall(text)]
    blocks = [b for b in blocks if b]
    return "\n\n".join(blocks) if blocks else None


def compiles(code: str) -> bool:
    """Whether ``code`` compiles as a module. Compiling runs nothing, so it is safe on the host.

    Any failure counts: a SyntaxError, but also null bytes (ValueError) or nesting deep enough
    to exhaust the compiler (RecursionError / MemoryError).
    """
    try:
        compile(code, "<completion>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def find_function(code: str, name: str) -> str | None:
    """Source (re-rendered by ast) of the first ``def name`` found walking the tree breadth-first."""
    tree = _parse(code)
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            try:
                return ast.unparse(node)
            except (RecursionError, ValueError):
                return None
    return None


def enclosing_class(code: str, name: str) -> str | None:
    """Name of the first class whose body directly defines ``name``; None when only top level (or absent)."""
    tree = _parse(code)
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, ast.FunctionDef) and child.name == name:
                    return node.name
    return None


@dataclass(frozen=True)
class TestCase:
    """One assert of a problem, split so the strict oracle can compare values out of process.

    kind ``eq``: ``assert <actual> == <expected>``; kind ``list``/``tree``:
    ``assert is_same_list|is_same_tree(<actual>, <expected>)``; kind ``other``: anything else,
    run verbatim (``actual`` holds the whole statement, ``expected`` is empty).
    """

    kind: str
    actual: str
    expected: str
    source: str


_STRUCT_HELPERS = {"is_same_list": "list", "is_same_tree": "tree"}


@functools.lru_cache(maxsize=65536)
def split_test(source: str) -> TestCase:
    """Classify one assert string of a problem's test list (cached: every completion of a problem
    reuses its asserts, and parsing ~100 of them per completion was most of planning's cost)."""
    tree = _parse(source)
    if tree is not None and len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
        test = tree.body[0].test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            return TestCase("eq", ast.unparse(test.left), ast.unparse(test.comparators[0]), source)
        if (isinstance(test, ast.Call) and isinstance(test.func, ast.Name)
                and test.func.id in _STRUCT_HELPERS and len(test.args) == 2 and not test.keywords):
            return TestCase(_STRUCT_HELPERS[test.func.id], ast.unparse(test.args[0]),
                            ast.unparse(test.args[1]), source)
    return TestCase("other", source, "", source)
