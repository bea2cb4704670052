"""Which Ray cluster a process uses, said out loud.

``--cluster.address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets) means that cluster and
nothing else; without either, the process starts a fresh local cluster of its own with
``ray.init(address="local")``. Plain ``ray.init()`` would instead attach to whatever
``ray start`` head the machine's current-cluster file names (or crash on a stale one, or on
``num_cpus`` with a live one), so a run's placement would depend on what else ran on the machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from loguru import logger


@dataclass(frozen=True)
class ClusterChoice:
    """The cluster a run will use: an address (and where it came from) or a fresh local one."""

    address: str | None  # None: start a local cluster
    source: str  # "--cluster.address", "RAY_ADDRESS" or "local"

    @property
    def local(self) -> bool:
        return self.address is None


def choose_cluster(address: str | None, environ: Mapping[str, str] | None = None) -> ClusterChoice:
    """An explicit address wins, then a non-empty RAY_ADDRESS, else a local cluster."""
    env = os.environ if environ is None else environ
    if address:
        return ClusterChoice(address, "--cluster.address")
    if env.get("RAY_ADDRESS", "").strip():
        return ClusterChoice(env["RAY_ADDRESS"].strip(), "RAY_ADDRESS")
    return ClusterChoice(None, "local")


def current_cluster_file(temp_dir: str | None = None) -> tuple[Path, str | None]:
    """Ray's current-cluster file (written by ``ray start``) and the address it names, if any."""
    from ray._private.utils import get_ray_address_file

    path = Path(get_ray_address_file(temp_dir))
    try:
        return path, path.read_text().strip() or None
    except OSError:
        return path, None


def start_local_ray(num_cpus: int, **kw) -> dict:
    """A fresh local cluster for this process only, whatever ``ray start`` left on the machine."""
    import ray

    return ray.init(address="local", num_cpus=num_cpus, include_dashboard=kw.pop("include_dashboard", False), **kw)


def connect(address: str | None, *, num_cpus: int | None, local_cpus: int, namespace: str,
            environ: Mapping[str, str] | None = None, **init_kw) -> ClusterChoice:
    """Connect to the chosen cluster (see ``choose_cluster``) and log which one it is.

    ``num_cpus`` (``--cluster.num-cpus``) sizes only a local cluster: with an address it is an
    error, because the cluster there has its own size. ``local_cpus`` is the size used when it is
    not given."""
    import ray

    from .config import ConfigError

    choice = choose_cluster(address, environ)
    if not choice.local:
        if num_cpus is not None:
            raise ConfigError(f"cluster.num_cpus: sizes only the local cluster a run starts; this run uses the "
                              f"cluster at {choice.address} (from {choice.source}), which has its own size. Drop "
                              f"--cluster.num-cpus, or unset {choice.source} to run on a local cluster")
        ray.init(address=choice.address, namespace=namespace, **init_kw)
        logger.info(f"Ray: connected to the cluster at {choice.address} (from {choice.source}): "
                    f"{_fmt(ray.cluster_resources())}")
        return choice
    path, other = current_cluster_file()
    n = num_cpus or local_cpus
    ctx = start_local_ray(n, namespace=namespace, **init_kw)
    note = ""
    if other:
        note = (f"; not the `ray start` cluster named in {path} ({other}, which may be running or stale): "
                f"pass --cluster.address {other} or set RAY_ADDRESS to run there")
    logger.info(f"Ray: started a fresh local cluster for this run ({n} CPUs, GCS at "
                f"{ctx.address_info.get('gcs_address', '?')}): {_fmt(ray.cluster_resources())}{note}")
    return choice


def _fmt(res: Mapping[str, float]) -> str:
    """Resources without Ray's per-node/per-IP bookkeeping keys."""
    keep = {k: v for k, v in res.items() if not k.startswith(("node:", "accelerator_type:"))
            and k not in ("memory", "object_store_memory")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(keep.items())) + "}"
