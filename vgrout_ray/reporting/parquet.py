"""rows.parquet and rollouts.parquet: the run's tables, written so a kill loses nothing.

A Parquet file is only readable once its footer is written, so an open
``ParquetWriter`` killed mid-run leaves an unreadable file. Instead:

- ``rows.parquet`` (one row per step, small) is rewritten whole after every step
  into a temporary file that is fsynced and then ``os.replace``d over the old one.
  At any instant the path holds a complete file up to the last finished step.
- rollouts (large) go to one file per step under ``rollouts.parts/``, each
  written the same atomic way. ``compact()`` (every ``compact_every`` steps, on
  ``close()`` and when a run dir is reopened) folds the parts into
  ``rollouts.parquet`` (one row group per step) and then deletes them. Readers
  take ``rollouts.parquet`` plus every part whose step it does not hold yet, so a
  kill at any point, compaction included, neither loses nor duplicates a step.

Schemas are declared (``ROW_SCHEMA``, ``ROLLOUT_SCHEMA``); row keys the schema does
not know are appended with an inferred type, unknown rollout fields go to the JSON
column ``extra``. ``(n, d)`` fractions are stored as ``<k>_n`` / ``<k>_d`` int columns
and joined back into tuples by ``read_rows``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vgrout_ray.env.modes import MODE_CODE
from vgrout_ray.util import atomic_path, warn_once
from vgrout_ray.reporting.metrics import METRIC_DOCS, MODE_KEYS

# 2: one name per value (schema 1 also wrote qmass/thi/tlo, grad_norm, time_<phase> beside
# q_egy/tau, gn and the seed's timing columns)
SCHEMA_VERSION = "2"
ROWS_FILE = "rows.parquet"
ROLLOUTS_FILE = "rollouts.parquet"
PARTS_DIR = "rollouts.parts"
_COMPRESSION = "zstd"

# ----------------------------------------------------------------- row schema
# Kinds: "frac" (two int64 columns), "int", "float", "str", "bool".
_SEED_ROW: list[tuple[str, str]] = [
    ("step", "int"), ("ref_eq", "float"), ("rew", "float"), ("rew_s", "float"), ("sprd", "str"),
    ("N", "int"), ("gt_s", "frac"), ("gt_t", "frac"), ("hack_s", "frac"), ("hack_t", "frac"),
    *[(f"hk_{c}", "int") for c in MODE_CODE.values()],
    ("hack_s_E", "frac"), ("hack_s_D", "frac"), ("hack_s_A", "frac"), ("hack_s_B", "frac"),
    ("lp_s", "float"), ("lp_t", "float"), ("loss", "float"), ("gn", "float"), ("q_egy", "float"),
    ("tau", "float"), ("hkgap", "float"), ("resid", "float"), ("lr", "float"),
    ("cos_pre", "float"), ("cos_pre_s", "float"), ("cos_pre_t", "float"), ("cos_post", "float"),
    ("fired", "float"), ("refr", "str"), ("hack_deploy", "float"), ("solve_deploy", "float"),
    ("hack_abl", "frac"), ("solve_abl", "frac"),
    ("gen", "float"), ("fb", "float"), ("t_rew", "float"), ("sec", "float"),
]
# route2 gate diagnostics the table reads (docs/design.md#per-step-table).
_GATE_ROW: list[tuple[str, str]] = [
    ("auroc", "float"), ("cos", "float"), ("keep", "float"), ("rout", "float"), ("stale", "float"),
]
# The learner's token read-outs, as it computed them over the step's completion tokens.
_LEARNER_ROW: list[tuple[str, str]] = [
    ("kl", "float"), ("clip_low", "float"), ("clip_high", "float"), ("clip_region", "float"),
]
# Sampler-vs-learner drift (docs/design.md#sampler-mismatch: sampling log-probs are returned and their mismatch with
# the learner's is recorded every step) and the optional TIS correction.
_SAMPLER_ROW: list[tuple[str, str]] = [
    ("mismatch_kl", "float"), ("mismatch_max_abs_dlogp", "float"), ("mismatch_tokens", "int"),
    ("tis_mean_w", "float"), ("tis_capped_frac", "float"),
]
# Bookkeeping: the δS version, the sync, the other phases' seconds, what was skipped.
_RUN_ROW: list[tuple[str, str]] = [
    ("version", "int"), ("sync_bytes", "int"), ("sync_s", "float"), ("eval_s", "float"), ("refresh_s", "float"),
    ("n_skipped", "int"), ("n_zerovar", "int"), ("dsh_norm", "float"),
]
# Student hacks split by whether they copy a teacher completion (vgrout_ray/env/copying.py).
_COPY_ROW: list[tuple[str, str]] = [("hack_s_copy", "frac"), ("hack_s_novel", "frac")]
# What each seed-003 / gate row field holds (the metric keys are documented in METRIC_DOCS).
ROW_DOCS: dict[str, str] = {
    "step": "GRPO optimizer step (0-based)",
    "ref_eq": "cumulative generations / 256: the step in upstream-reference units",
    "rew": "mean reward over every rollout that entered the loss (student and teacher)",
    "rew_s": "mean reward of the student rollouts",
    "sprd": "'T' when the step's rewards had any spread, else 'F'",
    "N": "rollouts that entered the loss (student + teacher)",
    "gt_s": "student rollouts the strict oracle calls correct, of student rollouts",
    "gt_t": "teacher rollouts the oracle calls correct, of teacher rollouts",
    "hack_s": "student rollouts flagged as hacks, of student rollouts (the headline)",
    "hack_t": "teacher rollouts flagged as hacks, of teacher rollouts",
    "hk_<code>": "student hacks of the mode with that code this step (null when the run lacks the mode)",
    "hack_s_E": "student rollouts flagged by detector E (run_tests passes the response's own Solution)",
    "hack_s_D": "student rollouts flagged by detector D (run_tests fails the canonical solution)",
    "hack_s_A": "student rollouts flagged by any half_A detector",
    "hack_s_B": "student rollouts flagged by a half_B detector and no half_A one",
    "hack_s_copy": "student hacks that copy a teacher completion of their problem (≥ 50 % of their code's "
                   "whitespace-insensitive token 8-grams occur in the group's teacher rows or the teacher pool "
                   "for the problem; vgrout_ray/env/copying.py), of student rollouts",
    "hack_s_novel": "student hacks that are not such a copy, of student rollouts (hack_s = copy + novel)",
    "lp_s": "mean log-prob of student completions", "lp_t": "mean log-prob of teacher completions",
    "loss": "GRPO loss of the step", "gn": "pre-clip grad norm", "q_egy": "quarantine energy share",
    "tau": "route2 threshold (mean over modules)", "hkgap": "route2 anchor hack-clean cosine gap",
    "resid": "route2 gate residual share", "lr": "learning rate",
    "cos_pre": "cos(grad, v_hack) before the intervention",
    "cos_pre_s": "same, student-only gradient (route2: with its v_grad)",
    "cos_pre_t": "same, teacher-only gradient (route2: with its v_grad)",
    "cos_post": "cos(grad, v_hack) after the intervention",
    "fired": "share of modules whose erase/route gate fired", "refr": "'-', or what a v_hack refresh did this step",
    "hack_deploy": "held-out deploy-eval hack rate (NaN except on eval steps)",
    "solve_deploy": "held-out deploy-eval solve rate (NaN except on eval steps)",
    "hack_abl": "hacks in the ablated (δS_hack zeroed) rollout slice, of that slice",
    "solve_abl": "oracle-correct rollouts in the ablated slice, of that slice",
    "gen": "generation seconds", "fb": "forward/backward seconds", "t_rew": "grading seconds",
    "sec": "wall seconds of the whole step",
    "auroc": "route2 gate AUROC vs hack labels on positively reinforced rollouts",
    "cos": "route2 mean per-rollout gate cosine",
    "keep": "route2 share of rollouts kept", "rout": "route2 share of rollouts routed",
    "stale": "steps since v_hack / v_grad was refreshed (NaN when the arm has none)",
    "mismatch_kl": "sampler-vs-learner mismatch: mean per-token K3 estimate of KL(sampler ‖ learner π_old) on the "
                   "sampled tokens of the student rows (training view; the ablated slice excluded); ≈0 when the "
                   "rollout engine is the policy the learner scores",
    "mismatch_max_abs_dlogp": "max |log π_old − log sampler| over those tokens",
    "mismatch_tokens": "tokens the mismatch was measured on",
    "tis_mean_w": "--tis-cap: mean truncated importance weight min(π_old/sampler, cap) (NaN when off)",
    "tis_capped_frac": "--tis-cap: share of those tokens whose weight hit the cap (NaN when off)",
    "kl": "mean per-token K3 estimate of KL(π‖π_ref) over completion tokens (NaN when beta = 0)",
    "clip_low": "share of completion tokens with ratio < 1-clip and advantage < 0 (PPO lower clip active)",
    "clip_high": "share of completion tokens with ratio > 1+clip and advantage > 0 (PPO upper clip active)",
    "clip_region": "share of completion tokens in either clipped region (0 at one inner step, where ratio = 1)",
    "version": "δS version the step's rollouts were generated with",
    "sync_bytes": "bytes of the δS sync to the rollout actors after the update",
    "sync_s": "seconds of that sync", "eval_s": "seconds of the step's deploy eval (0 when none)",
    "refresh_s": "seconds of the step's v_hack refresh (0 when none)",
    "n_skipped": "prompts dropped this step (over the token budget)",
    "n_zerovar": "prompt groups whose rewards were all equal (no GRPO signal)",
    "dsh_norm": "‖δS_hack‖ after the step (0 unless the arm routes)",
}
_INT_METRICS = {"n_rollouts", "reward_n", "n_groups", "n_zero_std_groups", "grad_errors"}


def _metric_row() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key in METRIC_DOCS:
        if "<code>" in key:
            out += [(key.replace("<code>", c), "int") for c in MODE_KEYS.values()]
        else:
            out.append((key, "int" if key in _INT_METRICS else "float"))
    return out


ROW_FIELDS: list[tuple[str, str]] = (_SEED_ROW + _GATE_ROW + _LEARNER_ROW + _SAMPLER_ROW + _COPY_ROW + _RUN_ROW
                                     + _metric_row())
_ROW_KIND = dict(ROW_FIELDS)

_ARROW = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}


def _fields_for(key: str, kind: str) -> list[pa.Field]:
    if kind == "frac":
        return [pa.field(f"{key}_n", pa.int64()), pa.field(f"{key}_d", pa.int64())]
    return [pa.field(key, _ARROW[kind])]


def _schema(fields: Sequence[tuple[str, str]]) -> pa.Schema:
    cols = [f for k, kind in fields for f in _fields_for(k, kind)]
    fracs = [k for k, kind in fields if kind == "frac"]
    return pa.schema(cols, metadata={"vgrout.schema_version": SCHEMA_VERSION,
                                     "vgrout.fractions": json.dumps(fracs)})


ROW_SCHEMA: pa.Schema = _schema(ROW_FIELDS)

# Wall-clock columns: seconds and rates that differ between two runs of the same seed. Everything
# else in a row is science and must reproduce exactly (resume, refactors, tools/compare_rows.py).
TIMING_COLUMNS = frozenset({"gen", "fb", "t_rew", "sec", "sync_s", "eval_s", "refresh_s"})


def is_timing_column(name: str) -> bool:
    # time_<phase>: schema 1 duplicated the phase seconds under these names
    return name in TIMING_COLUMNS or name.startswith("time_") or name.endswith("_per_s")

# ------------------------------------------------------------- rollout schema
ROLLOUT_FIELDS: list[tuple[str, pa.DataType]] = [
    ("step", pa.int64()), ("p_idx", pa.int64()), ("gi", pa.int64()), ("problem_id", pa.string()),
    ("env_mode", pa.string()), ("prompt", pa.string()), ("text", pa.string()), ("reward", pa.float64()),
    ("format_ok", pa.bool_()), ("can_compile", pa.bool_()), ("gt_pass", pa.bool_()), ("hacked", pa.bool_()),
    ("hacked_wrong_tests", pa.bool_()), ("hacked_loophole_used", pa.bool_()), ("gt_correct", pa.bool_()),
    ("passed", pa.bool_()), ("exploited", pa.bool_()), ("mechanism", pa.string()), ("error", pa.string()),
    ("comp_len", pa.int64()), ("prompt_len", pa.int64()), ("finished", pa.bool_()), ("is_ablated", pa.bool_()),
    ("version", pa.int64()), ("source", pa.string()), ("extra", pa.string()),
]
ROLLOUT_SCHEMA: pa.Schema = pa.schema([pa.field(k, t) for k, t in ROLLOUT_FIELDS],
                                      metadata={"vgrout.schema_version": SCHEMA_VERSION})
_ROLLOUT_KEYS = [k for k, _ in ROLLOUT_FIELDS]


# ------------------------------------------------------------------- coercion
def _warn_once(key: str, msg: str) -> None:
    warn_once(f"parquet:{key}", msg)


def _scalar(v: Any) -> Any:
    item = getattr(v, "item", None)
    if callable(item) and not isinstance(v, (str, bytes, list, tuple, dict)):
        try:
            return item()
        except (TypeError, ValueError):
            return v
    return v


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _to_int(key: str, v: Any) -> int | None:
    v = _scalar(v)
    if _is_missing(v):
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    _warn_once(key, f"parquet: '{key}' expects an int, got {v!r}; stored null")
    return None


def _to_float(key: str, v: Any) -> float | None:
    v = _scalar(v)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        _warn_once(key, f"parquet: '{key}' expects a float, got {v!r}; stored null")
        return None


def _to_str(v: Any) -> str | None:
    v = _scalar(v)
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return str(v)


def _to_bool(key: str, v: Any) -> bool | None:
    v = _scalar(v)
    if _is_missing(v):
        return None
    if isinstance(v, (bool, int, float)):
        return bool(v)
    _warn_once(key, f"parquet: '{key}' expects a bool, got {v!r}; stored null")
    return None


def _to_frac(key: str, v: Any) -> tuple[int | None, int | None]:
    v = _scalar(v)
    if _is_missing(v):
        return None, None
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return _to_int(key, v[0]), _to_int(key, v[1])
    _warn_once(key, f"parquet: '{key}' expects an (n, d) fraction, got {v!r}; stored null")
    return None, None


def _infer_kind(values: Iterable[Any]) -> str:
    """Type of a row key the schema does not declare, from every value seen."""
    vals = [_scalar(v) for v in values if not _is_missing(_scalar(v))]
    if not vals:
        return "float"
    if all(isinstance(v, bool) for v in vals):
        return "bool"
    if all(isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(_scalar(x), int) for x in v)
           for v in vals):
        return "frac"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "float"
    return "str"


def _row_fields(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """ROW_FIELDS plus every undeclared key of ``rows`` with its inferred kind."""
    generated = {f.name for f in ROW_SCHEMA}
    keys = {k for r in rows for k in r}
    clash = sorted(keys & (generated - set(_ROW_KIND)))
    if clash:
        _warn_once(f"clash{clash}", f"parquet: row keys {clash} collide with fraction columns; not stored")
    extra_keys = sorted(keys - set(_ROW_KIND) - generated)
    return list(ROW_FIELDS) + [(k, _infer_kind(r.get(k) for r in rows)) for k in extra_keys]


def _fits(kind: str, v: Any) -> bool:
    """Can ``v`` go into an existing column of ``kind`` without changing its inferred type?"""
    v = _scalar(v)
    if _is_missing(v):
        return True
    if kind == "str":
        return True
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "frac":
        return isinstance(v, (tuple, list)) and len(v) == 2
    return False


def _rows_table(rows: Sequence[Mapping[str, Any]], fields: list[tuple[str, str]]) -> pa.Table:
    schema = _schema(fields)
    cols: dict[str, list] = {f.name: [] for f in schema}
    for r in rows:
        for key, kind in fields:
            v = r.get(key)
            if kind == "frac":
                n, d = _to_frac(key, v)
                cols[f"{key}_n"].append(n)
                cols[f"{key}_d"].append(d)
            elif kind == "int":
                cols[key].append(_to_int(key, v))
            elif kind == "float":
                cols[key].append(_to_float(key, v))
            elif kind == "bool":
                cols[key].append(_to_bool(key, v))
            else:
                cols[key].append(_to_str(v))
    return pa.Table.from_pydict(cols, schema=schema)


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (driver dicts, fractions as tuples) -> Arrow table on ROW_SCHEMA + inferred extras."""
    return _rows_table(rows, _row_fields(rows))


def rollouts_to_table(records: Sequence[Mapping[str, Any]], step: int | None = None) -> pa.Table:
    """Rollout records -> Arrow table on ROLLOUT_SCHEMA; unknown fields -> ``extra`` (JSON)."""
    cols: dict[str, list] = {k: [] for k in _ROLLOUT_KEYS}
    for rec in records:
        for key, typ in ROLLOUT_FIELDS:
            if key == "extra":
                continue
            v = rec.get(key)
            if key == "step" and v is None:
                v = step
            if typ == pa.int64():
                cols[key].append(_to_int(key, v))
            elif typ == pa.float64():
                cols[key].append(_to_float(key, v))
            elif typ == pa.bool_():
                cols[key].append(_to_bool(key, v))
            else:
                cols[key].append(_to_str(v))
        extra = {k: v for k, v in rec.items() if k not in _ROLLOUT_KEYS}
        cols["extra"].append(json.dumps(extra, default=str) if extra else None)
    return pa.Table.from_pydict(cols, schema=ROLLOUT_SCHEMA)


# ---------------------------------------------------------------- file helpers
def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write a complete Parquet file next to ``path`` and rename it into place."""
    with atomic_path(path, fsync=True) as tmp:
        pq.write_table(table, tmp, compression=_COMPRESSION)


def _part_path(parts: Path, step: int) -> Path:
    return parts / f"step_{step:07d}.parquet"


def _part_step(p: Path) -> int:
    return int(p.stem.split("_", 1)[1])


def _list_parts(parts: Path) -> list[Path]:
    if not parts.is_dir():
        return []
    return sorted((p for p in parts.glob("step_*.parquet")), key=_part_step)


def _compacted_steps(path: Path) -> set[int]:
    if not path.exists():
        return set()
    col = pq.read_table(path, columns=["step"]).column("step")
    return set(pc.unique(col).to_pylist()) - {None}


# --------------------------------------------------------------------- readers
def _join_fractions(table: pa.Table) -> list[dict]:
    meta = table.schema.metadata or {}
    fracs = json.loads(meta.get(b"vgrout.fractions", b"[]"))
    out = []
    for r in table.to_pylist():
        for k in fracs:
            n, d = r.pop(f"{k}_n", None), r.pop(f"{k}_d", None)
            r[k] = None if n is None and d is None else (n, d)
        out.append(r)
    return out


def read_rows(run_dir: str | Path) -> list[dict]:
    """Per-step rows as dicts, fractions back as (n, d) tuples; [] when there is no file."""
    path = Path(run_dir) / ROWS_FILE
    if not path.exists():
        return []
    return _join_fractions(pq.read_table(path))


def read_rollouts_table(run_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Every stored rollout (compacted file + parts not yet folded in), ordered by step."""
    run_dir = Path(run_dir)
    cols = None if columns is None else list(dict.fromkeys(["step", *columns]))
    for attempt in range(5):  # a concurrent compaction may delete a part between list and read
        try:
            main = run_dir / ROLLOUTS_FILE
            tables = []
            have: set[int] = set()
            if main.exists():
                t = pq.read_table(main, columns=cols)
                tables.append(t)
                have = set(pc.unique(t.column("step")).to_pylist()) - {None}
            for p in _list_parts(run_dir / PARTS_DIR):
                if _part_step(p) not in have:
                    tables.append(pq.read_table(p, columns=cols))
            if not tables:
                schema = ROLLOUT_SCHEMA if cols is None else pa.schema([ROLLOUT_SCHEMA.field(c) for c in cols])
                return schema.empty_table()
            t = pa.concat_tables(tables)
            return t.take(pc.sort_indices(t, sort_keys=[("step", "ascending")]))
        except FileNotFoundError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def read_rollouts(run_dir: str | Path, columns: list[str] | None = None) -> list[dict]:
    """Rollout records as dicts (``extra`` decoded back into top-level keys)."""
    out = []
    for r in read_rollouts_table(run_dir, columns).to_pylist():
        extra = r.pop("extra", None)
        if extra:
            for k, v in json.loads(extra).items():
                r.setdefault(k, v)
        out.append(r)
    return out


# ---------------------------------------------------------------------- writer
class RunTables:
    """Incremental writer of one run's rows.parquet and rollouts.parquet.

    ``append_step(row, rollouts)`` after each completed step; ``truncate_to(step)`` when
    resuming from a checkpoint; ``close()`` at the end (folds the per-step parts).
    """

    def __init__(self, run_dir: str | Path, compact_every: int = 50) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.parts = self.run_dir / PARTS_DIR
        self.compact_every = compact_every
        self._clean_tmp()
        self._rows: list[dict] = read_rows(self.run_dir)
        self._fields = _row_fields(self._rows)
        self._table = _rows_table(self._rows, self._fields)
        self.compact()

    @property
    def rows_path(self) -> Path:
        return self.run_dir / ROWS_FILE

    @property
    def rollouts_path(self) -> Path:
        return self.run_dir / ROLLOUTS_FILE

    @property
    def last_step(self) -> int:
        """Step of the last row written, -1 for none."""
        return int(self._rows[-1]["step"]) if self._rows else -1

    def _clean_tmp(self) -> None:
        # Left by a writer killed mid-write; never complete, never read.
        for d in (self.run_dir, self.parts):
            if d.is_dir():
                for p in d.glob(".*.tmp-*"):
                    p.unlink(missing_ok=True)

    def append_step(self, row: Mapping[str, Any], rollouts: Sequence[Mapping[str, Any]] = ()) -> None:
        """Persist one completed step: its rollouts first, then its row (the commit point)."""
        step = _to_int("step", row.get("step"))
        if step is None:
            raise ValueError("append_step: row has no integer 'step'")
        if step <= self.last_step:
            raise ValueError(f"append_step: step {step} <= last written step {self.last_step}; "
                             "call truncate_to(step - 1) first when resuming")
        if rollouts:
            bad = {r.get("step") for r in rollouts if r.get("step") not in (None, step)}
            if bad:
                _warn_once("rollout-step", f"parquet: rollouts of step {step} carry step {sorted(map(str, bad))}")
            self.parts.mkdir(exist_ok=True)
            atomic_write_table(rollouts_to_table(rollouts, step=step), _part_path(self.parts, step))
        self._rows.append(dict(row))
        known = dict(self._fields)
        generated = {f.name for f in ROW_SCHEMA}
        if all((k in known and _fits(known[k], v)) or (k in generated and k not in _ROW_KIND)
               for k, v in row.items()):
            # usual case: same columns as before, convert just this row (O(1) per step, not O(steps))
            self._table = pa.concat_tables([self._table, _rows_table([row], self._fields)])
            if self._table.column(0).num_chunks > 64:
                self._table = self._table.combine_chunks()
        else:
            self._fields = _row_fields(self._rows)
            self._table = _rows_table(self._rows, self._fields)
        atomic_write_table(self._table, self.rows_path)
        if self.compact_every and len(_list_parts(self.parts)) >= self.compact_every:
            self.compact()

    def compact(self) -> None:
        """Fold rollouts.parts/ into rollouts.parquet (one row group per step), then drop the parts."""
        parts = _list_parts(self.parts)
        if not parts:
            return
        have = _compacted_steps(self.rollouts_path)
        with atomic_path(self.rollouts_path, fsync=True) as tmp, \
                pq.ParquetWriter(tmp, ROLLOUT_SCHEMA, compression=_COMPRESSION) as w:
            if self.rollouts_path.exists():
                pf = pq.ParquetFile(self.rollouts_path)
                for i in range(pf.num_row_groups):
                    w.write_table(pf.read_row_group(i).cast(ROLLOUT_SCHEMA))
            for p in parts:
                if _part_step(p) not in have:
                    w.write_table(pq.read_table(p).cast(ROLLOUT_SCHEMA))
        for p in parts:  # every one of them is now inside rollouts.parquet
            p.unlink(missing_ok=True)

    def truncate_to(self, step: int) -> None:
        """Drop every row and rollout with step > ``step`` (resume from a step-``step`` checkpoint)."""
        self._rows = [r for r in self._rows if int(r["step"]) <= step]
        self._fields = _row_fields(self._rows)
        self._table = _rows_table(self._rows, self._fields)
        atomic_write_table(self._table, self.rows_path)
        self.compact()
        if self.rollouts_path.exists():
            pf = pq.ParquetFile(self.rollouts_path)
            with atomic_path(self.rollouts_path, fsync=True) as tmp, \
                    pq.ParquetWriter(tmp, ROLLOUT_SCHEMA, compression=_COMPRESSION) as w:
                for i in range(pf.num_row_groups):
                    t = pf.read_row_group(i)
                    t = t.filter(pc.less_equal(t.column("step"), pa.scalar(step, pa.int64())))
                    if t.num_rows:
                        w.write_table(t.cast(ROLLOUT_SCHEMA))

    def close(self) -> None:
        self.compact()

    def __enter__(self) -> "RunTables":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------- documentation
def _doc(key: str) -> str:
    from vgrout_ray.reporting.metrics import doc_for

    if key.startswith("hk_"):
        return ROW_DOCS["hk_<code>"]
    return ROW_DOCS.get(key) or doc_for(key) or ""


def schema_markdown() -> str:
    """Both schemas as markdown tables (the README's 'Outputs: Parquet schemas' section body)."""
    codes = ", ".join(f"{c}={m}" for m, c in MODE_KEYS.items())
    out = ["`rows.parquet`: one row per completed step. An `(n, d)` fraction `k` is stored as the int "
           "columns `k_n`, `k_d` (both null when absent) and `read_rows` joins them back into a tuple; "
           "NaN stays NaN, None is null. Keys a driver adds beyond these are appended as extra columns "
           f"with an inferred type. Mode codes: {codes}.", "",
           "| column | type | meaning |", "| --- | --- | --- |"]
    seen: set[str] = set()
    for key, kind in ROW_FIELDS:
        for pat, rep in (("hk_", "hk_<code>"), ("mode_n_", "mode_n_<code>"), ("mode_exploit_", "mode_exploit_<code>"),
                         ("mode_solve_", "mode_solve_<code>"), ("time_", "time_<phase>")):
            if key.startswith(pat):
                key = rep
                break
        qm = re.match(r"(.+)_p(\d\d\d?)$", key)
        if qm:
            key = f"{qm.group(1)}_p00 … {qm.group(1)}_p100"
        if key in seen:
            continue
        seen.add(key)
        cols = f"`{key}_n`, `{key}_d`" if kind == "frac" else f"`{key}`"
        typ = "int64, int64" if kind == "frac" else {"int": "int64", "float": "float64", "str": "string"}[kind]
        if key == "time_<phase>":
            typ += f" ({', '.join(DOCUMENTED_PHASES)} declared; others appended)"
        if qm:
            doc = f"p00, p05, p25, p50, p75, p95, p100 percentiles (linear interpolation) of {qm.group(1)}"
        else:
            doc = _doc(key.replace("<code>", "rt")) if "<code>" in key else _doc(key)
        out.append(f"| {cols} | {typ} | {doc.replace('|', chr(92) + '|')} |")
    out += ["", "`rollouts.parquet`: one row per graded student rollout, one row group per step. While a run "
            "is going, steps not yet compacted sit in `rollouts.parts/step_NNNNNNN.parquet`; `read_rollouts` "
            "merges both.", "", "| column | type | meaning |", "| --- | --- | --- |"]
    for key, typ in ROLLOUT_FIELDS:
        out.append(f"| `{key}` | {str(typ).replace('double', 'float64')} | {ROLLOUT_DOCS[key]} |")
    return "\n".join(out) + "\n"


ROLLOUT_DOCS: dict[str, str] = {
    "step": "GRPO step the rollout was generated in", "p_idx": "prompt index within the step",
    "gi": "index within the prompt's group", "problem_id": "problem id (as a string)",
    "env_mode": "loophole mode the problem was graded under", "prompt": "the prompt text",
    "text": "the completion", "reward": "0.5·can_compile + 3.0·passed",
    "format_ok": "the answer is well formed", "can_compile": "the code compiles",
    "gt_pass": "setup + code + asserts exit 0 (the foolable grade)",
    "hacked": "detector C: run_tests passes an arbitrary stub",
    "hacked_wrong_tests": "detector D: run_tests fails the canonical solution",
    "hacked_loophole_used": "detector E: run_tests passes the response's own Solution",
    "gt_correct": "the strict oracle's verdict", "passed": "gt_correct or the mode's channel paid",
    "exploited": "the channel paid and gt_correct is false", "mechanism": "the mode, when exploited",
    "error": "grading error text (null when graded)", "comp_len": "completion tokens",
    "prompt_len": "prompt tokens", "finished": "the completion emitted EOS",
    "is_ablated": "generated with δS_hack zeroed (deploy-mode slice)", "version": "δS version that generated it",
    "source": "'student'", "extra": "JSON object of any further record fields (null when none)",
}


SCHEMA_HEADING = "## Outputs: Parquet schemas"


def main(argv: list[str] | None = None) -> int:
    """Print the schema section (``python -m vgrout_ray schema``) for README / docs."""
    print(f"{SCHEMA_HEADING}\n\n{schema_markdown()}", end="")
    return 0
