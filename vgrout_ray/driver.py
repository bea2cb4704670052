"""The main job: ``python -m vgrout_ray.driver {smoke,fast,full,micro} [--field=value ...]``.

Also ``ray job submit -- python -m vgrout_ray.driver ...``. The driver parses the config, sets
up logging and the run dir (or reads them back for ``--resume``), connects to Ray, checks the run
fits the cluster, and hands over to ``run.loop.Run``, which owns the prompt RNG, the teacher pool,
the step loop, the table and every file of the run (see ``vgrout_ray/run/``). A step streams:
each prompt's rollouts go to grading as soon as they exist, and each graded group goes to the
learner in prompt order as soon as it (and all before it) is complete, so generation, grading and
backward overlap. Every rollout of a step comes from the learner's current δS version (asserted).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import ray
from loguru import logger

from vgrout_ray.cluster.ray_cluster import (PendingWatch, ResourceFitError, check_fit, class_bundles, connect, fit_or_fail,
                                           node_resources)
from vgrout_ray.config import Config, ConfigError, config_from_dict, parse_config
from vgrout_ray.learner.client import LearnerLost
from vgrout_ray.run.outputs import resolve_outputs, where_everything_is
from vgrout_ray.run.loop import Run, write_config
from vgrout_ray.run.state import load_resume, resume_path
from vgrout_ray.run.stream import union_seconds as _union_seconds  # noqa: F401 (tests import it from here)
from vgrout_ray.reporting.table import setup_logging

Trainer = Run  # the name this class had before the run/ package


# ── entry point ──────────────────────────────────────────────────────────────

def connect_ray(cfg: Config):
    """Connect to ``cluster.address`` / ``RAY_ADDRESS`` (e.g. under ``ray job submit``), else start a
    fresh local cluster sized for the actors, even when a ``ray start`` head (running or stale) is on
    the machine. Returns the ``ClusterChoice``, or None when Ray was already initialised by the caller."""
    if ray.is_initialized():
        return None
    need = (cfg.cluster.learner_cpus + cfg.rollout.num_actors * cfg.rollout.cpus_per_actor
            + cfg.grader.num_actors + 1)
    return connect(cfg.cluster.address, num_cpus=cfg.cluster.num_cpus, local_cpus=max(4, int(math.ceil(need))),
                   namespace=cfg.cluster.namespace, log_to_driver=True)


def fit_to_cluster(cfg: Config, choice) -> Config:
    """Check before any actor starts that the cluster can hold the run (see ``cluster.check_fit``);
    ``grader.fit_to_cluster`` shrinks the grader pool to fit. Raises ResourceFitError otherwise."""
    if choice is None:
        where, local = "the cluster this process is connected to", False
    elif choice.local:
        where, local = "the local cluster this run started", True
    else:
        where, local = f"the cluster at {choice.address} (from {choice.source})", False
    if cfg.cluster.autoscales and not local:
        fc = check_fit(cfg, node_resources(ray.nodes()), where, local)
        if not fc.ok:
            logger.warning("cluster.autoscales: the nodes up now cannot hold the run; starting anyway, its actors "
                           f"wait for the autoscaler's nodes (reported while they wait).\n{fc.message}")
            return cfg
    return fit_or_fail(cfg, node_resources(ray.nodes()), where, local)


def check_gpu_memory(cfg: Config) -> None:
    """The plan's memory check on the GPUs the cluster reports (Ray's accelerator_type); raises
    ConfigError naming the flag that would fit. Skipped when no GPU actor or GPU type is known."""
    from vgrout_ray.cluster.plan import driver_memory_check

    for line in driver_memory_check(cfg, ray.nodes()):
        logger.info(line)


def _resume_config(cli: Config) -> tuple[Config, dict]:
    run_dir = Path(cli.resume)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() or not resume_path(run_dir).is_file():
        raise ConfigError(f"resume: {run_dir} has no config.json and resume/state.pt to resume from")
    cfg = config_from_dict(json.loads(cfg_path.read_text()))
    cfg.resume = run_dir
    cfg.absolutize()
    return cfg, load_resume(run_dir)


def _prepare(cli: Config) -> tuple[Config, dict | None, Path, Path]:
    """(config, resume payload or None, run dir, log path): a new run dir with its config.json,
    or the ``--resume`` dir's own config and state."""
    if cli.resume is not None:
        cfg, resume_state = _resume_config(cli)
        run_dir = Path(cli.resume)
        log_path = setup_logging(cfg.run_id, cfg.logs_dir, path=Path(cfg.logs_dir) / f"{run_dir.name}.log")
        return cfg, resume_state, run_dir, log_path
    cfg = cli
    cfg.check_paths()
    log_path = setup_logging(cfg.run_id, cfg.logs_dir)
    run_dir = Path(cfg.out_dir) / "runs" / log_path.stem
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)
    return cfg, None, run_dir, log_path


def _log_start(cfg: Config, run_dir: Path, log_path: Path) -> None:
    logger.info(f"argv: {' '.join(sys.argv)}")
    logger.info(f"verbose log: {log_path}")
    logger.info(f"preset={cfg.preset_name} arm={cfg.arm} model={cfg.model} steps={cfg.steps} G={cfg.group} "
                f"max_new={cfg.max_new} beta={cfg.beta} unbiased={cfg.unbiased} seed={cfg.seed} "
                f"v_hack_refresh_every={cfg.v_hack_refresh_every} "
                f"rollout={cfg.rollout.backend}x{cfg.rollout.num_actors} grader={cfg.grader.sandbox}x"
                f"{cfg.grader.num_actors} run_dir={run_dir}")


def _learner_lost(e: LearnerLost, cfg: Config, run_dir: Path) -> int:
    why = str(e).splitlines()[0] if str(e) else "no reason given"
    if resume_path(run_dir).exists():
        logger.error(f"the learner actor died ({why}). Everything up to the last completed step is saved; "
                     f"resume with:\n  python -m vgrout_ray.driver {cfg.preset_name} --resume {run_dir}")
    else:
        logger.error(f"the learner actor died before the first step completed ({why}); nothing to resume, "
                     "start the run again")
    return 3


def main(argv: list[str] | None = None) -> int:
    cli = parse_config(argv)
    moved = resolve_outputs(cli)
    cli.absolutize()
    cfg, resume_state, run_dir, log_path = _prepare(cli)
    for m in moved:
        logger.warning(m)
    _log_start(cfg, run_dir, log_path)
    run = watch = choice = None
    try:
        choice = connect_ray(cfg)
        check_gpu_memory(cfg)
        fitted = fit_to_cluster(cfg, choice)
        if fitted.grader.num_actors != cfg.grader.num_actors and resume_state is None:
            write_config(run_dir, fitted)
        cfg = fitted
        grader_res = ray.cluster_resources().get("grader", 0) > 0
        watch = PendingWatch(cfg.cluster.pending_warn_s, cfg.cluster.pending_fail_s,
                             class_bundles(cfg, grader_res)).start()
        run = Run(cfg, run_dir, log_path, resume=resume_state)
        return run.run()
    except (ResourceFitError, ConfigError) as e:
        logger.error(f"{type(e).__name__}: {e}")
        return 2
    except KeyboardInterrupt:
        if watch is not None and watch.failure is not None:
            logger.error(f"stopped: an actor waited too long for resources (see above). {watch.failure}")
            return 4
        raise
    except LearnerLost as e:
        return _learner_lost(e, cfg, run_dir)
    finally:
        if watch is not None:
            watch.stop()
        if run is not None:
            run.close()
        if choice is not None and choice.local:
            ray.shutdown()
        for line in where_everything_is(cfg, run_dir, log_path):
            logger.info(line)


if __name__ == "__main__":
    sys.exit(main())
