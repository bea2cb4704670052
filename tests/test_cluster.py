"""Which cluster a run uses, whether its actors fit, and the report of actors that wait for resources."""
from __future__ import annotations

import signal
import time

import pytest

from vgrout_ray.cluster.ray_cluster import (PendingWatch, ResourceFitError, check_fit, choose_cluster, fit_or_fail, place,
                                run_demands)
from vgrout_ray.config import parse_config

from .helpers import wait_until


def test_choose_cluster_explicit_address_then_env_then_local():
    assert choose_cluster("10.0.0.1:6379", {"RAY_ADDRESS": "10.0.0.2:6379"}).source == "--cluster.address"
    env = choose_cluster(None, {"RAY_ADDRESS": " 10.0.0.2:6379 "})
    assert (env.address, env.source, env.local) == ("10.0.0.2:6379", "RAY_ADDRESS", False)
    for environ in ({}, {"RAY_ADDRESS": ""}):
        local = choose_cluster(None, environ)
        assert local.local and local.address is None and local.source == "local"


def test_demands_mirror_the_actor_options():
    cfg = parse_config(["smoke", "--grader.num-actors", "3", "--rollout.num-actors", "2", "--cluster.learner-gpus", "1",
                        "--cluster.learner-resource", "learner", "--rollout.cpus-per-actor", "2"])
    d = {x.role: (x.count, x.resources) for x in run_demands(cfg, grader_resource=True)}
    assert d == {"learner": (1, {"CPU": 1.0, "GPU": 1.0, "learner": 1.0}), "rollout": (2, {"CPU": 2.0}),
                 "grader": (3, {"CPU": 1.0, "grader": 1.0})}
    assert "grader" not in dict(run_demands(cfg, grader_resource=False)[2].bundle)


def test_place_is_per_node():
    """Nodes of 1+1+1 CPUs cannot hold a 2-CPU learner although the total is enough; 2+1 can (any order)."""
    cfg = parse_config(["smoke", "--cluster.learner-cpus", "2", "--rollout.cpus-per-actor", "0"])
    left = place(run_demands(cfg, False), [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}])
    assert [(r, res) for r, _, res in left] == [("learner", {"CPU": 2.0})]
    assert place(run_demands(cfg, False), [{"CPU": 1.0}, {"CPU": 2.0}]) == []
    assert place(run_demands(cfg, False), [{"CPU": 2.0}, {"CPU": 1.0}]) == []


def test_smoke_on_a_two_cpu_head_fails_naming_need_have_and_fixes():
    """The issue's case: a default `ray start --head` on a 2-core laptop offers 2 CPUs, smoke needs 3."""
    cfg = parse_config(["smoke"])
    fc = check_fit(cfg, [{"CPU": 2.0}], "the cluster at 127.0.0.1:6379 (from RAY_ADDRESS)", local=False)
    assert not fc.ok and fc.graders_fit == 0
    msg = fc.message
    assert "learner 1×{CPU: 1}, rollout 1×{CPU: 1}, grader 1×{CPU: 1} = {CPU: 3} in all" in msg
    assert "127.0.0.1:6379 (from RAY_ADDRESS), 1 node(s): {CPU: 2}" in msg
    assert "ray start --head --num-cpus 3" in msg
    assert "--cluster.learner-cpus 0.5 --rollout.cpus-per-actor 0.5" in msg
    # each suggested fix really fits
    assert check_fit(cfg, [{"CPU": 3.0}], "x", local=False).ok
    assert check_fit(parse_config(["smoke", "--cluster.learner-cpus", "0.5", "--rollout.cpus-per-actor", "0.5"]),
                     [{"CPU": 2.0}], "x", local=False).ok
    with pytest.raises(ResourceFitError, match="ray start --head --num-cpus 3"):
        fit_or_fail(cfg, [{"CPU": 2.0}], "x", local=False)
    with pytest.raises(ResourceFitError, match="not even one grader fits"):
        fit_or_fail(parse_config(["smoke", "--grader.fit-to-cluster"]), [{"CPU": 2.0}], "x", local=False)


def test_fit_flag_shrinks_the_grader_pool_with_a_warning():
    from loguru import logger

    cfg = parse_config(["smoke", "--grader.num-actors", "5"])
    fc = check_fit(cfg, [{"CPU": 4.0}], "the local cluster", local=True)
    assert not fc.ok and fc.graders_fit == 2
    assert "--grader.num-actors 2" in fc.message and "--cluster.num-cpus 7" in fc.message
    with pytest.raises(ResourceFitError):
        fit_or_fail(cfg, [{"CPU": 4.0}], "x", local=True)
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(m.record["level"].name + " " + m.record["message"]))
    try:
        fitted = fit_or_fail(parse_config(["smoke", "--grader.num-actors", "5", "--grader.fit-to-cluster"]),
                             [{"CPU": 4.0}], "x", local=True)
    finally:
        logger.remove(sink)
    assert fitted.grader.num_actors == 2 and fitted.grader.fit_to_cluster
    assert any(s.startswith("WARNING") and "holds only 2 of the 5 grader actors" in s for s in seen)


def test_missing_gpu_and_custom_resource_are_named():
    cfg = parse_config(["smoke", "--cluster.learner-gpus", "1", "--cluster.learner-resource", "learner"])
    fc = check_fit(cfg, [{"CPU": 8.0}, {"CPU": 8.0, "grader": 8.0}], "x", local=False)
    assert not fc.ok
    assert "no node has enough GPU, learner" in fc.message and "--cluster.learner-gpus 0" in fc.message
    assert "--resources '{\"learner\": N}'" in fc.message and "drop --cluster.learner-resource" in fc.message
    assert "ray start --head --num-cpus" not in fc.message  # CPUs are not what is missing
    ok = check_fit(cfg, [{"CPU": 2.0, "GPU": 1.0, "learner": 1.0}, {"CPU": 8.0, "grader": 8.0}], "x", local=False)
    assert ok.ok, ok.message


def test_pending_actor_is_reported_with_its_resources_and_fails_after_the_limit(ray_cluster, tmp_path):
    """A real actor that asks for a resource no node has: reported after warn_s with what it asks
    for and what the cluster has; the watch fails after fail_s and interrupts a blocked ray.get.
    An actor that is busy in a slow __init__ (it has a worker) is not reported."""
    ray = ray_cluster

    @ray.remote(num_cpus=0)
    class Waiter:
        def ping(self):
            return 1

    started = tmp_path / "slow_init_started"

    @ray.remote(num_cpus=0)
    class SlowInit:
        def __init__(self, flag):
            open(flag, "w").close()
            time.sleep(8)

        def ping(self):
            return 1

    # as under a shell's background job (`cmd &`): SIGINT ignored; the watch must interrupt anyway
    old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    slow = SlowInit.remote(str(started))
    # the claim is about an actor that already has its worker: on a loaded machine the worker
    # process can take over warn_s to start, and until then the actor is rightly reported as pending
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "SlowInit's worker never started"
        time.sleep(0.05)
    waiter = Waiter.options(resources={"vgrout_test_missing": 1}).remote()
    watch = PendingWatch(warn_s=1.0, fail_s=4.0, bundles={"Waiter": {"vgrout_test_missing": 1.0}}, poll_s=0.3).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            ray.get(waiter.ping.remote(), timeout=60)
        took = time.monotonic() - t0
        assert 4.0 <= took < 20, took
        assert watch.failure is not None
        first = watch.reports[0]
        assert first.startswith("actor Waiter ") and "for resources {vgrout_test_missing: 1}" in first
        assert "the cluster has {CPU: 4" in first and "free now" in first
        assert "vgrout_test_missing" in watch.failure and "--cluster.pending-fail-s" in watch.failure
        assert not any("SlowInit" in r for r in watch.reports), watch.reports
    finally:
        watch.stop()
        signal.signal(signal.SIGINT, old_sigint)
        ray.kill(waiter)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the watch's handler is gone again
    assert ray.get(slow.ping.remote(), timeout=60) == 1
    ray.kill(slow)


def test_pending_watch_reports_again_and_forgets_actors_that_start(ray_cluster):
    """Reports repeat every warn_s while the actor waits; with fail_s=0 the run is never failed; an
    actor that gets its resources is dropped from the watch."""
    ray = ray_cluster

    @ray.remote(num_cpus=0, resources={"vgrout_test_missing2": 1})
    class Waiter2:
        def ping(self):
            return 1

    w = Waiter2.remote()
    watch = PendingWatch(warn_s=0.5, fail_s=0, poll_s=0.2, interrupt=False).start()
    try:
        assert wait_until(lambda: len(watch.reports) >= 3, timeout=30, step=0.2), watch.reports
        assert watch.failure is None
        assert "(resources not known to the driver)" in watch.reports[0]
        assert "vgrout_test_missing2: 1" in watch.reports[0]  # the cluster's pending demand names it
        ray.kill(w)
        assert wait_until(lambda: not watch._since, timeout=30, step=0.2)
    finally:
        watch.stop()


def test_num_cpus_with_an_address_is_a_named_error():
    """--cluster.num-cpus sizes only a local cluster; with an address it fails before connecting."""
    from vgrout_ray.cluster.ray_cluster import connect
    from vgrout_ray.config import ConfigError

    with pytest.raises(ConfigError, match=r"cluster.num_cpus: .*10.9.9.9:6379 \(from RAY_ADDRESS\)"):
        connect(None, num_cpus=4, local_cpus=4, namespace="x", environ={"RAY_ADDRESS": "10.9.9.9:6379"})


def test_a_job_agent_that_lost_its_port_is_named(tmp_path):
    """The head helper's diagnosis when the head never takes a job: the session's agent log says
    which port another Ray instance holds."""
    from vgrout_ray.cluster.ray_cluster import agent_bind_failure

    logs = tmp_path / "ray" / "session_latest" / "logs"
    logs.mkdir(parents=True)
    assert agent_bind_failure(str(tmp_path)) == ""
    (logs / "dashboard_agent.log").write_text(
        "OSError: [Errno 98] error while attempting to bind on address ('192.0.2.2', 52365): address already in use\n")
    why = agent_bind_failure(str(tmp_path))
    assert "'192.0.2.2', 52365" in why and "another Ray instance" in why
