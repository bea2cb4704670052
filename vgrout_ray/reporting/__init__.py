"""Reporting: what a researcher reads during and after a run.

- ``table``: loguru sinks and the per-step table (seed 000's columns).
- ``metrics``: ``step_metrics`` (reward quantiles, components, lengths, clip ratios, throughput).
- ``parquet``: ``RunTables`` (rows.parquet / rollouts.parquet, kill-safe) and their readers.
- ``evidence``: CSVs, PNGs and sample trajectories under ``<run>/evidence/`` (background writer).
- ``sinks``: optional W&B / TensorBoard mirrors.
- ``run_report``: one markdown page per run; ``plots``: dynamics across arms and seeds.

Submodules are imported on use (matplotlib is heavy), not from here.
"""
