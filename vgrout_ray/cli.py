"""``vgrout``: one command line for everything the project does (``python -m vgrout_ray`` is the same).

Each subcommand hands the rest of the line to the module that owns the work, so ``vgrout X --help``
is that module's own help. ``python -m vgrout_ray.driver`` stays as the training entry point that
``ray job submit`` runs.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    target: str  # "module:function"; the function takes argv and returns an exit code
    summary: str


COMMANDS: dict[str, Command] = {
    "train": Command("vgrout_ray.driver:main", "one training run: vgrout train {smoke,micro,fast,full} [--flags]"),
    "sweep": Command("vgrout_ray.sweep.runner:main", "arms x seeds as concurrent runs, one comparison"),
    "grade": Command("vgrout_ray.grading.cli:main", "grade completions from a JSONL file under every loophole mode"),
    "data": Command("vgrout_ray.data.leetcode:main", "build benchmark rows from LeetCodeDataset (a path or hf:ID)"),
    "pairs": Command("vgrout_ray.data.pairsets:main", "build a hack/clean pairset from a teacher pool"),
    "build-model": Command("vgrout_ray.model.build_cli:main", "build the tiny or micro model offline"),
    "eval-micro": Command("vgrout_ray.micro.evaluate:main", "a micro model's solve / hack / compile rate before RL"),
    "calibrate-micro": Command("vgrout_ray.micro.calibrate:main",
                               "per-prompt base solve on the micro pool, which picks micro:*-cal"),
    "report": Command("vgrout_ray.reporting.run_report:main", "one markdown page for a run directory"),
    "plots": Command("vgrout_ray.reporting.plots:main", "training-dynamics figures across arms and seeds"),
    "schema": Command("vgrout_ray.reporting.parquet:main", "print the rows/rollouts Parquet schemas"),
    "plan": Command("vgrout_ray.cluster.plan:main", "check a deploy manifest's run (paths, fit, GPU memory) before starting it"),
    "head": Command("vgrout_ray.cluster.ray_cluster:head_main", "start a Ray head for job submission on this machine"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: vgrout COMMAND [ARGS...]   (vgrout COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        print(f"vgrout: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, _, func = cmd.target.partition(":")
    rc = getattr(importlib.import_module(module), func)(rest)
    return int(rc or 0)
