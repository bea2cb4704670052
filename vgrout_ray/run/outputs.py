"""Where a run's outputs go when it runs as a Ray job, and where they ended up.

``ray job submit --working-dir .`` starts the driver inside Ray's per-job copy of the working dir
(``<ray temp>/session_*/runtime_resources/working_dir_files/...``), which Ray deletes with the
session and which differs on every node. Relative ``--out-dir``, ``--logs-dir`` and
``--svd-cache`` would put the run dir, logs, checkpoints and caches there. Under a Ray job they
are resolved against a persistent root instead: ``VGROUT_HOME`` when set, else ``~/vgrout`` on the
driver's node, with a loud warning (on a multi-node cluster that root must be a shared volume:
``python -m vgrout_ray.plan`` checks it for a manifest). Inputs (``--problems``, pairs, teacher
pool) keep their meaning: a relative input is a file shipped in the working dir.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

OUTPUT_FIELDS = {"out_dir": "--out-dir", "logs_dir": "--logs-dir", "svd_cache": "--svd-cache"}
HOME_VAR = "VGROUT_HOME"


def ray_job_workdir(environ: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> str | None:
    """Why this process looks like a Ray job's driver in Ray's copy of the working dir (None: it does not)."""
    env = os.environ if environ is None else environ
    here = str(Path(cwd) if cwd is not None else Path.cwd())
    if "/runtime_resources/" in here and "working_dir_files" in here:
        return f"the working dir {here} is Ray's per-job copy"
    if env.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return f"this is a Ray job's driver (RAY_JOB_CONFIG_JSON_ENV_VAR is set; working dir {here})"
    return None


def persistent_root(environ: Mapping[str, str] | None = None) -> Path:
    """``VGROUT_HOME`` (must be absolute), else ``~/vgrout``."""
    from vgrout_ray.config import ConfigError

    env = os.environ if environ is None else environ
    home = env.get(HOME_VAR, "").strip()
    if home:
        if not Path(home).is_absolute():
            raise ConfigError(f"{HOME_VAR}: must be an absolute path (a persistent, shared volume), got {home!r}")
        return Path(home)
    return Path(env.get("HOME") or Path.home()) / "vgrout"


def resolve_outputs(cfg, environ: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> list[str]:
    """Under a Ray job, move relative output paths of ``cfg`` under the persistent root (in place);
    returns the warnings to log (none outside a Ray job or when every output path is absolute)."""
    why = ray_job_workdir(environ, cwd)
    if why is None:
        return []
    rel = [name for name in OUTPUT_FIELDS if not Path(getattr(cfg, name)).expanduser().is_absolute()]
    if not rel:
        return []
    root = persistent_root(environ)
    env = os.environ if environ is None else environ
    moved = []
    for name in rel:
        new = root / Path(getattr(cfg, name))
        moved.append(f"{OUTPUT_FIELDS[name]} {getattr(cfg, name)} -> {new}")
        setattr(cfg, name, new)
    src = f"{HOME_VAR}={root}" if env.get(HOME_VAR, "").strip() else f"~/vgrout ({HOME_VAR} is not set)"
    return [f"OUTPUT PATHS: {why}; relative output paths would land in the job's working dir, which does not "
            "outlive the job (Ray's per-job copy, or the pod's own filesystem). "
            f"Resolved against {src} instead: " + "; ".join(moved) + ". Pass absolute --out-dir/--logs-dir/"
            f"--svd-cache on a volume every node mounts (or set {HOME_VAR} to one) to choose."]


def where_everything_is(cfg, run_dir: Path, log_path: Path) -> list[str]:
    """The run's closing lines: where its run dir, log, checkpoints and caches are."""
    run_dir = Path(run_dir)
    ckpts = sorted(p.name for p in run_dir.glob("*.safetensors")) if run_dir.is_dir() else []
    vhack = Path(cfg.v_hack_path) if cfg.v_hack_path is not None else Path(cfg.out_dir) / "vhack"
    return ["outputs of this run:",
            f"  run dir:     {run_dir}",
            f"  log:         {log_path}",
            f"  checkpoints: {run_dir} ({', '.join(ckpts) if ckpts else 'none yet'}; resume state in "
            f"{run_dir / 'resume'})",
            f"  SVD cache:   {cfg.svd_cache}",
            f"  v_hack:      {vhack}", *deploy_summary(cfg, run_dir)]


def deploy_summary(cfg, run_dir: Path) -> list[str]:
    """The run's result as its last line: the deploy eval before RL and at the end (from
    per_mode_deploy.json; nothing when the run ended before its final eval)."""
    path = Path(run_dir) / "per_mode_deploy.json"
    if not path.is_file():
        return []
    d = json.loads(path.read_text())
    pre = d.get("pre") or {}
    where = (f"{len(d.get('eval_prompt_ids') or [])} held-out prompts" if d.get("held_out")
             else "training prompts, not held out")
    quarantine = ", δS_hack zeroed" if cfg.has_quarantine else ""
    span = lambda k: (f"{pre[k]:.3f} -> {d[k + '_deploy']:.3f}" if pre.get(k) is not None  # noqa: E731
                      else f"{d[k + '_deploy']:.3f}")
    return [f"  result:      deploy eval ({where}, n={d['eval_n']}{quarantine}), before RL -> final: "
            f"hack {span('hack')}, solve {span('solve')}"]
