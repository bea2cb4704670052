"""Run telemetry: step table, metrics, Parquet logs, evidence."""
