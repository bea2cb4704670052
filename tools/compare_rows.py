"""Compare two runs' rows.parquet column by column, timing columns aside.

    python tools/compare_rows.py RUN_DIR_A RUN_DIR_B

Used to show that a refactor leaves a seeded run's science unchanged: every column that is not
wall-clock (generation, grading, backward, sync seconds and the rates made from them) must be
equal, NaN where NaN. Exits 1 naming the columns that differ.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vgrout_ray.reporting.parquet import is_timing_column  # noqa: E402


def differing(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return [f"shape {a.shape} vs {b.shape}"]
    out = []
    for c in a.columns:
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
    a, b = (pd.read_parquet(Path(d) / "rows.parquet") for d in argv[:2])
    bad = differing(a, b)
    print(f"{len(a)} rows x {len(a.columns)} columns; differing (timing aside): {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
