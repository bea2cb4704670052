"""Shape rules of the package: no import cycle between its modules (every import, the ones inside
functions too: a lazy import hides a cycle, it does not remove it), folders by role, one
``__main__`` besides the driver's, and no function body over ~100 lines."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vgrout_ray"
MAX_FUNCTION_LINES = 100


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (never run, so never part of a cycle)."""
    skip: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def _imports(path: Path, mod: str, known: set[str]) -> set[str]:
    """Package modules that ``mod`` imports anywhere in its body (functions included)."""
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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
    return {m: _imports(p, m, set(files)) for m, p in files.items()}


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
    assert "vgrout_ray.rollout.actor" not in graph["vgrout_ray.rollout.vllm_engine"]
    assert "vgrout_ray.rollout.actor" not in graph["vgrout_ray.rollout.hf_engine"]
    assert graph["vgrout_ray.rollout.base"].isdisjoint(
        {"vgrout_ray.rollout.actor", "vgrout_ray.rollout.hf_engine", "vgrout_ray.rollout.vllm_engine"})


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


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "a.py").write_text("import p.b\n")
    (pkg / "b.py").write_text("def f():\n    from p import a\n")
    known = {"p.a", "p.b", "p"}
    graph = {m: _imports(pkg / f"{m[2:]}.py", m, known) for m in ("p.a", "p.b")}
    assert _cycle(graph) == ["p.a", "p.b", "p.a"]


ROLE_FOLDERS = {"algo", "cluster", "data", "env", "grading", "learner", "micro", "model", "reporting", "rewards", "rollout",
                "run", "sandbox", "sweep"}
TOP_LEVEL_MODULES = {"__init__", "__main__", "cli", "config", "driver", "types", "util", "arms"}


def test_the_package_is_folders_by_role_with_few_top_level_modules():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PKG.glob("*.py")}
    assert folders == ROLE_FOLDERS, folders ^ ROLE_FOLDERS
    assert modules <= TOP_LEVEL_MODULES, modules - TOP_LEVEL_MODULES


def test_one_command_line_entry_point():
    """``vgrout`` / ``python -m vgrout_ray`` is the command line; only the driver (what ``ray job
    submit`` runs) and the sandbox runner (the program inside a sandbox) keep a ``__main__`` block."""
    mains = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                   if any(isinstance(n, ast.If) and "__name__" in ast.unparse(n.test)
                          for n in ast.parse(p.read_text()).body))
    assert mains == ["driver.py", "sandbox/runner.py"], mains


def test_actor_resources_are_written_in_one_place():
    """Only cluster/placement.py says how many GPUs an actor takes; the actors' .options, the fit
    check, the plan and the sweep all ask it."""
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if p.name != "placement.py" and "num_gpus=" in p.read_text()]
    assert not offenders, offenders
