"""Which Ray cluster a process uses, said out loud.

``--cluster.address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets) means that cluster and
nothing else; without either, the process starts a fresh local cluster of its own with
``ray.init(address="local")``. Plain ``ray.init()`` would instead attach to whatever
``ray start`` head the machine's current-cluster file names (or crash on a stale one, or on
``num_cpus`` with a live one), so a run's placement would depend on what else ran on the machine.
"""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from loguru import logger

from vgrout_ray.cluster.placement import ROLES, actor_options, as_bundle


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

    from vgrout_ray.config import ConfigError

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


def _schedulable(res: Mapping[str, float]) -> dict[str, float]:
    """Resources without Ray's per-node/per-IP bookkeeping keys and memory sizes."""
    return {k: float(v) for k, v in res.items() if not k.startswith(("node:", "accelerator_type:"))
            and k not in ("memory", "object_store_memory")}


def _fmt(res: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(_schedulable(res).items())) + "}"


# ── does the run fit? ────────────────────────────────────────────────────────

EPS = 1e-6


class ResourceFitError(RuntimeError):
    """The cluster cannot hold the run's actors; the message says what is needed, what exists and what fits."""


@dataclass(frozen=True)
class Demand:
    """``count`` actors of one role, each asking Ray for ``bundle`` (CPU, GPU, custom resources)."""

    role: str
    count: int
    bundle: tuple[tuple[str, float], ...]

    @property
    def resources(self) -> dict[str, float]:
        return dict(self.bundle)


def _bundle(**res: float) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, float(v)) for k, v in res.items() if v))


def run_demands(cfg, grader_resource: bool) -> list[Demand]:
    """What the run's actors ask Ray for: ``placement.actor_options`` per role, times its count.

    ``grader_resource``: whether grader actors also take one ``grader`` (the pool does so when the
    cluster offers that resource)."""
    counts = {"learner": 1, "rollout": cfg.rollout.num_actors, "grader": cfg.grader.num_actors}
    return [Demand(role, counts[role], _bundle(**as_bundle(actor_options(cfg, role, grader_resource=grader_resource))))
            for role in ROLES]


def place(demands: list[Demand], nodes: list[dict[str, float]]) -> list[tuple[str, int, dict[str, float]]]:
    """First-fit decreasing of every actor onto the nodes' total resources (an actor lives on one
    node); returns the actors that found no room as (role, index, bundle)."""
    free = [dict(n) for n in nodes]
    items = [(d.role, i, d.resources) for d in demands for i in range(d.count)]
    items.sort(key=lambda it: (-it[2].get("GPU", 0.0), -len(it[2]), -it[2].get("CPU", 0.0)))
    left = []
    for role, i, res in items:
        for node in free:
            if all(node.get(k, 0.0) + EPS >= v for k, v in res.items()):
                for k, v in res.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            left.append((role, i, res))
    return left


def with_graders(cfg, n: int):
    """A copy of ``cfg`` with ``n`` grader actors."""
    import dataclasses

    return dataclasses.replace(cfg, grader=dataclasses.replace(cfg.grader, num_actors=n))


def graders_that_fit(cfg, nodes: list[dict[str, float]], grader_resource: bool) -> int:
    """The most grader actors (up to the configured number) that fit next to the learner and rollouts; 0: none."""
    for n in range(cfg.grader.num_actors, 0, -1):
        if not place(run_demands(with_graders(cfg, n), grader_resource), nodes):
            return n
    return 0


def _fmt_res(res: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items()) if v) + "}"


def _total(demands: list[Demand]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in demands:
        for k, v in d.bundle:
            out[k] = out.get(k, 0.0) + v * d.count
    return out


def node_resources(nodes_info: list[dict]) -> list[dict[str, float]]:
    """Schedulable resources of alive nodes from ``ray.nodes()`` (Ray's bookkeeping keys dropped)."""
    out = []
    for n in nodes_info:
        if n.get("Alive", True):
            out.append(_schedulable(n.get("Resources", {})))
    return out


@dataclass
class FitCheck:
    """Outcome of comparing a run's demands with a cluster."""

    ok: bool
    graders_fit: int  # the most graders that fit (== configured when ok)
    message: str


def check_fit(cfg, nodes: list[dict[str, float]], where: str, local: bool) -> FitCheck:
    """Whether the run's actors fit on ``nodes``; if not, a message naming what is needed, what
    exists and flags that would fit. ``where`` names the cluster, ``local``: the run started it."""
    g_res = any(n.get("grader", 0) > 0 for n in nodes)
    demands = run_demands(cfg, g_res)
    left = place(demands, nodes)
    need = ", ".join(f"{d.role} {d.count}×{_fmt_res(d.resources)}" for d in demands)
    need += f" = {_fmt_res(_total(demands))} in all"
    has = "; ".join(_fmt_res(n) for n in nodes[:8]) + (f"; … {len(nodes) - 8} more" if len(nodes) > 8 else "")
    if not left:
        return FitCheck(True, cfg.grader.num_actors,
                        f"resources: this run needs {need}; {where} has {len(nodes)} node(s): {has}; it fits")
    k = graders_that_fit(cfg, nodes, g_res)
    lost: dict[str, int] = {}
    for role, _, _ in left:
        lost[role] = lost.get(role, 0) + 1
    lines = ["the cluster cannot hold this run's actors, so they would wait for resources forever.",
             f"  needs: {need}",
             f"  has:   {where}, {len(nodes)} node(s): {has}",
             "  no room for: " + ", ".join(f"{n} {role} actor(s)" for role, n in lost.items())]
    fixes = []
    if 1 <= k < cfg.grader.num_actors:
        fixes.append(f"--grader.num-actors {k} (or --grader.fit-to-cluster, which starts as many graders as fit)")
    for d in demands:  # a bundle that fits no node at all: a missing resource, not a size problem
        if d.count and not any(all(n.get(key, 0.0) + EPS >= v for key, v in d.bundle) for n in nodes):
            missing = [key for key, v in d.bundle if max((n.get(key, 0.0) for n in nodes), default=0.0) + EPS < v]
            fixes.append(f"{d.role} actors need {_fmt_res(d.resources)} but no node has enough "
                         f"{', '.join(missing)}: " + _missing_hint(d.role, missing))
    cpu = _total(demands).get("CPU", 0.0)
    shrunk = _half_cpu(cfg)
    if shrunk is not None and graders_that_fit(shrunk, nodes, g_res) >= 1:
        k2 = graders_that_fit(shrunk, nodes, g_res)
        fixes.append("--cluster.learner-cpus 0.5 --rollout.cpus-per-actor 0.5"
                     + (f" --grader.num-actors {k2}" if k2 < cfg.grader.num_actors else ""))
    n_cpu = int(-(-cpu // 1))
    if len(nodes) == 1 and not place(demands, [{**nodes[0], "CPU": float(n_cpu)}]):  # only CPUs are short
        if local:
            fixes.append(f"--cluster.num-cpus {n_cpu} (or leave it out: the local cluster is sized for the run)")
        else:
            fixes.append(f"a head with {n_cpu} logical CPUs: `ray start --head --num-cpus {n_cpu}` (logical CPUs "
                         "may exceed the cores; they only count actors)")
    elif len(nodes) > 1:
        fixes.append(f"more or larger nodes: the run needs {_fmt_res(_total(demands))} in all")
    lines.append("  would fit: " + "\n             ".join(fixes))
    return FitCheck(False, k, "\n".join(lines))


def _half_cpu(cfg):
    """``cfg`` with half a logical CPU for the learner and each rollout actor (None if already that small)."""
    import dataclasses

    if cfg.cluster.learner_cpus <= 0.5 and cfg.rollout.cpus_per_actor <= 0.5:
        return None
    return dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, learner_cpus=min(0.5, cfg.cluster.learner_cpus)),
                               rollout=dataclasses.replace(cfg.rollout, cpus_per_actor=min(0.5, cfg.rollout.cpus_per_actor)))


def _missing_hint(role: str, missing: list[str]) -> str:
    hints = []
    for key in missing:
        if key == "GPU":
            flag = "--cluster.learner-gpus 0" if role == "learner" else "--rollout.gpus-per-actor 0"
            hints.append(f"add a GPU node or use {flag}")
        elif key == "CPU":
            flag = "--cluster.learner-cpus" if role == "learner" else "--rollout.cpus-per-actor"
            hints.append(f"a node with more CPUs, or a smaller {flag}")
        else:
            flag = {"learner": "--cluster.learner-resource", "rollout": "--cluster.rollout-resource"}.get(role)
            hints.append(f"start a node with --resources '{{\"{key}\": N}}'" + (f" or drop {flag}" if flag else ""))
    return "; ".join(hints)


def fit_or_fail(cfg, nodes: list[dict[str, float]], where: str, local: bool):
    """``cfg`` if the run fits; with ``grader.fit_to_cluster``, a copy with as many graders as fit
    (warned); otherwise ResourceFitError with the check's message."""
    fc = check_fit(cfg, nodes, where, local)
    if fc.ok:
        logger.info(fc.message)
        return cfg
    if cfg.grader.fit_to_cluster and fc.graders_fit >= 1:
        logger.warning(f"grader.fit_to_cluster: {where} holds only {fc.graders_fit} of the {cfg.grader.num_actors} "
                       f"grader actors next to the learner and rollouts; starting {fc.graders_fit} "
                       f"(grading will be slower).\n{fc.message}")
        cfg = with_graders(cfg, fc.graders_fit)
        logger.info(check_fit(cfg, nodes, where, local).message)
        return cfg
    if cfg.grader.fit_to_cluster:
        raise ResourceFitError("grader.fit_to_cluster: not even one grader fits next to the learner and rollout "
                               f"actors.\n{fc.message}")
    raise ResourceFitError(fc.message)


# ── no silent waits ──────────────────────────────────────────────────────────


def waiting_actors(job_id_hex: str) -> dict[str, str]:
    """This job's actors that wait for resources: {actor id: class name}.

    An actor in PENDING_CREATION without a worker process (pid 0) has not been given a worker,
    i.e. no node has its resources free; one that runs its ``__init__`` already has a pid."""
    import ray
    from ray._private import state

    table = state.actors(job_id=ray.JobID.from_hex(job_id_hex), actor_state_name="PENDING_CREATION")
    return {aid: str(info.get("ActorClassName") or "?").rsplit(".", 1)[-1] for aid, info in table.items()
            if not info.get("Pid")}


def pending_demands(gcs_address: str) -> list[tuple[dict[str, float], int]] | None:
    """Resource shapes the cluster's tasks and actors wait for, as ``ray status`` shows them (None if unknown)."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        st = get_cluster_status(gcs_address)
        return [(dict(b.bundle), int(b.count)) for d in st.resource_demands.ray_task_actor_demand
                for b in d.bundles_by_count]
    except Exception as e:  # an older/newer Ray without this API: report without it
        logger.debug(f"pending demands unavailable: {e}")
        return None


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    keys = {k for k, v in a.items() if v} | {k for k, v in b.items() if v}
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) < 1e-4 for k in keys)


# The signal PendingWatch interrupts the main thread with: its own handler raises KeyboardInterrupt,
# so the interrupt works whatever SIGINT's disposition is (a shell starts a background job, `cmd &`,
# with SIGINT ignored; Python then leaves it ignored and would drop an interrupt sent with it).
WATCH_SIGNAL = signal.SIGUSR1


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt("an actor waited too long for resources")


def interrupt_main_thread(sig: int | None = None) -> None:
    """KeyboardInterrupt in the main thread, now.

    ``_thread.interrupt_main`` only flags the interrupt: a main thread blocked in a system call (a
    lock or event wait, ``ray.get``) sees it when the call returns, minutes later or never. A real
    signal sent to the main thread wakes the call (EINTR) and its Python handler raises at once.
    ``sig``: a signal whose handler raises KeyboardInterrupt (``PendingWatch`` installs one);
    otherwise SIGINT, sent only while Python handles it (its default action would kill the process)."""
    import _thread
    import threading

    if sig is not None:
        signal.pthread_kill(threading.main_thread().ident, sig)
    elif callable(signal.getsignal(signal.SIGINT)):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        _thread.interrupt_main()


class PendingWatch:
    """Reports this job's actors that wait for resources, and fails the run when one waits too long.

    A background thread polls the GCS every ``poll_s``. An actor waits for resources when it has no
    worker yet and the cluster reports an unmet demand of its shape (without that, its worker is
    merely starting). One waiting longer than ``warn_s`` is
    logged with the resources it asks for (``bundles``: class name → bundle, from the run's
    demands), what the cluster has and has free, and the cluster's pending demands (tasks included,
    as ``ray status`` counts them); again every ``warn_s``. After ``fail_s`` (0: never) the message
    is kept in ``failure`` and the main thread is interrupted, so a driver blocked in ``ray.get``
    stops; the driver turns that into a clean exit with the message."""

    def __init__(self, warn_s: float, fail_s: float, bundles: Mapping[str, Mapping[str, float]] | None = None,
                 poll_s: float | None = None, interrupt: bool = True) -> None:
        import threading

        import ray

        ctx = ray.get_runtime_context()
        self.job = ctx.get_job_id()
        self.gcs = ctx.gcs_address
        self.warn_s, self.fail_s = warn_s, fail_s
        self.poll_s = poll_s if poll_s is not None else max(0.5, min(5.0, warn_s / 3))
        self.bundles = {k: dict(v) for k, v in (bundles or {}).items()}
        self.interrupt = interrupt
        self.failure: str | None = None
        self.reports: list[str] = []
        self._since: dict[str, float] = {}
        self._reported: dict[str, float] = {}
        self._stop = threading.Event()
        self._signal: int | None = None  # WATCH_SIGNAL once start() set its handler
        self._old_handler = None
        self._thread = threading.Thread(target=self._loop, name="pending-watch", daemon=True)

    def start(self) -> "PendingWatch":
        import threading

        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._old_handler = signal.signal(WATCH_SIGNAL, _raise_keyboard_interrupt)
            self._signal = WATCH_SIGNAL
        self._thread.start()
        return self

    def stop(self) -> None:
        import threading

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        # restored only once the thread is gone: a late WATCH_SIGNAL at its default action would kill us
        if (self._signal is not None and not self._thread.is_alive()
                and threading.current_thread() is threading.main_thread()):
            signal.signal(WATCH_SIGNAL, self._old_handler)
            self._signal = None

    def _loop(self) -> None:
        import time

        while not self._stop.wait(self.poll_s):
            try:
                self.poll(time.monotonic())
            except Exception as e:  # the watch must never take the run down by itself
                logger.debug(f"pending watch: {type(e).__name__}: {e}")
            if self.failure is not None:
                if self.interrupt:
                    self._interrupt_until_stopped()
                return

    def _interrupt_until_stopped(self) -> None:
        """Interrupt the main thread, again every few seconds until ``stop``: an interrupt that
        lands inside C code which swallows it (seen under load: the driver hung in its grading
        wait after "giving up") would otherwise leave the run blocked for good."""
        while True:
            interrupt_main_thread(self._signal)
            if self._stop.wait(10.0):
                return

    def poll(self, now: float) -> list[str]:
        """One look at the cluster; returns the reports made (also logged, and kept in ``reports``)."""
        waiting = waiting_actors(self.job)
        demands = pending_demands(self.gcs) if waiting else []
        if demands is not None:
            # An actor without a worker is waiting for resources only if the cluster has a matching
            # unmet demand; otherwise its worker process is still starting (slow on a busy machine).
            shapes = [b for b, _ in demands]
            waiting = {aid: cls for aid, cls in waiting.items()
                       if shapes and (cls not in self.bundles or any(_same(self.bundles[cls], b) for b in shapes))}
        for aid in list(self._since):
            if aid not in waiting:
                self._since.pop(aid)
                self._reported.pop(aid, None)
        due = []
        for aid, cls in waiting.items():
            t0 = self._since.setdefault(aid, now)
            waited = now - t0
            if waited >= self.warn_s and now - self._reported.get(aid, -1e18) >= self.warn_s:
                due.append((aid, cls, waited))
        if not due:
            return []
        out = []
        context = self._context(demands)
        for aid, cls, waited in due:
            self._reported[aid] = now
            what = _fmt_res(self.bundles[cls]) if cls in self.bundles else "(resources not known to the driver)"
            msg = f"actor {cls} {aid[:8]} has waited {waited:.0f} s for resources {what}: {context}"
            if self.fail_s and waited >= self.fail_s:
                self.failure = (f"giving up: {msg}. Free those resources (another job may hold them, or a node "
                                f"is gone), size the run to the cluster, or raise --cluster.pending-fail-s "
                                f"(now {self.fail_s:g} s)")
                logger.error(self.failure)
                out.append(self.failure)
                break
            logger.warning(msg + (f"; the run fails if it still waits after {self.fail_s:g} s"
                                  if self.fail_s else ""))
            out.append(msg)
        self.reports.extend(out)
        return out

    def _context(self, dem: list[tuple[dict[str, float], int]] | None) -> str:
        import ray

        total = _schedulable(ray.cluster_resources())
        free = {k: v for k, v in _schedulable(ray.available_resources()).items() if v > EPS}
        demand = ", ".join(f"{_fmt_res(b)}×{n}" for b, n in dem or []) or "not known"
        return (f"the cluster has {_fmt_res(total)}, {_fmt_res(free)} free now; "
                f"pending tasks/actors in the cluster want {demand}")


def class_bundles(cfg, grader_resource: bool) -> dict[str, dict[str, float]]:
    """Actor class name → resources it asks for, for PendingWatch reports."""
    names = {"learner": "LearnerActorImpl", "rollout": "RolloutActorImpl", "grader": "GraderActorImpl"}
    return {names[d.role]: d.resources for d in run_demands(cfg, grader_resource)}


# ── a head for `ray job submit` on one machine ───────────────────────────────


def wait_for_jobs(url: str, timeout: float) -> float:
    """Submit a no-op job until the head takes and finishes it: ``ray start`` returns before its
    job agent is up, and a submit in that window fails with "No available agent". Returns seconds."""
    import time

    from ray.job_submission import JobStatus, JobSubmissionClient

    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        try:
            client = JobSubmissionClient(url)
            job = client.submit_job(entrypoint="python -c pass")
            while time.monotonic() - t0 < timeout:
                status = client.get_job_status(job)
                if status == JobStatus.SUCCEEDED:
                    return time.monotonic() - t0
                if status in (JobStatus.FAILED, JobStatus.STOPPED):
                    raise RuntimeError(f"the no-op test job {job} ended {status}: {client.get_job_logs(job)[-2000:]}")
                time.sleep(0.5)
        except RuntimeError as e:
            if "ended" in str(e):
                raise
            last = str(e).splitlines()[-1][:300] if str(e) else type(e).__name__
        except Exception as e:  # connection refused while the dashboard starts
            last = f"{type(e).__name__}: {str(e)[:300]}"
        time.sleep(1.0)
    raise TimeoutError(f"the head at {url} did not take a job in {timeout:.0f} s (last answer: {last})")


# ports `ray start --head` binds at fixed defaults (the job agent's 52365, the client server's 10001)
# or that must not collide with another Ray instance on the machine; the head helper picks free ones
HEAD_PORT_FLAGS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                   "runtime-env-agent-port", "ray-client-server-port")


def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_bind_failure(temp_dir: str | None = None) -> str:
    """Why the newest Ray session's job agent did not come up, when its log says a port was taken."""
    root = Path(temp_dir or os.environ.get("RAY_TMPDIR") or "/tmp") / "ray" / "session_latest" / "logs"
    log = root / "dashboard_agent.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    import re

    m = re.search(r"bind on address \(([^)]*)\)[^\n]*address already in use", text)
    return f"; {log} says its port {m.group(1)} is taken (another Ray instance on this machine?)" if m else ""


def head_main(argv: list[str] | None = None) -> int:
    """``python -m vgrout_ray head``: a ``ray start`` head for ``ray job submit`` on this machine,
    with enough logical CPUs for a smoke run, token auth set up on both sides, and a wait until it
    takes jobs; prints the address and the exact submit lines."""
    import argparse
    import subprocess

    ap = argparse.ArgumentParser(prog="python -m vgrout_ray head", description=head_main.__doc__)
    ap.add_argument("--num-cpus", type=int, default=4,
                    help="logical CPUs (default 4: a smoke run's learner + rollout + grader need 3; "
                         "more than the machine's cores is fine)")
    ap.add_argument("--port", type=int, default=6379, help="GCS port")
    ap.add_argument("--dashboard-port", type=int, default=8265, help="dashboard / jobs API port")
    ap.add_argument("--wait-s", type=float, default=180.0, help="how long to wait for the head to take a job")
    ap.add_argument("ray_start_args", nargs="*", help="further `ray start` arguments (after --)")
    args = ap.parse_args(argv)
    if args.num_cpus < 1:
        ap.error(f"--num-cpus: must be >= 1, got {args.num_cpus}")
    os.environ["RAY_AUTH_MODE"] = "token"  # this process and the head; `ray start` needs the token to exist
    subprocess.run(["ray", "get-auth-token", "--generate"], check=True, stdout=subprocess.DEVNULL)
    # a Ray instance already on the machine (a driver's local cluster, a test) holds the job agent's
    # fixed default port: the head would start without a job agent and refuse every submit
    given = {a.split("=", 1)[0].lstrip("-") for a in args.ray_start_args}
    picked = [f"--{flag}={free_tcp_port()}" for flag in HEAD_PORT_FLAGS if flag not in given]
    cmd = ["ray", "start", "--head", f"--num-cpus={args.num_cpus}", f"--port={args.port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={args.dashboard_port}", *picked, *args.ray_start_args]
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        print(f"ray start failed (exit {rc}); a head may already run here (`ray status`), or a port is taken "
              "(--port / --dashboard-port)", file=sys.stderr)
        return rc
    url = f"http://127.0.0.1:{args.dashboard_port}"
    try:
        took = wait_for_jobs(url, args.wait_s)
    except TimeoutError as e:
        print(f"{e}{agent_bind_failure()}", file=sys.stderr)
        return 1
    print(f"""
Ray head ready ({took:.0f} s to take a first job): GCS port {args.port}, jobs API {url},
{args.num_cpus} logical CPUs, token authentication (token in ~/.ray/auth_token).

Submit from the repo root:
    export RAY_AUTH_MODE=token
    ray job submit --address {url} --working-dir . -- python -m vgrout_ray.driver smoke --steps 3
Stop it with `ray stop` (stops every Ray process on this machine).""", flush=True)
    return 0
