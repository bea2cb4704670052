"""Shape rules of the package (issue 11): no import cycle between its modules (module-level
imports, the ones that run at import time) and no function body over ~100 lines."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vgrout_ray"
MAX_FUNCTION_LINES = 100


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, mod: str, known: set[str]) -> set[str]:
    """Package modules imported at module level (inside ``if TYPE_CHECKING`` excluded)."""
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n and n != mod:
                out.add(n)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    return {m: _top_level_imports(p, m, set(files)) for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle_between_package_modules():
    graph = _graph()
    # parents import their children's names only through __init__; a package importing one of its
    # own submodules at top level is not a cycle unless that submodule imports the package back
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_checker_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_rollout_engines_do_not_import_each_other():
    graph = _graph()
    assert "vgrout_ray.actors.rollout" not in graph["vgrout_ray.actors.rollout_vllm"]
    assert "vgrout_ray.actors.rollout" not in graph["vgrout_ray.actors.rollout_hf"]
    assert graph["vgrout_ray.actors.rollout_base"].isdisjoint(
        {"vgrout_ray.actors.rollout", "vgrout_ray.actors.rollout_hf", "vgrout_ray.actors.rollout_vllm"})


def test_no_function_over_a_hundred_lines():
    long = []
    for p in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_the_run_loop_class_stays_short():
    tree = ast.parse((PKG / "run" / "loop.py").read_text())
    run = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Run")
    assert run.end_lineno - run.lineno + 1 <= 300
