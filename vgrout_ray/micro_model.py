"""``python -m vgrout_ray.micro_model build [--name micro] [--root svd_cache]``: build (or find) the
micro model and print where it is and what its build report says.

The driver builds it on first use too (``--model micro``); this command is for doing it ahead
of time and for reading the report (``build_report.md`` in the model folder).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vgrout_ray.micro_model", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the micro model (cached by content hash) and print its report")
    b.add_argument("--name", default="micro", help="micro (the preset's model) or micro-ci (CI size)")
    b.add_argument("--root", default="svd_cache", help="cache folder (the driver's --svd-cache)")
    args = ap.parse_args(argv)
    from .micro.build import ensure_micro_model

    path = ensure_micro_model(Path(args.root), args.name)
    report = json.loads((path / "build_report.json").read_text())
    print((path / "build_report.md").read_text())
    ev = report.get("eval", {})
    print(f"model: {path}")
    print(json.dumps({"compile_rate": ev.get("compile_rate"), "max_prior_hack_rate": ev.get("max_hack_rate"),
                      "build_seconds": report.get("build_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
