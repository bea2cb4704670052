"""Cluster mode as a newcomer meets it, on a real ``ray start --head --num-cpus 2`` (a 2-core laptop's default).

- ``ray job submit`` of a smoke run fails within 60 s with the fit message, or completes with
  ``--grader.fit-to-cluster``;
- an actor that waits for resources held by someone else is reported and the run stops;
- a local run (no address) while that head is up starts its own cluster and completes; after the
  head was SIGKILLed, so that its current-cluster file is stale, the driver's connect step still
  starts a working cluster of its own.

The head's ``--temp-dir`` is ``<X>/ray`` and the local drivers run with ``RAY_TMPDIR=<X>``: the head's
current-cluster file is exactly where Ray looks for it from those drivers (as ``/tmp/ray`` is for a
plain ``ray start``), without touching the machine's real ``/tmp/ray``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vgrout_ray.reporting.parquet import read_rows

from .raycli import CliCluster

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--steps", "2", "--eval-ablate-every", "0", "--v-hack-refresh-every", "0"]
SMALL = ["--cluster.learner-cpus", "0.5", "--rollout.cpus-per-actor", "0.5"]


# the session's tiny model and SVD factors, reused by every run here (set by the fixture below)
SVD: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _shared_svd_cache(tiny):
    SVD[:] = [tiny.parent]


@pytest.fixture(scope="module")
def head2():
    """A 2-CPU head with the jobs dashboard; yields (cluster, RAY_TMPDIR whose ray/ holds its file)."""
    from .raycli import jobs_head

    with jobs_head("vg15") as head:
        yield head


def _submit(c: CliCluster, work: Path, *args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run(["ray", "job", "submit", "--address", c.dashboard_url, "--working-dir", ".", "--",
                        "python", "-m", "vgrout_ray.driver", "smoke", *args, "--out-dir", str(work / "out"),
                        "--logs-dir", str(work / "logs"), "--svd-cache", str(SVD[0])],
                       cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env=c.client_env(PYTHONUNBUFFERED="1"))
    return p, time.monotonic() - t0


def _local_env(root: str, c: CliCluster) -> dict:
    """No address (RAY_ADDRESS unset), and the head's current-cluster file where Ray looks for it."""
    env = {k: v for k, v in c.env.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=root, PYTHONUNBUFFERED="1")
    return env


def _local_driver(root: str, c: CliCluster, work: Path, *args: str) -> subprocess.CompletedProcess:
    """A driver with no address that sees the head's current-cluster file."""
    env = _local_env(root, c)
    return subprocess.run([sys.executable, "-m", "vgrout_ray.driver", "smoke", *args, "--out-dir", str(work / "out"),
                           "--logs-dir", str(work / "logs"), "--svd-cache", str(SVD[0])],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)


def _log(work: Path) -> str:
    return next((work / "logs").glob("*.log")).read_text()


@pytest.mark.slow
def test_job_submit_that_cannot_fit_fails_within_60s_with_the_message(head2, tmp_path):
    c, _ = head2
    p, took = _submit(c, tmp_path, "--steps", "3", timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert took < 60, f"took {took:.0f} s"
    assert "cannot hold this run's actors" in out, out[-3000:]
    assert "{CPU: 3} in all" in out and "1 node(s): {CPU: 2}" in out
    assert "ray start --head --num-cpus 3" in out and "--cluster.learner-cpus 0.5" in out
    print(f"ray job submit failed after {took:.1f} s")


@pytest.mark.slow
def test_job_submit_with_the_fit_flag_completes(head2, tmp_path):
    c, _ = head2
    p, took = _submit(c, tmp_path, *QUICK, *SMALL, "--grader.num-actors", "3", "--grader.fit-to-cluster")
    assert "succeeded" in p.stdout.lower(), (p.stdout + p.stderr)[-3000:]
    log = _log(tmp_path)
    assert "holds only 1 of the 3 grader actors" in log
    assert f"the cluster at {c.address}" in log or "from RAY_ADDRESS" in log
    run = next((tmp_path / "out" / "runs").iterdir())
    assert [r["step"] for r in read_rows(run)] == [0, 1]
    print(f"ray job submit with --grader.fit-to-cluster succeeded in {took:.1f} s")


@pytest.mark.slow
def test_actors_waiting_for_resources_held_elsewhere_are_reported_and_stop_the_run(head2, tmp_path):
    """The run fits the cluster's size, but a detached actor of another job holds both CPUs: the
    driver reports its waiting actors with the resources they want and exits 4 after the limit."""
    c, _ = head2
    hog = ("import ray, sys; ray.init(namespace='vg15'); "
           "H = ray.remote(num_cpus=2)(type('Hog', (), {'ping': lambda self: 1})); "
           "h = H.options(name='hog', lifetime='detached').remote(); print(ray.get(h.ping.remote()))")
    unhog = "import ray; ray.init(namespace='vg15'); ray.kill(ray.get_actor('hog'))"
    env = c.client_env()
    assert subprocess.run([sys.executable, "-c", hog], env=env, capture_output=True, text=True,
                          timeout=180).returncode == 0
    try:
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "vgrout_ray.driver", "smoke", *QUICK, *SMALL,
                            "--cluster.pending-warn-s", "3", "--cluster.pending-fail-s", "12",
                            "--out-dir", str(tmp_path / "out"), "--logs-dir", str(tmp_path / "logs"),
                            "--svd-cache", str(SVD[0])],
                           cwd=tmp_path, env=c.client_env(PYTHONUNBUFFERED="1"), capture_output=True, text=True,
                           timeout=600)
        took = time.monotonic() - t0
    finally:
        subprocess.run([sys.executable, "-c", unhog], env=env, capture_output=True, text=True, timeout=180)
    log = _log(tmp_path)
    assert p.returncode == 4, (p.stdout + p.stderr)[-3000:]
    assert "it fits" in log  # the size check passed: the wait comes from contention
    assert "has waited" in log and "for resources {CPU: 1}" in log  # the grader actor
    assert "the cluster has {CPU: 2}" in log and "free now" in log
    assert "giving up" in log and "--cluster.pending-fail-s (now 12 s)" in log
    print(f"driver stopped with exit 4 after {took:.1f} s")


@pytest.mark.long(4)  # minutes, on 2 busy cores
@pytest.mark.slow
def test_local_run_ignores_a_live_and_then_a_stale_ray_start_head(head2, tmp_path):
    """No address: the driver starts its own cluster although the machine's current-cluster file
    names a `ray start` head. While the head runs, a whole smoke run completes on its own cluster;
    after the head is SIGKILLed (file left behind), the driver's connect step again starts a
    working cluster of its own (the run after it is the same as in the first case)."""
    c, root = head2
    cc = Path(root) / "ray" / "ray_current_cluster"
    named = cc.read_text().strip()
    assert named.endswith(f":{c.gcs_port}")  # what a plain `ray start --head` leaves behind
    work = tmp_path / "live"
    work.mkdir()
    p = _local_driver(root, c, work, *QUICK)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    log = _log(work)
    assert "Ray: started a fresh local cluster for this run" in log
    assert f"not the `ray start` cluster named in {cc} ({named}" in log
    run = next((work / "out" / "runs").iterdir())
    assert [r["step"] for r in read_rows(run)] == [0, 1]

    c.kill_node("head")
    assert cc.exists()
    env = _local_env(root, c)
    code = ("import ray\nfrom vgrout_ray.config import parse_config\nfrom vgrout_ray.driver import connect_ray\n"
            "choice = connect_ray(parse_config(['smoke']))\n"
            "print('local', choice.local, 'answer', ray.get(ray.remote(lambda: 6 * 7).remote()))\nray.shutdown()")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "local True answer 42" in p.stdout, out[-3000:]
    assert "Ray: started a fresh local cluster for this run" in out
    assert f"not the `ray start` cluster named in {cc} ({named}" in out


@pytest.mark.slow
def test_head_helper_then_its_printed_submit_lines_complete(tmp_path):
    """README's 2-core laptop path: `python -m vgrout_ray head` (a token, 4 logical CPUs, waits
    until the head takes jobs), then the lines it prints, run verbatim in a shell. Isolated: its own
    HOME (token file), RAY_TMPDIR and ports; every process it starts is marked and killed after."""
    import os
    import re
    import secrets

    from .raycli import MARK, free_port, free_range, kill_marked

    root = tempfile.mkdtemp(prefix="vg15h", dir="/tmp")
    tag = f"vg15h{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=f"{root}/home", RAY_TMPDIR=root, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **{MARK: f"{tag}:head"})
    used: set[int] = set()
    port, dport = free_port(used), free_port(used)
    lo, hi = free_range(100, set())
    # the agent, metrics and client ports are the helper's to pick (a laptop may run another Ray)
    ports = [f"--{k}={free_port(used)}" for k in ("node-manager-port", "object-manager-port")]
    try:
        h = subprocess.run([sys.executable, "-m", "vgrout_ray", "head", "--port", str(port),
                            "--dashboard-port", str(dport), "--", *ports, f"--min-worker-port={lo}",
                            f"--max-worker-port={hi}"], env=env, capture_output=True, text=True, timeout=600)
        assert h.returncode == 0, (h.stdout + h.stderr)[-3000:]
        assert "Ray head ready" in h.stdout and "4 logical CPUs" in h.stdout
        lines = re.findall(r"^    (export RAY_AUTH_MODE=token|ray job submit .*)$", h.stdout, re.M)
        assert len(lines) == 2 and f"--address http://127.0.0.1:{dport}" in lines[1], h.stdout
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", "\n".join(lines)], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)
        assert "succeeded" in p.stdout.lower(), (p.stdout + p.stderr)[-3000:]
        assert "it fits" in p.stdout and "{CPU: 4}" in p.stdout
        ready = re.search(r"Ray head ready \((\d+) s", h.stdout)
        print(f"head helper ready in {ready.group(1) if ready else '?'} s; submit succeeded in "
              f"{time.monotonic() - t0:.1f} s")
    finally:
        for _ in range(5):
            if not kill_marked(f"{tag}:"):
                break
            time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)
