"""``vgrout build-model {tiny,micro,micro-ci}``: build an offline model ahead of time.

The driver builds both on first use too; this is for building in advance and for reading the
micro model's build report (``build_report.md`` in its folder).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vgrout build-model", description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["tiny", "micro", "micro-ci"], help="which model")
    ap.add_argument("--root", default="svd_cache", help="cache folder the driver reads (its --svd-cache)")
    ap.add_argument("--out", default=None, help="tiny only: write the model here instead of under --root")
    ap.add_argument("--seed", type=int, default=0, help="tiny only: weight-init seed (the tokenizer is data-determined)")
    ap.add_argument("--problems", default=None, help="tiny only: problem JSONL whose text trains the tokenizer")
    a = ap.parse_args(argv)
    if a.kind == "tiny":
        from vgrout_ray.model.tiny import build_tiny_model, ensure_tiny_model

        path = (build_tiny_model(a.out, seed=a.seed, source=a.problems) if a.out
                else ensure_tiny_model(a.root, seed=a.seed, source=a.problems))
        print(f"model: {path}")
        return 0
    from vgrout_ray.micro.build import ensure_micro_model

    path = ensure_micro_model(Path(a.root), a.kind)
    report = json.loads((path / "build_report.json").read_text())
    print((path / "build_report.md").read_text())
    ev = report.get("eval", {})
    print(f"model: {path}")
    print(json.dumps({"compile_rate": ev.get("compile_rate"), "max_prior_hack_rate": ev.get("max_hack_rate"),
                      "build_seconds": report.get("build_seconds")}))
    return 0
