"""Compare two runs' rows.parquet column by column, timing columns aside.

    python tools/compare_rows.py RUN_DIR_A RUN_DIR_B [--dropped COL,...] [--added COL,...]

Used to show that a refactor leaves a seeded run's science unchanged: every column that is not
wall-clock (generation, grading, backward, sync seconds and the rates made from them) must be
equal, NaN where NaN. A refactor that removes or adds columns names them (``--dropped`` /
``--added``); any other difference in the column sets fails. Exits 1 naming what differs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vgrout_ray.reporting.parquet import is_timing_column  # noqa: E402


def differing(a: pd.DataFrame, b: pd.DataFrame, dropped: set[str] = frozenset(),
              added: set[str] = frozenset()) -> list[str]:
    if len(a) != len(b):
        return [f"rows {len(a)} vs {len(b)}"]
    out = []
    only_a, only_b = set(a.columns) - set(b.columns), set(b.columns) - set(a.columns)
    if only_a - set(dropped):
        out.append(f"only in A: {sorted(only_a - set(dropped))}")
    if only_b - set(added):
        out.append(f"only in B: {sorted(only_b - set(added))}")
    for c in [c for c in a.columns if c in b.columns]:
        if is_timing_column(c):
            continue
        try:
            same = np.array_equal(a[c].to_numpy(float), b[c].to_numpy(float), equal_nan=True)
        except (TypeError, ValueError):
            same = bool((a[c].astype(str) == b[c].astype(str)).all())
        if not same:
            out.append(c)
    return out


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--dropped", default="", help="comma-separated columns B no longer writes")
    ap.add_argument("--added", default="", help="comma-separated columns only B writes")
    args = ap.parse_args(argv)
    a, b = (pd.read_parquet(d / "rows.parquet") for d in (args.run_a, args.run_b))
    names = lambda s: {c for c in s.split(",") if c}  # noqa: E731
    bad = differing(a, b, names(args.dropped), names(args.added))
    shared = len(set(a.columns) & set(b.columns))
    print(f"{len(a)} rows; {shared} shared columns; differing (timing aside): {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
